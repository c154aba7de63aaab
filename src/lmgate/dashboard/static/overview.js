// Overview: upstream health and capabilities, the headline numbers of the last minute, and
// 15-minute charts. Numbers come from /debug/metrics (refreshed every few seconds and soon
// after each request event); charts come from the stream's inference_complete events.

import { api, explain } from "./api.js";
import { lineChart } from "./charts.js";
import {
  fill,
  fmtAgo,
  fmtCount,
  fmtDuration,
  fmtMs,
  fmtPercent,
  fmtRate,
  h,
} from "./dom.js";
import { WINDOW_S } from "./timeline.js";

const METRICS_EVERY_MS = 5000;
const CAPABILITIES = [
  ["lmstudio", "LM Studio"],
  ["nativeV1", "REST v1"],
  ["nativeV0", "REST v0"],
  ["openai", "OpenAI API"],
  ["modelManagement", "load/unload"],
];

// Whether LM Studio asks lmgate for a token is a setting, not a feature: said in words.
function upstreamAuth(caps) {
  if (caps.authRequired === undefined) return "\u2014";
  return caps.authRequired ? "token required (LM Studio's own)" : "none needed";
}

export function createOverview(root, ctx) {
  const upstreamCard = h("section", { class: "card upstream", "aria-labelledby": "up-title" });
  const tiles = h("div", { class: "tiles", id: "tiles" });
  const tilesNote = h("p", { class: "hint", id: "tiles-note" });
  const metricsError = h("p", { class: "error", id: "metrics-error", role: "status" });
  const chartBoxes = {
    rps: h("div", { class: "chart-box" }),
    errors: h("div", { class: "chart-box" }),
    latency: h("div", { class: "chart-box" }),
    ttft: h("div", { class: "chart-box" }),
    tokens: h("div", { class: "chart-box" }),
  };
  const chartCard = (title, box, legend) =>
    h("figure", { class: "card chart-card" }, h("figcaption", {}, title, legend || null), box);
  const legend = (a, b) =>
    h(
      "span",
      { class: "legend" },
      h("span", { class: "key line-a" }, a),
      b ? h("span", { class: "key line-b" }, b) : null,
    );
  fill(
    root,
    h("h1", { class: "view-title" }, "Overview"),
    h("div", { class: "overview-grid" }, upstreamCard, h("div", {}, tiles, tilesNote, metricsError)),
    h("h2", {}, "Last 15 minutes"),
    h(
      "div",
      { class: "charts" },
      chartCard("Requests / s", chartBoxes.rps),
      chartCard("Error rate", chartBoxes.errors),
      chartCard("Latency", chartBoxes.latency, legend("p50", "p99")),
      chartCard("Time to first token", chartBoxes.ttft, legend("p50", "p99")),
      chartCard("Output tokens / s", chartBoxes.tokens),
    ),
  );

  let visible = false;
  let metrics = null;
  let status = null;
  let metricsAt = 0;
  let upstream = null;
  let upstreamError = null;
  let timers = [];
  let soon = null;

  async function loadUpstream(refresh = false) {
    try {
      upstream = await api(`admin/upstream${refresh ? "?refresh=true" : ""}`);
      upstreamError = null;
    } catch (err) {
      upstreamError = err;
    }
    renderUpstream();
  }

  async function loadMetrics() {
    try {
      metrics = await api("debug/metrics");
      metricsAt = Date.now();
      if (metrics.inFlight === undefined) status = await api("debug/status");
      metricsError.textContent = "";
    } catch (err) {
      // Shown in place: a gateway that is down would otherwise raise a notice every few seconds.
      metricsError.textContent = `Gateway figures: ${explain(err)}`;
    }
    renderTiles();
  }

  function metricsSoon() {
    if (soon || !visible) return;
    soon = setTimeout(() => {
      soon = null;
      loadMetrics();
    }, 400);
  }

  function renderUpstream() {
    if (upstreamError) {
      fill(
        upstreamCard,
        h("h2", { id: "up-title" }, "Upstream"),
        h("p", { class: "error" }, explain(upstreamError)),
      );
      return;
    }
    if (!upstream) return;
    const caps = upstream.capabilities || {};
    const active = metrics && metrics.modelInfo ? metrics.modelInfo.activeModel : null;
    fill(
      upstreamCard,
      h(
        "h2",
        { id: "up-title" },
        "Upstream ",
        h(
          "span",
          { class: `badge ${upstream.reachable ? "ok" : "bad"}`, id: "upstream-health" },
          upstream.reachable ? "reachable" : "unreachable",
        ),
      ),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "URL"),
        h("dd", { class: "mono" }, upstream.url || "\u2014"),
        h("dt", {}, "Kind"),
        h("dd", {}, upstream.kind || "\u2014"),
        h("dt", {}, "Upstream auth"),
        h("dd", { id: "upstream-auth" }, upstreamAuth(caps)),
        h("dt", {}, "Answer time"),
        h("dd", {}, fmtMs(upstream.latencyMs)),
        h("dt", {}, "Models synced"),
        h("dd", {}, upstream.lastSync ? fmtAgo(upstream.lastSync) : "not yet"),
        h("dt", {}, "Loaded"),
        h("dd", { class: "mono" }, (upstream.loadedInstances || []).join(", ") || "nothing"),
        active !== null && active !== undefined ? [h("dt", {}, "Active model"), h("dd", { class: "mono" }, active)] : null,
      ),
      h(
        "ul",
        { class: "chips", "aria-label": "capabilities" },
        CAPABILITIES.map(([name, label]) =>
          h(
            "li",
            { class: `chip ${caps[name] ? "on" : "off"}`, title: `${label}: ${caps[name] ? "available" : "not available"}` },
            label,
          ),
        ),
      ),
      upstream.lastError || upstream.syncError
        ? h("p", { class: "error" }, upstream.syncError || upstream.lastError)
        : null,
      h(
        "button",
        { type: "button", class: "small", onclick: () => loadUpstream(true) },
        "Check again",
      ),
    );
  }

  // The last minute of inference requests, from the stream: the gateway's own windows also
  // count admin calls and this page's files.
  function figures() {
    const local = ctx.timeline.summary(60);
    return {
      rps: local.requestsPerSecond,
      errorRate: local.errorRate,
      p50: local.latencyMs.p50,
      p99: local.latencyMs.p99,
      ttft50: local.ttftMs.p50,
      ttft99: local.ttftMs.p99,
      decode: local.decodeTokensPerSecond,
      requests: local.requests,
      errors: local.errors,
    };
  }

  // The tiles are built once and updated in place, so a second's tick moves no layout.
  const TILES = [
    ["uptime", "Uptime"],
    ["rps", "Requests / s"],
    ["errors", "Error rate"],
    ["inflight", "In flight"],
    ["latency", "Latency p50 / p99"],
    ["ttft", "TTFT p50 / p99"],
    ["tps", "Tokens / s"],
  ];
  const tileParts = {};
  fill(
    tiles,
    TILES.map(([id, label]) => {
      const value = h("span", { class: "tile-value" }, "\u2014");
      const sub = h("span", { class: "tile-sub" });
      tileParts[id] = { value, sub };
      return h("div", { class: "tile", id: `tile-${id}` }, h("span", { class: "tile-label" }, label), value, sub);
    }),
  );
  tilesNote.textContent =
    "Rates, error rate, percentiles and speed: inference requests of the last minute, from the " +
    "live stream. Since start (under Uptime): every route, admin and dashboard included, as the " +
    "gateway counts them.";

  function setTile(id, value, sub = "") {
    const parts = tileParts[id];
    if (parts.value.textContent !== value) parts.value.textContent = value;
    if (parts.sub.textContent !== sub) parts.sub.textContent = sub;
    parts.sub.hidden = !sub;
  }

  function renderTiles() {
    if (!metrics) return;
    const f = figures();
    const perf = metrics.performance || {};
    const baseUptime = metrics.uptimeSeconds ?? (metrics.system && metrics.system.uptime);
    const uptime = baseUptime === undefined ? null : baseUptime + (Date.now() - metricsAt) / 1000;
    const inFlight = metrics.inFlight ?? (status ? status.inFlight : null);
    const total = metrics.requestsTotal ?? perf.totalRequests;
    const errors = metrics.errorsTotal ?? perf.totalErrors;
    setTile(
      "uptime",
      fmtDuration(uptime),
      total === undefined
        ? ""
        : `${fmtCount(total)} request${total === 1 ? "" : "s"}, ${fmtCount(errors)} error${errors === 1 ? "" : "s"} since start`,
    );
    setTile("rps", fmtRate(f.rps, "/s"), `${fmtCount(f.requests)} in the last minute`);
    setTile(
      "errors",
      f.requests ? fmtPercent(f.errorRate) : "\u2014",
      `${fmtCount(f.errors)} of ${fmtCount(f.requests)} in the last minute`,
    );
    setTile("inflight", inFlight === null || inFlight === undefined ? "\u2014" : String(inFlight));
    setTile("latency", `${fmtMs(f.p50)} / ${fmtMs(f.p99)}`);
    setTile("ttft", `${fmtMs(f.ttft50)} / ${fmtMs(f.ttft99)}`);
    setTile("tps", fmtRate(f.decode, "tok/s"), "generation speed");
  }

  function renderCharts() {
    const points = ctx.timeline.points();
    const to = Date.now() / 1000;
    const from = to - WINDOW_S;
    const series = (cls, pick) => ({ cls, points: points.map((p) => [p.t, pick(p)]) });
    lineChart(chartBoxes.rps, {
      title: "Requests per second, last 15 minutes",
      series: [series("line-a", (p) => p.rps)],
      from,
      to,
      format: (v) => fmtRate(v, "/s"),
    });
    lineChart(chartBoxes.errors, {
      title: "Error rate, last 15 minutes",
      series: [series("line-bad", (p) => p.errorRate)],
      from,
      to,
      format: fmtPercent,
    });
    lineChart(chartBoxes.latency, {
      title: "Latency p50 and p99, last 15 minutes",
      series: [series("line-a", (p) => p.p50), series("line-b", (p) => p.p99)],
      from,
      to,
      format: fmtMs,
    });
    lineChart(chartBoxes.ttft, {
      title: "Time to first token p50 and p99, last 15 minutes",
      series: [series("line-a", (p) => p.ttft50), series("line-b", (p) => p.ttft99)],
      from,
      to,
      format: fmtMs,
    });
    lineChart(chartBoxes.tokens, {
      title: "Output tokens per second, last 15 minutes",
      series: [series("line-a", (p) => p.tokensPerSecond)],
      from,
      to,
      format: (v) => fmtRate(v, "tok/s"),
    });
  }

  let chartsQueued = false;
  function chartsSoon() {
    if (chartsQueued || !visible) return;
    chartsQueued = true;
    requestAnimationFrame(() => {
      chartsQueued = false;
      renderCharts();
    });
  }

  return {
    show() {
      visible = true;
      loadUpstream();
      loadMetrics();
      renderCharts();
      timers = [
        setInterval(loadMetrics, METRICS_EVERY_MS),
        setInterval(renderCharts, 5000),
        setInterval(renderTiles, 1000),
      ];
    },
    hide() {
      visible = false;
      timers.forEach(clearInterval);
      timers = [];
    },
    onEvent(ev) {
      if (!visible || ev.replayed) return;
      if (ev.type === "upstream_state" || ev.type.startsWith("model_")) loadUpstream();
      if (ev.type === "inference_start" || ev.type === "inference_complete") metricsSoon();
      if (ev.type === "inference_complete") chartsSoon();
    },
  };
}
