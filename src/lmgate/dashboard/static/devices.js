// Add a device: a one-time pairing code (POST /admin/pairing) shown as a QR code the phone
// scans; it opens /pair/CODE there, which makes the device its own key. Recent pairings are
// listed with who redeemed them; a pending one can be cancelled.

import { api, explain, NotAvailable } from "./api.js";
import { confirmButton, fill, fmtDateTime, h } from "./dom.js";

export function createDevices(ctx) {
  const field = (id, label, input, hint) =>
    h("div", { class: "field" }, h("label", { for: id }, label, hint ? h("small", {}, ` (${hint})`) : null), input);
  const name = h("input", { id: "pair-name", type: "text", maxlength: 64, required: true, autocomplete: "off", placeholder: "Anna's phone" });
  const models = h("input", { id: "pair-models", type: "text", autocomplete: "off", placeholder: "qwen*, nomic*" });
  const button = h("button", { type: "submit", class: "primary", id: "pair-create" }, "Show QR code");
  const shown = h("div", { id: "pair-shown", "aria-live": "polite" });
  const list = h("div", { id: "pair-list" });
  const form = h(
    "form",
    { method: "post", id: "pair-form" },
    h(
      "div",
      { class: "field-grid" },
      field("pair-name", "Device", name),
      field("pair-models", "Models", models, "patterns, comma-separated; empty = all"),
    ),
    h("p", { class: "hint" }, "The code makes one inference key, works once, and expires in 10 minutes."),
    h("div", { class: "actions" }, button),
  );
  const el = h("section", { class: "card", id: "devices-card" }, h("h2", {}, "Add a device"), form, shown, list);
  let asked = 0;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value.trim() };
    const globs = models.value.split(",").map((m) => m.trim()).filter(Boolean);
    if (globs.length) body.models = globs;
    button.disabled = true;
    try {
      const made = await api("admin/pairing", { method: "POST", body });
      fill(
        shown,
        h("img", { id: "pair-qr", src: made.qrImage, alt: `QR code pairing ${made.device}`, width: "240", height: "240" }),
        h("p", {}, `Scan it with ${made.device}. It works once, until ${fmtDateTime(made.expiresAt)}.`),
        h("p", { class: "mono", id: "pair-url" }, made.url),
        made.caFingerprint ? h("p", { class: "hint" }, `CA fingerprint: ${made.caFingerprint}`) : null,
      );
      name.value = "";
      load();
    } catch (err) {
      ctx.notify(`Pairing failed: ${explain(err)}`, "error");
    } finally {
      button.disabled = false;
    }
  });

  async function load() {
    const ask = ++asked;
    try {
      const body = await api("admin/pairing");
      if (ask === asked) render(body.pairings || []);
    } catch (err) {
      if (ask !== asked) return;
      el.hidden = err instanceof NotAvailable;
      fill(list, h("p", { class: "error" }, `Pairings: ${explain(err)}`));
    }
  }

  function render(pairings) {
    if (!pairings.length) {
      fill(list, h("p", { class: "muted" }, "No device paired yet."));
      return;
    }
    const row = (p) =>
      h(
        "tr",
        { dataset: { pairing: p.id } },
        h("td", {}, p.device),
        h("td", {}, h("span", { class: `badge ${p.status === "redeemed" ? "ok" : p.status === "pending" ? "" : "bad"}` }, p.status)),
        h("td", { class: "mono" }, p.redeemedBy || "\u2014"),
        h("td", {}, p.redeemedAt ? fmtDateTime(p.redeemedAt) : fmtDateTime(p.createdAt)),
        h("td", {}, p.status === "pending" ? confirmButton("Cancel", "Confirm cancel", () => cancel(p), { class: "small" }) : null),
      );
    fill(
      list,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "pair-table" },
          h("thead", {}, h("tr", {}, ["Device", "Status", "Redeemed from", "When", ""].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, pairings.slice(0, 20).map(row)),
        ),
      ),
    );
  }

  async function cancel(pairing) {
    try {
      await api(`admin/pairing/${encodeURIComponent(pairing.id)}`, { method: "DELETE" });
    } catch (err) {
      ctx.notify(`Cancel failed: ${explain(err)}`, "error");
    }
    load();
  }

  return {
    el,
    load,
    onEvent(ev) {
      if (!ev.replayed && ev.type.startsWith("pairing_")) load();
    },
  };
}
