// The Upstreams view: every upstream from GET /admin/upstreams (kind, state, models offered
// and loaded), with Drain, Resume and Remove (POST /admin/upstreams/{name}/drain|resume,
// DELETE /admin/upstreams/{name}).
// Read again on upstream_* events and every few seconds while shown.

import { api, explain } from "./api.js";
import { confirmButton, fill, h, labelCells } from "./dom.js";

const COLUMNS = ["Name", "URL", "Kind", "State", "Models", "Loaded", ""];
const READ_MS = 5000;
const DONE = { drain: "is draining", resume: "takes requests again", remove: "removed" };

export function createUpstreams(root, ctx) {
  const box = h("div", { id: "upstreams-box" });
  root.append(h("section", { class: "card", id: "upstreams-card" }, h("h2", {}, "Upstreams"), box));
  let timer = null;
  let asked = 0;

  async function load() {
    const ask = ++asked;
    try {
      const body = await api("admin/upstreams");
      if (ask === asked) render(body.upstreams || []);
    } catch (err) {
      if (ask === asked) fill(box, h("p", { class: "error" }, `Upstreams: ${explain(err)}`));
    }
  }

  function actions(u) {
    const cell = [];
    if (u.state === "draining") {
      cell.push(h("button", { type: "button", class: "small", onclick: () => change(u.name, "resume") }, "Resume"));
    } else {
      cell.push(confirmButton("Drain", "Confirm drain", () => change(u.name, "drain"), { class: "small" }));
    }
    if (!u.primary) {
      cell.push(confirmButton("Remove", "Confirm remove", () => change(u.name, "remove"), { class: "small" }));
    }
    return h("div", { class: "row-actions" }, ...cell);
  }

  function render(upstreams) {
    const body = h(
      "tbody",
      {},
      ...upstreams.map((u) =>
        h(
          "tr",
          { "data-upstream": u.name, "data-state": u.state },
          h("td", { class: "mono" }, u.primary ? `${u.name} (primary)` : u.name),
          h("td", { class: "mono" }, u.url),
          h("td", {}, u.kind),
          h("td", { class: `state-${u.state}` }, u.state),
          h("td", {}, String(u.models.length)),
          h("td", { class: "mono" }, u.loaded.join(", ") || "-"),
          h("td", {}, actions(u)),
        ),
      ),
    );
    fill(
      box,
      h(
        "div",
        { class: "table-wrap" },
        h("table", { id: "upstreams-table" }, h("thead", {}, h("tr", {}, ...COLUMNS.map((c) => h("th", {}, c)))), labelCells(body, COLUMNS)),
      ),
    );
  }

  async function change(name, what) {
    const path = `admin/upstreams/${encodeURIComponent(name)}`;
    try {
      if (what === "remove") await api(path, { method: "DELETE" });
      else await api(`${path}/${what}`, { method: "POST" });
      ctx.notify(`Upstream ${name} ${DONE[what]}`, "ok");
    } catch (err) {
      ctx.notify(`${what[0].toUpperCase()}${what.slice(1)} failed: ${explain(err)}`, "error");
    }
    load();
  }

  return {
    show() {
      load();
      timer = setInterval(load, READ_MS);
    },
    hide() {
      clearInterval(timer);
      timer = null;
    },
    onEvent(ev) {
      if (root.hidden === false && !ev.replayed && ev.type.startsWith("upstream_")) load();
    },
  };
}
