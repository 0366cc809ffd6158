package receiver

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/internal/browsertest"
)

// signInTab makes the owner account name and signs the tab in with a
// one-time sign-in link.
func signInTab(t *testing.T, ctx context.Context, e *testEnv, name string) {
	t.Helper()
	acc := Accounts{Dir: e.dir}
	if _, err := acc.Add(name, RoleOwner); err != nil {
		t.Fatal(err)
	}
	l, err := acc.SignInLink(name)
	if err != nil {
		t.Fatal(err)
	}
	browsertest.Do(t, ctx, chromedp.Navigate(e.hs.URL+l.Path), chromedp.WaitVisible(chromedp.CSS(`form[action="/claims"]`)))
}

// TestBrowserClipPlayback: in a real browser the owner's event page plays
// the clip uploaded through the upload route: the canvas shows the frame
// of each scrub position (the test frames' moving square is where that
// frame has it, and two positions' screenshots differ), the pre-roll and
// the trigger are marked on the bar, playing advances the frames, and the
// page's download link gives a Matroska file ffprobe counts every frame
// of. Another owner and a signed-out browser get nothing. Screenshots:
// clip-start, clip-trigger, clip-after, clip-390, other-owner.
func TestBrowserClipPlayback(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	const nseg, perSeg, preRoll = 3, 8, 8 // 2.4 s at 10 fps, 0.8 s of pre-roll
	c := d.newTestClip(t, "porch-clip", 1, nseg, perSeg, preRoll)
	c.upload(e, true)

	ctx := browsertest.New(t)
	signInTab(t, ctx, e, "alice")
	eventURL := e.hs.URL + "/events/" + d.id + "/porch-clip"
	began := time.Now()
	if resp := browsertest.Response(t, ctx, chromedp.Navigate(eventURL)); resp.Status != http.StatusOK {
		t.Fatalf("event page: %d", resp.Status)
	}
	browsertest.Run(t, ctx, chromedp.Poll[bool](fmt.Sprintf(`document.getElementById("player").dataset.loaded === "%d" && document.getElementById("clipcanvas").dataset.frame === "0"`, nseg),
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	loadTime := time.Since(began)

	// The frame on the canvas: frame k's square is at x 10+12k (of 320),
	// rows 90 to 150; the canvas is drawn at the frames' own size.
	squareAt := func(k int) string {
		return fmt.Sprintf(`(() => { const d = document.getElementById("clipcanvas").getContext("2d").getImageData(%d, 120, 1, 1).data; return d[0] > 200 && d[1] > 180 && d[2] < 140 })()`, 10+12*k+20)
	}
	scrubTo := func(ms int, frame int) []byte {
		t.Helper()
		browsertest.Do(t, ctx, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => { const s = document.getElementById("scrub"); s.value = "%d"; s.dispatchEvent(new Event("input")) })()`, ms)))
		browsertest.Run(t, ctx, chromedp.Poll[bool](fmt.Sprintf(`document.getElementById("clipcanvas").dataset.frame === "%d"`, frame),
			chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
		if !browsertest.Run(t, ctx, chromedp.Evaluate[bool](squareAt(frame))) {
			t.Errorf("scrubbed to %d ms: the canvas does not show frame %d's square", ms, frame)
		}
		return browsertest.Run(t, ctx, chromedp.Screenshot(chromedp.CSS(`#clipcanvas`)))
	}
	phase := func() string {
		return browsertest.Run(t, ctx, chromedp.Evaluate[string](`document.getElementById("cliptime").dataset.phase + " " + document.getElementById("cliptime").textContent`))
	}
	start := scrubTo(-800, 0)
	if p := phase(); !strings.HasPrefix(p, "preroll ") {
		t.Errorf("at the clip's start: %q, want the pre-roll", p)
	}
	browsertest.Screenshot(t, ctx, "clip-start")
	trig := scrubTo(0, preRoll)
	if p := phase(); !strings.HasPrefix(p, "trigger ") || !strings.Contains(p, "trigger frame") {
		t.Errorf("at 0 ms: %q, want the trigger frame", p)
	}
	browsertest.Screenshot(t, ctx, "clip-trigger")
	after := scrubTo(1250, preRoll+12) // between frames 12 and 13 after the trigger: 12's
	if bytes.Equal(start, trig) || bytes.Equal(trig, after) {
		t.Error("screenshots of the canvas at different scrub positions are the same")
	}
	browsertest.Screenshot(t, ctx, "clip-after")

	// The marks: the pre-roll from the bar's start to the trigger, at 0.8
	// of the clip's 2.3 s.
	type marks struct{ Preroll, Trigger, Bar float64 }
	m := browsertest.Run(t, ctx, chromedp.Evaluate[marks](`(() => { const b = document.getElementById("timeline").getBoundingClientRect(), p = document.getElementById("preroll").getBoundingClientRect(), g = document.getElementById("trigger").getBoundingClientRect(); return {preroll: p.width, trigger: g.left + g.width / 2 - b.left, bar: b.width} })()`))
	if want := m.Bar * 8 / 23; m.Preroll < want-2 || m.Preroll > want+2 || m.Trigger < want-2 || m.Trigger > want+2 {
		t.Errorf("marks: pre-roll %.1f px wide, trigger at %.1f px of a %.1f px bar; want both at %.1f", m.Preroll, m.Trigger, m.Bar, want)
	}

	// Play from the start: the frames advance by themselves.
	scrubTo(-800, 0)
	browsertest.Do(t, ctx, chromedp.Click(chromedp.CSS(`#play`)))
	browsertest.Run(t, ctx, chromedp.Poll[bool](`Number(document.getElementById("clipcanvas").dataset.frame) >= 5`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))

	// The download link, fetched by the page with its session, is a
	// Matroska file of every frame.
	b64 := browsertest.Run(t, ctx, chromedp.Evaluate[string](`fetch(document.getElementById("mkv").href, {credentials: "same-origin"}).then(r => r.ok ? r.arrayBuffer() : Promise.reject(r.status)).then(b => { let s = ""; new Uint8Array(b).forEach(x => s += String.fromCharCode(x)); return btoa(s) })`, chromedp.EvalAwaitPromise))
	mkvb, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := ffprobeFrames(t, mkvb); ok && n != c.frameCount() {
		t.Errorf("the downloaded clip: ffprobe counts %d frames, want %d", n, c.frameCount())
	}

	// A phone's width: the player fits.
	browsertest.Do(t, ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)), chromedp.Navigate(eventURL))
	browsertest.Run(t, ctx, chromedp.Poll[bool](`document.getElementById("clipcanvas").dataset.frame === "0"`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	if w := browsertest.Run(t, ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 390 {
		t.Errorf("the event page with a clip is %d px wide on a 390 px screen", w)
	}
	browsertest.Screenshot(t, ctx, "clip-390")

	// Bob, in his own browser context, and a signed-out one: nothing.
	bob := browsertest.NewBrowserContext(t, ctx)
	signInTab(t, bob, e, "bob")
	anon := browsertest.NewBrowserContext(t, ctx)
	for _, p := range []string{"", "/clip.mkv", "/records.zip"} {
		for who, tab := range map[string]context.Context{"bob": bob, "signed out": anon} {
			resp := browsertest.Response(t, tab, chromedp.Navigate(eventURL+p))
			if resp.Status == http.StatusOK {
				t.Errorf("%s: %s%s: 200", who, eventURL, p)
			}
		}
	}
	if resp := browsertest.Response(t, bob, chromedp.Navigate(e.hs.URL+"/media/"+d.id+"/porch-clip/segment-0/0")); resp.Status != http.StatusNotFound {
		t.Errorf("bob: a segment's frames: %d, want 404", resp.Status)
	}
	browsertest.Screenshot(t, bob, "other-owner")
	t.Logf("event page with a %d-frame clip: loaded and first frame drawn in %s; clip.mkv %d bytes", c.frameCount(), loadTime.Round(time.Millisecond), len(mkvb))
}
