package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/backoff"
	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/internal/livestream"
)

// The live view (docs/live.md, internal/livestream). The camera sits
// behind NAT, so it asks: it long-polls its receiver's wait endpoint, and
// when an owner watches it streams JPEG frames until the receiver ends the
// stream (its last viewer left) or live.max_time is up. Each request is
// signed by the device key over the receiver's nonce.
//
// The frame loop is never held up: its hook (liveFeed.offer) is one atomic
// load while nobody watches; while a stream is open it copies a frame, at
// most live.fps a second, into the one buffer the encoder is not using, or
// drops the frame (counted) when the encoder still holds it.
//
// With end-to-end encryption (docs/e2ee.md §8) the stream is sealed: it
// starts with a key frame (a new stream key sealed to every key of the
// owner's set: the receiver cannot prove which key is the viewer's, and
// every key of the set is the owner's) and each JPEG goes out encrypted
// under that key. With e2ee on and no key set yet there is no live view
// at all: never a picture in the clear.

// liveWaitTimeout bounds one wait request (the receiver answers within
// its own wait, 25 s by default).
const liveWaitTimeout = 60 * time.Second

// liveFeed hands frames from the frame loop to the live encoder through a
// one-slot handoff, and counts.
type liveFeed struct {
	on   atomic.Bool // a stream is open: frames are wanted
	gap  time.Duration
	last time.Time // the last frame handed over (the frame loop's own)
	// The one frame buffer: in free while the frame loop may fill it, in
	// slot while it waits for the encoder, with the encoder while it
	// encodes.
	slot, free chan *capture.Frame

	// sealer is e2ee (nil: off, frames go in the clear): the sealer of the
	// owner's current key set, nil while there is none.
	sealer func() *e2ee.Sealer
	noSet  atomic.Bool // "no live view without a key set" was logged

	sent, dropped, started, stopped atomic.Uint64
}

func newLiveFeed(fps float64) *liveFeed {
	l := &liveFeed{gap: time.Duration(float64(time.Second) / fps), slot: make(chan *capture.Frame, 1), free: make(chan *capture.Frame, 1)}
	l.free <- new(capture.Frame)
	return l
}

// offer is the frame loop's hook: it never blocks, and allocates nothing
// once the buffer has held a frame of this size.
func (l *liveFeed) offer(f *capture.Frame) {
	if l == nil || !l.on.Load() {
		return
	}
	if d := f.Time.Sub(l.last); d >= 0 && d < l.gap {
		return // over live.fps
	}
	select {
	case buf := <-l.free:
		f.CopyTo(buf)
		l.last = f.Time
		l.slot <- buf // the only buffer: the slot is empty
	default:
		l.dropped.Add(1) // the encoder is still busy with the last one
	}
}

// LiveCounts are the live view's counters.
type LiveCounts struct {
	Started uint64 `json:"streams_started"`
	Stopped uint64 `json:"streams_stopped"`
	Sent    uint64 `json:"frames_sent"`
	Dropped uint64 `json:"frames_dropped"`
}

// LiveCounts returns the live view's counters (zero when it is off).
func (a *Agent) LiveCounts() LiveCounts {
	l := a.live
	if l == nil {
		return LiveCounts{}
	}
	return LiveCounts{Started: l.started.Load(), Stopped: l.stopped.Load(), Sent: l.sent.Load(), Dropped: l.dropped.Load()}
}

// liveBase returns the receiver's base URL for the live view, or "" and
// why not.
func liveBase(c *Config) (string, string) {
	if !c.LiveEnabled {
		return "", ""
	}
	if isMQTT(c.UploadURL) {
		return "", "live.enabled needs an https:// upload.url (a receiver); with MQTT the live view is off"
	}
	return strings.TrimRight(c.UploadURL, "/"), ""
}

// liveClient is the live view's HTTP client: the uploads' TLS settings and
// device certificate, no overall timeout (a stream is long; each request
// has its own deadline).
func (a *Agent) liveClient() (*http.Client, error) {
	a.certMu.Lock()
	cert := a.cert
	a.certMu.Unlock()
	c, err := httpClient(&a.cfg, cert)
	if err != nil {
		return nil, err
	}
	lc := *c
	lc.Timeout = 0
	lc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &lc, nil
}

// runLive waits to be asked for the live view and streams, until ctx ends.
func (a *Agent) runLive(ctx context.Context, base string) {
	client, err := a.liveClient()
	if err != nil {
		a.log.Error("live view off", "err", err)
		return
	}
	if a.liveRTC != nil {
		defer a.liveRTC.wait() // the WebRTC sessions end with ctx
	}
	bo := backoff.Backoff{Base: time.Second, Cap: time.Minute, Rand: backoff.OrRandom(nil)}
	nonce, lastErr, fresh := "", "", false
	for ctx.Err() == nil {
		if !a.liveKeyed() {
			// e2ee on, no key set: not even a wait (a viewer would ask
			// for a stream the camera cannot send).
			select {
			case <-ctx.Done():
				return
			case <-a.deps.Clock.After(liveNoKeysetRetry):
			}
			continue
		}
		watch, offer, next, err := a.liveWait(ctx, client, base, nonce)
		nonce = next
		var pe *liveProofError
		switch {
		case ctx.Err() != nil:
			return
		case errors.As(err, &pe) && next != "" && !fresh:
			// No nonce yet, or ours expired (a long stream): sign the
			// fresh one given, once.
			fresh = true
			continue
		case err != nil:
			if msg := err.Error(); msg != lastErr {
				a.log.Warn("live view: cannot wait at the receiver; retrying", "err", err)
				lastErr = msg
			}
			select {
			case <-ctx.Done():
				return
			case <-a.deps.Clock.After(bo.Next()):
			}
			continue
		}
		if lastErr != "" {
			a.log.Info("live view: waiting at the receiver again")
			lastErr = ""
		}
		bo.Reset()
		fresh = false
		switch {
		case offer != nil:
			nonce = a.liveAnswer(ctx, client, base, nonce, offer)
		case watch:
			nonce = a.liveStream(ctx, client, base, nonce)
		}
	}
}

// liveNoKeysetRetry is how often the live view looks again for a key set
// while e2ee is on without one.
const liveNoKeysetRetry = 5 * time.Second

// liveKeyed reports whether the live view may stream: e2ee off, or on with
// a key set (logged once each way).
func (a *Agent) liveKeyed() bool {
	l := a.live
	if l.sealer == nil {
		return true
	}
	if l.sealer() != nil {
		if l.noSet.Swap(false) {
			a.log.Info("live view: the owner's key set is here: live streams are sealed to it")
		}
		return true
	}
	if !l.noSet.Swap(true) {
		a.log.Warn("live view: e2ee is on and the camera has no key set of the owner yet: no live view until it has one (never a picture in the clear)")
	}
	return false
}

// liveProofError is a 401: the nonce was missing, expired or used.
type liveProofError struct{ reason string }

func (e *liveProofError) Error() string {
	return "agent: live view: receiver wants a proof: " + e.reason
}

// liveRequest makes a live request for purpose with the proof over nonce
// (none if nonce is "").
func (a *Agent) liveRequest(ctx context.Context, method, url, purpose, nonce string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, fmt.Errorf("agent: live view: %w", err)
	}
	if nonce == "" {
		return req, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(raw) > livestream.MaxNonce {
		return req, nil // a nonce we cannot use: ask without, and get a new one
	}
	sig, err := claimcode.Sign(a.deps.Rand, a.key, livestream.Message(purpose, a.device, raw))
	if err != nil {
		return nil, fmt.Errorf("agent: live view: %w", err)
	}
	req.Header.Set(livestream.NonceHeader, nonce)
	req.Header.Set(livestream.SignatureHeader, base64.RawURLEncoding.EncodeToString(sig))
	return req, nil
}

// liveWait asks the receiver whether anyone watches (watch), or offers a
// WebRTC session (offer, when the camera answers WebRTC); it returns the
// nonce for the next request.
func (a *Agent) liveWait(ctx context.Context, client *http.Client, base, nonce string) (watch bool, offer *liveOffer, next string, err error) {
	wctx, cancel := context.WithTimeout(ctx, liveWaitTimeout)
	defer cancel()
	req, err := a.liveRequest(wctx, http.MethodPost, base+livestream.PathPrefix+a.device+livestream.WaitSuffix, livestream.PurposeWait, nonce, nil)
	if err != nil {
		return false, nil, "", err
	}
	if a.liveRTC != nil {
		req.Header.Set(livestream.AcceptHeader, livestream.AcceptWebRTC)
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, nil, "", fmt.Errorf("agent: live view: %w", err)
	}
	defer resp.Body.Close()
	next = resp.Header.Get(livestream.NonceHeader)
	if resp.StatusCode == http.StatusOK && a.liveRTC != nil {
		watch, offer, err := liveWaitRTC(resp) // webrtc.go
		return watch, offer, next, err
	}
	line := firstLine(resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
		return line+"\n" == livestream.Watch, nil, next, nil
	case http.StatusNoContent:
		return false, nil, next, nil
	case http.StatusUnauthorized:
		return false, nil, next, &liveProofError{line}
	}
	return false, nil, next, fmt.Errorf("agent: live view: receiver replied %d: %s", resp.StatusCode, line)
}

// firstLine reads the first line of a short reply.
func firstLine(r io.Reader) string {
	sc := bufio.NewScanner(io.LimitReader(r, 1<<10))
	if sc.Scan() {
		return strings.TrimSpace(sc.Text())
	}
	return ""
}

// liveStream streams frames until the receiver ends the stream,
// live.max_time is up or ctx ends, and returns the nonce for the next
// request.
func (a *Agent) liveStream(ctx context.Context, client *http.Client, base, nonce string) string {
	l := a.live
	// With e2ee, a new stream key for this stream, sealed to the key set
	// held now: its key frame goes first.
	var sealer *e2ee.Sealer
	var live *e2ee.LiveSealer
	var keyFrame []byte
	if l.sealer != nil {
		if sealer = l.sealer(); sealer == nil {
			return nonce // the key set went: the loop says so, and waits
		}
		var err error
		if live, keyFrame, err = sealer.NewLive(a.device); err != nil {
			a.log.Error("live view: stream not sealed, not sent", "err", err)
			return nonce
		}
	}
	sctx, cancel := context.WithTimeout(ctx, a.cfg.LiveMaxTime+liveWaitTimeout)
	defer cancel()
	pr, pw := io.Pipe()
	req, err := a.liveRequest(sctx, http.MethodPut, base+livestream.PathPrefix+a.device+livestream.StreamSuffix, livestream.PurposeStream, nonce, pr)
	if err != nil {
		a.log.Warn("live view: stream not opened", "err", err)
		return ""
	}
	req.Header.Set("Content-Type", livestream.ClearType)
	if live != nil {
		req.Header.Set("Content-Type", livestream.SealedType)
	}
	type result struct {
		code         int
		reason, next string
		err          error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			pr.CloseWithError(err)
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		res := result{code: resp.StatusCode, next: resp.Header.Get(livestream.NonceHeader)}
		// Accepted: the reply's last line says why the receiver ended it.
		sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<10))
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line+"\n" != livestream.Streaming {
				res.reason = line
				break
			}
		}
		pr.CloseWithError(errors.New("the receiver answered"))
		done <- res
	}()

	sent0, dropped0 := l.sent.Load(), l.dropped.Load()
	l.started.Add(1)
	l.on.Store(true)
	a.log.Info("live view: stream started", "device", a.device, "fps", a.cfg.LiveFPS, "max_side", a.cfg.LiveMaxSide, "sealed", live != nil)
	maxTime := a.deps.Clock.After(a.cfg.LiveMaxTime)
	var buf bytes.Buffer
	var sealedBuf []byte
	var res result
	got, why := false, ""
	if live != nil {
		if err := livestream.WriteFrame(pw, keyFrame); err != nil {
			why = "the receiver ended it"
			goto stop
		}
	}
loop:
	for {
		select {
		case <-ctx.Done():
			why = "the agent is stopping"
			break loop
		case <-maxTime:
			why = "live.max_time is up"
			break loop
		case res = <-done:
			got, why = true, "the receiver ended it"
			break loop
		case f := <-l.slot:
			buf.Reset()
			err := capture.EncodeThumbnail(&buf, f, a.cfg.LiveMaxSide, a.cfg.LiveQuality)
			l.free <- f
			if err != nil {
				a.log.Warn("live view: frame not encoded", "err", err)
				continue
			}
			frame := buf.Bytes()
			if live != nil {
				if l.sealer() != sealer {
					// A new key set (a browser added or removed): a new
					// stream, sealed to it.
					why = "the owner's key set changed"
					break loop
				}
				sealedBuf = live.SealFrame(sealedBuf[:0], frame)
				frame = sealedBuf
			}
			if err := livestream.WriteFrame(pw, frame); err != nil {
				why = "the receiver ended it"
				break loop
			}
			l.sent.Add(1)
		}
	}
stop:
	l.on.Store(false)
	select { // a frame handed over too late goes back
	case f := <-l.slot:
		l.free <- f
	default:
	}
	pw.Close() // the end of the body: the receiver answers
	if !got {
		select {
		case res = <-done:
		case <-a.deps.Clock.After(5 * time.Second):
			cancel()
			res = <-done
		}
	}
	l.stopped.Add(1)
	attrs := []any{"why", why, "frames_sent", l.sent.Load() - sent0, "frames_dropped", l.dropped.Load() - dropped0,
		"streams_started", l.started.Load(), "streams_stopped", l.stopped.Load()}
	switch {
	case res.err != nil:
		attrs = append(attrs, "err", res.err)
	case res.code != http.StatusOK:
		attrs = append(attrs, "status", res.code, "reply", res.reason)
	default:
		attrs = append(attrs, "reply", res.reason)
	}
	a.log.Info("live view: stream stopped", attrs...)
	return res.next
}

// setupLive prepares the live view when live.enabled says so (New).
func (a *Agent) setupLive() {
	base, why := liveBase(&a.cfg)
	if why != "" {
		a.log.Warn(why)
	}
	if base != "" {
		a.live, a.liveURL = newLiveFeed(a.cfg.LiveFPS), base
		if a.e2ee != nil {
			// Sealed to the owner's key set (docs/e2ee.md §8); only when
			// e2ee is on: a sealer func that returns nil means "on, no set
			// yet", which keeps the live view from streaming at all.
			a.live.sealer = a.e2ee.current
		} else if src := a.liveH264(); src != nil {
			// WebRTC (livertc.go): with -tags webrtc and an H.264 source,
			// never with e2ee.
			a.liveRTC = newLiveRTC(a, src)
		}
	}
}

// startLive runs the live view's loop, if on, until ctx ends (Run).
func (a *Agent) startLive(ctx context.Context, wg *sync.WaitGroup) {
	if a.live == nil {
		return
	}
	wg.Go(func() { a.runLive(ctx, a.liveURL) })
}

// liveH264 is the WebRTC live view's H.264: Deps.LiveH264 if set, else
// the H.264 clips' encoder (clip.codec h264), else none.
func (a *Agent) liveH264() H264Source {
	if a.deps.LiveH264 != nil {
		return a.deps.LiveH264
	}
	if a.clips == nil {
		return nil
	}
	return a.clips.liveSource(a.deps.Clock)
}
