// The dashboard's entry point: sign-in, navigation between the five views, the live event
// stream shared by all of them, and notices.

import { api, AuthError, explain, onAuthLost, session } from "./api.js";
import { $, $$, h } from "./dom.js";
import { createKeys } from "./keys.js";
import { createLive } from "./live.js";
import { createModels } from "./models.js";
import { createOverview } from "./overview.js";
import { EventStream } from "./stream.js";
import { Timeline } from "./timeline.js";
import { createUpstreams } from "./upstreams.js";

const VIEWS = ["overview", "models", "live", "keys", "upstreams"];
const STATE_TEXT = { connecting: "connecting", live: "live", retrying: "reconnecting", stopped: "offline" };

let views = null;
let stream = null;
let current = null;
const timeline = new Timeline();

function notify(text, kind = "info") {
  const toast = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  $("#toasts").append(toast);
  setTimeout(() => toast.remove(), kind === "error" ? 9000 : 5000);
}

function setConnection(state, detail) {
  const pill = $("#conn");
  pill.dataset.state = state;
  pill.textContent = STATE_TEXT[state] || state;
  pill.title = detail || "";
}

function showLogin(message = "") {
  if (stream) stream.stop();
  stream = null;
  if (current) views[current].hide();
  current = null;
  for (const name of VIEWS) $(`#view-${name}`).hidden = true;
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
  $("#login-key").value = "";
  $("#login-key").focus();
}

function route() {
  if (!views) return;
  const wanted = window.location.hash.replace(/^#/, "");
  const name = VIEWS.includes(wanted) ? wanted : "overview";
  if (name === current) return;
  if (current) {
    views[current].hide();
    $(`#view-${current}`).hidden = true;
  }
  current = name;
  $(`#view-${name}`).hidden = false;
  for (const link of $$("#nav a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  views[name].show();
}

function onEvent(ev) {
  if (ev.type === "inference_complete") timeline.add(ev.data);
  if (ev.type === "events_lost" && !ev.replayed) {
    notify(`${ev.data.count} events were not delivered to this page (it fell behind)`, "error");
  }
  for (const name of VIEWS) views[name].onEvent(ev);
}

function start() {
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  if (!views) {
    const ctx = { notify, timeline };
    views = {
      overview: createOverview($("#view-overview"), ctx),
      models: createModels($("#view-models"), ctx),
      live: createLive($("#view-live"), ctx),
      keys: createKeys($("#view-keys"), ctx),
      upstreams: createUpstreams($("#view-upstreams"), ctx),
    };
  }
  stream = new EventStream({
    onEvent,
    onState: setConnection,
    onAuthLost: (status) => {
      if (status === 401) signOut("The gateway no longer accepts this key.");
      else notify("The live stream was refused (403): this key or address may not use it.", "error");
    },
  });
  stream.start();
  current = null;
  route();
}

function signOut(message = "") {
  session.clear();
  showLogin(message);
}

async function signIn(event) {
  event.preventDefault();
  const key = $("#login-key").value.trim();
  const button = $("#login-submit");
  button.disabled = true;
  $("#login-error").textContent = "";
  session.save(key);
  try {
    await api("admin/upstream", { quietAuth: true });
    start();
  } catch (err) {
    session.clear();
    $("#login-error").textContent =
      err instanceof AuthError
        ? key
          ? "The gateway refused this key."
          : "This gateway needs a key."
        : `Sign-in failed: ${explain(err)}`;
  } finally {
    button.disabled = false;
  }
}

async function boot() {
  $("#login-form").addEventListener("submit", signIn);
  $("#logout").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", route);
  onAuthLost(() => signOut("The gateway refused the key; sign in again."));
  if (!session.signedIn) {
    showLogin();
    return;
  }
  try {
    await api("admin/upstream", { quietAuth: true });
    start();
  } catch (err) {
    if (err instanceof AuthError) signOut("The stored key is no longer valid.");
    else {
      showLogin(`The gateway did not answer: ${explain(err)}`);
    }
  }
}

boot();
