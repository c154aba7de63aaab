// Live requests: in-flight and recent requests (from /debug/requests, or pieced together from
// the stream when the gateway has no such route), cancel for in-flight ones, and the event log
// with type filters and pause.

import { api, explain, NotAvailable } from "./api.js";
import { confirmButton, fill, fmtCount, fmtMs, fmtTime, h, labelCells, shortId } from "./dom.js";
import { changesQueue, createWaitingView } from "./queue.js";

const POLL_MS = 2000;
const LOG_LIMIT = 400;
const KEEP_RECENT = 50;

const CATEGORIES = [
  ["inference", (t) => t.startsWith("inference_")],
  ["models", (t) => t.startsWith("model_") || t === "active_model_unloaded"],
  ["upstream", (t) => t.startsWith("upstream_")],
  ["access", (t) => t.startsWith("access_") || t.startsWith("auth_") || t.startsWith("rate_")],
  ["keys", (t) => t.startsWith("key_")],
  ["config", (t) => t.startsWith("config_")],
  ["errors", (t) => t === "error" || t === "events_lost"],
  ["lmstudio", (t) => t.startsWith("lmstudio_")],
  ["other", () => true],
];

const INFLIGHT_COLUMNS = ["Request", "Key", "Model", "Endpoint", "Age", "Tokens so far", "Client", ""];
const RECENT_COLUMNS = ["Finished", "Request", "Key", "Model", "Endpoint", "Status", "Latency", "TTFT", "Tokens in/out"];

// When a finished request finished (unix seconds): the list is ordered by it and shows it, so
// a slow request that started first but finished last is not out of place.
export function finishedAt(r) {
  if (typeof r.finishedAt === "number") return r.finishedAt;
  if (typeof r.startedAt === "number" && typeof r.ageMs === "number") return r.startedAt + r.ageMs / 1000;
  if (typeof r.startedAt === "number" && typeof r.latencyMs === "number") return r.startedAt + r.latencyMs / 1000;
  return r.timestamp ?? null;
}

export function categoryOf(type) {
  return CATEGORIES.find(([, test]) => test(type))[0];
}

function summarize(type, d) {
  const parts = (...xs) => xs.filter((x) => x !== null && x !== undefined && x !== "").join(" \u00b7 ");
  switch (type) {
    case "inference_start":
      return parts(d.key, d.model, d.endpoint, d.streaming ? "stream" : null);
    case "inference_complete":
    case "inference_failed":
      return parts(
        d.status,
        d.key,
        d.model,
        d.endpoint,
        fmtMs(d.latencyMs),
        d.tokensOut !== null && d.tokensOut !== undefined ? `${d.tokensIn ?? "?"}\u2192${d.tokensOut} tok` : null,
        d.error || d.message,
      );
    case "access_denied":
      return parts(d.status, d.address, d.reason, d.path);
    case "error":
      return parts(d.operation, d.modelKey || d.model, d.message);
    case "events_lost":
      return `${d.count} events not delivered to this page`;
    case "lmstudio_log":
      return parts(d.level, d.message || d.text);
    default: {
      const rest = { ...d };
      for (const k of ["id", "type", "timestamp", "requestId"]) delete rest[k];
      const text = JSON.stringify(rest);
      return text.length > 160 ? `${text.slice(0, 157)}\u2026` : text;
    }
  }
}

export function createLive(root, ctx) {
  const inflightBody = h("tbody", { id: "inflight-rows" });
  const recentBody = h("tbody", { id: "recent-rows" });
  const sourceNote = h("p", { class: "hint", id: "requests-source" });
  const showAll = h("input", { type: "checkbox", id: "show-all-routes" });
  showAll.addEventListener("change", () => renderRequests());
  const filters = h("div", { class: "filters", id: "log-filters", role: "group", "aria-label": "event types" });
  const pauseButton = h("button", { type: "button", class: "small", id: "log-pause" }, "Pause");
  const pendingNote = h("span", { class: "muted", id: "log-pending" });
  const logList = h("ol", { class: "log", id: "event-log" });
  const waiting = createWaitingView();
  const table = (caption, head, body) =>
    h(
      "div",
      { class: "table-wrap" },
      h("table", { class: "cards" }, h("caption", {}, caption), h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))), body),
    );
  fill(
    root,
    h("h1", { class: "view-title" }, "Live requests"),
    sourceNote,
    h("label", { class: "muted toggle" }, showAll, " include admin and dashboard requests"),
    waiting.el,
    table("In flight", INFLIGHT_COLUMNS, inflightBody),
    table("Recent (newest finished first)", RECENT_COLUMNS, recentBody),
    h(
      "section",
      { class: "card" },
      h(
        "div",
        { class: "log-head" },
        h("h2", {}, "Event log"),
        pauseButton,
        h("button", { type: "button", class: "small", onclick: () => clearLog() }, "Clear"),
        pendingNote,
      ),
      filters,
      logList,
    ),
  );

  let visible = false;
  let timer = null;
  let serverRequests = null; // true: /debug/requests works; false: pieced from the stream
  let snapshot = { inFlight: [], recent: [] };
  const streamInflight = new Map(); // requestId -> start event data
  const streamRecent = [];
  const cancelling = new Set();

  // ---- requests tables ----

  async function poll() {
    if (serverRequests === false) return renderRequests();
    try {
      const body = await api("debug/requests");
      serverRequests = true;
      snapshot = {
        inFlight: body.inFlight || body.in_flight || body.active || [],
        recent: body.recent || body.completed || [],
      };
      sourceNote.textContent = "Requests as the gateway tracks them; refreshed every 2 s and on each event.";
    } catch (err) {
      if (err instanceof NotAvailable) {
        serverRequests = false;
        sourceNote.textContent =
          "Request tracking (/debug/requests) is not available on this gateway: the tables are " +
          "pieced together from the event stream, and requests cannot be cancelled from here.";
      } else {
        sourceNote.textContent = `Request list: ${explain(err)}`;
      }
    }
    renderRequests();
  }

  function fromStream() {
    const now = Date.now() / 1000;
    return {
      inFlight: [...streamInflight.values()].map((d) => ({
        requestId: d.requestId,
        key: d.key,
        model: d.model,
        endpoint: d.endpoint,
        client: d.client,
        ageMs: (now - d.timestamp) * 1000,
      })),
      recent: streamRecent.map((d) => ({
        ...d,
        startedAt: d.timestamp - (d.latencyMs || 0) / 1000,
        finishedAt: d.timestamp,
      })),
    };
  }

  // The operator's own admin calls and this page's files are not traffic worth watching.
  const worthShowing = (r) => showAll.checked || !/^\/(dashboard|admin)(\/|$)/.test(r.path || "");

  function renderRequests() {
    const all = serverRequests ? snapshot : fromStream();
    const recent = all.recent.filter(worthShowing).map((r) => ({ ...r, finishedAt: finishedAt(r) }));
    recent.sort((a, b) => (b.finishedAt ?? 0) - (a.finishedAt ?? 0));
    const view = { inFlight: all.inFlight.filter(worthShowing), recent };
    const canCancel = serverRequests === true;
    if (!view.inFlight.length) {
      fill(inflightBody, h("tr", {}, h("td", { colspan: 8, class: "muted" }, "Nothing in flight.")));
    } else {
      fill(
        inflightBody,
        view.inFlight.map((r) =>
          h(
            "tr",
            { dataset: { request: r.requestId || "" } },
            h("td", { class: "mono", title: r.requestId }, shortId(r.requestId)),
            h("td", {}, r.key || "\u2014"),
            h("td", { class: "mono" }, r.model || "\u2014"),
            h("td", {}, r.endpoint || r.path || "\u2014"),
            h("td", {}, fmtMs(r.ageMs)),
            h("td", {}, fmtCount(r.tokensStreamed ?? null)),
            h("td", { class: "mono" }, r.client || "\u2014"),
            h(
              "td",
              {},
              canCancel && r.requestId
                ? confirmButton(
                    cancelling.has(r.requestId) ? "Cancelling\u2026" : "Cancel",
                    "Confirm cancel",
                    () => cancel(r.requestId),
                    { class: "small danger" },
                  )
                : null,
            ),
          ),
        ),
      );
      labelCells(inflightBody, INFLIGHT_COLUMNS);
    }
    if (!view.recent.length) {
      fill(recentBody, h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No requests yet.")));
      return;
    }
    fill(
      recentBody,
      view.recent.slice(0, KEEP_RECENT).map((r) => {
        const failed = (r.status || 0) >= 400 || Boolean(r.error);
        return h(
          "tr",
          { class: failed ? "failed" : null, dataset: { request: r.requestId || "" } },
          h("td", { title: r.startedAt ? `started ${fmtTime(r.startedAt)}` : "" }, fmtTime(r.finishedAt)),
          h("td", { class: "mono", title: r.requestId }, shortId(r.requestId)),
          h("td", {}, r.key || "\u2014"),
          h("td", { class: "mono" }, r.model || "\u2014"),
          h("td", {}, r.endpoint || r.path || "\u2014"),
          h("td", { title: r.error || "" }, r.cancelled ? `${r.status ?? ""} cancelled` : String(r.status ?? "\u2014")),
          h("td", {}, fmtMs(r.latencyMs)),
          h("td", {}, fmtMs(r.ttftMs)),
          h("td", {}, `${fmtCount(r.tokensIn ?? null)} / ${fmtCount(r.tokensOut ?? null)}`),
        );
      }),
    );
    labelCells(recentBody, RECENT_COLUMNS);
  }

  async function cancel(requestId) {
    cancelling.add(requestId);
    try {
      await api(`debug/requests/${encodeURIComponent(requestId)}`, { method: "DELETE" });
      ctx.notify(`Cancelled ${requestId}`, "ok");
    } catch (err) {
      ctx.notify(`Cancel failed: ${explain(err)}`, "error");
    } finally {
      cancelling.delete(requestId);
      poll();
    }
  }

  let pollQueued = null;
  function pollSoon() {
    if (pollQueued || !visible) return;
    pollQueued = setTimeout(() => {
      pollQueued = null;
      poll();
    }, 250);
  }

  // ---- event log ----

  const enabled = new Set(CATEGORIES.map(([name]) => name));
  const entries = []; // newest last
  let paused = false;
  let pending = 0;

  fill(
    filters,
    CATEGORIES.map(([name]) => {
      const box = h("input", { type: "checkbox", checked: true, value: name, id: `filter-${name}` });
      box.addEventListener("change", () => {
        if (box.checked) enabled.add(name);
        else enabled.delete(name);
        renderLog();
      });
      return h("label", { class: `filter cat-${name}` }, box, ` ${name}`);
    }),
  );
  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    pauseButton.setAttribute("aria-pressed", String(paused));
    if (!paused) {
      pending = 0;
      renderLog();
    }
    renderPending();
  });

  function clearLog() {
    entries.length = 0;
    pending = 0;
    renderLog();
    renderPending();
  }

  function renderPending() {
    pendingNote.textContent = paused ? `paused \u00b7 ${pending} new event${pending === 1 ? "" : "s"} held` : "";
  }

  function logItem(e) {
    return h(
      "li",
      { class: `log-item cat-${e.category}`, dataset: { type: e.type } },
      h(
        "details",
        {},
        h(
          "summary",
          {},
          h("time", {}, fmtTime(e.data.timestamp || e.at)),
          h("span", { class: "type" }, e.type),
          h("span", { class: "text" }, summarize(e.type, e.data)),
        ),
        h("pre", {}, JSON.stringify(e.data, null, 2)),
      ),
    );
  }

  function renderLog() {
    const shown = entries.filter((e) => enabled.has(e.category));
    if (!shown.length) {
      fill(logList, h("li", { class: "muted" }, "No events yet."));
      return;
    }
    fill(logList, shown.slice(-LOG_LIMIT).reverse().map(logItem));
  }

  function addToLog(ev) {
    const entry = { type: ev.type, data: ev.data, category: categoryOf(ev.type), at: Date.now() / 1000 };
    entries.push(entry);
    if (entries.length > LOG_LIMIT * 2) entries.splice(0, entries.length - LOG_LIMIT);
    if (paused) {
      pending += 1;
      renderPending();
      return;
    }
    if (!visible || !enabled.has(entry.category)) return;
    if (logList.firstElementChild && logList.firstElementChild.classList.contains("muted")) {
      logList.replaceChildren();
    }
    logList.prepend(logItem(entry));
    while (logList.children.length > LOG_LIMIT) logList.lastElementChild.remove();
  }

  return {
    show() {
      visible = true;
      renderLog();
      poll();
      timer = setInterval(poll, POLL_MS);
      waiting.start();
    },
    hide() {
      visible = false;
      clearInterval(timer);
      waiting.stop();
    },
    onEvent(ev) {
      if (ev.type === "connected") return;
      addToLog(ev);
      if (visible && changesQueue(ev.type)) waiting.soon();
      const d = ev.data;
      if (ev.type === "inference_start" && d.requestId) {
        streamInflight.set(d.requestId, d);
      } else if (ev.type === "inference_complete" && d.requestId) {
        streamInflight.delete(d.requestId);
        streamRecent.unshift(d);
        streamRecent.length = Math.min(streamRecent.length, KEEP_RECENT);
      }
      if (visible && ev.type.startsWith("inference_")) {
        if (serverRequests) pollSoon();
        else renderRequests();
      }
    },
  };
}
