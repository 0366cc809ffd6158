"use strict";
// The event page's clip player: it fetches each segment's frames (the
// segment's media object, the JPEGs concatenated), cuts them by the sizes
// the signed records list, and draws the frame of each moment on a canvas
// at its signed time (t_us, relative to the trigger). The bar scrubs.
// An H.264 clip plays in the page's video element instead (clip.mp4, made
// by the receiver, whose time 0 is the clip's first frame): the bar and
// the label follow it, and scrubbing seeks it.
(function () {
  var box = document.getElementById("player");
  if (!box || !box.dataset.clip) { return; }
  var m = JSON.parse(box.dataset.clip);
  if (m.video) { videoPlayer(); return; }
  var canvas = document.getElementById("clipcanvas");
  var ctx = canvas.getContext("2d");
  var scrub = document.getElementById("scrub");
  var play = document.getElementById("play");
  var label = document.getElementById("cliptime");
  var load = document.getElementById("clipload");

  // Every frame in clip order: its time, segment and place in its media.
  var frames = [];
  m.segments.forEach(function (s, si) {
    var off = 0;
    s.frames.forEach(function (f) {
      frames.push({t: f[1], seg: si, off: off, size: f[0]});
      off += f[0];
    });
  });
  var blobs = new Array(m.segments.length);
  var offsets = {}; // segment index: each frame's offset in its media, as the player cuts it
  m.segments.forEach(function (s) {
    var off = 0;
    offsets[s.index] = s.frames.map(function (f) { var o = off; off += f[0]; return o; });
  });
  var loaded = 0, failed = 0;

  // The last frame at or before t (microseconds), by binary search.
  function frameAt(t) {
    var lo = 0, hi = frames.length - 1;
    if (t <= frames[0].t) { return 0; }
    while (lo < hi) {
      var mid = (lo + hi + 1) >> 1;
      if (frames[mid].t <= t) { lo = mid; } else { hi = mid - 1; }
    }
    return lo;
  }

  function fmt(us) {
    var s = (Math.abs(us) / 1e6).toFixed(3);
    return (us < 0 ? "\u2212" : "+") + s + " s";
  }

  var shown = -1, want = -1, busy = false;
  function show(i) {
    want = i;
    var f = frames[i];
    var what = f.t < 0 ? "pre-roll" : (f.t === m.trigger_us ? "trigger frame" : "after the trigger");
    label.textContent = "frame " + (i + 1) + " of " + frames.length + ", " + fmt(f.t) + " (" + what + ")";
    label.dataset.phase = f.t < 0 ? "preroll" : (f.t === m.trigger_us ? "trigger" : "after");
    draw();
  }
  function draw() {
    if (busy || want === shown || want < 0) { return; }
    var i = want, f = frames[i], b = blobs[f.seg];
    if (!b) { return; } // drawn when its segment arrives
    busy = true;
    createImageBitmap(b.slice(f.off, f.off + f.size, "image/jpeg")).then(function (bmp) {
      if (canvas.dataset.sized !== "1") { // the receiver could not read a sealed clip's size
        canvas.dataset.sized = "1";
        if (bmp.width && (canvas.width !== bmp.width || canvas.height !== bmp.height)) { canvas.width = bmp.width; canvas.height = bmp.height; }
      }
      ctx.drawImage(bmp, 0, 0, canvas.width, canvas.height);
      bmp.close();
      shown = i;
      canvas.dataset.frame = String(i);
    }).catch(function () {
      shown = i;
      canvas.dataset.frame = "error";
    }).finally(function () {
      busy = false;
      draw();
    });
  }

  // Playing: the wall clock since play, added to where it began.
  var playing = false, t0 = 0, wall0 = 0;
  function tick(now) {
    if (!playing) { return; }
    var t = t0 + (now - wall0) * 1000;
    if (t >= m.last_us) {
      t = m.last_us;
      stop();
    }
    scrub.value = String(Math.round(t / 1000));
    var i = frameAt(t);
    if (i !== want) { show(i); }
    if (playing) { requestAnimationFrame(tick); }
  }
  function start() {
    var t = Number(scrub.value) * 1000;
    if (t >= m.last_us) { t = m.first_us; }
    t0 = t;
    wall0 = performance.now();
    playing = true;
    play.textContent = "Pause";
    requestAnimationFrame(tick);
  }
  function stop() {
    playing = false;
    play.textContent = "Play";
  }
  play.addEventListener("click", function () { if (playing) { stop(); } else { start(); } });
  scrub.addEventListener("input", function () {
    stop();
    show(frameAt(Number(scrub.value) * 1000));
  });

  // An end-to-end encrypted segment (docs/e2ee.md): its envelope's
  // signature and the sealed bytes' hash are checked and the frames opened
  // with this browser's key (KFE2EE); then every frame is checked against
  // the signed record (size, SHA-256, time) before any is drawn.
  function bytesOf(url) {
    return fetch(url, {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error(url + ": the receiver answered " + r.status); }
      return r.arrayBuffer();
    }).then(function (b) { return new Uint8Array(b); });
  }
  var acct = null; // the signed-in account's keys in this browser
  function openSealed(s) {
    if (!window.KFE2EE) { return Promise.reject(new Error("the e2ee script is not loaded")); }
    if (!acct) { acct = KFE2EE.account(document.body.dataset.account || ""); }
    var rec;
    return Promise.all([bytesOf(s.envelope), bytesOf(s.url), acct]).then(function (got) {
      return KFE2EE.verifyRecord(got[0], null).then(function (r) {
        rec = r;
        if (r.device !== box.dataset.device) { throw new Error("segment " + s.index + " is signed by " + r.device + ", not by this page's camera"); }
        var sg = r.payload.get("segment");
        if (r.event !== box.dataset.event || r.kind !== "segment" || !(sg instanceof Map) || Number(sg.get("index")) !== s.index) {
          throw new Error("segment " + s.index + ": the record is " + r.kind + " " + (sg instanceof Map ? sg.get("index") : "") + " of event " + r.event + ", not this page's");
        }
        return KFE2EE.openRecordMedia(got[0], null, got[1], 0, got[2]);
      });
    }).then(function (pt) {
      return KFE2EE.checkFrames(rec, pt).then(function (signed) {
        // The page's list (what the player cuts by) must be the signed one.
        if (signed.length !== s.frames.length) { throw new Error("segment " + s.index + ": the page lists " + s.frames.length + " frames, the signed record " + signed.length); }
        signed.forEach(function (f, k) {
          if (f.offset !== offsets[s.index][k] || f.size !== s.frames[k][0] || Number(f.tUs) !== s.frames[k][1]) {
            throw new Error("segment " + s.index + " frame " + k + ": the page's size or time differs from the signed record");
          }
        });
        box.dataset.opened = String(Number(box.dataset.opened || 0) + 1);
        return new Blob([pt], {type: "application/octet-stream"});
      });
    });
  }

  function progress() {
    load.textContent = loaded + " of " + m.segments.length + " segment(s) loaded" + (failed ? ", " + failed + " failed" : "");
    box.dataset.loaded = String(loaded);
  }
  progress();
  show(0);
  // One segment at a time, in order: the first frames can be drawn early.
  m.segments.reduce(function (p, s, si) {
    return p.then(function () {
      return (s.sealed ? openSealed(s) : fetch(s.url, {credentials: "same-origin", cache: "no-store"}).then(function (r) {
        if (!r.ok) { throw new Error(r.status); }
        return r.blob();
      })).then(function (b) {
        blobs[si] = b;
        loaded++;
      }).catch(function (err) {
        failed++;
        box.dataset.error = String(err && err.message || err);
      }).finally(function () {
        progress();
        shown = -1;
        draw();
      });
    });
  }, Promise.resolve());

  function videoPlayer() {
    var video = document.getElementById("clipvideo");
    var scrub = document.getElementById("scrub");
    var play = document.getElementById("play");
    var label = document.getElementById("cliptime");
    var load = document.getElementById("clipload");
    var times = [];
    m.segments.forEach(function (s) { s.frames.forEach(function (f) { times.push(f[1]); }); });
    function frameAt(t) {
      var lo = 0, hi = times.length - 1;
      if (t <= times[0]) { return 0; }
      while (lo < hi) {
        var mid = (lo + hi + 1) >> 1;
        if (times[mid] <= t) { lo = mid; } else { hi = mid - 1; }
      }
      return lo;
    }
    function fmt(us) {
      return (us < 0 ? "\u2212" : "+") + (Math.abs(us) / 1e6).toFixed(3) + " s";
    }
    // The signed time (microseconds from the trigger) of the video's now.
    function now() { return m.first_us + Math.round(video.currentTime * 1e6); }
    function update() {
      var t = now(), i = frameAt(t), ft = times[i];
      var what = ft < 0 ? "pre-roll" : (ft === m.trigger_us ? "trigger frame" : "after the trigger");
      label.textContent = "frame " + (i + 1) + " of " + times.length + ", " + fmt(ft) + " (" + what + ")";
      label.dataset.phase = ft < 0 ? "preroll" : (ft === m.trigger_us ? "trigger" : "after");
      scrub.value = String(Math.round(t / 1000));
    }
    video.addEventListener("timeupdate", update);
    video.addEventListener("seeked", update);
    // While playing, the label and the bar follow every painted frame
    // (timeupdate alone comes four times a second).
    function follow() {
      update();
      if (!video.paused && !video.ended) { requestAnimationFrame(follow); }
    }
    video.addEventListener("play", function () { play.textContent = "Pause"; requestAnimationFrame(follow); });
    video.addEventListener("pause", function () { play.textContent = "Play"; });
    video.addEventListener("loadeddata", function () { load.textContent = "loaded"; box.dataset.loaded = "video"; });
    video.addEventListener("error", function () {
      var e = video.error;
      load.textContent = "the clip does not play" + (e ? ": " + (e.message || "error " + e.code) : "");
      box.dataset.error = load.textContent;
    });
    play.addEventListener("click", function () {
      if (video.paused) { video.play().catch(function (err) { box.dataset.error = String(err && err.message || err); }); } else { video.pause(); }
    });
    scrub.addEventListener("input", function () {
      video.pause();
      video.currentTime = Math.max(0, (Number(scrub.value) * 1000 - m.first_us) / 1e6);
    });
    update();
  }
})();
