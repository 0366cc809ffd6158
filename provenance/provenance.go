// Package provenance defines keyframe's signed event record: the payload schema,
// its COSE_Sign1 envelope, the device-ID derivation, and the upload bundle that
// carries an envelope with its media. It also defines the device certificate
// a record may carry (x5chain, cert.go), the rotate record that hands a
// device's identity to a new key (rotate.go), and the segment records of an
// event's clip with their verifier (segment.go, clip.go). It makes no trust decisions:
// which keys and certificate authorities to trust is the receiver's business.
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

// HeaderLabelX5Chain is the COSE x5chain header (RFC 9360): the signer's
// X.509 certificate chain, device certificate first, as DER. It is optional
// and, when present, protected.
const HeaderLabelX5Chain int64 = 33

// Record kinds.
const (
	KindStart  = "start"
	KindEnd    = "end"
	KindRotate = "rotate" // hands the device's identity to a new key (Rotate)
	// KindSegment is a piece of an event's clip: a few seconds of frames,
	// each bound by SHA-256 and capture time (Payload.Segment, clip.go).
	KindSegment = "segment"
)

// ValidKind reports whether k is a record kind: KindStart, KindEnd,
// KindRotate or KindSegment.
func ValidKind(k string) bool {
	return k == KindStart || k == KindEnd || k == KindRotate || k == KindSegment
}

// Clock qualities: whether the capture time comes from a clock known to be set.
const (
	ClockSynced   = "synced"   // the system clock was synchronised (NTP, RTC)
	ClockUnsynced = "unsynced" // no evidence the clock is set (a board without RTC boots in 1970)
)

// MaxMedia is the most media objects one record may carry (its payload's
// media list, and its bundle): a thumbnail today, and room for a clip, its
// initialisation segment and a few more; a verifier refuses more before
// reading or hashing any (docs/envelope.md §4, §7).
const MaxMedia = 8

// Media roles.
const (
	RoleThumbnail     = "thumbnail"
	RoleRotationProof = "rotation-proof" // the new key's proof in a rotate record
	RoleFrames        = "frames"         // a segment record's frames, concatenated in order
)

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
	Kind     string  `cbor:"kind"`     // KindStart, KindEnd or KindRotate
	Seq      uint64  `cbor:"seq"`      // per-device sequence number, strictly increasing, never reused
	Boot     string  `cbor:"boot"`     // the device's boot ID when the record was signed
	Prev     []byte  `cbor:"prev"`     // SHA-256 of the device's previous envelope; empty for the first
	Time     Time    `cbor:"time"`     // capture time of the record's frame
	Motion   Motion  `cbor:"motion"`   // what the detector saw
	Media    []Media `cbor:"media"`    // objects travelling beside the envelope, bound by hash
	KeyStore string  `cbor:"keystore"` // where the signing key lives: "file" or "tpm"
	// NextKey is the new key's DER SubjectPublicKeyInfo in a KindRotate
	// record, and absent (empty) in every other kind.
	NextKey []byte `cbor:"next_key,omitempty"`
	// Source says where the record's frames came from (a camera, a
	// command, a synthetic scene, a directory of images); absent in rotate
	// records and in records of agents that predate it.
	Source *Source `cbor:"source,omitempty"`
	// Segment lists the frames of a KindSegment record, and is absent
	// (nil) in every other kind.
	Segment *Segment `cbor:"segment,omitempty"`
	// Segments holds, in a KindEnd record of an event with a clip, the
	// SHA-256 of each of the clip's segment envelopes in index order; it is
	// absent (empty) in other records and in end records without a clip.
	Segments [][]byte `cbor:"segments,omitempty"`
}

// Frame source kinds (Source.Kind).
const (
	SourceV4L2      = "v4l2"      // a V4L2 camera; Name is the driver's card name, Bus its bus info
	SourceExec      = "exec"      // frames a command wrote to its output (e.g. rpicam-vid); Name is the command's name
	SourceSynthetic = "synthetic" // a generated scene, no camera at all
	SourceImages    = "images"    // a directory of still images; Name is the directory's name
)

// MaxSourceText is the longest Source.Name or Source.Bus, in bytes.
const MaxSourceText = 128

// Source is where a record's frames came from, as the device states it: a
// camera's card and bus names are the driver's word, like everything else in
// the payload (docs/envelope.md §4).
type Source struct {
	Kind string `cbor:"kind"` // SourceV4L2, SourceExec, SourceSynthetic, SourceImages, or a later kind
	Name string `cbor:"name"` // v4l2: card name; exec: the command's name; images: the directory's name; synthetic: ""
	Bus  string `cbor:"bus"`  // v4l2: bus info (e.g. usb-0000:01:00.0-1.2); "" otherwise
}

// FromCamera reports whether the source is a camera: V4L2, or a command
// (the way a Raspberry Pi camera module is read through libcamera). A
// synthetic scene, a directory of images, an unknown kind and an absent
// source are not.
func (s *Source) FromCamera() bool {
	return s != nil && (s.Kind == SourceV4L2 || s.Kind == SourceExec)
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
// Version. rnd may be nil (crypto/rand is used). Rotate records are made by
// Rotate, not Sign.
func Sign(rnd io.Reader, signer crypto.Signer, p *Payload) ([]byte, error) {
	return SignWithChain(rnd, signer, p, nil)
}

// SignWithChain is Sign with the signer's certificate chain in the protected
// x5chain header (label 33): chain holds DER certificates, the device
// certificate (whose key must be the signer's) first, then intermediates; at
// most MaxChainCerts of at most MaxCertSize bytes each. One certificate is
// written as a single bstr, several as an array (RFC 9360). An empty chain
// writes no header, as Sign does.
func SignWithChain(rnd io.Reader, signer crypto.Signer, p *Payload, chain [][]byte) ([]byte, error) {
	if p.Kind == KindRotate {
		return nil, fmt.Errorf("provenance: sign: %w: rotate records are made with Rotate", ErrMalformed)
	}
	return signRecord(rnd, signer, p, chain)
}

// signRecord signs a payload of any kind; for KindRotate the caller (Rotate)
// has checked the rotation fields.
func signRecord(rnd io.Reader, signer crypto.Signer, p *Payload, chain [][]byte) ([]byte, error) {
	spki, id, err := signerKey(signer)
	if err != nil {
		return nil, err
	}
	if p.Device != id {
		return nil, fmt.Errorf("provenance: sign: payload device %q is not the signer's %q", p.Device, id)
	}
	p.Version = Version
	// A record Verify would reject must not be signed: it would use up a
	// sequence number and then be quarantined by every receiver.
	if err := checkPayload(p, spki); err != nil {
		return nil, fmt.Errorf("provenance: sign: %w", err)
	}
	var x5 any
	if len(chain) > 0 {
		certs, err := parseChain(chain)
		if err != nil {
			return nil, fmt.Errorf("provenance: sign: %w", err)
		}
		if !bytes.Equal(certs[0].RawSubjectPublicKeyInfo, spki) {
			return nil, fmt.Errorf("provenance: sign: %w: the certificate chain's device certificate is for another key", ErrKey)
		}
		if len(chain) == 1 {
			x5 = chain[0]
		} else {
			x5 = chain
		}
	}
	payload, err := MarshalPayload(p)
	if err != nil {
		return nil, err
	}
	return sign1(rnd, signer, ContentType, id, spki, x5, payload)
}

// signerKey returns a signer's SPKI and device ID, refusing unsupported keys.
func signerKey(signer crypto.Signer) (spki []byte, id string, err error) {
	pub := signer.Public()
	if _, err := Algorithm(pub); err != nil {
		return nil, "", err
	}
	spki, err = x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, "", fmt.Errorf("provenance: sign: %w", err)
	}
	return spki, deviceIDFromSPKI(spki), nil
}

// sign1 builds and signs a tagged COSE_Sign1 with the protected header
// {alg, content type, kid, signer SPKI[, x5chain]} and an empty unprotected
// header.
func sign1(rnd io.Reader, signer crypto.Signer, contentType, id string, spki []byte, x5chain any, payload []byte) ([]byte, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	alg, err := Algorithm(signer.Public())
	if err != nil {
		return nil, err
	}
	cs, err := cose.NewSigner(alg, signer)
	if err != nil {
		return nil, fmt.Errorf("provenance: sign: %w", err)
	}
	msg := cose.NewSign1Message()
	msg.Headers.Protected.SetAlgorithm(alg)
	msg.Headers.Protected[cose.HeaderLabelContentType] = contentType
	msg.Headers.Protected[cose.HeaderLabelKeyID] = []byte(id)
	msg.Headers.Protected[HeaderLabelSPKI] = spki
	if x5chain != nil {
		msg.Headers.Protected[HeaderLabelX5Chain] = x5chain
	}
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
	// Chain is the x5chain header's certificates, device certificate first,
	// or nil if the envelope carries none. Verify checked only that they
	// parse and that the first one's key is Key: whether to trust them is the
	// caller's decision (see CertNamesDevice and crypto/x509's Verify).
	Chain []*x509.Certificate
	// For a KindRotate record: the new key, which the proof (the record's one
	// media object) showed is held by whoever made the record, its SPKI and
	// its device ID. Nil and empty for other kinds.
	NextKey    crypto.PublicKey
	NextSPKI   []byte
	NextDevice string
}

// Verify checks an envelope and its media: that it is a tagged COSE_Sign1 whose
// protected header holds only alg, content type, kid, the signer's key and
// optionally an x5chain whose device certificate is for that key, and whose
// unprotected header is empty; the signature under the key carried in the
// protected header; that the payload's device ID and the key ID are that
// key's fingerprint; that want (if not nil) is that key; that the payload is
// well-formed deterministic CBOR of this version; and that media match the
// payload's media list one to one, by size and SHA-256. For a rotate record
// it also checks the new key's proof of possession (docs/envelope.md, "Key
// rotation"), and for a segment record each frame of its media object
// against the frame's own SHA-256 (§8 step 15), unless the object is sealed
// (SealedMediaType: only its size and hash are checked). VerifyClip checks
// a clip's records together.
//
// Errors wrap ErrMalformed, ErrSignature, ErrDeviceID, ErrKey or ErrMedia.
func Verify(envelope []byte, media [][]byte, want crypto.PublicKey) (*Verified, error) {
	wantSPKI, err := expectedSPKI(want)
	if err != nil {
		return nil, err
	}
	v, o, err := verifyRecord(envelope, wantSPKI)
	if err != nil {
		return nil, err
	}
	p := v.Payload
	if len(media) != len(p.Media) {
		return nil, fmt.Errorf("provenance: %w: %d media objects, payload lists %d", ErrMedia, len(media), len(p.Media))
	}
	for i, m := range p.Media {
		sum := sha256.Sum256(media[i])
		if uint64(len(media[i])) != m.Size || !bytes.Equal(sum[:], m.SHA256) {
			return nil, fmt.Errorf("provenance: %w: media %d (%s)", ErrMedia, i, m.Role)
		}
	}
	switch p.Kind {
	case KindRotate:
		next, err := verifyProof(media[0], p, o.spki)
		if err != nil {
			return nil, err
		}
		v.NextKey, v.NextSPKI, v.NextDevice = next.pub, next.spki, next.id
	case KindSegment:
		// The media object matched its hash; now each frame in it its
		// own, unless it is sealed (the owner checks them once opened).
		if sealed(p) {
			break
		}
		if err := checkFrames(p.Segment, media[0]); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// expectedSPKI returns want's SPKI DER, or nil if want is nil.
func expectedSPKI(want crypto.PublicKey) ([]byte, error) {
	if want == nil {
		return nil, nil
	}
	spki, err := x509.MarshalPKIXPublicKey(want)
	if err != nil {
		return nil, fmt.Errorf("provenance: expected key: %w", err)
	}
	return spki, nil
}

// verifyRecord performs steps 1-12 of docs/envelope.md §8: everything but
// the media objects.
func verifyRecord(envelope, wantSPKI []byte) (*Verified, *opened, error) {
	o, err := openSign1(envelope, ContentType, true, wantSPKI, "")
	if err != nil {
		return nil, nil, err
	}
	p, err := UnmarshalPayload(o.msg.Payload)
	if err != nil {
		return nil, nil, err
	}
	if p.Version != Version {
		return nil, nil, fmt.Errorf("provenance: %w: version %d, want %d", ErrMalformed, p.Version, Version)
	}
	if p.Device != o.id {
		return nil, nil, fmt.Errorf("provenance: %w: payload device %q, fingerprint %q", ErrDeviceID, p.Device, o.id)
	}
	if err := checkPayload(p, o.spki); err != nil {
		return nil, nil, err
	}
	v := &Verified{Payload: p, Device: o.id, Key: o.pub, SPKI: o.spki, Hash: HashEnvelope(envelope), Chain: o.chain}
	return v, o, nil
}

// opened is a COSE_Sign1 whose headers and signature openSign1 checked.
type opened struct {
	msg   cose.Sign1Message
	pub   crypto.PublicKey
	spki  []byte
	id    string
	chain []*x509.Certificate
}

// openSign1 performs steps 1-8 of docs/envelope.md §8 on a COSE_Sign1 of the
// given content type: parse, headers (x5chain allowed only if allowChain),
// signer key, algorithm, expected key (wantSPKI, if not nil), certificate
// chain, signature, key ID, content type. Error messages start with
// "provenance: " and then what.
func openSign1(data []byte, contentType string, allowChain bool, wantSPKI []byte, what string) (*opened, error) {
	// keyframe's own reader comes first: it allocates nothing, refuses any
	// encoding but the canonical one and anything a record does not carry,
	// and bounds every count, so go-cose decodes only a small structure
	// already known to be well-formed.
	parts, err := splitSign1(data)
	if err != nil {
		return nil, fmt.Errorf("provenance: %s%w", what, err)
	}
	if err := checkProtected(parts.protected, allowChain); err != nil {
		return nil, fmt.Errorf("provenance: %s%w", what, err)
	}
	o := &opened{}
	msg := &o.msg
	if err := msg.UnmarshalCBOR(data); err != nil {
		return nil, fmt.Errorf("provenance: %s%w: %w", what, ErrMalformed, err)
	}
	if len(msg.Headers.Unprotected) != 0 {
		return nil, fmt.Errorf("provenance: %s%w: unprotected header is not empty", what, ErrMalformed)
	}
	for label := range msg.Headers.Protected {
		if !knownHeader(label, allowChain) {
			return nil, fmt.Errorf("provenance: %s%w: unknown protected header %v", what, ErrMalformed, label)
		}
	}
	if msg.Payload == nil {
		return nil, fmt.Errorf("provenance: %s%w: no payload (detached payloads are not used)", what, ErrMalformed)
	}
	spki, ok := msg.Headers.Protected[HeaderLabelSPKI].([]byte)
	if !ok {
		return nil, fmt.Errorf("provenance: %s%w: no signer key in protected header", what, ErrMalformed)
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, fmt.Errorf("provenance: %s%w: signer key: %w", what, ErrMalformed, err)
	}
	alg, err := Algorithm(pub)
	if err != nil {
		return nil, fmt.Errorf("provenance: %s%w: %w", what, ErrMalformed, err)
	}
	if got, err := msg.Headers.Protected.Algorithm(); err != nil || got != alg {
		return nil, fmt.Errorf("provenance: %s%w: algorithm %v does not match the key", what, ErrMalformed, got)
	}
	if wantSPKI != nil && !bytes.Equal(wantSPKI, spki) {
		return nil, fmt.Errorf("provenance: %s%w", what, ErrKey)
	}
	if x5, present := msg.Headers.Protected[HeaderLabelX5Chain]; present {
		ders, err := x5chainDER(x5)
		if err != nil {
			return nil, fmt.Errorf("provenance: %s%w: x5chain: %w", what, ErrMalformed, err)
		}
		if o.chain, err = parseChain(ders); err != nil {
			return nil, fmt.Errorf("provenance: %sx5chain: %w", what, err)
		}
		if !bytes.Equal(o.chain[0].RawSubjectPublicKeyInfo, spki) {
			return nil, fmt.Errorf("provenance: %s%w: x5chain device certificate is for another key than the signer's", what, ErrKey)
		}
	}
	verifier, err := cose.NewVerifier(alg, pub)
	if err != nil {
		return nil, fmt.Errorf("provenance: %s%w: %w", what, ErrMalformed, err)
	}
	if err := msg.Verify(nil, verifier); err != nil {
		return nil, fmt.Errorf("provenance: %s%w: %w", what, ErrSignature, err)
	}
	// Only now is anything in the message trusted.
	id := deviceIDFromSPKI(spki)
	if kid, _ := msg.Headers.Protected[cose.HeaderLabelKeyID].([]byte); string(kid) != id {
		return nil, fmt.Errorf("provenance: %s%w: key ID %q, fingerprint %q", what, ErrDeviceID, kid, id)
	}
	if ct, _ := msg.Headers.Protected[cose.HeaderLabelContentType].(string); ct != contentType {
		return nil, fmt.Errorf("provenance: %s%w: content type %q", what, ErrMalformed, ct)
	}
	o.pub, o.spki, o.id = pub, spki, id
	return o, nil
}

// x5chainDER returns the certificates of an x5chain header value: a bstr (one
// certificate) or an array of bstr.
func x5chainDER(v any) ([][]byte, error) {
	switch c := v.(type) {
	case []byte:
		return [][]byte{c}, nil
	case []any:
		if len(c) == 0 || len(c) > MaxChainCerts {
			return nil, fmt.Errorf("%d certificates, want 1 to %d", len(c), MaxChainCerts)
		}
		out := make([][]byte, len(c))
		for i, e := range c {
			b, ok := e.([]byte)
			if !ok {
				return nil, fmt.Errorf("element %d is %T, not a bstr", i, e)
			}
			out[i] = b
		}
		return out, nil
	}
	return nil, fmt.Errorf("is %T, not a bstr or an array of bstr", v)
}

// knownHeader reports whether label is one of the protected header labels a
// record carries: alg, content type, kid, the signer's SPKI and, where
// allowed, x5chain.
func knownHeader(label any, allowChain bool) bool {
	l, ok := label.(int64) // go-cose decodes integer labels as int64
	if !ok {
		return false
	}
	switch l {
	case cose.HeaderLabelAlgorithm, cose.HeaderLabelContentType, cose.HeaderLabelKeyID, HeaderLabelSPKI:
		return true
	case HeaderLabelX5Chain:
		return allowChain
	}
	return false
}

// checkPayload checks the field constraints of docs/envelope.md §4 (step 12
// of §8); spki is the signer's key.
func checkPayload(p *Payload, spki []byte) error {
	bad := func(field, why string) error {
		return fmt.Errorf("provenance: %w: %s %s", ErrMalformed, field, why)
	}
	switch {
	case !ValidKind(p.Kind):
		return bad("kind", fmt.Sprintf("%q is not start, end, rotate or segment", p.Kind))
	case !validID(p.Event):
		return bad("event", fmt.Sprintf("%q is not 1-64 characters of [A-Za-z0-9_-]", p.Event))
	case len(p.Prev) != 0 && len(p.Prev) != sha256.Size:
		return bad("prev", fmt.Sprintf("is %d bytes, want 0 or 32", len(p.Prev)))
	case p.Time.Clock != ClockSynced && p.Time.Clock != ClockUnsynced:
		return bad("time.clock", fmt.Sprintf("%q is not synced or unsynced", p.Time.Clock))
	}
	if len(p.Media) > MaxMedia {
		return bad("media", fmt.Sprintf("lists %d objects, at most %d", len(p.Media), MaxMedia))
	}
	for i, m := range p.Media {
		if len(m.SHA256) != sha256.Size {
			return bad(fmt.Sprintf("media[%d].sha256", i), "is not 32 bytes")
		}
	}
	if p.Source != nil {
		switch {
		case p.Kind == KindRotate:
			return bad("source", "is not allowed in a rotate record (it has no frame)")
		case !validSourceKind(p.Source.Kind):
			return bad("source.kind", fmt.Sprintf("%q is not 1-32 characters of [a-z0-9-]", p.Source.Kind))
		case len(p.Source.Name) > MaxSourceText:
			return bad("source.name", fmt.Sprintf("is %d bytes, at most %d", len(p.Source.Name), MaxSourceText))
		case len(p.Source.Bus) > MaxSourceText:
			return bad("source.bus", fmt.Sprintf("is %d bytes, at most %d", len(p.Source.Bus), MaxSourceText))
		}
	}
	if err := checkClipFields(p); err != nil {
		return err
	}
	if p.Kind != KindRotate {
		if len(p.NextKey) != 0 {
			return bad("next_key", "is only allowed in a rotate record")
		}
		return nil
	}
	return checkRotatePayload(p, spki)
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

// validSourceKind reports whether k is a well-formed source kind: 1 to 32
// characters of a-z, 0-9 and '-'.
func validSourceKind(k string) bool {
	if len(k) == 0 || len(k) > 32 {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
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

// UnmarshalBundle decodes a bundle; it checks only the framing (and the
// number of media objects, at most MaxMedia), not the envelope (use
// Verify). The envelope and media it returns are slices of data, which
// must not change while they are used.
func UnmarshalBundle(data []byte) (*Bundle, error) {
	b, err := splitBundle(data)
	if err != nil {
		return nil, fmt.Errorf("provenance: %w", err)
	}
	return b, nil
}

// HashEnvelope returns the SHA-256 of an envelope's bytes: the value the next
// record's Prev carries.
func HashEnvelope(envelope []byte) [32]byte { return sha256.Sum256(envelope) }
