package receiver

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/browsertest"
	"github.com/keyframe-cam/keyframe/provenance"
)

// sealedClip is newTestClipOf with every picture sealed by s (docs/e2ee.md
// §7): the start's and end's thumbnails, and each segment's frames, bound to
// the record's device, event, sequence number and role. The segment records
// list the plaintext frames (size, SHA-256, time).
func (d *testDevice) sealedClip(t testing.TB, s *e2ee.Sealer, event string, seq uint64, nseg, perSeg, preRoll int) *testClip {
	t.Helper()
	seal := func(seq uint64, role string, pt []byte) []byte {
		t.Helper()
		b, err := s.Seal(e2ee.Binding{Device: d.id, Event: event, Seq: seq, Role: role}, pt)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sealedRecord := func(kind string, seq uint64, thumb []byte, segments [][]byte) *record {
		sealed := seal(seq, e2ee.RoleThumbnail, thumb)
		p := d.payload(event, kind, seq, nil)
		p.Media = []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, e2ee.SealedType, sealed)}
		p.Motion = provenance.Motion{Frames: 9, PeakAreaPPM: 40000, Box: [4]int32{100, 90, 200, 150}, Width: 320, Height: 240}
		if kind == provenance.KindEnd {
			p.Motion.DurationMs = uint64(len(segments)) * 1000
		}
		p.Segments = segments
		env := d.sign(t, p)
		return &record{event: event, kind: kind, seq: seq, thumb: thumb, env: env, body: bundle(t, env, sealed)}
	}
	c := &testClip{event: event}
	c.start = sealedRecord(provenance.KindStart, seq, clipFrameJPEG(t, preRoll), nil)
	var hashes [][]byte
	k := 0
	for i := range nseg {
		seq++
		var frames [][]byte
		var list []provenance.ClipFrame
		for range perSeg {
			f := clipFrameJPEG(t, k)
			frames = append(frames, f)
			list = append(list, provenance.NewClipFrame(f, int64(k-preRoll)*100_000))
			c.all = append(c.all, f)
			k++
		}
		sealed := seal(seq, e2ee.RoleFrames, bytes.Join(frames, nil))
		p := d.payload(event, provenance.KindSegment, seq, nil)
		p.Media = []provenance.Media{provenance.NewMedia(provenance.RoleFrames, e2ee.SealedType, sealed)}
		p.Segment = &provenance.Segment{Index: uint32(i), Type: "image/jpeg", Frames: list}
		env := d.sign(t, p)
		sum := sha256.Sum256(env)
		hashes = append(hashes, sum[:])
		c.segments = append(c.segments, &record{event: event, kind: provenance.KindSegment, seq: seq, env: env, body: bundle(t, env, sealed)})
		c.frames = append(c.frames, frames)
	}
	c.end = sealedRecord(provenance.KindEnd, seq+1, clipFrameJPEG(t, preRoll+2), hashes)
	return c
}

// TestBrowserE2EEEventPages: in a real browser, against the real receiver:
// alice sets up end-to-end encryption on her account page; her camera seals
// an event (both thumbnails and a clip of 3 segments) to the set the
// receiver hands it (the camera's own route, as the agent fetches it);
// then
//
//   - her event list shows the thumbnail opened in the page (signature,
//     sealed hash, binding), and her event page both thumbnails and the
//     clip, every segment opened and every frame checked against its signed
//     record, the canvas showing the frames' pictures; no video download,
//     and clip.mkv answers 409;
//   - bob, with keys of his own, given alice's envelope and sealed bytes
//     straight into his page (bypassing the view check) cannot open them,
//     and gets 404 for her event page;
//   - a signed-out browser gets 401 for the page and the media;
//   - the receiver's data directory holds no JPEG: no file starts with
//     FF D8 FF, and no window of any plaintext picture appears in any file.
//
// Screenshots: e2ee-list, e2ee-event, e2ee-bob.
func TestBrowserE2EEEventPages(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	ctx := browsertest.New(t)
	signInTab(t, ctx, e, "alice")
	browsertest.Do(t, ctx, chromedp.Navigate(e.hs.URL+"/sessions"))
	waitState(t, ctx, "none")
	browsertest.Do(t, ctx, chromedp.Click(chromedp.ID("e2ee-setup")), chromedp.WaitVisible(chromedp.ID("e2ee-secret")))
	waitState(t, ctx, "enrolled")

	signed, err := e.fetchKeySet(d, d.id)
	if err != nil {
		t.Fatalf("the camera's fetch of alice's key set: %v", err)
	}
	ks, err := e2ee.ParseSigned(signed)
	if err != nil {
		t.Fatal(err)
	}
	if len(ks.Keys) != 2 {
		t.Fatalf("alice's set after setting up holds %d keys, want her browser's and the recovery key", len(ks.Keys))
	}
	s, err := e2ee.NewSealer(ks)
	if err != nil {
		t.Fatal(err)
	}
	const nseg, perSeg, preRoll = 3, 6, 6
	c := d.sealedClip(t, s, "porch-sealed", 1, nseg, perSeg, preRoll)
	c.upload(e, true)

	// The list: the end's best frame, opened in the page.
	browsertest.Do(t, ctx, chromedp.Navigate(e.hs.URL+"/"))
	opened := func(what string, n int) {
		t.Helper()
		got := browsertest.Run(t, ctx, chromedp.Poll[string](`(() => {
			const imgs = [...document.querySelectorAll("img.sealed")];
			if (imgs.some(i => !i.dataset.state || i.dataset.state === "opening" || (i.dataset.state === "open" && !i.complete))) return false;
			return imgs.filter(i => i.dataset.state === "open" && i.complete && i.naturalWidth > 0).length + "/" + imgs.length + " " + imgs.map(i => i.dataset.state + ":" + (i.dataset.error || "")).join(";");
		})()`, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
		if !strings.HasPrefix(got, fmt.Sprintf("%d/%d ", n, n)) {
			t.Fatalf("%s: sealed pictures opened/shown: %s, want %d of %d", what, got, n, n)
		}
	}
	opened("event list", 1)
	browsertest.Screenshot(t, ctx, "e2ee-list")
	if txt := bodyText(t, ctx); !strings.Contains(txt, "opened in this browser") {
		t.Errorf("the list does not say the picture was opened in the browser: %q", txt)
	}

	// The event page: both thumbnails, and the clip played from opened
	// segments.
	eventURL := e.hs.URL + "/events/" + d.id + "/porch-sealed"
	if resp := browsertest.Response(t, ctx, chromedp.Navigate(eventURL)); resp.Status != http.StatusOK {
		t.Fatalf("event page: %d", resp.Status)
	}
	opened("event page", 2)
	browsertest.Run(t, ctx, chromedp.Poll[bool](fmt.Sprintf(`(() => { const p = document.getElementById("player"); if (p.dataset.error) throw new Error(p.dataset.error);
		return p.dataset.loaded === "%d" && p.dataset.opened === "%d" && document.getElementById("clipcanvas").dataset.frame === "0" })()`, nseg, nseg),
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
	// Frame k's square is at x 10+12k of 320 (clipFrameJPEG); the canvas
	// took the frames' own size from the first one opened.
	square := func(k int) bool {
		return browsertest.Run(t, ctx, chromedp.Evaluate[bool](fmt.Sprintf(`(() => { const c = document.getElementById("clipcanvas"); const d = c.getContext("2d").getImageData(%d, 120, 1, 1).data; return c.width === 320 && d[0] > 200 && d[1] > 180 && d[2] < 140 })()`, 10+12*k+20)))
	}
	if !square(0) {
		t.Error("the canvas does not show the opened first frame's square")
	}
	browsertest.Do(t, ctx, chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById("scrub"); s.value = "900"; s.dispatchEvent(new Event("input")) })()`))
	browsertest.Run(t, ctx, chromedp.Poll[bool](`document.getElementById("clipcanvas").dataset.frame === "15"`, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	if !square(15) {
		t.Error("scrubbed to +0.9 s: the canvas does not show frame 15's square")
	}
	if n := browsertest.Run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#mkv").length`)); n != 0 {
		t.Error("a sealed clip's page offers a video download")
	}
	browsertest.Screenshot(t, ctx, "e2ee-event")
	if code, body, _ := e.getAs("alice", "/events/"+d.id+"/porch-sealed/clip.mkv"); code != http.StatusConflict || !strings.Contains(string(body), "end-to-end encrypted") {
		t.Errorf("clip.mkv of a sealed clip: %d %q, want 409 saying it is end-to-end encrypted", code, body)
	}

	// Bob: his own keys; alice's record and sealed bytes given straight to
	// his page do not open.
	bob := browsertest.NewBrowserContext(t, ctx)
	signInTab(t, bob, e, "bob")
	browsertest.Do(t, bob, chromedp.Navigate(e.hs.URL+"/sessions"))
	waitState(t, bob, "none")
	browsertest.Do(t, bob, chromedp.Click(chromedp.ID("e2ee-setup")), chromedp.WaitVisible(chromedp.ID("e2ee-secret")))
	waitState(t, bob, "enrolled")
	for _, r := range []*record{c.end, c.segments[0]} {
		b, err := provenance.UnmarshalBundle(r.body)
		if err != nil {
			t.Fatal(err)
		}
		msg := browsertest.Run(t, bob, chromedp.Evaluate[string](fmt.Sprintf(`(async () => {
			const f = s => Uint8Array.from(atob(s), c => c.charCodeAt(0));
			try { await KFE2EE.openRecordMedia(f(%q), null, f(%q), 0, await KFE2EE.account("bob")); return "opened" }
			catch (e) { return e.message }
		})()`, b64(b.Envelope), b64(b.Media[0])), chromedp.EvalAwaitPromise))
		if msg == "opened" || msg == "" {
			t.Fatalf("bob's browser opened alice's %s record's sealed picture", r.kind)
		}
		t.Logf("bob's browser, given alice's %s record: %s", r.kind, msg)
	}
	if resp := browsertest.Response(t, bob, chromedp.Navigate(eventURL)); resp.Status != http.StatusNotFound {
		t.Errorf("bob's browser on alice's event page: %d, want 404", resp.Status)
	}
	browsertest.Screenshot(t, bob, "e2ee-bob")

	// Signed out: the sign-in form, and 401 for the media.
	anon := browsertest.NewBrowserContext(t, ctx)
	if resp := browsertest.Response(t, anon, chromedp.Navigate(eventURL)); resp.Status != http.StatusUnauthorized {
		t.Errorf("a signed-out browser on the event page: %d, want 401", resp.Status)
	}
	if txt := bodyText(t, anon); strings.Contains(txt, "porch-sealed") || strings.Contains(txt, d.id) {
		t.Errorf("a signed-out browser on the event page sees: %q", txt)
	}
	if code, _, _ := e.get("/media/" + d.id + "/porch-sealed/end/0"); code != http.StatusUnauthorized {
		t.Errorf("signed-out media: %d, want 401", code)
	}

	// The data directory: ciphertext only.
	var plain [][]byte
	plain = append(plain, c.start.thumb, c.end.thumb)
	plain = append(plain, c.all...)
	noPlaintextIn(t, e.dir, plain)
}

// noPlaintextIn fails if a file under dir starts with a JPEG's FF D8 FF or
// holds any 48-byte window taken from the middle of a plaintext picture.
func noPlaintextIn(t *testing.T, dir string, plain [][]byte) {
	t.Helper()
	files, checked := 0, 0
	err := filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.HasPrefix(b, []byte{0xff, 0xd8, 0xff}) {
			t.Errorf("%s starts with a JPEG's FF D8 FF", path)
		}
		for i, p := range plain {
			w := p[len(p)/2 : len(p)/2+48]
			checked++
			if bytes.Contains(b, w) {
				t.Errorf("%s holds bytes of plaintext picture %d", path, i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("data directory: %d files, none starting with FF D8 FF, %d plaintext windows searched, none found", files, checked)
}
