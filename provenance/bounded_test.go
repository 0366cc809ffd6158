package provenance_test

import (
	"errors"
	"runtime"
	"testing"

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
