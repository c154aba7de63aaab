"use strict";
// The pairing page: redeem the code once, then show the key, the base URL, snippets and,
// when the gateway has its own LAN CA, the certificate to trust with its fingerprint.
(function () {
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    for (const child of children) node.append(child);
    return node;
  };

  async function copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      const area = el("textarea", { readonly: "" });
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  }

  function copyable(label, text, id) {
    const code = el("pre", { id: id }, text);
    const button = el("button", { type: "button", class: "copy", "data-copies": id }, "Copy");
    button.addEventListener("click", () => copy(text, button));
    return el("div", { class: "copyable" }, el("h2", {}, label), code, button);
  }

  function snippets(answer) {
    const base = answer.baseUrl;
    const key = answer.key;
    const python = [
      "from openai import OpenAI",
      "",
      `client = OpenAI(base_url="${base}", api_key="${key}")`,
      'reply = client.chat.completions.create(',
      answer.model
        ? `    model="${answer.model}",`
        : '    model="MODEL",  # a name from client.models.list()',
      '    messages=[{"role": "user", "content": "Hello"}],',
      ")",
      "print(reply.choices[0].message.content)",
    ].join("\n");
    const curl = [
      `curl ${base}/chat/completions \\`,
      `  -H "Authorization: Bearer ${key}" \\`,
      '  -H "Content-Type: application/json" \\',
      `  -d '{"model": "${answer.model || "MODEL"}", "messages": [{"role": "user", "content": "Hello"}]}'`,
    ].join("\n");
    return [
      el("p", {}, "OpenAI-compatible apps: set the server (base URL) and the API key above."),
      copyable("Python (openai)", python, "snippet-python"),
      copyable("curl", curl, "snippet-curl"),
    ];
  }

  function expectedFingerprint() {
    const match = /(?:^|[#&])fp=([0-9A-Fa-f]{64})/.exec(location.hash);
    return match ? match[1].toUpperCase() : null;
  }

  function showCa(section) {
    const served = section.dataset.fingerprint;
    const expected = expectedFingerprint();
    const plain = served.replace(/:/g, "");
    const verdict = expected === null
      ? el("p", { id: "fp-verdict", class: "warn" },
          "The link carried no fingerprint: compare the one below with the one the gateway's owner shows you.")
      : expected === plain
        ? el("p", { id: "fp-verdict", class: "ok" }, "This matches the fingerprint in the QR code.")
        : el("p", { id: "fp-verdict", class: "error" },
            "This does NOT match the fingerprint in the QR code: do not install it.");
    section.append(
      el("h2", {}, "Trust this gateway's certificate"),
      el("p", {}, "The gateway uses its own certificate authority. Install it once so apps trust the connection."),
      el("p", {}, "SHA-256 fingerprint:"),
      el("pre", { id: "fingerprint" }, served),
      verdict,
      el("ul", {},
        el("li", {}, el("a", { href: "/pair/ca.mobileconfig", download: "" }, "iPhone / iPad / Mac profile"),
          " — then Settings → Profile Downloaded → Install, and on iOS: General → About → Certificate Trust Settings → enable it."),
        el("li", {}, el("a", { href: "/pair/ca.crt", download: "" }, "Android / Windows certificate"),
          " — Android: Settings → Security → Encryption & credentials → Install a certificate → CA certificate. Windows: open it → Install Certificate → Current User → Trusted Root Certification Authorities."),
        el("li", {}, el("a", { href: "/pair/ca.pem", download: "" }, "PEM file"),
          " — for Python (SSL_CERT_FILE), Node (NODE_EXTRA_CA_CERTS) and curl (--cacert)."),
      ),
    );
    section.hidden = false;
  }

  async function redeem(button) {
    button.disabled = true;
    const error = $("error");
    error.hidden = true;
    let answer;
    try {
      const response = await fetch(location.pathname, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      answer = await response.json();
      if (!response.ok) throw new Error(answer.error ? answer.error.message : "pairing failed");
    } catch (problem) {
      error.textContent = String(problem.message || problem);
      error.hidden = false;
      return;
    }
    button.hidden = true;
    const result = $("result");
    result.append(
      el("p", { class: "ok" }, `Paired as “${answer.keyName}”. ${answer.message}`),
      copyable("API key", answer.key, "key"),
      copyable("Base URL", answer.baseUrl, "base-url"),
      ...snippets(answer),
    );
    result.hidden = false;
    const ca = $("ca");
    if (ca) showCa(ca);
  }

  const button = $("redeem");
  if (button) button.addEventListener("click", () => redeem(button));
})();
