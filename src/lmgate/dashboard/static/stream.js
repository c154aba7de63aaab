// Reads /debug/stream with fetch() and a stream reader: EventSource cannot send the
// Authorization header. Reconnects with backoff and resumes after the last event id it saw
// (Last-Event-ID), so a dropped connection loses nothing the gateway still buffers.

import { apiUrl, authHeaders } from "./api.js";

const SILENCE_LIMIT_MS = 75_000; // the gateway sends a keep-alive every 30 s by default
const MAX_BACKOFF_MS = 15_000;

export class EventStream {
  // onEvent({type, id, data}); onState("connecting" | "live" | "retrying" | "stopped", detail)
  // onAuthLost(status) when the key is refused.
  constructor({ onEvent, onState, onAuthLost }) {
    this.onEvent = onEvent;
    this.onState = onState;
    this.onAuthLost = onAuthLost;
    this.lastId = "0"; // first connection: replay what the gateway still buffers
    this.running = false;
    this.controller = null;
    this.backoff = 1000;
    this.connections = 0;
    this.replayUntil = 0;
    this.sawLive = false;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.loop();
  }

  stop() {
    this.running = false;
    if (this.controller) this.controller.abort();
    this.onState("stopped");
  }

  async loop() {
    while (this.running) {
      const outcome = await this.connectOnce();
      if (!this.running) return;
      if (outcome === "auth") {
        this.running = false;
        this.onState("stopped", "key refused");
        return;
      }
      this.onState("retrying", `reconnecting in ${Math.round(this.backoff / 1000)} s`);
      await new Promise((resolve) => setTimeout(resolve, this.backoff));
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    }
  }

  async connectOnce() {
    this.controller = new AbortController();
    const { signal } = this.controller;
    let watchdog = null;
    const feed = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => this.controller.abort(), SILENCE_LIMIT_MS);
    };
    this.onState("connecting");
    try {
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (this.lastId !== null) headers["Last-Event-ID"] = this.lastId;
      feed();
      const response = await fetch(apiUrl("debug/stream"), { headers, signal, cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        this.onAuthLost(response.status);
        return "auth";
      }
      if (!response.ok || !response.body) {
        this.onState("retrying", `HTTP ${response.status}`);
        return "error";
      }
      this.connections += 1;
      this.backoff = 1000;
      this.onState("live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return "closed";
        feed();
        buffer = (buffer + value).replace(/\r\n/g, "\n");
        let cut = buffer.indexOf("\n\n");
        while (cut >= 0) {
          this.dispatch(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          cut = buffer.indexOf("\n\n");
        }
      }
    } catch (err) {
      if (err.name !== "AbortError") this.onState("retrying", err.message);
      return "error";
    } finally {
      clearTimeout(watchdog);
    }
  }

  dispatch(block) {
    let type = "message";
    let id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // comment: keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    if (id !== null) this.lastId = id;
    if (!data.length) return;
    let parsed;
    try {
      parsed = JSON.parse(data.join("\n"));
    } catch {
      parsed = { text: data.join("\n") };
    }
    if (type === "connected") {
      // Events up to this id were buffered before we connected: history, not news.
      this.replayUntil = Number(parsed.lastEventId) || 0;
      this.sawLive = false;
    }
    let replayed = id !== null && Number(id) <= this.replayUntil;
    if (type === "events_lost") replayed = !this.sawLive && this.connections === 1;
    if (id !== null && !replayed) this.sawLive = true;
    this.onEvent({ type, id, data: parsed, replayed });
  }
}
