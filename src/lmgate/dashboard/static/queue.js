// The scheduler as the Live and Models views show it, from GET /debug/queue: who waits for
// which model (Live), and each loaded model's slots, idle-TTL countdown, pin and owner
// (Models). Between two reads the clock runs on in the page, so waits count up and TTLs count
// down every second without asking the gateway more often.

import { api, explain, NotAvailable } from "./api.js";
import { fill, fmtDuration, fmtMs, h, labelCells } from "./dom.js";

const TICK_MS = 1000;
const READ_EVERY = 2; // ticks between two reads of the queue, besides those events ask for
const SOON_MS = 250; // events come in bursts: one read for a burst
const WAITING_COLUMNS = ["Key", "Model", "Position", "Waited"];
const SLOT_COLUMNS = ["Model", "In flight / slots", "Waiting", "Idle unload in", "Pinned", "Loaded by"];

// One reader of /debug/queue while its view is shown: it reads every READ_EVERY ticks and
// soon after events that change the queue (`soon()`); `render` gets the last answer and the
// seconds since it arrived, on every read and every tick.
function queueReader(render, noteEl) {
  let last = null;
  let at = 0;
  let pending = null;
  let ticker = null;
  let ticks = 0;
  let queued = null;
  let missing = false;

  const draw = () => {
    if (last) render(last, (performance.now() - at) / 1000);
  };

  async function refresh() {
    if (missing) return;
    if (pending) return pending;
    pending = (async () => {
      try {
        last = await api("debug/queue");
        at = performance.now();
        noteEl.textContent = "";
        noteEl.classList.remove("error");
        draw();
      } catch (err) {
        if (err instanceof NotAvailable) {
          missing = true;
          noteEl.textContent = "This gateway has no scheduler queue (/debug/queue).";
        } else {
          noteEl.textContent = `Queue: ${explain(err)}`;
          noteEl.classList.add("error");
        }
      } finally {
        pending = null;
      }
    })();
    return pending;
  }

  return {
    refresh,
    soon() {
      if (queued || !ticker) return;
      queued = setTimeout(() => {
        queued = null;
        refresh();
      }, SOON_MS);
    },
    start() {
      clearInterval(ticker);
      ticker = setInterval(() => {
        ticks += 1;
        if (ticks % READ_EVERY === 0) refresh();
        else draw();
      }, TICK_MS);
      return refresh();
    },
    stop() {
      clearInterval(ticker);
      clearTimeout(queued);
      ticker = null;
      queued = null;
    },
  };
}

function section(title, id, caption, columns, body, note) {
  return h(
    "section",
    { class: "queue-box", id },
    h("h2", {}, title),
    note,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "cards" },
        h("caption", {}, caption),
        h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
        body,
      ),
    ),
  );
}

// The Live view's "Waiting" table: every queued request, oldest first.
export function createWaitingView() {
  const body = h("tbody", { id: "queue-rows" });
  const note = h("p", { class: "hint", id: "queue-note" });
  const count = h("span", { class: "badge", id: "queue-count" }, "0");
  const el = section(
    "Waiting ",
    "queue",
    "Requests waiting for a slot or a model load, in arrival order",
    WAITING_COLUMNS,
    body,
    note,
  );
  el.querySelector("h2").append(count);

  function render(data, since) {
    const waiting = data.waiting || [];
    count.textContent = String(waiting.length);
    count.className = waiting.length ? "badge accent" : "badge";
    if (!waiting.length) {
      fill(body, h("tr", {}, h("td", { colspan: WAITING_COLUMNS.length, class: "muted" }, "Nobody is waiting.")));
      return;
    }
    fill(
      body,
      waiting.map((w) =>
        h(
          "tr",
          { dataset: { model: w.model || "", key: w.key || "" } },
          h("td", {}, w.key || "\u2014"),
          h("td", { class: "mono" }, w.model || "\u2014"),
          h("td", { class: "queue-position" }, String(w.position ?? "\u2014")),
          h("td", { class: "queue-waited" }, fmtMs((w.waitedMs || 0) + since * 1000)),
        ),
      ),
    );
    labelCells(body, WAITING_COLUMNS);
  }

  return { el, ...queueReader(render, note) };
}

function ttlText(m, since) {
  if (m.ttlRemaining === null || m.ttlRemaining === undefined) return m.pinned ? "never (pinned)" : "never";
  if (m.inFlight) return `${fmtDuration(m.ttlRemaining)} once idle`;
  const left = m.ttlRemaining - since;
  return left > 0 ? fmtDuration(Math.ceil(left)) : "due";
}

// The Models view's "Slots" table: each model the scheduler counts as loaded.
export function createSlotsView() {
  const body = h("tbody", { id: "slot-rows" });
  const note = h("p", { class: "hint", id: "slots-note" });
  const upstream = h("p", { class: "muted", id: "slots-upstream" });
  const el = section(
    "Scheduler",
    "slots",
    "Loaded models: answers running against slots, idle unload, pin and owner",
    SLOT_COLUMNS,
    body,
    h("div", {}, note, upstream),
  );

  function render(data, since) {
    const up = (data.upstreams || [])[0];
    if (up) {
      const parts = [
        up.loading ? `loading ${up.loading}` : null,
        up.switchingTo ? `switching to ${up.switchingTo} (waiting for answers to end)` : null,
        up.maxLoadedModels ? `at most ${up.maxLoadedModels} loaded` : null,
        up.canLoad ? null : "this upstream cannot load models: no switches",
      ].filter(Boolean);
      upstream.textContent = parts.join(" \u00b7 ");
    }
    const models = data.models || [];
    if (!models.length) {
      fill(body, h("tr", {}, h("td", { colspan: SLOT_COLUMNS.length, class: "muted" }, "No model is loaded.")));
      return;
    }
    fill(
      body,
      models.map((m) =>
        h(
          "tr",
          { dataset: { model: m.model } },
          h("td", { class: "mono" }, m.model, m.draining ? h("span", { class: "badge bad" }, "draining") : null),
          h("td", { class: "slot-use" }, `${m.inFlight} / ${m.slots}`),
          h("td", {}, String(m.waiting ?? 0)),
          h("td", { class: "slot-ttl" }, ttlText(m, since)),
          h("td", { class: "slot-pinned" }, m.pinned ? "pinned" : "no"),
          h("td", { class: "slot-owner" }, m.owned ? "lmgate" : "someone else"),
        ),
      ),
    );
    labelCells(body, SLOT_COLUMNS);
  }

  return { el, ...queueReader(render, note) };
}

// Events after which the queue has changed: read it again soon.
export function changesQueue(type) {
  return (
    type === "request_queued" ||
    type === "request_dequeued" ||
    type.startsWith("inference_") ||
    type.startsWith("model_")
  );
}
