package clip

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// ringConfig is a valid config with the given caps (no pre-roll, so any
// frame cap of at least 1 is valid).
func ringConfig(maxBytes, maxFrames int) Config {
	c := DefaultConfig()
	c.PreRoll, c.MaxBytes, c.MaxFrames = 0, maxBytes, maxFrames
	return c
}

func newTestRing(t testing.TB, maxBytes, maxFrames int) *Ring {
	t.Helper()
	r, err := NewRing(ringConfig(maxBytes, maxFrames))
	if err != nil {
		t.Fatalf("NewRing: %v", err)
	}
	return r
}

// patterned returns n bytes that identify frame seq: its number, then bytes
// derived from it, so a frame read back can be checked whole.
func patterned(buf []byte, seq uint64, n int) []byte {
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	var h [8]byte
	binary.LittleEndian.PutUint64(h[:], seq)
	for i := range buf {
		if i < 8 {
			buf[i] = h[i]
		} else {
			buf[i] = byte(seq*31 + uint64(i)*7)
		}
	}
	return buf
}

func checkPattern(t testing.TB, f Frame) {
	t.Helper()
	if want := patterned(nil, f.Sequence, len(f.Data)); !bytes.Equal(f.Data, want) {
		t.Fatalf("frame %d (sequence %d, %d bytes): contents are not the ones pushed", f.Index, f.Sequence, len(f.Data))
	}
}

func push(t testing.TB, r *Ring, seq uint64, n int) {
	t.Helper()
	f := Frame{Time: t0.Add(time.Duration(seq) * 100 * time.Millisecond), Sequence: seq, Origin: Encoded, Data: patterned(nil, seq, n)}
	if err := r.Push(f); err != nil {
		t.Fatalf("Push frame %d (%d bytes): %v", seq, n, err)
	}
}

// readAll reads every frame a cursor can read now.
func readAll(t testing.TB, c *Cursor) (frames []Frame, lost uint64) {
	t.Helper()
	for {
		f, l, ok := c.TryNext(nil)
		lost += l
		if !ok {
			return frames, lost
		}
		checkPattern(t, f)
		frames = append(frames, f)
	}
}

func TestRingEvictsByBytes(t *testing.T) {
	r := newTestRing(t, 64<<10, 1000)
	for seq := range uint64(20) {
		push(t, r, seq, 10000)
	}
	// 6 frames of 10000 bytes fit in 65536; the seventh wraps to the start.
	st := r.Stats()
	if st.Frames != 6 || st.Bytes != 60000 || st.Pushed != 20 || st.Evicted != 14 {
		t.Fatalf("stats %+v, want 6 frames, 60000 bytes, 20 pushed, 14 evicted", st)
	}
	c := r.Cursor(time.Time{})
	defer c.Close()
	frames, lost := readAll(t, c)
	if lost != 0 || len(frames) != 6 || frames[0].Sequence != 14 || frames[5].Sequence != 19 {
		t.Fatalf("read %d frames (%v), lost %d: want 14..19, none lost (the cursor starts at the oldest held)", len(frames), seqs(frames), lost)
	}
	if !st.Oldest.Equal(frames[0].Time) || !st.Newest.Equal(frames[5].Time) {
		t.Errorf("stats span %v..%v, frames %v..%v", st.Oldest, st.Newest, frames[0].Time, frames[5].Time)
	}
}

func TestRingEvictsByFrames(t *testing.T) {
	r := newTestRing(t, 64<<10, 4)
	for seq := range uint64(10) {
		push(t, r, seq, 100)
	}
	c := r.Cursor(time.Time{})
	defer c.Close()
	frames, _ := readAll(t, c)
	if got := seqs(frames); len(got) != 4 || got[0] != 6 || got[3] != 9 {
		t.Fatalf("holds %v, want 6..9", got)
	}
	if st := r.Stats(); st.Frames != 4 || st.Bytes != 400 || st.Evicted != 6 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRingRandomSizes pushes frames of random sizes and checks, after each
// push, that the ring holds an unbroken run of the newest frames, their
// bytes intact, within its caps, and no fewer than fit by a plain count.
func TestRingRandomSizes(t *testing.T) {
	const maxBytes, maxFrames = 64 << 10, 50
	r := newTestRing(t, maxBytes, maxFrames)
	rng := rand.New(rand.NewPCG(1, 2))
	var sizes []int
	for seq := range uint64(2000) {
		n := 1 + rng.IntN(maxBytes/3)
		if seq%97 == 0 {
			n = maxBytes // a frame the size of the arena empties it
		}
		sizes = append(sizes, n)
		push(t, r, seq, n)
		c := r.Cursor(time.Time{})
		frames, _ := readAll(t, c)
		c.Close()
		if len(frames) == 0 || frames[len(frames)-1].Sequence != seq {
			t.Fatalf("after push %d: holds %v, not the newest", seq, seqs(frames))
		}
		total := 0
		for i, f := range frames {
			if f.Sequence != seq-uint64(len(frames)-1-i) || f.Index != f.Sequence {
				t.Fatalf("after push %d: holds %v, not a run of the newest", seq, seqs(frames))
			}
			total += len(f.Data)
		}
		if len(frames) > maxFrames || total > maxBytes {
			t.Fatalf("after push %d: %d frames, %d bytes: above the caps", seq, len(frames), total)
		}
		// Contiguous placement wastes at most the tail behind the wrap,
		// which is smaller than the frame that wrapped: the frames held
		// plus the next older one need more than half the arena, or the
		// frame cap is reached.
		if held := len(frames); held < maxFrames && uint64(held) <= seq {
			older := sizes[seq-uint64(held)]
			if total+older <= maxBytes/2 {
				t.Fatalf("after push %d: evicted frame %d (%d bytes) with only %d bytes held", seq, seq-uint64(held), older, total)
			}
		}
	}
}

func TestRingPushErrors(t *testing.T) {
	r := newTestRing(t, 64<<10, 10)
	push(t, r, 1, 1000)
	err := r.Push(Frame{Time: t0, Data: make([]byte, 64<<10+1)})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Push of a frame above the arena: %v, want ErrTooLarge", err)
	}
	if err := r.Push(Frame{Time: t0}); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Push of an empty frame: %v, want ErrEmpty", err)
	}
	if st := r.Stats(); st.Frames != 1 || st.Pushed != 1 {
		t.Fatalf("refused frames changed the ring: %+v", st)
	}
}

func TestCursorFrom(t *testing.T) {
	r := newTestRing(t, 64<<10, 100)
	for seq := range uint64(50) { // frames every 100 ms from t0
		push(t, r, seq, 100)
	}
	for _, tc := range []struct {
		from  time.Time
		first uint64
		none  bool
	}{
		{t0.Add(-time.Hour), 0, false},
		{t0, 0, false},
		{t0.Add(1234 * time.Millisecond), 13, false},
		{t0.Add(1300 * time.Millisecond), 13, false},
		{t0.Add(4900 * time.Millisecond), 49, false},
		{t0.Add(5 * time.Second), 0, true},
	} {
		c := r.Cursor(tc.from)
		f, lost, ok := c.TryNext(nil)
		c.Close()
		if tc.none {
			if ok {
				t.Errorf("Cursor(%v) read frame %d, want none until the next push", tc.from.Sub(t0), f.Sequence)
			}
			continue
		}
		if !ok || f.Sequence != tc.first || lost != 0 {
			t.Errorf("Cursor(%v): first frame %d (ok %v, lost %d), want %d", tc.from.Sub(t0), f.Sequence, ok, lost, tc.first)
		}
	}
}

func TestCursorReportsLoss(t *testing.T) {
	r := newTestRing(t, 64<<10, 4)
	push(t, r, 0, 100)
	push(t, r, 1, 100)
	c := r.Cursor(time.Time{})
	defer c.Close()
	if f, lost, ok := c.TryNext(nil); !ok || f.Sequence != 0 || lost != 0 {
		t.Fatalf("first read: %d %d %v", f.Sequence, lost, ok)
	}
	for seq := uint64(2); seq < 10; seq++ { // the reader falls behind
		push(t, r, seq, 100)
	}
	// Frames 1..5 were evicted unread: the next read says so, and returns
	// the oldest held.
	f, lost, ok := c.TryNext(nil)
	if !ok || f.Sequence != 6 || lost != 5 {
		t.Fatalf("read after falling behind: frame %d, lost %d (ok %v), want frame 6, lost 5", f.Sequence, lost, ok)
	}
	frames, lost := readAll(t, c)
	if lost != 0 || len(frames) != 3 {
		t.Fatalf("then %v, lost %d: want 7..9, none lost", seqs(frames), lost)
	}
	if c.Lost() != 5 {
		t.Fatalf("Lost() = %d, want 5", c.Lost())
	}
	// Next reports the loss too, with the frame it waited for.
	for seq := uint64(10); seq < 20; seq++ {
		push(t, r, seq, 100)
	}
	f, lost, err := c.Next(context.Background(), nil)
	if err != nil || f.Sequence != 16 || lost != 6 || c.Lost() != 11 {
		t.Fatalf("Next: frame %d, lost %d, %v, Lost() %d; want frame 16, lost 6, Lost() 11", f.Sequence, lost, err, c.Lost())
	}
}

func TestCursorNextWaits(t *testing.T) {
	r := newTestRing(t, 64<<10, 10)
	c := r.Cursor(time.Time{})
	got := make(chan Frame)
	go func() {
		f, _, err := c.Next(context.Background(), nil)
		if err != nil {
			t.Errorf("Next: %v", err)
		}
		got <- f
	}()
	push(t, r, 7, 500)
	if f := <-got; f.Sequence != 7 {
		t.Fatalf("Next returned frame %d, want 7", f.Sequence)
	}

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, _, err := c.Next(ctx, nil)
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Next after cancel: %v", err)
	}

	go func() {
		_, _, err := c.Next(context.Background(), nil)
		errc <- err
	}()
	c.Close()
	if err := <-errc; !errors.Is(err, ErrCursorClosed) {
		t.Fatalf("Next on a closed cursor: %v", err)
	}
	c.Close()
	if n := len(r.cursors); n != 0 {
		t.Fatalf("%d cursors still attached after Close", n)
	}
}

// TestCursorCopies checks that a frame read stays as it was after the ring
// reuses its bytes.
func TestCursorCopies(t *testing.T) {
	r := newTestRing(t, 64<<10, 2)
	push(t, r, 1, 30000)
	c := r.Cursor(time.Time{})
	defer c.Close()
	f, _, _ := c.TryNext(nil)
	push(t, r, 2, 30000)
	push(t, r, 3, 30000)
	push(t, r, 4, 30000)
	checkPattern(t, f)
}

func TestRingConcurrent(t *testing.T) {
	r := newTestRing(t, 256<<10, 64)
	const writers, perWriter, readers = 2, 400, 3
	ctx, cancel := context.WithCancel(context.Background())
	var rw sync.WaitGroup
	for range readers {
		c := r.Cursor(time.Time{})
		rw.Go(func() {
			defer c.Close()
			var buf []byte
			last := uint64(0)
			for n := 0; ; n++ {
				f, _, err := c.Next(ctx, buf)
				if err != nil {
					return
				}
				buf = f.Data
				checkPattern(t, f)
				if n > 0 && f.Index <= last {
					t.Errorf("index %d after %d", f.Index, last)
				}
				last = f.Index
				_ = r.Stats()
			}
		})
	}
	var ww sync.WaitGroup
	for w := range writers {
		ww.Go(func() {
			for i := range perWriter {
				seq := uint64(w*perWriter + i)
				push(t, r, seq, 1+int(seq*37%20000))
			}
		})
	}
	ww.Wait()
	cancel()
	rw.Wait()
	if st := r.Stats(); st.Pushed != writers*perWriter {
		t.Fatalf("pushed %d, want %d", st.Pushed, writers*perWriter)
	}
}

func TestPushAndReadAllocs(t *testing.T) {
	r := newTestRing(t, 1<<20, 64)
	c := r.Cursor(time.Time{})
	defer c.Close()
	data := patterned(nil, 1, 50000)
	buf := make([]byte, 0, 50000)
	i := 0
	a := testing.AllocsPerRun(200, func() {
		i++
		if err := r.Push(Frame{Time: t0.Add(time.Duration(i) * time.Millisecond), Sequence: uint64(i), Origin: Camera, Data: data}); err != nil {
			t.Fatal(err)
		}
		if _, _, ok := c.TryNext(buf); !ok {
			t.Fatal("no frame to read")
		}
	})
	if a != 0 {
		t.Fatalf("Push and TryNext allocate %v times per frame", a)
	}
}

func seqs(frames []Frame) []uint64 {
	s := make([]uint64, len(frames))
	for i, f := range frames {
		s[i] = f.Sequence
	}
	return s
}
