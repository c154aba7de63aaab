// Models: what the upstream offers and has loaded, the active model and its defaults; activate,
// load (with a validated form), unload. Loads in progress anywhere (this page, the CLI,
// on-demand loading) are followed live from the model_load_* events.

import { api, explain, NotAvailable } from "./api.js";
import { confirmButton, describeConfig, fill, fmtNumber, h } from "./dom.js";
import { createDownloads } from "./downloads.js";
import { fieldGroup, INFERENCE_FIELDS, LOAD_FIELDS } from "./modelform.js";
import { changesQueue, createSlotsView } from "./queue.js";

const KEEP_DONE_MS = 120_000;

export function createModels(root, ctx) {
  const summary = h("section", { class: "card", id: "models-summary" });
  const activityList = h("ol", { class: "activity", id: "model-activity", "aria-live": "polite" });
  const grid = h("div", { class: "model-grid", id: "model-list" });
  const notice = h("div", { id: "models-notice" });
  const slots = createSlotsView();
  fill(
    root,
    h("h1", { class: "view-title" }, "Models"),
    summary,
    notice,
    slots.el,
    h("section", { class: "activity-box" }, h("h2", {}, "Model activity"), activityList),
    h("h2", {}, "Upstream models"),
    grid,
  );
  const downloads = createDownloads({ notify: ctx.notify, onDownloaded: () => visible && load() });
  root.append(downloads.element);

  let visible = false;
  let data = null;
  let loading = null;
  const activity = new Map(); // modelKey -> what is happening to it
  let form = null; // the open dialog: {key, progress}

  async function load() {
    if (loading) return loading;
    loading = (async () => {
      try {
        data = await api("admin/models");
        render();
      } catch (err) {
        fill(
          grid,
          h(
            "p",
            { class: err instanceof NotAvailable ? "note" : "error" },
            `Model list: ${explain(err)}`,
          ),
        );
      } finally {
        loading = null;
      }
    })();
    return loading;
  }

  function render() {
    const defaults = data.defaultInference || {};
    fill(
      summary,
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Active model"),
        h("dd", { class: "mono", id: "active-model" }, data.activeModel || "none"),
        h("dt", {}, "Defaults"),
        h("dd", { class: "mono", id: "active-defaults" }, describeConfig(defaults) || "none"),
        h("dt", {}, "Upstream"),
        h("dd", {}, data.upstream || "\u2014"),
      ),
      data.error ? h("p", { class: "error" }, `Shown from the last good sync: ${data.error}`) : null,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "small", onclick: () => load() }, "Refresh"),
        confirmButton("Unload all", "Confirm: unload all", () => unload({ all: true }), {
          class: "small danger",
          id: "unload-all",
        }),
      ),
    );
    const models = data.models || [];
    if (!models.length) {
      fill(grid, h("p", { class: "note" }, "The upstream lists no models."));
      return;
    }
    fill(grid, models.map(card));
  }

  function card(model) {
    const facts = [
      model.type,
      model.quantization,
      model.format,
      model.maxContextLength ? `ctx ${fmtNumber(model.maxContextLength)}` : null,
    ].filter(Boolean);
    const instances = model.instances || [];
    const profile = model.profile;
    return h(
      "article",
      { class: `card model${model.active ? " is-active" : ""}`, dataset: { model: model.key } },
      h(
        "header",
        {},
        h("h3", {}, model.displayName || model.key),
        model.active ? h("span", { class: "badge accent" }, "active") : null,
        model.loaded ? h("span", { class: "badge ok" }, "loaded") : h("span", { class: "badge" }, "not loaded"),
        model.available === false ? h("span", { class: "badge bad" }, "not on upstream") : null,
      ),
      h("p", { class: "mono key" }, model.key),
      facts.length ? h("p", { class: "muted" }, facts.join(" \u00b7 ")) : null,
      instances.length
        ? h(
            "ul",
            { class: "instances" },
            instances.map((inst) =>
              h(
                "li",
                {},
                h("span", { class: "mono" }, inst.id),
                h("span", { class: "muted config" }, describeConfig(inst.config)),
                confirmButton("Unload", "Confirm", () => unload({ instanceId: inst.id }), {
                  class: "small",
                }),
              ),
            ),
          )
        : null,
      profile
        ? h(
            "p",
            { class: "muted profile" },
            "Profile: ",
            describeConfig({ load: profile.loadConfig || {}, defaults: profile.defaultInference || {} }),
          )
        : null,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "small", onclick: () => openForm("activate", model) }, "Activate\u2026"),
        h("button", { type: "button", class: "small primary", onclick: () => openForm("load", model) }, "Load\u2026"),
        model.loaded
          ? confirmButton("Unload", "Confirm unload", () => unload({ modelKey: model.key }), {
              class: "small danger",
            })
          : null,
      ),
    );
  }

  async function unload(body) {
    try {
      const answer = await api("admin/models/unload", { method: "POST", body });
      ctx.notify(answer.message || "unloaded", "ok");
      showWorkflow(answer.workflow, "To finish the unload by hand");
    } catch (err) {
      ctx.notify(`Unload failed: ${explain(err)}`, "error");
    }
    await load();
  }

  function showWorkflow(workflow, title) {
    if (!workflow) {
      notice.replaceChildren();
      return;
    }
    fill(
      notice,
      h(
        "section",
        { class: "card notice" },
        h("h2", {}, title),
        h("p", {}, "This upstream cannot load or unload models over HTTP; lmgate stored the intent."),
        h("ol", {}, Object.values(workflow).map((step) => h("li", {}, step))),
      ),
    );
  }

  // ---- activity: loads in progress, from the stream ----

  function track(ev) {
    const d = ev.data;
    const key = d.modelKey;
    if (!key) return;
    const entry = activity.get(key) || { key };
    switch (ev.type) {
      case "model_load_start":
        Object.assign(entry, { state: "loading", since: Date.now(), elapsed: 0, result: null, message: null });
        break;
      case "model_load_progress":
        entry.state = "loading";
        entry.elapsed = d.elapsedSeconds;
        break;
      case "model_load_complete":
        Object.assign(entry, { state: d.loaded === false ? "stored" : "loaded", result: d, done: Date.now() });
        break;
      case "model_unload_start":
        Object.assign(entry, { state: "unloading", since: Date.now(), result: null });
        break;
      case "model_unload_complete":
        Object.assign(entry, { state: "unloaded", result: d, done: Date.now() });
        break;
      case "error":
        if (d.operation !== "model_load") return;
        Object.assign(entry, { state: "failed", message: d.message, done: Date.now() });
        break;
      default:
        return;
    }
    activity.set(key, entry);
    renderActivity();
    if (form && form.key === key) fill(form.progress, activityItem(entry));
  }

  function activityItem(entry) {
    const r = entry.result || {};
    let text;
    switch (entry.state) {
      case "loading":
        text = entry.elapsed ? `loading\u2026 ${entry.elapsed.toFixed(1)} s` : "loading\u2026";
        break;
      case "loaded":
        text = r.alreadyLoaded
          ? `already loaded as ${r.instanceId}`
          : `loaded as ${r.instanceId} in ${Number(r.loadTimeSeconds || 0).toFixed(2)} s`;
        break;
      case "stored":
        text = "stored in lmgate (load it in LM Studio by hand)";
        break;
      case "unloading":
        text = "unloading\u2026";
        break;
      case "unloaded":
        text = `unloaded ${(r.unloaded || []).join(", ") || ""}`.trim();
        break;
      case "failed":
        text = `failed: ${entry.message}`;
        break;
      default:
        text = entry.state;
    }
    const notApplied = r.notApplied && Object.keys(r.notApplied).length ? r.notApplied : null;
    return h(
      "li",
      { class: `activity-item state-${entry.state}`, dataset: { model: entry.key } },
      h("span", { class: "mono" }, entry.key),
      h("span", { class: "activity-state" }, text),
      entry.state === "loading" || entry.state === "unloading"
        ? h("span", { class: "progress", role: "progressbar", "aria-label": `${entry.key} ${entry.state}` })
        : null,
      notApplied ? notAppliedList(notApplied) : null,
    );
  }

  function notAppliedList(notApplied) {
    return h(
      "div",
      { class: "not-applied" },
      h("strong", {}, "Not applied by the upstream:"),
      h(
        "ul",
        {},
        Object.entries(notApplied).map(([field, reason]) =>
          h("li", {}, h("span", { class: "mono" }, field), ` \u2014 ${reason}`),
        ),
      ),
    );
  }

  function renderActivity() {
    const now = Date.now();
    for (const [key, entry] of activity) {
      if (entry.done && now - entry.done > KEEP_DONE_MS) activity.delete(key);
    }
    if (!activity.size) {
      fill(activityList, h("li", { class: "muted" }, "No model loads or unloads lately."));
      return;
    }
    fill(activityList, [...activity.values()].reverse().map(activityItem));
  }

  // ---- the activate / load dialog ----

  function openForm(mode, model) {
    const isLoad = mode === "load";
    const profile = model.profile || {};
    const defaults = model.active ? data.defaultInference : profile.defaultInference;
    const loadGroup = isLoad ? fieldGroup("Load config", "lc", LOAD_FIELDS, profile.loadConfig) : null;
    const inferenceGroup = fieldGroup("Default inference", "di", INFERENCE_FIELDS, defaults);
    const activate = h("input", { type: "checkbox", id: "form-activate", checked: true });
    const newInstance = h("input", { type: "checkbox", id: "form-new-instance" });
    const errors = h("div", { class: "form-errors", role: "alert", id: "form-errors" });
    const progress = h("ol", { class: "activity", id: "load-progress" });
    const result = h("div", { class: "load-result", id: "load-result" });
    const submit = h("button", { type: "submit", class: "primary", id: "form-submit" }, isLoad ? "Load" : "Activate");
    const dialog = h("dialog", { class: "sheet", id: "model-dialog", "aria-label": `${mode} ${model.key}` });
    const close = () => dialog.close();
    const formEl = h(
      "form",
      { method: "post" },
      h("h2", {}, isLoad ? "Load " : "Activate ", h("span", { class: "mono" }, model.key)),
      loadGroup ? loadGroup.el : null,
      inferenceGroup.el,
      isLoad
        ? h(
            "div",
            { class: "checks" },
            h("label", {}, activate, " Make it the active model"),
            h("label", {}, newInstance, " Load another instance (keep the loaded ones)"),
          )
        : null,
      errors,
      progress,
      result,
      h("div", { class: "actions" }, submit, h("button", { type: "button", onclick: close }, "Close")),
    );
    formEl.addEventListener("submit", async (event) => {
      event.preventDefault();
      const lc = loadGroup ? loadGroup.collect() : { value: undefined, errors: [] };
      const di = inferenceGroup.collect();
      const problems = [...lc.errors, ...di.errors];
      fill(errors, problems.length ? h("p", { class: "error" }, `Please fix: ${problems.join("; ")}`) : null);
      if (problems.length) return;
      const body = { modelKey: model.key };
      if (di.value) body.defaultInference = di.value;
      if (isLoad) {
        if (lc.value) body.loadConfig = lc.value;
        body.activate = activate.checked;
        body.newInstance = newInstance.checked;
      }
      submit.disabled = true;
      result.replaceChildren();
      if (isLoad) fill(progress, activityItem({ key: model.key, state: "loading", elapsed: 0 }));
      try {
        const answer = await api(`admin/models/${mode}`, { method: "POST", body });
        if (isLoad) {
          if (form) form.key = null; // the answer below supersedes the progress line
          progress.replaceChildren();
          showResult(result, answer);
          result.scrollIntoView({ block: "nearest" });
        } else {
          ctx.notify(answer.message || `${model.key} activated`, "ok");
          close();
        }
      } catch (err) {
        progress.replaceChildren();
        fill(errors, h("p", { class: "error" }, `${isLoad ? "Load" : "Activation"} failed: ${explain(err)}`));
      } finally {
        submit.disabled = false;
        load();
      }
    });
    dialog.append(formEl);
    dialog.addEventListener("close", () => {
      dialog.remove();
      form = null;
    });
    document.body.append(dialog);
    form = { key: model.key, progress };
    dialog.showModal();
  }

  function showResult(box, answer) {
    const notApplied = answer.notApplied && Object.keys(answer.notApplied).length ? answer.notApplied : null;
    fill(
      box,
      h("p", { class: "ok-text", id: "load-message" }, answer.message || answer.status),
      answer.applied && Object.keys(answer.applied).length
        ? h("p", {}, "Applied: ", h("span", { class: "mono" }, describeConfig(answer.applied)))
        : null,
      notApplied ? notAppliedList(notApplied) : null,
      answer.replacedInstances && answer.replacedInstances.length
        ? h("p", {}, `Replaced: ${answer.replacedInstances.join(", ")}`)
        : null,
      answer.workflow
        ? h("ol", { class: "workflow" }, Object.values(answer.workflow).map((s) => h("li", {}, s)))
        : null,
    );
  }

  return {
    show() {
      visible = true;
      renderActivity();
      load();
      downloads.refresh();
      slots.start();
    },
    hide() {
      visible = false;
      slots.stop();
    },
    onEvent(ev) {
      if (ev.replayed) return;
      downloads.onEvent(ev);
      if (visible && changesQueue(ev.type)) slots.soon();
      if (ev.type.startsWith("model_") || ev.type === "error") track(ev);
      const changes =
        ev.type === "model_loaded" ||
        ev.type === "model_unloaded" ||
        ev.type === "model_activate" ||
        ev.type === "model_load_complete" ||
        ev.type === "model_unload_complete" ||
        ev.type === "active_model_unloaded" ||
        (ev.type === "config_changed" && ev.data.what && String(ev.data.what).startsWith("profile"));
      if (visible && changes) load();
    },
  };
}
