package agent

import (
	"context"
	"time"
)

// The WebRTC live view (docs/live.md, "WebRTC"). The owner's page offers a
// WebRTC session; the receiver hands the offer to the camera at its wait;
// the camera answers with an H.264 video track and signs the answer's DTLS
// fingerprints with its device key (livestream.AnswerMessage), which the
// page checks, so the receiver relaying the signalling cannot sit in the
// middle. The WebRTC code (pion) is built only with -tags webrtc
// (webrtc.go); without the tag newLiveRTC returns nil, the camera does not
// say it answers WebRTC, and the page shows the MJPEG view. The H.264
// comes from an H264Source (Deps.LiveH264): without one there is no
// WebRTC either. With end-to-end encryption on (e2ee.owner) there is no
// WebRTC: the camera cannot tell the owner's browser from the receiver
// posing as one (an offer is not signed by the owner's keys), and the
// sealed MJPEG view keeps the receiver out of the picture.

// H264Source gives the live view H.264 access units as they are encoded.
type H264Source interface {
	// NextAccessUnit blocks until the next access unit and returns it,
	// or ctx's error once ctx ends. The access unit's bytes are read
	// before the next call only.
	NextAccessUnit(ctx context.Context) (AccessUnit, error)
}

// AccessUnit is one encoded picture: Annex B NAL units (start codes), a
// key frame's with its SPS and PPS first.
type AccessUnit struct {
	Data []byte
	Time time.Time // the frame's capture time
	Key  bool      // an IDR picture: a decoder can start here
}

// liveRTC answers WebRTC offers (webrtc.go).
type liveRTC interface {
	// answer makes a session for offer and returns its SDP answer (ICE
	// candidates gathered). The session then runs by itself until the
	// browser leaves, live.max_time is up or ctx ends.
	answer(ctx context.Context, offer *liveOffer) ([]byte, error)
	// sessions is the number of sessions running now.
	sessions() int
	// wait waits for the sessions to end, once ctx ended.
	wait()
}

// RTCCounts are the WebRTC live view's counters (zero without it).
type RTCCounts struct {
	Answered uint64 `json:"webrtc_answered"` // offers answered
	Refused  uint64 `json:"webrtc_refused"`  // offers refused (over the limit, malformed)
	Frames   uint64 `json:"webrtc_frames"`   // access units written to tracks
	Running  int    `json:"webrtc_sessions"` // sessions now
	// KeyRequests is key frames asked of the encoder for the browsers'
	// picture-loss reports (PLI, FIR), at most one a second.
	KeyRequests uint64 `json:"webrtc_key_requests"`
}
