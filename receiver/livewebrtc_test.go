package receiver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/internal/livestream"
)

// answerClock is stepClock whose wait for a camera's answer ends at once
// while quick is set (the 504 case without waiting 15 s).
type answerClock struct {
	*stepClock
	quick *atomic.Bool
}

func (c answerClock) After(d time.Duration) <-chan time.Time {
	if d == rtcAnswerTimeout && c.quick.Load() {
		ch := make(chan time.Time, 1)
		ch <- c.Now()
		return ch
	}
	return time.After(d)
}

const (
	testOffer  = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F:20\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\n"
	testAnswer = "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n"
)

// rtcCam is a fake camera of the WebRTC signalling: its wait and answer.
type rtcCam struct {
	e     *testEnv
	d     *testDevice
	nonce string
}

// wait sends a wait (saying it answers WebRTC if accept) and returns the
// status and body.
func (c *rtcCam) wait(accept bool) (int, string) {
	c.e.t.Helper()
	if c.nonce == "" {
		c.nonce = c.e.freshNonce(c.d.id)
	}
	req := c.req(http.MethodPost, livestream.WaitSuffix, livestream.PurposeWait, nil)
	if accept {
		req.Header.Set(livestream.AcceptHeader, livestream.AcceptWebRTC)
	}
	return c.do(req)
}

func (c *rtcCam) req(method, suffix, purpose string, body io.Reader) *http.Request {
	req, err := http.NewRequestWithContext(context.Background(), method, c.e.hs.URL+livestream.PathPrefix+c.d.id+suffix, body)
	if err != nil {
		c.e.t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(c.nonce)
	sig, err := claimcode.Sign(rand.Reader, c.d.key, livestream.Message(purpose, c.d.id, raw))
	if err != nil {
		c.e.t.Fatal(err)
	}
	req.Header.Set(livestream.NonceHeader, c.nonce)
	req.Header.Set(livestream.SignatureHeader, base64.RawURLEncoding.EncodeToString(sig))
	return req
}

func (c *rtcCam) do(req *http.Request) (int, string) {
	resp, err := c.e.hs.Client().Do(req)
	if err != nil {
		c.e.t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	c.nonce = resp.Header.Get(livestream.NonceHeader)
	return resp.StatusCode, string(b)
}

// answer posts an answer to offer id, signed by signer over offer and the
// SDP fpSDP (the answer itself when fpSDP is ""): another SDP signed is a
// forged answer.
func (c *rtcCam) answer(id, offer, answer, fpSDP string, signer *testDevice) (int, string) {
	c.e.t.Helper()
	if fpSDP == "" {
		fpSDP = answer
	}
	sig, err := claimcode.Sign(rand.Reader, signer.key, livestream.AnswerMessage(c.d.id, []byte(offer), []byte(fpSDP)))
	if err != nil {
		c.e.t.Fatal(err)
	}
	req := c.req(http.MethodPost, livestream.AnswerSuffix, livestream.PurposeAnswer, strings.NewReader(answer))
	req.Header.Set("Content-Type", livestream.SDPType)
	req.Header.Set(livestream.OfferHeader, id)
	req.Header.Set(livestream.AnswerSignatureHeader, base64.RawURLEncoding.EncodeToString(sig))
	return c.do(req)
}

// pageOffer is a page's POST of an offer.
type pageReply struct {
	code                 int
	body, loc, sig, spki string
	contentType          string
}

func (e *testEnv) offer(device, ctype, body string, cookies ...*http.Cookie) pageReply {
	e.t.Helper()
	hdr := map[string]string{}
	if ctype != "" {
		hdr["Content-Type"] = ctype
	}
	req, err := http.NewRequest(http.MethodPost, e.hs.URL+"/live/"+device+"/whep", strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		e.t.Error(err)
		return pageReply{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return pageReply{code: resp.StatusCode, body: string(b), loc: resp.Header.Get("Location"), sig: resp.Header.Get(livestream.AnswerSignatureHeader),
		spki: resp.Header.Get(livestream.DeviceKeyHeader), contentType: resp.Header.Get("Content-Type")}
}

// offerAsync posts an offer in the background.
func (e *testEnv) offerAsync(device, body string, cookies ...*http.Cookie) <-chan pageReply {
	ch := make(chan pageReply, 1)
	go func() { ch <- e.offer(device, livestream.SDPType, body, cookies...) }()
	return ch
}

// takeOffer waits (as the camera, answering WebRTC) until the offer comes.
func (c *rtcCam) takeOffer() (id, sdp string) {
	c.e.t.Helper()
	for i := 0; i < 200; i++ {
		code, body := c.wait(true)
		if code == http.StatusNoContent {
			continue
		}
		oid, osdp, err := livestream.WaitOffer([]byte(body))
		if code != http.StatusOK || err != nil || osdp == nil {
			c.e.t.Fatalf("the camera's wait: %d %q (%v), want an offer", code, body, err)
		}
		return oid, string(osdp)
	}
	c.e.t.Fatal("no offer came to the camera's wait")
	return "", ""
}

// TestLiveWHEP: an owner's offer reaches her camera at its wait, the
// camera's signed answer reaches her page with the signature and the
// registry's key, which verify; DELETE ends it for her only. Then the
// refusals: a camera without WebRTC (501), one that does not answer (504),
// one that refuses (502), an answer signed by another key or over other
// fingerprints (403 to the camera, 502 to the page), an answer to no
// pending offer (404), a second offer of the same session (409), and
// hostile offers (415, 413, 400).
func TestLiveWHEP(t *testing.T) {
	clk := answerClock{&stepClock{t: testNow}, new(atomic.Bool)}
	e := newEnv(t, Options{Clock: clk, Live: LiveOptions{Wait: 100 * time.Millisecond}})
	a, b := newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	e.account("alice", RoleOwner)
	e.account("bob", RoleOwner)
	alice, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := e.srv.NewSession("bob")
	if err != nil {
		t.Fatal(err)
	}
	cam := &rtcCam{e: e, d: a}

	// The answered offer.
	page := e.offerAsync(a.id, testOffer, alice)
	id, offer := cam.takeOffer()
	if offer != testOffer {
		t.Fatalf("the camera got the offer %q, want the page's", offer)
	}
	if code, body := cam.answer(id, offer, testAnswer, "", a); code != http.StatusNoContent {
		t.Fatalf("the camera's answer: %d %s", code, body)
	}
	got := <-page
	if got.code != http.StatusCreated || got.body != testAnswer || got.contentType != livestream.SDPType || !strings.HasPrefix(got.loc, "/live/"+a.id+"/whep/") {
		t.Fatalf("the page got %+v, want 201 with the camera's answer and a Location", got)
	}
	spki, _ := base64.RawURLEncoding.DecodeString(got.spki)
	sig, _ := base64.RawURLEncoding.DecodeString(got.sig)
	if !bytes.Equal(spki, a.spki) {
		t.Errorf("the page got the key %x, want the camera's", spki)
	}
	if _, err := claimcode.Verify(spki, livestream.AnswerMessage(a.id, []byte(testOffer), []byte(got.body)), sig); err != nil {
		t.Errorf("the page's check of the answer's signature: %v", err)
	}
	if st := e.srv.LiveStats(); st.RTCSessions != 1 {
		t.Errorf("stats %+v, want one WebRTC session", st)
	}
	if r, _ := e.rawReq(http.MethodDelete, got.loc, "", nil, bob); r.StatusCode != http.StatusNotFound {
		t.Errorf("bob's DELETE of alice's session: %d, want 404", r.StatusCode)
	}
	if r, _ := e.rawReq(http.MethodDelete, got.loc, "", nil, alice); r.StatusCode != http.StatusNoContent {
		t.Errorf("alice's DELETE: %d, want 204", r.StatusCode)
	}
	if r, _ := e.rawReq(http.MethodDelete, got.loc, "", nil, alice); r.StatusCode != http.StatusNotFound {
		t.Errorf("alice's second DELETE: %d, want 404", r.StatusCode)
	}
	// The answer once more: the offer is no longer pending.
	if code, _ := cam.answer(id, offer, testAnswer, "", a); code != http.StatusNotFound {
		t.Errorf("an answer replayed: %d, want 404", code)
	}

	t.Run("no WebRTC", func(t *testing.T) {
		page := e.offerAsync(a.id, testOffer, alice)
		for i := 0; ; i++ {
			select {
			case got := <-page:
				if got.code != http.StatusNotImplemented || !strings.Contains(got.body, "does not answer WebRTC") {
					t.Errorf("a camera without WebRTC: the page got %d %q, want 501", got.code, got.body)
				}
				return
			default:
			}
			if i == 200 {
				t.Fatal("the page got no reply")
			}
			if code, body := cam.wait(false); code != http.StatusNoContent {
				t.Errorf("a camera without WebRTC: its wait got %d %q, want 204", code, body)
			}
		}
	})
	t.Run("no answer", func(t *testing.T) {
		clk.quick.Store(true)
		defer clk.quick.Store(false)
		got := e.offer(a.id, livestream.SDPType, testOffer, alice)
		if got.code != http.StatusGatewayTimeout {
			t.Errorf("no camera: %d %q, want 504", got.code, got.body)
		}
	})
	t.Run("refused", func(t *testing.T) {
		page := e.offerAsync(a.id, testOffer, alice)
		id, _ := cam.takeOffer()
		req := cam.req(http.MethodPost, livestream.AnswerSuffix, livestream.PurposeAnswer, strings.NewReader("4 sessions already run"))
		req.Header.Set("Content-Type", livestream.RefusedType)
		req.Header.Set(livestream.OfferHeader, id)
		if code, body := cam.do(req); code != http.StatusNoContent {
			t.Errorf("the camera's refusal: %d %s", code, body)
		}
		if got := <-page; got.code != http.StatusBadGateway || !strings.Contains(got.body, "4 sessions already run") {
			t.Errorf("the page got %d %q, want 502 with the camera's reason", got.code, got.body)
		}
	})
	for _, tc := range []struct {
		name           string
		signer         *testDevice
		answer, signed string
		wantCam        int
	}{
		{"signed by another key", b, testAnswer, "", http.StatusForbidden},
		{"fingerprint swapped", a, strings.Replace(testAnswer, "AA:BB", "AA:BC", 1), testAnswer, http.StatusForbidden},
		// A line added after signing that a verifier parsing only
		// "a=fingerprint:" would skip and a browser might take.
		{"line added", a, testAnswer + "A=FINGERPRINT:sha-256 AA:BC:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n", testAnswer, http.StatusForbidden},
		{"candidate added", a, testAnswer + "a=candidate:1 1 udp 2130706431 10.9.8.7 4444 typ host\r\n", testAnswer, http.StatusForbidden},
		{"no fingerprint", a, "v=0\r\ns=-\r\n", testAnswer, http.StatusBadRequest},
		{"not an SDP", a, "hello", testAnswer, http.StatusBadRequest},
		{"over 16 KiB", a, testAnswer + strings.Repeat("a=x\r\n", 4000), testAnswer, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page := e.offerAsync(a.id, testOffer, alice)
			id, offer := cam.takeOffer()
			if code, body := cam.answer(id, offer, tc.answer, tc.signed, tc.signer); code != tc.wantCam {
				t.Errorf("the camera's answer: %d %q, want %d", code, body, tc.wantCam)
			}
			if got := <-page; got.code != http.StatusBadGateway || got.sig != "" || strings.Contains(got.body, "AA:B") {
				t.Errorf("the page got %+v, want 502 and no answer", got)
			}
		})
	}
	t.Run("answer to no offer", func(t *testing.T) {
		if code, _ := cam.answer("bm8tc3VjaC1vZmZlcg", testOffer, testAnswer, "", a); code != http.StatusNotFound {
			t.Errorf("an answer to no offer: %d, want 404", code)
		}
		req := cam.req(http.MethodPost, livestream.AnswerSuffix, livestream.PurposeAnswer, strings.NewReader(testAnswer))
		req.Header.Set("Content-Type", livestream.SDPType)
		req.Header.Set(livestream.OfferHeader, "../../x")
		if code, _ := cam.do(req); code != http.StatusBadRequest {
			t.Errorf("a malformed offer ID: %d, want 400", code)
		}
		// The right proof of the other purpose: refused.
		req = cam.req(http.MethodPost, livestream.AnswerSuffix, livestream.PurposeWait, strings.NewReader(testAnswer))
		req.Header.Set(livestream.OfferHeader, "abc")
		if code, _ := cam.do(req); code != http.StatusForbidden {
			t.Errorf("an answer proved for the wait: %d, want 403", code)
		}
	})
	t.Run("one pending offer per session", func(t *testing.T) {
		page := e.offerAsync(a.id, testOffer, alice)
		id, offer := cam.takeOffer() // the first is pending at the camera now
		if got := e.offer(a.id, livestream.SDPType, testOffer, alice); got.code != http.StatusConflict {
			t.Errorf("a second offer of the same session: %d, want 409", got.code)
		}
		cam.answer(id, offer, testAnswer, "", a)
		if got := <-page; got.code != http.StatusCreated {
			t.Errorf("the first offer: %d", got.code)
		}
	})
	t.Run("hostile offers", func(t *testing.T) {
		for _, tc := range []struct {
			name, ctype, body string
			want              int
		}{
			{"form", "application/x-www-form-urlencoded", "a=b", http.StatusUnsupportedMediaType},
			{"no type", "", testOffer, http.StatusUnsupportedMediaType},
			{"over 16 KiB", livestream.SDPType, testOffer + strings.Repeat("a=x\r\n", 4000), http.StatusRequestEntityTooLarge},
			{"not an SDP", livestream.SDPType, "GET / HTTP/1.1\r\n", http.StatusBadRequest},
			{"NUL bytes", livestream.SDPType, "v=0\r\n\x00\x00", http.StatusBadRequest},
			{"empty", livestream.SDPType, "", http.StatusBadRequest},
		} {
			if got := e.offer(a.id, tc.ctype, tc.body, alice); got.code != tc.want {
				t.Errorf("%s: %d %q, want %d", tc.name, got.code, got.body, tc.want)
			}
		}
		// Not the owner's, not signed in.
		if got := e.offer(a.id, livestream.SDPType, testOffer, bob); got.code != http.StatusNotFound {
			t.Errorf("bob's offer for alice's camera: %d, want 404", got.code)
		}
		if got := e.offer(a.id, livestream.SDPType, testOffer); got.code != http.StatusUnauthorized {
			t.Errorf("an offer without a session: %d, want 401", got.code)
		}
	})
}

// TestLiveWaitAfterOffer: the page's offer handler, ending after the
// camera took its offer and waits again, leaves the camera's new wait in
// place: a viewer who comes next wakes it at once ("watch"), rather than a
// camera entry made anew that nobody waits on (the camera then deaf to
// viewers and offers until its wait times out).
func TestLiveWaitAfterOffer(t *testing.T) {
	e := newEnv(t, Options{Live: LiveOptions{Wait: 20 * time.Second}})
	a := newDevice(t)
	e.enroll(a, "alice")
	e.account("alice", RoleOwner)
	alice, err := e.srv.NewSession("alice")
	if err != nil {
		t.Fatal(err)
	}
	// wait sends a camera's wait in the background, once it is in the
	// receiver's hands, each with a nonce of its own.
	type reply struct {
		code int
		body string
	}
	wait := func() <-chan reply {
		ch := make(chan reply, 1)
		cam := &rtcCam{e: e, d: a, nonce: e.freshNonce(a.id)}
		go func() {
			code, body := cam.wait(true)
			ch <- reply{code, body}
		}()
		for i := 0; ; i++ {
			h := e.srv.live
			h.mu.Lock()
			c := h.cams[a.id]
			waiting := c != nil && c.waiting > 0
			h.mu.Unlock()
			if waiting {
				return ch
			}
			if i == 2000 {
				t.Fatal("the camera's wait never reached the receiver")
			}
			time.Sleep(time.Millisecond)
		}
	}

	// The camera waits; the page's offer wakes it.
	first := wait()
	page := e.offerAsync(a.id, testOffer, alice)
	r := <-first
	id, offer, err := livestream.WaitOffer([]byte(r.body))
	if r.code != http.StatusOK || err != nil || offer == nil {
		t.Fatalf("the camera's wait: %d %q (%v), want the offer", r.code, r.body, err)
	}
	// It waits again before its answer is in (two requests: either may
	// come first).
	second := wait()
	cam := &rtcCam{e: e, d: a, nonce: e.freshNonce(a.id)}
	if code, body := cam.answer(id, string(offer), testAnswer, "", a); code != http.StatusNoContent {
		t.Fatalf("the camera's answer: %d %s", code, body)
	}
	if got := <-page; got.code != http.StatusCreated {
		t.Fatalf("the page got %d %q, want 201", got.code, got.body)
	}

	// The offer's handler has returned (its reply is out): a viewer now.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := e.framesViewer(ctx, a.id, alice)
	defer resp.Body.Close()
	if r := <-second; r.code != http.StatusOK || r.body != livestream.Watch {
		t.Errorf("the camera's wait when a viewer came: %d %q, want 200 %q", r.code, r.body, livestream.Watch)
	}
}

// TestLiveWHEPBounds: offers waiting for a camera's answer are bounded per
// camera (ViewersPerCamera) and in all (MaxViewers), as viewers are: one
// more is answered 429 at once; an offer that ends (its page gone) frees
// its place.
func TestLiveWHEPBounds(t *testing.T) {
	e := newEnv(t, Options{Live: LiveOptions{ViewersPerCamera: 2, MaxViewers: 3}})
	e.account("alice", RoleOwner)
	var devs []*testDevice
	for range 3 {
		d := newDevice(t)
		e.enroll(d, "alice")
		devs = append(devs, d)
	}
	session := func() *http.Cookie {
		c, err := e.srv.NewSession("alice")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	inFlight := func() int {
		e.srv.live.mu.Lock()
		defer e.srv.live.mu.Unlock()
		return e.srv.live.offers
	}
	// offer posts an offer that stays pending (no camera waits) until its
	// context ends, once the receiver holds it.
	offer := func(ctx context.Context, d *testDevice, c *http.Cookie) {
		n := inFlight()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.hs.URL+"/live/"+d.id+"/whep", strings.NewReader(testOffer))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", livestream.SDPType)
		req.AddCookie(c)
		go func() {
			if resp, err := e.hs.Client().Do(req); err == nil {
				resp.Body.Close()
				t.Errorf("an offer for %s ended with %d before its page left", d.id, resp.StatusCode)
			}
		}()
		for i := 0; inFlight() == n; i++ {
			if i == 2000 {
				t.Fatal("the receiver never took the offer")
			}
			time.Sleep(time.Millisecond)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Two offers for the first camera (two browsers): the third is over
	// ViewersPerCamera.
	offer(ctx, devs[0], session())
	offer(ctx, devs[0], session())
	if got := e.offer(devs[0].id, livestream.SDPType, testOffer, session()); got.code != http.StatusTooManyRequests {
		t.Errorf("a third offer for one camera: %d %q, want 429", got.code, got.body)
	}
	// One for the second camera: the receiver's three; a fourth, for the
	// third camera, is over MaxViewers.
	offer(ctx, devs[1], session())
	if got := e.offer(devs[2].id, livestream.SDPType, testOffer, session()); got.code != http.StatusTooManyRequests {
		t.Errorf("a fourth offer to the receiver: %d %q, want 429", got.code, got.body)
	}
	// The pages leave: their places are free again.
	cancel()
	for i := 0; inFlight() != 0; i++ {
		if i == 2000 {
			t.Fatalf("%d offers still held after their pages left", inFlight())
		}
		time.Sleep(time.Millisecond)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	offer(ctx2, devs[2], session())
}
