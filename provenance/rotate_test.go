package provenance_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/veraison/go-cose"

	"github.com/keyframe-cam/keyframe/provenance"
)

// rotatePayload is the old device's next record before Rotate fills in the
// rotation fields.
func rotatePayload(t testing.TB, old crypto.Signer) *provenance.Payload {
	t.Helper()
	prev := sha256.Sum256([]byte("the old device's last envelope"))
	return &provenance.Payload{
		Device:   idOf(t, old),
		Event:    "rotate-1",
		Seq:      42,
		Boot:     "3f1c2a9e-6b7d-4e21-9a53-0c8d7e6f5a41",
		Prev:     prev[:],
		Time:     provenance.Time{UnixMs: 1764000000123, BootMs: 3600123, Clock: provenance.ClockSynced},
		KeyStore: "file",
	}
}

func TestRotateRoundTrip(t *testing.T) {
	for name, keys := range map[string][2]crypto.Signer{
		"P-256 to P-256":   {newP256(t), newP256(t)},
		"P-256 to Ed25519": {newP256(t), newEd25519(t)},
		"Ed25519 to P-256": {newEd25519(t), opaqueSigner{newP256(t)}},
	} {
		t.Run(name, func(t *testing.T) {
			old, next := keys[0], keys[1]
			p := rotatePayload(t, old)
			b, err := provenance.Rotate(nil, old, next, p, nil)
			if err != nil {
				t.Fatal(err)
			}
			wire, err := b.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := provenance.UnmarshalBundle(wire)
			if err != nil {
				t.Fatal(err)
			}
			v, err := provenance.Verify(got.Envelope, got.Media, old.Public())
			if err != nil {
				t.Fatal(err)
			}
			if v.Payload.Kind != provenance.KindRotate || v.Payload.Seq != 42 || v.Device != idOf(t, old) {
				t.Errorf("verified %s seq %d device %s", v.Payload.Kind, v.Payload.Seq, v.Device)
			}
			if v.NextDevice != idOf(t, next) || !bytes.Equal(v.NextSPKI, spkiOf(t, next)) || !bytes.Equal(v.Payload.NextKey, spkiOf(t, next)) {
				t.Errorf("next device %s, want %s", v.NextDevice, idOf(t, next))
			}
			if k, ok := v.NextKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(next.Public()) {
				t.Error("NextKey is not the new key")
			}
			if len(v.Payload.Media) != 1 || v.Payload.Media[0].Role != provenance.RoleRotationProof {
				t.Errorf("media %+v", v.Payload.Media)
			}
		})
	}
}

func TestRotateWithChain(t *testing.T) {
	f := newFleet(t)
	next := newP256(t)
	b, err := provenance.Rotate(nil, f.key, next, rotatePayload(t, f.key), [][]byte{f.leaf, f.inter.der})
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.Verify(b.Envelope, b.Media, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Chain) != 2 || v.NextDevice != idOf(t, next) {
		t.Errorf("chain %d, next %s", len(v.Chain), v.NextDevice)
	}
}

func TestRotateRefuses(t *testing.T) {
	old, next := newP256(t), newP256(t)
	if _, err := provenance.Rotate(nil, old, old, rotatePayload(t, old), nil); err == nil {
		t.Error("rotated a key to itself")
	}
	if _, err := provenance.Rotate(nil, next, old, rotatePayload(t, old), nil); err == nil {
		t.Error("rotated with a payload of another device")
	}
	if _, err := provenance.Rotate(nil, old, newP384(t), rotatePayload(t, old), nil); err == nil {
		t.Error("rotated to a P-384 key")
	}
	p := rotatePayload(t, old)
	p.Event = "a/b"
	if _, err := provenance.Rotate(nil, old, next, p, nil); !errors.Is(err, provenance.ErrMalformed) {
		t.Errorf("bad event: %v", err)
	}
	// Sign does not make rotate records: they need the proof.
	p = rotatePayload(t, old)
	p.Kind, p.NextKey = provenance.KindRotate, spkiOf(t, next)
	if _, err := provenance.Sign(nil, old, p); err == nil {
		t.Error("Sign made a rotate record")
	}
}

// proofFor builds a rotation proof from the spec, with the test builder.
type proofFor struct {
	signer  crypto.Signer // signs
	key     crypto.Signer // whose SPKI and kid are in the header (usually signer)
	ct      string        // content type
	from    []byte
	event   string
	seq     uint64
	extra   map[string]any
	headers func([]header) []header
}

func (p proofFor) build(t *testing.T) []byte {
	t.Helper()
	m := map[string]any{"v": uint64(1), "from": p.from, "event": p.event, "seq": p.seq}
	for k, v := range p.extra {
		m[k] = v
	}
	hs := []header{{1, int64(algOf(t, p.key))}, {3, p.ct}, {4, []byte(idOf(t, p.key))}, {provenance.HeaderLabelSPKI, spkiOf(t, p.key)}}
	if p.headers != nil {
		hs = p.headers(hs)
	}
	env, err := rawEnvelope{protected: hs, payload: mustDet(t, m)}.build(p.signer)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestRotateVerify builds rotate records by hand around proofs that are
// right or wrong in one way each, all properly signed by the old key, so
// only the rotation rules can catch them.
func TestRotateVerify(t *testing.T) {
	old, next, stranger := newP256(t), newP256(t), newP256(t)
	base := rotatePayload(t, old)
	good := proofFor{signer: next, key: next, ct: provenance.ProofContentType, from: spkiOf(t, old), event: base.Event, seq: base.Seq}
	record := func(t *testing.T, edit func(p *provenance.Payload), proof []byte) []byte {
		p := rotatePayload(t, old)
		p.Version = provenance.Version
		p.Kind, p.NextKey = provenance.KindRotate, spkiOf(t, next)
		p.Media = []provenance.Media{provenance.NewMedia(provenance.RoleRotationProof, provenance.ProofMediaType, proof)}
		if edit != nil {
			edit(p)
		}
		b, err := provenance.MarshalPayload(p)
		if err != nil {
			t.Fatal(err)
		}
		return signRaw(t, old, b)
	}
	recordEnv := signSample(t, next) // an event record of the new key
	cases := []struct {
		name  string
		proof func() proofFor
		edit  func(p *provenance.Payload)
		media func(proof []byte) [][]byte
		want  string
	}{
		{name: "control", want: "ok"},
		{name: "proof by another key", proof: func() proofFor { p := good; p.signer, p.key = stranger, stranger; return p }, want: "key"},
		{name: "proof header names the new key, signed by another", proof: func() proofFor { p := good; p.signer = stranger; return p }, want: "signature"},
		{name: "proof for another seq", proof: func() proofFor { p := good; p.seq++; return p }, want: "malformed"},
		{name: "proof for another event", proof: func() proofFor { p := good; p.event = "rotate-2"; return p }, want: "malformed"},
		{name: "proof from another old key", proof: func() proofFor { p := good; p.from = spkiOf(t, stranger); return p }, want: "malformed"},
		{name: "proof with the record content type", proof: func() proofFor { p := good; p.ct = provenance.ContentType; return p }, want: "malformed"},
		{name: "proof with an extra field", proof: func() proofFor { p := good; p.extra = map[string]any{"note": "x"}; return p }, want: "malformed"},
		{name: "proof version 2", proof: func() proofFor { p := good; p.extra = map[string]any{"v": uint64(2)}; return p }, want: "malformed"},
		{name: "proof with an x5chain", proof: func() proofFor {
			p := good
			p.headers = func(hs []header) []header { return withHeader(hs, provenance.HeaderLabelX5Chain, []byte{0x30}) }
			return p
		}, want: "malformed"},
		{name: "proof with a wrong kid", proof: func() proofFor {
			p := good
			p.headers = func(hs []header) []header { return withHeader(hs, 4, []byte(idOf(t, stranger))) }
			return p
		}, want: "device_id"},
		{name: "no proof listed or sent", edit: func(p *provenance.Payload) { p.Media = nil }, media: func([]byte) [][]byte { return nil }, want: "malformed"},
		{name: "proof listed, not sent", media: func([]byte) [][]byte { return nil }, want: "media"},
		{name: "proof listed as a thumbnail", edit: func(p *provenance.Payload) { p.Media[0].Role = provenance.RoleThumbnail }, want: "malformed"},
		{name: "two media", edit: func(p *provenance.Payload) { p.Media = append(p.Media, p.Media[0]) },
			media: func(pr []byte) [][]byte { return [][]byte{pr, pr} }, want: "malformed"},
		{name: "no next_key", edit: func(p *provenance.Payload) { p.NextKey = nil }, want: "malformed"},
		{name: "next_key is the signer", edit: func(p *provenance.Payload) { p.NextKey = spkiOf(t, old) }, want: "malformed"},
		{name: "next_key garbage", edit: func(p *provenance.Payload) { p.NextKey = []byte("key") }, want: "malformed"},
		{name: "next_key P-384", edit: func(p *provenance.Payload) { p.NextKey = spkiOf(t, newP384(t)) }, want: "malformed"},
		{name: "next_key is not the proof's key", edit: func(p *provenance.Payload) { p.NextKey = spkiOf(t, stranger) }, want: "key"},
		{name: "an event record as the proof", proof: nil, media: func([]byte) [][]byte { return [][]byte{recordEnv} }, want: "media"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pf := good
			if c.proof != nil {
				pf = c.proof()
			}
			proof := pf.build(t)
			env := record(t, c.edit, proof)
			media := [][]byte{proof}
			if c.media != nil {
				media = c.media(proof)
			}
			v, err := provenance.Verify(env, media, nil)
			wantClass(t, err, c.want)
			if err == nil && v.NextDevice != idOf(t, next) {
				t.Errorf("next device %s", v.NextDevice)
			}
		})
	}
	// A record whose proof is an event record, listed by its hash: the
	// content type catches it.
	env := record(t, nil, recordEnv)
	wantClass(t, verifyErr(env, [][]byte{recordEnv}), "malformed")

	// A rotate record altered after signing (next_key swapped) fails its
	// signature before anything else.
	b, err := provenance.Rotate(nil, old, next, rotatePayload(t, old), nil)
	if err != nil {
		t.Fatal(err)
	}
	spliced := spliceEnvelope(t, b.Envelope, func(m *cose.Sign1Message) {
		p, err := provenance.UnmarshalPayload(m.Payload)
		if err != nil {
			t.Fatal(err)
		}
		p.NextKey = spkiOf(t, stranger)
		if m.Payload, err = provenance.MarshalPayload(p); err != nil {
			t.Fatal(err)
		}
	})
	wantClass(t, verifyErr(spliced, b.Media), "signature")
}

// TestRotateRefusesSource: a rotate record carries no frame, so it names no
// frame source.
func TestRotateRefusesSource(t *testing.T) {
	old, next := newP256(t), newP256(t)
	p := rotatePayload(t, old)
	p.Source = &provenance.Source{Kind: provenance.SourceV4L2, Name: "vivid"}
	if _, err := provenance.Rotate(nil, old, next, p, nil); !errors.Is(err, provenance.ErrMalformed) {
		t.Fatalf("Rotate with a source: %v, want ErrMalformed", err)
	}
}

// TestSourceFromCamera: V4L2 and exec sources are cameras; a synthetic
// scene, images, an unknown kind and an absent source are not.
func TestSourceFromCamera(t *testing.T) {
	for _, c := range []struct {
		s    *provenance.Source
		want bool
	}{
		{&provenance.Source{Kind: provenance.SourceV4L2, Name: "vivid"}, true},
		{&provenance.Source{Kind: provenance.SourceExec, Name: "rpicam-vid"}, true},
		{&provenance.Source{Kind: provenance.SourceSynthetic}, false},
		{&provenance.Source{Kind: provenance.SourceImages, Name: "clips"}, false},
		{&provenance.Source{Kind: "rtsp"}, false},
		{nil, false},
	} {
		if got := c.s.FromCamera(); got != c.want {
			t.Errorf("%+v FromCamera = %v, want %v", c.s, got, c.want)
		}
	}
}
