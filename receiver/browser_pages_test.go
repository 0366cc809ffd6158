package receiver

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/internal/browsertest"
	"github.com/keyframe-cam/keyframe/provenance"
)

// sceneJPEG is a 320×240 frame: a dim room with a bright figure inside
// (140,60)-(200,200), the motion box the records name.
func sceneJPEG(t testing.TB, shade uint8) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 320, 240))
	for y := range 240 {
		for x := range 320 {
			c := color.RGBA{uint8(40 + x/8), uint8(50 + y/8), shade, 255}
			if x >= 140 && x < 200 && y >= 60 && y < 200 {
				c = color.RGBA{230, 200, 160, 255}
			}
			img.Set(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 85}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// uploadScene stores one record of d with a scene frame.
func uploadScene(t *testing.T, e *testEnv, d *testDevice, event, kind string, seq uint64, clk string, src *provenance.Source) {
	t.Helper()
	thumb := sceneJPEG(t, uint8(seq*20))
	p := d.payload(event, kind, seq, thumb)
	p.Motion = provenance.Motion{Frames: 9, PeakAreaPPM: 109375, Box: [4]int32{140, 60, 200, 200}, Width: 320, Height: 240}
	if kind == provenance.KindEnd {
		p.Motion.DurationMs, p.Motion.Frames = 4200, 40
	}
	p.Time.Clock = clk
	p.Source = src
	if code, reply := e.put("/v1/events/"+event+"/"+kind, bundle(t, d.sign(t, p), thumb)); code != http.StatusCreated {
		t.Fatalf("upload %s/%s: %d %s", event, kind, code, reply)
	}
}

// TestBrowserEventPages: in a real browser, at 1280 and 390 px wide, the
// owner's list shows one row per event, takes a new event live (the
// stream), opens an event page with both frames and the motion box drawn,
// fits a phone's width without scrolling sideways, and deletes an event
// with its form. Screenshots: list-1280, list-live-1280, event-1280,
// list-390, event-390, settings-390.
func TestBrowserEventPages(t *testing.T) {
	began := time.Now()
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	cam := &provenance.Source{Kind: provenance.SourceV4L2, Name: "HD Pro Webcam C920", Bus: "usb-0000:01:00.0-1.2"}
	uploadScene(t, e, d, "garden-1", provenance.KindStart, 1, provenance.ClockSynced, cam)
	uploadScene(t, e, d, "garden-1", provenance.KindEnd, 2, provenance.ClockSynced, cam)
	uploadScene(t, e, d, "porch-2", provenance.KindStart, 3, provenance.ClockUnsynced, cam)
	uploadScene(t, e, d, "porch-2", provenance.KindEnd, 4, provenance.ClockUnsynced, cam)
	uploadScene(t, e, d, "drive-3", provenance.KindStart, 5, provenance.ClockSynced, cam)

	l, err := (Accounts{Dir: e.dir}).Add("alice", RoleOwner)
	if err != nil {
		t.Fatal(err)
	}
	ctx := browsertest.New(t)
	browsertest.Do(t, ctx, chromedp.Navigate(e.hs.URL+l.Path), chromedp.WaitReady(chromedp.CSS(`input[name=confirm]`)))
	const password = "a long pass phrase for alice"
	browsertest.Do(t, ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
		chromedp.SendKeys(chromedp.CSS(`input[name=confirm]`), password),
	)
	if resp := browsertest.Response(t, ctx, chromedp.Submit(chromedp.CSS(`form`))); resp.Status != http.StatusOK {
		t.Fatalf("after choosing a password: %d", resp.Status)
	}
	rowsJS := `[...document.querySelectorAll("#events tbody tr")].map(r => r.innerText)`
	imagesLoaded := chromedp.Poll[int](`[...document.images].every(i => i.complete) && [...document.images].filter(i => i.naturalWidth > 0).length`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))
	rows := browsertest.Run(t, ctx, chromedp.Evaluate[[]string](rowsJS))
	if len(rows) != 3 {
		t.Fatalf("%d event rows, want 3 (one per event): %q", len(rows), rows)
	}
	if !strings.Contains(rows[0], "drive-3") || !strings.Contains(rows[0], "in progress") || !strings.Contains(rows[1], "unsynced clock") || !strings.Contains(rows[2], "4.2s") {
		t.Errorf("rows: %q", rows)
	}
	if n := browsertest.Run(t, ctx, imagesLoaded); n != 3 {
		t.Errorf("%d thumbnails shown, want 3", n)
	}
	browsertest.Screenshot(t, ctx, "list-1280")

	// Live: a new event appears without a reload, once the page's stream
	// is open (a record stored before it opens is not streamed).
	browsertest.Do(t, ctx, chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`))
	for i := 0; e.srv.hub.open() == 0; i++ {
		if i == 1000 {
			t.Fatal("the page opened no live stream within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	uploadScene(t, e, d, "gate-4", provenance.KindStart, 6, provenance.ClockSynced, cam)
	first := browsertest.Run(t, ctx, chromedp.Poll[string](`(() => { const r = document.querySelector("#events tbody tr"); return r && r.innerText.includes("gate-4") && window.notReloaded && r.className === "new" ? r.innerText : false })()`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	if !strings.Contains(first, "gate-4") {
		t.Errorf("the new event's row: %q", first)
	}
	browsertest.Run(t, ctx, imagesLoaded)
	browsertest.Screenshot(t, ctx, "list-live-1280")

	// The event page: both frames, the box drawn over each.
	eventURL := e.hs.URL + "/events/" + d.id + "/porch-2"
	browsertest.Do(t, ctx, chromedp.Navigate(eventURL), chromedp.WaitReady(chromedp.CSS(`#delete`)))
	if n := browsertest.Run(t, ctx, imagesLoaded); n != 2 {
		t.Errorf("event page: %d frames shown, want 2", n)
	}
	boxes := browsertest.Run(t, ctx, chromedp.Evaluate[[]float64](`[...document.querySelectorAll(".frame svg rect")].map(r => { const b = r.getBoundingClientRect(), i = r.closest("figure").querySelector("img").getBoundingClientRect(); return (b.left - i.left) / i.width })`))
	if len(boxes) != 2 {
		t.Fatalf("%d boxes drawn, want 2", len(boxes))
	}
	for _, x := range boxes {
		// The box starts at x 140 of 320 (the stroke straddles its edge).
		if x < 0.42 || x > 0.45 {
			t.Errorf("the box starts at %.3f of the image's width, want 140/320", x)
		}
	}
	text := browsertest.Run(t, ctx, chromedp.Evaluate[string](`document.body.innerText`))
	for _, want := range []string{"Trigger frame", "Best frame", "4.2s", "camera HD Pro Webcam C920", "ES256 signature", "unsynced clock", "download the signed envelope"} {
		if !strings.Contains(text, want) {
			t.Errorf("event page lacks %q", want)
		}
	}
	browsertest.Do(t, ctx, chromedp.Evaluate[chromedp.Void](`document.querySelector("details").open = true`))
	browsertest.Screenshot(t, ctx, "event-1280")

	// A phone: nothing wider than the screen.
	browsertest.Do(t, ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
	wide := `document.documentElement.scrollWidth`
	browsertest.Do(t, ctx, chromedp.Navigate(e.hs.URL+"/"), chromedp.WaitReady(chromedp.CSS(`#events`)))
	browsertest.Run(t, ctx, imagesLoaded)
	if w := browsertest.Run(t, ctx, chromedp.Evaluate[int](wide)); w > 390 {
		t.Errorf("the list is %d px wide on a 390 px screen", w)
	}
	browsertest.Screenshot(t, ctx, "list-390")
	browsertest.Do(t, ctx, chromedp.Navigate(eventURL), chromedp.WaitReady(chromedp.CSS(`#delete`)))
	browsertest.Run(t, ctx, imagesLoaded)
	if w := browsertest.Run(t, ctx, chromedp.Evaluate[int](wide)); w > 390 {
		t.Errorf("the event page is %d px wide on a 390 px screen", w)
	}
	browsertest.Screenshot(t, ctx, "event-390")

	// Delete it with its form: back on the list, without it.
	browsertest.Do(t, ctx, chromedp.Click(chromedp.CSS(`#delete input[name=confirm]`)))
	if resp := browsertest.Response(t, ctx, chromedp.Submit(chromedp.CSS(`#delete`))); resp.Status != http.StatusOK {
		t.Fatalf("after deleting: %d", resp.Status)
	}
	rows = browsertest.Run(t, ctx, chromedp.Evaluate[[]string](rowsJS))
	if len(rows) != 3 || strings.Contains(strings.Join(rows, " "), "porch-2") {
		t.Errorf("after deleting porch-2: %q", rows)
	}
	browsertest.Do(t, ctx, chromedp.Navigate(e.hs.URL+"/settings"), chromedp.WaitReady(chromedp.CSS(`#retention`)))
	browsertest.Screenshot(t, ctx, "settings-390")
	t.Logf("browser test took %s", time.Since(began).Round(time.Millisecond))
}
