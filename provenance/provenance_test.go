package provenance_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"errors"
	mrand "math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/keyframe-cam/keyframe/provenance"
)

var thumb = []byte("\xff\xd8\xff\xe0 not really a JPEG, but bytes a hash can bind \xff\xd9")

// signSample signs samplePayload with key and returns the envelope.
func signSample(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	env, err := provenance.Sign(nil, key, samplePayload(idOf(t, key), thumb))
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// wantClass fails the test unless err is exactly of class want ("ok" for nil).
func wantClass(t *testing.T, err error, want string) {
	t.Helper()
	if got := classOf(err); got != want {
		t.Fatalf("got %s (%v), want %s", got, err, want)
	}
}

func TestRoundTrip(t *testing.T) {
	for name, key := range map[string]crypto.Signer{"ES256": newP256(t), "EdDSA": newEd25519(t)} {
		t.Run(name, func(t *testing.T) {
			p := samplePayload(idOf(t, key), thumb)
			p.Version = 0 // Sign sets it
			env, err := provenance.Sign(nil, key, p)
			if err != nil {
				t.Fatal(err)
			}
			if p.Version != provenance.Version {
				t.Errorf("Sign left version %d", p.Version)
			}
			wire, err := (&provenance.Bundle{Envelope: env, Media: [][]byte{thumb}}).Marshal()
			if err != nil {
				t.Fatal(err)
			}
			b, err := provenance.UnmarshalBundle(wire)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b.Envelope, env) || len(b.Media) != 1 || !bytes.Equal(b.Media[0], thumb) {
				t.Fatal("bundle did not round-trip")
			}
			v, err := provenance.Verify(b.Envelope, b.Media, key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(v.Payload, p) {
				t.Errorf("payload\n got %+v\nwant %+v", v.Payload, p)
			}
			if v.Device != p.Device || v.Device != idOf(t, key) {
				t.Errorf("device %q, want %q", v.Device, p.Device)
			}
			if !bytes.Equal(v.SPKI, spkiOf(t, key)) {
				t.Error("SPKI is not the signer's")
			}
			if k, ok := v.Key.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(key.Public()) {
				t.Error("Key is not the signer's")
			}
			if v.Hash != sha256.Sum256(env) || v.Hash != provenance.HashEnvelope(env) {
				t.Error("Hash is not the SHA-256 of the envelope")
			}
			// The wire form is the documented one.
			var m cose.Sign1Message
			if err := m.UnmarshalCBOR(env); err != nil {
				t.Fatal(err)
			}
			if alg, _ := m.Headers.Protected.Algorithm(); alg != algOf(t, key) {
				t.Errorf("alg %v", alg)
			}
			if len(m.Headers.Protected) != 4 || len(m.Headers.Unprotected) != 0 {
				t.Errorf("headers %v / %v", m.Headers.Protected, m.Headers.Unprotected)
			}
			if !bytes.Equal(m.Headers.RawUnprotected, []byte{0xa0}) {
				t.Errorf("unprotected header %x, want a0", m.Headers.RawUnprotected)
			}
			want, err := provenance.MarshalPayload(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m.Payload, want) {
				t.Error("payload is not MarshalPayload's encoding")
			}
		})
	}
}

func TestChain(t *testing.T) {
	key := newP256(t)
	first := samplePayload(idOf(t, key), thumb)
	first.Seq, first.Prev = 1, nil
	env1, err := provenance.Sign(nil, key, first)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := provenance.Verify(env1, [][]byte{thumb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(v1.Payload.Prev) != 0 {
		t.Errorf("first record prev %x", v1.Payload.Prev)
	}
	second := samplePayload(idOf(t, key), thumb)
	second.Seq, second.Kind, second.Prev = 2, provenance.KindEnd, v1.Hash[:]
	env2, err := provenance.Sign(nil, key, second)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := provenance.Verify(env2, [][]byte{thumb}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if h := sha256.Sum256(env1); !bytes.Equal(v2.Payload.Prev, h[:]) {
		t.Error("second record's prev is not the SHA-256 of the first envelope")
	}
}

func TestEmptyPrevAndMediaHaveOneEncoding(t *testing.T) {
	p := samplePayload("d", thumb)
	p.Prev, p.Media = nil, nil
	nilEnc, err := provenance.MarshalPayload(p)
	if err != nil {
		t.Fatal(err)
	}
	p.Prev, p.Media = []byte{}, []provenance.Media{}
	emptyEnc, err := provenance.MarshalPayload(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(nilEnc, emptyEnc) {
		t.Fatalf("nil and empty encode differently:\n%x\n%x", nilEnc, emptyEnc)
	}
	m := payloadMap(t, emptyEnc)
	if b, ok := m["prev"].([]byte); !ok || len(b) != 0 {
		t.Errorf("prev encoded as %#v, want h''", m["prev"])
	}
	if a, ok := m["media"].([]any); !ok || len(a) != 0 {
		t.Errorf("media encoded as %#v, want []", m["media"])
	}
	// null is not an encoding of empty.
	for _, field := range []string{"prev", "media"} {
		m := payloadMap(t, emptyEnc)
		m[field] = nil
		if _, err := provenance.UnmarshalPayload(mustDet(t, m)); !errors.Is(err, provenance.ErrMalformed) {
			t.Errorf("%s: null accepted (%v)", field, err)
		}
	}
}

// mutation changes one payload field.
type mutation struct {
	field  string // CBOR path of the field, as leafFields names it
	mutate func(p *provenance.Payload)
	// resigned is the class Verify gives when the changed payload is signed
	// properly (with the original media): what the field means on its own.
	resigned string
}

func mutations(otherDevice string, otherSPKI []byte) []mutation {
	return []mutation{
		{"v", func(p *provenance.Payload) { p.Version = 2 }, "malformed"},
		{"device", func(p *provenance.Payload) { p.Device = otherDevice }, "device_id"},
		{"event", func(p *provenance.Payload) { p.Event = "another-event_1" }, "ok"},
		{"kind", func(p *provenance.Payload) { p.Kind = provenance.KindEnd }, "ok"},
		{"seq", func(p *provenance.Payload) { p.Seq++ }, "ok"},
		{"seq", func(p *provenance.Payload) { p.Seq = 1 << 40 }, "ok"},
		{"boot", func(p *provenance.Payload) { p.Boot = "another boot" }, "ok"},
		{"prev", func(p *provenance.Payload) { p.Prev[31] ^= 1 }, "ok"},
		{"prev", func(p *provenance.Payload) { p.Prev = nil }, "ok"},
		{"time.unix_ms", func(p *provenance.Payload) { p.Time.UnixMs++ }, "ok"},
		{"time.unix_ms", func(p *provenance.Payload) { p.Time.UnixMs = -1 }, "ok"},
		{"time.boot_ms", func(p *provenance.Payload) { p.Time.BootMs++ }, "ok"},
		{"time.clock", func(p *provenance.Payload) { p.Time.Clock = provenance.ClockUnsynced }, "ok"},
		{"motion.duration_ms", func(p *provenance.Payload) { p.Motion.DurationMs++ }, "ok"},
		{"motion.frames", func(p *provenance.Payload) { p.Motion.Frames++ }, "ok"},
		{"motion.peak_area_ppm", func(p *provenance.Payload) { p.Motion.PeakAreaPPM++ }, "ok"},
		{"motion.box", func(p *provenance.Payload) { p.Motion.Box[0]++ }, "ok"},
		{"motion.box", func(p *provenance.Payload) { p.Motion.Box[1]++ }, "ok"},
		{"motion.box", func(p *provenance.Payload) { p.Motion.Box[2]-- }, "ok"},
		{"motion.box", func(p *provenance.Payload) { p.Motion.Box[3] = -p.Motion.Box[3] }, "ok"},
		{"motion.width", func(p *provenance.Payload) { p.Motion.Width++ }, "ok"},
		{"motion.height", func(p *provenance.Payload) { p.Motion.Height++ }, "ok"},
		{"media", func(p *provenance.Payload) { p.Media = nil }, "media"},
		{"media", func(p *provenance.Payload) { p.Media = append(p.Media, p.Media[0]) }, "media"},
		{"media.role", func(p *provenance.Payload) { p.Media[0].Role = "preview" }, "ok"},
		{"media.type", func(p *provenance.Payload) { p.Media[0].Type = "image/png" }, "ok"},
		{"media.size", func(p *provenance.Payload) { p.Media[0].Size++ }, "media"},
		{"media.sha256", func(p *provenance.Payload) { p.Media[0].SHA256[0] ^= 0x80 }, "media"},
		{"keystore", func(p *provenance.Payload) { p.KeyStore = "tpm" }, "ok"},
		// next_key belongs to rotate records only.
		{"next_key", func(p *provenance.Payload) { p.NextKey = otherSPKI }, "malformed"},
		// source is optional: a record may name its frames' source, in
		// the form §4.3 gives.
		{"source", func(p *provenance.Payload) { p.Source = &provenance.Source{Kind: provenance.SourceSynthetic} }, "ok"},
		{"source", func(p *provenance.Payload) {
			p.Source = &provenance.Source{Kind: provenance.SourceV4L2, Name: "vivid", Bus: "platform:vivid-000"}
		}, "ok"},
		{"source", func(p *provenance.Payload) { p.Source = &provenance.Source{Kind: "V4L2"} }, "malformed"},
		{"source", func(p *provenance.Payload) { p.Source = &provenance.Source{} }, "malformed"},
		{"source", func(p *provenance.Payload) {
			p.Source = &provenance.Source{Kind: provenance.SourceExec, Name: strings.Repeat("x", provenance.MaxSourceText+1)}
		}, "malformed"},
		// segment belongs to segment records, segments to end records
		// (their fields are tampered with in segment_test.go).
		{"segment", func(p *provenance.Payload) {
			p.Segment = &provenance.Segment{Type: "image/jpeg", Frames: []provenance.ClipFrame{provenance.NewClipFrame(thumb, 0)}}
		}, "malformed"},
		{"segments", func(p *provenance.Payload) { p.Segments = [][]byte{make([]byte, 32)} }, "malformed"},
	}
}

// leafFields lists the CBOR paths of every field of t, descending into
// structs and slices of structs.
func leafFields(prefix string, t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("cbor"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		path := prefix + name
		ft := f.Type
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			out = append(out, path)
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			out = append(out, leafFields(path+".", ft)...)
			continue
		}
		out = append(out, path)
	}
	return out
}

// TestTamperEveryField changes each payload field after signing, splices the
// new payload into the signed message without signing again, and expects a
// signature failure; then signs the changed payload properly to show what the
// field means once the signature is right.
func TestTamperEveryField(t *testing.T) {
	key, other := newP256(t), newP256(t)
	env := signSample(t, key)
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(env); err != nil {
		t.Fatal(err)
	}
	muts := mutations(idOf(t, other), spkiOf(t, other))

	covered := map[string]bool{}
	for _, m := range muts {
		covered[m.field] = true
	}
	for _, f := range leafFields("", reflect.TypeFor[provenance.Payload]()) {
		if !covered[f] {
			t.Errorf("payload field %q has no tamper case", f)
		}
	}

	for _, m := range muts {
		t.Run(m.field, func(t *testing.T) {
			p, err := provenance.UnmarshalPayload(msg.Payload)
			if err != nil {
				t.Fatal(err)
			}
			m.mutate(p)
			changed, err := provenance.MarshalPayload(p)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(changed, msg.Payload) {
				t.Fatal("mutation changed nothing")
			}
			spliced := spliceEnvelope(t, env, func(s *cose.Sign1Message) { s.Payload = changed })
			_, err = provenance.Verify(spliced, [][]byte{thumb}, nil)
			wantClass(t, err, "signature")
			_, err = provenance.Verify(spliced, [][]byte{thumb}, key.Public())
			wantClass(t, err, "signature")

			_, err = provenance.Verify(signRaw(t, key, changed), [][]byte{thumb}, nil)
			wantClass(t, err, m.resigned)
		})
	}
}

func TestTamperMedia(t *testing.T) {
	key := newP256(t)
	env := signSample(t, key)
	wantClass(t, verifyErr(env, [][]byte{thumb}), "ok")

	flipped := bytes.Clone(thumb)
	flipped[len(flipped)/2] ^= 0x01
	for name, media := range map[string][][]byte{
		"byte flipped": {flipped},
		"truncated":    {thumb[:len(thumb)-1]},
		"extended":     {append(bytes.Clone(thumb), 0)},
		"empty":        {{}},
		"missing":      nil,
		"extra":        {thumb, thumb},
	} {
		t.Run(name, func(t *testing.T) {
			wantClass(t, verifyErr(env, media), "media")
		})
	}
}

// TestMediaOrder: media are matched to the list by position, not by content.
func TestMediaOrder(t *testing.T) {
	key := newP256(t)
	a, b := []byte("first object"), []byte("second object")
	p := samplePayload(idOf(t, key), a)
	p.Media = append(p.Media, provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", b))
	env, err := provenance.Sign(nil, key, p)
	if err != nil {
		t.Fatal(err)
	}
	wantClass(t, verifyErr(env, [][]byte{a, b}), "ok")
	wantClass(t, verifyErr(env, [][]byte{b, a}), "media")
}

func verifyErr(env []byte, media [][]byte) error {
	_, err := provenance.Verify(env, media, nil)
	return err
}

func TestTamperSignature(t *testing.T) {
	for name, key := range map[string]crypto.Signer{"ES256": newP256(t), "EdDSA": newEd25519(t)} {
		t.Run(name, func(t *testing.T) {
			env := signSample(t, key)
			var m cose.Sign1Message
			if err := m.UnmarshalCBOR(env); err != nil {
				t.Fatal(err)
			}
			if len(m.Signature) != 64 {
				t.Fatalf("signature is %d bytes, want 64", len(m.Signature))
			}
			for _, i := range []int{0, 31, 32, 63} {
				bad := spliceEnvelope(t, env, func(s *cose.Sign1Message) { s.Signature[i] ^= 0x01 })
				wantClass(t, verifyErr(bad, [][]byte{thumb}), "signature")
			}
			short := spliceEnvelope(t, env, func(s *cose.Sign1Message) { s.Signature = s.Signature[:63] })
			wantClass(t, verifyErr(short, [][]byte{thumb}), "signature")
			long := spliceEnvelope(t, env, func(s *cose.Sign1Message) { s.Signature = append(s.Signature, 0) })
			wantClass(t, verifyErr(long, [][]byte{thumb}), "signature")
		})
	}
}

func TestSwappedKey(t *testing.T) {
	key, other, otherEd := newP256(t), newP256(t), newEd25519(t)
	env := signSample(t, key)

	_, err := provenance.Verify(env, [][]byte{thumb}, key.Public())
	wantClass(t, err, "ok")
	_, err = provenance.Verify(env, [][]byte{thumb}, other.Public())
	wantClass(t, err, "key")
	_, err = provenance.Verify(env, [][]byte{thumb}, otherEd.Public())
	wantClass(t, err, "key")

	// Another key in the SPKI header, signature left alone.
	swapped := spliceEnvelope(t, env, func(m *cose.Sign1Message) {
		m.Headers.RawProtected = nil
		m.Headers.Protected[provenance.HeaderLabelSPKI] = spkiOf(t, other)
	})
	_, err = provenance.Verify(swapped, [][]byte{thumb}, nil)
	wantClass(t, err, "signature")
	_, err = provenance.Verify(swapped, [][]byte{thumb}, other.Public())
	wantClass(t, err, "signature")

	// An Ed25519 key under an ES256 header: the algorithm does not match the key.
	edSwapped := spliceEnvelope(t, env, func(m *cose.Sign1Message) {
		m.Headers.RawProtected = nil
		m.Headers.Protected[provenance.HeaderLabelSPKI] = spkiOf(t, otherEd)
	})
	_, err = provenance.Verify(edSwapped, [][]byte{thumb}, nil)
	wantClass(t, err, "malformed")
}

func TestWrongDeviceID(t *testing.T) {
	key, other := newP256(t), newP256(t)
	good := samplePayload(idOf(t, key), thumb)
	goodBytes, err := provenance.MarshalPayload(good)
	if err != nil {
		t.Fatal(err)
	}
	claimOther := samplePayload(idOf(t, other), thumb)
	claimOtherBytes, err := provenance.MarshalPayload(claimOther)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provenance.Sign(nil, key, claimOther); err == nil {
		t.Fatal("Sign accepted a payload naming another device")
	}

	cases := []struct {
		name    string
		signer  crypto.Signer
		headers []header
		payload []byte
		want    string
	}{
		{"control", key, stdHeaders(cose.AlgorithmES256, idOf(t, key), spkiOf(t, key)), goodBytes, "ok"},
		{"payload device is another key's", key, stdHeaders(cose.AlgorithmES256, idOf(t, key), spkiOf(t, key)), claimOtherBytes, "device_id"},
		{"kid is another key's", key, stdHeaders(cose.AlgorithmES256, idOf(t, other), spkiOf(t, key)), goodBytes, "device_id"},
		{"kid missing", key, withoutHeader(stdHeaders(cose.AlgorithmES256, idOf(t, key), spkiOf(t, key)), 4), goodBytes, "device_id"},
		{"kid upper case", key, stdHeaders(cose.AlgorithmES256, strings.ToUpper(idOf(t, key)), spkiOf(t, key)), goodBytes, "device_id"},
		// Signed by other, with its own key in the header, claiming key's device.
		{"other key claims device", other, stdHeaders(cose.AlgorithmES256, idOf(t, key), spkiOf(t, other)), goodBytes, "device_id"},
		{"other key claims device in payload only", other, stdHeaders(cose.AlgorithmES256, idOf(t, other), spkiOf(t, other)), goodBytes, "device_id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, err := rawEnvelope{protected: c.headers, payload: c.payload}.build(c.signer)
			if err != nil {
				t.Fatal(err)
			}
			wantClass(t, verifyErr(env, [][]byte{thumb}), c.want)
		})
	}
}

// TestIndependentEnvelope: an envelope built from the spec alone (not with
// go-cose) verifies, and its protected header is byte for byte what Sign
// writes.
func TestIndependentEnvelope(t *testing.T) {
	for name, key := range map[string]crypto.Signer{"ES256": newP256(t), "EdDSA": newEd25519(t)} {
		t.Run(name, func(t *testing.T) {
			payload, err := provenance.MarshalPayload(samplePayload(idOf(t, key), thumb))
			if err != nil {
				t.Fatal(err)
			}
			env := signRaw(t, key, payload)
			v, err := provenance.Verify(env, [][]byte{thumb}, key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if v.Payload.Seq != 17 {
				t.Errorf("seq %d", v.Payload.Seq)
			}
			var ours, theirs cose.Sign1Message
			if err := ours.UnmarshalCBOR(env); err != nil {
				t.Fatal(err)
			}
			if err := theirs.UnmarshalCBOR(signSample(t, key)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ours.Headers.RawProtected, theirs.Headers.RawProtected) {
				t.Errorf("protected header\n spec %x\n Sign %x", ours.Headers.RawProtected, theirs.Headers.RawProtected)
			}
		})
	}
}

func TestHeaderRules(t *testing.T) {
	key := newP256(t)
	payload, err := provenance.MarshalPayload(samplePayload(idOf(t, key), thumb))
	if err != nil {
		t.Fatal(err)
	}
	std := stdHeaders(cose.AlgorithmES256, idOf(t, key), spkiOf(t, key))
	kidHeader := mustDet(t, map[int64]any{4: []byte(idOf(t, key))})
	cases := []struct {
		name string
		env  rawEnvelope
		want string
	}{
		{"control", rawEnvelope{protected: std, payload: payload}, "ok"},
		{"unprotected kid", rawEnvelope{protected: std, unprotected: kidHeader, payload: payload}, "malformed"},
		{"unprotected private label", rawEnvelope{protected: std, unprotected: mustDet(t, map[int64]any{-65538: "x"}), payload: payload}, "malformed"},
		{"extra protected label", rawEnvelope{protected: withHeader(std, 34, []byte{1}), payload: payload}, "malformed"},
		{"x5chain not a certificate", rawEnvelope{protected: withHeader(std, 33, []byte{1}), payload: payload}, "malformed"},
		{"extra protected text label", rawEnvelope{protected: append(std[:len(std):len(std)], header{-1, "x"}), payload: payload}, "malformed"},
		{"no SPKI", rawEnvelope{protected: withoutHeader(std, provenance.HeaderLabelSPKI), payload: payload}, "malformed"},
		{"SPKI garbage", rawEnvelope{protected: withHeader(std, provenance.HeaderLabelSPKI, []byte("not DER")), payload: payload}, "malformed"},
		{"SPKI as text", rawEnvelope{protected: withHeader(std, provenance.HeaderLabelSPKI, string(spkiOf(t, key))), payload: payload}, "malformed"},
		{"no alg", rawEnvelope{protected: withoutHeader(std, 1), payload: payload}, "malformed"},
		{"alg EdDSA with P-256 key", rawEnvelope{protected: withHeader(std, 1, int64(cose.AlgorithmEdDSA)), payload: payload}, "malformed"},
		{"alg ES384 with P-256 key", rawEnvelope{protected: withHeader(std, 1, int64(cose.AlgorithmES384)), payload: payload}, "malformed"},
		{"alg as text", rawEnvelope{protected: withHeader(std, 1, "ES256"), payload: payload}, "malformed"},
		{"no content type", rawEnvelope{protected: withoutHeader(std, 3), payload: payload}, "malformed"},
		{"other content type", rawEnvelope{protected: withHeader(std, 3, "application/cbor"), payload: payload}, "malformed"},
		{"kid as text", rawEnvelope{protected: withHeader(std, 4, idOf(t, key)), payload: payload}, "malformed"},
		{"untagged", rawEnvelope{protected: std, payload: payload, untagged: true}, "malformed"},
		{"detached payload", rawEnvelope{protected: std, payload: nil}, "malformed"},
		{"empty payload", rawEnvelope{protected: std, payload: []byte{}}, "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, err := c.env.build(key)
			if err != nil {
				t.Fatal(err)
			}
			wantClass(t, verifyErr(env, [][]byte{thumb}), c.want)
		})
	}

	// Tag 98 (COSE_Sign) instead of 18.
	env := signSample(t, key)
	retagged := append([]byte{0xd8, 98}, env[1:]...)
	wantClass(t, verifyErr(retagged, [][]byte{thumb}), "malformed")
	// Trailing bytes after the envelope.
	wantClass(t, verifyErr(append(bytes.Clone(env), 0), [][]byte{thumb}), "malformed")
	// An unprotected header added to a signed envelope leaves the signature
	// valid: only the empty-header rule catches it.
	added := spliceEnvelope(t, env, func(m *cose.Sign1Message) {
		m.Headers.RawUnprotected = nil
		m.Headers.Unprotected[cose.HeaderLabelKeyID] = []byte("x")
	})
	wantClass(t, verifyErr(added, [][]byte{thumb}), "malformed")
}

func TestPayloadChecks(t *testing.T) {
	key := newP256(t)
	cases := []struct {
		name   string
		mutate func(p *provenance.Payload)
		want   string
	}{
		{"control", func(p *provenance.Payload) {}, "ok"},
		{"version 0", func(p *provenance.Payload) { p.Version = 0 }, "malformed"},
		{"version 2", func(p *provenance.Payload) { p.Version = 2 }, "malformed"},
		{"kind empty", func(p *provenance.Payload) { p.Kind = "" }, "malformed"},
		{"kind middle", func(p *provenance.Payload) { p.Kind = "middle" }, "malformed"},
		{"kind Start", func(p *provenance.Payload) { p.Kind = "Start" }, "malformed"},
		{"event empty", func(p *provenance.Payload) { p.Event = "" }, "malformed"},
		{"event 64", func(p *provenance.Payload) { p.Event = strings.Repeat("a", 64) }, "ok"},
		{"event 65", func(p *provenance.Payload) { p.Event = strings.Repeat("a", 65) }, "malformed"},
		{"event slash", func(p *provenance.Payload) { p.Event = "a/b" }, "malformed"},
		{"event dots", func(p *provenance.Payload) { p.Event = ".." }, "malformed"},
		{"event space", func(p *provenance.Payload) { p.Event = "a b" }, "malformed"},
		{"event non-ASCII", func(p *provenance.Payload) { p.Event = "caf\u00e9" }, "malformed"},
		{"prev empty", func(p *provenance.Payload) { p.Prev = nil }, "ok"},
		{"prev 31", func(p *provenance.Payload) { p.Prev = p.Prev[:31] }, "malformed"},
		{"prev 33", func(p *provenance.Payload) { p.Prev = append(p.Prev, 0) }, "malformed"},
		{"clock empty", func(p *provenance.Payload) { p.Time.Clock = "" }, "malformed"},
		{"clock upper", func(p *provenance.Payload) { p.Time.Clock = "SYNCED" }, "malformed"},
		{"clock unsynced", func(p *provenance.Payload) { p.Time.Clock = provenance.ClockUnsynced }, "ok"},
		{"media sha256 31", func(p *provenance.Payload) { p.Media[0].SHA256 = p.Media[0].SHA256[:31] }, "malformed"},
		{"media sha256 empty", func(p *provenance.Payload) { p.Media[0].SHA256 = nil }, "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := samplePayload(idOf(t, key), thumb)
			c.mutate(p)
			b, err := provenance.MarshalPayload(p)
			if err != nil {
				t.Fatal(err)
			}
			wantClass(t, verifyErr(signRaw(t, key, b), [][]byte{thumb}), c.want)

			// Sign refuses what Verify would reject (a version is always
			// overwritten by Sign, so those cases are not refused).
			_, err = provenance.Sign(nil, key, p)
			if c.want == "ok" || strings.HasPrefix(c.name, "version") {
				if err != nil {
					t.Errorf("Sign: %v", err)
				}
			} else if !errors.Is(err, provenance.ErrMalformed) {
				t.Errorf("Sign accepted an invalid payload (%v)", err)
			}
		})
	}
}

func TestUnmarshalPayloadStrict(t *testing.T) {
	key := newP256(t)
	canonical, err := provenance.MarshalPayload(samplePayload(idOf(t, key), thumb))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provenance.UnmarshalPayload(canonical); err != nil {
		t.Fatalf("canonical payload rejected: %v", err)
	}
	edit := func(f func(m map[string]any)) []byte {
		m := payloadMap(t, canonical)
		f(m)
		return mustDet(t, m)
	}
	unsorted, err := cbor.EncOptions{Sort: cbor.SortNone}.EncMode()
	if err != nil {
		t.Fatal(err)
	}
	declOrder, err := unsorted.Marshal(samplePayload(idOf(t, key), thumb))
	if err != nil {
		t.Fatal(err)
	}
	seqAt := bytes.Index(canonical, []byte("\x63seq\x11"))
	if seqAt < 0 {
		t.Fatal("seq 17 not found in the canonical payload")
	}
	longSeq := append(append(bytes.Clone(canonical[:seqAt+4]), 0x1a, 0, 0, 0, 17), canonical[seqAt+5:]...)
	dup := append([]byte{canonical[0] + 1}, canonical[1:]...)
	dup = append(dup, "\x63seq\x11"...)
	indef := append(append([]byte{0xbf}, canonical[1:]...), 0xff)

	cases := map[string][]byte{
		"empty":                {},
		"null":                 {0xf6},
		"array":                {0x80},
		"trailing byte":        append(bytes.Clone(canonical), 0),
		"truncated":            canonical[:len(canonical)-1],
		"unsorted keys":        declOrder,
		"non-shortest integer": longSeq,
		"duplicate key":        dup,
		"indefinite length":    indef,
		"unknown field":        edit(func(m map[string]any) { m["color"] = "red" }),
		"unknown nested field": edit(func(m map[string]any) { m["time"].(map[any]any)["tz"] = "UTC" }),
		"unknown media field":  edit(func(m map[string]any) { m["media"].([]any)[0].(map[any]any)["name"] = "a.jpg" }),
		"upper-case key":       edit(func(m map[string]any) { m["V"] = m["v"]; delete(m, "v") }),
		"seq as text":          edit(func(m map[string]any) { m["seq"] = "17" }),
		"seq negative":         edit(func(m map[string]any) { m["seq"] = int64(-17) }),
		"seq as float":         edit(func(m map[string]any) { m["seq"] = 17.0 }),
		"seq as bignum":        edit(func(m map[string]any) { m["seq"] = cbor.Tag{Number: 2, Content: []byte{17}} }),
		"seq tagged":           edit(func(m map[string]any) { m["seq"] = cbor.Tag{Number: 1, Content: uint64(17)} }),
		"prev null":            edit(func(m map[string]any) { m["prev"] = nil }),
		"prev as text":         edit(func(m map[string]any) { m["prev"] = string(m["prev"].([]byte)) }),
		"box of 3":             edit(func(m map[string]any) { m["motion"].(map[any]any)["box"] = []any{1, 2, 3} }),
		"box of 5":             edit(func(m map[string]any) { m["motion"].(map[any]any)["box"] = []any{1, 2, 3, 4, 5} }),
		"frames over 32 bits":  edit(func(m map[string]any) { m["motion"].(map[any]any)["frames"] = uint64(1) << 32 }),
		"invalid UTF-8":        edit(func(m map[string]any) { m["boot"] = cbor.RawMessage{0x62, 0xff, 0xfe} }),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := provenance.UnmarshalPayload(b); !errors.Is(err, provenance.ErrMalformed) {
				t.Fatalf("UnmarshalPayload: %v, want ErrMalformed", err)
			}
			if len(b) == 0 {
				return // an empty payload cannot be signed as one
			}
			wantClass(t, verifyErr(signRaw(t, key, b), [][]byte{thumb}), "malformed")
		})
	}
}

func TestSignRejectsUnsupportedKeys(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provenance.Algorithm(p384.Public()); err == nil {
		t.Error("Algorithm accepted P-384")
	}
	if _, err := provenance.Sign(nil, p384, samplePayload(idOf(t, p384), thumb)); err == nil {
		t.Error("Sign accepted a P-384 key")
	}
	// A well-formed ES384 envelope is still refused.
	payload, err := provenance.MarshalPayload(samplePayload(idOf(t, p384), thumb))
	if err != nil {
		t.Fatal(err)
	}
	wantClass(t, verifyErr(signRaw(t, p384, payload), [][]byte{thumb}), "malformed")

	if _, err := provenance.Algorithm(struct{}{}); err == nil {
		t.Error("Algorithm accepted a non-key")
	}
	if _, err := provenance.DeviceID(struct{}{}); err == nil {
		t.Error("DeviceID accepted a non-key")
	}
}

func TestDeviceID(t *testing.T) {
	keys := []crypto.Signer{newP256(t), newP256(t), newEd25519(t)}
	seen := map[string]bool{}
	for _, k := range keys {
		id := idOf(t, k)
		sum := sha256.Sum256(spkiOf(t, k))
		want := strings.ToLower(strings.TrimRight(base32.StdEncoding.EncodeToString(sum[:16]), "="))
		if id != want {
			t.Errorf("DeviceID %q, want %q", id, want)
		}
		if len(id) != 26 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Errorf("DeviceID %q is not 26 characters of lower-case base32", id)
		}
		if seen[id] {
			t.Errorf("two keys share ID %q", id)
		}
		seen[id] = true
	}
}

func TestValidID(t *testing.T) {
	for s, want := range map[string]bool{
		"a": true, "0mz4k7c1x9d2q8vr3h6a5b": true, "A-b_9": true, strings.Repeat("z", 64): true,
		"": false, strings.Repeat("z", 65): false, "a.b": false, "a/b": false, "..": false,
		"a b": false, "caf\u00e9": false, "a\x00": false, "%2e": false,
	} {
		if got := provenance.ValidID(s); got != want {
			t.Errorf("ValidID(%q) = %v", s, got)
		}
	}
}

func TestBundle(t *testing.T) {
	env := []byte{0xd2, 0x84, 1, 2, 3}
	wire, err := (&provenance.Bundle{Envelope: env, Media: [][]byte{[]byte("a"), {}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// The documented wire form: [envelope: bstr, [* media: bstr]].
	var generic []any
	if err := cbor.Unmarshal(wire, &generic); err != nil {
		t.Fatal(err)
	}
	if len(generic) != 2 || !bytes.Equal(generic[0].([]byte), env) {
		t.Fatalf("bundle %#v", generic)
	}
	if media := generic[1].([]any); len(media) != 2 || string(media[0].([]byte)) != "a" || len(media[1].([]byte)) != 0 {
		t.Fatalf("bundle media %#v", generic[1])
	}
	// No media is the empty array, not null.
	none, err := (&provenance.Bundle{Envelope: env}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if want := mustDet(t, []any{env, []any{}}); !bytes.Equal(none, want) {
		t.Errorf("bundle without media %x, want %x", none, want)
	}

	bad := map[string][]byte{
		"nil":                   nil,
		"empty":                 {},
		"garbage":               []byte("hello, world"),
		"empty array":           {0x80},
		"map":                   {0xa0},
		"one element":           mustDet(t, []any{env}),
		"three elements":        mustDet(t, []any{env, []any{}, 1}),
		"empty envelope":        mustDet(t, []any{[]byte{}, []any{}}),
		"null envelope":         mustDet(t, []any{nil, []any{}}),
		"envelope as text":      mustDet(t, []any{string(env), []any{}}),
		"media as bstr":         mustDet(t, []any{env, []byte("a")}),
		"media element integer": mustDet(t, []any{env, []any{1}}),
		"trailing bytes":        append(bytes.Clone(wire), 0),
		"truncated":             wire[:len(wire)-1],
		"indefinite array":      append(append([]byte{0x9f}, wire[1:]...), 0xff),
	}
	for name, b := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := provenance.UnmarshalBundle(b); !errors.Is(err, provenance.ErrMalformed) {
				t.Fatalf("UnmarshalBundle: %v, want ErrMalformed", err)
			}
		})
	}
}

// TestNoPanic feeds random bytes and every single-byte change and truncation
// of a valid envelope to the decoders: each must fail with one of the
// sentinel errors, and none may panic.
func TestNoPanic(t *testing.T) {
	key := newP256(t)
	env := signSample(t, key)
	wire, err := (&provenance.Bundle{Envelope: env, Media: [][]byte{thumb}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, data []byte) {
		t.Helper()
		if _, err := provenance.Verify(data, [][]byte{thumb}, nil); classOf(err) == "" || err == nil {
			t.Fatalf("%s: Verify(%x): %v", what, data, err)
		}
		if b, err := provenance.UnmarshalBundle(data); err != nil && !errors.Is(err, provenance.ErrMalformed) {
			t.Fatalf("%s: UnmarshalBundle(%x): %v", what, data, err)
		} else if err == nil {
			_, err := provenance.Verify(b.Envelope, b.Media, nil)
			if classOf(err) == "" {
				t.Fatalf("%s: Verify of bundle %x: %v", what, data, err)
			}
		}
		if _, err := provenance.UnmarshalPayload(data); err != nil && !errors.Is(err, provenance.ErrMalformed) {
			t.Fatalf("%s: UnmarshalPayload(%x): %v", what, data, err)
		}
	}

	rng := mrand.New(mrand.NewPCG(1, 2))
	for range 2000 {
		data := make([]byte, rng.IntN(600))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		if rng.IntN(2) == 0 && len(data) >= 2 {
			data[0], data[1] = 0xd2, 0x84 // get past the COSE_Sign1 prefix check
		}
		check("random", data)
	}
	for i := range env {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			data := bytes.Clone(env)
			data[i] ^= x
			check("flipped", data)
		}
	}
	for n := range len(env) {
		check("truncated", env[:n])
		if _, err := provenance.Verify(env[:n], [][]byte{thumb}, nil); !errors.Is(err, provenance.ErrMalformed) {
			t.Fatalf("truncated to %d: %v, want ErrMalformed", n, err)
		}
	}
	for n := range len(wire) {
		if _, err := provenance.UnmarshalBundle(wire[:n]); !errors.Is(err, provenance.ErrMalformed) {
			t.Fatalf("bundle truncated to %d: %v, want ErrMalformed", n, err)
		}
	}
}

func TestVerifyBadWantKey(t *testing.T) {
	env := signSample(t, newP256(t))
	if _, err := provenance.Verify(env, [][]byte{thumb}, struct{}{}); err == nil {
		t.Error("Verify accepted an unusable expected key")
	}
}

// The SPKI a Verified reports is the key's DER, usable with x509.
func TestVerifiedSPKIParses(t *testing.T) {
	key := newEd25519(t)
	v, err := provenance.Verify(signSample(t, key), [][]byte{thumb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(v.SPKI)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := provenance.DeviceID(pub); id != v.Device {
		t.Errorf("device %q from SPKI, Verified says %q", id, v.Device)
	}
}
