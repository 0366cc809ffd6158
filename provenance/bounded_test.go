package provenance_test

import (
	"bytes"
	"crypto"
	"errors"
	"runtime"
	"slices"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/keyframe-cam/keyframe/provenance"
)

// cborHead encodes a CBOR head of major type major and argument n in its
// shortest form.
func cborHead(major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return []byte{m | byte(n)}
	case n <= 0xff:
		return []byte{m | 24, byte(n)}
	case n <= 0xffff:
		return []byte{m | 25, byte(n >> 8), byte(n)}
	case n <= 0xffffffff:
		return []byte{m | 26, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	return []byte{m | 27, byte(n >> 56), byte(n >> 48), byte(n >> 40), byte(n >> 32), byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// headerBomb is a tagged COSE_Sign1 whose protected header is a map of
// arrays of 131,072 empty maps each (go-cose's default element limit), about
// 4 MB in all: small on the wire, large once decoded into Go values. With
// firstLabel 33 (x5chain) the first array is where a certificate chain is
// allowed.
func headerBomb(firstLabel uint64) []byte {
	const arrays, elems = 32, 131072
	var prot []byte
	prot = append(prot, cborHead(5, arrays)...)
	for i := range arrays {
		prot = append(prot, cborHead(0, firstLabel+uint64(i))...)
		prot = append(prot, cborHead(4, elems)...)
		for range elems {
			prot = append(prot, 0xa0)
		}
	}
	return rawSign1(prot, []byte{0xa0}, make([]byte, 64))
}

// rawSign1 frames a tagged COSE_Sign1 around a serialised protected header,
// a payload and a signature, with an empty unprotected header.
func rawSign1(prot, payload, sig []byte) []byte {
	env := []byte{0xd2, 0x84}
	env = append(env, cborHead(2, uint64(len(prot)))...)
	env = append(env, prot...)
	env = append(env, 0xa0)
	env = append(env, cborHead(2, uint64(len(payload)))...)
	env = append(env, payload...)
	env = append(env, cborHead(2, uint64(len(sig)))...)
	return append(env, sig...)
}

// allocated returns the bytes f allocates (runtime.MemStats.TotalAlloc
// delta, which counts every allocation whether or not it was collected).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// The header bomb: rejected as malformed, and verifying it allocates no
// more than a small fixed budget, whatever its size. Without keyframe's own
// reader in front of go-cose, the first bomb cost about 277 MB.
func TestVerifyHeaderBomb(t *testing.T) {
	// One label whose value is a 4 MB array of empty maps.
	var x5 []byte
	x5 = append(x5, 0xa1, 0x18, 33)
	x5 = append(x5, cborHead(4, 4<<20)...)
	for range 4 << 20 {
		x5 = append(x5, 0xa0)
	}
	bombs := map[string][]byte{
		"32 labels":         headerBomb(100),
		"x5chain first":     headerBomb(33),
		"one x5chain array": rawSign1(x5, []byte{0xa0}, make([]byte, 64)),
	}
	for name, bomb := range bombs {
		t.Run(name, func(t *testing.T) {
			if len(bomb) < 4<<20 {
				t.Fatalf("bomb is %d bytes, want at least 4 MiB", len(bomb))
			}
			var err error
			n := allocated(func() { _, err = provenance.Verify(bomb, nil, nil) })
			t.Logf("header bomb of %d bytes: Verify allocated %d bytes: %v", len(bomb), n, err)
			if !errors.Is(err, provenance.ErrMalformed) {
				t.Fatalf("Verify: %v, want ErrMalformed", err)
			}
			// Nothing of the bomb is copied: it is refused while it is read.
			if n > bombBudget {
				t.Fatalf("Verify allocated %d bytes for a %d-byte header bomb, budget %d", n, len(bomb), bombBudget)
			}
		})
	}
}

// bombBudget is what Verify may allocate to refuse the header bomb.
const bombBudget = 1 << 20

// verifyBudget is the most Verify may allocate for an envelope of n bytes
// with no media: a fixed allowance for keys, certificates and errors, plus
// a small multiple of the input (decoded byte strings and the payload are
// copies of parts of it).
func verifyBudget(n int) uint64 { return 1<<20 + 4*uint64(n) }

// splitEnv is a COSE_Sign1's serialised protected header, payload and
// signature, to be framed again with chosen heads.
type splitEnv struct {
	prot, payload, sig []byte
}

// sign1Split decodes a tagged COSE_Sign1 into its parts.
func sign1Split(t testing.TB, env []byte) *splitEnv {
	t.Helper()
	var tag cbor.Tag
	if err := cbor.Unmarshal(env, &tag); err != nil {
		t.Fatal(err)
	}
	arr, ok := tag.Content.([]any)
	if !ok || len(arr) != 4 {
		t.Fatal("not a COSE_Sign1 array")
	}
	return &splitEnv{prot: arr[0].([]byte), payload: arr[2].([]byte), sig: arr[3].([]byte)}
}

// frame encodes s as a tagged COSE_Sign1 with an empty unprotected header.
// A non-nil head replaces the shortest-form head of that item (unprot
// replaces the whole unprotected map); payloadEnd follows the payload's
// bytes (a break after an indefinite-length head).
func (s *splitEnv) frame(protHead, unprot, payloadHead, sigHead []byte, payloadEnd ...byte) []byte {
	or := func(h []byte, n int) []byte {
		if h != nil {
			return h
		}
		return cborHead(2, uint64(n))
	}
	if unprot == nil {
		unprot = []byte{0xa0}
	}
	if payloadHead != nil && payloadHead[0] == 0x5f {
		payloadHead = append(payloadHead, cborHead(2, uint64(len(s.payload)))...)
	}
	return slices.Concat([]byte{0xd2, 0x84}, or(protHead, len(s.prot)), s.prot, unprot,
		or(payloadHead, len(s.payload)), s.payload, payloadEnd, or(sigHead, len(s.sig)), s.sig)
}

// longHead is a head of major type major and argument n in 4 bytes: valid
// CBOR, never the shortest form for n < 65536.
func longHead(major byte, n int) []byte {
	return []byte{major<<5 | 26, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// signProtected signs payload under a serialised protected header as it
// stands (which may be one no encoder would write).
func signProtected(key crypto.Signer, prot, payload []byte) ([]byte, error) {
	tbs, err := toBeSigned(prot, payload)
	if err != nil {
		return nil, err
	}
	return rawSign(key, tbs)
}

// strictDec decodes as RFC 8949 requires of a valid item, with definite
// lengths only and duplicate map keys refused; re-encoding what it decodes
// in core deterministic encoding gives back the input exactly when the
// input is in shortest form with sorted keys.
var strictDec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{IndefLength: cbor.IndefLengthForbidden, DupMapKey: cbor.DupMapKeyEnforcedAPF}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// checkCanonical fails unless data, and its protected header, are in core
// deterministic encoding: a check written apart from the package's reader.
func checkCanonical(t *testing.T, name string, data []byte) {
	t.Helper()
	for what, b := range map[string][]byte{"envelope": data, "protected header": sign1Split(t, data).prot} {
		var v any
		if err := strictDec.Unmarshal(b, &v); err != nil {
			t.Errorf("%s: %s: %v", name, what, err)
			continue
		}
		if again := mustDet(t, v); !bytes.Equal(again, b) {
			t.Errorf("%s: %s is not in core deterministic encoding", name, what)
		}
	}
}

// What keyframe writes is the canonical encoding Verify requires: fresh
// signatures of each algorithm and chain form, and every valid vector
// (rotation and its proof included).
func TestSignCanonical(t *testing.T) {
	f := newFleet(t)
	envs := map[string][]byte{
		"ES256":              signSample(t, newP256(t)),
		"EdDSA":              signSample(t, newEd25519(t)),
		"ES256 one cert":     nil,
		"ES256 cert + inter": nil,
	}
	for name, chain := range map[string][][]byte{"ES256 one cert": {f.leaf}, "ES256 cert + inter": {f.leaf, f.inter.der}} {
		env, err := provenance.SignWithChain(nil, f.key, samplePayload(idOf(t, f.key), thumb), chain)
		if err != nil {
			t.Fatal(err)
		}
		envs[name] = env
	}
	for name, env := range envs {
		checkCanonical(t, name, env)
		if _, err := provenance.Verify(env, [][]byte{thumb}, nil); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, v := range readManifest(t).Vectors {
		if v.Expect == "ok" {
			checkCanonical(t, v.Name, readVector(t, v.Envelope))
		}
	}
	checkCanonical(t, "ok-rotate.proof", readVector(t, "ok-rotate.proof.cose"))
}

// Every other encoding of a record is refused as ErrNonCanonical (and
// ErrMalformed), with the signature left valid or made again, so that no
// other rule catches it.
func TestVerifyNonCanonical(t *testing.T) {
	key := newP256(t)
	env := signSample(t, key)
	sp := sign1Split(t, env)
	std := stdHeaders(cose.AlgorithmES256, idOf(t, key), spkiOf(t, key))
	resign := func(prot []byte) []byte {
		sig, err := signProtected(key, prot, sp.payload)
		if err != nil {
			t.Fatal(err)
		}
		return (&splitEnv{prot: prot, payload: sp.payload, sig: sig}).frame(nil, nil, nil, nil)
	}
	prot, err := encodeProtected(std)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(prot[:3], []byte{0xa4, 0x01, 0x26}) {
		t.Fatalf("protected header starts %x, want a4 01 26", prot[:3])
	}
	cases := map[string][]byte{
		"tag 18 as d8 12":          slices.Concat([]byte{0xd8, 0x12}, env[1:]),
		"array as 98 04":           slices.Concat([]byte{0xd2, 0x98, 0x04}, env[2:]),
		"protected length long":    sp.frame(longHead(2, len(sp.prot)), nil, nil, nil),
		"unprotected as b8 00":     sp.frame(nil, []byte{0xb8, 0x00}, nil, nil),
		"unprotected indefinite":   sp.frame(nil, []byte{0xbf, 0xff}, nil, nil),
		"payload length long":      sp.frame(nil, nil, longHead(2, len(sp.payload)), nil),
		"payload indefinite":       sp.frame(nil, nil, []byte{0x5f}, nil, 0xff),
		"signature as 59 00 40":    sp.frame(nil, nil, nil, []byte{0x59, 0x00, 0x40}),
		"signature as 5b ... 40":   sp.frame(nil, nil, nil, []byte{0x5b, 0, 0, 0, 0, 0, 0, 0, 0x40}),
		"protected map as b8 04":   resign(slices.Concat([]byte{0xb8, 0x04}, prot[1:])),
		"alg -7 as 38 06":          resign(slices.Concat([]byte{0xa4, 0x01, 0x38, 0x06}, prot[3:])),
		"label 1 as 18 01":         resign(slices.Concat([]byte{0xa4, 0x18, 0x01}, prot[2:])),
		"protected map indefinite": resign(slices.Concat([]byte{0xbf}, prot[1:], []byte{0xff})),
		"kid twice":                resign(slices.Concat([]byte{0xa5}, prot[1:], []byte{0x04}, mustDet(t, []byte(idOf(t, key))))),
		"alg twice":                resign(slices.Concat([]byte{0xa5}, prot[1:], []byte{0x01, 0x26})),
	}
	for _, v := range []string{"bad-noncanonical-signature-length", "bad-noncanonical-payload-length",
		"bad-noncanonical-unprotected", "bad-indefinite-payload", "bad-duplicate-header"} {
		cases["vector "+v] = readVector(t, v+".cose")
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := provenance.Verify(bad, [][]byte{thumb}, nil)
			wantClass(t, err, "malformed")
			if !errors.Is(err, provenance.ErrNonCanonical) {
				t.Fatalf("%v, want ErrNonCanonical", err)
			}
		})
	}
}

// Version 1 writes Ed25519 as alg -8 (EdDSA) and refuses RFC 9864's -19
// (Ed25519), which would give the same record a second header.
func TestVerifyEd25519Alg19(t *testing.T) {
	key := newEd25519(t)
	payload, err := provenance.MarshalPayload(samplePayload(idOf(t, key), thumb))
	if err != nil {
		t.Fatal(err)
	}
	hs := withHeader(stdHeaders(cose.AlgorithmEdDSA, idOf(t, key), spkiOf(t, key)), 1, int64(-19))
	env, err := rawEnvelope{protected: hs, payload: payload}.build(key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = provenance.Verify(env, [][]byte{thumb}, nil)
	wantClass(t, err, "malformed")
}

// TestMaxMedia: a record carries at most provenance.MaxMedia media objects.
// A payload listing more is malformed even when every object matches, Sign
// refuses to write one, and a bundle framing more is refused from its head,
// before any object is read: 1,024 empty media objects cost a fixed few
// allocations, nothing proportional to their number.
func TestMaxMedia(t *testing.T) {
	key := newP256(t)
	for _, n := range []int{provenance.MaxMedia, provenance.MaxMedia + 1} {
		p := samplePayload(idOf(t, key), thumb)
		media := make([][]byte, n)
		p.Media = p.Media[:0]
		for i := range media {
			media[i] = []byte{byte(i)}
			p.Media = append(p.Media, provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", media[i]))
		}
		b, err := provenance.MarshalPayload(p)
		if err != nil {
			t.Fatal(err)
		}
		err = verifyErr(signRaw(t, key, b), media)
		_, signErr := provenance.Sign(nil, key, p)
		wire, _ := (&provenance.Bundle{Envelope: signRaw(t, key, b), Media: media}).Marshal()
		_, bundleErr := provenance.UnmarshalBundle(wire)
		if n <= provenance.MaxMedia {
			if err != nil || signErr != nil || bundleErr != nil {
				t.Errorf("%d media: Verify %v, Sign %v, UnmarshalBundle %v; want all accepted", n, err, signErr, bundleErr)
			}
			continue
		}
		if !errors.Is(err, provenance.ErrMalformed) || !errors.Is(signErr, provenance.ErrMalformed) || !errors.Is(bundleErr, provenance.ErrMalformed) {
			t.Errorf("%d media: Verify %v, Sign %v, UnmarshalBundle %v; want all ErrMalformed", n, err, signErr, bundleErr)
		}
	}

	// [envelope, [1024 × h'']]: the bundle of the attack.
	bomb := append(cborHead(4, 2), cborHead(2, 3)...)
	bomb = append(bomb, 0xd2, 0x84, 0x40)
	bomb = append(bomb, cborHead(4, 1024)...)
	for range 1024 {
		bomb = append(bomb, 0x40)
	}
	var err error
	got := allocated(func() { _, err = provenance.UnmarshalBundle(bomb) })
	if !errors.Is(err, provenance.ErrMalformed) {
		t.Fatalf("UnmarshalBundle of 1,024 media objects: %v, want ErrMalformed", err)
	}
	t.Logf("a bundle of 1,024 empty media objects (%d bytes): refused (%v), %d bytes allocated", len(bomb), err, got)
	if got > 4<<10 {
		t.Errorf("refusing 1,024 media objects allocated %d bytes, want at most 4 KiB", got)
	}
}

// TestBundleAnyForm: the bundle is framing, not hashed: a head in a longer
// form than its shortest is accepted there (docs/envelope.md §7), and the
// envelope and media are the bundle's own bytes, not copies.
func TestBundleAnyForm(t *testing.T) {
	env := []byte{0xd2, 0x84, 1, 2, 3}
	long := []byte{0x98, 2, 0x58, 5} // array(2) and bstr(5) in their one-byte forms
	long = append(long, env...)
	long = append(long, 0x98, 1, 0x41, 'a')
	b, err := provenance.UnmarshalBundle(long)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Envelope, env) || len(b.Media) != 1 || string(b.Media[0]) != "a" {
		t.Fatalf("bundle %x %q", b.Envelope, b.Media)
	}
	if &b.Envelope[0] != &long[4] {
		t.Error("the envelope was copied out of the bundle")
	}
}
