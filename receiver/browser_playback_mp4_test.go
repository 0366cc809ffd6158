package receiver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/internal/browsertest"
)

// TestBrowserClipMP4: in a real browser the owner's event page plays an
// H.264 clip (libx264 access units signed into segment records) in its
// video element from clip.mp4: the video decodes (videoWidth 320, no
// error), playing advances currentTime, the label and the bar follow it
// (pre-roll, then the trigger frame), and scrubbing seeks it. Another
// owner and a signed-out browser get neither the page nor the MP4.
// Screenshots: mp4-playing, mp4-trigger, mp4-other-owner.
func TestBrowserClipMP4(t *testing.T) {
	const nseg, perSeg, preRoll = 3, 10, 10 // 3 s at 10 fps, 1 s of pre-roll
	aus := x264AccessUnits(t, nseg*perSeg, 10)
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	c := d.newH264Clip(t, "porch-h264", 1, aus, nseg, perSeg, preRoll, nil)
	c.upload(e, true)

	ctx := browsertest.New(t)
	signInTab(t, ctx, e, "alice")
	eventURL := e.hs.URL + "/events/" + d.id + "/porch-h264"
	if resp := browsertest.Response(t, ctx, chromedp.Navigate(eventURL)); resp.Status != http.StatusOK {
		t.Fatalf("event page: %d", resp.Status)
	}
	if can := browsertest.Run(t, ctx, chromedp.Evaluate[string](`document.createElement("video").canPlayType('video/mp4; codecs="avc1.42E01E"')`)); can == "" {
		t.Fatal("this chromium cannot play H.264 in MP4 (canPlayType is empty)")
	}
	type state struct {
		Time   float64 `json:"time"`
		Width  int     `json:"width"`
		Error  string  `json:"error"`
		Loaded string  `json:"loaded"`
		Phase  string  `json:"phase"`
		Scrub  string  `json:"scrub"`
	}
	read := func() state {
		return browsertest.Run(t, ctx, chromedp.Evaluate[state](`(() => { const v = document.getElementById("clipvideo"), l = document.getElementById("cliptime");
			return {time: v.currentTime, width: v.videoWidth, error: v.error ? (v.error.code + " " + v.error.message) : (document.getElementById("player").dataset.error || ""),
				loaded: document.getElementById("player").dataset.loaded || "", phase: l.dataset.phase + " " + l.textContent, scrub: document.getElementById("scrub").value} })()`))
	}
	browsertest.Run(t, ctx, chromedp.Poll[bool](`(() => { const v = document.getElementById("clipvideo"); if (v.error) throw new Error("video error " + v.error.code + " " + v.error.message); return v.readyState >= 2 && v.videoWidth > 0 })()`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	if s := read(); s.Width != 320 || s.Error != "" || s.Loaded != "video" || !strings.HasPrefix(s.Phase, "preroll frame 1 of 30") {
		t.Errorf("loaded: %+v, want videoWidth 320, no error, the first pre-roll frame", s)
	}

	// Play (a click, as a person would): the time advances, into the
	// trigger.
	browsertest.Do(t, ctx, chromedp.Click(chromedp.CSS(`#play`)))
	browsertest.Run(t, ctx, chromedp.Poll[bool](`(() => { const v = document.getElementById("clipvideo"); if (v.error) throw new Error("video error " + v.error.code); return v.currentTime > 1.2 && document.getElementById("cliptime").dataset.phase === "after" })()`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	s := read()
	if s.Error != "" || s.Width != 320 || !strings.HasPrefix(s.Phase, "after ") {
		t.Errorf("playing: %+v, want no error and past the trigger", s)
	}
	browsertest.Screenshot(t, ctx, "mp4-playing")

	// Scrub to the trigger: the video seeks to 1.0 s (its time 0 is the
	// clip's first frame, 1 s of pre-roll before the trigger).
	browsertest.Do(t, ctx, chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById("scrub"); s.value = "0"; s.dispatchEvent(new Event("input")) })()`))
	browsertest.Run(t, ctx, chromedp.Poll[bool](`(() => { const v = document.getElementById("clipvideo"); return v.paused && !v.seeking && Math.abs(v.currentTime - 1.0) < 0.001 && v.readyState >= 2 })()`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	if s := read(); !strings.HasPrefix(s.Phase, "trigger frame 11 of 30") || s.Scrub != "0" || s.Error != "" {
		t.Errorf("scrubbed to the trigger: %+v", s)
	}
	browsertest.Screenshot(t, ctx, "mp4-trigger")
	// The marks on the bar: the pre-roll a third of it, the trigger there.
	type marks struct{ Preroll, Trigger, Bar float64 }
	m := browsertest.Run(t, ctx, chromedp.Evaluate[marks](`(() => { const b = document.getElementById("timeline").getBoundingClientRect(), p = document.getElementById("preroll").getBoundingClientRect(), g = document.getElementById("trigger").getBoundingClientRect(); return {preroll: p.width, trigger: g.left + g.width / 2 - b.left, bar: b.width} })()`))
	if want := m.Bar * 10 / 29; m.Preroll < want-2 || m.Preroll > want+2 || m.Trigger < want-2 || m.Trigger > want+2 {
		t.Errorf("marks: pre-roll %.1f px wide, trigger at %.1f px of a %.1f px bar; want both at %.1f", m.Preroll, m.Trigger, m.Bar, want)
	}

	// Bob, in his own browser context, and a signed-out one: nothing.
	bob := browsertest.NewBrowserContext(t, ctx)
	signInTab(t, bob, e, "bob")
	anon := browsertest.NewBrowserContext(t, ctx)
	for _, p := range []string{"", "/clip.mp4"} {
		for who, tab := range map[string]context.Context{"bob": bob, "signed out": anon} {
			if resp := browsertest.Response(t, tab, chromedp.Navigate(eventURL+p)); resp.Status == http.StatusOK {
				t.Errorf("%s: %s%s: 200", who, eventURL, p)
			}
		}
	}
	// Bob's own page pointing a video element at alice's clip: no picture.
	browsertest.Do(t, bob, chromedp.Navigate(e.hs.URL+"/"))
	got := browsertest.Run(t, bob, chromedp.Evaluate[string](fmt.Sprintf(`new Promise(r => { const v = document.createElement("video"); v.muted = true;
		v.onerror = () => r("error " + (v.error && v.error.code)); v.onloadeddata = () => r("loaded " + v.videoWidth); v.src = %q; document.body.append(v); })`, eventURL+"/clip.mp4"), chromedp.EvalAwaitPromise))
	if !strings.HasPrefix(got, "error") {
		t.Errorf("bob's video element given alice's clip.mp4: %s", got)
	}
	browsertest.Screenshot(t, bob, "mp4-other-owner")
}
