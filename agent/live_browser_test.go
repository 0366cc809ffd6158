package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/browsertest"
	"github.com/keyframe-cam/keyframe/receiver"
)

// liveRig is a real agent on the synthetic scene at 640x480 and 10 fps with
// the live view on, and the real receiver it waits at; the camera is
// paired to alice, and bob owns another.
type liveRig struct {
	a      *Agent
	srv    *receiver.Server
	hs     *httptest.Server
	mux    *http.ServeMux
	rdir   string
	device string
	log    *lockedBuffer
	link   string // alice's setup link
}

func newLiveRig(t *testing.T, change ...func(*Config)) *liveRig {
	t.Helper()
	return newLiveRigHook(t, nil, change...)
}

// newLiveRigHook is newLiveRig with hook called on the agent before it
// runs (nil: none).
func newLiveRigHook(t *testing.T, hook func(*Agent), change ...func(*Config)) *liveRig {
	t.Helper()
	return newLiveRigWith(t, rigOptions{hook: hook}, change...)
}

// rigOptions change a live rig: the agent's dependencies, the agent before
// it runs, the receiver's options (each nil: none).
type rigOptions struct {
	deps func(*Deps)
	hook func(*Agent)
	recv func(*receiver.Options)
}

// newLiveRigWith is newLiveRig changed by o.
func newLiveRigWith(t *testing.T, o rigOptions, change ...func(*Config)) *liveRig {
	hook := o.hook
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig(dir, 640, 480)
	cfg.FPS = 10
	cfg.LiveEnabled = true
	for _, c := range change {
		c(&cfg)
	}
	key, device, _, err := Identity(&cfg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	closeKey(key)
	pub, err := board.PublicKeyPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	rdir := filepath.Join(dir, "receiver")
	if _, err := receiver.Enroll(rdir, pub); err != nil {
		t.Fatal(err)
	}
	if err := receiver.Pair(rdir, device, "alice"); err != nil {
		t.Fatal(err)
	}
	link, err := (receiver.Accounts{Dir: rdir}).Add("alice", receiver.RoleOwner)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (receiver.Accounts{Dir: rdir}).Add("bob", receiver.RoleOwner); err != nil {
		t.Fatal(err)
	}
	ropts := receiver.Options{Dir: rdir, Logger: quietLogger()}
	if o.recv != nil {
		o.recv(&ropts)
	}
	srv, err := receiver.Open(ropts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	// The receiver's routes, under a mux tests may add routes to (the
	// browser test answers the owner's key set with it).
	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	cfg.UploadURL = hs.URL
	logs := &lockedBuffer{}
	d := Deps{Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if o.deps != nil {
		o.deps(&d)
	}
	a, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	if hook != nil {
		hook(a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	return &liveRig{a: a, srv: srv, hs: hs, mux: mux, rdir: rdir, device: device, log: logs, link: link.Path}
}

// get fetches path with cookies and returns the status and up to 1 MiB of
// the body, read for at most two seconds (a stream does not end by itself).
func (r *liveRig) get(t *testing.T, path string, cookies ...*http.Cookie) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.hs.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := r.hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b
}

// TestBrowserLiveView: in a real browser, alice, signed in, opens her
// camera's live view and sees its picture, which changes between two
// screenshots a second apart; bob (another owner), a signed-out browser and
// a direct request to the stream URL get no picture; closing alice's page
// stops the camera's stream (its log and counters say so).
// Screenshots: live-1, live-2, signed-out.
func TestBrowserLiveView(t *testing.T) {
	r := newLiveRig(t)
	jpegMagic := []byte{0xff, 0xd8, 0xff}
	page, stream := "/live/"+r.device, "/live/"+r.device+"/mjpeg"

	// Nobody: no cookie, bob's session, a forged one.
	bob, err := r.srv.NewSession("bob")
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []struct {
		name    string
		cookies []*http.Cookie
	}{{"direct request", nil}, {"another owner", []*http.Cookie{bob}}} {
		for _, p := range []string{page, stream} {
			code, body := r.get(t, p, tr.cookies...)
			if code == http.StatusOK || bytes.Contains(body, jpegMagic) || bytes.Contains(body, []byte(r.device)) {
				t.Errorf("%s: GET %s: %d with %d bytes, want a refusal without the camera's picture or ID", tr.name, p, code, len(body))
			}
		}
	}
	if n := r.srv.LiveStats().StreamsStarted; n != 0 {
		t.Fatalf("refused requests started %d camera streams", n)
	}

	// A signed-out browser: the sign-in page, no picture.
	ctx := browsertest.New(t)
	out := browsertest.NewBrowserContext(t, ctx)
	browsertest.Do(t, out, chromedp.Navigate(r.hs.URL+page))
	if n := browsertest.Run(t, out, chromedp.Evaluate[int](`[...document.images].filter(i => i.naturalWidth > 0).length`)); n != 0 {
		t.Errorf("signed out: %d images shown", n)
	}
	browsertest.Screenshot(t, out, "signed-out")

	// Alice signs in with her setup link and opens the live view.
	browsertest.Do(t, ctx, chromedp.Navigate(r.hs.URL+r.link), chromedp.WaitReady(chromedp.CSS(`input[name=confirm]`)))
	const password = "a long pass phrase for alice"
	browsertest.Do(t, ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
		chromedp.SendKeys(chromedp.CSS(`input[name=confirm]`), password),
	)
	if resp := browsertest.Response(t, ctx, chromedp.Submit(chromedp.CSS(`form`))); resp.Status != http.StatusOK {
		t.Fatalf("after choosing a password: %d", resp.Status)
	}
	// The live view in a tab of its own (alice's cookies), closed below.
	tab, closeTab := chromedp.NewContext(ctx)
	defer closeTab()
	if err := chromedp.Do(tab); err != nil { // makes the tab, which lives as long as tab
		t.Fatal(err)
	}
	asked := time.Now()
	browsertest.Do(t, tab, chromedp.Navigate(r.hs.URL+page), chromedp.WaitReady(chromedp.CSS(`#live`)))
	browsertest.Run(t, tab, chromedp.Poll[bool](`document.querySelector("#live").naturalWidth > 0`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	t.Logf("the first live picture after %s", time.Since(asked).Round(time.Millisecond))
	shot := func(name string) []byte {
		browsertest.Screenshot(t, tab, name)
		return browsertest.Run(t, tab, chromedp.Screenshot(chromedp.CSS(`#live`)))
	}
	first := shot("live-1")
	time.Sleep(time.Second)
	second := shot("live-2")
	if bytes.Equal(first, second) {
		t.Errorf("the live picture did not change in a second")
	}
	if w := browsertest.Run(t, tab, chromedp.Evaluate[int](`document.querySelector("#live").naturalWidth`)); w != 640 {
		t.Errorf("live picture %d px wide, want 640", w)
	}
	c := r.a.LiveCounts()
	if c.Started != 1 || c.Sent == 0 {
		t.Errorf("while watched: %+v, want one stream started and frames sent", c)
	}

	// Closing the tab stops the camera's stream.
	closed := time.Now()
	closeTab()
	for i := 0; r.a.LiveCounts().Stopped == 0; i++ {
		if i == 1000 && os.Getenv("KEYFRAME_LIVE_HANG") != "" {
			select {}
		}
		if i == 1000 {
			t.Fatalf("the camera's stream did not stop within 10 s of the page closing: %+v, receiver %+v\n%s", r.a.LiveCounts(), r.srv.LiveStats(), r.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the camera's stream stopped %s after the page closed", time.Since(closed).Round(time.Millisecond))
	logs := r.log.String()
	if !strings.Contains(logs, "live view: stream stopped") || !strings.Contains(logs, `reply="live stream ended: no viewer left"`) {
		t.Errorf("the agent's log does not say the stream stopped for want of viewers:\n%s", logs)
	}
	if st := r.srv.LiveStats(); st.StreamsStarted != 1 || st.StreamsEnded != 1 || st.Viewers != 0 {
		t.Errorf("receiver: %+v", st)
	}
	t.Logf("agent: %+v; receiver: %+v", r.a.LiveCounts(), r.srv.LiveStats())
	if os.Getenv("KEYFRAME_LIVE_LOG") != "" {
		t.Log(logs)
	}
}

// TestBrowserLiveSealed: with e2ee, alice's browser, whose key (made in the
// page by e2ee.js and kept in its IndexedDB) is in her key set, shows her
// camera's live picture opened in the browser, and counts its frames, while
// the receiver relays only sealed frames; a second browser of alice's
// holding no key says so and shows no picture.
// Screenshots: sealed-live, sealed-nokey.
func TestBrowserLiveSealed(t *testing.T) {
	var cur atomic.Pointer[e2ee.Sealer]
	r := newLiveRigHook(t, func(a *Agent) { a.live.sealer = cur.Load })
	page := r.hs.URL + "/live/" + r.device

	ctx := browsertest.New(t)
	browsertest.Do(t, ctx, chromedp.Navigate(r.hs.URL+r.link), chromedp.WaitReady(chromedp.CSS(`input[name=confirm]`)))
	const password = "a long pass phrase for alice"
	browsertest.Do(t, ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
		chromedp.SendKeys(chromedp.CSS(`input[name=confirm]`), password),
	)
	if resp := browsertest.Response(t, ctx, chromedp.Submit(chromedp.CSS(`form`))); resp.Status != http.StatusOK {
		t.Fatalf("after choosing a password: %d", resp.Status)
	}
	// The browser makes its key (e2ee.js, on the live page that loads it;
	// the camera has no key set yet, so nothing streams).
	browsertest.Do(t, ctx, chromedp.Navigate(page), chromedp.WaitReady(chromedp.CSS(`#liveview`)))
	pubB64 := browsertest.Run(t, ctx, chromedp.Evaluate[string](`KFE2EE.account("alice").then(a => a.browserKey()).then(b => KFE2EE.util.b64u(b.pub))`, chromedp.EvalAwaitPromise))
	pub, err := base64.RawURLEncoding.DecodeString(pubB64)
	if err != nil || len(pub) != 32 {
		t.Fatalf("the browser's public key %q: %v", pubB64, err)
	}
	browsertest.Do(t, ctx, chromedp.Navigate(r.hs.URL+"/")) // that page stops watching
	// Alice's key set: her browser's key and a key of Go's (as a recovery
	// key would be), signed by an identity made here; the receiver's
	// /v1/e2ee/keys answers it to her browser.
	owner, err := e2ee.NewOwner(1)
	if err != nil {
		t.Fatal(err)
	}
	owner.Keys[0].Recovery = true
	owner.Keys = append(owner.Keys, e2ee.OwnerKey{ID: e2ee.KeyID(e2ee.KEMX25519, pub), KEM: e2ee.KEMX25519, Pub: pub, Name: "Chromium (this test)"})
	ks, err := owner.KeySet(1)
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := e2ee.NewSealer(ks)
	if err != nil {
		t.Fatal(err)
	}
	r.mux.HandleFunc("GET /v1/e2ee/keys", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"signed":%s,"backup":"","requests":[]}`, ks.Signed())
	})
	logged := strings.Count(r.log.String(), "the owner's key set is here")
	cur.Store(sealer)
	for i := 0; strings.Count(r.log.String(), "the owner's key set is here") == logged; i++ {
		if i == 2000 {
			t.Fatalf("the camera did not take the key set:\n%s", r.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Alice watches, in a tab of her own.
	tab, closeTab := chromedp.NewContext(ctx)
	defer closeTab()
	if err := chromedp.Do(tab); err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	browsertest.Do(t, tab, chromedp.Navigate(page), chromedp.WaitReady(chromedp.CSS(`#liveview`)))
	browsertest.Run(t, tab, chromedp.Poll[bool](`document.querySelector("#live").naturalWidth > 0`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	firstPicture := time.Since(asked)
	frames := func() (int, string) {
		type pageState struct {
			Frames, Refused, State, Sealed, Src string
		}
		st := browsertest.Run(t, tab, chromedp.Evaluate[pageState](`(() => { const d = document.querySelector("#liveview").dataset; return {Frames: d.frames || "0", Refused: d.refused || "0", State: d.state, Sealed: d.sealed || "", Src: document.querySelector("#live").src} })()`))
		n, _ := strconv.Atoi(st.Frames)
		if st.State != "playing" || st.Sealed != "true" || st.Refused != "0" || !strings.HasPrefix(st.Src, "blob:") {
			t.Errorf("the page: %+v, want playing a sealed stream from blob: URLs, no frame refused", st)
		}
		return n, st.State
	}
	n1, _ := frames()
	t0 := time.Now()
	time.Sleep(3 * time.Second)
	n2, _ := frames()
	rate := float64(n2-n1) / time.Since(t0).Seconds()
	t.Logf("sealed live view: first picture %s after the page was asked for; %.1f frames a second shown (live.fps %g)", firstPicture.Round(time.Millisecond), rate, r.a.cfg.LiveFPS)
	if n2 <= n1 {
		t.Errorf("frames shown: %d, then %d 3 s later: the picture does not move", n1, n2)
	}
	if w := browsertest.Run(t, tab, chromedp.Evaluate[int](`document.querySelector("#live").naturalWidth`)); w != 640 {
		t.Errorf("live picture %d px wide, want 640", w)
	}
	browsertest.Screenshot(t, tab, "sealed-live")
	if st := r.srv.LiveStats(); st.SealedStreams == 0 || st.SealedStreams != st.StreamsStarted {
		t.Errorf("receiver: %+v, want every stream sealed", st)
	}

	// Another browser of alice's, holding no key: a clear message, no
	// picture, and it stops watching.
	other := browsertest.NewBrowserContext(t, ctx)
	browsertest.Do(t, other, chromedp.Navigate(r.hs.URL+"/signin"), chromedp.WaitReady(chromedp.CSS(`form[action="/signin"]`)))
	browsertest.Do(t, other,
		chromedp.SendKeys(chromedp.CSS(`input[name=name]`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
	)
	if resp := browsertest.Response(t, other, chromedp.Submit(chromedp.CSS(`form[action="/signin"]`))); resp.Status != http.StatusOK {
		t.Fatalf("the second browser's sign-in: %d", resp.Status)
	}
	browsertest.Do(t, other, chromedp.Navigate(page), chromedp.WaitReady(chromedp.CSS(`#liveview`)))
	browsertest.Run(t, other, chromedp.Poll[bool](`document.querySelector("#liveview").dataset.state === "nokey"`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)))
	msg := browsertest.Run(t, other, chromedp.Evaluate[string](`document.querySelector("#livestatus").textContent`))
	if !strings.Contains(msg, "end-to-end encrypted") || !strings.Contains(msg, "none of your keys") {
		t.Errorf("the keyless browser says %q", msg)
	}
	if n := browsertest.Run(t, other, chromedp.Evaluate[int](`[...document.images].filter(i => i.naturalWidth > 0).length`)); n != 0 {
		t.Errorf("the keyless browser shows %d pictures", n)
	}
	// It stopped watching: alice's first tab is the one viewer left.
	for i := 0; r.srv.LiveStats().Viewers != 1; i++ {
		if i == 1000 {
			t.Fatalf("the keyless browser still watches: %+v", r.srv.LiveStats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	browsertest.Screenshot(t, other, "sealed-nokey")
	t.Logf("the keyless browser says: %s", msg)
}
