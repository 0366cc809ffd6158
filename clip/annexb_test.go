package clip

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// nal returns one NAL unit of type typ with a four- or three-byte start
// code, its header's nal_ref_idc 3, then body (which must not hold a start
// code).
func nal(typ byte, four bool, body ...byte) []byte {
	var b []byte
	if four {
		b = append(b, 0)
	}
	b = append(b, 0, 0, 1, 0x60|typ)
	return append(b, body...)
}

// testAUs is a stream's access units: an IDR with SPS, PPS and SEI in two
// slices; P pictures in one and in two slices; one with an access unit
// delimiter; another IDR with its parameter sets.
func testAUs() [][]byte {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	return [][]byte{
		cat(nal(nalSPS, true, 0x42, 0xc0, 0x1e), nal(nalPPS, true, 0xce, 0x3c), nal(nalSEI, false, 5, 1, 0x80), nal(nalIDR, false, 0x88, 1, 2, 3), nal(nalIDR, false, 0x10, 4, 5)),
		cat(nal(nalSlice, true, 0x9a, 6, 7, 8, 9)),
		cat(nal(nalSlice, true, 0x9a, 1), nal(nalSlice, false, 0x21, 2, 0)), // a trailing zero inside its last NAL
		cat(nal(nalAUD, true, 0x30), nal(nalSlice, false, 0x9a, 3, 3, 3)),
		cat(nal(nalSPS, true, 0x42, 0xc0, 0x1e), nal(nalPPS, true, 0xce, 0x3c), nal(nalIDR, true, 0x88, 7), nal(nalIDR, false, 0x12, 8)),
		cat(nal(nalSlice, true, 0x9a, 9, 9)),
	}
}

// TestAUSplitter feeds a stream in pieces of every size from 1 byte, with
// junk before its first start code, and gets its access units back whole
// and in order, the last one from flush; the junk is counted.
func TestAUSplitter(t *testing.T) {
	aus := testAUs()
	junk := []byte{0xde, 0xad, 0xbe, 0xef, 1, 2}
	stream := append(append([]byte{}, junk...), bytes.Join(aus, nil)...)
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		var sp auSplitter
		var got [][]byte
		junked := 0
		for off := 0; off < len(stream); {
			n := 1 + rng.IntN(max(1, trial%40))
			n = min(n, len(stream)-off)
			copy(sp.space(n), stream[off:off+n])
			sp.wrote(n)
			off += n
			for {
				au, j, ok := sp.next()
				junked += j
				if !ok {
					break
				}
				got = append(got, bytes.Clone(au))
			}
		}
		last, ok := sp.flush()
		if !ok {
			t.Fatalf("trial %d: flush gave no last unit", trial)
		}
		got = append(got, bytes.Clone(last))
		if len(got) != len(aus) {
			t.Fatalf("trial %d: %d access units, want %d", trial, len(got), len(aus))
		}
		for i := range aus {
			if !bytes.Equal(got[i], aus[i]) {
				t.Fatalf("trial %d: access unit %d is % x, want % x", trial, i, got[i], aus[i])
			}
		}
		if junked != len(junk) {
			t.Fatalf("trial %d: %d junk bytes counted, want %d", trial, junked, len(junk))
		}
	}
}

// TestAUSplitterEmpty: a stream with no slice gives no unit.
func TestAUSplitterEmpty(t *testing.T) {
	var sp auSplitter
	b := nal(nalSPS, true, 1, 2, 3)
	copy(sp.space(len(b)), b)
	sp.wrote(len(b))
	if _, _, ok := sp.next(); ok {
		t.Fatal("a unit from parameter sets alone")
	}
	if _, ok := sp.flush(); ok {
		t.Fatal("flush gave a unit without a slice")
	}
}

func TestIsKeyAU(t *testing.T) {
	aus := testAUs()
	for i, want := range []bool{true, false, false, false, true, false} {
		if got := isKeyAU(aus[i]); got != want {
			t.Errorf("access unit %d: key %v, want %v", i, got, want)
		}
	}
	if isKeyAU(nal(nalIDR, true, 0x88)) {
		t.Error("an IDR without SPS and PPS counts as a key frame")
	}
	if n := firstSlice(aus[0]); !bytes.HasPrefix(aus[0][n:], []byte{0, 0, 1, 0x60 | nalIDR}) {
		t.Errorf("firstSlice %d does not point at the IDR slice", n)
	}
}
