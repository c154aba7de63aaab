// Model downloads, a section of the Models page: a form to start one (catalog id or Hugging
// Face URL, optional quantization) and a row per download with a live progress bar, speed and
// time left, from the model_download_* events. Cancel stops lmgate following it; LM Studio's
// API cannot stop the transfer itself, which the row then says.

import { api, explain } from "./api.js";
import { fill, fmtDuration, fmtRate, h } from "./dom.js";

const ENDED = new Set(["completed", "already_downloaded", "failed", "cancelled"]);

function fmtBytes(bytes) {
  if (bytes === null || bytes === undefined) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function createDownloads({ notify, onDownloaded }) {
  const jobs = new Map(); // download id -> the job as the API describes it
  const list = h("ul", { class: "downloads", id: "download-list", "aria-live": "polite" });
  const model = h("input", {
    id: "download-model",
    name: "model",
    required: true,
    spellcheck: "false",
    autocomplete: "off",
    placeholder: "qwen/qwen3-4b, or a Hugging Face model URL",
  });
  const quant = h("input", {
    id: "download-quantization",
    name: "quantization",
    spellcheck: "false",
    autocomplete: "off",
    placeholder: "Q4_K_M (Hugging Face only)",
  });
  const error = h("p", { class: "error", id: "download-error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary", id: "download-submit" }, "Download");
  const form = h(
    "form",
    { class: "download-form", id: "download-form", onsubmit: start },
    h("label", { for: "download-model" }, "Model"),
    model,
    h("label", { for: "download-quantization" }, "Quantization"),
    quant,
    submit,
  );
  const element = h(
    "section",
    { class: "card downloads-box", id: "downloads" },
    h("h2", {}, "Download a model"),
    form,
    error,
    list,
  );

  async function start(event) {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    const body = { model: model.value.trim() };
    if (quant.value.trim()) body.quantization = quant.value.trim();
    try {
      const job = await api("admin/models/download", { method: "POST", body });
      remember(job);
      if (job.status === "already_downloaded") notify(`${job.model} is already downloaded`);
    } catch (err) {
      error.textContent = `Download: ${explain(err)}`;
    } finally {
      submit.disabled = false;
    }
  }

  async function cancel(job) {
    try {
      remember(await api(`admin/models/downloads/${encodeURIComponent(job.id)}`, { method: "DELETE" }));
    } catch (err) {
      notify(`Cancel: ${explain(err)}`, "error");
    }
  }

  function remember(job) {
    jobs.set(job.id, { ...jobs.get(job.id), ...job });
    render();
  }

  function row(job) {
    const done = job.progress === null || job.progress === undefined ? null : job.progress;
    const bar = h("progress", { max: "1", class: "download-bar", "aria-label": `${job.model} progress` });
    if (done !== null) bar.value = done;
    if (job.status === "completed" || job.status === "already_downloaded") bar.value = 1;
    const facts = [job.status];
    if (done !== null) facts.push(`${Math.round(done * 100)}%`);
    if (job.totalBytes) facts.push(`${fmtBytes(job.downloadedBytes)} of ${fmtBytes(job.totalBytes)}`);
    if (job.bytesPerSecond) facts.push(fmtRate(job.bytesPerSecond / 1e6, "MB/s"));
    if (job.etaSeconds !== null && job.etaSeconds !== undefined) facts.push(`${fmtDuration(job.etaSeconds)} left`);
    const running = !ENDED.has(job.status);
    return h(
      "li",
      { class: "download", dataset: { id: job.id, status: job.status } },
      h("span", { class: "mono" }, job.model),
      bar,
      h("span", { class: "download-facts" }, facts.join(" \u00b7 ")),
      job.error || (job.status === "cancelled" && job.message)
        ? h("span", { class: job.error ? "error" : "note" }, job.error || job.message)
        : null,
      running ? h("button", { type: "button", class: "small", onclick: () => cancel(job) }, "Cancel") : null,
    );
  }

  function render() {
    const ordered = [...jobs.values()].sort((a, b) => b.startedAt - a.startedAt).slice(0, 20);
    fill(list, ordered.length ? ordered.map(row) : h("li", { class: "note" }, "No downloads yet."));
  }

  return {
    element,
    async refresh() {
      try {
        const data = await api("admin/models/downloads");
        for (const job of data.downloads) remember(job);
        render();
      } catch (err) {
        fill(list, h("li", { class: "note" }, `Downloads: ${explain(err)}`));
      }
    },
    onEvent(ev) {
      if (!ev.type.startsWith("model_download_")) return;
      const d = ev.data;
      if (!d.downloadId) return;
      const { downloadId, ...rest } = d;
      remember({ ...rest, id: downloadId });
      if (ev.type === "model_download_complete") onDownloaded();
    },
  };
}
