// keyframe: the passkey buttons (WebAuthn). Served by the receiver as
// /static/passkey.js, so the pages' Content-Security-Policy allows scripts
// from the receiver's own origin only: no inline script, no event handler
// attributes. A button carries data-passkey ("signin" or "register") and the
// URLs of its ceremony's begin and finish; it stays hidden where the browser
// cannot use passkeys.
"use strict";
(function () {
  function fromB64u(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) {
      s += "=";
    }
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) {
      out[i] = bin.charCodeAt(i);
    }
    return out.buffer;
  }

  function toB64u(buf) {
    const bytes = new Uint8Array(buf);
    let bin = "";
    for (let i = 0; i < bytes.length; i++) {
      bin += String.fromCharCode(bytes[i]);
    }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // post sends body as JSON to url on this origin and returns the answer;
  // an answer that is not 2xx throws its "error".
  async function post(url, body) {
    const resp = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try {
      data = await resp.json();
    } catch (e) {
      data = {};
    }
    if (!resp.ok) {
      throw new Error(data.error || "The receiver answered " + resp.status + ".");
    }
    return data;
  }

  async function signIn(btn) {
    const opts = (await post(btn.dataset.begin)).publicKey;
    opts.challenge = fromB64u(opts.challenge);
    (opts.allowCredentials || []).forEach(function (c) { c.id = fromB64u(c.id); });
    const cred = await navigator.credentials.get({publicKey: opts});
    const r = cred.response;
    return post(btn.dataset.finish, {
      id: cred.id,
      rawId: toB64u(cred.rawId),
      type: cred.type,
      clientExtensionResults: cred.getClientExtensionResults(),
      response: {
        clientDataJSON: toB64u(r.clientDataJSON),
        authenticatorData: toB64u(r.authenticatorData),
        signature: toB64u(r.signature),
        userHandle: r.userHandle ? toB64u(r.userHandle) : undefined,
      },
    });
  }

  async function register(btn) {
    const opts = (await post(btn.dataset.begin)).publicKey;
    opts.challenge = fromB64u(opts.challenge);
    opts.user.id = fromB64u(opts.user.id);
    (opts.excludeCredentials || []).forEach(function (c) { c.id = fromB64u(c.id); });
    const cred = await navigator.credentials.create({publicKey: opts});
    const r = cred.response;
    return post(btn.dataset.finish, {
      id: cred.id,
      rawId: toB64u(cred.rawId),
      type: cred.type,
      clientExtensionResults: cred.getClientExtensionResults(),
      response: {
        clientDataJSON: toB64u(r.clientDataJSON),
        attestationObject: toB64u(r.attestationObject),
        transports: r.getTransports ? r.getTransports() : [],
      },
    });
  }

  const status = document.getElementById("passkey-status");
  function say(msg) {
    if (status) {
      status.textContent = msg;
    }
  }

  document.querySelectorAll("button[data-passkey]").forEach(function (btn) {
    if (!window.PublicKeyCredential || !navigator.credentials) {
      say("This browser cannot use passkeys here.");
      return;
    }
    btn.hidden = false;
    btn.addEventListener("click", async function () {
      btn.disabled = true;
      say("");
      try {
        const done = btn.dataset.passkey === "signin" ? await signIn(btn) : await register(btn);
        window.location.assign(done.redirect || "/");
      } catch (e) {
        say(e && e.name === "NotAllowedError" ? "The passkey request was cancelled or timed out." : (e && e.message) || String(e));
        btn.disabled = false;
      }
    });
  });
})();
