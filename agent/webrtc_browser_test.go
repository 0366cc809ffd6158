//go:build webrtc

package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"

	"github.com/keyframe-cam/keyframe/internal/browsertest"
	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/internal/livestream"
	"github.com/keyframe-cam/keyframe/receiver"
)

// The fixture's size, rate and length: 15 s at 30 frames a second.
const (
	fxWidth, fxHeight, fxFPS, fxFrames = 320, 240, 30, 450
	fxBits, fxBlock                    = 16, 20 // the frame index: 16 blocks of 20x20 px along the top, bright for 1
)

// h264Fixture is an H.264 stream made at test time with ffmpeg (libx264,
// constrained baseline, no B-frames, a key frame every 30), split into
// access units; frame k carries k in the blocks along its top.
type h264Fixture struct{ aus []AccessUnit }

func makeH264Fixture(t *testing.T) *h264Fixture {
	t.Helper()
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ffmpeg (libx264) is not installed: it makes the H.264 fixture")
		}
		t.Skip("no ffmpeg: cannot make the H.264 fixture (runs under CI=true)")
	}
	out := filepath.Join(t.TempDir(), "fixture.h264")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "320x240", "-r", "30", "-i", "-",
		"-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "30", "-tune", "zerolatency", "-threads", "1", "-f", "h264", out)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, fxWidth*fxHeight*3/2)
	for k := 0; k < fxFrames; k++ {
		y := frame[:fxWidth*fxHeight]
		for row := 0; row < fxHeight; row++ {
			for x := 0; x < fxWidth; x++ {
				v := byte(40 + (x+row+4*k)%160) // a moving ramp
				if row < fxBlock {
					v = 16
					if k>>(x/fxBlock)&1 == 1 {
						v = 235
					}
				}
				y[row*fxWidth+x] = v
			}
		}
		for i := range frame[fxWidth*fxHeight:] {
			frame[fxWidth*fxHeight+i] = 128
		}
		if _, err := in.Write(frame); err != nil {
			t.Fatalf("ffmpeg: %v\n%s", err, stderr.String())
		}
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, stderr.String())
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := h264reader.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	fx := &h264Fixture{}
	var au []byte
	key := false
	for {
		nal, err := rd.NextNAL()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		au = append(au, 0, 0, 0, 1)
		au = append(au, nal.Data...)
		switch nal.UnitType {
		case h264reader.NalUnitTypeCodedSliceIdr:
			key = true
			fallthrough
		case h264reader.NalUnitTypeCodedSliceNonIdr: // one slice a picture (-threads 1): the access unit ends
			fx.aus = append(fx.aus, AccessUnit{Data: au, Key: key})
			au, key = nil, false
		}
	}
	if len(fx.aus) != fxFrames || !fx.aus[0].Key || !bytes.Contains(fx.aus[0].Data[:64], []byte{0, 0, 0, 1, 0x67}) {
		t.Fatalf("the fixture: %d access units (want %d), the first key %v with an SPS", len(fx.aus), fxFrames, fx.aus[0].Key)
	}
	return fx
}

// fixtureSource hands the fixture's access units at its rate, in a loop,
// and remembers when it handed each frame index the first time (its
// "capture" time, for the latency).
type fixtureSource struct {
	fx   *h264Fixture
	i    int
	next time.Time

	mu   sync.Mutex
	sent map[int]time.Time
}

func (s *fixtureSource) NextAccessUnit(ctx context.Context) (AccessUnit, error) {
	now := time.Now()
	if s.next.IsZero() || now.Sub(s.next) > time.Second { // the first, or after a pause
		s.next = now
	}
	if d := s.next.Sub(now); d > 0 {
		select {
		case <-ctx.Done():
			return AccessUnit{}, ctx.Err()
		case <-time.After(d):
		}
	}
	s.next = s.next.Add(time.Second / fxFPS)
	k := s.i % len(s.fx.aus)
	s.i++
	au := s.fx.aus[k]
	au.Time = time.Now()
	s.mu.Lock()
	if _, ok := s.sent[k]; !ok {
		s.sent[k] = au.Time
	}
	s.mu.Unlock()
	return au, nil
}

func (s *fixtureSource) sentAt(k int) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.sent[k]
	return t, ok
}

// whepTamper is a receiver turned hostile, for the page's checks: it
// changes the answer it relays to the page.
type whepTamper int32

const (
	tamperNone        whepTamper = iota
	tamperFingerprint            // a fingerprint of the answer changed (the receiver's own DTLS key)
	tamperSignature              // a byte of the camera's signature changed
	tamperKey                    // the answer's fingerprint changed, signed by the receiver's own key, which it gives as the camera's
	tamperLine                   // a second fingerprint line the page's fingerprint parser skips (upper case), added after the signature
)

// TestBrowserWebRTC: alice's live page plays her camera's H.264 over
// WebRTC (a webrtc-tagged agent fed by an ffmpeg fixture): the page checks
// the camera's signature over the answer, the video decodes (videoWidth,
// totalVideoFrames rising), and the frame index read back from the
// decoded pictures gives the latency from the frame's capture to its
// decode. Bob and a signed-out request get no answer. A receiver that
// swaps the answer's fingerprint, the signature, or the key and signature
// is refused by the page, which shows the frames through the receiver
// instead and says why.
// Screenshots: webrtc-live, webrtc-refused-fingerprint, webrtc-refused-signature, webrtc-refused-key.
func TestBrowserWebRTC(t *testing.T) {
	fx := makeH264Fixture(t)
	src := &fixtureSource{fx: fx, sent: map[int]time.Time{}}
	r := newLiveRigWith(t, rigOptions{deps: func(d *Deps) { d.LiveH264 = src }})
	if r.a.liveRTC == nil {
		t.Fatal("the agent built with -tags webrtc and an H.264 source answers no WebRTC")
	}

	// The hostile receiver, off until a case turns it on.
	var tamper atomic.Int32
	handler := r.srv.Handler()
	attacker, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	attackerSPKI, err := x509.MarshalPKIXPublicKey(attacker.Public())
	if err != nil {
		t.Fatal(err)
	}
	r.mux.HandleFunc("POST /live/{device}/whep", func(w http.ResponseWriter, req *http.Request) {
		offer, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		req.Body = io.NopCloser(bytes.NewReader(offer))
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		body, hd := rec.Body.Bytes(), rec.Header()
		if rec.Code == http.StatusCreated {
			switch whepTamper(tamper.Load()) {
			case tamperFingerprint:
				body = swapFingerprint(t, body)
			case tamperSignature:
				sig, _ := base64.RawURLEncoding.DecodeString(hd.Get(livestream.AnswerSignatureHeader))
				sig[len(sig)-3] ^= 0x40
				hd.Set(livestream.AnswerSignatureHeader, base64.RawURLEncoding.EncodeToString(sig))
			case tamperLine:
				body = append(body, []byte("A=FINGERPRINT:sha-256 01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F:20\r\n")...)
			case tamperKey:
				body = swapFingerprint(t, body)
				sig, err := claimcode.Sign(rand.Reader, attacker, livestream.AnswerMessage(r.device, offer, body))
				if err != nil {
					t.Error(err)
				}
				hd.Set(livestream.AnswerSignatureHeader, base64.RawURLEncoding.EncodeToString(sig))
				hd.Set(livestream.DeviceKeyHeader, base64.RawURLEncoding.EncodeToString(attackerSPKI))
			}
		}
		for k, v := range hd {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	})

	// Bob and a request without a session get no answer; the camera
	// answers nothing.
	bob, err := r.srv.NewSession("bob")
	if err != nil {
		t.Fatal(err)
	}
	const sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F:20\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\n"
	for _, tr := range []struct {
		name    string
		cookies []*http.Cookie
		want    int
	}{{"no session", nil, http.StatusUnauthorized}, {"another owner", []*http.Cookie{bob}, http.StatusNotFound}} {
		req, _ := http.NewRequest(http.MethodPost, r.hs.URL+"/live/"+r.device+"/whep", strings.NewReader(sdp))
		req.Header.Set("Content-Type", livestream.SDPType)
		for _, c := range tr.cookies {
			req.AddCookie(c)
		}
		resp, err := r.hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tr.want || resp.Header.Get(livestream.AnswerSignatureHeader) != "" || bytes.Contains(b, []byte("a=fingerprint")) {
			t.Errorf("%s: %d %q, want %d and no answer", tr.name, resp.StatusCode, b, tr.want)
		}
	}
	if c := r.a.RTCCounts(); c.Answered != 0 {
		t.Errorf("refused offers reached the camera: %+v", c)
	}

	ctx := browsertest.New(t)
	out := browsertest.NewBrowserContext(t, ctx)
	browsertest.Do(t, out, chromedp.Navigate(r.hs.URL+"/live/"+r.device))
	if n := browsertest.Run(t, out, chromedp.Evaluate[int](`document.querySelectorAll("video").length`)); n != 0 {
		t.Errorf("signed out: the page has %d video elements", n)
	}
	signInAlice(t, r, ctx)

	// Alice watches over WebRTC.
	tab, closeTab := chromedp.NewContext(ctx)
	defer closeTab()
	if err := chromedp.Do(tab); err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	browsertest.Do(t, tab, chromedp.Navigate(r.hs.URL+"/live/"+r.device), chromedp.WaitReady(chromedp.CSS(`#liveview`)))
	if _, err := browsertest.RunErr(tab, chromedp.Poll[bool](`(() => { const v = document.querySelector("#livevideo"); return document.querySelector("#liveview").dataset.transport === "webrtc" && v.videoWidth > 0 })()`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		st := browsertest.Run(t, tab, chromedp.Evaluate[string](`JSON.stringify(Object.assign({}, document.querySelector("#liveview").dataset, {status: document.querySelector("#livestatus").textContent}))`))
		t.Fatalf("no WebRTC picture: %v; the page: %s; agent %+v\n%s", err, st, r.a.RTCCounts(), r.log.String())
	}
	firstPicture := time.Since(asked)
	startProbe(t, tab)
	frames := func() int {
		return browsertest.Run(t, tab, chromedp.Evaluate[int](`document.querySelector("#livevideo").getVideoPlaybackQuality().totalVideoFrames`))
	}
	f1 := frames()
	time.Sleep(3 * time.Second)
	f2 := frames()
	if f2 <= f1 {
		t.Errorf("totalVideoFrames %d, then %d 3 s later: the video does not play", f1, f2)
	}
	type pageState struct{ Transport, RTC, State, Status string }
	st := browsertest.Run(t, tab, chromedp.Evaluate[pageState](`(() => { const d = document.querySelector("#liveview").dataset; return {Transport: d.transport, RTC: d.rtc, State: d.state, Status: document.querySelector("#livestatus").textContent} })()`))
	if st.Transport != "webrtc" || st.RTC != "verified" || st.State != "playing" {
		t.Errorf("the page: %+v, want playing WebRTC with the answer verified", st)
	}
	if w := browsertest.Run(t, tab, chromedp.Evaluate[int](`document.querySelector("#livevideo").videoWidth`)); w != fxWidth {
		t.Errorf("the video is %d px wide, want %d", w, fxWidth)
	}
	browsertest.Screenshot(t, tab, "webrtc-live")
	lat := readProbe(t, tab, src)
	pct := func(p int) time.Duration { return lat[(len(lat)-1)*p/100] }
	t.Logf("WebRTC: first picture %s after the page was asked for; %.1f frames a second decoded; latency from capture to decode over %d frames: min %s, median %s, p90 %s, max %s; agent %+v",
		firstPicture.Round(time.Millisecond), float64(f2-f1)/3, len(lat), pct(0).Round(100*time.Microsecond), pct(50).Round(100*time.Microsecond),
		pct(90).Round(100*time.Microsecond), pct(100).Round(100*time.Microsecond), r.a.RTCCounts())
	closeTab()

	// The hostile receiver: the page refuses its answer, and shows the
	// frames through the receiver instead, saying why.
	for _, tc := range []struct {
		name   string
		tamper whepTamper
		why    string
	}{
		{"fingerprint", tamperFingerprint, "does not verify"},
		{"signature", tamperSignature, "does not verify"},
		{"key", tamperKey, "not this camera's"},
		{"line", tamperLine, "does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tamper.Store(int32(tc.tamper))
			defer tamper.Store(int32(tamperNone))
			// The last case's fallback stream ends first (LiveOptions.Idle
			// after its page closed): an offer meanwhile is answered 503,
			// the camera streaming its frames to another viewer.
			for i := 0; ; i++ {
				if st := r.srv.LiveStats(); st.StreamsStarted == st.StreamsEnded {
					break
				}
				if i == 1000 {
					t.Fatalf("the frames' stream of the last case did not end: %+v", r.srv.LiveStats())
				}
				time.Sleep(10 * time.Millisecond)
			}
			answered := r.a.RTCCounts().Answered
			tab, closeTab := chromedp.NewContext(ctx)
			defer closeTab()
			if err := chromedp.Do(tab); err != nil {
				t.Fatal(err)
			}
			browsertest.Do(t, tab, chromedp.Navigate(r.hs.URL+"/live/"+r.device), chromedp.WaitReady(chromedp.CSS(`#liveview`)))
			if _, err := browsertest.RunErr(tab, chromedp.Poll[bool](`document.querySelector("#liveview").dataset.transport === "frames" && document.querySelector("#live").naturalWidth > 0`,
				chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
				st := browsertest.Run(t, tab, chromedp.Evaluate[string](`JSON.stringify(Object.assign({}, document.querySelector("#liveview").dataset, {status: document.querySelector("#livestatus").textContent}))`))
				t.Fatalf("no fallback picture: %v; the page: %s; agent %+v %+v; receiver %+v\n%s", err, st, r.a.RTCCounts(), r.a.LiveCounts(), r.srv.LiveStats(), r.log.String())
			}
			st := browsertest.Run(t, tab, chromedp.Evaluate[pageState](`(() => { const d = document.querySelector("#liveview").dataset; return {Transport: d.transport, RTC: d.rtc, State: d.state, Status: document.querySelector("#livestatus").textContent} })()`))
			if !strings.HasPrefix(st.RTC, "refused: ") || !strings.Contains(st.RTC, tc.why) || !strings.Contains(st.Status, "refused") {
				t.Errorf("the page: %+v, want the answer refused (%q) and said so", st, tc.why)
			}
			if v := browsertest.Run(t, tab, chromedp.Evaluate[bool](`(() => { const v = document.querySelector("#livevideo"); return v.hidden && !v.srcObject && v.videoWidth === 0 })()`)); !v {
				t.Errorf("the refused session's video is shown")
			}
			if c := r.a.RTCCounts(); c.Answered != answered+1 {
				t.Errorf("the camera answered %d offers, want %d (the page refused the answer, not the camera the offer)", c.Answered, answered+1)
			}
			browsertest.Screenshot(t, tab, "webrtc-refused-"+tc.name)
			t.Logf("the page says: %s", st.Status)
		})
	}
}

// startProbe starts the latency probe in tab's live page: each decoded
// frame's index, read from its blocks, and when it was handed for
// composition (requestVideoFrameCallback's presentationTime, on the wall
// clock).
func startProbe(t *testing.T, tab context.Context) {
	t.Helper()
	browsertest.Run(t, tab, chromedp.Evaluate[bool](`(() => {
  const v = document.querySelector("#livevideo");
  const c = document.createElement("canvas");
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext("2d", {willReadFrequently: true});
  window.kfProbe = [];
  window.kfClock = Date.now() - (performance.timeOrigin + performance.now());
  function cb(now, m) {
    g.drawImage(v, 0, 0, c.width, c.height);
    const d = g.getImageData(0, 0, c.width, 20).data;
    let idx = 0;
    for (let k = 0; k < 16; k++) {
      const x = Math.floor(c.width * (20 * k + 10) / 320);
      if (d[(10 * c.width + x) * 4] > 128) { idx |= 1 << k; }
    }
    window.kfProbe.push([idx, performance.timeOrigin + m.presentationTime + window.kfClock]);
    if (window.kfProbe.length < 5000) { v.requestVideoFrameCallback(cb); }
  }
  v.requestVideoFrameCallback(cb);
  return true;
})()`))
}

// readProbe returns the latencies the probe saw, sorted: from each frame's
// capture (its hand-over by the source) to its decode. It fails t when
// the decoded pictures do not carry the fixture's indices in order.
func readProbe(t *testing.T, tab context.Context, src *fixtureSource) []time.Duration {
	t.Helper()
	probe := browsertest.Run(t, tab, chromedp.Evaluate[[][2]float64](`window.kfProbe`))
	var lat []time.Duration
	prev, ordered := -1, 0
	for _, p := range probe {
		k := int(p[0])
		sent, ok := src.sentAt(k)
		if !ok || k >= fxFrames {
			continue
		}
		if k > prev {
			ordered++
		}
		prev = k
		lat = append(lat, time.UnixMicro(int64(p[1]*1000)).Sub(sent))
	}
	if len(lat) < 30 || ordered < len(probe)*9/10 {
		t.Fatalf("of %d decoded frames probed, %d carry the index of a frame sent, %d in increasing order: the decoded pictures are not the fixture's", len(probe), len(lat), ordered)
	}
	slices.Sort(lat)
	return lat
}

// swapFingerprint changes the first byte of the answer's first
// fingerprint, as a receiver putting its own DTLS key in would.
func swapFingerprint(t *testing.T, sdp []byte) []byte {
	i := bytes.Index(sdp, []byte("a=fingerprint:sha-256 "))
	if i < 0 {
		t.Error("the answer has no sha-256 fingerprint")
		return sdp
	}
	out := bytes.Clone(sdp)
	j := i + len("a=fingerprint:sha-256 ")
	if out[j] == '0' {
		out[j] = '1'
	} else {
		out[j] = '0'
	}
	return out
}

// TestBrowserWebRTCRelay: with the receiver's TURN relay and the relay
// only (as when the browser cannot reach the camera), alice's page plays
// her camera's H.264 through the receiver: the page's selected path is the
// relay, the relay holds allocations (the page's and the camera's), and
// the answer is still the camera's, verified (DTLS end to end).
// Screenshot: webrtc-relay.
func TestBrowserWebRTCRelay(t *testing.T) {
	fx := makeH264Fixture(t)
	src := &fixtureSource{fx: fx, sent: map[int]time.Time{}}
	r := newLiveRigWith(t, rigOptions{
		deps: func(d *Deps) { d.LiveH264 = src },
		recv: func(o *receiver.Options) {
			o.Live.TURN = receiver.TURNOptions{Listen: "127.0.0.1:0", RelayIP: net.IPv4(127, 0, 0, 1), RelayOnly: true}
		},
	})
	ctx := browsertest.New(t)
	signInAlice(t, r, ctx)
	asked := time.Now()
	browsertest.Do(t, ctx, chromedp.Navigate(r.hs.URL+"/live/"+r.device), chromedp.WaitReady(chromedp.CSS(`#liveview`)))
	if _, err := browsertest.RunErr(ctx, chromedp.Poll[bool](`(() => { const d = document.querySelector("#liveview").dataset; return d.transport === "webrtc" && d.path !== undefined && document.querySelector("#livevideo").videoWidth > 0 })()`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		st := browsertest.Run(t, ctx, chromedp.Evaluate[string](`JSON.stringify(Object.assign({}, document.querySelector("#liveview").dataset, {status: document.querySelector("#livestatus").textContent}))`))
		t.Fatalf("no WebRTC picture through the relay: %v; the page: %s; agent %+v; receiver %+v\n%s", err, st, r.a.RTCCounts(), r.srv.LiveStats(), r.log.String())
	}
	first := time.Since(asked)
	startProbe(t, ctx)
	frames := func() int {
		return browsertest.Run(t, ctx, chromedp.Evaluate[int](`document.querySelector("#livevideo").getVideoPlaybackQuality().totalVideoFrames`))
	}
	f1 := frames()
	time.Sleep(2 * time.Second)
	f2 := frames()
	type pageState struct{ Transport, RTC, Path, Status string }
	st := browsertest.Run(t, ctx, chromedp.Evaluate[pageState](`(() => { const d = document.querySelector("#liveview").dataset; return {Transport: d.transport, RTC: d.rtc, Path: d.path, Status: document.querySelector("#livestatus").textContent} })()`))
	if f2 <= f1 || st.Path != "relay" || st.RTC != "verified" || !strings.Contains(st.Status, "relay") {
		t.Errorf("totalVideoFrames %d then %d; the page %+v: want the video playing through the relay, the answer verified", f1, f2, st)
	}
	if n := r.srv.LiveStats().TURNAllocations; n < 2 {
		t.Errorf("the relay holds %d allocations, want the page's and the camera's", n)
	}
	browsertest.Screenshot(t, ctx, "webrtc-relay")
	lat := readProbe(t, ctx, src)
	pct := func(p int) time.Duration { return lat[(len(lat)-1)*p/100] }
	t.Logf("through the relay: first picture %s after asking; %.1f frames a second decoded; latency from capture to decode over %d frames: min %s, median %s, p90 %s, max %s; receiver %+v",
		first.Round(time.Millisecond), float64(f2-f1)/2, len(lat), pct(0).Round(100*time.Microsecond), pct(50).Round(100*time.Microsecond),
		pct(90).Round(100*time.Microsecond), pct(100).Round(100*time.Microsecond), r.srv.LiveStats())
}

// signInAlice signs alice in with her setup link in ctx's browser.
func signInAlice(t *testing.T, r *liveRig, ctx context.Context) {
	t.Helper()
	browsertest.Do(t, ctx, chromedp.Navigate(r.hs.URL+r.link), chromedp.WaitReady(chromedp.CSS(`input[name=confirm]`)))
	const password = "a long pass phrase for alice"
	browsertest.Do(t, ctx,
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
		chromedp.SendKeys(chromedp.CSS(`input[name=confirm]`), password),
	)
	if resp := browsertest.Response(t, ctx, chromedp.Submit(chromedp.CSS(`form`))); resp.Status != http.StatusOK {
		t.Fatalf("after choosing a password: %d", resp.Status)
	}
}

// TestBrowserWebRTCFromClips: with H.264 clips (clip.codec h264, the exec
// encoder: Debian's ffmpeg with libx264) and no other H.264 source, the
// camera answers WebRTC from the clip encoder's access units, and the
// owner's page plays them: the answer verified, videoWidth the camera's,
// totalVideoFrames increasing.
func TestBrowserWebRTCFromClips(t *testing.T) {
	ffmpegH264OrSkip(t)
	r := newLiveRigWith(t, rigOptions{}, func(c *Config) {
		c.ClipCodec, c.ClipEncoder = "h264", "exec"
	})
	if r.a.liveRTC == nil {
		t.Fatal("an agent built with -tags webrtc and H.264 clips answers no WebRTC")
	}
	ctx := browsertest.New(t)
	signInAlice(t, r, ctx)
	asked := time.Now()
	browsertest.Do(t, ctx, chromedp.Navigate(r.hs.URL+"/live/"+r.device), chromedp.WaitReady(chromedp.CSS(`#liveview`)))
	if _, err := browsertest.RunErr(ctx, chromedp.Poll[bool](`(() => { const v = document.querySelector("#livevideo"); return document.querySelector("#liveview").dataset.transport === "webrtc" && v.videoWidth > 0 })()`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		st := browsertest.Run(t, ctx, chromedp.Evaluate[string](`JSON.stringify(Object.assign({}, document.querySelector("#liveview").dataset, {status: document.querySelector("#livestatus").textContent}))`))
		t.Fatalf("no WebRTC picture from the clip encoder: %v; the page: %s; agent %+v; clips %+v\n%s", err, st, r.a.RTCCounts(), r.a.clips.stats(), r.log.String())
	}
	first := time.Since(asked)
	type video struct {
		Width, Height, Frames int
		RTC                   string
	}
	read := func() video {
		return browsertest.Run(t, ctx, chromedp.Evaluate[video](`(() => { const v = document.querySelector("#livevideo"); return {Width: v.videoWidth, Height: v.videoHeight, Frames: v.getVideoPlaybackQuality().totalVideoFrames, RTC: document.querySelector("#liveview").dataset.rtc} })()`))
	}
	v1 := read()
	time.Sleep(2 * time.Second)
	v2 := read()
	if v2.Width != r.a.cfg.Width || v2.Height != r.a.cfg.Height || v2.Frames <= v1.Frames || v2.RTC != "verified" {
		t.Errorf("the page's video: %+v then %+v; want %dx%d, frames increasing, the answer verified", v1, v2, r.a.cfg.Width, r.a.cfg.Height)
	}
	browsertest.Screenshot(t, ctx, "webrtc-from-clips")
	t.Logf("WebRTC from the clip encoder: first picture %s after asking; %.1f frames a second decoded; agent %+v",
		first.Round(time.Millisecond), float64(v2.Frames-v1.Frames)/2, r.a.RTCCounts())
}
