package livestream

import (
	"strings"
	"testing"
)

// TestFingerprints: the fingerprint lines as both sides normalise them,
// and malformed ones refused.
func TestFingerprints(t *testing.T) {
	fps, err := Fingerprints([]byte("v=0\r\na=fingerprint:SHA-256 ab:cd\r\nm=video 9\na=fingerprint:sha-1 01:02\n"))
	if err != nil || strings.Join(fps, "|") != "sha-256 AB:CD|sha-1 01:02" {
		t.Errorf("fingerprints %q, %v", fps, err)
	}
	for _, bad := range []string{"v=0\r\n", "a=fingerprint:sha-256\r\n", "a=fingerprint:sha-256 ABC\r\n", "a=fingerprint:sha-256 AB:\r\n",
		"a=fingerprint:sha-256 GG\r\n", strings.Repeat("a=fingerprint:sha-256 AB\r\n", 9)} {
		if _, err := Fingerprints([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestWaitOffer: a wait's body, a watch or an offer; malformed offers
// refused.
func TestWaitOffer(t *testing.T) {
	if id, sdp, err := WaitOffer([]byte(Watch)); id != "" || sdp != nil || err != nil {
		t.Errorf("watch: %q %q %v", id, sdp, err)
	}
	if id, sdp, err := WaitOffer([]byte("webrtc abc_-1\nv=0\r\ns=-\r\n")); id != "abc_-1" || string(sdp) != "v=0\r\ns=-\r\n" || err != nil {
		t.Errorf("offer: %q %q %v", id, sdp, err)
	}
	for _, bad := range []string{"webrtc\nv=0\n", "webrtc a/b\nv=0\n", "webrtc abc\nhello", "webrtc abc", "webrtc " + strings.Repeat("a", 65) + "\nv=0\n"} {
		if _, _, err := WaitOffer([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
