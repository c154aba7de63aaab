// Keys and usage: list keys (those from settings read-only), create and rotate (the new key is
// shown once) and revoke managed keys; token usage per day, stacked by key or by model.

import { api, explain, NotAvailable } from "./api.js";
import { createBlocks } from "./blocks.js";
import { createDevices } from "./devices.js";
import { stackedBars } from "./charts.js";
import { confirmButton, fill, fmtCount, fmtDateTime, h, labelCells } from "./dom.js";

const DAY_S = 86400;

function utcDay(ts) {
  return new Date(ts * 1000).toISOString().slice(0, 10);
}

// A usage group's key or model: null means the requests had none (a keyless request, a route
// that names no model); undefined means the gateway could not group by it at all.
export function groupLabel(group, by) {
  const value = group[by];
  if (value === undefined) return "all";
  return value || (by === "model" ? "(no model)" : "(no key)");
}

function intOrNull(text) {
  const t = text.trim();
  if (!t) return { value: undefined };
  if (!/^\d+$/.test(t) || Number(t) < 1) return { error: "must be a whole number of at least 1" };
  return { value: Number(t) };
}

export function createKeys(root, ctx) {
  const keysBox = h("div", { id: "keys-box" });
  const newKeyBox = h("div", { id: "new-key", "aria-live": "polite" });
  const showRevoked = h("input", { type: "checkbox", id: "show-revoked" });
  const usageChart = h("div", { class: "chart-box tall", id: "usage-chart" });
  const usageLegend = h("ul", { class: "legend-list", id: "usage-legend" });
  const usageTable = h("div", { class: "table-wrap", id: "usage-table" });
  const usageNote = h("p", { class: "hint", id: "usage-note" });
  const period = h(
    "select",
    { id: "usage-days" },
    h("option", { value: "7" }, "last 7 days"),
    h("option", { value: "30" }, "last 30 days"),
    h("option", { value: "90" }, "last 90 days"),
  );
  const stackBy = h(
    "select",
    { id: "usage-by" },
    h("option", { value: "key" }, "by key"),
    h("option", { value: "model" }, "by model"),
  );
  const metric = h(
    "select",
    { id: "usage-metric" },
    h("option", { value: "totalTokens" }, "tokens"),
    h("option", { value: "requests" }, "requests"),
  );
  const form = createForm();
  const blocks = createBlocks(ctx);
  const devices = createDevices(ctx);
  fill(
    root,
    h("h1", { class: "view-title" }, "Keys and usage"),
    h(
      "section",
      { class: "card" },
      h("div", { class: "log-head" }, h("h2", {}, "API keys"), h("label", { class: "muted" }, showRevoked, " show revoked")),
      newKeyBox,
      keysBox,
    ),
    h("section", { class: "card" }, h("h2", {}, "New key"), form.el),
    devices.el,
    blocks.el,
    h(
      "section",
      { class: "card" },
      h("div", { class: "log-head" }, h("h2", {}, "Usage per day"), period, stackBy, metric),
      usageNote,
      usageChart,
      usageLegend,
      usageTable,
    ),
  );
  showRevoked.addEventListener("change", () => loadKeys());
  for (const select of [period, stackBy, metric]) select.addEventListener("change", () => loadUsage());

  let keysAvailable = true;

  let keysAsked = 0; // only the newest answer is shown, whatever order answers arrive in

  async function loadKeys() {
    const ask = ++keysAsked;
    try {
      const body = await api(`admin/keys${showRevoked.checked ? "?includeRevoked=true" : ""}`);
      if (ask !== keysAsked) return;
      keysAvailable = true;
      renderKeys(body.keys || [], body.settingsKeys || []);
    } catch (err) {
      if (ask !== keysAsked) return;
      keysAvailable = !(err instanceof NotAvailable);
      fill(
        keysBox,
        h(
          "p",
          { class: keysAvailable ? "error" : "note", id: "keys-unavailable" },
          keysAvailable
            ? `Keys: ${explain(err)}`
            : "Managed keys (/admin/keys) are not available on this gateway. Keys come from " +
                "LMGATE_ADMIN_KEY and LMGATE_API_KEYS only.",
        ),
      );
    }
    form.el.hidden = !keysAvailable;
  }

  const KEY_COLUMNS = ["Name", "Scope", "Key", "Models", "Limits", "Tools", "Created", "Expires", "Status", ""];

  // Weight, priority class, whether its requests may load models (a star: the default for its
  // scope), loads per hour: one short line each under the limits, so the table stays narrow.
  const scheduling = (k) =>
    [
      [`weight ${k.weight ?? 1}`],
      [`priority ${k.priority ?? 0}`],
      k.loadsDefault
        ? [`loads ${k.loads || "allow"}*`, "the default for its scope (LMGATE_KEY_LOADS_DEFAULT)"]
        : [`loads ${k.loads}`],
      k.maxLoadsPerHour ? [`${k.maxLoadsPerHour} loads/h`] : null,
    ]
      .filter(Boolean)
      .map(([line, title]) => h("div", title ? { class: "scheduling", title } : { class: "scheduling" }, line));

  function renderKeys(keys, fromSettings) {
    if (!keys.length && !fromSettings.length) {
      fill(keysBox, h("p", { class: "muted" }, "No keys yet."));
      return;
    }
    const limits = (k) =>
      [k.rpm ? `${k.rpm} rpm` : null, k.tpm ? `${k.tpm} tpm` : null, k.maxConcurrent ? `${k.maxConcurrent} at once` : null, k.schedule]
        .filter(Boolean)
        .join(", ") || "none";
    const managedRow = (k) =>
      h(
        "tr",
        { dataset: { key: k.name }, class: k.status === "active" ? null : "inactive" },
        h("td", {}, k.name, k.device ? h("small", { class: "muted" }, ` ${k.device}`) : null),
        h("td", {}, k.scope),
        h("td", { class: "mono" }, k.hint || "\u2014"),
        h("td", { class: "mono" }, (k.models || []).join(", ") || "all"),
        h("td", {}, h("div", {}, limits(k)), scheduling(k)),
        h("td", {}, k.tools || "deny"),
        h("td", {}, fmtDateTime(k.createdAt)),
        h("td", {}, k.expiresAt ? fmtDateTime(k.expiresAt) : "never"),
        h("td", {}, h("span", { class: `badge ${k.status === "active" ? "ok" : "bad"}` }, k.status)),
        h(
          "td",
          { class: "row-actions" },
          k.status === "active"
            ? [
                confirmButton("Rotate", "Confirm rotate", () => rotate(k), { class: "small" }),
                confirmButton("Revoke", "Confirm revoke", () => revoke(k), { class: "small danger" }),
              ]
            : null,
        ),
      );
    // Keys from settings (LMGATE_ADMIN_KEY, LMGATE_METRICS_KEY, LMGATE_API_KEYS) are named in
    // usage as admin, metrics, api-key-N; they are listed so those names mean something, and
    // changed only in the settings.
    const settingsRow = (k) =>
      h(
        "tr",
        { dataset: { key: k.name, source: "settings" } },
        h("td", {}, k.name),
        h("td", {}, k.scope),
        h("td", { class: "muted" }, "from settings"),
        h("td", { class: "mono" }, "all"),
        h("td", {}, h("div", {}, "none"), scheduling(k)),
        h("td", {}, k.tools || "deny"),
        h("td", {}, "\u2014"),
        h("td", {}, "never"),
        h("td", {}, h("span", { class: "badge ok" }, "active")),
        h("td", { class: "muted" }, "read-only"),
      );
    const body = h("tbody", {}, fromSettings.map(settingsRow), keys.map(managedRow));
    labelCells(body, KEY_COLUMNS);
    fill(
      keysBox,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "keys-table", class: "cards" },
          h("thead", {}, h("tr", {}, KEY_COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
          body,
        ),
      ),
      fromSettings.length
        ? h("p", { class: "hint" }, "Keys marked \u201cfrom settings\u201d come from the environment and are changed there.")
        : null,
    );
  }

  async function rotate(key) {
    try {
      const answer = await api(`admin/keys/${encodeURIComponent(key.id)}/rotate`, { method: "POST" });
      showNewKey(answer, "Rotated key");
      ctx.notify(`Key '${key.name}' rotated: the old secret no longer works`, "ok");
    } catch (err) {
      ctx.notify(`Rotate failed: ${explain(err)}`, "error");
    }
    loadKeys();
  }

  async function revoke(key) {
    try {
      await api(`admin/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
      ctx.notify(`Key '${key.name}' revoked`, "ok");
    } catch (err) {
      ctx.notify(`Revoke failed: ${explain(err)}`, "error");
    }
    loadKeys();
  }

  function showNewKey(answer, what = "New key") {
    const code = h("code", { class: "secret", id: "new-key-value" }, answer.key);
    const copy = h("button", { type: "button", class: "small" }, "Copy");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(answer.key);
        copy.textContent = "Copied";
      } catch {
        const range = document.createRange();
        range.selectNodeContents(code);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        copy.textContent = "Selected: press Ctrl+C";
      }
    });
    fill(
      newKeyBox,
      h(
        "div",
        { class: "card notice secret-box" },
        h("p", {}, h("strong", {}, `${what} for '${answer.name}' (${answer.scope}). `), answer.message || "It is shown only once."),
        h("div", { class: "secret-row" }, code, copy),
        h("button", { type: "button", class: "small", onclick: () => newKeyBox.replaceChildren() }, "I have stored it"),
      ),
    );
  }

  function createForm() {
    const field = (id, label, input, hint) =>
      h("div", { class: "field" }, h("label", { for: id }, label, hint ? h("small", {}, ` (${hint})`) : null), input);
    const name = h("input", { id: "key-name", type: "text", required: true, maxlength: 64, autocomplete: "off" });
    const scope = h(
      "select",
      { id: "key-scope" },
      h("option", { value: "inference" }, "inference"),
      h("option", { value: "metrics" }, "metrics (GET /metrics only)"),
      h("option", { value: "admin" }, "admin"),
    );
    const models = h("input", { id: "key-models", type: "text", autocomplete: "off", placeholder: "qwen*, nomic*" });
    const rpm = h("input", { id: "key-rpm", type: "text", inputmode: "numeric", autocomplete: "off" });
    const tpm = h("input", { id: "key-tpm", type: "text", inputmode: "numeric", autocomplete: "off" });
    const conc = h("input", { id: "key-concurrent", type: "text", inputmode: "numeric", autocomplete: "off" });
    const expires = h("input", { id: "key-expires", type: "text", autocomplete: "off", placeholder: "never" });
    // Whether requests may have LM Studio use tools itself (mcp.json servers, plugins, remote MCP).
    const tools = h(
      "select",
      { id: "key-tools" },
      h("option", { value: "" }, "as the scope: admin allow, others deny"),
      h("option", { value: "allow" }, "allow"),
      h("option", { value: "deny" }, "deny"),
    );
    const errors = h("div", { class: "form-errors", role: "alert", id: "key-errors" });
    const submit = h("button", { type: "submit", class: "primary", id: "key-create" }, "Create key");
    // A metrics key reaches no model, so models, limits and tools mean nothing for it (the API
    // refuses them).
    const scoped = [models, rpm, tpm, conc, tools];
    const fitScope = () => {
      for (const input of scoped) input.disabled = scope.value === "metrics";
    };
    scope.addEventListener("change", fitScope);
    const el = h(
      "form",
      { method: "post", id: "key-form" },
      h(
        "div",
        { class: "field-grid" },
        field("key-name", "Name", name),
        field("key-scope", "Scope", scope),
        field("key-models", "Models", models, "patterns, comma-separated; empty = all"),
        field("key-rpm", "Requests / minute", rpm),
        field("key-tpm", "Tokens / minute", tpm),
        field("key-concurrent", "At once", conc),
        field("key-expires", "Expires", expires, "empty = never; or 30d, 12h, a date"),
        field("key-tools", "Tools", tools, "MCP servers, plugins"),
      ),
      errors,
      h("div", { class: "actions" }, submit),
    );
    el.addEventListener("submit", async (event) => {
      event.preventDefault();
      const problems = [];
      const body = { name: name.value.trim(), scope: scope.value };
      if (!body.name) problems.push("name: required");
      const patterns = models.value.split(",").map((p) => p.trim()).filter(Boolean);
      if (patterns.length && !models.disabled) body.models = patterns;
      for (const [label, input, prop] of [["rpm", rpm, "rpm"], ["tpm", tpm, "tpm"], ["at once", conc, "maxConcurrent"]]) {
        if (input.disabled) continue;
        const parsed = intOrNull(input.value);
        if (parsed.error) problems.push(`${label}: ${parsed.error}`);
        else if (parsed.value !== undefined) body[prop] = parsed.value;
      }
      if (expires.value.trim()) body.expires = expires.value.trim();
      if (tools.value && !tools.disabled) body.tools = tools.value;
      fill(errors, problems.length ? h("p", { class: "error" }, `Please fix: ${problems.join("; ")}`) : null);
      if (problems.length) return;
      submit.disabled = true;
      try {
        const answer = await api("admin/keys", { method: "POST", body });
        showNewKey(answer);
        el.reset();
        fitScope();
      } catch (err) {
        fill(errors, h("p", { class: "error" }, `Could not create the key: ${explain(err)}`));
      } finally {
        submit.disabled = false;
        loadKeys();
      }
    });
    return { el };
  }

  // ---- usage ----

  async function fetchUsage(since) {
    try {
      return await api(`admin/usage?groupBy=day,key,model&since=${since}`);
    } catch (err) {
      if (err.status === 400) return api(`admin/usage?groupBy=day&since=${since}`);
      throw err;
    }
  }

  let usageAsked = 0;

  async function loadUsage() {
    const days = Number(period.value);
    const now = Date.now() / 1000;
    const since = Math.floor(now / DAY_S) * DAY_S - (days - 1) * DAY_S;
    const ask = ++usageAsked;
    let body;
    try {
      body = await fetchUsage(since);
      if (ask !== usageAsked) return;
    } catch (err) {
      if (ask !== usageAsked) return;
      usageChart.replaceChildren();
      usageLegend.replaceChildren();
      usageTable.replaceChildren();
      usageNote.className = err instanceof NotAvailable ? "note" : "error";
      usageNote.textContent =
        err instanceof NotAvailable
          ? "Usage accounting (/admin/usage) is not available on this gateway."
          : `Usage: ${explain(err)}`;
      return;
    }
    usageNote.className = "hint";
    const groups = body.groups || [];
    const by = stackBy.value;
    const what = metric.value;
    const categories = [];
    for (let d = since; d <= now; d += DAY_S) categories.push(utcDay(d));
    const names = [...new Set(groups.map((g) => groupLabel(g, by)))].sort();
    const stacks = names.map((label) => ({
      label,
      values: categories.map((day) =>
        groups
          .filter((g) => g.day === day && groupLabel(g, by) === label)
          .reduce((sum, g) => sum + (g[what] || 0), 0),
      ),
    }));
    const totals = body.totals || {};
    usageNote.textContent = `${fmtCount(totals.requests)} requests, ${fmtCount(totals.tokensIn)} tokens in, ${fmtCount(totals.tokensOut)} tokens out (UTC days).`;
    stackedBars(usageChart, {
      title: `Usage per day (${what === "requests" ? "requests" : "tokens"}) by ${by}`,
      categories,
      stacks,
      format: fmtCount,
    });
    fill(
      usageLegend,
      stacks.map((st, k) => h("li", {}, h("span", { class: `swatch series-${k % 8}` }), st.label)),
    );
    renderUsageTable(groups);
  }

  function renderUsageTable(groups) {
    const rows = new Map();
    for (const g of groups) {
      const key = groupLabel(g, "key");
      const model = groupLabel(g, "model");
      const id = `${key}\u0000${model}`;
      const row = rows.get(id) || { key, model, requests: 0, tokensIn: 0, tokensOut: 0, errors: 0 };
      row.requests += g.requests || 0;
      row.errors += g.errors || 0;
      row.tokensIn += g.tokensIn || 0;
      row.tokensOut += g.tokensOut || 0;
      rows.set(id, row);
    }
    if (!rows.size) {
      fill(usageTable, h("p", { class: "muted" }, "No usage in this period."));
      return;
    }
    const columns = ["Key", "Model", "Requests", "Errors", "Tokens in", "Tokens out"];
    const body = h(
      "tbody",
      {},
      [...rows.values()].map((r) =>
        h(
          "tr",
          {},
          h("td", {}, r.key),
          h("td", { class: r.model.startsWith("(") ? "muted" : "mono" }, r.model),
          h("td", {}, fmtCount(r.requests)),
          h("td", {}, fmtCount(r.errors)),
          h("td", {}, fmtCount(r.tokensIn)),
          h("td", {}, fmtCount(r.tokensOut)),
        ),
      ),
    );
    labelCells(body, columns);
    fill(
      usageTable,
      h("table", { class: "cards" }, h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))), body),
    );
  }

  return {
    show() {
      loadKeys();
      loadUsage();
      blocks.load();
      devices.load();
    },
    hide() {},
    onEvent(ev) {
      if (root.hidden === false) blocks.onEvent(ev);
      if (root.hidden === false) devices.onEvent(ev);
      if (ev.replayed) return;
      if (["key_created", "key_revoked", "key_rotated", "key_updated", "pairing_redeemed"].includes(ev.type)) {
        if (root.hidden === false) loadKeys();
      }
    },
  };
}
