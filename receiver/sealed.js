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

  function scan() {
    document.querySelectorAll("img.sealed[data-sealed]").forEach(open);
  }
  scan();
  // The event list swaps in new rows as events arrive (events.js).
  new MutationObserver(scan).observe(document.body, {childList: true, subtree: true});
})();
