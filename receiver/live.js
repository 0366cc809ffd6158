// keyframe: the live page's picture (docs/live.md, docs/e2ee.md §8).
// Served as /static/live.js under the live page's Content-Security-Policy
// (script-src 'self', img-src 'self' blob:, connect-src 'self').
//
// It reads GET /live/{device}/frames: records of a kind byte, a 4-byte
// big-endian length and that many bytes. "j" is a JPEG in the clear; "k" is
// a sealed stream's key frame ("KFL1", uint32(32), the stream id, the
// stream key sealed to the owner's keys), "s" a frame sealed under that
// key, opened here with this browser's key (window.KFE2EE, e2ee.js). Each
// picture goes into the <img> as a blob: URL. A browser holding none of the
// owner's keys says so, shows no picture and stops watching (so the camera
// stops streaming).
//
// For tests, #liveview carries data-state (waiting, playing, nokey, ended,
// error), data-frames (pictures shown), data-refused (frames that did not
// open or decode) and data-sealed.
"use strict";
(function () {
  const root = document.getElementById("liveview");
  if (!root) { return; }
  const img = document.getElementById("live");
  const status = document.getElementById("livestatus");
  const device = root.dataset.device, account = root.dataset.account;
  const ctl = new AbortController();
  let shown = 0, refused = 0, url = null, sealed = false, opener = null, keys = null;

  function state(s, text, warn) {
    root.dataset.state = s;
    status.textContent = text;
    status.className = warn ? "warn" : "";
  }
  // show loads jpeg into an Image first and gives its URL to the <img>
  // once decoded: the <img> then updates at once, from the document's
  // available images, so the picture never blanks between frames. A frame
  // that loads after a newer one is dropped.
  let made = 0, showing = 0;
  function show(jpeg) {
    const n = ++made;
    const u = URL.createObjectURL(new Blob([jpeg], {type: "image/jpeg"}));
    const pre = new Image();
    pre.onload = function () {
      if (n < showing || root.dataset.state === "nokey") { URL.revokeObjectURL(u); return; }
      showing = n;
      const prev = url;
      url = u;
      img.src = u;
      img.hidden = false;
      if (prev) { URL.revokeObjectURL(prev); }
      shown++;
      root.dataset.frames = String(shown);
      if (root.dataset.state !== "playing") {
        state("playing", sealed ? "Live, end-to-end encrypted: opened in this browser with your key." : "Live.");
      }
    };
    pre.onerror = function () {
      URL.revokeObjectURL(u);
      refused++;
      root.dataset.refused = String(refused);
    };
    pre.src = u;
  }

  let reader = null;
  function stop(s, text) {
    state(s, text, true);
    ctl.abort();
    if (reader) { reader.cancel().catch(function () {}); }
  }

  async function openKey(b) {
    sealed = true;
    root.dataset.sealed = "true";
    if (!window.KFE2EE) {
      throw {nokey: "This camera's live view is end-to-end encrypted, and this page's encryption library did not load: reload the page."};
    }
    if (!keys) {
      try {
        keys = await (await window.KFE2EE.account(account)).openingKeys();
      } catch (e) {
        throw {nokey: "This camera's live view is end-to-end encrypted, and this browser holds none of your keys (" +
          ((e && e.message) || e) + "). Add this browser to your keys on your account page, then reload."};
      }
    }
    try {
      opener = await window.KFE2EE.openLive(b, {owner: keys.owner, device: device}, keys.keys);
    } catch (e) {
      throw {nokey: "This camera's live view is end-to-end encrypted, and not to this browser's key (" + ((e && e.message) || e) +
        "): the camera may not have this browser's key yet. Reload in a minute."};
    }
  }

  async function record(kind, b) {
    if (kind === 106) { // "j"
      // Once this view saw a sealed stream, a clear frame is not the
      // camera's: it seals every frame of a stream (docs/e2ee.md §8).
      if (sealed) { throw new Error("a clear frame after the sealed stream's key frame: refused"); }
      show(b);
    } else if (kind === 107) { // "k"
      await openKey(b);
    } else if (kind === 115) { // "s"
      if (!opener) { throw new Error("a sealed frame before its key frame"); }
      let jpeg;
      try {
        jpeg = await opener.openFrame(b);
      } catch (e) {
        refused++;
        root.dataset.refused = String(refused);
        return;
      }
      show(jpeg);
    } else {
      throw new Error("a record of unknown kind " + kind);
    }
  }

  async function run() {
    state("waiting", "Asking the camera for its picture…");
    const resp = await fetch("/live/" + encodeURIComponent(device) + "/frames", {credentials: "same-origin", cache: "no-store", signal: ctl.signal});
    if (!resp.ok) {
      let msg = "";
      try { msg = (await resp.text()).trim().slice(0, 200); } catch (e) { msg = ""; }
      stop("error", "No live picture: the receiver answered " + resp.status + (msg ? ": " + msg : "") + ".");
      return;
    }
    reader = resp.body.getReader();
    let buf = new Uint8Array(0);
    for (;;) {
      const r = await reader.read();
      if (r.done) { break; }
      const more = new Uint8Array(buf.length + r.value.length);
      more.set(buf);
      more.set(r.value, buf.length);
      buf = more;
      while (buf.length >= 5) {
        const n = ((buf[1] << 24) | (buf[2] << 16) | (buf[3] << 8) | buf[4]) >>> 0;
        if (n > (16 << 20)) { throw new Error("a record of " + n + " bytes"); }
        if (buf.length < 5 + n) { break; }
        await record(buf[0], buf.slice(5, 5 + n));
        buf = buf.subarray(5 + n);
      }
    }
    state("ended", shown ? "The live view ended (its time is up, or the camera stopped): reload the page to watch again." :
      "The camera sent no picture: it may be off, its live view off, or, encrypting end to end, still without your keys. Reload the page to try again.", true);
  }

  window.addEventListener("pagehide", function () { ctl.abort(); });
  run().catch(function (e) {
    if (e && e.nokey) {
      img.hidden = true;
      img.removeAttribute("src");
      stop("nokey", e.nokey);
    } else if (!ctl.signal.aborted) {
      stop("error", "The live view failed: " + ((e && e.message) || e) + ". Reload the page to try again.");
    }
  });
})();
