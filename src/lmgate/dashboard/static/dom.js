// Small DOM and formatting helpers. Text always goes in through textContent / text nodes,
// never innerHTML, so model names, key names and error messages cannot inject markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  put(el, children);
  return el;
}

function put(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

// Replace an element's children.
export function fill(el, ...children) {
  el.replaceChildren();
  put(el, children);
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

const DASH = "\u2014";

export function fmtNumber(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return DASH;
  return Number(value).toLocaleString(undefined, {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

export function fmtCount(value) {
  if (value === null || value === undefined) return DASH;
  const n = Number(value);
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (Math.abs(n) >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return fmtNumber(n);
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return DASH;
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function fmtRate(perSecond, unit = "/s") {
  if (perSecond === null || perSecond === undefined) return DASH;
  const digits = perSecond < 10 ? 2 : perSecond < 100 ? 1 : 0;
  return `${fmtNumber(perSecond, digits)} ${unit}`;
}

export function fmtPercent(ratio) {
  if (ratio === null || ratio === undefined) return DASH;
  return `${(ratio * 100).toFixed(ratio > 0 && ratio < 0.1 ? 2 : 1)} %`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return DASH;
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const hrs = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${hrs}h`;
  if (hrs) return `${hrs}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

// Unix seconds to local wall-clock time.
export function fmtTime(ts) {
  if (!ts) return DASH;
  return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
}

export function fmtDateTime(ts) {
  if (!ts) return DASH;
  const d = new Date(ts * 1000);
  return `${d.toLocaleDateString()} ${d.toLocaleTimeString([], { hour12: false })}`;
}

export function fmtAgo(ts) {
  if (!ts) return DASH;
  return `${fmtDuration(Date.now() / 1000 - ts)} ago`;
}

export function dash() {
  return DASH;
}

// A compact "name=value, ..." rendering of a config object (nested objects flattened).
export function describeConfig(config) {
  const parts = [];
  const walk = (obj, prefix) => {
    for (const [k, v] of Object.entries(obj || {})) {
      if (v && typeof v === "object" && !Array.isArray(v)) walk(v, `${prefix}${k}.`);
      else parts.push(`${prefix}${k}=${Array.isArray(v) ? v.join("|") : v}`);
    }
  };
  walk(config, "");
  return parts.join(", ");
}

export function shortId(id) {
  if (!id) return DASH;
  return id.length > 12 ? `${id.slice(0, 8)}\u2026` : id;
}

// A button that asks for a second click before it acts (no blocking browser dialogs).
export function confirmButton(label, confirmLabel, action, attrs = {}) {
  let armed = null;
  const button = h("button", { type: "button", ...attrs }, label);
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = confirmLabel;
      button.classList.add("armed");
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
        button.classList.remove("armed");
      }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.disabled = true;
    button.classList.remove("armed");
    try {
      await action();
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  });
  return button;
}

// Give each cell its column's heading as data-label, so a narrow screen can show the table's
// rows as cards (style.css, table.cards) with every column still labelled and in view.
export function labelCells(body, headings) {
  for (const row of body.rows) {
    [...row.cells].forEach((cell, i) => {
      if (!cell.colSpan || cell.colSpan === 1) cell.dataset.label = headings[i] ?? "";
    });
  }
  return body;
}
