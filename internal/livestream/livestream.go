// Package livestream is the wire format of a camera's live view, which both
// the device and the receiver speak (docs/live.md): the paths, the proof
// that a request comes from the device it names, and the framing of the
// JPEG frames the device streams. The same proof, with its own purpose,
// authenticates the camera's fetch of its owner's key set (docs/e2ee.md §5,
// FetchKeySet).
//
// The camera sits behind NAT, so it asks: it long-polls
// POST /v1/live/{device}/wait, which the receiver answers when an owner
// starts watching (200) or after a while (204), and then streams frames
// with PUT /v1/live/{device}/stream until the receiver ends the request
// (no viewer left) or its own maximum time is up.
//
// Each request carries a proof: the receiver's nonce (NonceHeader, given on
// every reply of the live endpoints, a 401 included) and the device key's
// signature over Message (SignatureHeader, base64), so a request for a
// device can only come from its key, and a nonce is good for one request.
package livestream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Paths, below the upload URL.
const (
	PathPrefix = "/v1/live/"
	WaitSuffix = "/wait"
	// StreamSuffix: the device's frames, as the request body.
	StreamSuffix = "/stream"
)

// Headers of the proof.
const (
	// NonceHeader carries the receiver's nonce (base64url, no padding): on
	// every reply of a live endpoint, for the device's next request, and on
	// that request.
	NonceHeader = "Keyframe-Live-Nonce"
	// SignatureHeader carries the device key's signature over Message
	// (base64url, no padding).
	SignatureHeader = "Keyframe-Live-Signature"
)

// Purposes: what a proof is for, signed into it.
const (
	PurposeWait   = "wait"
	PurposeStream = "stream"
	// PurposeKeySet: the camera's fetch of its owner's end-to-end
	// encryption key set (KeySetPath, docs/e2ee.md §5).
	PurposeKeySet = "keyset"
)

// The key set route: GET KeySetPrefix + device + KeySetSuffix, below the
// upload URL, answers the signed key set (docs/e2ee.md §3) of the owner the
// device is paired to now, with the same proof as the live view's requests
// (purpose PurposeKeySet).
const (
	KeySetPrefix = "/v1/e2ee/"
	KeySetSuffix = "/keyset"
)

// KeySetPath is the key set route of device.
func KeySetPath(device string) string { return KeySetPrefix + device + KeySetSuffix }

// Watch is the body of a wait reply that asks for a stream.
const Watch = "watch\n"

// The reply to a stream request starts as soon as the stream is accepted,
// with the line Streaming, while the frames go on arriving; its last line,
// written when the receiver ends the stream, is Ended followed by why.
const (
	Streaming = "streaming\n"
	Ended     = "live stream ended: "
)

// MaxNonce bounds a nonce's length.
const MaxNonce = 64

// Message is what the device key signs for one request: a domain separation
// string, then the purpose, the device ID and the nonce, each
// length-prefixed (uint32, big-endian).
func Message(purpose, device string, nonce []byte) []byte {
	var b bytes.Buffer
	b.WriteString("keyframe live v1\x00")
	for _, f := range [][]byte{[]byte(purpose), []byte(device), nonce} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		b.Write(n[:])
		b.Write(f)
	}
	return b.Bytes()
}

// The stream body's type, the stream request's Content-Type: ClearType for
// JPEG frames, SealedType for a stream sealed end to end (docs/e2ee.md §8),
// whose first frame is the key frame (its first 4 bytes KeyFrameMagic) and
// every later one a sealed frame (a counter and AES-GCM ciphertext) that
// only the owner's browsers can open.
const (
	ClearType     = "application/octet-stream"
	SealedType    = "application/vnd.keyframe.sealed-live"
	KeyFrameMagic = "KFL1"
)

// FramesType is the Content-Type of a viewer's frames.
const FramesType = "application/vnd.keyframe.live-frames"

// A viewer's frames (the receiver's GET /live/{device}/frames, read by the
// live page's script): each record is a kind byte, then a frame as the
// camera's framing has it (a 4-byte big-endian length and that many bytes).
// A KindKey record starts a sealed stream: the KindSealed records after it,
// up to the next KindKey, open under it. KindJPEG is a frame in the clear.
const (
	KindJPEG   byte = 'j'
	KindKey    byte = 'k'
	KindSealed byte = 's'
)

// WriteRecord writes one record of a viewer's frames.
func WriteRecord(w io.Writer, kind byte, frame []byte) error {
	var h [5]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:], uint32(len(frame)))
	if _, err := w.Write(h[:]); err != nil {
		return fmt.Errorf("livestream: write record: %w", err)
	}
	if _, err := w.Write(frame); err != nil {
		return fmt.Errorf("livestream: write record: %w", err)
	}
	return nil
}

// ReadRecord reads one record of a viewer's frames (as ReadFrame, after
// the kind byte, which must be one of the three).
func ReadRecord(r io.Reader, buf []byte, max int) (byte, []byte, error) {
	var k [1]byte
	if _, err := io.ReadFull(r, k[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, buf[:0], io.EOF
		}
		return 0, buf[:0], fmt.Errorf("livestream: read record kind: %w", err)
	}
	switch k[0] {
	case KindJPEG, KindKey, KindSealed:
	default:
		return 0, buf[:0], fmt.Errorf("livestream: record kind %q, want %q, %q or %q", k[0], KindJPEG, KindKey, KindSealed)
	}
	frame, err := ReadFrame(r, buf, max)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("livestream: read record: %w", io.ErrUnexpectedEOF)
	}
	return k[0], frame, err
}

// Framing of the stream body: each frame is a 4-byte big-endian length then
// that many bytes (a JPEG, or in a sealed stream the key frame or a sealed
// frame).

// ErrFrameSize is a frame that is empty or over the reader's limit.
var ErrFrameSize = errors.New("livestream: frame size out of bounds")

// WriteFrame writes one frame.
func WriteFrame(w io.Writer, jpeg []byte) error {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(jpeg)))
	if _, err := w.Write(n[:]); err != nil {
		return fmt.Errorf("livestream: write frame: %w", err)
	}
	if _, err := w.Write(jpeg); err != nil {
		return fmt.Errorf("livestream: write frame: %w", err)
	}
	return nil
}

// ReadFrame reads one frame into buf (grown as needed, never past max) and
// returns it. io.EOF means the stream ended cleanly between frames; a frame
// empty or over max is ErrFrameSize (its bytes are not read).
func ReadFrame(r io.Reader, buf []byte, max int) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return buf[:0], io.EOF
		}
		return buf[:0], fmt.Errorf("livestream: read frame length: %w", err)
	}
	size := binary.BigEndian.Uint32(n[:])
	if size == 0 || uint64(size) > uint64(max) {
		return buf[:0], fmt.Errorf("%w: %d bytes (want 1..%d)", ErrFrameSize, size, max)
	}
	if cap(buf) < int(size) {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(r, buf); err != nil {
		return buf[:0], fmt.Errorf("livestream: read frame: %w", err)
	}
	return buf, nil
}
