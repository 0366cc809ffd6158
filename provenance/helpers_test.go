package provenance_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/keyframe-cam/keyframe/provenance"
)

// This file holds an envelope builder written from docs/envelope.md rather
// than with go-cose's Sign1Message, so the tests can build envelopes the
// package would never produce (wrong headers, non-deterministic payloads,
// other algorithms) and so that a second implementation of the Sig_structure
// checks go-cose's.

// detEnc is RFC 8949 §4.2.1 core deterministic encoding.
var detEnc = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// header is one protected header entry; a list keeps the order explicit.
type header struct {
	label int64
	value any
}

// stdHeaders is the protected header a record carries.
func stdHeaders(alg cose.Algorithm, kid string, spki []byte) []header {
	return []header{
		{1, int64(alg)},
		{3, provenance.ContentType},
		{4, []byte(kid)},
		{provenance.HeaderLabelSPKI, spki},
	}
}

// withoutHeader returns hs without label.
func withoutHeader(hs []header, label int64) []header {
	var out []header
	for _, h := range hs {
		if h.label != label {
			out = append(out, h)
		}
	}
	return out
}

// withHeader returns hs with label set to value (replaced or appended).
func withHeader(hs []header, label int64, value any) []header {
	out := withoutHeader(hs, label)
	return append(out, header{label, value})
}

// rawEnvelope is a COSE_Sign1 under construction.
type rawEnvelope struct {
	protected   []header
	unprotected []byte // encoded header map; nil means the empty map a0
	payload     []byte
	untagged    bool
}

// encodeProtected serialises the protected header map deterministically.
func encodeProtected(hs []header) ([]byte, error) {
	m := make(map[int64]any, len(hs))
	for _, h := range hs {
		m[h.label] = h.value
	}
	return detEnc.Marshal(m)
}

// toBeSigned is RFC 9052 §4.4: Sig_structure = ["Signature1", protected, external_aad, payload].
func toBeSigned(protected, payload []byte) ([]byte, error) {
	return detEnc.Marshal([]any{"Signature1", protected, []byte{}, payload})
}

// rawSign signs tbs as COSE does for key's algorithm: ECDSA over the curve's
// hash, as fixed-size r||s; Ed25519 over the message itself.
func rawSign(key crypto.Signer, tbs []byte) ([]byte, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		var digest []byte
		switch k.Curve {
		case elliptic.P256():
			d := sha256.Sum256(tbs)
			digest = d[:]
		case elliptic.P384():
			d := sha512.Sum384(tbs)
			digest = d[:]
		default:
			return nil, fmt.Errorf("curve %s", k.Curve.Params().Name)
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return nil, err
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		sig := make([]byte, 2*n)
		r.FillBytes(sig[:n])
		s.FillBytes(sig[n:])
		return sig, nil
	case ed25519.PrivateKey:
		return k.Sign(nil, tbs, crypto.Hash(0))
	}
	return nil, fmt.Errorf("key type %T", key)
}

// build signs and encodes e with key.
func (e rawEnvelope) build(key crypto.Signer) ([]byte, error) {
	prot, err := encodeProtected(e.protected)
	if err != nil {
		return nil, err
	}
	tbs, err := toBeSigned(prot, e.payload)
	if err != nil {
		return nil, err
	}
	sig, err := rawSign(key, tbs)
	if err != nil {
		return nil, err
	}
	unprot := e.unprotected
	if unprot == nil {
		unprot = []byte{0xa0}
	}
	msg := []any{prot, cbor.RawMessage(unprot), e.payload, sig}
	if e.untagged {
		return detEnc.Marshal(msg)
	}
	return detEnc.Marshal(cbor.Tag{Number: 18, Content: msg})
}

// spkiOf returns the DER SubjectPublicKeyInfo of key's public half.
func spkiOf(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// idOf returns the device ID of key.
func idOf(t testing.TB, key crypto.Signer) string {
	t.Helper()
	id, err := provenance.DeviceID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// algOf returns the COSE algorithm for key, including ES384 (which the
// package rejects, so tests can build such envelopes).
func algOf(t testing.TB, key crypto.Signer) cose.Algorithm {
	t.Helper()
	if k, ok := key.(*ecdsa.PrivateKey); ok && k.Curve == elliptic.P384() {
		return cose.AlgorithmES384
	}
	alg, err := provenance.Algorithm(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return alg
}

// signRaw builds an envelope with the standard headers for key around payload.
func signRaw(t testing.TB, key crypto.Signer, payload []byte) []byte {
	t.Helper()
	env, err := rawEnvelope{protected: stdHeaders(algOf(t, key), idOf(t, key), spkiOf(t, key)), payload: payload}.build(key)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// payloadMap decodes a payload leniently into a generic map, so a test can
// add, drop or retype fields and re-encode it deterministically.
func payloadMap(t testing.TB, payload []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := cbor.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	again, err := detEnc.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(payload) {
		t.Fatal("payload does not survive a generic decode and re-encode")
	}
	return m
}

// mustDet encodes v deterministically.
func mustDet(t testing.TB, v any) []byte {
	t.Helper()
	b, err := detEnc.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// spliceEnvelope decodes env, lets edit change it, and re-encodes it without
// signing again: the protected header bytes and signature are kept unless
// edit changes them.
func spliceEnvelope(t testing.TB, env []byte, edit func(m *cose.Sign1Message)) []byte {
	t.Helper()
	var m cose.Sign1Message
	if err := m.UnmarshalCBOR(env); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	out, err := m.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// samplePayload is a record with every field set to a non-zero value.
func samplePayload(device string, thumb []byte) *provenance.Payload {
	prev := sha256.Sum256([]byte("previous envelope"))
	return &provenance.Payload{
		Version: provenance.Version,
		Device:  device,
		Event:   "0mz4k7c1x9d2q8vr3h6a5b",
		Kind:    provenance.KindStart,
		Seq:     17,
		Boot:    "3f1c2a9e-6b7d-4e21-9a53-0c8d7e6f5a41",
		Prev:    prev[:],
		Time:    provenance.Time{UnixMs: 1764000000123, BootMs: 3600123, Clock: provenance.ClockSynced},
		Motion: provenance.Motion{
			DurationMs:  8400,
			Frames:      97,
			PeakAreaPPM: 41250,
			Box:         [4]int32{120, 64, 310, 236},
			Width:       640,
			Height:      480,
		},
		Media:    []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", thumb)},
		KeyStore: "file",
	}
}

func newP256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newEd25519(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sentinels are the error classes Verify reports, by the names the vector
// manifest uses.
var sentinels = map[string]error{
	"malformed": provenance.ErrMalformed,
	"signature": provenance.ErrSignature,
	"device_id": provenance.ErrDeviceID,
	"media":     provenance.ErrMedia,
	"key":       provenance.ErrKey,
}

// classOf names the one sentinel err wraps: "ok" for nil, "" if it wraps none
// or more than one.
func classOf(err error) string {
	if err == nil {
		return "ok"
	}
	found := ""
	for name, s := range sentinels {
		if errors.Is(err, s) {
			if found != "" {
				return ""
			}
			found = name
		}
	}
	return found
}
