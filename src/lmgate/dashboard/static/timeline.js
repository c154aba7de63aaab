// The last 15 minutes of finished inference requests, in 10-second buckets, built from the
// `inference_complete` events of the debug stream (including the ones the gateway replays on
// connect). Feeds the Overview charts.

export const WINDOW_S = 15 * 60;
export const BUCKET_S = 10;

function quantile(sorted, q) {
  if (!sorted.length) return null;
  const rank = q * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

export class Timeline {
  constructor() {
    this.buckets = new Map(); // bucket start (unix s) -> tallies
    this.seen = new Set(); // request ids already counted (a replay may repeat one)
  }

  add(event) {
    const ts = Number(event.timestamp) || Date.now() / 1000;
    if (ts < Date.now() / 1000 - WINDOW_S - BUCKET_S) return;
    const rid = event.requestId;
    if (rid) {
      const mark = `${rid}@${event.id ?? ts}`;
      if (this.seen.has(mark)) return;
      this.seen.add(mark);
      if (this.seen.size > 5000) this.seen = new Set([...this.seen].slice(-2500));
    }
    const start = ts - (ts % BUCKET_S);
    let b = this.buckets.get(start);
    if (!b) {
      b = { requests: 0, errors: 0, latency: [], ttft: [], tokensOut: 0, timedTokens: 0, decodeS: 0 };
      this.buckets.set(start, b);
    }
    b.requests += 1;
    if ((event.status || 0) >= 400 || (event.error && !event.status)) b.errors += 1;
    if (typeof event.latencyMs === "number") b.latency.push(event.latencyMs);
    if (typeof event.ttftMs === "number") b.ttft.push(event.ttftMs);
    if (typeof event.tokensOut === "number") b.tokensOut += event.tokensOut;
    if (event.tokensOut > 0 && event.tokensPerSecond > 0) {
      b.timedTokens += event.tokensOut;
      b.decodeS += event.tokensOut / event.tokensPerSecond;
    }
    this.prune();
  }

  prune() {
    const oldest = Date.now() / 1000 - WINDOW_S - BUCKET_S;
    for (const start of this.buckets.keys()) if (start < oldest) this.buckets.delete(start);
  }

  // One point per bucket over the window: [bucketMiddle, figures]. Empty buckets count zero
  // requests and have no latency (null: a gap in the chart, not a drop to zero). Rates divide
  // by the whole bucket, so the bucket still filling reads low for a few seconds rather than
  // spiking (one request in its first half second would otherwise read as 2/s).
  points() {
    this.prune();
    const now = Date.now() / 1000;
    const first = now - WINDOW_S - ((now - WINDOW_S) % BUCKET_S);
    const out = [];
    for (let start = first; start <= now; start += BUCKET_S) {
      const b = this.buckets.get(start);
      const span = BUCKET_S;
      const lat = b ? [...b.latency].sort((x, y) => x - y) : [];
      const ttft = b ? [...b.ttft].sort((x, y) => x - y) : [];
      out.push({
        t: start + BUCKET_S / 2,
        rps: b ? b.requests / span : 0,
        errorRate: b && b.requests ? b.errors / b.requests : b ? 0 : null,
        p50: quantile(lat, 0.5),
        p99: quantile(lat, 0.99),
        ttft50: quantile(ttft, 0.5),
        ttft99: quantile(ttft, 0.99),
        tokensPerSecond: b ? b.tokensOut / span : 0,
      });
    }
    return out;
  }

  // Figures over the last `seconds`.
  summary(seconds = 60) {
    const since = Date.now() / 1000 - seconds;
    let requests = 0;
    let errors = 0;
    let tokensOut = 0;
    let timedTokens = 0;
    let decodeS = 0;
    const lat = [];
    const ttft = [];
    for (const [start, b] of this.buckets) {
      if (start + BUCKET_S <= since) continue;
      requests += b.requests;
      errors += b.errors;
      tokensOut += b.tokensOut;
      timedTokens += b.timedTokens;
      decodeS += b.decodeS;
      lat.push(...b.latency);
      ttft.push(...b.ttft);
    }
    lat.sort((x, y) => x - y);
    ttft.sort((x, y) => x - y);
    return {
      errors,
      requestsPerSecond: requests / seconds,
      errorRate: requests ? errors / requests : 0,
      latencyMs: { p50: quantile(lat, 0.5), p99: quantile(lat, 0.99) },
      ttftMs: { p50: quantile(ttft, 0.5), p99: quantile(ttft, 0.99) },
      tokensPerSecond: tokensOut / seconds,
      // Generation speed: output tokens over the time spent generating them.
      decodeTokensPerSecond: decodeS > 0 ? timedTokens / decodeS : null,
      requests,
    };
  }
}
