package receiver

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/internal/livestream"
)

// The WebRTC live view's signalling (docs/live.md, "WebRTC"), WHEP-style:
// the owner's page POSTs its SDP offer to /live/{device}/whep; the receiver
// hands it to the camera at the camera's next wait (a camera that says it
// answers WebRTC); the camera posts its SDP answer and its device key's
// signature over the answer's DTLS fingerprints, the offer's hash and its
// device ID (livestream.AnswerMessage) to /v1/live/{device}/answer; the
// receiver checks the signature with the key its registry holds and
// returns the answer to the page (201, Location for DELETE) with the
// signature and that key, which the page checks itself: the receiver
// relays the signalling, it is not trusted with it. The media then flows
// between the browser and the camera, DTLS end to end.

// rtcAnswerTimeout bounds the wait for a camera's answer to an offer (the
// camera's next wait, then its answer).
const rtcAnswerTimeout = 15 * time.Second

// maxRTCSessions bounds the WebRTC sessions the receiver remembers (for
// DELETE) in all.
const maxRTCSessions = 4096

// rtcState is the hub's WebRTC signalling, under liveHub.mu.
type rtcState struct {
	// pending are the offers a camera took at its wait and has not
	// answered yet, by offer ID.
	pending map[string]*rtcOffer
	// sessions are the answered offers, by ID, until DELETE or their
	// expiry (LiveOptions.MaxTime).
	sessions map[string]rtcSession
}

// rtcSession is an answered offer: whose, and until when it is kept.
type rtcSession struct {
	device, owner string
	until         time.Time
}

// rtcOffer is one page's offer.
type rtcOffer struct {
	id, device string
	sess       string // the offering session's token hash: one pending offer per session
	sdp        []byte
	answer     chan rtcAnswer // buffered (1): the camera's answer, or why there is none
}

// rtcAnswer is a camera's reply to an offer.
type rtcAnswer struct {
	sdp, sig, spki []byte
	status         int    // the page's status when sdp is nil
	why            string // and the reason
}

// errNoWebRTC is the page's answer when the camera cannot answer WebRTC.
const errNoWebRTC = "this camera does not answer WebRTC (its keyframe was built without it, or it has no H.264 source): use the MJPEG view"

// takeOffer takes the first offer queued for c, if any, for a camera whose
// wait says whether it answers WebRTC (accept); offers for a camera that
// does not are answered errNoWebRTC. h.mu is held.
func (h *liveHub) takeOffer(c *liveCam, accept bool) *rtcOffer {
	if len(c.offers) == 0 {
		return nil
	}
	if !accept {
		for _, o := range c.offers {
			o.answer <- rtcAnswer{status: http.StatusNotImplemented, why: errNoWebRTC}
		}
		c.offers = nil
		return nil
	}
	o := c.offers[0]
	c.offers = c.offers[1:]
	h.rtc.pending[o.id] = o
	return o
}

// writeOffer answers a camera's wait with an offer, and the relay's
// credentials for the camera (ICEHeader) when the receiver runs one.
func (s *Server) writeOffer(w http.ResponseWriter, r *http.Request, device string, o *rtcOffer) {
	h := w.Header()
	if c := s.live.iceConfig("d-"+device, r.Host); c != nil {
		b, _ := json.Marshal(c)
		h.Set(livestream.ICEHeader, string(b))
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, livestream.WebRTC+" "+o.id+"\n")
	_, _ = w.Write(o.sdp)
}

// readSDP reads an SDP body of at most livestream.MaxSDP bytes; it answers
// a refusal itself.
func readSDP(w http.ResponseWriter, r *http.Request, what string) ([]byte, bool) {
	b, err := io.ReadAll(io.LimitReader(r.Body, livestream.MaxSDP+1))
	switch {
	case err != nil:
		writeLine(w, http.StatusBadRequest, what+": "+err.Error())
		return nil, false
	case len(b) > livestream.MaxSDP:
		writeLine(w, http.StatusRequestEntityTooLarge, what+": larger than 16 KiB")
		return nil, false
	}
	if err := livestream.CheckSDP(b); err != nil {
		writeLine(w, http.StatusBadRequest, what+": "+err.Error())
		return nil, false
	}
	return b, true
}

// mediaType is r's Content-Type without parameters ("" if malformed).
func mediaType(r *http.Request) string {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}

// handleLiveWHEP takes an owner page's offer (POST /live/{device}/whep,
// application/sdp) and answers the camera's answer: 201 with the answer's
// SDP, Location (for DELETE), the camera's signature and its key as the
// registry holds it. 501 when the camera does not answer WebRTC, 503
// while it streams its frames to another viewer, 504 when it does not
// answer in time, 502 when it refused or its answer does not
// verify, 409 while another offer of this session is pending.
func (s *Server) handleLiveWHEP(w http.ResponseWriter, r *http.Request, u *user) {
	device, ok := s.liveOwner(w, r, u.name)
	if !ok {
		return
	}
	if mediaType(r) != livestream.SDPType {
		writeLine(w, http.StatusUnsupportedMediaType, "an offer is "+livestream.SDPType)
		return
	}
	sdp, ok := readSDP(w, r, "the offer")
	if !ok {
		return
	}
	var idb [16]byte
	if _, err := io.ReadFull(rand.Reader, idb[:]); err != nil {
		writeLine(w, http.StatusInternalServerError, "no randomness")
		return
	}
	o := &rtcOffer{id: base64.RawURLEncoding.EncodeToString(idb[:]), device: device, sess: u.hash, sdp: sdp, answer: make(chan rtcAnswer, 1)}
	h := s.live
	h.mu.Lock()
	c := h.cam(device)
	for _, p := range c.offers {
		if p.sess == u.hash {
			h.gc(device, c)
			h.mu.Unlock()
			writeLine(w, http.StatusConflict, "an offer of this browser for this camera is already pending")
			return
		}
	}
	for _, p := range h.rtc.pending {
		if p.sess == u.hash && p.device == device {
			h.gc(device, c)
			h.mu.Unlock()
			writeLine(w, http.StatusConflict, "an offer of this browser for this camera is already pending")
			return
		}
	}
	if c.stream != nil {
		// The camera streams its frames (to another viewer) and does not
		// wait meanwhile: the page joins that stream at once rather than
		// after rtcAnswerTimeout.
		status, why := http.StatusServiceUnavailable, "the camera is streaming its frames to another viewer: watch those"
		if !c.accept {
			status, why = http.StatusNotImplemented, errNoWebRTC
		}
		h.mu.Unlock()
		writeLine(w, status, why)
		return
	}
	if len(c.offers) >= h.opt.ViewersPerCamera || h.offers >= h.opt.MaxViewers {
		h.gc(device, c)
		h.mu.Unlock()
		w.Header().Set("Retry-After", "10")
		writeLine(w, http.StatusTooManyRequests, "too many live offers for this camera or this receiver; retry later")
		return
	}
	c.offers = append(c.offers, o)
	h.offers++
	close(c.wake) // a waiting camera takes it at once
	c.wake = make(chan struct{})
	h.mu.Unlock()
	// However it ends, the offer is withdrawn: from the queue, or from the
	// offers the camera took (its late answer then finds none).
	defer func() {
		h.mu.Lock()
		for i, p := range c.offers {
			if p == o {
				c.offers = append(c.offers[:i:i], c.offers[i+1:]...)
				break
			}
		}
		delete(h.rtc.pending, o.id)
		h.offers--
		h.gc(device, c)
		h.mu.Unlock()
	}()
	var a rtcAnswer
	select {
	case a = <-o.answer:
	case <-s.clk.After(rtcAnswerTimeout):
		a = rtcAnswer{status: http.StatusGatewayTimeout, why: "the camera did not answer in time (it may be off, streaming MJPEG, or its live view off)"}
	case <-r.Context().Done():
		return
	case <-h.done:
		a = rtcAnswer{status: http.StatusServiceUnavailable, why: "the receiver is shutting down"}
	}
	if a.sdp == nil {
		s.log.Info("receiver: WebRTC offer not answered", "device", device, "owner", u.name, "status", a.status, "why", a.why)
		writeLine(w, a.status, a.why)
		return
	}
	now := s.clk.Now()
	h.mu.Lock()
	if len(h.rtc.sessions) >= maxRTCSessions {
		for id, ss := range h.rtc.sessions {
			if now.After(ss.until) {
				delete(h.rtc.sessions, id)
			}
		}
	}
	if len(h.rtc.sessions) < maxRTCSessions {
		h.rtc.sessions[o.id] = rtcSession{device: device, owner: u.name, until: now.Add(h.opt.MaxTime)}
	}
	h.stats.RTCSessions++
	h.mu.Unlock()
	s.log.Info("receiver: WebRTC offer answered", "device", device, "owner", u.name)
	hd := w.Header()
	hd.Set("Content-Type", livestream.SDPType)
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Location", "/live/"+device+"/whep/"+o.id)
	hd.Set(livestream.AnswerSignatureHeader, base64.RawURLEncoding.EncodeToString(a.sig))
	hd.Set(livestream.DeviceKeyHeader, base64.RawURLEncoding.EncodeToString(a.spki))
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(a.sdp)
}

// handleLiveWHEPDelete ends a WebRTC session for the receiver (WHEP's
// DELETE): 204 for the owner's session, else 404. The media, between the
// browser and the camera, ends when the page closes its connection.
func (s *Server) handleLiveWHEPDelete(w http.ResponseWriter, r *http.Request, u *user) {
	device, ok := s.liveOwner(w, r, u.name)
	if !ok {
		return
	}
	id := r.PathValue("id")
	h := s.live
	h.mu.Lock()
	ss, found := h.rtc.sessions[id]
	if found && ss.device == device && ss.owner == u.name {
		delete(h.rtc.sessions, id)
	} else {
		found = false
	}
	h.mu.Unlock()
	if !found {
		http.NotFound(w, r)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleLiveAnswer takes a camera's answer to an offer it took at its wait
// (POST /v1/live/{device}/answer, the live proof with purpose "answer"):
// the answer's SDP and the device key's signature over
// livestream.AnswerMessage, checked with the registry's key before the
// page gets them; or (text/plain) why the camera does not answer. 204 when
// taken, 404 when the offer is no longer pending, 400 for a malformed or
// unsigned answer (the page then gets 502).
func (s *Server) handleLiveAnswer(w http.ResponseWriter, r *http.Request) {
	device, ok := s.liveDevice(w, r, livestream.PurposeAnswer)
	if !ok {
		return
	}
	id := r.Header.Get(livestream.OfferHeader)
	if !livestream.ValidOfferID(id) {
		writeLine(w, http.StatusBadRequest, "malformed or missing "+livestream.OfferHeader)
		return
	}
	h := s.live
	h.mu.Lock()
	o := h.rtc.pending[id]
	if o == nil || o.device != device {
		h.mu.Unlock()
		writeLine(w, http.StatusNotFound, "no such offer pending for this device (the page gave up, or it timed out)")
		return
	}
	delete(h.rtc.pending, id) // one answer per offer, even a bad one
	h.mu.Unlock()
	if mediaType(r) == livestream.RefusedType {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 512))
		o.answer <- rtcAnswer{status: http.StatusBadGateway, why: "the camera refused the offer: " + clip(oneLine(string(b)))}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	fail := func(code int, why string) {
		s.log.Info("receiver: WebRTC answer refused", "device", device, "why", why, "remote", r.RemoteAddr)
		o.answer <- rtcAnswer{status: http.StatusBadGateway, why: "the camera's answer was refused: " + why}
		writeLine(w, code, why)
	}
	if mediaType(r) != livestream.SDPType {
		fail(http.StatusUnsupportedMediaType, "an answer is "+livestream.SDPType+" (or "+livestream.RefusedType+": why not)")
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, livestream.MaxSDP+1))
	if err != nil {
		fail(http.StatusBadRequest, "the answer: "+err.Error())
		return
	}
	if err := livestream.CheckSDP(b); err != nil {
		fail(http.StatusBadRequest, "the answer: "+err.Error())
		return
	}
	if _, err := livestream.Fingerprints(b); err != nil {
		fail(http.StatusBadRequest, "the answer: "+err.Error())
		return
	}
	sig, err := base64.RawURLEncoding.DecodeString(r.Header.Get(livestream.AnswerSignatureHeader))
	if err != nil || len(sig) == 0 || len(sig) > 256 {
		fail(http.StatusBadRequest, "malformed or missing "+livestream.AnswerSignatureHeader)
		return
	}
	reg, err := s.regs.read()
	if err != nil {
		fail(http.StatusServiceUnavailable, "registry unavailable")
		return
	}
	d := reg.Devices[device]
	if d == nil {
		fail(http.StatusForbidden, "unknown device")
		return
	}
	if _, err := claimcode.Verify(d.SPKI, livestream.AnswerMessage(device, o.sdp, b), sig); err != nil {
		fail(http.StatusForbidden, "the answer's signature does not verify with the device's key")
		return
	}
	o.answer <- rtcAnswer{sdp: b, sig: sig, spki: d.SPKI}
	w.WriteHeader(http.StatusNoContent)
}
