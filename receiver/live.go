package receiver

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"html/template"
	"io"
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
// frames as MJPEG (multipart/x-mixed-replace) to the viewers of that camera:
// signed-in owners whose open pairing in the registry, read at each check,
// is to that camera; an admin sees no media. Everything is bounded: viewers
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
	// all: more are answered 429.
	ViewersPerCamera, MaxViewers int
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
	used    map[string]time.Time // nonces spent, until their expiry
	stats   LiveStats
}

// liveCam is one camera's viewers, waits and stream.
type liveCam struct {
	viewers  map[*liveViewer]struct{}
	waiting  int
	wake     chan struct{} // closed when a viewer arrives for a camera not streaming
	stream   *liveStream   // the open stream, or nil
	lastLeft time.Time     // when the last viewer left
}

// liveViewer holds at most one frame: a newer one replaces it.
type liveViewer struct{ ch chan []byte }

// give hands the viewer frame without waiting: a frame it has not taken
// yet gives way (dropped is true). Only the relay, holding liveHub.mu,
// gives.
func (v *liveViewer) give(frame []byte) (dropped bool) {
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
// stream of the same camera replaces it).
type liveStream struct{ end chan struct{} }

func newLiveHub(opt LiveOptions, clk clock.Clock) (*liveHub, error) {
	h := &liveHub{opt: opt.withDefaults(), clk: clk, done: make(chan struct{}), cams: map[string]*liveCam{}, used: map[string]time.Time{}}
	if _, err := io.ReadFull(rand.Reader, h.key[:]); err != nil {
		return nil, fmt.Errorf("receiver: live view key: %w", err)
	}
	return h, nil
}

func (h *liveHub) shutdown() { h.once.Do(func() { close(h.done) }) }

// Stats returns the live view's counters.
func (s *Server) LiveStats() LiveStats {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	st := s.live.stats
	st.Viewers = s.live.viewers
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

// gc drops device's entry once nothing uses it; h.mu is held.
func (h *liveHub) gc(device string, c *liveCam) {
	if len(c.viewers) == 0 && c.waiting == 0 && c.stream == nil {
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
	h := s.live
	h.mu.Lock()
	c := h.cam(device)
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
		w.Header().Set(livestream.NonceHeader, h.nonce(device)) // fresh for the stream
		writeLine(w, http.StatusOK, livestream.Watch)
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
	h := s.live
	st := &liveStream{end: make(chan struct{})}
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
	h.mu.Unlock()
	s.log.Info("receiver: live stream started", "device", device, "remote", r.RemoteAddr)

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
					if v.give(frame) {
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
type livePage struct{ Device, Account string }

var liveTemplate = template.Must(template.New("live").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Live: {{.Device}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1rem;color:#222}
img#live{display:block;max-width:100%;height:auto;background:#111;min-height:120px}
nav{margin-bottom:1rem}
</style></head><body>
<nav><a href="/">← your events</a> · signed in as {{.Account}}</nav>
<h1>Live view</h1>
<p>Camera <code>{{.Device}}</code>. The picture comes from the camera while this page is open, for a few minutes at most: reload the page to watch again.</p>
<img id="live" src="/live/{{.Device}}/mjpeg" alt="live picture of camera {{.Device}}">
</body></html>
`))

// handleLivePage shows a camera's live view to its owner.
func (s *Server) handleLivePage(w http.ResponseWriter, r *http.Request, u *user) {
	device, ok := s.liveOwner(w, r, u.name)
	if !ok {
		return
	}
	setPageHeaders(w)
	w.WriteHeader(http.StatusOK)
	if err := liveTemplate.Execute(w, livePage{Device: device, Account: u.name}); err != nil {
		s.log.Debug("receiver: write live page", "err", err)
	}
}

// liveBoundary separates the MJPEG parts.
const liveBoundary = "keyframe-live-frame"

// handleLiveMJPEG relays a camera's frames to its owner as MJPEG, waking
// the camera if it is not streaming yet.
func (s *Server) handleLiveMJPEG(w http.ResponseWriter, r *http.Request, u *user) {
	device, ok := s.liveOwner(w, r, u.name)
	if !ok {
		return
	}
	h := s.live
	v := &liveViewer{ch: make(chan []byte, 1)}
	h.mu.Lock()
	c := h.cam(device)
	if len(c.viewers) >= h.opt.ViewersPerCamera || h.viewers >= h.opt.MaxViewers {
		h.gc(device, c)
		h.mu.Unlock()
		w.Header().Set("Retry-After", "10")
		writeLine(w, http.StatusTooManyRequests, "too many live viewers; close a tab or retry later")
		return
	}
	c.viewers[v] = struct{}{}
	h.viewers++
	if c.stream == nil {
		close(c.wake) // the camera's wait returns "watch"
		c.wake = make(chan struct{})
	}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(c.viewers, v)
		h.viewers--
		if len(c.viewers) == 0 {
			c.lastLeft = s.clk.Now()
		}
		h.gc(device, c)
		h.mu.Unlock()
	}()

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
		case frame := <-v.ch:
			first = nil
			if now := s.clk.Now(); !now.Before(recheck) {
				recheck = now.Add(liveRecheck)
				if s.signedIn(r) == nil {
					return // the session ended
				}
				if reg, err := s.regs.read(); err != nil || reg.owner(device) != u.name {
					return // the camera is no longer the owner's
				}
			}
			_ = rc.SetWriteDeadline(time.Now().Add(liveIOTimeout))
			// Each part ends with the next boundary, so a reader shows
			// the frame at once rather than when the next one comes.
			if _, err := io.WriteString(w, "Content-Type: image/jpeg\r\nContent-Length: "+strconv.Itoa(len(frame))+"\r\n\r\n"); err != nil {
				return
			}
			if _, err := w.Write(frame); err != nil {
				return
			}
			if _, err := io.WriteString(w, "\r\n--"+liveBoundary+"\r\n"); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			h.mu.Lock()
			h.stats.FramesSent++
			h.mu.Unlock()
		}
	}
}
