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
// WebRTC first (docs/live.md, "WebRTC"): the page offers a session
// (POST /live/{device}/whep, application/sdp, candidates gathered); the
// receiver relays the offer to the camera and returns the camera's answer
// with the camera's signature (Keyframe-Answer-Signature) and its public
// key as the receiver's registry holds it (Keyframe-Device-Key). The
// receiver is not trusted with either: the page checks that the key is
// the device's (its device ID, SHA-256 of the key, docs/envelope.md §2, is
// the one in the page's URL), that the signature over the answer's DTLS
// fingerprints, the offer's hash and the device ID verifies with it, and
// only then sets the answer. A refused answer, a camera without WebRTC, or
// a connection that shows no picture in time: the page falls back to the
// frames below, and says why.
//
// For tests, #liveview carries data-state (waiting, playing, nokey, ended,
// error), data-frames (pictures shown), data-refused (frames that did not
// open or decode), data-sealed, data-transport (webrtc or frames),
// data-rtc (why WebRTC was not used, or "verified") and data-path (with
// WebRTC: the local candidate's type, "relay" through the receiver).
"use strict";
(function () {
  const root = document.getElementById("liveview");
  if (!root) { return; }
  const img = document.getElementById("live");
  const video = document.getElementById("livevideo");
  const status = document.getElementById("livestatus");
  const device = root.dataset.device, account = root.dataset.account;
  const ctl = new AbortController();
  let shown = 0, refused = 0, url = null, sealed = false, opener = null, keys = null;
  let note = ""; // why WebRTC is not used, shown before the frames' state

  function state(s, text, warn) {
    root.dataset.state = s;
    status.textContent = (note ? note + " " : "") + text;
    status.className = warn || note ? "warn" : "";
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

  // --- WebRTC ---
  const te = new TextEncoder();
  function b64u(s) {
    if (!/^[A-Za-z0-9_-]*$/.test(s || "")) { throw new Error("not base64url"); }
    const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
    return Uint8Array.from(bin, function (c) { return c.charCodeAt(0); });
  }
  function u32(n) { return new Uint8Array([(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]); }
  function concat(parts) {
    let n = 0;
    parts.forEach(function (p) { n += p.length; });
    const out = new Uint8Array(n);
    let at = 0;
    parts.forEach(function (p) { out.set(p, at); at += p.length; });
    return out;
  }
  function lp(b) { return concat([u32(b.length), b]); }
  // fingerprints: every a=fingerprint line of sdp, normalised as the camera
  // signs them (internal/livestream.Fingerprints).
  function fingerprints(sdp) {
    const out = [];
    sdp.split("\n").forEach(function (line) {
      line = line.replace(/\r$/, "");
      if (!line.startsWith("a=fingerprint:")) { return; }
      const m = /^(\S{1,16}) ((?:[0-9A-Fa-f]{2}:){0,63}[0-9A-Fa-f]{2})$/.exec(line.slice(14).trim());
      if (!m) { throw new Error("a malformed fingerprint line in the answer"); }
      out.push(m[1].toLowerCase() + " " + m[2].toUpperCase());
    });
    if (out.length === 0 || out.length > 8) { throw new Error("the answer has " + out.length + " fingerprints"); }
    return out;
  }
  // derToRaw turns an ASN.1 ECDSA signature into r || s (WebCrypto's form).
  function derToRaw(der) {
    function int(at) {
      if (der[at] !== 2) { throw new Error("the signature is not DER"); }
      const n = der[at + 1];
      let v = der.subarray(at + 2, at + 2 + n);
      while (v.length > 32 && v[0] === 0) { v = v.subarray(1); }
      if (v.length > 32 || at + 2 + n > der.length) { throw new Error("the signature is not DER"); }
      const out = new Uint8Array(32);
      out.set(v, 32 - v.length);
      return {v: out, next: at + 2 + n};
    }
    if (der[0] !== 0x30 || der[1] !== der.length - 2) { throw new Error("the signature is not DER"); }
    const r = int(2), s = int(r.next);
    if (s.next !== der.length) { throw new Error("the signature is not DER"); }
    return concat([r.v, s.v]);
  }
  const P256 = "3059301306072a8648ce3d020106082a8648ce3d030107034200", ED25519 = "302a300506032b6570032100";
  function hexPrefix(b, n) { return Array.from(b.subarray(0, n), function (x) { return x.toString(16).padStart(2, "0"); }).join(""); }
  // verifyAnswer checks the camera's answer before it is used: the key is
  // the device's (its ID is the page's), and the signature over the device
  // ID, the offer's hash and the hash of the answer, byte for byte as it
  // is then applied, verifies. The answer must be printable ASCII (as the
  // receiver requires), so its text and its bytes are one.
  async function verifyAnswer(offer, answer, sigB64, keyB64) {
    if (!window.KFE2EE) { throw new Error("the page's verifier (e2ee.js) did not load"); }
    if (!/^v=0\r?\n[\x20-\x7e\r\n]*$/.test(answer) || answer.length > 16384) { throw new Error("the answer is not an SDP of printable ASCII"); }
    fingerprints(answer); // one to eight well-formed fingerprints
    const spki = b64u(keyB64), sig = b64u(sigB64);
    if (await window.KFE2EE.deviceID(spki) !== device) { throw new Error("the key the receiver gave is not this camera's"); }
    const offerHash = new Uint8Array(await crypto.subtle.digest("SHA-256", te.encode(offer)));
    const answerHash = new Uint8Array(await crypto.subtle.digest("SHA-256", te.encode(answer)));
    const msg = concat([te.encode("keyframe webrtc answer v2\0"), lp(te.encode(device)), lp(offerHash), lp(answerHash)]);
    let ok;
    if (spki.length === 91 && hexPrefix(spki, 26) === P256 && spki[26] === 4) {
      const k = await crypto.subtle.importKey("spki", spki, {name: "ECDSA", namedCurve: "P-256"}, false, ["verify"]);
      ok = await crypto.subtle.verify({name: "ECDSA", hash: "SHA-256"}, k, derToRaw(sig), msg);
    } else if (spki.length === 44 && hexPrefix(spki, 12) === ED25519) {
      const k = await crypto.subtle.importKey("spki", spki, {name: "Ed25519"}, false, ["verify"]);
      ok = await crypto.subtle.verify({name: "Ed25519"}, k, sig, msg);
    } else {
      throw new Error("the camera's key is neither P-256 nor Ed25519");
    }
    if (!ok) { throw new Error("the camera's signature over the answer does not verify"); }
  }

  let pc = null, session = null;
  // rtc tries WebRTC: true when the picture plays, else it has set note
  // and closed its connection.
  async function rtc() {
    if (!window.RTCPeerConnection || !video) { root.dataset.rtc = "no WebRTC in this browser"; return false; }
    let why = null, quiet = false;
    try {
      // The receiver's TURN relay, when it runs one (its credentials are
      // this owner's, short-lived): the path when the camera cannot be
      // reached directly; DTLS stays the camera's and this page's.
      let ice = {servers: [], policy: "all"};
      if (root.dataset.ice) { ice = JSON.parse(root.dataset.ice); }
      pc = new RTCPeerConnection({bundlePolicy: "max-bundle", iceServers: ice.servers || [], iceTransportPolicy: ice.policy === "relay" ? "relay" : "all"});
      pc.addTransceiver("video", {direction: "recvonly"});
      const gathered = new Promise(function (resolve) {
        pc.addEventListener("icegatheringstatechange", function () { if (pc.iceGatheringState === "complete") { resolve(); } });
        setTimeout(resolve, 2000);
      });
      await pc.setLocalDescription(await pc.createOffer());
      await gathered;
      const offer = pc.localDescription.sdp;
      const resp = await fetch("/live/" + encodeURIComponent(device) + "/whep", {method: "POST", credentials: "same-origin", cache: "no-store",
        headers: {"Content-Type": "application/sdp"}, body: offer, signal: ctl.signal});
      if (resp.status !== 201) {
        let msg = "";
        try { msg = (await resp.text()).trim().slice(0, 200); } catch (e) { msg = ""; }
        quiet = resp.status === 501; // a camera without WebRTC: the frames are the view
        throw new Error("the receiver answered " + resp.status + (msg ? ": " + msg : ""));
      }
      session = resp.headers.get("Location");
      const answer = await resp.text();
      try {
        await verifyAnswer(offer, answer, resp.headers.get("Keyframe-Answer-Signature"), resp.headers.get("Keyframe-Device-Key"));
      } catch (e) {
        root.dataset.rtc = "refused: " + ((e && e.message) || e);
        note = "The camera's WebRTC answer was refused (" + ((e && e.message) || e) + "): it may not be the camera's. Showing the camera's frames through the receiver instead.";
        throw null;
      }
      root.dataset.rtc = "verified";
      const playing = new Promise(function (resolve, reject) {
        pc.addEventListener("track", function (ev) {
          video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
          video.play().catch(function () {});
        });
        video.addEventListener("playing", resolve, {once: true});
        pc.addEventListener("connectionstatechange", function () {
          if (pc.connectionState === "failed") { reject(new Error("the connection to the camera failed")); }
        });
        setTimeout(function () { reject(new Error("no picture within 10 s")); }, 10000);
      });
      await pc.setRemoteDescription({type: "answer", sdp: answer});
      await playing;
      return true;
    } catch (e) {
      if (e) { why = (e && e.message) || String(e); }
    }
    if (pc) { pc.close(); pc = null; }
    endSession();
    video.hidden = true;
    if (why) {
      if (!root.dataset.rtc) { root.dataset.rtc = why; }
      if (!quiet) { note = "WebRTC: " + why + "; showing the camera's frames instead."; }
    }
    return false;
  }
  function endSession() {
    if (session) {
      fetch(session, {method: "DELETE", credentials: "same-origin", keepalive: true}).catch(function () {});
      session = null;
    }
  }
  // path says how the media flows: "relay" through the receiver's TURN
  // relay, else straight between the camera and this browser.
  async function path() {
    let pair = null;
    const cands = {};
    (await pc.getStats()).forEach(function (r) {
      if (r.type === "transport" && r.selectedCandidatePairId) { pair = r.selectedCandidatePairId; }
      if (r.type === "local-candidate") { cands[r.id] = r.candidateType; }
    });
    let local = null;
    (await pc.getStats()).forEach(function (r) {
      if (r.id === pair) { local = cands[r.localCandidateId]; }
    });
    return local || "unknown";
  }
  async function watchRTC() {
    root.dataset.transport = "webrtc";
    video.hidden = false;
    let p = "unknown";
    try { p = await path(); } catch (e) { p = "unknown"; }
    root.dataset.path = p;
    state("playing", p === "relay" ?
      "Live (WebRTC through the receiver's relay, encrypted end to end with the camera; its answer signed by the camera's key)." :
      "Live (WebRTC, straight from the camera; its answer signed by the camera's key).");
    pc.addEventListener("connectionstatechange", function () {
      if (pc && (pc.connectionState === "failed" || pc.connectionState === "closed")) {
        state("ended", "The live view ended (its time is up, or the camera stopped): reload the page to watch again.", true);
      }
    });
  }

  window.addEventListener("pagehide", function () {
    ctl.abort();
    if (pc) { pc.close(); }
    endSession();
  });
  async function start() {
    state("waiting", "Asking the camera for its picture…");
    if (await rtc()) { await watchRTC(); return; }
    if (ctl.signal.aborted) { return; }
    root.dataset.transport = "frames";
    await run();
  }
  start().catch(function (e) {
    if (e && e.nokey) {
      img.hidden = true;
      img.removeAttribute("src");
      stop("nokey", e.nokey);
    } else if (!ctl.signal.aborted) {
      stop("error", "The live view failed: " + ((e && e.message) || e) + ". Reload the page to try again.");
    }
  });
})();
