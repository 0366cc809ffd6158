package receiver

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/internal/browsertest"
	"github.com/keyframe-cam/keyframe/provenance"
)

// TestBrowserNotFromACamera: in a real browser the owner's page shows the
// "not from a camera" mark on the row of a record from the synthetic scene
// and not on the camera's; screenshot "not-from-a-camera".
func TestBrowserNotFromACamera(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	for i, src := range []*provenance.Source{
		{Kind: provenance.SourceV4L2, Name: "HD Pro Webcam C920", Bus: "usb-0000:01:00.0-1.2"},
		{Kind: provenance.SourceSynthetic},
	} {
		thumb := realJPEG(t)
		p := d.payload(src.Kind+"-ev", provenance.KindStart, uint64(i+1), thumb)
		p.Source = src
		if code, reply := e.put("/v1/events/"+p.Event+"/start", bundle(t, d.sign(t, p), thumb)); code != http.StatusCreated {
			t.Fatalf("upload %s: %d %s", p.Event, code, reply)
		}
	}
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
	rows := browsertest.Run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#events tr")].slice(1).map(r => r.innerText)`))
	if len(rows) != 2 {
		t.Fatalf("%d event rows, want 2: %q", len(rows), rows)
	}
	for _, r := range rows {
		synthetic := strings.Contains(r, "synthetic-ev")
		if strings.Contains(r, "not from a camera") != synthetic {
			t.Errorf("row %q: the mark is shown %v, want %v", r, !synthetic, synthetic)
		}
		if !synthetic && !strings.Contains(r, "camera HD Pro Webcam C920") {
			t.Errorf("the camera's row does not name it: %q", r)
		}
	}
	browsertest.Screenshot(t, ctx, "not-from-a-camera")
}
