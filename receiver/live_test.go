package receiver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/internal/livestream"
)

// liveReq sends a camera's live request for device, signed by d over nonce
// for purpose (no proof if d is nil), and returns the reply and the nonce
// it gives.
func (e *testEnv) liveReq(ctx context.Context, method, device, suffix, purpose string, d *testDevice, nonce string, body io.Reader, contentType ...string) (*http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, e.hs.URL+livestream.PathPrefix+device+suffix, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, ct := range contentType {
		req.Header.Set("Content-Type", ct)
	}
	if d != nil {
		raw, _ := base64.RawURLEncoding.DecodeString(nonce)
		sig, err := claimcode.Sign(rand.Reader, d.key, livestream.Message(purpose, device, raw))
		if err != nil {
			e.t.Fatal(err)
		}
		req.Header.Set(livestream.NonceHeader, nonce)
		req.Header.Set(livestream.SignatureHeader, base64.RawURLEncoding.EncodeToString(sig))
	}
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, resp.Header.Get(livestream.NonceHeader)
}

// freshNonce asks for a nonce for device (the reply to a request without
// a proof).
func (e *testEnv) freshNonce(device string) string {
	e.t.Helper()
	resp, nonce := e.liveReq(context.Background(), http.MethodPost, device, livestream.WaitSuffix, "", nil, "", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || nonce == "" {
		e.t.Fatalf("a request without a proof: %d, nonce %q", resp.StatusCode, nonce)
	}
	return nonce
}

// TestLiveDeviceProof tries the camera's two live routes with every proof
// that must be refused: none, a garbled or forged nonce, a nonce of
// another device, an expired or spent one, a signature by another key, of
// the other purpose, and a device unknown, unpaired or revoked. The right
// proof is then served, so the refusals are not an accident.
func TestLiveDeviceProof(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk, Live: LiveOptions{Wait: 20 * time.Millisecond}})
	a, b, lone, gone := newDevice(t), newDevice(t), newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	if _, err := Enroll(e.dir, lone.pem); err != nil {
		t.Fatal(err)
	}
	e.enroll(gone, "alice")
	if err := Revoke(e.dir, gone.id); err != nil {
		t.Fatal(err)
	}
	for _, route := range []struct{ method, suffix, purpose, other string }{
		{http.MethodPost, livestream.WaitSuffix, livestream.PurposeWait, livestream.PurposeStream},
		{http.MethodPut, livestream.StreamSuffix, livestream.PurposeStream, livestream.PurposeWait},
	} {
		t.Run(route.purpose, func(t *testing.T) {
			try := func(name string, device string, d *testDevice, purpose, nonce string, header map[string]string, want int) {
				t.Helper()
				req, _ := http.NewRequest(route.method, e.hs.URL+livestream.PathPrefix+device+route.suffix, nil)
				if d != nil {
					raw, _ := base64.RawURLEncoding.DecodeString(nonce)
					sig, _ := claimcode.Sign(rand.Reader, d.key, livestream.Message(purpose, device, raw))
					req.Header.Set(livestream.NonceHeader, nonce)
					req.Header.Set(livestream.SignatureHeader, base64.RawURLEncoding.EncodeToString(sig))
				}
				for k, v := range header {
					req.Header.Set(k, v)
				}
				resp, err := e.hs.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("%s: %d, want %d", name, resp.StatusCode, want)
				}
				if resp.StatusCode != http.StatusBadRequest && resp.Header.Get(livestream.NonceHeader) == "" {
					t.Errorf("%s: no fresh nonce in the reply", name)
				}
			}
			n := e.freshNonce(a.id)
			raw, _ := base64.RawURLEncoding.DecodeString(n)
			forged := append([]byte{}, raw...)
			forged[len(forged)-1] ^= 1
			try("no proof", a.id, nil, "", "", nil, http.StatusUnauthorized)
			try("garbled nonce", a.id, a, route.purpose, "!!"+n, nil, http.StatusUnauthorized)
			try("forged nonce", a.id, a, route.purpose, base64.RawURLEncoding.EncodeToString(forged), nil, http.StatusUnauthorized)
			try("garbled signature", a.id, nil, "", "", map[string]string{livestream.NonceHeader: n, livestream.SignatureHeader: "%%"}, http.StatusUnauthorized)
			try("another device's nonce", a.id, a, route.purpose, e.freshNonce(b.id), nil, http.StatusUnauthorized)
			try("bob's key for alice's camera", a.id, b, route.purpose, e.freshNonce(a.id), nil, http.StatusForbidden)
			try("the other purpose", a.id, a, route.other, e.freshNonce(a.id), nil, http.StatusForbidden)
			try("an unpaired device", lone.id, lone, route.purpose, e.freshNonce(lone.id), nil, http.StatusForbidden)
			try("a revoked device", gone.id, gone, route.purpose, e.freshNonce(gone.id), nil, http.StatusForbidden)
			unknown := newDevice(t)
			try("an unknown device", unknown.id, unknown, route.purpose, e.freshNonce(unknown.id), nil, http.StatusForbidden)
			try("a malformed device ID", "not-a-device", a, route.purpose, n, nil, http.StatusBadRequest)
			old := e.freshNonce(a.id)
			clk.add(liveNonceTTL + time.Second)
			try("an expired nonce", a.id, a, route.purpose, old, nil, http.StatusUnauthorized)

			// The right proof: served (204: nobody watches), once.
			good := e.freshNonce(a.id)
			try("the right proof", a.id, a, route.purpose, good, nil, http.StatusNoContent)
			try("the same proof again", a.id, a, route.purpose, good, nil, http.StatusUnauthorized)
		})
	}
	if st := e.srv.LiveStats(); st.StreamsStarted != 0 {
		t.Errorf("refused proofs started %d streams", st.StreamsStarted)
	}
}

// fakeCamera is a camera's side of the live view, speaking the wire
// format directly: it waits, then streams the frames next gives until
// the receiver ends the stream.
type fakeCamera struct {
	e     *testEnv
	d     *testDevice
	nonce string
	typ   string // the stream's Content-Type ("": none)
}

// wait waits once and reports whether the receiver asked for a stream.
func (c *fakeCamera) wait(ctx context.Context) bool {
	if c.nonce == "" {
		c.nonce = c.e.freshNonce(c.d.id)
	}
	resp, next := c.e.liveReq(ctx, http.MethodPost, c.d.id, livestream.WaitSuffix, livestream.PurposeWait, c.d, c.nonce, nil)
	defer resp.Body.Close()
	c.nonce = next
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && string(b) == livestream.Watch
}

// stream sends frames from next (nil: done) and returns the receiver's
// last line.
func (c *fakeCamera) stream(ctx context.Context, next func() []byte) string {
	pr, pw := io.Pipe()
	go func() {
		for f := next(); f != nil; f = next() {
			if err := livestream.WriteFrame(pw, f); err != nil {
				return
			}
		}
		pw.Close()
	}()
	var typ []string
	if c.typ != "" {
		typ = append(typ, c.typ)
	}
	resp, nonce := c.e.liveReq(ctx, http.MethodPut, c.d.id, livestream.StreamSuffix, livestream.PurposeStream, c.d, c.nonce, pr, typ...)
	defer resp.Body.Close()
	c.nonce = nonce
	last := ""
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		last = sc.Text()
	}
	pr.CloseWithError(io.ErrClosedPipe)
	return last
}

// viewer opens the MJPEG stream of device with cookie and returns its parts.
func (e *testEnv) viewer(ctx context.Context, device string, cookie *http.Cookie) (*http.Response, *multipart.Reader) {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.hs.URL+"/live/"+device+"/mjpeg", nil)
	req.AddCookie(cookie)
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp, nil
	}
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, multipart.NewReader(resp.Body, params["boundary"])
}

// TestLiveRelay: alice's viewer gets her camera's frames in order through
// the receiver; a frame over the size cap ends the stream; frames over the
// rate cap are dropped; viewers over the per-camera cap are refused; and
// the camera's stream ends once its last viewer has gone.
func TestLiveRelay(t *testing.T) {
	// The system clock: the rate cap needs time to pass between frames.
	e := newEnv(t, Options{Clock: clock.System{}, Live: LiveOptions{Wait: 5 * time.Second, Idle: time.Millisecond, MaxFrame: 1000, MaxFPS: 1e9, ViewersPerCamera: 2}})
	a := newDevice(t)
	e.enroll(a, "alice")
	e.account("alice", RoleOwner)
	alice, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	cam := &fakeCamera{e: e, d: a}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	asked := make(chan bool, 1)
	go func() { asked <- cam.wait(ctx) }()
	vctx, vcancel := context.WithCancel(ctx)
	resp, parts := e.viewer(vctx, a.id, alice)
	if parts == nil {
		t.Fatalf("alice's viewer: %d", resp.StatusCode)
	}
	if !<-asked {
		t.Fatal("the camera was not asked to stream when alice began to watch")
	}
	// A second viewer fits, a third does not.
	r2, p2 := e.viewer(ctx, a.id, alice)
	if p2 == nil {
		t.Fatalf("second viewer: %d", r2.StatusCode)
	}
	if r3, p3 := e.viewer(ctx, a.id, alice); p3 != nil || r3.StatusCode != http.StatusTooManyRequests {
		t.Errorf("third viewer: %d, want 429", r3.StatusCode)
	}
	r2.Body.Close()

	// Frames in order; then one over the size cap ends the stream. Each
	// frame goes once the viewer has the one before (a viewer holds one
	// frame: a newer one replaces a frame it has not taken yet).
	sent := 0
	frames := [][]byte{[]byte("\xff\xd8frame-0"), []byte("\xff\xd8frame-1"), bytes.Repeat([]byte{1}, 1001)}
	got := make(chan string, 2)
	go func() {
		defer close(got)
		for range 2 {
			p, err := parts.NextPart()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(p)
			if p.Header.Get("Content-Type") != "image/jpeg" {
				t.Errorf("part type %q", p.Header.Get("Content-Type"))
			}
			got <- string(b)
		}
	}()
	last := cam.stream(ctx, func() []byte {
		if sent == len(frames) {
			return nil
		}
		if sent > 0 {
			if s, ok := <-got; !ok || s != string(frames[sent-1]) {
				t.Errorf("viewer got %q (%v), want %q", s, ok, frames[sent-1])
			}
		}
		sent++
		return frames[sent-1]
	})
	if !strings.HasPrefix(last, livestream.Ended) || !strings.Contains(last, "frame size") {
		t.Errorf("after a frame over the cap, the stream's last line: %q", last)
	}

	// The viewer leaves: the next stream ends for want of viewers.
	vcancel()
	resp.Body.Close()
	for i := 0; e.srv.LiveStats().Viewers != 0; i++ {
		if i == 1000 {
			t.Fatal("the viewer did not leave")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if cam.nonce == "" {
		cam.nonce = e.freshNonce(a.id)
	}
	resp4, next := e.liveReq(ctx, http.MethodPut, a.id, livestream.StreamSuffix, livestream.PurposeStream, a, cam.nonce, strings.NewReader(""))
	resp4.Body.Close()
	cam.nonce = next
	if resp4.StatusCode != http.StatusNoContent {
		t.Errorf("a stream with no viewer: %d, want 204", resp4.StatusCode)
	}
	if st := e.srv.LiveStats(); st.StreamsStarted != 1 || st.StreamsEnded != 1 || st.FramesIn != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestLiveSlowViewer: a viewer that does not read holds one frame, never a
// queue: the relay goes on and counts the frames it never got.
func TestLiveSlowViewer(t *testing.T) {
	v := newLiveViewer()
	drops := 0
	for i := range 100 {
		if v.give(liveFrame{b: []byte{byte(i)}}) {
			drops++
		}
	}
	if drops != 99 || len(v.ch) != 1 || (<-v.ch).b[0] != 99 {
		t.Errorf("drops %d, want 99 with the newest frame kept", drops)
	}
}

// TestLiveRateCap: frames faster than MaxFPS are dropped at the receiver
// (counted), after a burst of two: on a clock that does not move, 50
// frames relay 2.
func TestLiveRateCap(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk, Live: LiveOptions{MaxFPS: 10, FirstFrame: time.Minute}})
	a := newDevice(t)
	e.enroll(a, "alice")
	e.account("alice", RoleOwner)
	alice, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, parts := e.viewer(ctx, a.id, alice)
	if parts == nil {
		t.Fatalf("viewer: %d", resp.StatusCode)
	}
	defer resp.Body.Close()
	cam := &fakeCamera{e: e, d: a}
	if !cam.wait(ctx) {
		t.Fatal("the camera was not asked to stream")
	}
	n := 0
	last := cam.stream(ctx, func() []byte {
		if n == 50 {
			return nil
		}
		n++
		return []byte("\xff\xd8frame")
	})
	if last != livestream.Ended+"the camera ended it" {
		t.Errorf("last line %q", last)
	}
	if st := e.srv.LiveStats(); st.FramesIn != 50 || st.FramesRateDropped != 48 {
		t.Errorf("%+v: want 50 in, 48 dropped over the rate", st)
	}
}

// TestLiveEndsWhenUnpaired: alice watches her camera; once the camera is
// unpaired (or transferred), her picture ends within a second of frames,
// and the next stream of the camera is refused.
func TestLiveEndsWhenUnpaired(t *testing.T) {
	e := newEnv(t, Options{Clock: clock.System{}, Live: LiveOptions{MaxFPS: 1e9}})
	a := newDevice(t)
	e.enroll(a, "alice")
	e.account("alice", RoleOwner)
	alice, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, parts := e.viewer(ctx, a.id, alice)
	if parts == nil {
		t.Fatalf("viewer: %d", resp.StatusCode)
	}
	defer resp.Body.Close()
	cam := &fakeCamera{e: e, d: a}
	if !cam.wait(ctx) {
		t.Fatal("the camera was not asked to stream")
	}
	ended := make(chan int, 1)
	go func() {
		n := 0
		for {
			if _, err := parts.NextPart(); err != nil {
				ended <- n
				return
			}
			n++
		}
	}()
	unpaired := false
	var got int
	last := cam.stream(ctx, func() []byte {
		select {
		case got = <-ended:
			return nil // alice's picture ended: stop
		case <-ctx.Done():
			return nil
		case <-time.After(20 * time.Millisecond):
		}
		if !unpaired && e.srv.LiveStats().FramesSent >= 3 {
			if err := Unpair(e.dir, a.id); err != nil {
				t.Error(err)
			}
			unpaired = true
		}
		return []byte("\xff\xd8frame")
	})
	if !unpaired || ctx.Err() != nil {
		t.Fatalf("alice's picture did not end after the camera was unpaired (last line %q)", last)
	}
	t.Logf("alice saw %d frames", got)
	if cam.nonce == "" {
		cam.nonce = e.freshNonce(a.id)
	}
	r, _ := e.liveReq(ctx, http.MethodPost, a.id, livestream.WaitSuffix, livestream.PurposeWait, a, cam.nonce, nil)
	r.Body.Close()
	if r.StatusCode != http.StatusForbidden {
		t.Errorf("an unpaired camera's wait: %d, want 403", r.StatusCode)
	}
}

// framesViewer opens GET /live/{device}/frames with cookie.
func (e *testEnv) framesViewer(ctx context.Context, device string, cookie *http.Cookie) *http.Response {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.hs.URL+"/live/"+device+"/frames", nil)
	req.AddCookie(cookie)
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != livestream.FramesType {
		e.t.Fatalf("frames viewer: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp
}

// wantRecords reads len(want) records from r and compares them ("k:..."
// for a key frame, "s:..." sealed, "j:..." clear).
func wantRecords(t *testing.T, name string, r io.Reader, want ...string) {
	t.Helper()
	if err := readRecords(r, want...); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func readRecords(r io.Reader, want ...string) error {
	for i, w := range want {
		kind, b, err := livestream.ReadRecord(r, nil, 1<<20)
		if err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
		if got := string(kind) + ":" + string(b); got != w {
			return fmt.Errorf("record %d is %q, want %q", i, got, w)
		}
	}
	return nil
}

// TestLiveSealedRelay: a sealed stream's key frame is kept and given to
// each viewer first (one who joins mid-stream too), then the frames as the
// camera sent them; a newer stream's key frame comes before its frames; the
// MJPEG route refuses a sealed stream (409) and ends a viewer it had
// started; a clear stream reaches the frames route as JPEG records.
func TestLiveSealedRelay(t *testing.T) {
	e := newEnv(t, Options{Clock: clock.System{}, Live: LiveOptions{Wait: 5 * time.Second, MaxFPS: 1e9}})
	a := newDevice(t)
	e.enroll(a, "alice")
	e.account("alice", RoleOwner)
	alice, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cam := &fakeCamera{e: e, d: a, typ: livestream.SealedType}
	key1, key2 := livestream.KeyFrameMagic+strings.Repeat("1", 80), livestream.KeyFrameMagic+strings.Repeat("2", 80)
	frame := func(n int) string {
		return "\x00\x00\x00\x00\x00\x00\x00" + string(rune('0'+n)) + strings.Repeat("c", 30)
	}

	// An MJPEG viewer first: the stream turns out sealed, and it ends
	// without a picture.
	mresp, parts := e.viewer(ctx, a.id, alice)
	if parts == nil {
		t.Fatalf("MJPEG viewer: %d", mresp.StatusCode)
	}
	v1 := e.framesViewer(ctx, a.id, alice)
	defer v1.Body.Close()
	if !cam.wait(ctx) {
		t.Fatal("the camera was not asked to stream")
	}
	step, second := 0, make(chan error, 1)
	last := cam.stream(ctx, func() []byte {
		step++
		switch step {
		case 1:
			return []byte(key1)
		case 2:
			return []byte(frame(1))
		case 3:
			wantRecords(t, "viewer 1", v1.Body, "k:"+key1, "s:"+frame(1))
			if p, err := parts.NextPart(); err == nil {
				b, _ := io.ReadAll(p)
				t.Errorf("the MJPEG viewer got a part of %d bytes from a sealed stream", len(b))
			}
			mresp.Body.Close()
			// While the sealed stream runs, MJPEG is refused.
			if r, _ := e.viewer(ctx, a.id, alice); r.StatusCode != http.StatusConflict {
				t.Errorf("MJPEG of a sealed stream: %d, want 409", r.StatusCode)
			}
			return []byte(frame(2))
		case 4:
			wantRecords(t, "viewer 1", v1.Body, "s:"+frame(2))
			// A viewer joining now gets the key frame first.
			v2 := e.framesViewer(ctx, a.id, alice)
			go func() {
				second <- readRecords(v2.Body, "k:"+key1, "s:"+frame(3))
				v2.Body.Close()
			}()
			for i := 0; e.srv.LiveStats().Viewers != 2; i++ {
				if i == 1000 {
					t.Fatal("the second viewer did not join")
				}
				time.Sleep(10 * time.Millisecond)
			}
			return []byte(frame(3))
		case 5:
			wantRecords(t, "viewer 1", v1.Body, "s:"+frame(3))
			if err := <-second; err != nil {
				t.Errorf("viewer 2, joining mid-stream: %v", err)
			}
		}
		return nil
	})
	if last != livestream.Ended+"the camera ended it" {
		t.Errorf("first stream's last line %q", last)
	}
	// A newer stream (a new key): its key frame comes before its frames.
	if !cam.wait(ctx) {
		t.Fatal("the camera was not asked to stream again")
	}
	step = 0
	cam.stream(ctx, func() []byte {
		step++
		switch step {
		case 1:
			return []byte(key2)
		case 2:
			return []byte(frame(1))
		case 3:
			wantRecords(t, "viewer 1", v1.Body, "k:"+key2, "s:"+frame(1))
		}
		return nil
	})
	// A clear stream reaches the frames route as JPEG records.
	cam.typ = livestream.ClearType
	if !cam.wait(ctx) {
		t.Fatal("the camera was not asked to stream a third time")
	}
	step = 0
	cam.stream(ctx, func() []byte {
		step++
		switch step {
		case 1:
			return []byte("\xff\xd8clear")
		case 2:
			wantRecords(t, "viewer 1", v1.Body, "j:\xff\xd8clear")
		}
		return nil
	})
	if st := e.srv.LiveStats(); st.StreamsStarted != 3 || st.SealedStreams != 2 || st.FramesIn != 5 {
		t.Errorf("stats %+v: want 3 streams (2 sealed) and 5 frames (key frames not counted)", st)
	}
}

// TestLiveSealedStreamBounds: a stream type other than the two is 415; a
// sealed stream whose first frame is not a key frame, or with a frame
// shorter than a counter and a tag, is ended, saying why.
func TestLiveSealedStreamBounds(t *testing.T) {
	e := newEnv(t, Options{Clock: clock.System{}, Live: LiveOptions{Wait: 5 * time.Second, MaxFPS: 1e9}})
	a := newDevice(t)
	e.enroll(a, "alice")
	e.account("alice", RoleOwner)
	alice, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v := e.framesViewer(ctx, a.id, alice)
	defer v.Body.Close()
	cam := &fakeCamera{e: e, d: a, typ: "image/jpeg"}
	if !cam.wait(ctx) {
		t.Fatal("the camera was not asked to stream")
	}
	if last := cam.stream(ctx, func() []byte { return nil }); !strings.Contains(last, "Content-Type") {
		t.Errorf("a stream of type image/jpeg: %q, want a 415 naming the Content-Type", last)
	}
	cam.typ = livestream.SealedType
	for _, tc := range []struct {
		name   string
		frames []string
		why    string
	}{
		{"a JPEG first", []string{"\xff\xd8\xffpicture"}, "not a key frame"},
		{"a short frame", []string{livestream.KeyFrameMagic + "key", "\x00\x00\x00\x00\x00\x00\x00\x01short"}, "shorter than its counter and tag"},
	} {
		if !cam.wait(ctx) {
			t.Fatalf("%s: the camera was not asked to stream", tc.name)
		}
		i := 0
		last := cam.stream(ctx, func() []byte {
			if i == len(tc.frames) {
				return nil
			}
			i++
			return []byte(tc.frames[i-1])
		})
		if !strings.HasPrefix(last, livestream.Ended) || !strings.Contains(last, tc.why) {
			t.Errorf("%s: last line %q, want it to say %q", tc.name, last, tc.why)
		}
	}
	if st := e.srv.LiveStats(); st.FramesSent != 0 {
		t.Errorf("%+v: frames were relayed from refused streams", st)
	}
}
