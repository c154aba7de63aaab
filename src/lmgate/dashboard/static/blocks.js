// Blocked addresses: who is shut out for sending too many bad keys, and a button to lift
// each block (DELETE /admin/blocks/{address}). Refreshed on address_blocked events.

import { api, explain, NotAvailable } from "./api.js";
import { confirmButton, fill, fmtDuration, h } from "./dom.js";

export function createBlocks(ctx) {
  const box = h("div", { id: "blocks-box" });
  const el = h("section", { class: "card", id: "blocks-card" }, h("h2", {}, "Blocked addresses"), box);
  let asked = 0;

  async function load() {
    const ask = ++asked;
    try {
      const body = await api("admin/blocks");
      if (ask === asked) render(body.blocks || []);
    } catch (err) {
      if (ask !== asked) return;
      el.hidden = err instanceof NotAvailable;
      fill(box, h("p", { class: "error" }, `Blocks: ${explain(err)}`));
    }
  }

  function render(blocks) {
    el.hidden = false;
    if (!blocks.length) {
      fill(box, h("p", { class: "muted", id: "blocks-none" }, "No address is blocked for bad keys."));
      return;
    }
    fill(
      box,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "blocks-table" },
          h("thead", {}, h("tr", {}, h("th", {}, "Address"), h("th", {}, "Blocked for"), h("th", {}, "Offences"), h("th", {}, ""))),
          h(
            "tbody",
            {},
            ...blocks.map((b) =>
              h(
                "tr",
                { "data-address": b.address },
                h("td", { class: "mono" }, b.address),
                h("td", {}, fmtDuration(b.retryAfter)),
                h("td", {}, String(b.offences)),
                h("td", {}, confirmButton("Lift", "Confirm lift", () => lift(b.address), { class: "small" })),
              ),
            ),
          ),
        ),
      ),
    );
  }

  async function lift(address) {
    try {
      await api(`admin/blocks/${encodeURIComponent(address)}`, { method: "DELETE" });
      ctx.notify(`Block on ${address} lifted`, "ok");
    } catch (err) {
      ctx.notify(`Lift failed: ${explain(err)}`, "error");
    }
    load();
  }

  return {
    el,
    load,
    onEvent(ev) {
      if (!ev.replayed && (ev.type === "address_blocked" || ev.type === "address_unblocked")) load();
    },
  };
}
