// The admin API client. The key lives in this tab's sessionStorage only and travels as an
// Authorization header, never in a URL. Paths are resolved against the gateway's root, so the
// page also works when a reverse proxy serves the gateway under a prefix.

const KEY_NAME = "lmgate.adminKey";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY_NAME);
  },
  get signedIn() {
    return sessionStorage.getItem(KEY_NAME) !== null;
  },
  save(key) {
    sessionStorage.setItem(KEY_NAME, key);
  },
  clear() {
    sessionStorage.removeItem(KEY_NAME);
  },
};

export class ApiError extends Error {
  constructor(status, message, code = null, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

// The route itself does not exist on this gateway (an older or differently built lmgate).
export class NotAvailable extends ApiError {
  constructor(status, message, code, body) {
    super(status, message, code, body);
    this.name = "NotAvailable";
  }
}

// The key was refused (401): the page goes back to the sign-in form.
export class AuthError extends ApiError {
  constructor(status, message, code, body) {
    super(status, message, code, body);
    this.name = "AuthError";
  }
}

const authListeners = new Set();
export function onAuthLost(listener) {
  authListeners.add(listener);
}

export function apiUrl(path) {
  return new URL(`../${path.replace(/^\/+/, "")}`, window.location.href).toString();
}

export function authHeaders() {
  const key = session.key;
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export async function api(path, { method = "GET", body, signal, quietAuth = false } = {}) {
  const headers = { Accept: "application/json", ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(apiUrl(path), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `the gateway did not answer (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (response.ok) return data;
  throw toError(response.status, data, response.statusText, quietAuth);
}

function toError(status, data, statusText, quietAuth) {
  const error = data && typeof data === "object" ? data.error || data : {};
  const message = (typeof error === "object" && error.message) || statusText || `HTTP ${status}`;
  const code = typeof error === "object" ? error.code || null : null;
  if (status === 401) {
    const err = new AuthError(status, message, code, data);
    if (!quietAuth) for (const listener of authListeners) listener(err);
    return err;
  }
  if ((status === 404 && code === "not_found") || status === 405) {
    return new NotAvailable(status, message, code, data);
  }
  return new ApiError(status, message, code, data);
}

// Human text for an error, for toasts and inline notes.
export function explain(err) {
  if (err instanceof NotAvailable) return "not available on this gateway";
  if (err instanceof ApiError) return err.status ? `${err.message} (HTTP ${err.status})` : err.message;
  return String(err && err.message ? err.message : err);
}
