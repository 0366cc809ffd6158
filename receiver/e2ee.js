// keyframe: end-to-end encryption in the owner's browser (docs/e2ee.md).
// Served by the receiver as /static/e2ee.js under the pages' Content-Security-
// Policy (script-src 'self', connect-src 'self'): a plain script, no build
// step, no library, WebCrypto only. It exposes window.KFE2EE:
//
//   - hpke: RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//     AES-128-GCM, built from X25519 deriveBits, HMAC-SHA-256 and AES-GCM;
//   - sealed media (§4) and live frames (§8): parse, open, check;
//   - records: a bounded CBOR reader and COSE_Sign1 check (docs/envelope.md)
//     before a sealed object is opened;
//   - the owner's keys (§3, §6) in IndexedDB "keyframe-e2ee", and the
//     receiver's /v1/e2ee routes: set up, join by the recovery secret, ask to
//     join, approve, remove;
//   - renderAccountUI(element, account): the account page's piece. The script
//     renders it by itself into <div id="e2ee" data-account="NAME"> when the
//     page has one.
//
// Every failure throws an Error whose message says what failed.
"use strict";
(function () {
  const subtle = crypto.subtle;
  const te = new TextEncoder();
  const td = new TextDecoder("utf-8", {fatal: true});

  function fail(msg) {
    throw new Error("e2ee: " + msg);
  }

  // ---- bytes ----

  function bytes(x, what) {
    if (x instanceof Uint8Array) { return x; }
    if (x instanceof ArrayBuffer) { return new Uint8Array(x); }
    if (ArrayBuffer.isView(x)) { return new Uint8Array(x.buffer, x.byteOffset, x.byteLength); }
    if (typeof x === "string") { return te.encode(x); }
    if (Array.isArray(x)) { return Uint8Array.from(x); }
    return fail((what || "a value") + " is not bytes");
  }
  function concat() {
    let n = 0;
    const parts = [];
    for (let i = 0; i < arguments.length; i++) {
      const p = bytes(arguments[i]);
      parts.push(p);
      n += p.length;
    }
    const out = new Uint8Array(n);
    let o = 0;
    parts.forEach(function (p) { out.set(p, o); o += p.length; });
    return out;
  }
  function u16(n) { return new Uint8Array([(n >>> 8) & 255, n & 255]); }
  function u32(n) { return new Uint8Array([(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]); }
  function u64(n) {
    let v = BigInt(n);
    if (v < 0n || v >= (1n << 64n)) { fail("a uint64 out of range: " + n); }
    const out = new Uint8Array(8);
    for (let i = 7; i >= 0; i--) { out[i] = Number(v & 255n); v >>= 8n; }
    return out;
  }
  function lp(x) { const b = bytes(x); return concat(u32(b.length), b); }
  function equal(a, b) {
    if (a.length !== b.length) { return false; }
    let d = 0;
    for (let i = 0; i < a.length; i++) { d |= a[i] ^ b[i]; }
    return d === 0;
  }
  function hex(b) {
    return Array.from(bytes(b), function (x) { return x.toString(16).padStart(2, "0"); }).join("");
  }
  function fromHex(s) {
    if (typeof s !== "string" || s.length % 2 || /[^0-9a-fA-F]/.test(s)) { fail("not hex: " + String(s).slice(0, 40)); }
    const out = new Uint8Array(s.length / 2);
    for (let i = 0; i < out.length; i++) { out[i] = parseInt(s.substr(2 * i, 2), 16); }
    return out;
  }
  function b64u(b) {
    const x = bytes(b);
    let bin = "";
    for (let i = 0; i < x.length; i += 0x8000) { bin += String.fromCharCode.apply(null, x.subarray(i, i + 0x8000)); }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function fromB64u(s, what) {
    if (typeof s !== "string" || /[^A-Za-z0-9_-]/.test(s) || s.length % 4 === 1) { fail((what || "a field") + " is not base64url"); }
    let t = s.replace(/-/g, "+").replace(/_/g, "/");
    while (t.length % 4) { t += "="; }
    const bin = atob(t);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    if (b64u(out) !== s) { fail((what || "a field") + " is not canonical base64url"); }
    return out;
  }
  async function sha256() {
    return new Uint8Array(await subtle.digest("SHA-256", concat.apply(null, arguments)));
  }

  // base32 of RFC 4648 (device IDs, lower case) and Crockford's (the
  // recovery secret): 5 bits a character, most significant first, the last
  // character padded with zero bits.
  const RFC4648 = "abcdefghijklmnopqrstuvwxyz234567";
  const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  function base32(b, alphabet) {
    let out = "", acc = 0, nbits = 0;
    b.forEach(function (x) {
      acc = (acc << 8) | x;
      nbits += 8;
      while (nbits >= 5) { out += alphabet[(acc >>> (nbits - 5)) & 31]; nbits -= 5; }
      acc &= (1 << nbits) - 1;
    });
    if (nbits > 0) { out += alphabet[(acc << (5 - nbits)) & 31]; }
    return out;
  }

  // ---- HKDF over HMAC-SHA-256 ----

  async function hmac(key, data) {
    // An empty key is HMAC's all-zero block: WebCrypto refuses empty HMAC
    // keys, and 32 zero bytes are the same key (RFC 2104 pads with zeros).
    const k = key.length ? key : new Uint8Array(32);
    const ck = await subtle.importKey("raw", k, {name: "HMAC", hash: "SHA-256"}, false, ["sign"]);
    return new Uint8Array(await subtle.sign("HMAC", ck, data));
  }
  function extract(salt, ikm) { return hmac(bytes(salt), bytes(ikm)); }
  async function expand(prk, info, length) {
    if (length > 255 * 32) { fail("HKDF: output too long"); }
    const out = new Uint8Array(length);
    let t = new Uint8Array(0);
    for (let i = 1, o = 0; o < length; i++) {
      t = await hmac(prk, concat(t, bytes(info), [i]));
      out.set(t.subarray(0, Math.min(32, length - o)), o);
      o += 32;
    }
    return out;
  }
  async function hkdf(ikm, salt, info, length) { return expand(await extract(salt, ikm), info, length); }

  // ---- HPKE (RFC 9180), base mode, X25519 / HKDF-SHA256 / AES-128-GCM ----

  const KEM_X25519 = 0x0020, KEM_MLKEM768_X25519 = 0x647a, KDF_HKDF_SHA256 = 0x0001, AEAD_AES128GCM = 0x0001;
  const SUITE_KEM = concat("KEM", u16(KEM_X25519));
  const SUITE_HPKE = concat("HPKE", u16(KEM_X25519), u16(KDF_HKDF_SHA256), u16(AEAD_AES128GCM));
  const EMPTY = new Uint8Array(0);
  const X25519_PKCS8 = fromHex("302e020100300506032b656e04220420");
  const X25519_BASE = concat([9], new Uint8Array(31));

  function labeledExtract(suite, salt, label, ikm) {
    return extract(salt, concat("HPKE-v1", suite, label, ikm));
  }
  function labeledExpand(suite, prk, label, info, length) {
    return expand(prk, concat(u16(length), "HPKE-v1", suite, label, info), length);
  }

  async function x25519Public(pub) {
    const p = bytes(pub, "an X25519 public key");
    if (p.length !== 32) { fail("an X25519 public key has " + p.length + " bytes, want 32"); }
    return subtle.importKey("raw", p, {name: "X25519"}, true, []);
  }
  async function dh(priv, pub) {
    try {
      return new Uint8Array(await subtle.deriveBits({name: "X25519", public: await x25519Public(pub)}, priv, 256));
    } catch (e) {
      return fail("X25519: " + (e.message || e.name)); // a low-order point gives the all-zero secret, refused
    }
  }

  // deriveKeyPair is RFC 9180 §7.1.3 DeriveKeyPair for X25519: the private
  // key is imported non-extractable (extractable only when asked, for tests).
  async function deriveKeyPair(ikm, extractable) {
    const prk = await labeledExtract(SUITE_KEM, EMPTY, "dkp_prk", bytes(ikm, "ikm"));
    const sk = await labeledExpand(SUITE_KEM, prk, "sk", EMPTY, 32);
    const privateKey = await subtle.importKey("pkcs8", concat(X25519_PKCS8, sk), {name: "X25519"}, !!extractable, ["deriveBits"]);
    sk.fill(0);
    prk.fill(0);
    const publicKey = await dh(privateKey, X25519_BASE); // X25519(sk, 9)
    return {privateKey: privateKey, publicKey: publicKey};
  }
  async function generateKeyPair() {
    const kp = await subtle.generateKey({name: "X25519"}, false, ["deriveBits"]);
    return {privateKey: kp.privateKey, publicKey: new Uint8Array(await subtle.exportKey("raw", kp.publicKey))};
  }

  async function extractAndExpand(dhv, kemContext) {
    const prk = await labeledExtract(SUITE_KEM, EMPTY, "eae_prk", dhv);
    return labeledExpand(SUITE_KEM, prk, "shared_secret", kemContext, 32);
  }

  // A Context is an HPKE encryption context (RFC 9180 §5.2): its sequence
  // number counts the messages sealed or opened.
  function Context(key, baseNonce) {
    this.key = key;
    this.baseNonce = baseNonce;
    this.seq = 0;
  }
  Context.prototype.nonce = function () {
    const n = this.baseNonce.slice();
    const s = u64(this.seq);
    for (let i = 0; i < 8; i++) { n[4 + i] ^= s[i]; }
    return n;
  };
  Context.prototype.seal = async function (aad, pt) {
    const ct = await subtle.encrypt({name: "AES-GCM", iv: this.nonce(), additionalData: bytes(aad), tagLength: 128}, this.key, bytes(pt));
    this.seq++;
    return new Uint8Array(ct);
  };
  Context.prototype.open = async function (aad, ct) {
    let pt;
    try {
      pt = await subtle.decrypt({name: "AES-GCM", iv: this.nonce(), additionalData: bytes(aad), tagLength: 128}, this.key, bytes(ct));
    } catch (e) {
      return fail("HPKE: the ciphertext does not open (wrong key, info or aad, or altered)");
    }
    this.seq++;
    return new Uint8Array(pt);
  };

  async function keySchedule(sharedSecret, info) {
    const pskIDHash = await labeledExtract(SUITE_HPKE, EMPTY, "psk_id_hash", EMPTY);
    const infoHash = await labeledExtract(SUITE_HPKE, EMPTY, "info_hash", bytes(info));
    const ctx = concat([0], pskIDHash, infoHash); // mode_base
    const secret = await labeledExtract(SUITE_HPKE, sharedSecret, "secret", EMPTY);
    const key = await labeledExpand(SUITE_HPKE, secret, "key", ctx, 16);
    const baseNonce = await labeledExpand(SUITE_HPKE, secret, "base_nonce", ctx, 12);
    const ck = await subtle.importKey("raw", key, {name: "AES-GCM"}, false, ["encrypt", "decrypt"]);
    key.fill(0);
    secret.fill(0);
    return new Context(ck, baseNonce);
  }

  // setupBaseR: the recipient's context for enc, with its private key (a
  // CryptoKey) and public key (32 bytes).
  async function setupBaseR(enc, privateKey, publicKey, info) {
    const e = bytes(enc, "enc");
    if (e.length !== 32) { fail("HPKE: enc has " + e.length + " bytes, want 32"); }
    const ss = await extractAndExpand(await dh(privateKey, e), concat(e, publicKey));
    return keySchedule(ss, info);
  }
  // setupBaseS: the sender's enc and context for the recipient's public
  // key; opts.ikmE makes the ephemeral key of DeriveKeyPair(ikmE) (tests).
  async function setupBaseS(publicKey, info, opts) {
    const eph = opts && opts.ikmE ? await deriveKeyPair(opts.ikmE) : await generateKeyPair();
    const pkR = bytes(publicKey, "the recipient's public key");
    const ss = await extractAndExpand(await dh(eph.privateKey, pkR), concat(eph.publicKey, pkR));
    return {enc: eph.publicKey, context: await keySchedule(ss, info)};
  }
  async function hpkeOpen(privateKey, publicKey, enc, info, aad, ct) {
    return (await setupBaseR(enc, privateKey, publicKey, info)).open(aad, ct);
  }
  async function hpkeSeal(publicKey, info, aad, pt) {
    const s = await setupBaseS(publicKey, info);
    return {enc: s.enc, ct: await s.context.seal(aad, pt)};
  }

  // ---- names (§1, §3) ----

  async function keyID(kem, pub) {
    return hex((await sha256("keyframe e2ee key id v1\0", u16(kem), bytes(pub))).subarray(0, 16));
  }
  async function fingerprint(identity) {
    const id = bytes(identity, "the identity key");
    if (id.length !== 32) { fail("the identity key has " + id.length + " bytes, want 32"); }
    return sha256("keyframe e2ee identity v1\0", id);
  }

  // ---- sealed media (§4) ----

  const SEALED_TYPE = "application/vnd.keyframe.sealed";
  const MAX_RECIPIENTS = 16, MAX_ENC = 1120, WK_LEN = 32, MAX_SEALED = 64 << 20;
  const ROLES = ["thumbnail", "frames", "live"];

  // binding (§4): b = {owner: 32 bytes, device, event, seq, role}.
  function binding(b) {
    const owner = bytes(b.owner, "binding.owner");
    if (owner.length !== 32) { fail("binding.owner has " + owner.length + " bytes, want 32"); }
    ["device", "event", "role"].forEach(function (f) {
      if (typeof b[f] !== "string" || b[f] === "") { fail("binding." + f + " is missing"); }
    });
    return concat("keyframe e2ee v1\0", owner, lp(b.device), lp(b.event), u64(b.seq), lp(b.role));
  }

  // parseSealed reads the header of a sealed object, bounded: at most 16
  // recipients, each enc of its KEM's size (32, or 1120 for ML-KEM-768+X25519),
  // each wk 32 bytes, at most 64 MiB in all (as e2ee.ParseHeader).
  function parseSealed(sealed) {
    const b = bytes(sealed, "the sealed object");
    if (b.length > MAX_SEALED) { fail("sealed object: " + b.length + " bytes, more than " + MAX_SEALED); }
    let p = 0;
    function need(n, what) {
      if (b.length - p < n) { fail("sealed object: truncated in " + what + " (" + b.length + " bytes)"); }
      const s = b.subarray(p, p + n);
      p += n;
      return s;
    }
    function r16(what) { const s = need(2, what); return (s[0] << 8) | s[1]; }
    if (td.decode(need(4, "magic")) !== "KFE1") { fail("sealed object: no KFE1 magic"); }
    const kem = r16("kem_id"), kdf = r16("kdf_id"), aead = r16("aead_id");
    if (kdf !== KDF_HKDF_SHA256 || aead !== AEAD_AES128GCM) { fail("sealed object: unsupported kdf_id " + kdf + " or aead_id " + aead); }
    const commit = need(32, "commit");
    const n = need(1, "n")[0];
    if (n < 1 || n > MAX_RECIPIENTS) { fail("sealed object: " + n + " recipients, want 1 to " + MAX_RECIPIENTS); }
    const recipients = [];
    for (let i = 0; i < n; i++) {
      const id = hex(need(16, "recipient " + i + " key_id"));
      const rkem = r16("recipient " + i + " kem");
      const want = rkem === KEM_X25519 ? 32 : rkem === KEM_MLKEM768_X25519 ? MAX_ENC : 0;
      if (!want) { fail("sealed object: recipient " + i + " kem " + rkem + " is not a supported KEM"); }
      if (recipients.some(function (r) { return r.id === id; })) { fail("sealed object: recipient " + i + " key_id " + id + " listed twice"); }
      const encLen = r16("recipient " + i + " enc_len");
      if (encLen !== want) { fail("sealed object: recipient " + i + " enc_len " + encLen + ", want " + want + " for kem " + rkem); }
      const enc = need(encLen, "recipient " + i + " enc");
      const wkLen = r16("recipient " + i + " wk_len");
      if (wkLen !== WK_LEN) { fail("sealed object: recipient " + i + " wk_len " + wkLen + ", want " + WK_LEN); }
      recipients.push({id: id, kem: rkem, enc: enc, wk: need(wkLen, "recipient " + i + " wk")});
    }
    if (kem !== recipients[0].kem) { fail("sealed object: kem_id " + kem + " is not the first recipient's " + recipients[0].kem); }
    const nonce = need(12, "nonce");
    const header = b.subarray(0, p);
    const ct = b.subarray(p);
    if (ct.length < 16) { fail("sealed object: ciphertext shorter than its tag"); }
    return {kem: kem, commit: commit, recipients: recipients, nonce: nonce, header: header, ct: ct};
  }

  // unwrap finds the recipient entry of one of keys ([{id, privateKey,
  // publicKey}]) and returns the content key, checked against commit.
  async function unwrap(h, bind, keys) {
    let entry = null, key = null;
    for (const k of keys || []) {
      entry = h.recipients.find(function (r) { return r.id === k.id && r.kem === KEM_X25519; });
      if (entry) { key = k; break; }
    }
    if (!entry) {
      fail("the object is not sealed to this browser's key" + (keys && keys.length ? " (" + keys.map(function (k) { return k.id; }).join(", ") + ")" : "") +
        "; it names " + h.recipients.map(function (r) { return r.id; }).join(", "));
    }
    let ck;
    try {
      ck = await hpkeOpen(key.privateKey, key.publicKey, entry.enc, concat("keyframe e2ee wrap v1\0", bind), EMPTY, entry.wk);
    } catch (e) {
      fail("the content key does not open: the object belongs to another owner, camera, event, sequence number or role, or was altered");
    }
    if (ck.length !== 16) { fail("the content key has " + ck.length + " bytes, want 16"); }
    if (!equal(await sha256("keyframe e2ee commit v1\0", ck), h.commit)) {
      fail("the content key does not match the object's commitment");
    }
    return ck;
  }

  async function aesKey(raw) {
    return subtle.importKey("raw", raw, {name: "AES-GCM"}, false, ["decrypt"]);
  }

  // openSealed opens a sealed object bound to b ({owner, device, event, seq,
  // role}) with one of keys; returns the plaintext.
  async function openSealed(sealed, b, keys) {
    const h = parseSealed(sealed);
    const bind = binding(b);
    const ck = await unwrap(h, bind, keys);
    const k = await aesKey(ck);
    ck.fill(0);
    try {
      return new Uint8Array(await subtle.decrypt({name: "AES-GCM", iv: h.nonce, additionalData: concat(bind, h.header), tagLength: 128}, k, h.ct));
    } catch (e) {
      return fail("the content does not open: the object was altered or belongs elsewhere");
    }
  }

  // ---- live view (§8) ----

  function liveAAD(device, stream, counter) {
    return concat("keyframe e2ee live v1\0", lp(device), lp(stream), counter);
  }

  // parseKeyFrame splits a live key frame (§8: "KFL1" ‖ uint32(32) ‖
  // stream id ‖ sealed) into the stream id and the sealed stream key.
  function parseKeyFrame(keyFrame) {
    const f = bytes(keyFrame, "the live key frame");
    if (f.length < 4 + 4 + 32) { fail("live: a key frame of " + f.length + " bytes is too short"); }
    if (td.decode(f.subarray(0, 4)) !== "KFL1") { fail("live: the key frame has no KFL1 magic"); }
    const n = ((f[4] << 24) | (f[5] << 16) | (f[6] << 8) | f[7]) >>> 0;
    if (n !== 32) { fail("live: the key frame's stream id has length " + n + ", want 32"); }
    const id = String.fromCharCode.apply(null, f.subarray(8, 40));
    if (!/^[0-9a-f]{32}$/.test(id)) { fail("live: the key frame's stream id is not 32 lower-case hex characters"); }
    return {stream: id, sealed: f.subarray(40)};
  }

  // openLive opens a live stream's key frame: s = {owner, device}. The
  // returned opener has the stream id, and openFrame(frame) gives each
  // frame's JPEG, refusing a counter that does not increase.
  async function openLive(keyFrame, s, keys) {
    const kf = parseKeyFrame(keyFrame);
    const stream = kf.stream;
    const key = await openSealed(kf.sealed, {owner: s.owner, device: s.device, event: stream, seq: 0, role: "live"}, keys);
    if (key.length !== 16) { fail("live: the stream key has " + key.length + " bytes, want 16"); }
    const k = await aesKey(key);
    key.fill(0);
    let last = 0n;
    return {
      streamID: stream,
      openFrame: async function (frame) {
        const f = bytes(frame, "a live frame");
        if (f.length < 8 + 16) { fail("live: a frame of " + f.length + " bytes is too short"); }
        const c = f.subarray(0, 8);
        let counter = 0n;
        c.forEach(function (x) { counter = (counter << 8n) | BigInt(x); });
        if (counter <= last) { fail("live: frame counter " + counter + " does not increase (last " + last + ")"); }
        let pt;
        try {
          pt = await subtle.decrypt({name: "AES-GCM", iv: concat(new Uint8Array(4), c), additionalData: liveAAD(s.device, stream, c), tagLength: 128}, k, f.subarray(8));
        } catch (e) {
          return fail("live: frame " + counter + " does not open (altered, or of another stream)");
        }
        last = counter;
        return new Uint8Array(pt);
      },
    };
  }

  // ---- CBOR and COSE_Sign1 (docs/envelope.md §3) ----

  // cbor reads one item of b at pos: definite lengths and shortest forms
  // only, no floats or simple values, tags only where allowed, arrays of at
  // most 1024 items, maps of at most 64 pairs, depth at most 16. With
  // canonical, map keys must be in the deterministic order (RFC 8949
  // §4.2.1). Integers beyond 2^53 are BigInts.
  function CBOR(b) { this.b = b; this.pos = 0; }
  CBOR.prototype.fail = function (msg) { fail("CBOR at byte " + this.pos + ": " + msg); };
  CBOR.prototype.head = function () {
    const b = this.b;
    if (this.pos >= b.length) { this.fail("truncated"); }
    const ib = b[this.pos++], major = ib >> 5, ai = ib & 31;
    let v;
    if (ai < 24) {
      v = ai;
    } else if (ai <= 27) {
      const n = 1 << (ai - 24);
      if (b.length - this.pos < n) { this.fail("truncated"); }
      let x = 0n;
      for (let i = 0; i < n; i++) { x = (x << 8n) | BigInt(b[this.pos++]); }
      const min = [24n, 256n, 65536n, 4294967296n][ai - 24];
      if (x < min) { this.fail("an argument not in its shortest form"); }
      v = x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
    } else {
      this.fail("indefinite length or reserved value");
    }
    return {major: major, v: v};
  };
  CBOR.prototype.len = function (v, max) {
    if (typeof v !== "number" || v > max || v > this.b.length - this.pos) { this.fail("a length of " + v + " beyond its bound"); }
    return v;
  };
  CBOR.prototype.item = function (depth, canonical, tags) {
    if (depth > 16) { this.fail("nested deeper than 16"); }
    const h = this.head();
    switch (h.major) {
      case 0: return h.v;
      case 1: return typeof h.v === "number" ? -1 - h.v : -1n - h.v;
      case 2: { const n = this.len(h.v, Infinity); const s = this.b.subarray(this.pos, this.pos + n); this.pos += n; return s; }
      case 3: {
        const n = this.len(h.v, Infinity);
        let s;
        try { s = td.decode(this.b.subarray(this.pos, this.pos + n)); } catch (e) { this.fail("text that is not UTF-8"); }
        this.pos += n;
        return s;
      }
      case 4: {
        const n = this.len(h.v, 1024);
        const a = [];
        for (let i = 0; i < n; i++) { a.push(this.item(depth + 1, canonical)); }
        return a;
      }
      case 5: {
        const n = this.len(h.v, 64);
        const m = new Map();
        let prev = null;
        for (let i = 0; i < n; i++) {
          const start = this.pos;
          const k = this.item(depth + 1, canonical);
          const kb = this.b.subarray(start, this.pos);
          const key = typeof k === "bigint" ? k.toString() + "n" : k;
          if (typeof k !== "string" && typeof k !== "number" && typeof k !== "bigint") { this.fail("a map key that is not a text or an integer"); }
          if (m.has(key)) { this.fail("a duplicate map key " + String(k)); }
          if (canonical && prev && compareBytes(prev, kb) >= 0) { this.fail("map keys out of the deterministic order"); }
          prev = kb;
          m.set(key, this.item(depth + 1, canonical));
        }
        return m;
      }
      case 6:
        if (!tags || h.v !== tags) { this.fail("an unexpected tag " + h.v); }
        return {tag: h.v, value: this.item(depth + 1, canonical)};
      default:
        return this.fail("a float or simple value");
    }
  };
  function compareBytes(a, b) {
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      if (a[i] !== b[i]) { return a[i] - b[i]; }
    }
    return a.length - b.length;
  }

  const P256_SPKI = fromHex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
  const ED25519_SPKI = fromHex("302a300506032b6570032100");
  const EVENT_TYPE = "application/vnd.keyframe.event+cbor";

  async function deviceID(spki) {
    return base32((await sha256(spki)).subarray(0, 16), RFC4648);
  }
  function spkiKind(spki) {
    if (spki.length === 91 && equal(spki.subarray(0, 26), P256_SPKI) && spki[26] === 4) { return "p256"; }
    if (spki.length === 44 && equal(spki.subarray(0, 12), ED25519_SPKI)) { return "ed25519"; }
    return fail("record: the signer key is neither a P-256 nor an Ed25519 SPKI in DER");
  }

  // verifyRecord checks a record's COSE_Sign1 envelope (docs/envelope.md §3)
  // with the device's key spki (DER SubjectPublicKeyInfo; null: the key the
  // header carries): the signer key, the device ID in kid and payload as its
  // fingerprint, the signature. Returns the record's fields.
  async function verifyRecord(envelope, spki) {
    const env = bytes(envelope, "the envelope");
    const r = new CBOR(env);
    let h = r.head();
    if (h.major !== 6 || h.v !== 18) { fail("record: not a tagged COSE_Sign1 (tag 18)"); }
    h = r.head();
    if (h.major !== 4 || h.v !== 4) { fail("record: COSE_Sign1 is not an array of 4"); }
    const pStart = r.pos;
    const prot = r.item(1, false);
    const pEnd = r.pos;
    if (!(prot instanceof Uint8Array)) { fail("record: the protected header is not a byte string"); }
    if (env[r.pos] !== 0xa0) { fail("record: the unprotected header is not the empty map"); }
    r.pos++;
    const yStart = r.pos;
    const payload = r.item(1, false);
    const yEnd = r.pos;
    if (!(payload instanceof Uint8Array)) { fail("record: the payload is not a byte string"); }
    const sig = r.item(1, false);
    if (!(sig instanceof Uint8Array) || sig.length !== 64) { fail("record: the signature is not 64 bytes"); }
    if (r.pos !== env.length) { fail("record: " + (env.length - r.pos) + " bytes after the envelope"); }

    const ph = new CBOR(prot);
    const hdr = ph.item(1, false);
    if (!(hdr instanceof Map) || ph.pos !== prot.length || hdr.size > 5) { fail("record: the protected header is not a map of at most 5 labels"); }
    hdr.forEach(function (v, k) {
      if ([1, 3, 4, 33, -65537].indexOf(k) < 0) { fail("record: protected header label " + String(k) + " is not allowed"); }
    });
    const x5 = hdr.get(33); // the chain is the receiver's trust decision: its shape only
    if (x5 !== undefined) {
      const certs = x5 instanceof Uint8Array ? [x5] : x5;
      if (!Array.isArray(certs) || (Array.isArray(x5) && (x5.length < 2 || x5.length > 4)) ||
          certs.some(function (c) { return !(c instanceof Uint8Array) || c.length > 8192; })) {
        fail("record: x5chain is not one certificate or an array of 2 to 4, each at most 8192 bytes");
      }
    }
    const signer = hdr.get(-65537);
    if (!(signer instanceof Uint8Array)) { fail("record: no signer key in the protected header"); }
    const key = spki == null ? signer : bytes(spki, "the device key");
    if (!equal(signer, key)) { fail("record: the signer key is not the device's key"); }
    const kind = spkiKind(key);
    const alg = hdr.get(1);
    if (alg !== (kind === "p256" ? -7 : -8)) { fail("record: alg " + String(alg) + " does not match the " + kind + " key"); }
    if (hdr.get(3) !== EVENT_TYPE) { fail("record: content type is not " + EVENT_TYPE); }
    const id = await deviceID(key);
    const kid = hdr.get(4);
    if (!(kid instanceof Uint8Array) || td.decode(kid) !== id) { fail("record: kid is not the key's device ID " + id); }

    const pr = new CBOR(payload);
    const p = pr.item(1, true);
    if (!(p instanceof Map) || pr.pos !== payload.length) { fail("record: the payload is not one CBOR map"); }
    if (p.get("v") !== 1) { fail("record: payload v is not 1"); }
    if (p.get("device") !== id) { fail("record: payload device " + p.get("device") + " is not the key's device ID " + id); }
    const tbs = concat([0x84, 0x6a], "Signature1", env.subarray(pStart, pEnd), [0x40], env.subarray(yStart, yEnd));
    let ok;
    if (kind === "p256") {
      const k = await subtle.importKey("spki", key, {name: "ECDSA", namedCurve: "P-256"}, false, ["verify"]);
      ok = await subtle.verify({name: "ECDSA", hash: "SHA-256"}, k, sig, tbs);
    } else {
      const k = await subtle.importKey("spki", key, {name: "Ed25519"}, false, ["verify"]);
      ok = await subtle.verify({name: "Ed25519"}, k, sig, tbs);
    }
    if (!ok) { fail("record: the signature does not verify with device " + id + "'s key"); }

    const event = p.get("event"), rkind = p.get("kind"), seq = p.get("seq"), media = p.get("media");
    if (typeof event !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(event)) { fail("record: payload event is not an event ID"); }
    if (typeof rkind !== "string") { fail("record: payload kind is not text"); }
    if (typeof seq !== "number" && typeof seq !== "bigint") { fail("record: payload seq is not an unsigned integer"); }
    if (!Array.isArray(media) || media.length > 8) { fail("record: payload media is not a list of at most 8"); }
    return {
      device: id,
      event: event,
      kind: rkind,
      seq: BigInt(seq),
      media: media.map(function (m, i) {
        if (!(m instanceof Map) || typeof m.get("role") !== "string" || typeof m.get("type") !== "string" ||
            !(m.get("sha256") instanceof Uint8Array) || m.get("sha256").length !== 32 || (typeof m.get("size") !== "number" && typeof m.get("size") !== "bigint")) {
          fail("record: media[" + i + "] is malformed");
        }
        return {role: m.get("role"), type: m.get("type"), size: BigInt(m.get("size")), sha256: m.get("sha256")};
      }),
      payload: p,
    };
  }

  // checkMedia checks object against the record's media[index]: size and
  // SHA-256.
  async function checkMedia(rec, index, object) {
    const m = rec.media[index];
    if (!m) { fail("record: no media[" + index + "] (the record lists " + rec.media.length + ")"); }
    const o = bytes(object, "the media object");
    if (BigInt(o.length) !== m.size) { fail("media[" + index + "]: " + o.length + " bytes, the record signs " + m.size); }
    if (!equal(await sha256(o), m.sha256)) { fail("media[" + index + "]: its SHA-256 is not the one the record signs"); }
    return m;
  }

  // checkFrames checks a segment record's frames (docs/envelope.md §4.4,
  // docs/e2ee.md §7) against data, the frames concatenated (the opened
  // plaintext of a sealed segment): every frame's size and SHA-256, the
  // sizes adding up to data's length. Returns [{offset, size, tUs}].
  async function checkFrames(rec, data) {
    const seg = rec.payload.get("segment");
    const frames = seg instanceof Map ? seg.get("frames") : null;
    if (!Array.isArray(frames)) { fail("record: not a segment record (no segment.frames)"); }
    const d = bytes(data, "the frames");
    const out = [];
    let off = 0;
    for (let i = 0; i < frames.length; i++) {
      const f = frames[i];
      const size = f instanceof Map ? f.get("size") : null, sum = f instanceof Map ? f.get("sha256") : null;
      if (typeof size !== "number" || size < 1 || !(sum instanceof Uint8Array) || sum.length !== 32) { fail("record: segment.frames[" + i + "] is malformed"); }
      if (off + size > d.length) { fail("segment.frames[" + i + "]: the frames end before it (" + d.length + " bytes)"); }
      if (!equal(await sha256(d.subarray(off, off + size)), sum)) { fail("segment.frames[" + i + "]: its SHA-256 is not the one the record signs"); }
      out.push({offset: off, size: size, tUs: f.get("t_us")});
      off += size;
    }
    if (off !== d.length) { fail("segment.frames: " + off + " bytes of frames, " + d.length + " given"); }
    return out;
  }

  // openRecordMedia: the owner's check before showing a sealed picture
  // (§7): the record's signature with the device's key (spki), the sealed
  // bytes against the record's media[index], then the object opened under
  // the binding of the record's own fields. opts: {owner (32 bytes), keys
  // ([{id, privateKey, publicKey}])}, or an Account (KFE2EE.account) whose
  // key set and browser key give them.
  async function openRecordMedia(envelope, spki, sealed, index, opts) {
    const o = await openOpts(opts);
    const rec = await verifyRecord(envelope, spki);
    const m = await checkMedia(rec, index, sealed);
    if (m.type !== SEALED_TYPE) { fail("media[" + index + "] is " + m.type + ", not sealed (" + SEALED_TYPE + ")"); }
    if (ROLES.indexOf(m.role) < 0) { fail("media[" + index + "] has role " + m.role); }
    return openSealed(sealed, {owner: o.owner, device: rec.device, event: rec.event, seq: rec.seq, role: m.role}, o.keys);
  }
  async function openOpts(opts) {
    if (opts && typeof opts.openingKeys === "function") { return opts.openingKeys(); }
    if (!opts || !opts.owner || !opts.keys) { fail("no owner and keys to open with"); }
    return {owner: bytes(opts.owner, "owner"), keys: opts.keys};
  }

  // ---- recovery secret (§6) ----

  function newRecoverySecret() {
    return crypto.getRandomValues(new Uint8Array(16));
  }
  function formatRecoverySecret(b) {
    const s = base32(b, CROCKFORD);
    return s.match(/.{1,5}/g).join("-"); // 26 characters in groups of five
  }
  // parseRecoverySecret reads the 26 characters (case, hyphens and spaces
  // ignored, O read as 0, I and L as 1) back into 16 bytes.
  function parseRecoverySecret(s) {
    const t = String(s).toUpperCase().replace(/[\s-]/g, "").replace(/O/g, "0").replace(/[IL]/g, "1");
    if (t.length !== 26) { fail("the recovery secret has " + t.length + " characters, want 26"); }
    const out = new Uint8Array(16);
    let acc = 0, nbits = 0, o = 0;
    for (const ch of t) {
      const v = CROCKFORD.indexOf(ch);
      if (v < 0) { fail("the recovery secret holds " + JSON.stringify(ch) + ", not a base32 character"); }
      acc = (acc << 5) | v;
      nbits += 5;
      if (nbits >= 8) { out[o++] = (acc >>> (nbits - 8)) & 255; nbits -= 8; acc &= (1 << nbits) - 1; }
    }
    if (acc !== 0) { fail("the recovery secret's last character is not one a secret ends with (mistyped?)"); }
    return out;
  }
  async function recoveryKeys(secret) {
    return {
      backupKey: await hkdf(secret, EMPTY, "keyframe e2ee backup key v1", 16),
      kemIKM: await hkdf(secret, EMPTY, "keyframe e2ee recovery kem v1", 32),
    };
  }
  function backupAAD(identity) { return concat("keyframe e2ee backup v1\0", identity); }
  async function sealBackup(secret, identity, pkcs8) {
    const rk = await recoveryKeys(secret);
    const k = await subtle.importKey("raw", rk.backupKey, {name: "AES-GCM"}, false, ["encrypt"]);
    const nonce = crypto.getRandomValues(new Uint8Array(12));
    const ct = await subtle.encrypt({name: "AES-GCM", iv: nonce, additionalData: backupAAD(identity), tagLength: 128}, k, pkcs8);
    return concat(nonce, new Uint8Array(ct));
  }
  // openBackup returns the identity's signing key (non-extractable).
  async function openBackup(secret, identity, backup) {
    const rk = await recoveryKeys(secret);
    const b = bytes(backup, "the backup");
    if (b.length < 12 + 16) { fail("the backup is too short"); }
    const k = await subtle.importKey("raw", rk.backupKey, {name: "AES-GCM"}, false, ["decrypt"]);
    let pkcs8;
    try {
      pkcs8 = new Uint8Array(await subtle.decrypt({name: "AES-GCM", iv: b.subarray(0, 12), additionalData: backupAAD(identity), tagLength: 128}, k, b.subarray(12)));
    } catch (e) {
      return fail("the recovery secret does not open the backup (mistyped, or of another identity)");
    }
    let priv;
    try {
      priv = await subtle.importKey("pkcs8", pkcs8, {name: "Ed25519"}, false, ["sign"]);
    } finally {
      pkcs8.fill(0);
    }
    // The key must be the identity's: sign and verify.
    const probe = crypto.getRandomValues(new Uint8Array(32));
    const pub = await subtle.importKey("raw", identity, {name: "Ed25519"}, false, ["verify"]);
    if (!await subtle.verify({name: "Ed25519"}, pub, await subtle.sign({name: "Ed25519"}, priv, probe), probe)) {
      fail("the backup holds a key that is not the identity's");
    }
    return priv;
  }

  // ---- key sets (§3) ----

  const MAX_KEYSET = 16 * 1024;
  // The members of §3: required, then those that may be absent.
  const KEYSET_FIELDS = [["v", "identity", "version", "keys"], ["time_ms"]];
  const KEY_FIELDS = [["id", "kem", "pub"], ["name", "recovery"]];

  function sameFields(o, want, what) {
    const got = Object.keys(o);
    const req = want[0], opt = want[1] || [];
    const missing = req.filter(function (f) { return !Object.prototype.hasOwnProperty.call(o, f); });
    const unknown = got.filter(function (f) { return req.indexOf(f) < 0 && opt.indexOf(f) < 0; });
    if (missing.length || unknown.length) {
      fail(what + (missing.length ? " lacks " + missing.join(",") : "") + (unknown.length ? " has unknown " + unknown.join(",") : ""));
    }
  }
  function truncName(name) {
    let s = String(name);
    while (te.encode(s).length > 64) { s = s.slice(0, -1); }
    return s;
  }

  // keySetBytes writes a key set: identity (32 bytes), version, keys
  // [{kem, pub (bytes), name, recovery}] (ids computed).
  async function keySetBytes(identity, version, keys, timeMs) {
    const list = [];
    for (const k of keys) {
      list.push({id: await keyID(k.kem, k.pub), kem: k.kem, pub: b64u(k.pub), name: truncName(k.name || ""), recovery: !!k.recovery});
    }
    return te.encode(JSON.stringify({v: 1, identity: b64u(identity), version: version, time_ms: timeMs == null ? Date.now() : timeMs, keys: list}));
  }
  async function signKeySet(identityKey, raw) {
    const sig = await subtle.sign({name: "Ed25519"}, identityKey, concat("keyframe e2ee keyset v1\0", raw));
    return {keyset: b64u(raw), sig: b64u(sig)};
  }

  // parseSigned reads a signed key set ({"keyset","sig"}, an object or its
  // JSON) and checks it: the members of §3 (time_ms, name and recovery may
  // be absent), the key ids, the self-signature. JSON.parse keeps the last
  // of duplicate members and reads 1.0 as 1: the cameras' parser
  // (e2ee.ParseSigned) refuses those; a browser only reads sets its owner's
  // identity signed. With
  // identity (32 bytes) it must be that identity's.
  async function parseSigned(signed, identity) {
    const s = typeof signed === "string" ? JSON.parse(signed) : signed;
    if (!s || typeof s !== "object") { fail("signed key set: not an object"); }
    sameFields(s, [["keyset", "sig"]], "signed key set");
    const raw = fromB64u(s.keyset, "keyset"), sig = fromB64u(s.sig, "sig");
    if (raw.length > MAX_KEYSET) { fail("key set: " + raw.length + " bytes, over " + MAX_KEYSET); }
    let ks;
    try { ks = JSON.parse(td.decode(raw)); } catch (e) { fail("key set: not JSON"); }
    if (!ks || typeof ks !== "object" || Array.isArray(ks)) { fail("key set: not an object"); }
    sameFields(ks, KEYSET_FIELDS, "key set");
    if (ks.v !== 1) { fail("key set: v is not 1"); }
    const id = fromB64u(ks.identity, "key set identity");
    if (id.length !== 32) { fail("key set: identity has " + id.length + " bytes"); }
    if (!Number.isSafeInteger(ks.version) || ks.version < 1) { fail("key set: version is not an integer 1 to 2^53-1"); }
    if (ks.time_ms === undefined) { ks.time_ms = 0; }
    if (!Number.isSafeInteger(ks.time_ms) || ks.time_ms < 0) { fail("key set: time_ms is not an integer of 0 or more"); }
    if (!Array.isArray(ks.keys) || ks.keys.length < 1 || ks.keys.length > 16) { fail("key set: keys is not a list of 1 to 16"); }
    const keys = [];
    let recovery = 0;
    for (let i = 0; i < ks.keys.length; i++) {
      const k = ks.keys[i];
      if (!k || typeof k !== "object") { fail("key set: keys[" + i + "] is not an object"); }
      sameFields(k, KEY_FIELDS, "key set keys[" + i + "]");
      const name = k.name === undefined ? "" : k.name, rec = k.recovery === undefined ? false : k.recovery;
      if (k.kem !== KEM_X25519 && k.kem !== KEM_MLKEM768_X25519) { fail("key set: keys[" + i + "].kem " + k.kem + " is not 32 or 25722"); }
      const pub = fromB64u(k.pub, "keys[" + i + "].pub");
      if (pub.length !== (k.kem === KEM_X25519 ? 32 : 1216)) { fail("key set: keys[" + i + "].pub has " + pub.length + " bytes"); }
      if (k.id !== await keyID(k.kem, pub)) { fail("key set: keys[" + i + "].id is not its key's id"); }
      if (keys.some(function (x) { return x.id === k.id; })) { fail("key set: keys[" + i + "].id appears twice"); }
      if (typeof name !== "string" || te.encode(name).length > 64) { fail("key set: keys[" + i + "].name is not text of at most 64 bytes"); }
      if (typeof rec !== "boolean") { fail("key set: keys[" + i + "].recovery is not a boolean"); }
      if (rec) { recovery++; }
      keys.push({id: k.id, kem: k.kem, pub: pub, name: name, recovery: rec});
    }
    if (recovery > 1) { fail("key set: " + recovery + " recovery keys"); }
    if (identity && !equal(bytes(identity), id)) { fail("key set: signed by another identity than this browser's"); }
    const pub = await subtle.importKey("raw", id, {name: "Ed25519"}, false, ["verify"]);
    if (sig.length !== 64 || !await subtle.verify({name: "Ed25519"}, pub, sig, concat("keyframe e2ee keyset v1\0", raw))) {
      fail("key set: the signature does not verify with its identity key");
    }
    return {raw: raw, sig: sig, identity: id, version: ks.version, timeMs: ks.time_ms, keys: keys, signed: {keyset: s.keyset, sig: s.sig}};
  }

  // ---- storage: IndexedDB "keyframe-e2ee", one record per account ----

  const DB_NAME = "keyframe-e2ee", STORE = "accounts";
  function idb() {
    return new Promise(function (resolve, reject) {
      const req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = function () { req.result.createObjectStore(STORE, {keyPath: "account"}); };
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(new Error("e2ee: IndexedDB " + DB_NAME + ": " + (req.error && req.error.message))); };
    });
  }
  async function dbDo(mode, fn) {
    const db = await idb();
    try {
      return await new Promise(function (resolve, reject) {
        const tx = db.transaction(STORE, mode);
        const req = fn(tx.objectStore(STORE));
        tx.oncomplete = function () { resolve(req.result); };
        tx.onerror = tx.onabort = function () { reject(new Error("e2ee: IndexedDB: " + (tx.error && tx.error.message))); };
      });
    } finally {
      db.close();
    }
  }
  function dbGet(account) { return dbDo("readonly", function (s) { return s.get(account); }); }
  function dbPut(rec) { return dbDo("readwrite", function (s) { return s.put(rec); }); }
  function dbDelete(account) { return dbDo("readwrite", function (s) { return s.delete(account); }); }

  // browserName is "Chromium on Linux, 2026-12-07": the browser, its system
  // and the day.
  function browserName(now) {
    const ua = navigator.userAgent || "";
    const brands = (navigator.userAgentData && navigator.userAgentData.brands || []).map(function (x) { return x.brand; });
    const brand = ["Google Chrome", "Microsoft Edge", "Opera", "Chromium"].find(function (x) { return brands.indexOf(x) >= 0; });
    const b = brand ? brand.replace(/^(Google|Microsoft) /, "") : /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox" : /Chromium\//.test(ua) ? "Chromium" :
      /Chrome\//.test(ua) ? (/HeadlessChrome/.test(ua) ? "Chromium" : "Chrome") : /Safari\//.test(ua) ? "Safari" : "A browser";
    const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Windows/.test(ua) ? "Windows" :
      /Mac OS X/.test(ua) ? "macOS" : /CrOS/.test(ua) ? "ChromeOS" : /Linux/.test(ua) ? "Linux" : "";
    const day = new Date(now == null ? Date.now() : now).toISOString().slice(0, 10);
    return b + (os ? " on " + os : "") + ", " + day;
  }

  // ---- the receiver's routes ----

  async function api(base, method, path, body) {
    const init = {method: method, credentials: "same-origin", headers: {}};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(base + path, init);
    if ((method === "GET" || method === "DELETE") && resp.status === 404) { return null; } // none; already gone
    if (!resp.ok) {
      let msg = "";
      try { msg = (await resp.text()).trim().slice(0, 200); } catch (e) { msg = ""; }
      fail(method + " " + path + ": the receiver answered " + resp.status + (msg ? ": " + msg : ""));
    }
    if (resp.status === 204) { return null; }
    const ct = resp.headers.get("Content-Type") || "";
    return ct.indexOf("json") >= 0 ? resp.json() : null;
  }

  // An Account is this browser's keys for one account, and the receiver's
  // state of it (refresh()).
  function Account(name, opts) {
    this.name = name;
    this.base = (opts && opts.base) || "";
    this.rec = null;    // the IndexedDB record
    this.set = null;    // the receiver's key set, parsed and verified
    this.backup = "";   // base64url
    this.requests = []; // pending join requests, each with its key id
  }

  // account loads this browser's keys for name (none yet is fine).
  async function account(name, opts) {
    if (typeof name !== "string" || name === "") { fail("no account name"); }
    const a = new Account(name, opts);
    a.rec = (await dbGet(name)) || null;
    return a;
  }

  Account.prototype.browserKey = async function () {
    if (!this.rec || !this.rec.browser) {
      const kp = await generateKeyPair();
      const rec = this.rec || {account: this.name, identity: null};
      rec.browser = {privateKey: kp.privateKey, pub: kp.publicKey, id: await keyID(KEM_X25519, kp.publicKey), name: browserName(), time_ms: Date.now()};
      await dbPut(rec);
      this.rec = rec;
    }
    return this.rec.browser;
  };

  // refresh reads GET /v1/e2ee/keys: the set (verified; against this
  // browser's identity when it holds one), the backup and the requests.
  Account.prototype.refresh = async function () {
    const st = await api(this.base, "GET", "/v1/e2ee/keys");
    this.set = null;
    this.backup = "";
    this.requests = [];
    if (!st) { return this; }
    const ident = this.rec && this.rec.identity ? this.rec.identity.pub : null;
    if (st.signed) {
      const set = await parseSigned(st.signed, ident);
      // A receiver must not roll this browser back to an older set (one
      // with a removed key, to be signed again with a new version).
      const seen = this.rec && this.rec.seenVersion || 0;
      if (set.version < seen) { fail("the receiver gave key set version " + set.version + ", older than version " + seen + " this browser has seen"); }
      if (this.rec && this.rec.browser && set.version > seen) {
        this.rec.seenVersion = set.version;
        await dbPut(this.rec);
      }
      this.set = set;
    }
    this.backup = st.backup || "";
    const reqs = [];
    for (const r of st.requests || []) {
      const pub = fromB64u(r.pub, "request pub");
      reqs.push({id: r.id, kem: r.kem, pub: pub, keyID: await keyID(r.kem, pub), name: String(r.name || ""), timeMs: r.time_ms});
    }
    this.requests = reqs;
    return this;
  };

  // status is what the account page says: "none" (no key set yet),
  // "enrolled" (this browser's key is in the set), "pending" (not in the
  // set, a request of this browser's key is), "other" (not enrolled).
  Account.prototype.status = function () {
    if (!this.set) { return "none"; }
    const b = this.rec && this.rec.browser;
    if (b && this.set.keys.some(function (k) { return k.id === b.id; })) { return "enrolled"; }
    if (b && this.requests.some(function (r) { return r.keyID === b.id; })) { return "pending"; }
    return "other";
  };
  Account.prototype.holdsIdentity = function () { return !!(this.rec && this.rec.identity); };

  // put signs keys as the next version and uploads it (with backup).
  Account.prototype.put = async function (identity, version, keys, backup) {
    const raw = await keySetBytes(identity.pub, version, keys);
    const signed = await signKeySet(identity.privateKey, raw);
    const body = {signed: signed};
    if (backup) { body.backup = b64u(backup); }
    await api(this.base, "PUT", "/v1/e2ee/keys", body);
    return this.refresh();
  };

  // setup is the first browser's: identity, browser key, recovery secret
  // and key, backup, key set version 1. Returns the recovery secret, to be
  // shown once.
  Account.prototype.setup = async function () {
    await this.refresh();
    if (this.set) { fail("this account already has a key set: join it instead"); }
    const b = await this.browserKey();
    const kp = await subtle.generateKey({name: "Ed25519"}, true, ["sign", "verify"]);
    const pub = new Uint8Array(await subtle.exportKey("raw", kp.publicKey));
    const pkcs8 = new Uint8Array(await subtle.exportKey("pkcs8", kp.privateKey));
    const secret = newRecoverySecret();
    let backup, priv;
    try {
      backup = await sealBackup(secret, pub, pkcs8);
      priv = await subtle.importKey("pkcs8", pkcs8, {name: "Ed25519"}, false, ["sign"]);
    } finally {
      pkcs8.fill(0); // the extractable key goes with kp, dropped here
    }
    const rk = await recoveryKeys(secret);
    const rkp = await deriveKeyPair(rk.kemIKM);
    const identity = {privateKey: priv, pub: pub};
    // Kept before the upload: a set on the receiver whose identity this
    // browser lost would need the recovery secret, not shown yet.
    this.rec.identity = identity;
    await dbPut(this.rec);
    await this.put(identity, 1, [
      {kem: KEM_X25519, pub: b.pub, name: b.name},
      {kem: KEM_X25519, pub: rkp.publicKey, name: "Recovery key", recovery: true},
    ], backup);
    const shown = formatRecoverySecret(secret);
    secret.fill(0);
    return shown;
  };

  function nextKeys(set) {
    return set.keys.map(function (k) { return {kem: k.kem, pub: k.pub, name: k.name, recovery: k.recovery}; });
  }

  // joinWithRecovery opens the backup with the secret, keeps the identity
  // (non-extractable) and adds this browser's key.
  Account.prototype.joinWithRecovery = async function (secretText) {
    const secret = parseRecoverySecret(secretText);
    await this.refresh();
    if (!this.set) { fail("this account has no key set to join"); }
    if (!this.backup) { fail("the receiver holds no backup for this account"); }
    const priv = await openBackup(secret, this.set.identity, fromB64u(this.backup, "backup"));
    secret.fill(0);
    const b = await this.browserKey();
    const identity = {privateKey: priv, pub: this.set.identity};
    this.rec.identity = identity;
    await dbPut(this.rec);
    if (!this.set.keys.some(function (k) { return k.id === b.id; })) {
      const keys = nextKeys(this.set);
      keys.push({kem: KEM_X25519, pub: b.pub, name: b.name});
      await this.put(identity, this.set.version + 1, keys);
    }
    return this;
  };

  // requestJoin asks to join: POST /v1/e2ee/requests with this browser's key.
  Account.prototype.requestJoin = async function () {
    const b = await this.browserKey();
    await api(this.base, "POST", "/v1/e2ee/requests", {kem: KEM_X25519, pub: b64u(b.pub), name: b.name});
    return this.refresh();
  };

  function needIdentity(a) {
    if (!a.holdsIdentity()) { fail("this browser does not hold the identity key: approve from one that does, or join with the recovery secret"); }
    if (!a.set) { fail("this account has no key set"); }
  }

  // approve signs a set adding the request's key (one of this.requests,
  // or its id) and drops the request.
  Account.prototype.approve = async function (req) {
    await this.refresh();
    needIdentity(this);
    const id = typeof req === "string" ? req : req.id;
    const r = this.requests.find(function (x) { return x.id === id; });
    if (!r) { fail("no pending request " + id); }
    if (!this.set.keys.some(function (k) { return k.id === r.keyID; })) {
      if (this.set.keys.length >= 16) { fail("the key set holds 16 keys already: remove one first"); }
      const keys = nextKeys(this.set);
      keys.push({kem: r.kem, pub: r.pub, name: r.name});
      await this.put(this.rec.identity, this.set.version + 1, keys);
    }
    await api(this.base, "DELETE", "/v1/e2ee/requests/" + encodeURIComponent(r.id));
    return this.refresh();
  };

  // removeKey signs a set without the key of id.
  Account.prototype.removeKey = async function (id) {
    await this.refresh();
    needIdentity(this);
    const keys = this.set.keys.filter(function (k) { return k.id !== id; });
    if (keys.length === this.set.keys.length) { fail("no key " + id + " in the key set"); }
    if (keys.length === 0) { fail("the key set cannot be empty"); }
    await this.put(this.rec.identity, this.set.version + 1, keys.map(function (k) { return {kem: k.kem, pub: k.pub, name: k.name, recovery: k.recovery}; }));
    return this;
  };

  // openingKeys: the owner fingerprint and this browser's key, for
  // openRecordMedia and openSealed.
  Account.prototype.openingKeys = async function () {
    if (!this.set) { await this.refresh(); }
    if (!this.set) { fail("this account has no key set"); }
    if (!this.rec || !this.rec.browser) { fail("this browser has no key for " + this.name); }
    const b = this.rec.browser;
    return {owner: await fingerprint(this.set.identity), keys: [{id: b.id, privateKey: b.privateKey, publicKey: b.pub}]};
  };
  Account.prototype.open = async function (sealed, b) {
    const o = await this.openingKeys();
    return openSealed(sealed, Object.assign({}, b, {owner: o.owner}), o.keys);
  };
  Account.prototype.openLive = async function (keyFrame, device) {
    const o = await this.openingKeys();
    return openLive(keyFrame, {owner: o.owner, device: device}, o.keys);
  };
  Account.prototype.openRecordMedia = function (envelope, spki, sealed, index) {
    return openRecordMedia(envelope, spki, sealed, index, this);
  };
  Account.prototype.forget = async function () {
    await dbDelete(this.name);
    this.rec = null;
  };

  // ---- the account page's piece ----

  // groups writes a key ID in groups of four hex digits, to compare by eye.
  function groups(id) { return String(id).match(/.{1,4}/g).join(" "); }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text != null) { e.textContent = text; }
    return e;
  }

  // renderAccountUI renders the e2ee part of the account page into root
  // for the account a (an Account, or its name): status, set up, the
  // recovery secret shown once with a download, join with the secret, ask to
  // join, pending requests with Approve, the keys with Remove.
  async function renderAccountUI(root, a) {
    const acc = typeof a === "string" ? await account(a) : a;
    let secretShown = null;
    const msg = el("p", {id: "e2ee-message", role: "status"});
    async function act(fn) {
      msg.textContent = "";
      root.querySelectorAll("button").forEach(function (x) { x.disabled = true; });
      try {
        await fn();
        await draw();
      } catch (e) {
        await draw().catch(function () {});
        msg.textContent = (e && e.message) || String(e);
        root.dataset.error = msg.textContent;
      }
    }
    async function draw() {
      try {
        await acc.refresh();
      } catch (e) {
        root.replaceChildren(el("h2", {}, "End-to-end encryption"), el("p", {id: "e2ee-message"}, (e && e.message) || String(e)));
        root.dataset.state = "error";
        return;
      }
      const st = acc.status();
      root.dataset.state = st;
      delete root.dataset.error;
      const parts = [el("h2", {}, "End-to-end encryption")];
      const b = acc.rec && acc.rec.browser;
      const says = {
        none: "Not set up: pictures from your cameras are not end-to-end encrypted.",
        enrolled: "On. This browser can open your cameras' pictures" + (acc.holdsIdentity() ? " and manage your keys." : "."),
        pending: "This browser asked to join: approve it from a browser that holds your keys, or join with the recovery secret.",
        other: "On, but this browser cannot open your pictures yet: join with the recovery secret, or ask to join.",
      };
      parts.push(el("p", {id: "e2ee-status"}, says[st]));
      if (secretShown) {
        const box = el("div", {id: "e2ee-secret-box"});
        box.append(el("p", {}, "Your recovery secret. It is shown once: write it down or download it, and keep it safe. Without it and without this browser, your pictures cannot be opened by anyone."));
        box.append(el("p", {id: "e2ee-secret", style: "font-family: monospace; font-size: 1.3em"}, secretShown));
        const dl = el("a", {id: "e2ee-download", download: "keyframe-recovery-secret-" + acc.name + ".txt"}, "Download the recovery secret");
        dl.href = URL.createObjectURL(new Blob(["keyframe recovery secret for " + acc.name + ": " + secretShown + "\n"], {type: "text/plain"}));
        const done = el("button", {id: "e2ee-secret-done", type: "button"}, "I have kept it");
        done.addEventListener("click", function () { URL.revokeObjectURL(dl.href); secretShown = null; draw(); });
        box.append(dl, " ", done);
        parts.push(box);
      }
      if (st === "none") {
        const s = el("button", {id: "e2ee-setup", type: "button"}, "Set up end-to-end encryption");
        s.addEventListener("click", function () { act(async function () { secretShown = await acc.setup(); }); });
        parts.push(s);
      }
      if (st === "other" || st === "pending") {
        const f = el("form", {id: "e2ee-join"});
        const inp = el("input", {id: "e2ee-join-secret", name: "secret", autocomplete: "off", size: "32", placeholder: "XXXXX-XXXXX-XXXXX-XXXXX-XXXXX-X"});
        const j = el("button", {id: "e2ee-join-button", type: "submit"}, "Join with the recovery secret");
        f.append(inp, " ", j);
        f.addEventListener("submit", function (ev) { ev.preventDefault(); act(function () { return acc.joinWithRecovery(inp.value); }); });
        parts.push(f);
        if (st === "other") {
          const ask = el("button", {id: "e2ee-ask", type: "button"}, "Ask to join");
          ask.addEventListener("click", function () { act(function () { return acc.requestJoin(); }); });
          parts.push(ask);
        }
        if (b) { parts.push(el("p", {id: "e2ee-own-key"}, "This browser's key: " + groups(b.id) + " (compare all of it with the request on the approving browser)")); }
      }
      if (acc.set && acc.holdsIdentity() && acc.requests.length) {
        parts.push(el("h3", {}, "Browsers asking to join"));
        const ul = el("ul", {id: "e2ee-requests"});
        acc.requests.forEach(function (r) {
          // The whole key ID (128 bits): a shorter prefix could be ground
          // by a receiver that swaps in a key of its own with a matching
          // prefix (2^32 tries for 8 hex digits).
          const li = el("li", {"data-key": r.keyID}, r.name + " (key " + groups(r.keyID) + ") ");
          const ap = el("button", {type: "button", "data-approve": r.id}, "Approve");
          ap.addEventListener("click", function () { act(function () { return acc.approve(r.id); }); });
          li.append(ap);
          ul.append(li);
        });
        parts.push(ul);
      }
      if (acc.set) {
        parts.push(el("h3", {}, "Keys your pictures are sealed to (version " + acc.set.version + ")"));
        const ul = el("ul", {id: "e2ee-keys"});
        acc.set.keys.forEach(function (k) {
          const mine = b && k.id === b.id;
          const li = el("li", {"data-key": k.id}, (k.name || "(no name)") + " (key " + groups(k.id) + ")" + (mine ? ", this browser" : "") + " ");
          if (acc.holdsIdentity() && !mine && !k.recovery) {
            const rm = el("button", {type: "button", "data-remove": k.id}, "Remove");
            rm.addEventListener("click", function () { act(function () { return acc.removeKey(k.id); }); });
            li.append(rm);
          }
          ul.append(li);
        });
        parts.push(ul);
      }
      parts.push(msg);
      root.replaceChildren.apply(root, parts);
    }
    await draw();
    return acc;
  }

  window.KFE2EE = Object.freeze({
    SEALED_TYPE: SEALED_TYPE,
    KEM_X25519: KEM_X25519,
    util: Object.freeze({hex: hex, fromHex: fromHex, b64u: b64u, fromB64u: fromB64u, concat: concat, sha256: sha256, hkdf: hkdf, base32: function (b) { return base32(bytes(b), RFC4648); }}),
    hpke: Object.freeze({
      labeledExtract: function (salt, label, ikm) { return labeledExtract(SUITE_HPKE, bytes(salt), label, bytes(ikm)); },
      labeledExpand: function (prk, label, info, length) { return labeledExpand(SUITE_HPKE, bytes(prk), label, bytes(info), length); },
      deriveKeyPair: deriveKeyPair,
      generateKeyPair: generateKeyPair,
      setupBaseR: setupBaseR,
      setupBaseS: setupBaseS,
      open: hpkeOpen,
      seal: hpkeSeal,
    }),
    keyID: keyID,
    fingerprint: fingerprint,
    deviceID: function (spki) { return deviceID(bytes(spki)); },
    binding: binding,
    parseSealed: parseSealed,
    openSealed: openSealed,
    openLive: openLive,
    verifyRecord: verifyRecord,
    checkMedia: checkMedia,
    checkFrames: checkFrames,
    openRecordMedia: openRecordMedia,
    formatRecoverySecret: function (b) { return formatRecoverySecret(bytes(b)); },
    parseRecoverySecret: parseRecoverySecret,
    recoveryKeyPair: async function (secretText) { return deriveKeyPair((await recoveryKeys(parseRecoverySecret(secretText))).kemIKM); },
    parseSigned: parseSigned,
    keySetBytes: keySetBytes,
    signKeySet: signKeySet,
    browserName: browserName,
    account: account,
    renderAccountUI: renderAccountUI,
  });

  // The account page: <div id="e2ee" data-account="NAME"></div>.
  function auto() {
    const root = document.getElementById("e2ee");
    if (root && root.dataset.account) {
      renderAccountUI(root, root.dataset.account).catch(function (e) { root.dataset.state = "error"; root.textContent = (e && e.message) || String(e); });
    }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", auto); } else { auto(); }
})();
