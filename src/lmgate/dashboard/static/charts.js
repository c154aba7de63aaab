// Two small SVG charts, drawn at the container's real pixel width (redrawn on resize):
// a time-series line chart and a stacked bar chart. Colours come from CSS classes.

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, text = null) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== null) el.textContent = text;
  return el;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * exp) return step * exp;
  return 10 * exp;
}

// Redraw `draw(width)` into `container` now and whenever its width changes.
function responsive(container, draw) {
  const render = () => draw(Math.max(160, Math.floor(container.clientWidth || 300)));
  render();
  if (!container._observer && "ResizeObserver" in window) {
    let last = container.clientWidth;
    container._observer = new ResizeObserver(() => {
      if (container.clientWidth !== last) {
        last = container.clientWidth;
        container._redraw();
      }
    });
    container._observer.observe(container);
  }
  container._redraw = render;
}

// series: [{label, cls, points: [[t, value|null], ...]}]; from/to: unix seconds.
export function lineChart(container, { title, series, from, to, format, height = 110 }) {
  responsive(container, (width) => {
    const pad = { top: 8, right: 8, bottom: 18, left: 8 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    let max = 0;
    for (const one of series) for (const [, v] of one.points) if (v !== null && v > max) max = v;
    max = niceMax(max);
    const x = (t) => pad.left + ((t - from) / (to - from)) * plotW;
    const y = (v) => pad.top + plotH - (v / max) * plotH;

    const svg = s("svg", {
      class: "chart",
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": title,
    });
    svg.append(s("title", {}, title));
    for (const frac of [0, 0.5, 1]) {
      const gy = pad.top + plotH * frac;
      svg.append(s("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: gy, y2: gy }));
    }
    svg.append(s("text", { class: "axis", x: pad.left + 2, y: pad.top + 10 }, format(max)));
    svg.append(s("text", { class: "axis", x: pad.left, y: height - 4 }, "\u221215 min"));
    svg.append(
      s("text", { class: "axis", x: width - pad.right, y: height - 4, "text-anchor": "end" }, "now"),
    );
    for (const one of series) {
      let d = "";
      let pen = false;
      for (const [t, v] of one.points) {
        if (v === null || v === undefined) {
          pen = false;
          continue;
        }
        d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      }
      if (d) svg.append(s("path", { class: `line ${one.cls}`, d }));
      // A point with no neighbour draws no line: mark it with a dot.
      one.points.forEach(([t, v], i) => {
        const gap = (j) => j < 0 || j >= one.points.length || one.points[j][1] === null;
        if (v !== null && v !== undefined && gap(i - 1) && gap(i + 1)) {
          svg.append(s("circle", { class: `dot ${one.cls}`, cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5 }));
        }
      });
    }
    container.replaceChildren(svg);
  });
}

// categories: ["2026-11-01", ...]; stacks: [{label, values: [number per category]}].
export function stackedBars(container, { title, categories, stacks, format, height = 180 }) {
  responsive(container, (width) => {
    const pad = { top: 10, right: 8, bottom: 22, left: 8 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const totals = categories.map((_, i) => stacks.reduce((sum, st) => sum + (st.values[i] || 0), 0));
    const max = niceMax(Math.max(0, ...totals));
    const slot = plotW / Math.max(1, categories.length);
    const barW = Math.max(2, Math.min(48, slot * 0.7));

    const svg = s("svg", {
      class: "chart",
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": title,
    });
    svg.append(s("title", {}, title));
    for (const frac of [0, 0.5, 1]) {
      const gy = pad.top + plotH * frac;
      svg.append(s("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: gy, y2: gy }));
    }
    svg.append(s("text", { class: "axis", x: pad.left + 2, y: pad.top + 10 }, format(max)));
    const every = Math.ceil(categories.length / Math.max(1, Math.floor(plotW / 70)));
    categories.forEach((cat, i) => {
      const bx = pad.left + slot * i + (slot - barW) / 2;
      let base = pad.top + plotH;
      stacks.forEach((st, k) => {
        const v = st.values[i] || 0;
        if (!v) return;
        const bh = (v / max) * plotH;
        base -= bh;
        const rect = s("rect", {
          class: `bar series-${k % 8}`,
          x: bx.toFixed(1),
          y: base.toFixed(1),
          width: barW.toFixed(1),
          height: Math.max(1, bh).toFixed(1),
        });
        rect.append(s("title", {}, `${cat} \u00b7 ${st.label}: ${format(v)}`));
        svg.append(rect);
      });
      if (i % every === 0) {
        const label = cat.length > 5 ? cat.slice(5) : cat; // "2026-11-01" -> "11-01"
        svg.append(
          s("text", { class: "axis", x: bx + barW / 2, y: height - 6, "text-anchor": "middle" }, label),
        );
      }
    });
    container.replaceChildren(svg);
  });
}
