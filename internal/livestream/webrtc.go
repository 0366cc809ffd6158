package livestream

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// WebRTC live view (docs/live.md, "WebRTC"): the owner's page offers a
// WebRTC session (WHEP-style: an SDP offer, POSTed to the receiver), the
// receiver hands the offer to the camera through its wait, and the camera
// answers with its SDP answer and a signature by its device key over
// AnswerMessage, which binds the whole answer (and so its DTLS fingerprints) to the
// offer and to the device: the receiver, which relays both, cannot put
// itself in the middle of the DTLS session without the page noticing.
//
// The wait: a camera that can answer sends AcceptHeader: AcceptWebRTC on
// its wait; the receiver may then answer 200 with the body
// WebRTC + " " + offer ID + "\n" + the offer's SDP. The camera posts its
// answer to AnswerSuffix (proof purpose PurposeAnswer) with OfferHeader and
// AnswerSignatureHeader, the answer's SDP as the body (AnswerType), or
// RefusedType and a line saying why it cannot answer.

// AnswerSuffix: the camera's answer to an offer, below PathPrefix + device.
const AnswerSuffix = "/answer"

// PurposeAnswer is the proof's purpose of an answer request.
const PurposeAnswer = "answer"

// Headers of the WebRTC signalling.
const (
	// AcceptHeader on a wait says what the camera can do besides MJPEG.
	AcceptHeader = "Keyframe-Live-Accept"
	// AcceptWebRTC: the camera answers WebRTC offers.
	AcceptWebRTC = "webrtc"
	// OfferHeader names the offer an answer is for.
	OfferHeader = "Keyframe-Live-Offer"
	// AnswerSignatureHeader carries the device key's signature over
	// AnswerMessage (base64url, no padding), from the camera to the
	// receiver and from the receiver to the page.
	AnswerSignatureHeader = "Keyframe-Answer-Signature"
	// DeviceKeyHeader carries, to the page, the device's public key as
	// the receiver's registry holds it (DER SPKI, base64url, no padding):
	// the page checks that it is the key of the device ID it asked for.
	DeviceKeyHeader = "Keyframe-Device-Key"
)

// WebRTC is the first word of a wait reply that carries an offer.
const WebRTC = "webrtc"

// Content types of the signalling.
const (
	SDPType     = "application/sdp"
	RefusedType = "text/plain"
)

// MaxSDP bounds an offer's or an answer's SDP.
const MaxSDP = 16 << 10

// MaxOfferID bounds an offer ID's length.
const MaxOfferID = 64

// ValidOfferID reports whether id is an offer ID as the receiver makes
// them: 1 to MaxOfferID characters of base64url.
func ValidOfferID(id string) bool {
	if id == "" || len(id) > MaxOfferID {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ErrSDP is an SDP that breaks a bound or does not parse as this package
// needs.
var ErrSDP = errors.New("livestream: SDP")

// CheckSDP checks the shape of an offer or answer: 1..MaxSDP bytes of
// printable ASCII lines (CRLF or LF), the first "v=0".
func CheckSDP(sdp []byte) error {
	if len(sdp) == 0 || len(sdp) > MaxSDP {
		return fmt.Errorf("%w: %d bytes, want 1..%d", ErrSDP, len(sdp), MaxSDP)
	}
	if !bytes.HasPrefix(sdp, []byte("v=0\r\n")) && !bytes.HasPrefix(sdp, []byte("v=0\n")) {
		return fmt.Errorf("%w: does not start with v=0", ErrSDP)
	}
	for i, c := range sdp {
		if (c < 0x20 || c > 0x7e) && c != '\r' && c != '\n' {
			return fmt.Errorf("%w: byte %d is 0x%02x, not printable ASCII", ErrSDP, i, c)
		}
	}
	return nil
}

// maxFingerprints bounds the fingerprint lines of one SDP.
const maxFingerprints = 8

// Fingerprints returns the DTLS certificate fingerprints of sdp, every
// "a=fingerprint:" line, session or media level, in their order, each
// normalised as "hash-func HEX:HEX:…" (the hash function in lower case,
// the hex in upper case). An SDP without any, or with a malformed one, or
// more than 8, is an error.
func Fingerprints(sdp []byte) ([]string, error) {
	var out []string
	for _, line := range strings.Split(string(sdp), "\n") {
		line = strings.TrimSuffix(line, "\r")
		v, ok := strings.CutPrefix(line, "a=fingerprint:")
		if !ok {
			continue
		}
		alg, hex, ok := strings.Cut(strings.TrimSpace(v), " ")
		alg, hex = strings.ToLower(alg), strings.ToUpper(strings.TrimSpace(hex))
		if !ok || alg == "" || len(alg) > 16 || !validFingerprintHex(hex) {
			return nil, fmt.Errorf("%w: malformed a=fingerprint line %q", ErrSDP, clipLine(line))
		}
		if len(out) == maxFingerprints {
			return nil, fmt.Errorf("%w: more than %d fingerprints", ErrSDP, maxFingerprints)
		}
		out = append(out, alg+" "+hex)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no a=fingerprint line", ErrSDP)
	}
	return out, nil
}

// validFingerprintHex: 1 to 64 bytes, "AB:CD:…".
func validFingerprintHex(s string) bool {
	parts := strings.Split(s, ":")
	if len(parts) > 64 {
		return false
	}
	for _, p := range parts {
		if len(p) != 2 || !isHex(p[0]) || !isHex(p[1]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }

// AnswerMessage is what the device key signs for an answer: a domain
// separation string, then the device ID, the SHA-256 of the offer's SDP
// (as the camera received it) and the SHA-256 of the answer's SDP, the
// exact bytes the browser is to apply, each length-prefixed (uint32,
// big-endian). The whole answer is signed, not only its fingerprints: a
// line a verifier's parser skips but a browser's accepts (another
// fingerprint, a candidate) cannot be added.
func AnswerMessage(device string, offer, answer []byte) []byte {
	sum, asum := sha256.Sum256(offer), sha256.Sum256(answer)
	var b bytes.Buffer
	b.WriteString("keyframe webrtc answer v2\x00")
	for _, f := range [][]byte{[]byte(device), sum[:], asum[:]} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		b.Write(n[:])
		b.Write(f)
	}
	return b.Bytes()
}

// WaitOffer parses a wait reply's body: ("", nil, nil) for a plain watch,
// or the offer ID and the offer's SDP.
func WaitOffer(body []byte) (id string, sdp []byte, err error) {
	head, rest, ok := bytes.Cut(body, []byte("\n"))
	word, id, _ := strings.Cut(string(head), " ")
	if word != WebRTC {
		return "", nil, nil
	}
	if !ok || !ValidOfferID(id) {
		return "", nil, fmt.Errorf("livestream: wait reply: malformed offer line %q", clipLine(string(head)))
	}
	if err := CheckSDP(rest); err != nil {
		return "", nil, fmt.Errorf("livestream: wait reply: offer: %w", err)
	}
	return id, rest, nil
}

// ICEHeader carries, on a wait reply with an offer, the ICE servers the
// camera may use (ICEConfig as JSON): the receiver's TURN relay with
// short-lived credentials, when it runs one.
const ICEHeader = "Keyframe-Live-ICE"

// ICEConfig is the ICE configuration the receiver hands to the page and
// the camera.
type ICEConfig struct {
	Servers []ICEServer `json:"servers"`
	// Policy is "relay" when media must go through the relay, else "all".
	Policy string `json:"policy"`
}

// ICEServer is a TURN server and its credentials, as a browser's
// RTCIceServer has them.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username"`
	Credential string   `json:"credential"`
}
