// The fields of loadConfig and defaultInference, checked by the same rules as the admin API
// (src/lmgate/admin/schemas.py), so most mistakes are caught before the request is sent.
// The gateway still validates everything; its 400 message is shown when it disagrees.

import { h } from "./dom.js";

export const LOAD_FIELDS = [
  { path: "contextLength", label: "Context length", kind: "int", gt: 0, hint: "tokens" },
  { path: "gpu.ratio", label: "GPU offload ratio", kind: "float", min: 0, max: 1 },
  { path: "gpu.layers", label: "GPU layers", kind: "int", min: 0 },
  { path: "cpuThreads", label: "CPU threads", kind: "int", gt: 0 },
  { path: "ropeFrequencyBase", label: "RoPE frequency base", kind: "float", gt: 0 },
  { path: "ropeFrequencyScale", label: "RoPE frequency scale", kind: "float", gt: 0 },
  { path: "flashAttention", label: "Flash attention", kind: "bool" },
  { path: "evalBatchSize", label: "Eval batch size", kind: "int", gt: 0 },
  { path: "numExperts", label: "Experts", kind: "int", gt: 0 },
  { path: "offloadKvCacheToGpu", label: "KV cache on GPU", kind: "bool" },
  { path: "ttl", label: "Idle TTL", kind: "int", gt: 0, hint: "seconds" },
];

export const INFERENCE_FIELDS = [
  { path: "temperature", label: "Temperature", kind: "float", min: 0, max: 2 },
  { path: "maxTokens", label: "Max tokens", kind: "int", maxTokens: true, hint: "-1 = no limit" },
  { path: "topP", label: "Top P", kind: "float", min: 0, max: 1 },
  { path: "topK", label: "Top K", kind: "int", min: 0 },
  { path: "repeatPenalty", label: "Repeat penalty", kind: "float", gt: 0 },
  { path: "stopStrings", label: "Stop strings", kind: "list", hint: "one per line" },
  { path: "stream", label: "Stream", kind: "bool" },
];

const INT = /^[+-]?\d+$/;

// The error for one raw input value, or null.
export function check(field, raw) {
  if (field.kind === "bool" || field.kind === "list") return null;
  const text = raw.trim();
  if (!text) return null;
  if (field.kind === "int" && !INT.test(text)) return "must be a whole number";
  const n = Number(text);
  if (!Number.isFinite(n)) return "must be a number";
  if (field.maxTokens && n !== -1 && n < 1) return "must be a positive integer, or -1 for no limit";
  if (field.gt !== undefined && !(n > field.gt)) return `must be greater than ${field.gt}`;
  if (field.min !== undefined && n < field.min) return `must be at least ${field.min}`;
  if (field.max !== undefined && n > field.max) return `must be at most ${field.max}`;
  return null;
}

function convert(field, raw) {
  const text = raw.trim();
  if (field.kind === "bool") return text === "" ? undefined : text === "true";
  if (field.kind === "list") {
    const items = raw.split("\n").filter((line) => line.length > 0);
    return items.length ? items : undefined;
  }
  if (!text) return undefined;
  return Number(text);
}

function getPath(obj, path) {
  return path.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), obj);
}

function setPath(obj, path, value) {
  const keys = path.split(".");
  let o = obj;
  for (const k of keys.slice(0, -1)) o = o[k] || (o[k] = {});
  o[keys[keys.length - 1]] = value;
}

function inputFor(field, id, value) {
  if (field.kind === "bool") {
    const select = h(
      "select",
      { id, name: field.path },
      h("option", { value: "" }, "default"),
      h("option", { value: "true" }, "on"),
      h("option", { value: "false" }, "off"),
    );
    select.value = value === true ? "true" : value === false ? "false" : "";
    return select;
  }
  if (field.kind === "list") {
    const area = h("textarea", { id, name: field.path, rows: 2, spellcheck: "false" });
    area.value = Array.isArray(value) ? value.join("\n") : "";
    return area;
  }
  const input = h("input", {
    id,
    name: field.path,
    type: "text",
    inputmode: field.kind === "int" && !field.maxTokens ? "numeric" : "decimal",
    autocomplete: "off",
  });
  input.value = value === undefined || value === null ? "" : String(value);
  return input;
}

// A fieldset of inputs for `fields`, prefilled from `values`. `collect()` returns
// {value, errors}; `value` is undefined when nothing was filled in.
export function fieldGroup(legend, prefix, fields, values) {
  const rows = fields.map((field) => {
    const id = `${prefix}-${field.path.replace(".", "-")}`;
    const input = inputFor(field, id, getPath(values || {}, field.path));
    const error = h("span", { class: "field-error", id: `${id}-error`, role: "alert" });
    input.setAttribute("aria-describedby", `${id}-error`);
    input.addEventListener("input", () => {
      error.textContent = check(field, input.value) || "";
      input.classList.toggle("invalid", Boolean(error.textContent));
    });
    return {
      field,
      input,
      error,
      el: h(
        "div",
        { class: "field" },
        h("label", { for: id }, field.label, field.hint ? h("small", {}, ` (${field.hint})`) : null),
        input,
        error,
      ),
    };
  });
  return {
    el: h("fieldset", {}, h("legend", {}, legend), h("div", { class: "field-grid" }, rows.map((r) => r.el))),
    collect() {
      const out = {};
      const errors = [];
      let any = false;
      for (const row of rows) {
        const problem = check(row.field, row.input.value);
        row.error.textContent = problem || "";
        row.input.classList.toggle("invalid", Boolean(problem));
        if (problem) {
          errors.push(`${row.field.path}: ${problem}`);
          continue;
        }
        const value = convert(row.field, row.input.value);
        if (value !== undefined) {
          setPath(out, row.field.path, value);
          any = true;
        }
      }
      return { value: any ? out : undefined, errors };
    },
  };
}
