//go:build !webrtc

package agent

import (
	"context"
	"net/http"
)

// newLiveRTC: built without -tags webrtc, the camera answers no WebRTC
// offer (livertc.go) and links no WebRTC code.
func newLiveRTC(*Agent, H264Source) liveRTC { return nil }

// RTCCounts returns the WebRTC live view's counters: none in this build.
func (a *Agent) RTCCounts() RTCCounts { return RTCCounts{} }

// liveOffer is an offer taken at the wait: none without WebRTC.
type liveOffer struct{}

// liveWaitRTC and liveAnswer are never called without WebRTC (a.liveRTC is
// nil).
func liveWaitRTC(*http.Response) (bool, *liveOffer, error) { return false, nil, nil }

func (a *Agent) liveAnswer(_ context.Context, _ *http.Client, _, nonce string, _ *liveOffer) string {
	return nonce
}
