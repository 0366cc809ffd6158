package provenance_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/keyframe-cam/keyframe/provenance"
)

var update = flag.Bool("update", false, "regenerate testdata/vectors (TestGenerateVectors)")

const vectorDir = "testdata/vectors"

// manifest is testdata/vectors/manifest.json: every vector and the result a
// verifier must give for it.
type manifest struct {
	Comment []string  `json:"comment"`
	Keys    []keyRef  `json:"keys"`
	Certs   []certRef `json:"certs"`
	Vectors []vector  `json:"vectors"`
	// Clips are whole clips (docs/envelope.md §8.1): an end record, segment
	// records and their frames.
	Clips []clipVector `json:"clips"`
}

// clipVector is a clip and what VerifyClip must say of it.
type clipVector struct {
	Name     string        `json:"name"`
	Breaks   string        `json:"breaks"`        // what the vector changes, "" for a valid one
	End      string        `json:"end,omitempty"` // the end record's envelope; absent: none (interrupted event)
	Segments []clipSegment `json:"segments"`      // in index order
	// Expect is "ok" or the problem (ClipError.Problem) a verifier must
	// name, with Segment and Frame (-1: the segment or record as a whole).
	Expect  string `json:"expect"`
	Segment *int   `json:"segment,omitempty"`
	Frame   *int   `json:"frame,omitempty"`
	Frames  int    `json:"frames,omitempty"` // for a valid clip: how many frames
}

// clipSegment is a segment record and its frames: one file each (Frames) or
// the record's media object (Media).
type clipSegment struct {
	Envelope string   `json:"envelope"`
	Frames   []string `json:"frames,omitempty"`
	Media    string   `json:"media,omitempty"`
}

// certRef is a certificate of the vectors' throwaway fleet.
type certRef struct {
	Name   string `json:"name"`
	File   string `json:"file"`             // PEM CERTIFICATE
	Key    string `json:"key"`              // the certified public key (SPKI PEM)
	Issuer string `json:"issuer,omitempty"` // name of the issuing certificate; "" if self-signed
	CA     bool   `json:"ca,omitempty"`     // a certificate authority, not a device
}

type keyRef struct {
	Name     string `json:"name"`
	Private  string `json:"private"`   // PKCS#8 PEM, TEST ONLY
	Public   string `json:"public"`    // SubjectPublicKeyInfo PEM
	DeviceID string `json:"device_id"` // expected DeviceID of Public
	Alg      string `json:"alg"`
}

type vector struct {
	Name     string   `json:"name"`
	Breaks   string   `json:"breaks"`             // what the vector changes, "" for a valid one
	Envelope string   `json:"envelope"`           // COSE_Sign1 file
	Media    []string `json:"media"`              // media files, in payload order
	WantKey  string   `json:"want_key,omitempty"` // public key the verifier is told to expect
	Expect   string   `json:"expect"`             // ok, malformed, signature, device_id, media, key
	// SignedBy names the public key under which the envelope's signature
	// (over its Sig_structure, as it stands) is valid, for vectors that a
	// correct signature does not save.
	SignedBy string `json:"signed_by,omitempty"`

	// For valid vectors: what a verifier reports.
	Bundle  string `json:"bundle,omitempty"`  // the same record as an upload bundle
	Payload string `json:"payload,omitempty"` // the payload in CBOR diagnostic notation
	Device  string `json:"device,omitempty"`
	Event   string `json:"event,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Seq     uint64 `json:"seq,omitempty"`
	Prev    string `json:"prev,omitempty"`    // hex; "" on a device's first record
	Follows string `json:"follows,omitempty"` // the vector whose envelope prev is the SHA-256 of
	Hash    string `json:"hash,omitempty"`    // hex SHA-256 of the envelope file
	// Chain lists the certificate files the envelope's x5chain holds, in
	// order (device certificate first).
	Chain []string `json:"chain,omitempty"`
	// For a valid rotate record: the new key (SPKI PEM) and its device ID.
	NextKey    string `json:"next_key,omitempty"`
	NextDevice string `json:"next_device,omitempty"`
}

// testKey is a signing key of the vectors.
type testKey struct {
	ref    keyRef
	signer crypto.Signer
}

// loadOrCreateKey reads a TEST ONLY key from the vectors, or makes one.
func loadOrCreateKey(t *testing.T, name, alg string, gen func() (crypto.Signer, error)) testKey {
	t.Helper()
	ref := keyRef{
		Name:    name,
		Private: "keys/" + name + ".key.pem",
		Public:  "keys/" + name + ".pub.pem",
		Alg:     alg,
	}
	var signer crypto.Signer
	if data, err := os.ReadFile(filepath.Join(vectorDir, ref.Private)); err == nil {
		k, err := parsePrivatePEM(data)
		if err != nil {
			t.Fatalf("%s: %v", ref.Private, err)
		}
		signer = k
	} else {
		k, err := gen()
		if err != nil {
			t.Fatal(err)
		}
		signer = k
	}
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		t.Fatal(err)
	}
	priv := "TEST ONLY. This private key is published with keyframe's test vectors;\n" +
		"anything it signs proves nothing. Never enroll or use it.\n\n" +
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	writeVector(t, ref.Private, []byte(priv))
	writeVector(t, ref.Public, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spkiOf(t, signer)}))
	ref.DeviceID = idOf(t, signer)
	return testKey{ref, signer}
}

func parsePrivatePEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T is not a signer", k)
	}
	return s, nil
}

func parsePublicPEM(data []byte) (crypto.PublicKey, []byte, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, nil, errors.New("no PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	return k, block.Bytes, err
}

func writeVector(t *testing.T, name string, data []byte) {
	t.Helper()
	path := filepath.Join(vectorDir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// thumbnail draws a small deterministic JPEG: a grey gradient with a bright
// box where "motion" is.
func thumbnail(t *testing.T, box image.Rectangle) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 64, 48))
	for y := range 48 {
		for x := range 64 {
			c := uint8(40 + x + y)
			if (image.Point{x, y}).In(box) {
				c = 230
			}
			img.SetGray(x, y, color.Gray{Y: c})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 75}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestGenerateVectors writes testdata/vectors. Run it with
//
//	go test ./provenance/ -run TestGenerateVectors -update
//
// Keys already in testdata/vectors/keys are reused. Randomness (ECDSA
// signatures) comes from a fixed seed, so with the same Go release a rerun
// writes the same bytes.
func TestGenerateVectors(t *testing.T) {
	if !*update {
		t.Skip("regenerates testdata/vectors; run with -update")
	}
	cryptotest.SetGlobalRandom(t, 20251124)

	keyA := loadOrCreateKey(t, "device-a", "ES256", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), nil) })
	keyB := loadOrCreateKey(t, "device-b", "ES256", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), nil) })
	keyE := loadOrCreateKey(t, "device-ed25519", "EdDSA", func() (crypto.Signer, error) {
		_, k, err := ed25519.GenerateKey(nil)
		return k, err
	})
	keyP := loadOrCreateKey(t, "device-p384", "ES384 (unsupported)", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), nil) })
	a, b := keyA.signer, keyB.signer
	idA, idB := keyA.ref.DeviceID, keyB.ref.DeviceID
	pubA, pubB := keyA.ref.Public, keyB.ref.Public

	startJPG := thumbnail(t, image.Rect(12, 8, 30, 30))
	endJPG := thumbnail(t, image.Rect(30, 10, 52, 40))
	flippedJPG := bytes.Clone(startJPG)
	flippedJPG[len(flippedJPG)/2] ^= 0x01
	writeVector(t, "start.jpg", startJPG)
	writeVector(t, "end.jpg", endJPG)
	writeVector(t, "start-flipped.jpg", flippedJPG)

	var vectors []vector
	add := func(v vector, env []byte) {
		t.Helper()
		if env != nil {
			writeVector(t, v.Envelope, env)
		}
		vectors = append(vectors, v)
	}
	// ok signs p with key through the package itself and records a valid vector.
	ok := func(name string, key testKey, p *provenance.Payload, mediaFile string, media []byte, follows string, chain ...certFile) []byte {
		t.Helper()
		env, err := provenance.SignWithChain(nil, key.signer, p, certDERs(chain))
		if err != nil {
			t.Fatal(err)
		}
		payload, err := provenance.MarshalPayload(p)
		if err != nil {
			t.Fatal(err)
		}
		diag, err := cbor.Diagnose(payload)
		if err != nil {
			t.Fatal(err)
		}
		bundle, err := (&provenance.Bundle{Envelope: env, Media: [][]byte{media}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		writeVector(t, name+".payload.diag", []byte(diag+"\n"))
		writeVector(t, name+".bundle", bundle)
		h := sha256.Sum256(env)
		add(vector{
			Name: name, Envelope: name + ".cose", Media: []string{mediaFile}, Expect: "ok",
			Bundle: name + ".bundle", Payload: name + ".payload.diag",
			Device: p.Device, Event: p.Event, Kind: p.Kind, Seq: p.Seq, Prev: hex.EncodeToString(p.Prev),
			Follows: follows, Hash: hex.EncodeToString(h[:]), Chain: certNames(chain),
		}, env)
		return env
	}

	// Valid records: an event's start and end, the second chained to the first.
	start := &provenance.Payload{
		Device: idA,
		Event:  "0mz4k7c1x9d2q8vr3h6a5b",
		Kind:   provenance.KindStart,
		Seq:    1,
		Boot:   "3f1c2a9e-6b7d-4e21-9a53-0c8d7e6f5a41",
		Time:   provenance.Time{UnixMs: 1764000000123, BootMs: 3600123, Clock: provenance.ClockSynced},
		Motion: provenance.Motion{
			Frames: 1, PeakAreaPPM: 41250, Box: [4]int32{120, 64, 300, 240}, Width: 640, Height: 480,
		},
		Media:    []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", startJPG)},
		KeyStore: "file",
	}
	startEnv := ok("ok-start", keyA, start, "start.jpg", startJPG, "")
	startHash := sha256.Sum256(startEnv)
	end := *start
	end.Kind, end.Seq, end.Prev = provenance.KindEnd, 2, startHash[:]
	end.Time = provenance.Time{UnixMs: 1764000008523, BootMs: 3608523, Clock: provenance.ClockSynced}
	end.Motion = provenance.Motion{DurationMs: 8400, Frames: 97, PeakAreaPPM: 183000, Box: [4]int32{300, 80, 520, 400}, Width: 640, Height: 480}
	end.Media = []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", endJPG)}
	endEnv := ok("ok-end", keyA, &end, "end.jpg", endJPG, "ok-start")
	// An Ed25519 device without a real-time clock: it booted in 1970.
	ed := *start
	ed.Device, ed.Event, ed.Boot = keyE.ref.DeviceID, "0mz4kq3w8e1r5t2y7u9i0o", "9b0e4c6d-2a1f-4f3e-8d7c-5b6a49382716"
	ed.Time = provenance.Time{UnixMs: 42137, BootMs: 42137, Clock: provenance.ClockUnsynced}
	ok("ok-ed25519", keyE, &ed, "start.jpg", startJPG, "")
	vectors = append(vectors,
		vector{Name: "ok-start-want-a", Envelope: "ok-start.cose", Media: []string{"start.jpg"}, WantKey: pubA, Expect: "ok",
			Device: idA, Event: start.Event, Kind: start.Kind, Seq: 1, Hash: hex.EncodeToString(startHash[:])},
	)

	startPayload, err := provenance.MarshalPayload(start)
	if err != nil {
		t.Fatal(err)
	}
	startMedia := []string{"start.jpg"}
	// resigned builds an envelope around payload with headers hs, signed
	// properly by key: only the rule the vector targets can reject it.
	resigned := func(name, breaks, expect string, key testKey, hs []header, payload []byte) {
		t.Helper()
		env, err := rawEnvelope{protected: hs, payload: payload}.build(key.signer)
		if err != nil {
			t.Fatal(err)
		}
		add(vector{Name: name, Breaks: breaks, Envelope: name + ".cose", Media: startMedia, Expect: expect, SignedBy: key.ref.Public}, env)
	}
	hdrA := stdHeaders(cose.AlgorithmES256, idA, spkiOf(t, a))
	editStart := func(f func(m map[string]any)) []byte {
		m := payloadMap(t, startPayload)
		f(m)
		return mustDet(t, m)
	}
	splice := func(edit func(m *cose.Sign1Message)) []byte { return spliceEnvelope(t, startEnv, edit) }

	// Broken after signing: the signature no longer holds.
	altered := editStart(func(m map[string]any) { m["seq"] = uint64(7) })
	add(vector{Name: "bad-payload-altered", Breaks: "payload seq changed from 1 to 7 after signing, not signed again",
		Envelope: "bad-payload-altered.cose", Media: startMedia, Expect: "signature"},
		splice(func(m *cose.Sign1Message) { m.Payload = altered }))
	add(vector{Name: "bad-signature-flipped", Breaks: "one bit of the signature flipped",
		Envelope: "bad-signature-flipped.cose", Media: startMedia, Expect: "signature"},
		splice(func(m *cose.Sign1Message) { m.Signature[10] ^= 0x01 }))
	add(vector{Name: "bad-spki-swapped", Breaks: "signer key header replaced by device-b's key, not signed again",
		Envelope: "bad-spki-swapped.cose", Media: startMedia, Expect: "signature"},
		splice(func(m *cose.Sign1Message) {
			m.Headers.RawProtected = nil
			m.Headers.Protected[provenance.HeaderLabelSPKI] = spkiOf(t, b)
		}))

	// Media.
	add(vector{Name: "bad-media-flipped", Breaks: "one bit of the thumbnail flipped", Envelope: "ok-start.cose",
		Media: []string{"start-flipped.jpg"}, Expect: "media", SignedBy: pubA}, nil)
	add(vector{Name: "bad-media-missing", Breaks: "the thumbnail the payload lists is not supplied", Envelope: "ok-start.cose",
		Media: []string{}, Expect: "media", SignedBy: pubA}, nil)
	add(vector{Name: "bad-media-swapped", Breaks: "another record's thumbnail supplied", Envelope: "ok-start.cose",
		Media: []string{"end.jpg"}, Expect: "media", SignedBy: pubA}, nil)

	// Keys and device IDs.
	add(vector{Name: "bad-want-b", Breaks: "valid record of device-a, verifier expects device-b's key", Envelope: "ok-start.cose",
		Media: startMedia, WantKey: pubB, Expect: "key", SignedBy: pubA}, nil)
	resigned("bad-other-key-claims-device", "signed by device-b (its key in the header) but kid and payload device are device-a's ID",
		"device_id", keyB, stdHeaders(cose.AlgorithmES256, idA, spkiOf(t, b)), startPayload)
	vectors = append(vectors, vector{Name: "bad-other-key-claims-device-want-a",
		Breaks:   "as bad-other-key-claims-device, verifier told to expect device-a's enrolled key",
		Envelope: "bad-other-key-claims-device.cose", Media: startMedia, WantKey: pubA, Expect: "key", SignedBy: pubB})
	resigned("bad-kid", "kid is device-b's ID; signed by device-a", "device_id", keyA,
		stdHeaders(cose.AlgorithmES256, idB, spkiOf(t, a)), startPayload)
	resigned("bad-payload-device", "payload device is device-b's ID; signed by device-a", "device_id", keyA, hdrA,
		editStart(func(m map[string]any) { m["device"] = idB }))

	// Strict payload: all properly signed, so only strictness catches them.
	unsorted, err := cbor.EncOptions{Sort: cbor.SortNone}.EncMode()
	if err != nil {
		t.Fatal(err)
	}
	declOrder, err := unsorted.Marshal(start)
	if err != nil {
		t.Fatal(err)
	}
	resigned("bad-nondeterministic-order", "payload map keys in declaration order, not core deterministic order", "malformed", keyA, hdrA, declOrder)
	seqAt := bytes.Index(startPayload, []byte("\x63seq\x01"))
	if seqAt < 0 {
		t.Fatal("seq not found in payload")
	}
	longSeq := slices.Concat(startPayload[:seqAt+4], []byte{0x1a, 0, 0, 0, 1}, startPayload[seqAt+5:])
	resigned("bad-nondeterministic-int", "seq 1 encoded in 5 bytes (1a 00000001) instead of 1", "malformed", keyA, hdrA, longSeq)
	resigned("bad-unknown-field", `payload has an extra field "color"`, "malformed", keyA, hdrA,
		editStart(func(m map[string]any) { m["color"] = "red" }))
	resigned("bad-version", "payload v is 2", "malformed", keyA, hdrA, editStart(func(m map[string]any) { m["v"] = uint64(2) }))
	resigned("bad-kind", `payload kind is "middle"`, "malformed", keyA, hdrA, editStart(func(m map[string]any) { m["kind"] = "middle" }))
	resigned("bad-prev-length", "payload prev is 31 bytes", "malformed", keyA, hdrA,
		editStart(func(m map[string]any) { m["prev"] = bytes.Repeat([]byte{0xab}, 31) }))
	resigned("bad-prev-null", "payload prev is null instead of h''", "malformed", keyA, hdrA,
		editStart(func(m map[string]any) { m["prev"] = nil }))

	// Headers.
	resigned("bad-no-spki", "protected header has no signer key (-65537)", "malformed", keyA,
		withoutHeader(hdrA, provenance.HeaderLabelSPKI), startPayload)
	resigned("bad-alg-mismatch", "alg header says EdDSA (-8); key is P-256 and the signature ES256", "malformed", keyA,
		withHeader(hdrA, 1, int64(cose.AlgorithmEdDSA)), startPayload)
	resigned("bad-es384", "signed with a P-384 key, alg ES384 (-35): not an accepted algorithm", "malformed", keyP,
		stdHeaders(cose.AlgorithmES384, keyP.ref.DeviceID, spkiOf(t, keyP.signer)),
		editStart(func(m map[string]any) { m["device"] = keyP.ref.DeviceID }))
	resigned("bad-content-type", `content type is "application/cbor"`, "malformed", keyA,
		withHeader(hdrA, 3, "application/cbor"), startPayload)
	resigned("bad-extra-header", "protected header label 33 (x5chain) holds 30 00, which is not a certificate", "malformed", keyA,
		withHeader(hdrA, 33, []byte{0x30, 0x00}), startPayload)
	kidOnly := mustDet(t, map[int64]any{4: []byte(idA)})
	// Same signature as ok-start: only the unprotected bucket differs.
	var okMsg cose.Sign1Message
	if err := okMsg.UnmarshalCBOR(startEnv); err != nil {
		t.Fatal(err)
	}
	add(vector{Name: "bad-unprotected-header", Breaks: "ok-start with kid added to the unprotected header (signature still valid)",
		Envelope: "bad-unprotected-header.cose", Media: startMedia, Expect: "malformed", SignedBy: pubA},
		mustDet(t, cbor.Tag{Number: 18, Content: []any{protectedBytes(t, &okMsg), cbor.RawMessage(kidOnly), okMsg.Payload, okMsg.Signature}}))
	add(vector{Name: "bad-untagged", Breaks: "ok-start without tag 18", Envelope: "bad-untagged.cose", Media: startMedia,
		Expect: "malformed", SignedBy: pubA}, startEnv[1:])
	add(vector{Name: "bad-truncated", Breaks: "ok-start cut 20 bytes short", Envelope: "bad-truncated.cose", Media: startMedia,
		Expect: "malformed"}, startEnv[:len(startEnv)-20])

	// Everything below was added with device certificates and key rotation.
	// It comes after the older vectors so that their bytes (and the random
	// stream that signed them) stay as they were.
	genP256 := func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), nil) }
	keyRoot := loadOrCreateKey(t, "fleet-root", "ES256 (certificate authority)", genP256)
	keyInter := loadOrCreateKey(t, "fleet-intermediate", "ES256 (certificate authority)", genP256)
	keyN := loadOrCreateKey(t, "device-a-next", "ES256", genP256)
	idN := keyN.ref.DeviceID
	root := newTestCA(t, "keyframe test fleet root", keyRoot.signer, nil, certFrom, certTo)
	inter := newTestCA(t, "keyframe test fleet intermediate", keyInter.signer, root, certFrom, certTo)
	certRoot := certFile{"fleet-root", "certs/fleet-root.pem", root.der}
	certInter := certFile{"fleet-intermediate", "certs/fleet-intermediate.pem", inter.der}
	certA := certFile{"device-a", "certs/device-a.pem", inter.issue(t, a.Public(), idA, []string{provenance.DeviceURI(idA)}, certFrom, certTo)}
	certB := certFile{"device-b", "certs/device-b.pem", inter.issue(t, b.Public(), idB, []string{provenance.DeviceURI(idB)}, certFrom, certTo)}
	certs := []certRef{
		{Name: certRoot.name, File: certRoot.file, Key: keyRoot.ref.Public, CA: true},
		{Name: certInter.name, File: certInter.file, Key: keyInter.ref.Public, Issuer: certRoot.name, CA: true},
		{Name: certA.name, File: certA.file, Key: pubA, Issuer: certInter.name},
		{Name: certB.name, File: certB.file, Key: pubB, Issuer: certInter.name},
	}
	for _, c := range []certFile{certRoot, certInter, certA, certB} {
		writeVector(t, c.file, provenance.EncodeCertChain([][]byte{c.der}))
	}

	// A record with its device certificate and the intermediate (x5chain as
	// an array): device-a's third record.
	x5 := *start
	x5.Event, x5.Seq = "0mz4kb2n7p4s6u8w0y1z3c", 3
	endHash := sha256.Sum256(endEnv)
	x5.Prev = endHash[:]
	x5.Time = provenance.Time{UnixMs: 1764000060000, BootMs: 3660000, Clock: provenance.ClockSynced}
	x5Env := ok("ok-x5chain", keyA, &x5, "start.jpg", startJPG, "ok-end", certA, certInter)
	resigned("bad-x5chain-other-key", "x5chain is device-b's certificate and the intermediate; signed by device-a", "key", keyA,
		withHeader(hdrA, provenance.HeaderLabelX5Chain, certDERs([]certFile{certB, certInter})), startPayload)
	resigned("bad-x5chain-garbage", `x5chain is an array holding one bstr "not a certificate"`, "malformed", keyA,
		withHeader(hdrA, provenance.HeaderLabelX5Chain, [][]byte{[]byte("not a certificate")}), startPayload)
	resigned("bad-x5chain-too-many", "x5chain holds 5 certificates (at most 4 allowed)", "malformed", keyA,
		withHeader(hdrA, provenance.HeaderLabelX5Chain, certDERs([]certFile{certA, certInter, certRoot, certRoot, certRoot})), startPayload)
	resigned("bad-unknown-header", "protected header has an unknown label (34, x5t)", "malformed", keyA,
		withHeader(hdrA, 34, []byte{0x30, 0x00}), startPayload)

	// Key rotation: device-a's fourth record hands its identity to
	// device-a-next (x5chain: the device certificate alone, as a bstr); the
	// new key's first record continues the chain.
	x5Hash := sha256.Sum256(x5Env)
	rot := &provenance.Payload{
		Device: idA, Event: "rotate-" + idN, Seq: 4, Boot: start.Boot, Prev: x5Hash[:],
		Time:     provenance.Time{UnixMs: 1764000120000, BootMs: 3720000, Clock: provenance.ClockSynced},
		KeyStore: "file",
	}
	rb, err := provenance.Rotate(nil, a, keyN.signer, rot, certDERs([]certFile{certA}))
	if err != nil {
		t.Fatal(err)
	}
	rotPayload, err := provenance.MarshalPayload(rot)
	if err != nil {
		t.Fatal(err)
	}
	rotDiag, err := cbor.Diagnose(rotPayload)
	if err != nil {
		t.Fatal(err)
	}
	rotBundle, err := rb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	writeVector(t, "ok-rotate.proof.cose", rb.Media[0])
	writeVector(t, "ok-rotate.payload.diag", []byte(rotDiag+"\n"))
	writeVector(t, "ok-rotate.bundle", rotBundle)
	rotHash := sha256.Sum256(rb.Envelope)
	add(vector{
		Name: "ok-rotate", Envelope: "ok-rotate.cose", Media: []string{"ok-rotate.proof.cose"}, Expect: "ok",
		Bundle: "ok-rotate.bundle", Payload: "ok-rotate.payload.diag",
		Device: idA, Event: rot.Event, Kind: provenance.KindRotate, Seq: 4, Prev: hex.EncodeToString(rot.Prev),
		Follows: "ok-x5chain", Hash: hex.EncodeToString(rotHash[:]), Chain: []string{certA.file},
		NextKey: keyN.ref.Public, NextDevice: idN,
	}, rb.Envelope)
	after := *start
	after.Device, after.Event, after.Seq, after.Prev = idN, "0mz4kc5d8f0g2h4j6k8m1n", 5, rotHash[:]
	after.Time = provenance.Time{UnixMs: 1764000180000, BootMs: 3780000, Clock: provenance.ClockSynced}
	ok("ok-rotated-start", keyN, &after, "start.jpg", startJPG, "ok-rotate")

	// Broken rotations, each properly signed by device-a around a proof that
	// is itself properly signed: only the rotation rules catch them.
	rotateRecord := func(name, breaks, expect string, proof []byte, edit func(p *provenance.Payload)) {
		t.Helper()
		p := *rot
		p.Version = provenance.Version
		p.Media = []provenance.Media{provenance.NewMedia(provenance.RoleRotationProof, provenance.ProofMediaType, proof)}
		media := []string{name + ".proof.cose"}
		if edit != nil {
			edit(&p)
		}
		if len(p.Media) == 0 {
			media = []string{}
		} else {
			writeVector(t, media[0], proof)
		}
		payload, err := provenance.MarshalPayload(&p)
		if err != nil {
			t.Fatal(err)
		}
		env, err := rawEnvelope{protected: hdrA, payload: payload}.build(a)
		if err != nil {
			t.Fatal(err)
		}
		add(vector{Name: name, Breaks: breaks, Envelope: name + ".cose", Media: media, Expect: expect, SignedBy: pubA}, env)
	}
	goodProof := proofFor{signer: keyN.signer, key: keyN.signer, ct: provenance.ProofContentType, from: spkiOf(t, a), event: rot.Event, seq: rot.Seq}
	otherKeyProof := goodProof
	otherKeyProof.signer, otherKeyProof.key = b, b
	rotateRecord("bad-rotate-proof-other-key", "next_key is device-a-next's key; the proof is signed by device-b (its key in the proof's header)", "key",
		otherKeyProof.build(t), nil)
	otherSeqProof := goodProof
	otherSeqProof.seq = 5
	rotateRecord("bad-rotate-proof-other-record", "the proof, by device-a-next, names seq 5; the record is seq 4", "malformed",
		otherSeqProof.build(t), nil)
	rotateRecord("bad-rotate-no-proof", "rotate record with next_key but no media (no proof of possession)", "malformed",
		nil, func(p *provenance.Payload) { p.Media = nil })
	resigned("bad-next-key-on-start", "a start record with a next_key field", "malformed", keyA, hdrA,
		editStart(func(m map[string]any) { m["next_key"] = spkiOf(t, keyN.signer) }))

	// Encodings that are not the canonical one (docs/envelope.md §3): each
	// keeps ok-start's signature valid or is signed again, so only the
	// shortest-form and duplicate-label rules catch them. They come last so
	// that the older vectors' bytes stay as they were.
	sp := sign1Split(t, startEnv)
	noncanon := func(name, breaks string, env []byte) {
		t.Helper()
		add(vector{Name: name, Breaks: breaks, Envelope: name + ".cose", Media: startMedia, Expect: "malformed", SignedBy: pubA}, env)
	}
	noncanon("bad-noncanonical-signature-length", "ok-start with the signature's length as 59 00 40 instead of 58 40",
		sp.frame(nil, nil, nil, []byte{0x59, 0x00, byte(len(sp.sig))}))
	noncanon("bad-noncanonical-payload-length", "ok-start with the payload's length in 4 bytes (5a) instead of 2 (59)",
		sp.frame(nil, nil, longHead(2, len(sp.payload)), nil))
	noncanon("bad-noncanonical-unprotected", "ok-start with the empty unprotected map as b8 00 instead of a0",
		sp.frame(nil, []byte{0xb8, 0x00}, nil, nil))
	noncanon("bad-indefinite-payload", "ok-start with the payload as an indefinite-length bstr of one chunk (5f ... ff)",
		sp.frame(nil, nil, []byte{0x5f}, nil, 0xff))
	dupProt := slices.Concat([]byte{0xa5}, sp.prot[1:], []byte{0x04}, mustDet(t, []byte(idA)))
	if sp.prot[0] != 0xa4 {
		t.Fatalf("ok-start's protected header starts %x, want a4", sp.prot[0])
	}
	dupSig, err := signProtected(a, dupProt, startPayload)
	if err != nil {
		t.Fatal(err)
	}
	noncanon("bad-duplicate-header", "protected header with kid (4) twice, same value; signed by device-a",
		(&splitEnv{prot: dupProt, payload: startPayload, sig: dupSig}).frame(nil, nil, nil, nil))

	// Frame sources (docs/envelope.md §4.3): device-b's first two records
	// name a V4L2 camera and a synthetic scene. They come last so that the
	// older vectors' bytes stay as they were; an absent source keeps the
	// older records' encoding.
	cam := *start
	cam.Device, cam.Event, cam.Boot = idB, "0mz4kd7f9h1j3k5m7n9p2q", "5d2c8a41-7e3b-4c9f-b6a0-1f2e3d4c5b6a"
	cam.Time = provenance.Time{UnixMs: 1764000240000, BootMs: 120000, Clock: provenance.ClockSynced}
	cam.Source = &provenance.Source{Kind: provenance.SourceV4L2, Name: "HD Pro Webcam C920", Bus: "usb-0000:01:00.0-1.2"}
	camEnv := ok("ok-source-v4l2", keyB, &cam, "start.jpg", startJPG, "")
	camHash := sha256.Sum256(camEnv)
	synth := cam
	synth.Kind, synth.Seq, synth.Prev = provenance.KindEnd, 2, camHash[:]
	synth.Time = provenance.Time{UnixMs: 1764000246000, BootMs: 126000, Clock: provenance.ClockSynced}
	synth.Motion = provenance.Motion{DurationMs: 6000, Frames: 60, PeakAreaPPM: 52000, Box: [4]int32{100, 60, 260, 220}, Width: 640, Height: 480}
	synth.Media = []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", endJPG)}
	synth.Source = &provenance.Source{Kind: provenance.SourceSynthetic}
	synthEnv := ok("ok-source-synthetic", keyB, &synth, "end.jpg", endJPG, "ok-source-v4l2")
	hdrB := stdHeaders(cose.AlgorithmES256, idB, spkiOf(t, b))
	camPayload, err := provenance.MarshalPayload(&cam)
	if err != nil {
		t.Fatal(err)
	}
	editCam := func(f func(m map[string]any)) []byte {
		m := payloadMap(t, camPayload)
		f(m)
		return mustDet(t, m)
	}
	resignedB := func(name, breaks string, payload []byte) {
		t.Helper()
		env, err := rawEnvelope{protected: hdrB, payload: payload}.build(b)
		if err != nil {
			t.Fatal(err)
		}
		add(vector{Name: name, Breaks: breaks, Envelope: name + ".cose", Media: startMedia, Expect: "malformed", SignedBy: pubB}, env)
	}
	resignedB("bad-source-kind", `ok-source-v4l2 with source kind "V4L2" (upper case; re-signed)`,
		editCam(func(m map[string]any) { m["source"].(map[any]any)["kind"] = "V4L2" }))
	resignedB("bad-source-extra-field", `ok-source-v4l2 with an extra source field "serial" (re-signed)`,
		editCam(func(m map[string]any) { m["source"].(map[any]any)["serial"] = "1234" }))
	resignedB("bad-source-no-bus", "ok-source-v4l2 with the source's bus field left out (re-signed)",
		editCam(func(m map[string]any) { delete(m["source"].(map[any]any), "bus") }))

	// Clips (docs/envelope.md §4.4, §8.1): device-b's next event has a
	// clip of two segments of three frames each, the first two frames
	// before the trigger, and an end record that lists the segments.
	clips := clipVectors(t, keyB, hdrB, &synth, synthEnv, ok, add)

	// The generator checks its own output; TestVectors checks the files.
	for _, v := range vectors {
		got := verifyVector(t, v)
		if got != v.Expect {
			t.Errorf("%s: verifier says %s, vector expects %s", v.Name, got, v.Expect)
		}
	}
	for _, c := range clips {
		if err := checkClipVector(t, c); err != nil {
			t.Errorf("%s: %v", c.Name, err)
		}
	}
	m := manifest{
		Comment: []string{
			"keyframe provenance test vectors; the format is specified in docs/envelope.md.",
			"Each vector: verify envelope with media (in order), and, if want_key is set, require that key.",
			"expect is the one error class a verifier must report: ok, malformed, signature, device_id, media or key.",
			"signed_by names the key under which the envelope's signature is valid as it stands, where one is.",
			"certs/ holds a throwaway fleet: root CA, intermediate, device certificates (x5chain vectors).",
			"Keys under keys/ are TEST ONLY. Regenerate: go test ./provenance/ -run TestGenerateVectors -update",
		},
		Keys:    []keyRef{keyA.ref, keyB.ref, keyE.ref, keyP.ref, keyN.ref, keyRoot.ref, keyInter.ref},
		Certs:   certs,
		Vectors: vectors,
		Clips:   clips,
	}
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeVector(t, "manifest.json", append(out, '\n'))
}

// certFile is a certificate of the vectors and the file it is written to.
type certFile struct {
	name, file string
	der        []byte
}

func certDERs(cs []certFile) [][]byte {
	var out [][]byte
	for _, c := range cs {
		out = append(out, c.der)
	}
	return out
}

func certNames(cs []certFile) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.file)
	}
	return out
}

// protectedBytes returns the serialised protected header map of m (the
// content of its protected bstr).
func protectedBytes(t testing.TB, m *cose.Sign1Message) []byte {
	t.Helper()
	var b []byte
	if err := cbor.Unmarshal(m.Headers.RawProtected, &b); err != nil {
		t.Fatal(err)
	}
	return b
}

func readManifest(t testing.TB) manifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorDir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func readVector(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// verifyVector runs Verify on v and returns the class of the result.
func verifyVector(t testing.TB, v vector) string {
	t.Helper()
	env := readVector(t, v.Envelope)
	media := make([][]byte, len(v.Media))
	for i, f := range v.Media {
		media[i] = readVector(t, f)
	}
	var want crypto.PublicKey
	if v.WantKey != "" {
		k, _, err := parsePublicPEM(readVector(t, v.WantKey))
		if err != nil {
			t.Fatal(err)
		}
		want = k
	}
	_, err := provenance.Verify(env, media, want)
	c := classOf(err)
	if c == "" {
		t.Errorf("%s: error of no single class: %v", v.Name, err)
	}
	return c
}

// TestVectors checks every vector in the manifest gives exactly its expected
// result, and that the valid ones say what the manifest says.
func TestVectors(t *testing.T) {
	m := readManifest(t)
	if len(m.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	byName := map[string]vector{}
	classes := map[string]int{}
	referenced := map[string]bool{"manifest.json": true, "README.md": true}
	for _, k := range m.Keys {
		referenced[k.Private], referenced[k.Public] = true, true
		checkKey(t, k)
	}
	certByName := map[string]certRef{}
	for _, c := range m.Certs {
		certByName[c.Name] = c
		referenced[c.File] = true
	}
	for _, c := range m.Certs {
		checkCert(t, c, certByName, m.Keys)
	}
	for _, v := range m.Vectors {
		if _, dup := byName[v.Name]; dup {
			t.Errorf("vector %s twice", v.Name)
		}
		byName[v.Name] = v
		classes[v.Expect]++
		for _, f := range append([]string{v.Envelope, v.Bundle, v.Payload, v.WantKey, v.SignedBy, v.NextKey}, v.Media...) {
			referenced[f] = true
		}
	}
	for _, c := range []string{"ok", "malformed", "signature", "device_id", "media", "key"} {
		if classes[c] == 0 {
			t.Errorf("no vector expects %s", c)
		}
	}

	for _, v := range m.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			if got := verifyVector(t, v); got != v.Expect {
				t.Fatalf("got %s, want %s (%s)", got, v.Expect, v.Breaks)
			}
			if v.SignedBy != "" {
				pub, _, err := parsePublicPEM(readVector(t, v.SignedBy))
				if err != nil {
					t.Fatal(err)
				}
				if err := checkSignature(readVector(t, v.Envelope), pub); err != nil {
					t.Errorf("signed_by %s: %v", v.SignedBy, err)
				}
			}
			if v.Expect == "ok" {
				checkValid(t, v, byName)
			}
		})
	}

	for _, c := range m.Clips {
		for _, f := range clipFiles(c) {
			referenced[f] = true
		}
		t.Run("clip/"+c.Name, func(t *testing.T) {
			if err := checkClipVector(t, c); err != nil {
				t.Fatal(err)
			}
		})
	}
	if len(m.Clips) == 0 {
		t.Error("no clip vectors")
	}

	entries, err := os.ReadDir(vectorDir)
	if err != nil {
		t.Fatal(err)
	}
	clipDir, err := os.ReadDir(filepath.Join(vectorDir, "clip"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range clipDir {
		entries = append(entries, prefixed{e, "clip/"})
	}
	keys, err := os.ReadDir(filepath.Join(vectorDir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range keys {
		entries = append(entries, prefixed{e, "keys/"})
	}
	certDir, err := os.ReadDir(filepath.Join(vectorDir, "certs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range certDir {
		entries = append(entries, prefixed{e, "certs/"})
	}
	for _, e := range entries {
		if !e.IsDir() && !referenced[e.Name()] {
			t.Errorf("%s is not referenced by the manifest", e.Name())
		}
	}
}

// prefixed renames a DirEntry with a directory prefix.
type prefixed struct {
	os.DirEntry
	prefix string
}

func (p prefixed) Name() string { return p.prefix + p.DirEntry.Name() }

// checkKey: the device ID is the fingerprint of the PEM's DER, computed here
// from the file's bytes, and the private key matches the public one.
func checkKey(t *testing.T, k keyRef) {
	t.Helper()
	pub, der, err := parsePublicPEM(readVector(t, k.Public))
	if err != nil {
		t.Fatalf("%s: %v", k.Public, err)
	}
	sum := sha256.Sum256(der)
	if want := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:16])); want != k.DeviceID {
		t.Errorf("%s: device ID %q in manifest, fingerprint %q", k.Name, k.DeviceID, want)
	}
	if id, err := provenance.DeviceID(pub); err != nil || id != k.DeviceID {
		t.Errorf("%s: DeviceID %q (%v), manifest %q", k.Name, id, err, k.DeviceID)
	}
	privPEM := readVector(t, k.Private)
	if !bytes.HasPrefix(privPEM, []byte("TEST ONLY")) {
		t.Errorf("%s is not marked TEST ONLY", k.Private)
	}
	priv, err := parsePrivatePEM(privPEM)
	if err != nil {
		t.Fatalf("%s: %v", k.Private, err)
	}
	if !priv.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Errorf("%s does not match %s", k.Private, k.Public)
	}
}

// checkCert: the certificate parses, certifies the key the manifest names,
// is issued by the named issuer (or self-signed), and a device certificate
// names its device and chains to the root with crypto/x509.
func checkCert(t *testing.T, c certRef, byName map[string]certRef, keys []keyRef) {
	t.Helper()
	chain, err := provenance.ParseCertChain(readVector(t, c.File))
	if err != nil || len(chain) != 1 {
		t.Fatalf("%s: %d certificates, %v", c.File, len(chain), err)
	}
	cert, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	_, spki, err := parsePublicPEM(readVector(t, c.Key))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cert.RawSubjectPublicKeyInfo, spki) {
		t.Errorf("%s does not certify %s", c.File, c.Key)
	}
	if cert.IsCA != c.CA {
		t.Errorf("%s: IsCA %v, manifest says ca %v", c.File, cert.IsCA, c.CA)
	}
	issuer := cert
	if c.Issuer != "" {
		ic, ok := byName[c.Issuer]
		if !ok {
			t.Fatalf("%s: issuer %q not in the manifest", c.File, c.Issuer)
		}
		ichain, err := provenance.ParseCertChain(readVector(t, ic.File))
		if err != nil {
			t.Fatal(err)
		}
		if issuer, err = x509.ParseCertificate(ichain[0]); err != nil {
			t.Fatal(err)
		}
	}
	if err := cert.CheckSignatureFrom(issuer); err != nil {
		t.Errorf("%s is not signed by %s: %v", c.File, c.Issuer, err)
	}
	if c.CA {
		return
	}
	var id string
	for _, k := range keys {
		if k.Public == c.Key {
			id = k.DeviceID
		}
	}
	if id == "" || !provenance.CertNamesDevice(cert, id) {
		t.Errorf("%s does not name device %q", c.File, id)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, o := range byName {
		oc, err := provenance.ParseCertChain(readVector(t, o.File))
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := x509.ParseCertificate(oc[0])
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case o.CA && o.Issuer == "":
			roots.AddCert(parsed)
		case o.CA:
			inters.AddCert(parsed)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: cert.NotBefore.Add(time.Hour),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("%s does not chain to the root: %v", c.File, err)
	}
}

// checkValid compares a valid vector's verification with the manifest.
func checkValid(t *testing.T, v vector, byName map[string]vector) {
	env := readVector(t, v.Envelope)
	media := make([][]byte, len(v.Media))
	for i, f := range v.Media {
		media[i] = readVector(t, f)
	}
	got, err := provenance.Verify(env, media, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := got.Payload
	if got.Device != v.Device || p.Device != v.Device || p.Event != v.Event || p.Kind != v.Kind || p.Seq != v.Seq {
		t.Errorf("verified %s %s %s %d, manifest %s %s %s %d", got.Device, p.Event, p.Kind, p.Seq, v.Device, v.Event, v.Kind, v.Seq)
	}
	if hex.EncodeToString(p.Prev) != v.Prev {
		t.Errorf("prev %x, manifest %s", p.Prev, v.Prev)
	}
	sum := sha256.Sum256(env)
	if hex.EncodeToString(sum[:]) != v.Hash || got.Hash != sum {
		t.Errorf("hash %x / %x, manifest %s", got.Hash, sum, v.Hash)
	}
	if v.Follows != "" {
		prevEnv := readVector(t, byName[v.Follows].Envelope)
		if h := sha256.Sum256(prevEnv); !bytes.Equal(p.Prev, h[:]) {
			t.Errorf("prev is not the SHA-256 of %s", v.Follows)
		}
	}
	if v.Payload != "" {
		var msg cose.Sign1Message
		if err := msg.UnmarshalCBOR(env); err != nil {
			t.Fatal(err)
		}
		diag, err := cbor.Diagnose(msg.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSpace(string(readVector(t, v.Payload))); diag != want {
			t.Errorf("payload diagnostic\n got %s\nfile %s", diag, want)
		}
	}
	if len(got.Chain) != len(v.Chain) {
		t.Errorf("x5chain of %d certificates, manifest lists %d", len(got.Chain), len(v.Chain))
	}
	for i, f := range v.Chain {
		if i < len(got.Chain) {
			der, err := provenance.ParseCertChain(readVector(t, f))
			if err != nil || !bytes.Equal(der[0], got.Chain[i].Raw) {
				t.Errorf("x5chain certificate %d is not %s (%v)", i, f, err)
			}
		}
	}
	if got.NextDevice != v.NextDevice {
		t.Errorf("next device %q, manifest %q", got.NextDevice, v.NextDevice)
	}
	if v.NextKey != "" {
		_, spki, err := parsePublicPEM(readVector(t, v.NextKey))
		if err != nil || !bytes.Equal(spki, got.NextSPKI) {
			t.Errorf("next key is not %s (%v)", v.NextKey, err)
		}
	}
	if v.Bundle != "" {
		b, err := provenance.UnmarshalBundle(readVector(t, v.Bundle))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Envelope, env) || len(b.Media) != len(media) {
			t.Fatal("bundle does not hold the vector's envelope and media")
		}
		for i := range media {
			if !bytes.Equal(b.Media[i], media[i]) {
				t.Errorf("bundle media %d differs", i)
			}
		}
	}
}

// checkSignature verifies env's signature under pub, implemented from the
// spec: Sig_structure over the protected bytes as they are in the message,
// empty external AAD, the payload; ES256/ES384 as r||s, Ed25519 plain. It
// ignores what the headers say, to show a vector's signature is sound.
func checkSignature(env []byte, pub crypto.PublicKey) error {
	var top any
	if err := cbor.Unmarshal(env, &top); err != nil {
		return err
	}
	if tag, ok := top.(cbor.Tag); ok {
		top = tag.Content
	}
	arr, ok := top.([]any)
	if !ok || len(arr) != 4 {
		return errors.New("not a 4-element array")
	}
	prot, ok1 := arr[0].([]byte)
	payload, ok2 := arr[2].([]byte)
	sig, ok3 := arr[3].([]byte)
	if !ok1 || !ok2 || !ok3 {
		return errors.New("protected, payload or signature is not a bstr")
	}
	tbs, err := toBeSigned(prot, payload)
	if err != nil {
		return err
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if !ed25519.Verify(k, tbs, sig) {
			return errors.New("Ed25519 signature invalid")
		}
	case *ecdsa.PublicKey:
		var digest []byte
		switch k.Curve {
		case elliptic.P256():
			d := sha256.Sum256(tbs)
			digest = d[:]
		case elliptic.P384():
			d := sha512.Sum384(tbs)
			digest = d[:]
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n {
			return fmt.Errorf("signature is %d bytes", len(sig))
		}
		r, s := new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])
		if !ecdsa.Verify(k, digest, r, s) {
			return errors.New("ECDSA signature invalid")
		}
	default:
		return fmt.Errorf("key type %T", pub)
	}
	return nil
}

// FuzzVerify: no input makes Verify or UnmarshalBundle panic, Verify
// allocates within verifyBudget of the input's size, every failure has
// exactly one class, and whatever verifies re-encodes to its own payload.
// Seeds are the vectors.
func FuzzVerify(f *testing.F) {
	m := readManifest(f)
	for _, v := range m.Vectors {
		f.Add(readVector(f, v.Envelope))
		if v.Bundle != "" {
			f.Add(readVector(f, v.Bundle))
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0xd2, 0x84, 0x40, 0xa0, 0x40, 0x40})
	f.Fuzz(func(t *testing.T, data []byte) {
		var v *provenance.Verified
		var err error
		if n := allocated(func() { v, err = provenance.Verify(data, nil, nil) }); n > verifyBudget(len(data)) {
			t.Fatalf("Verify allocated %d bytes for %d bytes of input, budget %d", n, len(data), verifyBudget(len(data)))
		}
		if c := classOf(err); c == "" {
			t.Fatalf("Verify: error of no single class: %v", err)
		}
		if err == nil {
			again, err := provenance.MarshalPayload(v.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := provenance.UnmarshalPayload(again); err != nil {
				t.Fatalf("verified payload does not decode again: %v", err)
			}
		}
		b, err := provenance.UnmarshalBundle(data)
		if err != nil {
			if !errors.Is(err, provenance.ErrMalformed) {
				t.Fatalf("UnmarshalBundle: %v", err)
			}
			return
		}
		if _, err := provenance.Verify(b.Envelope, b.Media, nil); classOf(err) == "" {
			t.Fatalf("Verify of a bundle: error of no single class: %v", err)
		}
	})
}

// FuzzUnmarshalPayload: a payload that decodes re-encodes to the same bytes
// (there is one encoding per value).
func FuzzUnmarshalPayload(f *testing.F) {
	m := readManifest(f)
	for _, v := range m.Vectors {
		var msg cose.UntaggedSign1Message
		env := readVector(f, v.Envelope)
		if len(env) > 0 && env[0] == 0xd2 {
			env = env[1:]
		}
		if msg.UnmarshalCBOR(env) == nil {
			f.Add(msg.Payload)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := provenance.UnmarshalPayload(data)
		if err != nil {
			if !errors.Is(err, provenance.ErrMalformed) {
				t.Fatalf("UnmarshalPayload: %v", err)
			}
			return
		}
		again, err := provenance.MarshalPayload(p)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("payload %x re-encodes to %x (%v)", data, again, err)
		}
	})
}
