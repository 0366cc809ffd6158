package e2ee

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

const testDevice = "kf-0123456789abcdef"

func TestLiveRoundTrip(t *testing.T) {
	o := mixedOwner(t)
	s := mustSealer(t, o)
	ls, kf, err := s.NewLive(testDevice)
	if err != nil {
		t.Fatal(err)
	}
	id, sealed, err := ParseKeyFrame(kf)
	if err != nil || id != ls.StreamID() || len(id) != 32 {
		t.Fatalf("key frame: id %q (sealer %q), %v", id, ls.StreamID(), err)
	}
	if h, err := ParseHeader(sealed); err != nil || len(h.Recipients) != 2 {
		t.Fatalf("key frame's sealed object: %v", err)
	}
	var frames [][]byte
	for i := range 3 {
		frames = append(frames, ls.SealFrame(nil, []byte(fmt.Sprintf("jpeg %d", i))))
	}
	if c := binary.BigEndian.Uint64(frames[0]); c != 1 {
		t.Fatalf("first counter %d, want 1", c)
	}
	for _, k := range o.Keys {
		lo, err := OpenLive(kf, o.Fingerprint(), testDevice, k.ID, k.Priv)
		if err != nil {
			t.Fatalf("kem %#x: %v", k.KEM, err)
		}
		if lo.StreamID() != id {
			t.Fatal("stream id differs")
		}
		for i, f := range frames {
			got, err := lo.OpenFrame(f)
			if err != nil || string(got) != fmt.Sprintf("jpeg %d", i) {
				t.Fatalf("kem %#x frame %d: %q, %v", k.KEM, i, got, err)
			}
		}
	}
	if _, err := o.OpenLive(kf, testDevice); err != nil {
		t.Fatal(err)
	}
}

func TestLiveRefusesReplayAndTamper(t *testing.T) {
	o := newTestOwner(t, 1)
	ls, kf, err := mustSealer(t, o).NewLive(testDevice)
	if err != nil {
		t.Fatal(err)
	}
	f1 := ls.SealFrame(nil, []byte("one"))
	f2 := ls.SealFrame(nil, []byte("two"))
	f3 := ls.SealFrame(nil, []byte("three"))
	lo, err := o.OpenLive(kf, testDevice)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lo.OpenFrame(f2); err != nil { // a frame may be skipped
		t.Fatal(err)
	}
	if _, err := lo.OpenFrame(f1); !errors.Is(err, ErrReplay) {
		t.Fatalf("older frame: %v, want ErrReplay", err)
	}
	if _, err := lo.OpenFrame(f2); !errors.Is(err, ErrReplay) {
		t.Fatalf("same frame again: %v, want ErrReplay", err)
	}
	// A forged counter fails authentication and does not advance the last.
	forged := bytes.Clone(f3)
	binary.BigEndian.PutUint64(forged, 1000)
	if _, err := lo.OpenFrame(forged); !errors.Is(err, ErrOpen) {
		t.Fatalf("frame with a changed counter: %v, want ErrOpen", err)
	}
	for i := range f3 {
		c := bytes.Clone(f3)
		c[i] ^= 0x01
		if _, err := lo.OpenFrame(c); err == nil {
			t.Fatalf("frame byte %d flipped: opened", i)
		}
	}
	if got, err := lo.OpenFrame(f3); err != nil || string(got) != "three" {
		t.Fatalf("frame 3 after the refusals: %q, %v", got, err)
	}
	// The stream belongs to its device.
	if _, err := o.OpenLive(kf, testDevice+"x"); !errors.Is(err, ErrOpen) {
		t.Fatalf("key frame on another device: %v, want ErrOpen", err)
	}
	// Every byte of the key frame counts.
	for i := range kf {
		c := bytes.Clone(kf)
		c[i] ^= 0x01
		if _, err := o.OpenLive(c, testDevice); err == nil {
			t.Fatalf("key frame byte %d flipped: opened", i)
		}
	}
	// Frames of another stream do not open.
	ls2, _, err := mustSealer(t, o).NewLive(testDevice)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lo.OpenFrame(ls2.SealFrame(nil, []byte("other"))); err == nil {
		t.Fatal("another stream's frame opened")
	}
}

func TestLiveKeyFrameMalformed(t *testing.T) {
	o := newTestOwner(t, 1)
	_, kf, err := mustSealer(t, o).NewLive(testDevice)
	if err != nil {
		t.Fatal(err)
	}
	up := bytes.Clone(kf)
	copy(up[8:], bytes.ToUpper(up[8:40]))
	long := bytes.Clone(kf)
	long[7] = 33
	for name, b := range map[string][]byte{"magic": append([]byte("KFL2"), kf[4:]...), "upper-case id": up, "id length": long, "short": kf[:20]} {
		if _, _, err := ParseKeyFrame(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestSealFrameAppends(t *testing.T) {
	o := newTestOwner(t, 1)
	ls, _, err := mustSealer(t, o).NewLive(testDevice)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 1024)
	jpeg := make([]byte, 500)
	allocs := testing.AllocsPerRun(20, func() { buf = ls.SealFrame(buf[:0], jpeg) })
	if allocs != 0 {
		t.Fatalf("SealFrame into a large enough buffer: %v allocations, want 0", allocs)
	}
}
