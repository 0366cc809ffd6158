package receiver

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	_ "embed" // live.js
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/internal/livestream"
)

// The live view (docs/live.md): a signed-in owner watches a camera of
// theirs. The camera, behind NAT, long-polls POST /v1/live/{device}/wait
// and, once told someone watches, streams JPEG frames with
// PUT /v1/live/{device}/stream; each of its requests carries a proof signed
// by its device key over a nonce of the receiver (internal/livestream), so
// only the camera itself can stream as itself. The receiver relays the
// frames to the viewers of that camera: signed-in owners whose open pairing
// in the registry, read at each check, is to that camera; an admin sees no
// media. A clear stream's JPEG frames go out as MJPEG
// (multipart/x-mixed-replace) or as the live page script's records
// (GET /live/{device}/frames); a stream sealed end to end (docs/e2ee.md §8)
// only as records: the receiver keeps its key frame, gives it to each viewer
// first, then relays frames it cannot read. Everything is bounded: viewers
// per camera and in all, the frame size, the frame rate, a stream's time;
// each viewer holds at most one frame, so a slow viewer loses frames
// instead of queueing them, and the camera's stream ends when the last
// viewer has been gone for LiveOptions.Idle.

// Live view defaults (LiveOptions).
const (
	DefaultLiveWait       = 25 * time.Second
	DefaultLiveMaxTime    = 5 * time.Minute
	DefaultLiveIdle       = 2 * time.Second
	DefaultLiveFirstFrame = 15 * time.Second
	DefaultLiveMaxFrame   = 512 << 10
	DefaultLiveMaxFPS     = 10
	DefaultLiveViewers    = 4
	DefaultLiveMaxViewers = 64
	// liveNonceTTL is how long a nonce may be used.
	liveNonceTTL = 2 * time.Minute
	// maxLiveUsed bounds the nonces remembered as used.
	maxLiveUsed = 100000
	// liveIOTimeout bounds the wait for one frame from the camera, and the
	// write of one frame to a viewer.
	liveIOTimeout = 10 * time.Second
	// liveRecheck is how often a viewer's session and pairing are checked
	// again while it watches.
	liveRecheck = time.Second
)

// LiveOptions bound the live view; zero fields take the defaults.
type LiveOptions struct {
	// Wait is how long a camera's wait request is held before the receiver
	// answers that nobody watches (204). It must stay below the HTTP
	// server's timeouts.
	Wait time.Duration
	// MaxTime ends a camera's stream, and a viewer's, after this long (the
	// page offers to watch again).
	MaxTime time.Duration
	// Idle ends a camera's stream this long after its last viewer left.
	Idle time.Duration
	// FirstFrame ends a viewer's stream that got no frame in this long (the
	// camera is off, or does not stream).
	FirstFrame time.Duration
	// MaxFrame bounds a frame's bytes: a larger one ends the stream.
	MaxFrame int
	// MaxFPS bounds the frames relayed a second per camera: faster ones are
	// dropped (counted).
	MaxFPS float64
	// ViewersPerCamera and MaxViewers bound the viewers of one camera and of
	// all, and the WebRTC offers waiting for a camera's answer likewise:
	// more are answered 429.
	ViewersPerCamera, MaxViewers int
	// TURN runs a relay for the WebRTC live view (liveturn.go); off
	// without TURN.Listen.
	TURN TURNOptions
}

func (o LiveOptions) withDefaults() LiveOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Wait, DefaultLiveWait)
	def(&o.MaxTime, DefaultLiveMaxTime)
	def(&o.Idle, DefaultLiveIdle)
	def(&o.FirstFrame, DefaultLiveFirstFrame)
	if o.MaxFrame <= 0 {
		o.MaxFrame = DefaultLiveMaxFrame
	}
	if o.MaxFPS <= 0 {
		o.MaxFPS = DefaultLiveMaxFPS
	}
	if o.ViewersPerCamera <= 0 {
		o.ViewersPerCamera = DefaultLiveViewers
	}
	if o.MaxViewers <= 0 {
		o.MaxViewers = DefaultLiveMaxViewers
	}
	return o
}

// LiveStats counts the live view's work.
type LiveStats struct {
	StreamsStarted    uint64 `json:"streams_started"`
	StreamsEnded      uint64 `json:"streams_ended"`
	FramesIn          uint64 `json:"frames_in"`           // frames received from cameras
	FramesRateDropped uint64 `json:"frames_rate_dropped"` // over MaxFPS
	FramesSent        uint64 `json:"frames_sent"`         // frame writes to viewers
	ViewerDrops       uint64 `json:"viewer_drops"`        // frames a slow viewer never got (replaced by a newer one)
	SealedStreams     uint64 `json:"sealed_streams"`      // streams sealed end to end (of StreamsStarted)
	RTCSessions       uint64 `json:"webrtc_sessions"`     // WebRTC offers answered by a camera
	TURNAllocations   int    `json:"turn_allocations"`    // the WebRTC relay's allocations now
	Viewers           int    `json:"viewers"`             // watching now
}

// liveHub is the live view's state: the cameras being watched or waiting.
type liveHub struct {
	opt  LiveOptions
	clk  clock.Clock
	key  [32]byte // the nonces' MAC key
	done chan struct{}
	once sync.Once

	mu      sync.Mutex
	cams    map[string]*liveCam
	viewers int
	offers  int                  // WebRTC offers being answered (livewebrtc.go), bounded by MaxViewers too
	used    map[string]time.Time // nonces spent, until their expiry
	stats   LiveStats
	rtc     rtcState  // WebRTC signalling (livewebrtc.go)
	turn    *liveTURN // the WebRTC relay (liveturn.go); nil: none
}

// liveCam is one camera's viewers, waits and stream.
type liveCam struct {
	viewers  map[*liveViewer]struct{}
	waiting  int
	wake     chan struct{} // closed when a viewer arrives for a camera not streaming
	stream   *liveStream   // the open stream, or nil
	lastLeft time.Time     // when the last viewer left
	offers   []*rtcOffer   // WebRTC offers for the camera's next wait (livewebrtc.go)
	accept   bool          // the camera's last wait said it answers WebRTC
}

// liveViewer holds at most one frame: a newer one replaces it.
type liveViewer struct{ ch chan liveFrame }

func newLiveViewer() *liveViewer { return &liveViewer{ch: make(chan liveFrame, 1)} }

// liveFrame is a frame relayed and the stream it belongs to (whose key
// frame a viewer of a sealed stream needs first).
type liveFrame struct {
	b  []byte
	st *liveStream
}

// give hands the viewer frame without waiting: a frame it has not taken
// yet gives way (dropped is true). Only the relay, holding liveHub.mu,
// gives.
func (v *liveViewer) give(frame liveFrame) (dropped bool) {
	select {
	case v.ch <- frame:
		return false
	default:
	}
	select {
	case <-v.ch:
		dropped = true
	default:
	}
	v.ch <- frame
	return dropped
}

// liveStream is a camera's open stream; end asks it to stop (a newer
// stream of the same camera replaces it). A sealed stream's key frame is
// set, under liveHub.mu, before any of its frames is given to a viewer, and
// neither field changes afterwards.
type liveStream struct {
	end    chan struct{}
	sealed bool
	key    []byte
}

func newLiveHub(opt LiveOptions, clk clock.Clock) (*liveHub, error) {
	h := &liveHub{opt: opt.withDefaults(), clk: clk, done: make(chan struct{}), cams: map[string]*liveCam{}, used: map[string]time.Time{},
		rtc: rtcState{pending: map[string]*rtcOffer{}, sessions: map[string]rtcSession{}}}
	if _, err := io.ReadFull(rand.Reader, h.key[:]); err != nil {
		return nil, fmt.Errorf("receiver: live view key: %w", err)
	}
	return h, nil
}

func (h *liveHub) shutdown() { h.once.Do(func() { close(h.done); h.turn.close() }) }

// Stats returns the live view's counters.
func (s *Server) LiveStats() LiveStats {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	st := s.live.stats
	st.Viewers = s.live.viewers
	st.TURNAllocations = s.live.turnAllocations()
	return st
}

// cam returns device's entry, made if absent; h.mu is held.
func (h *liveHub) cam(device string) *liveCam {
	c := h.cams[device]
	if c == nil {
		c = &liveCam{viewers: map[*liveViewer]struct{}{}, wake: make(chan struct{})}
		h.cams[device] = c
	}
	return c
}

// gc drops device's entry c once nothing uses it; h.mu is held. A handler
// may hold an entry already dropped (an offer's page, whose offer the
// camera took): its gc leaves alone the entry made since, which a camera
// may be waiting on.
func (h *liveHub) gc(device string, c *liveCam) {
	if h.cams[device] == c && len(c.viewers) == 0 && c.waiting == 0 && c.stream == nil && len(c.offers) == 0 {
		delete(h.cams, device)
	}
}

// nonce makes a nonce for device: its expiry (Unix ms, 8 bytes), 8 random
// bytes (two nonces of one millisecond differ) and a MAC of the device and
// both (16 bytes).
func (h *liveHub) nonce(device string) string {
	var b [liveNonceLen]byte
	binary.BigEndian.PutUint64(b[:8], uint64(h.clk.Now().Add(liveNonceTTL).UnixMilli()))
	if _, err := io.ReadFull(rand.Reader, b[8:16]); err != nil {
		panic(err) // crypto/rand does not fail on the platforms Go supports
	}
	copy(b[16:], h.mac(device, b[:16]))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// liveNonceLen is a nonce's length in bytes.
const liveNonceLen = 32

func (h *liveHub) mac(device string, head []byte) []byte {
	m := hmac.New(sha256.New, h.key[:])
	m.Write([]byte(device))
	m.Write([]byte{0})
	m.Write(head)
	return m.Sum(nil)[:16]
}

// errNoProof is a request without a usable nonce: 401, with a fresh one.
var errNoProof = errors.New("no live proof, or its nonce is unknown, expired or used: sign the nonce given")

// liveDevice checks a live request's proof for purpose (deviceProof) and
// that the device is paired to an owner. It answers the refusal itself and
// returns false; every reply carries a fresh nonce.
func (s *Server) liveDevice(w http.ResponseWriter, r *http.Request, purpose string) (string, bool) {
	device, owner, ok := s.deviceProof(w, r, purpose)
	if !ok {
		return "", false
	}
	if owner == "" {
		s.log.Info("receiver: live request refused", "device", device, "purpose", purpose, "why", "the device is paired to no owner", "remote", r.RemoteAddr)
		writeLine(w, http.StatusForbidden, "the device is paired to no owner")
		return "", false
	}
	return device, true
}

// deviceProof checks the proof of a camera's request for purpose (the live
// view's, the key set's: livestream): a nonce of this receiver for the
// device, unexpired and unused, and a signature over it by the key the
// registry holds for the device, which must be neither revoked nor rotated
// away. It returns the device and the owner it is paired to now, by the
// open pairing of the registry read at this request ("" if none). It
// answers a refusal itself and returns false; every reply carries a fresh
// nonce.
func (s *Server) deviceProof(w http.ResponseWriter, r *http.Request, purpose string) (device, owner string, ok bool) {
	device = r.PathValue("device")
	if !ValidDeviceID(device) {
		writeLine(w, http.StatusBadRequest, "malformed device ID")
		return "", "", false
	}
	h := s.live
	w.Header().Set(livestream.NonceHeader, h.nonce(device))
	nonce, err1 := base64.RawURLEncoding.DecodeString(r.Header.Get(livestream.NonceHeader))
	sig, err2 := base64.RawURLEncoding.DecodeString(r.Header.Get(livestream.SignatureHeader))
	now := s.clk.Now()
	if err1 != nil || err2 != nil || len(nonce) != liveNonceLen || len(sig) == 0 ||
		!hmac.Equal(nonce[16:], h.mac(device, nonce[:16])) || now.UnixMilli() > int64(binary.BigEndian.Uint64(nonce[:8])) {
		writeLine(w, http.StatusUnauthorized, errNoProof.Error())
		return "", "", false
	}
	reg, err := s.regs.read()
	if err != nil {
		s.log.Error("receiver: registry unreadable", "err", err)
		w.Header().Set("Retry-After", "5")
		writeLine(w, http.StatusServiceUnavailable, "registry unavailable, retry later")
		return "", "", false
	}
	d := reg.Devices[device]
	why := ""
	switch {
	case d == nil || len(d.SPKI) == 0:
		why = "unknown device"
	case d.Revoked:
		why = "the device is revoked"
	case d.RotatedTo != "":
		why = "the device's key was rotated to another"
	default:
		if _, err := claimcode.Verify(d.SPKI, livestream.Message(purpose, device, nonce), sig); err != nil {
			why = "the live proof does not verify"
		}
	}
	if why != "" {
		s.log.Info("receiver: live request refused", "device", device, "purpose", purpose, "why", why, "remote", r.RemoteAddr)
		writeLine(w, http.StatusForbidden, why)
		return "", "", false
	}
	// Spend the nonce.
	h.mu.Lock()
	defer h.mu.Unlock()
	key := string(nonce)
	if _, spent := h.used[key]; spent {
		writeLine(w, http.StatusUnauthorized, errNoProof.Error())
		return "", "", false
	}
	if len(h.used) >= maxLiveUsed {
		for k, exp := range h.used {
			if now.After(exp) {
				delete(h.used, k)
			}
		}
		if len(h.used) >= maxLiveUsed {
			w.Header().Set("Retry-After", "30")
			writeLine(w, http.StatusServiceUnavailable, "too many live requests, retry later")
			return "", "", false
		}
	}
	h.used[key] = time.UnixMilli(int64(binary.BigEndian.Uint64(nonce[:8])))
	return device, reg.owner(device), true
}

// handleLiveWait answers a camera's POST /v1/live/{device}/wait: 200 with
// livestream.Watch as soon as a viewer waits for a camera not streaming,
// else 204 after LiveOptions.Wait.
func (s *Server) handleLiveWait(w http.ResponseWriter, r *http.Request) {
	device, ok := s.liveDevice(w, r, livestream.PurposeWait)
	if !ok {
		return
	}
	// A camera that answers WebRTC offers says so on each wait; an offer
	// for a camera that does not is answered "no WebRTC" at its wait.
	accept := r.Header.Get(livestream.AcceptHeader) == livestream.AcceptWebRTC
	h := s.live
	h.mu.Lock()
	c := h.cam(device)
	c.accept = accept
	if o := h.takeOffer(c, accept); o != nil {
		h.mu.Unlock()
		s.writeOffer(w, r, device, o)
		return
	}
	if len(c.viewers) > 0 && c.stream == nil {
		h.mu.Unlock()
		writeLine(w, http.StatusOK, livestream.Watch)
		return
	}
	c.waiting++
	wake := c.wake
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		c.waiting--
		h.gc(device, c)
		h.mu.Unlock()
	}()
	select {
	case <-wake:
		w.Header().Set(livestream.NonceHeader, h.nonce(device)) // fresh for the next request
		h.mu.Lock()
		o := h.takeOffer(c, accept)
		watch := len(c.viewers) > 0 && c.stream == nil
		h.mu.Unlock()
		switch {
		case o != nil:
			s.writeOffer(w, r, device, o)
		case watch:
			writeLine(w, http.StatusOK, livestream.Watch)
		default: // an offer withdrawn before the camera took it
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusNoContent)
		}
	case <-h.clk.After(h.opt.Wait):
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	case <-r.Context().Done():
	case <-h.done:
		w.WriteHeader(http.StatusNoContent)
	}
}

// handleLiveStream takes a camera's PUT /v1/live/{device}/stream: frames
// (livestream framing) relayed to the camera's viewers until the camera
// ends the body, its last viewer has been gone for Idle, MaxTime is up, a
// newer stream of the camera replaces it, or a frame breaks a bound.
func (s *Server) handleLiveStream(w http.ResponseWriter, r *http.Request) {
	device, ok := s.liveDevice(w, r, livestream.PurposeStream)
	if !ok {
		return
	}
	sealed, err := liveStreamType(r.Header.Get("Content-Type"))
	if err != nil {
		writeLine(w, http.StatusUnsupportedMediaType, err.Error())
		return
	}
	h := s.live
	st := &liveStream{end: make(chan struct{}), sealed: sealed}
	h.mu.Lock()
	c := h.cam(device)
	if len(c.viewers) == 0 {
		h.gc(device, c)
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent) // nobody watches (any more)
		return
	}
	if c.stream != nil {
		close(c.stream.end) // the newer stream wins
	}
	c.stream = st
	h.stats.StreamsStarted++
	if sealed {
		h.stats.SealedStreams++
	}
	h.mu.Unlock()
	s.log.Info("receiver: live stream started", "device", device, "sealed", sealed, "remote", r.RemoteAddr)

	// The reply starts now, while the body streams in (full duplex): its
	// last line, written when the stream ends, tells the camera at once.
	rc := http.NewResponseController(w)
	_ = rc.EnableFullDuplex()
	// The connection ends with the stream: its body may be cut short, and
	// a connection reused after a full-duplex request whose body was not
	// read to its end is not safe in net/http.
	w.Header().Set("Connection", "close")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, livestream.Streaming)
	_ = rc.Flush()
	start := s.clk.Now()
	frames, why := 0, ""
	defer func() {
		h.mu.Lock()
		if c.stream == st {
			c.stream = nil
		}
		h.stats.StreamsEnded++
		h.gc(device, c)
		h.mu.Unlock()
		s.log.Info("receiver: live stream ended", "device", device, "frames", frames, "why", why)
		_ = rc.SetWriteDeadline(time.Now().Add(liveIOTimeout))
		_, _ = io.WriteString(w, livestream.Ended+why+"\n")
		_ = rc.Flush()
	}()
	// The rate cap is a bucket of two frames, filled at MaxFPS: a camera
	// within the cap whose frames come unevenly (encoding, the network)
	// loses none.
	tokens, last := 2.0, time.Time{}
	var buf []byte
	for {
		_ = rc.SetReadDeadline(time.Now().Add(liveIOTimeout))
		frame, err := livestream.ReadFrame(r.Body, buf, h.opt.MaxFrame)
		switch {
		case errors.Is(err, io.EOF):
			why = "the camera ended it"
			return
		case err != nil:
			why = err.Error()
			return
		}
		if sealed && st.key == nil {
			// The key frame: kept for every viewer, who gets it first; not
			// a picture, so neither counted nor rate-capped.
			if !bytes.HasPrefix(frame, []byte(livestream.KeyFrameMagic)) {
				why = "a sealed stream's first frame is not a key frame"
				return
			}
			h.mu.Lock()
			st.key = frame
			h.mu.Unlock()
			buf = nil
			continue
		}
		if sealed && len(frame) < minSealedFrame {
			why = fmt.Sprintf("a sealed frame of %d bytes, shorter than its counter and tag (%d)", len(frame), minSealedFrame)
			return
		}
		now := s.clk.Now()
		h.mu.Lock()
		h.stats.FramesIn++
		idle := len(c.viewers) == 0 && now.Sub(c.lastLeft) >= h.opt.Idle
		replaced := false
		select {
		case <-st.end:
			replaced = true
		default:
		}
		switch {
		case replaced:
			why = "a newer stream of the camera replaced it"
		case idle:
			why = "no viewer left"
		case now.Sub(start) >= h.opt.MaxTime:
			why = "its maximum time is up"
		}
		if why == "" {
			if !last.IsZero() {
				tokens = min(2, tokens+now.Sub(last).Seconds()*h.opt.MaxFPS)
			}
			last = now
			if tokens < 1 {
				h.stats.FramesRateDropped++
				buf = frame // reuse: no viewer holds it
			} else {
				tokens--
				frames++
				// The frame is handed to viewers, who keep it: read the
				// next one into a new buffer.
				buf = nil
				for v := range c.viewers {
					if v.give(liveFrame{b: frame, st: st}) {
						h.stats.ViewerDrops++
					}
				}
			}
		}
		h.mu.Unlock()
		if why != "" {
			return
		}
		select {
		case <-h.done:
			why = "the receiver is shutting down"
			return
		default:
		}
	}
}

// minSealedFrame is the shortest sealed frame: a counter and a GCM tag.
const minSealedFrame = 8 + 16

// liveStreamType reads a stream request's Content-Type: sealed or clear
// (livestream.ClearType, or none, as cameras before e2ee send).
func liveStreamType(ct string) (sealed bool, err error) {
	if ct == "" {
		return false, nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	switch {
	case err != nil:
	case mt == livestream.SealedType:
		return true, nil
	case mt == livestream.ClearType:
		return false, nil
	}
	return false, fmt.Errorf("Content-Type %q: want %s (JPEG frames) or %s (sealed, docs/e2ee.md §8)", clip(ct), livestream.ClearType, livestream.SealedType)
}

// liveOwner reports whether owner is the owner of device now, by the open
// pairing in the registry as read now (never a cache).
func (s *Server) liveOwner(w http.ResponseWriter, r *http.Request, owner string) (string, bool) {
	device := r.PathValue("device")
	if !ValidDeviceID(device) || !ValidOwner(owner) {
		http.NotFound(w, r)
		return "", false
	}
	reg, err := s.regs.read()
	if err != nil {
		s.viewUnavailable(w, err)
		return "", false
	}
	if reg.owner(device) != owner {
		s.log.Info("receiver: live view denied: the camera is not paired to the owner", "owner", owner, "device", device, "remote", r.RemoteAddr)
		http.NotFound(w, r)
		return "", false
	}
	return device, true
}

// livePage is the data of the live page.
type livePage struct{ Device, Account, ICE string }

// The live page shows the picture with its script (live.js), which reads
// GET /live/{device}/frames: a clear camera's JPEG frames, or a sealed
// camera's key frame and frames, opened in the browser with the owner's
// key (e2ee.js, docs/e2ee.md §8). Without scripts, the MJPEG <img> shows a
// clear camera's picture.
var liveTemplate = template.Must(template.New("live").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Live: {{.Device}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1rem;color:#222}
.live{display:block;max-width:100%;height:auto;background:#111;min-height:120px}
.live[hidden]{display:none}
#livestatus.warn{color:#a00}
nav{margin-bottom:1rem}
</style></head><body>
<nav><a href="/">← your events</a> · signed in as {{.Account}}</nav>
<h1>Live view</h1>
<p>Camera <code>{{.Device}}</code>. The picture comes from the camera while this page is open, for a few minutes at most: reload the page to watch again.</p>
<div id="liveview" data-device="{{.Device}}" data-account="{{.Account}}" data-ice="{{.ICE}}">
<p id="livestatus">Asking the camera for its picture…</p>
<video id="livevideo" class="live" autoplay muted playsinline hidden></video>
<img id="live" class="live" alt="live picture of camera {{.Device}}" hidden>
</div>
<noscript><img class="live" src="/live/{{.Device}}/mjpeg" alt="live picture of camera {{.Device}}"></noscript>
<script src="/static/e2ee.js"></script>
<script src="/static/live.js"></script>
</body></html>
`))

// livePageCSP lets the live page's scripts (this origin's) fetch the
// frames and show them as blob: URLs.
const livePageCSP = "default-src 'none'; script-src 'self'; img-src 'self' blob:; connect-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// handleLivePage shows a camera's live view to its owner.
func (s *Server) handleLivePage(w http.ResponseWriter, r *http.Request, u *user) {
	device, ok := s.liveOwner(w, r, u.name)
	if !ok {
		return
	}
	setPageHeaders(w)
	w.Header().Set("Content-Security-Policy", livePageCSP)
	w.WriteHeader(http.StatusOK)
	// The relay's credentials, for this owner only (WebRTC, liveturn.go).
	ice := ""
	if c := s.live.iceConfig(s.live.turnOwner(u.name), r.Host); c != nil {
		b, _ := json.Marshal(c)
		ice = string(b)
	}
	if err := liveTemplate.Execute(w, livePage{Device: device, Account: u.name, ICE: ice}); err != nil {
		s.log.Debug("receiver: write live page", "err", err)
	}
}

// liveJS is the live page's script.
//
//go:embed live.js
var liveJS []byte

func (s *Server) handleLiveJS(w http.ResponseWriter, r *http.Request, _ *user) {
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "live.js", time.Time{}, bytes.NewReader(liveJS))
}

// liveBoundary separates the MJPEG parts.
const liveBoundary = "keyframe-live-frame"

// liveWatch is one viewer of a camera, joined by liveJoin.
type liveWatch struct {
	device string
	v      *liveViewer
	leave  func()
}

// liveJoin checks that u owns the camera now and adds a viewer to it,
// waking the camera if it is not streaming; it answers a refusal itself.
// With mjpeg, a camera whose stream is sealed is refused (409): MJPEG
// cannot carry it.
func (s *Server) liveJoin(w http.ResponseWriter, r *http.Request, u *user, mjpeg bool) (*liveWatch, bool) {
	device, ok := s.liveOwner(w, r, u.name)
	if !ok {
		return nil, false
	}
	h := s.live
	v := newLiveViewer()
	h.mu.Lock()
	c := h.cam(device)
	if mjpeg && c.stream != nil && c.stream.sealed {
		h.mu.Unlock()
		writeLine(w, http.StatusConflict, errLiveSealedMJPEG)
		return nil, false
	}
	if len(c.viewers) >= h.opt.ViewersPerCamera || h.viewers >= h.opt.MaxViewers {
		h.gc(device, c)
		h.mu.Unlock()
		w.Header().Set("Retry-After", "10")
		writeLine(w, http.StatusTooManyRequests, "too many live viewers; close a tab or retry later")
		return nil, false
	}
	c.viewers[v] = struct{}{}
	h.viewers++
	if c.stream == nil {
		close(c.wake) // the camera's wait returns "watch"
		c.wake = make(chan struct{})
	}
	h.mu.Unlock()
	return &liveWatch{device: device, v: v, leave: func() {
		h.mu.Lock()
		delete(c.viewers, v)
		h.viewers--
		if len(c.viewers) == 0 {
			c.lastLeft = s.clk.Now()
		}
		h.gc(device, c)
		h.mu.Unlock()
	}}, true
}

// errLiveSealedMJPEG: the MJPEG route and a sealed stream.
const errLiveSealedMJPEG = "this camera's live view is end-to-end encrypted: only its page, in a browser holding the owner's key, shows it"

// liveRelay gives a viewer's frames to write, one at a time, until the
// viewer goes, the receiver stops, the viewer's MaxTime is up, no frame
// came within FirstFrame, the session ends or the camera is no longer u's
// (both checked again every second of frames), or write fails.
func (s *Server) liveRelay(r *http.Request, u *user, lw *liveWatch, write func(liveFrame) error) {
	h := s.live
	end := s.clk.After(h.opt.MaxTime)
	first := s.clk.After(h.opt.FirstFrame)
	recheck := s.clk.Now().Add(liveRecheck)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		case <-end:
			return
		case <-first:
			return // no frame came: the camera is off or does not stream
		case fr := <-lw.v.ch:
			first = nil
			if now := s.clk.Now(); !now.Before(recheck) {
				recheck = now.Add(liveRecheck)
				if s.signedIn(r) == nil {
					return // the session ended
				}
				if reg, err := s.regs.read(); err != nil || reg.owner(lw.device) != u.name {
					return // the camera is no longer the owner's
				}
			}
			if err := write(fr); err != nil {
				return
			}
			h.mu.Lock()
			h.stats.FramesSent++
			h.mu.Unlock()
		}
	}
}

// handleLiveMJPEG relays a camera's clear frames to its owner as MJPEG,
// waking the camera if it is not streaming yet. A sealed stream ends it.
func (s *Server) handleLiveMJPEG(w http.ResponseWriter, r *http.Request, u *user) {
	lw, ok := s.liveJoin(w, r, u, true)
	if !ok {
		return
	}
	defer lw.leave()
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "multipart/x-mixed-replace; boundary="+liveBoundary)
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	w.WriteHeader(http.StatusOK)
	_ = rc.SetWriteDeadline(time.Now().Add(liveIOTimeout))
	if _, err := io.WriteString(w, "--"+liveBoundary+"\r\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	s.liveRelay(r, u, lw, func(fr liveFrame) error {
		if fr.st.sealed {
			s.log.Info("receiver: live MJPEG viewer ended: the camera's stream is sealed", "device", lw.device)
			return errors.New(errLiveSealedMJPEG)
		}
		_ = rc.SetWriteDeadline(time.Now().Add(liveIOTimeout))
		// Each part ends with the next boundary, so a reader shows the
		// frame at once rather than when the next one comes.
		if _, err := io.WriteString(w, "Content-Type: image/jpeg\r\nContent-Length: "+strconv.Itoa(len(fr.b))+"\r\n\r\n"); err != nil {
			return err
		}
		if _, err := w.Write(fr.b); err != nil {
			return err
		}
		if _, err := io.WriteString(w, "\r\n--"+liveBoundary+"\r\n"); err != nil {
			return err
		}
		return rc.Flush()
	})
}

// handleLiveFrames relays a camera's frames to its owner's live page as
// records (livestream.WriteRecord): a clear camera's JPEG frames, or a
// sealed stream's key frame, first and again whenever a new stream of the
// camera starts, then its sealed frames, as the camera sent them.
func (s *Server) handleLiveFrames(w http.ResponseWriter, r *http.Request, u *user) {
	lw, ok := s.liveJoin(w, r, u, false)
	if !ok {
		return
	}
	defer lw.leave()
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", livestream.FramesType)
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	w.WriteHeader(http.StatusOK)
	_ = rc.SetWriteDeadline(time.Now().Add(liveIOTimeout))
	if err := rc.Flush(); err != nil {
		return
	}
	var keyed *liveStream // the stream whose key frame the viewer has
	s.liveRelay(r, u, lw, func(fr liveFrame) error {
		_ = rc.SetWriteDeadline(time.Now().Add(liveIOTimeout))
		kind := livestream.KindJPEG
		if fr.st.sealed {
			kind = livestream.KindSealed
			if keyed != fr.st {
				if err := livestream.WriteRecord(w, livestream.KindKey, fr.st.key); err != nil {
					return err
				}
				keyed = fr.st
			}
		}
		if err := livestream.WriteRecord(w, kind, fr.b); err != nil {
			return err
		}
		return rc.Flush()
	})
}
