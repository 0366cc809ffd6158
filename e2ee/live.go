package e2ee

import (
	"crypto/cipher"
	"crypto/hpke"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// The live view's wire format (docs/e2ee.md §8).
const (
	liveKeyFrameMagic = "KFL1"
	liveAADLabel      = "keyframe e2ee live v1\x00"
	streamIDLen       = 32 // hex of 16 random bytes
	frameHeaderSize   = 8  // the counter
)

// ErrReplay: a live frame's counter is not greater than the last opened one.
var ErrReplay = errors.New("e2ee: live frame counter not increasing")

// LiveSealer seals one live stream's frames under its stream key. It is not
// safe for concurrent use: frames are sealed in order, one at a time.
type LiveSealer struct {
	streamID string
	gcm      cipher.AEAD
	counter  uint64
	aad      []byte // "keyframe e2ee live v1\0" ‖ lp(device) ‖ lp(stream id) ‖ counter
	nonce    [NonceSize]byte
}

// NewLive starts a live stream for device: a new stream id and stream key,
// and the key frame (the stream key sealed to every key of the set) that
// viewers get first.
func (s *Sealer) NewLive(device string) (*LiveSealer, []byte, error) {
	var id [16]byte
	var key [KeySize]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, nil, fmt.Errorf("e2ee: live: %w", err)
	}
	if _, err := rand.Read(key[:]); err != nil {
		return nil, nil, fmt.Errorf("e2ee: live: %w", err)
	}
	streamID := hex.EncodeToString(id[:])
	sealed, err := s.Seal(Binding{Device: device, Event: streamID, Seq: 0, Role: RoleLive}, key[:])
	if err != nil {
		return nil, nil, err
	}
	kf := make([]byte, 0, len(liveKeyFrameMagic)+4+streamIDLen+len(sealed))
	kf = append(kf, liveKeyFrameMagic...)
	kf = appendLP(kf, streamID)
	kf = append(kf, sealed...)
	l, err := newLive(device, streamID, key[:])
	if err != nil {
		return nil, nil, err
	}
	return l, kf, nil
}

func newLive(device, streamID string, key []byte) (*LiveSealer, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	aad := make([]byte, 0, len(liveAADLabel)+4+len(device)+4+len(streamID)+8)
	aad = append(aad, liveAADLabel...)
	aad = appendLP(aad, device)
	aad = appendLP(aad, streamID)
	aad = append(aad, make([]byte, 8)...)
	return &LiveSealer{streamID: streamID, gcm: gcm, aad: aad}, nil
}

// StreamID is the stream's id (32 hex characters).
func (l *LiveSealer) StreamID() string { return l.streamID }

// setCounter puts c into the nonce and the aad.
func (l *LiveSealer) setCounter(c uint64) {
	binary.BigEndian.PutUint64(l.nonce[4:], c)
	binary.BigEndian.PutUint64(l.aad[len(l.aad)-8:], c)
}

// SealFrame appends the next frame, counter ‖ AES-128-GCM(stream key,
// 4 zero bytes ‖ counter, jpeg, aad), to dst and returns it. The counter
// starts at 1.
func (l *LiveSealer) SealFrame(dst, jpeg []byte) []byte {
	l.counter++
	l.setCounter(l.counter)
	dst = binary.BigEndian.AppendUint64(dst, l.counter)
	return l.gcm.Seal(dst, l.nonce[:], jpeg, l.aad)
}

// LiveOpener opens one live stream's frames. It is not safe for concurrent
// use.
type LiveOpener struct {
	s LiveSealer // the same key, aad and nonce layout; s.counter is the last opened
}

// ParseKeyFrame splits a live key frame into the stream id and the sealed
// stream key.
func ParseKeyFrame(keyFrame []byte) (streamID string, sealed []byte, err error) {
	const what = "live key frame"
	if len(keyFrame) < len(liveKeyFrameMagic)+4+streamIDLen {
		return "", nil, fieldErr(what, "", "%d bytes, too short", len(keyFrame))
	}
	if string(keyFrame[:4]) != liveKeyFrameMagic {
		return "", nil, fieldErr(what, "magic", "%q, want %q", keyFrame[:4], liveKeyFrameMagic)
	}
	if n := binary.BigEndian.Uint32(keyFrame[4:]); n != streamIDLen {
		return "", nil, fieldErr(what, "stream id", "length %d, want %d", n, streamIDLen)
	}
	id := keyFrame[8 : 8+streamIDLen]
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", nil, fieldErr(what, "stream id", "%q is not lower-case hex", id)
		}
	}
	return string(id), keyFrame[8+streamIDLen:], nil
}

// OpenLive opens a live stream's key frame with the private key whose id is
// keyID: owner is the owner's fingerprint, device the camera's id.
func OpenLive(keyFrame []byte, owner [32]byte, device, keyID string, priv hpke.PrivateKey) (*LiveOpener, error) {
	streamID, sealed, err := ParseKeyFrame(keyFrame)
	if err != nil {
		return nil, err
	}
	key, err := Open(sealed, Binding{Owner: owner, Device: device, Event: streamID, Seq: 0, Role: RoleLive}, keyID, priv)
	if err != nil {
		return nil, fmt.Errorf("e2ee: live key frame: %w", err)
	}
	if len(key) != KeySize {
		return nil, fieldErr("live key frame", "stream key", "%d bytes, want %d", len(key), KeySize)
	}
	l, err := newLive(device, streamID, key)
	if err != nil {
		return nil, err
	}
	return &LiveOpener{s: *l}, nil
}

// OpenLive opens a live key frame with whichever of o's keys it names.
func (o *Owner) OpenLive(keyFrame []byte, device string) (*LiveOpener, error) {
	_, sealed, err := ParseKeyFrame(keyFrame)
	if err != nil {
		return nil, err
	}
	h, err := ParseHeader(sealed)
	if err != nil {
		return nil, fmt.Errorf("e2ee: live key frame: %w", err)
	}
	for _, r := range h.Recipients {
		if k := o.Key(r.ID()); k != nil {
			return OpenLive(keyFrame, o.Fingerprint(), device, k.ID, k.Priv)
		}
	}
	return nil, fmt.Errorf("%w: none of the owner's %d keys", ErrNotRecipient, len(o.Keys))
}

// StreamID is the stream's id.
func (l *LiveOpener) StreamID() string { return l.s.streamID }

// OpenFrame opens a frame, refusing (ErrReplay) one whose counter is not
// greater than the last opened frame's.
func (l *LiveOpener) OpenFrame(frame []byte) ([]byte, error) {
	return l.OpenFrameTo(nil, frame)
}

// OpenFrameTo is OpenFrame appending the JPEG to dst.
func (l *LiveOpener) OpenFrameTo(dst, frame []byte) ([]byte, error) {
	if len(frame) < frameHeaderSize+TagSize {
		return nil, fieldErr("live frame", "", "%d bytes, shorter than a counter and a tag", len(frame))
	}
	if len(frame) > MaxSealedSize {
		return nil, fieldErr("live frame", "", "%d bytes, more than %d", len(frame), MaxSealedSize)
	}
	c := binary.BigEndian.Uint64(frame)
	if c <= l.s.counter {
		return nil, fmt.Errorf("%w: counter %d after %d", ErrReplay, c, l.s.counter)
	}
	l.s.setCounter(c)
	out, err := l.s.gcm.Open(dst, l.s.nonce[:], frame[frameHeaderSize:], l.s.aad)
	if err != nil {
		return nil, fmt.Errorf("%w: live frame %d: %w", ErrOpen, c, err)
	}
	l.s.counter = c
	return out, nil
}
