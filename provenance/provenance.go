// Package provenance defines keyframe's signed event record: the payload schema,
// its COSE_Sign1 envelope, the device-ID derivation, and the upload bundle that
// carries an envelope with its media.
//
// It is imported by clouds as well as by the device, so it depends only on the
// standard library, go-cose and fxamacker/cbor, and never on device-side
// packages (capture, board, uploader, agent); a test guards that.
//
// The format is specified in docs/envelope.md; test vectors live in
// testdata/vectors.
package provenance

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

// Version is the payload format version this package writes and accepts.
const Version = 1

// ContentType is the COSE content type (header 3) of a keyframe payload.
const ContentType = "application/vnd.keyframe.event+cbor"

// BundleContentType is the HTTP media type of an upload bundle.
const BundleContentType = "application/vnd.keyframe.bundle+cbor"

// HeaderLabelSPKI is the private-use protected header that carries the signer's
// public key as DER SubjectPublicKeyInfo.
const HeaderLabelSPKI int64 = -65537

// Event kinds.
const (
	KindStart = "start"
	KindEnd   = "end"
)

// Clock qualities: whether the capture time comes from a clock known to be set.
const (
	ClockSynced   = "synced"   // the system clock was synchronised (NTP, RTC)
	ClockUnsynced = "unsynced" // no evidence the clock is set (a board without RTC boots in 1970)
)

// Media roles.
const RoleThumbnail = "thumbnail"

// Sentinel errors returned (wrapped) by Verify, so callers can map a failure to
// a reason and a status code.
var (
	ErrMalformed = errors.New("malformed envelope")
	ErrSignature = errors.New("bad signature")
	ErrDeviceID  = errors.New("device ID is not the key's fingerprint")
	ErrMedia     = errors.New("media does not match its hash")
	ErrKey       = errors.New("signer key is not the expected key")
)

// Payload is the signed content of a record. Field names are the CBOR map keys.
type Payload struct {
	Version  uint64  `cbor:"v"`
	Device   string  `cbor:"device"`   // DeviceID of the signing key
	Event    string  `cbor:"event"`    // event ID, shared by an event's start and end records
	Kind     string  `cbor:"kind"`     // KindStart or KindEnd
	Seq      uint64  `cbor:"seq"`      // per-device sequence number, strictly increasing, never reused
	Boot     string  `cbor:"boot"`     // the device's boot ID when the record was signed
	Prev     []byte  `cbor:"prev"`     // SHA-256 of the device's previous envelope; empty for the first
	Time     Time    `cbor:"time"`     // capture time of the record's frame
	Motion   Motion  `cbor:"motion"`   // what the detector saw
	Media    []Media `cbor:"media"`    // objects travelling beside the envelope, bound by hash
	KeyStore string  `cbor:"keystore"` // where the signing key lives: "file" or "tpm"
}

// Time is a capture time with the quality of the clock it was read from.
type Time struct {
	UnixMs int64  `cbor:"unix_ms"` // wall-clock milliseconds since 1970-01-01 UTC
	BootMs uint64 `cbor:"boot_ms"` // milliseconds since boot (monotonic; orders records within a boot)
	Clock  string `cbor:"clock"`   // ClockSynced or ClockUnsynced
}

// Motion summarises the detector's view of the event up to this record.
type Motion struct {
	DurationMs  uint64   `cbor:"duration_ms"`   // from the trigger frame to this record's frame
	Frames      uint32   `cbor:"frames"`        // frames with motion so far
	PeakAreaPPM uint32   `cbor:"peak_area_ppm"` // largest moving area, parts per million of the frame
	Box         [4]int32 `cbor:"box"`           // x0, y0, x1, y1 of the motion in the record's frame, in pixels
	Width       uint32   `cbor:"width"`         // frame width the box refers to
	Height      uint32   `cbor:"height"`        // frame height the box refers to
}

// Media describes one object travelling beside the envelope.
type Media struct {
	Role   string `cbor:"role"`   // RoleThumbnail
	Type   string `cbor:"type"`   // media type, e.g. image/jpeg
	Size   uint64 `cbor:"size"`   // length in bytes
	SHA256 []byte `cbor:"sha256"` // SHA-256 of the bytes
}

// NewMedia describes data with the given role and media type.
func NewMedia(role, typ string, data []byte) Media {
	sum := sha256.Sum256(data)
	return Media{Role: role, Type: typ, Size: uint64(len(data)), SHA256: sum[:]}
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	// Core deterministic encoding, with nil slices written as empty ones: an
	// empty prev or media list then has exactly one encoding (h'' and [],
	// never null), so strict decoding leaves no choice to the encoder.
	eo := cbor.CoreDetEncOptions()
	eo.NilContainers = cbor.NilContainerAsEmpty
	encMode, err = eo.EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   16,
		MaxArrayElements:  1024,
		MaxMapPairs:       64,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// MarshalPayload encodes p as core-deterministic CBOR.
func MarshalPayload(p *Payload) ([]byte, error) {
	b, err := encMode.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("provenance: encode payload: %w", err)
	}
	return b, nil
}

// UnmarshalPayload decodes a payload strictly: unknown fields, duplicate keys,
// indefinite lengths and any encoding that is not the deterministic one are
// rejected.
func UnmarshalPayload(b []byte) (*Payload, error) {
	var p Payload
	if err := decMode.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("provenance: %w: payload: %w", ErrMalformed, err)
	}
	again, err := encMode.Marshal(&p)
	if err != nil || !bytes.Equal(again, b) {
		return nil, fmt.Errorf("provenance: %w: payload is not in deterministic CBOR", ErrMalformed)
	}
	return &p, nil
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// DeviceID derives a device ID from a public key: the first 16 bytes of the
// SHA-256 of its DER SubjectPublicKeyInfo, in lower-case unpadded base32 (26
// characters). An ID can therefore never be mapped to another device's key.
func DeviceID(pub crypto.PublicKey) (string, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("provenance: device ID: %w", err)
	}
	return deviceIDFromSPKI(spki), nil
}

func deviceIDFromSPKI(spki []byte) string {
	sum := sha256.Sum256(spki)
	return strings.ToLower(idEncoding.EncodeToString(sum[:16]))
}

// Algorithm returns the COSE algorithm for a public key: ES256 for P-256 ECDSA,
// EdDSA for Ed25519.
func Algorithm(pub crypto.PublicKey) (cose.Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return cose.AlgorithmES256, nil
		}
	case ed25519.PublicKey:
		return cose.AlgorithmEdDSA, nil
	}
	return 0, fmt.Errorf("provenance: unsupported key type %T (want ECDSA P-256 or Ed25519)", pub)
}

// Sign encodes p and signs it with signer as a tagged COSE_Sign1. p.Device must
// be the signer's DeviceID, p must pass the checks Verify makes on a payload
// (kind, event ID, prev, clock, media hashes), and p.Version is set to
// Version. rnd may be nil (crypto/rand is used).
func Sign(rnd io.Reader, signer crypto.Signer, p *Payload) ([]byte, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	pub := signer.Public()
	alg, err := Algorithm(pub)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("provenance: sign: %w", err)
	}
	id := deviceIDFromSPKI(spki)
	if p.Device != id {
		return nil, fmt.Errorf("provenance: sign: payload device %q is not the signer's %q", p.Device, id)
	}
	p.Version = Version
	// A record Verify would reject must not be signed: it would use up a
	// sequence number and then be quarantined by every receiver.
	if err := checkPayload(p); err != nil {
		return nil, fmt.Errorf("provenance: sign: %w", err)
	}
	payload, err := MarshalPayload(p)
	if err != nil {
		return nil, err
	}
	cs, err := cose.NewSigner(alg, signer)
	if err != nil {
		return nil, fmt.Errorf("provenance: sign: %w", err)
	}
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(alg)
	msg.Headers.Protected[cose.HeaderLabelContentType] = ContentType
	msg.Headers.Protected[cose.HeaderLabelKeyID] = []byte(id)
	msg.Headers.Protected[HeaderLabelSPKI] = spki
	msg.Payload = payload
	if err := msg.Sign(rnd, nil, cs); err != nil {
		return nil, fmt.Errorf("provenance: sign: %w", err)
	}
	env, err := msg.MarshalCBOR()
	if err != nil {
		return nil, fmt.Errorf("provenance: sign: encode envelope: %w", err)
	}
	return env, nil
}

// Verified is what Verify established about a record.
type Verified struct {
	Payload *Payload
	Device  string           // the DeviceID of Key; equals Payload.Device
	Key     crypto.PublicKey // the key that signed
	SPKI    []byte           // Key as DER SubjectPublicKeyInfo
	Hash    [32]byte         // SHA-256 of the envelope bytes (what the next record's Prev holds)
}

// Verify checks an envelope and its media: that it is a tagged COSE_Sign1 whose
// protected header holds only alg, content type, kid and the signer's key and
// whose unprotected header is empty, the signature under the key carried in
// the protected header, that the payload's device ID and the key
// ID are that key's fingerprint, that want (if not nil) is that key, that the
// payload is well-formed deterministic CBOR of this version, and that media
// match the payload's media list one to one, by size and SHA-256.
//
// Errors wrap ErrMalformed, ErrSignature, ErrDeviceID, ErrKey or ErrMedia.
func Verify(envelope []byte, media [][]byte, want crypto.PublicKey) (*Verified, error) {
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(envelope); err != nil {
		return nil, fmt.Errorf("provenance: %w: %w", ErrMalformed, err)
	}
	// The unprotected header is not signed: anything in it could be changed
	// in transit without breaking the signature, and would change the
	// envelope's hash. It must be empty.
	if len(msg.Headers.Unprotected) != 0 {
		return nil, fmt.Errorf("provenance: %w: unprotected header is not empty", ErrMalformed)
	}
	for label := range msg.Headers.Protected {
		if !knownHeader(label) {
			return nil, fmt.Errorf("provenance: %w: unknown protected header %v", ErrMalformed, label)
		}
	}
	if msg.Payload == nil {
		return nil, fmt.Errorf("provenance: %w: no payload (detached payloads are not used)", ErrMalformed)
	}
	spki, ok := msg.Headers.Protected[HeaderLabelSPKI].([]byte)
	if !ok {
		return nil, fmt.Errorf("provenance: %w: no signer key in protected header", ErrMalformed)
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, fmt.Errorf("provenance: %w: signer key: %w", ErrMalformed, err)
	}
	alg, err := Algorithm(pub)
	if err != nil {
		return nil, fmt.Errorf("provenance: %w: %w", ErrMalformed, err)
	}
	if got, err := msg.Headers.Protected.Algorithm(); err != nil || got != alg {
		return nil, fmt.Errorf("provenance: %w: algorithm %v does not match the key", ErrMalformed, got)
	}
	if want != nil {
		wantSPKI, err := x509.MarshalPKIXPublicKey(want)
		if err != nil {
			return nil, fmt.Errorf("provenance: expected key: %w", err)
		}
		if !bytes.Equal(wantSPKI, spki) {
			return nil, fmt.Errorf("provenance: %w", ErrKey)
		}
	}
	verifier, err := cose.NewVerifier(alg, pub)
	if err != nil {
		return nil, fmt.Errorf("provenance: %w: %w", ErrMalformed, err)
	}
	if err := msg.Verify(nil, verifier); err != nil {
		return nil, fmt.Errorf("provenance: %w: %w", ErrSignature, err)
	}
	// Only now is anything in the message trusted.
	id := deviceIDFromSPKI(spki)
	if kid, _ := msg.Headers.Protected[cose.HeaderLabelKeyID].([]byte); string(kid) != id {
		return nil, fmt.Errorf("provenance: %w: key ID %q, fingerprint %q", ErrDeviceID, kid, id)
	}
	if ct, _ := msg.Headers.Protected[cose.HeaderLabelContentType].(string); ct != ContentType {
		return nil, fmt.Errorf("provenance: %w: content type %q", ErrMalformed, ct)
	}
	p, err := UnmarshalPayload(msg.Payload)
	if err != nil {
		return nil, err
	}
	if p.Version != Version {
		return nil, fmt.Errorf("provenance: %w: version %d, want %d", ErrMalformed, p.Version, Version)
	}
	if p.Device != id {
		return nil, fmt.Errorf("provenance: %w: payload device %q, fingerprint %q", ErrDeviceID, p.Device, id)
	}
	if err := checkPayload(p); err != nil {
		return nil, err
	}
	if len(media) != len(p.Media) {
		return nil, fmt.Errorf("provenance: %w: %d media objects, payload lists %d", ErrMedia, len(media), len(p.Media))
	}
	for i, m := range p.Media {
		sum := sha256.Sum256(media[i])
		if uint64(len(media[i])) != m.Size || !bytes.Equal(sum[:], m.SHA256) {
			return nil, fmt.Errorf("provenance: %w: media %d (%s)", ErrMedia, i, m.Role)
		}
	}
	return &Verified{Payload: p, Device: id, Key: pub, SPKI: spki, Hash: HashEnvelope(envelope)}, nil
}

// knownHeader reports whether label is one of the protected header labels a
// record carries: alg, content type, kid and the signer's SPKI.
func knownHeader(label any) bool {
	l, ok := label.(int64) // go-cose decodes integer labels as int64
	if !ok {
		return false
	}
	switch l {
	case cose.HeaderLabelAlgorithm, cose.HeaderLabelContentType, cose.HeaderLabelKeyID, HeaderLabelSPKI:
		return true
	}
	return false
}

func checkPayload(p *Payload) error {
	bad := func(field, why string) error {
		return fmt.Errorf("provenance: %w: %s %s", ErrMalformed, field, why)
	}
	switch {
	case p.Kind != KindStart && p.Kind != KindEnd:
		return bad("kind", fmt.Sprintf("%q is not start or end", p.Kind))
	case !validID(p.Event):
		return bad("event", fmt.Sprintf("%q is not 1-64 characters of [A-Za-z0-9_-]", p.Event))
	case len(p.Prev) != 0 && len(p.Prev) != sha256.Size:
		return bad("prev", fmt.Sprintf("is %d bytes, want 0 or 32", len(p.Prev)))
	case p.Time.Clock != ClockSynced && p.Time.Clock != ClockUnsynced:
		return bad("time.clock", fmt.Sprintf("%q is not synced or unsynced", p.Time.Clock))
	}
	for i, m := range p.Media {
		if len(m.SHA256) != sha256.Size {
			return bad(fmt.Sprintf("media[%d].sha256", i), "is not 32 bytes")
		}
	}
	return nil
}

// validID reports whether s is usable as an event ID (and so as a file name and
// a URL path segment).
func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ValidID reports whether s is a well-formed event ID: 1 to 64 characters of
// A-Z, a-z, 0-9, '-' and '_'.
func ValidID(s string) bool { return validID(s) }

// Bundle is what travels in one upload: an envelope and its media, in the order
// of the payload's media list. On the wire it is the CBOR array
// [envelope: bstr, [* media: bstr]].
type Bundle struct {
	_        struct{} `cbor:",toarray"`
	Envelope []byte
	Media    [][]byte
}

// Marshal encodes the bundle.
func (b *Bundle) Marshal() ([]byte, error) {
	out, err := encMode.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("provenance: encode bundle: %w", err)
	}
	return out, nil
}

// UnmarshalBundle decodes a bundle; it checks only the framing, not the
// envelope (use Verify).
func UnmarshalBundle(data []byte) (*Bundle, error) {
	var b Bundle
	if err := decMode.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("provenance: %w: bundle: %w", ErrMalformed, err)
	}
	if len(b.Envelope) == 0 {
		return nil, fmt.Errorf("provenance: %w: bundle has no envelope", ErrMalformed)
	}
	return &b, nil
}

// HashEnvelope returns the SHA-256 of an envelope's bytes: the value the next
// record's Prev carries.
func HashEnvelope(envelope []byte) [32]byte { return sha256.Sum256(envelope) }
