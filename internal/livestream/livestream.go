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

// Framing of the stream body: each frame is a 4-byte big-endian length then
// that many bytes of JPEG.

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
