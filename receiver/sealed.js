"use strict";
// Opens the end-to-end encrypted pictures of an owner's pages
// (docs/e2ee.md): every <img class="sealed"> names its record's envelope and
// its sealed media object. The record's signature and the sealed bytes'
// hash are checked (KFE2EE), then the object is opened with this browser's
// key, and only then shown, from a blob URL. Nothing is shown that did not
// pass; the reason is written beside the picture instead.
(function () {
  if (!window.KFE2EE) { return; }

  function bytes(url) {
    return fetch(url, {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error(url + ": the receiver answered " + r.status); }
      return r.arrayBuffer();
    }).then(function (b) { return new Uint8Array(b); });
  }

  function state(img, text, cls) {
    var s = img.parentNode && img.parentNode.parentNode ? img.parentNode.parentNode.querySelector(".sealedstate") : null;
    if (!s) { return; }
    s.textContent = text;
    s.className = "sealedstate small " + cls;
  }

  function open(img) {
    if (img.dataset.state) { return; }
    img.dataset.state = "opening";
    state(img, "end-to-end encrypted: opening…", "muted");
    Promise.all([bytes(img.dataset.envelope), bytes(img.dataset.sealed), account()]).then(function (got) {
      return KFE2EE.verifyRecord(got[0], null).then(function (rec) {
        if (rec.device !== img.dataset.device) { throw new Error("the record is signed by " + rec.device + ", not by this page's camera " + img.dataset.device); }
        // The page's event and record: a receiver could otherwise show
        // another, validly signed picture of the same camera in its place.
        if (rec.event !== img.dataset.event || rec.kind !== img.dataset.kind) { throw new Error("the record is the " + rec.kind + " of event " + rec.event + ", not the " + img.dataset.kind + " of this page's event " + img.dataset.event); }
        return KFE2EE.openRecordMedia(got[0], null, got[1], Number(img.dataset.index), got[2]);
      });
    }).then(function (plaintext) {
      img.src = URL.createObjectURL(new Blob([plaintext], {type: "image/jpeg"}));
      img.dataset.state = "open";
      state(img, "end-to-end encrypted; signature checked and opened in this browser", "ok");
    }).catch(function (err) {
      img.dataset.state = "failed";
      img.dataset.error = String(err && err.message || err);
      state(img, "not shown: " + img.dataset.error + (/no key|no key set/.test(img.dataset.error) ? " (set up end-to-end encryption, or join with your recovery secret, on the account page: /sessions)" : ""), "warn");
    });
  }

  // The signed-in account's keys in this browser (KFE2EE.account), once.
  var acct = null;
  function account() {
    if (!acct) {
      var name = document.body.dataset.account;
      acct = name ? KFE2EE.account(name) : Promise.reject(new Error("the page names no account"));
    }
    return acct;
  }

  // The claim page (docs/e2ee.md §5): the code's last 20 characters before
  // its check character commit to the owner's identity, and the receiver
  // made the code. This browser checks that they name the identity it holds
  // (or, if it holds none, the one of the key set it verified), and hides
  // the code otherwise: a receiver whose stored key set was replaced would
  // hand out codes that pin someone else's identity.
  var CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  function commitChars(fp) {
    var out = "";
    for (var i = 0; i < 20; i++) {
      var v = 0;
      for (var j = 0; j < 5; j++) {
        var bit = i * 5 + j;
        v = (v << 1) | ((fp[bit >> 3] >> (7 - (bit & 7))) & 1);
      }
      out += CROCKFORD[v];
    }
    return out;
  }
  function checkClaim(box) {
    var code = box.dataset.code.replace(/-/g, ""), verdict = document.getElementById("claimverdict");
    function say(text, cls, hide) {
      verdict.textContent = text;
      verdict.className = cls;
      box.dataset.state = cls;
      if (hide) { document.querySelectorAll(".code").forEach(function (e) { e.hidden = true; }); }
    }
    account().then(function (a) {
      // The identity this browser holds is its own truth; only a browser
      // holding none asks the receiver for the key set (and verifies it).
      var local = a.holdsIdentity() ? a.rec.identity.pub : null;
      return (local ? Promise.resolve(local) : a.refresh().then(function () { return a.set && a.set.identity; })).then(function (ident) {
        if (!ident) {
          if (code.length === 50) { return say("This browser cannot check the code: it holds no key set of yours. Check it from a browser set up for end-to-end encryption before using it.", "warn", false); }
          return say("", "muted", false);
        }
        if (code.length !== 50) {
          if (box.dataset.plain === "true") { return say("A code without end-to-end encryption, as you asked: the camera's pictures will be readable by this receiver.", "warn", false); }
          return say("Refused by this browser: you have end-to-end encryption, but the receiver gave a code without it. Do not use this code.", "warn", true);
        }
        return KFE2EE.fingerprint(ident).then(function (fp) {
          if (commitChars(fp) !== code.slice(29, 49)) {
            return say("Refused by this browser: the code names an identity that is not yours. Do not use this code; the receiver's key data may have been changed.", "warn", true);
          }
          say("Checked by this browser: the code names your identity key" + (local ? " (the one this browser holds)" : " (of the key set this browser verified; it does not hold the identity itself)") + ".", "ok", false);
        });
      });
    }).catch(function (err) {
      say("This browser could not check the code, so it is hidden: " + String(err && err.message || err), "warn", code.length === 50);
    });
  }

  function scan() {
    document.querySelectorAll("img.sealed[data-sealed]").forEach(open);
  }
  var claim = document.getElementById("claimcheck");
  if (claim) { checkClaim(claim); }
  scan();
  // The event list swaps in new rows as events arrive (events.js).
  new MutationObserver(scan).observe(document.body, {childList: true, subtree: true});
})();
