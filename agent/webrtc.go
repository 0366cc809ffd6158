//go:build webrtc

package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/internal/livestream"
)

// The WebRTC live view's sessions (livertc.go, docs/live.md "WebRTC"),
// built with -tags webrtc: pion/webrtc, one H.264 video track per
// session, fed from the agent's H264Source through a fan-out that reads
// the source only while a session runs.

const (
	// rtcMaxSessions bounds the WebRTC sessions at once; more offers are
	// refused (the page shows the MJPEG view).
	rtcMaxSessions = 4
	// rtcGather bounds the gathering of ICE candidates for an answer.
	rtcGather = 5 * time.Second
	// rtcConnect ends a session that does not connect in this long (the
	// page gave up, or cannot reach the camera).
	rtcConnect = 20 * time.Second
	// rtcQueue is the access units a session may hold; when it is full
	// the session drops until the next key frame.
	rtcQueue = 8
	// rtcDefaultFrame is a sample's duration when two access units' times
	// say nothing usable.
	rtcDefaultFrame = time.Second / 30
)

// rtcLive answers offers and runs the sessions.
type rtcLive struct {
	a   *Agent
	api *webrtc.API
	fan *rtcFanout

	mu sync.Mutex
	n  int
	wg sync.WaitGroup

	answered, refused, frames atomic.Uint64
	keyRequests               atomic.Uint64 // key frames asked of the encoder for browsers' PLI/FIR
	lastKey                   time.Time     // the last such request (mu)
}

func newLiveRTC(a *Agent, src H264Source) liveRTC {
	m := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	for i, fmtp := range []string{
		"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", // constrained baseline
		"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f", // baseline
		"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f", // constrained high
	} {
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: fmtp, RTCPFeedback: fb},
			PayloadType:        webrtc.PayloadType(102 + 2*i),
		}, webrtc.RTPCodecTypeVideo); err != nil {
			a.log.Error("live view: WebRTC off", "err", err)
			return nil
		}
	}
	var se webrtc.SettingEngine
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se))
	return &rtcLive{a: a, api: api, fan: &rtcFanout{src: src, log: a, subs: map[*rtcSub]struct{}{}}}
}

// RTCCounts returns the WebRTC live view's counters.
func (a *Agent) RTCCounts() RTCCounts {
	r, ok := a.liveRTC.(*rtcLive)
	if !ok {
		return RTCCounts{}
	}
	return RTCCounts{Answered: r.answered.Load(), Refused: r.refused.Load(), Frames: r.frames.Load(), Running: r.sessions(), KeyRequests: r.keyRequests.Load()}
}

func (r *rtcLive) sessions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

func (r *rtcLive) answer(ctx context.Context, o *liveOffer) ([]byte, error) {
	r.mu.Lock()
	if r.n >= rtcMaxSessions {
		r.mu.Unlock()
		r.refused.Add(1)
		return nil, fmt.Errorf("agent: WebRTC: %d sessions already run, the most at once", rtcMaxSessions)
	}
	r.n++
	r.mu.Unlock()
	pc, track, err := r.negotiate(o)
	if err != nil {
		r.mu.Lock()
		r.n--
		r.mu.Unlock()
		r.refused.Add(1)
		return nil, err
	}
	r.answered.Add(1)
	r.wg.Add(1)
	go r.run(ctx, pc, track)
	return []byte(pc.LocalDescription().SDP), nil
}

// negotiate makes a connection with a video track for offer and returns
// it with its answer set and candidates gathered (the receiver's relay's
// too, when it gave one).
func (r *rtcLive) negotiate(o *liveOffer) (_ *webrtc.PeerConnection, _ *webrtc.TrackLocalStaticSample, err error) {
	cfg, err := iceConfiguration(o.ice, r.a.liveURL)
	if err != nil {
		return nil, nil, err
	}
	pc, err := r.api.NewPeerConnection(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: WebRTC: %w", err)
	}
	defer func() {
		if err != nil {
			_ = pc.Close()
		}
	}()
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000}, "video", "keyframe-"+r.a.device)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: WebRTC: %w", err)
	}
	tr, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		return nil, nil, fmt.Errorf("agent: WebRTC: %w", err)
	}
	go r.readRTCP(tr.Sender())
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(o.sdp)}); err != nil {
		return nil, nil, fmt.Errorf("agent: WebRTC: the offer: %w", err)
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: WebRTC: answer: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		return nil, nil, fmt.Errorf("agent: WebRTC: answer: %w", err)
	}
	select {
	case <-gathered:
	case <-r.a.deps.Clock.After(rtcGather):
		// The candidates gathered so far are in the answer.
	}
	return pc, track, nil
}

// keyRequester is an H264Source that can ask its encoder for a key frame
// (the H.264 clips' encoder: ringH264).
type keyRequester interface{ RequestKey() }

// rtcKeyEvery is the least time between two key-frame requests made for
// the browsers' picture-loss reports.
const rtcKeyEvery = time.Second

// readRTCP reads a session's RTCP until the connection closes, and asks the
// encoder for a key frame when the browser reports a lost picture (PLI,
// FIR), at most once every rtcKeyEvery across sessions.
func (r *rtcLive) readRTCP(s *webrtc.RTPSender) {
	kr, ok := r.fan.src.(keyRequester)
	for {
		pkts, _, err := s.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				now := r.a.deps.Clock.Now()
				r.mu.Lock()
				due := now.Sub(r.lastKey) >= rtcKeyEvery
				if due {
					r.lastKey = now
				}
				r.mu.Unlock()
				if due && ok {
					r.keyRequests.Add(1)
					kr.RequestKey()
				}
			}
		}
	}
}

// iceConfiguration reads the receiver's ICE configuration (ICEHeader) for
// the receiver at base (its URL). A relay named by an address on a
// private, loopback or link-local network is taken only when it is the
// receiver's own host, so a receiver cannot aim the camera's TURN traffic
// at a machine on the camera's network.
// its TURN relay with the camera's credentials, and whether media must go
// through it.
func iceConfiguration(h, base string) (webrtc.Configuration, error) {
	var cfg webrtc.Configuration
	if h == "" {
		return cfg, nil
	}
	var ic livestream.ICEConfig
	if len(h) > 4096 || json.Unmarshal([]byte(h), &ic) != nil || len(ic.Servers) > 4 {
		return cfg, fmt.Errorf("agent: WebRTC: a malformed %s from the receiver", livestream.ICEHeader)
	}
	for _, s := range ic.Servers {
		for _, u := range s.URLs {
			if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
				return cfg, fmt.Errorf("agent: WebRTC: %s: %q is not a turn: URL", livestream.ICEHeader, u)
			}
			host := turnHost(u)
			if host == "" {
				return cfg, fmt.Errorf("agent: WebRTC: %s: %q has no host", livestream.ICEHeader, u)
			}
			if ip := net.ParseIP(host); ip != nil && (ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified()) &&
				!strings.EqualFold(host, receiverHost(base)) {
				return cfg, fmt.Errorf("agent: WebRTC: %s: the relay %q is on a local network and not the receiver's host", livestream.ICEHeader, u)
			}
		}
		cfg.ICEServers = append(cfg.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	if ic.Policy == "relay" {
		cfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	return cfg, nil
}

// run feeds a session's track until the browser leaves, live.max_time is
// up or ctx ends.
func (r *rtcLive) run(ctx context.Context, pc *webrtc.PeerConnection, track *webrtc.TrackLocalStaticSample) {
	defer r.wg.Done()
	connected, ended := make(chan struct{}), make(chan struct{})
	var once1, once2 sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			once1.Do(func() { close(connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			once2.Do(func() { close(ended) })
		}
	})
	why, frames := "", 0
	defer func() {
		_ = pc.Close()
		r.mu.Lock()
		r.n--
		n := r.n
		r.mu.Unlock()
		r.a.log.Info("live view: WebRTC session stopped", "why", why, "frames_sent", frames, "sessions", n)
	}()
	select {
	case <-connected:
	case <-ended:
		why = "the connection failed before it was made"
		return
	case <-ctx.Done():
		why = "the agent is stopping"
		return
	case <-r.a.deps.Clock.After(rtcConnect):
		why = "the browser did not connect"
		return
	}
	r.a.log.Info("live view: WebRTC session connected")
	sub := r.fan.subscribe(ctx)
	defer r.fan.unsubscribe(sub)
	maxTime := r.a.deps.Clock.After(r.a.cfg.LiveMaxTime)
	var prev time.Time
	for {
		select {
		case <-ended:
			why = "the browser left"
			return
		case <-ctx.Done():
			why = "the agent is stopping"
			return
		case <-maxTime:
			why = "live.max_time is up"
			return
		case au := <-sub.ch:
			d := au.Time.Sub(prev)
			if prev.IsZero() || d <= 0 || d > time.Second {
				d = rtcDefaultFrame
			}
			prev = au.Time
			if err := track.WriteSample(media.Sample{Data: au.Data, Duration: d}); err != nil {
				if errors.Is(err, context.Canceled) {
					continue
				}
				why = "the track: " + err.Error()
				return
			}
			frames++
			r.frames.Add(1)
		}
	}
}

// wait waits for the sessions to end (Run, once ctx ended).
func (r *rtcLive) wait() { r.wg.Wait() }

// rtcFanout reads the H.264 source while at least one session runs and
// gives each session every access unit from a key frame on; a session
// whose queue is full drops until the next key frame (a decoder cannot
// skip a picture of a group).
type rtcFanout struct {
	src H264Source
	log *Agent

	mu     sync.Mutex
	subs   map[*rtcSub]struct{}
	cancel context.CancelFunc // the reader's, while it runs
	done   chan struct{}      // closed when the reader returned
}

type rtcSub struct {
	ch     chan AccessUnit
	synced bool // had a key frame since its last drop; under rtcFanout.mu
}

func (f *rtcFanout) subscribe(ctx context.Context) *rtcSub {
	s := &rtcSub{ch: make(chan AccessUnit, rtcQueue)}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs[s] = struct{}{}
	// A reader cancelled (its last session gone) returns first: one
	// reader of the source at a time. It may need f.mu to return.
	for f.cancel == nil && f.done != nil {
		done := f.done
		f.mu.Unlock()
		<-done
		f.mu.Lock()
		if f.done == done {
			f.done = nil
		}
	}
	if f.cancel == nil {
		rctx, cancel := context.WithCancel(ctx)
		f.cancel, f.done = cancel, make(chan struct{})
		go f.read(rctx, f.done)
	}
	return s
}

func (f *rtcFanout) unsubscribe(s *rtcSub) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs, s)
	if len(f.subs) == 0 && f.cancel != nil {
		f.cancel()
		f.cancel = nil
	}
}

func (f *rtcFanout) read(ctx context.Context, done chan struct{}) {
	defer close(done)
	logged := false
	for ctx.Err() == nil {
		au, err := f.src.NextAccessUnit(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !logged {
				f.log.log.Warn("live view: the H.264 source failed; retrying", "err", err)
				logged = true
			}
			select {
			case <-ctx.Done():
			case <-f.log.deps.Clock.After(time.Second):
			}
			continue
		}
		logged = false
		au.Data = append([]byte(nil), au.Data...) // shared, read-only, by every session
		f.mu.Lock()
		for s := range f.subs {
			if !s.synced && !au.Key {
				continue
			}
			select {
			case s.ch <- au:
				s.synced = true
			default:
				s.synced = false // dropped: wait for the next key frame
			}
		}
		f.mu.Unlock()
	}
}

// liveOffer is an offer taken at the wait.
type liveOffer struct {
	id  string
	sdp []byte
	ice string // the receiver's relay and credentials (livestream.ICEConfig, JSON); "" if none
}

// liveWaitRTC reads a wait's 200 reply: watch, or an offer.
func liveWaitRTC(resp *http.Response) (bool, *liveOffer, error) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, livestream.MaxSDP+livestream.MaxOfferID+16))
	if err != nil {
		return false, nil, fmt.Errorf("agent: live view: read the wait's reply: %w", err)
	}
	id, sdp, err := livestream.WaitOffer(b)
	if err != nil {
		return false, nil, fmt.Errorf("agent: live view: %w", err)
	}
	if sdp != nil {
		return false, &liveOffer{id: id, sdp: sdp, ice: resp.Header.Get(livestream.ICEHeader)}, nil
	}
	return string(b) == livestream.Watch, nil, nil
}

// liveAnswer answers an offer through the receiver: the SDP answer and
// the device key's signature, or why not. It returns the nonce for the
// next request.
func (a *Agent) liveAnswer(ctx context.Context, client *http.Client, base, nonce string, o *liveOffer) string {
	body, ctype, sig := []byte(nil), livestream.SDPType, []byte(nil)
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	answer, err := a.liveRTC.answer(ctx, o)
	if err == nil {
		if _, err = livestream.Fingerprints(answer); err == nil {
			sig, err = claimcode.Sign(a.deps.Rand, a.key, livestream.AnswerMessage(a.device, o.sdp, answer))
		}
	}
	if err != nil {
		a.log.Warn("live view: WebRTC offer not answered", "err", err)
		body, ctype = []byte(err.Error()), livestream.RefusedType
	} else {
		body = answer
	}
	req, err := a.liveRequest(actx, http.MethodPost, base+livestream.PathPrefix+a.device+livestream.AnswerSuffix, livestream.PurposeAnswer, nonce, bytes.NewReader(body))
	if err != nil {
		a.log.Warn("live view: WebRTC answer not sent", "err", err)
		return ""
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set(livestream.OfferHeader, o.id)
	if sig != nil {
		req.Header.Set(livestream.AnswerSignatureHeader, base64.RawURLEncoding.EncodeToString(sig))
	}
	resp, err := client.Do(req)
	if err != nil {
		a.log.Warn("live view: WebRTC answer not sent", "err", fmt.Errorf("agent: live view: %w", err))
		return ""
	}
	defer resp.Body.Close()
	line := firstLine(io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusNoContent {
		a.log.Warn("live view: the receiver refused the WebRTC answer", "status", resp.StatusCode, "reply", line)
	} else if sig != nil {
		a.log.Info("live view: WebRTC offer answered", "sessions", a.liveRTC.sessions())
	}
	return resp.Header.Get(livestream.NonceHeader)
}

// turnHost is the host of a turn: or turns: URL (RFC 7065:
// turn:host[:port][?transport=...]), without brackets; "" if malformed.
func turnHost(u string) string {
	_, rest, _ := strings.Cut(u, ":")
	rest, _, _ = strings.Cut(rest, "?")
	if h, _, err := net.SplitHostPort(rest); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(rest, "["), "]")
}

// receiverHost is the host of the receiver's URL.
func receiverHost(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	return u.Hostname()
}
