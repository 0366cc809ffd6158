package clip

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// h264Ring is a ring of H.264 with the given caps (no pre-roll).
func h264Ring(t testing.TB, maxBytes, maxFrames int) *Ring {
	t.Helper()
	c := ringConfig(maxBytes, maxFrames)
	c.Codec = CodecH264
	c.KeyInterval = minKey
	c.Rate = 1 // a GOP of one frame for MinFrames
	r, err := NewRing(c)
	if err != nil {
		t.Fatalf("NewRing: %v", err)
	}
	return r
}

// pushGOP pushes frame seq of a stream whose key frames come every gop
// frames, n bytes, at 10 frames a second; it returns Push's error.
func pushGOP(r *Ring, seq uint64, gop, n int) error {
	return r.Push(Frame{Time: t0.Add(time.Duration(seq) * 100 * time.Millisecond), Sequence: seq, Origin: Encoded,
		Key: seq%uint64(gop) == 0, Data: patterned(nil, seq, n)})
}

// checkStartsOnKey fails unless the ring's oldest frame is a key frame
// (or it is empty).
func checkStartsOnKey(t *testing.T, r *Ring, gop int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.first < r.next && !r.slot(r.first).key {
		t.Fatalf("the ring starts at frame %d, not a key frame (every %d)", r.slot(r.first).sequence, gop)
	}
}

// TestRingGOPEvictsWholeGroups: a ring of 12 frames fed groups of 5 drops
// a whole group at a time, by frames and by bytes, and always starts at a
// key frame.
func TestRingGOPEvictsWholeGroups(t *testing.T) {
	t.Run("frames", func(t *testing.T) {
		r := h264Ring(t, 64<<10, 12)
		for seq := range uint64(40) {
			if err := pushGOP(r, seq, 5, 100); err != nil {
				t.Fatalf("frame %d: %v", seq, err)
			}
			checkStartsOnKey(t, r, 5)
			if st := r.Stats(); st.Evicted%5 != 0 {
				t.Fatalf("after frame %d: %d frames evicted, not whole groups of 5", seq, st.Evicted)
			}
		}
		// Frame 39: frames 30..39 held (two groups); the 12-frame index
		// had no room for a third one's first frames.
		st := r.Stats()
		if st.Frames != 10 || st.Evicted != 30 || st.Orphaned != 0 || st.Truncated != 0 {
			t.Fatalf("stats %+v, want 10 frames held, 30 evicted, none orphaned", st)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		r := h264Ring(t, 64<<10, 1000)
		for seq := range uint64(40) {
			n := 3000
			if seq%5 == 0 {
				n = 9000 // key frames are larger
			}
			if err := pushGOP(r, seq, 5, n); err != nil {
				t.Fatalf("frame %d: %v", seq, err)
			}
			checkStartsOnKey(t, r, 5)
		}
		c := r.Cursor(t0)
		frames, _ := readAll(t, c)
		c.Close()
		if len(frames) == 0 || frames[0].Sequence%5 != 0 || !frames[0].Key {
			t.Fatalf("the ring's first frame is %d, not a key frame", frames[0].Sequence)
		}
		for i := 1; i < len(frames); i++ {
			if frames[i].Sequence != frames[i-1].Sequence+1 {
				t.Fatalf("frame %d follows %d", frames[i].Sequence, frames[i-1].Sequence)
			}
		}
		if st := r.Stats(); st.Bytes > 64<<10 || st.Evicted%5 != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// TestRingGOPCursor: a cursor opens at the last key frame at or before its
// time, or at the oldest frame held when that is later; an empty ring's
// cursor reads the next key frame pushed.
func TestRingGOPCursor(t *testing.T) {
	r := h264Ring(t, 1<<20, 100)
	for seq := uint64(10); seq < 40; seq++ { // keys at 10, 15, ... 35
		if err := pushGOP(r, seq, 5, 100); err != nil {
			t.Fatal(err)
		}
	}
	at := func(seq uint64) time.Time { return t0.Add(time.Duration(seq) * 100 * time.Millisecond) }
	for _, tc := range []struct {
		from time.Time
		want uint64
	}{
		{at(22), 20},                        // inside a group: its key frame
		{at(25), 25},                        // on a key frame
		{at(25).Add(-time.Millisecond), 20}, // just before a key frame
		{at(3), 10},                         // before the oldest frame held
		{at(60), 35},                        // after the newest: the last group
	} {
		c := r.Cursor(tc.from)
		f, lost, ok := c.TryNext(nil)
		c.Close()
		if !ok || lost != 0 || f.Sequence != tc.want || !f.Key {
			t.Errorf("cursor at %v: first frame %d (key %v, ok %v), want key frame %d", tc.from.Sub(t0), f.Sequence, f.Key, ok, tc.want)
		}
	}

	empty := h264Ring(t, 1<<20, 100)
	c := empty.Cursor(at(5))
	defer c.Close()
	if err := pushGOP(empty, 7, 5, 100); !errors.Is(err, ErrNoKeyFrame) {
		t.Fatalf("a non-key frame into an empty ring: %v, want ErrNoKeyFrame", err)
	}
	if err := pushGOP(empty, 10, 5, 100); err != nil {
		t.Fatal(err)
	}
	if f, _, ok := c.TryNext(nil); !ok || f.Sequence != 10 {
		t.Fatalf("the empty ring's cursor read %d (ok %v), want the key frame 10", f.Sequence, ok)
	}
	if st := empty.Stats(); st.Orphaned != 1 {
		t.Fatalf("%d frames orphaned, want 1", st.Orphaned)
	}
}

// TestRingGOPTooSmall: a group larger than the ring evicts itself: the
// frame that did not fit and the rest of its group are refused
// (ErrNoKeyFrame), counted (Truncated once, Orphaned per frame), a cursor
// reading the group is told of its loss, and the next key frame starts
// again.
func TestRingGOPTooSmall(t *testing.T) {
	r := h264Ring(t, 64<<10, 1000)
	c := r.Cursor(t0)
	defer c.Close()
	// Groups of 10 frames of 10000 bytes: 6 fit.
	var refused []uint64
	for seq := range uint64(20) {
		err := pushGOP(r, seq, 10, 10000)
		switch {
		case errors.Is(err, ErrNoKeyFrame):
			refused = append(refused, seq)
		case err != nil:
			t.Fatal(err)
		}
		checkStartsOnKey(t, r, 10)
	}
	want := []uint64{6, 7, 8, 9, 16, 17, 18, 19}
	if len(refused) != len(want) {
		t.Fatalf("refused %v, want %v", refused, want)
	}
	for i := range want {
		if refused[i] != want[i] {
			t.Fatalf("refused %v, want %v", refused, want)
		}
	}
	st := r.Stats()
	if st.Truncated != 2 || st.Orphaned != 8 || st.Frames != 0 {
		t.Fatalf("stats %+v, want 2 groups truncated, 8 frames orphaned, the ring empty", st)
	}
	frames, lost := readAll(t, c)
	if len(frames) != 0 || lost != 12 {
		t.Fatalf("the cursor read %d frames and lost %d, want 0 and 12 (two groups of 6 evicted)", len(frames), lost)
	}
	if err := pushGOP(r, 20, 10, 10000); err != nil {
		t.Fatalf("the next key frame: %v", err)
	}
	if f, _, ok := c.TryNext(nil); !ok || f.Sequence != 20 {
		t.Fatalf("the cursor goes on at %d (ok %v), want 20", f.Sequence, ok)
	}
}

// TestRingBreak: after Break (a unit lost before the ring), the group's
// next frames are refused until a key frame; a refused frame (too large)
// breaks the group too.
func TestRingBreak(t *testing.T) {
	r := h264Ring(t, 64<<10, 100)
	for seq := range uint64(3) {
		if err := pushGOP(r, seq, 5, 100); err != nil {
			t.Fatal(err)
		}
	}
	r.Break()
	for seq := uint64(3); seq < 5; seq++ {
		if err := pushGOP(r, seq, 5, 100); !errors.Is(err, ErrNoKeyFrame) {
			t.Fatalf("frame %d after Break: %v, want ErrNoKeyFrame", seq, err)
		}
	}
	if err := pushGOP(r, 5, 5, 100); err != nil {
		t.Fatal(err)
	}
	if err := pushGOP(r, 6, 5, 1<<20); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a frame larger than the ring: %v", err)
	}
	if err := pushGOP(r, 7, 5, 100); !errors.Is(err, ErrNoKeyFrame) {
		t.Fatalf("the frame after a refused one: %v, want ErrNoKeyFrame", err)
	}
	if st := r.Stats(); st.Orphaned != 3 || st.Frames != 4 {
		t.Fatalf("stats %+v, want 3 orphaned, 4 held", st)
	}
	// A ring of JPEG frames ignores Break and Key.
	j := newTestRing(t, 64<<10, 10)
	j.Break()
	push(t, j, 1, 100)
}

// TestRingGOPAllocs: pushing into and reading a ring of H.264 allocates
// nothing, eviction of whole groups included.
func TestRingGOPAllocs(t *testing.T) {
	r := h264Ring(t, 64<<10, 30)
	c := r.Cursor(t0)
	defer c.Close()
	data := patterned(nil, 1, 3000)
	buf := make([]byte, 0, 4096)
	seq := uint64(0)
	step := func() {
		if err := r.Push(Frame{Time: t0.Add(time.Duration(seq) * time.Millisecond), Sequence: seq, Key: seq%7 == 0, Data: data}); err != nil {
			t.Fatal(err)
		}
		seq++
		c.TryNext(buf)
	}
	for range 100 {
		step()
	}
	if a := testing.AllocsPerRun(200, step); a != 0 {
		t.Errorf("Push and TryNext allocate %v times", a)
	}
	if st := r.Stats(); st.Evicted == 0 || st.Evicted%7 != 0 {
		t.Errorf("%d frames evicted, want whole groups of 7", st.Evicted)
	}
}

// TestConfigH264: an H.264 config names KeyInterval and Codec when they are
// out of bounds, and needs room for the pre-roll plus one group of
// pictures (MinFrames) in MaxFrames.
func TestConfigH264(t *testing.T) {
	c := DefaultConfig()
	c.Codec = CodecH264
	if err := c.Validate(); err != nil {
		t.Fatalf("the defaults with H.264: %v", err)
	}
	if got, want := c.MinFrames(), 50+1+20; got != want || c.GOP() != 20 {
		t.Fatalf("MinFrames %d, GOP %d: want %d and 20", got, c.GOP(), want)
	}
	for name, tc := range map[string]struct {
		set  func(*Config)
		want string
	}{
		"key interval": {func(c *Config) { c.KeyInterval = 0 }, "KeyInterval"},
		"codec":        {func(c *Config) { c.Codec = 7 }, "Codec"},
		"frames":       {func(c *Config) { c.Rate, c.MaxFrames = 30, 200 }, "MaxFrames 200, want 211"},
	} {
		c := DefaultConfig()
		c.Codec = CodecH264
		tc.set(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, tc.want)
		}
	}
	if _, err := ParseCodec("h265"); err == nil {
		t.Error("ParseCodec h265")
	}
}
