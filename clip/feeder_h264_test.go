package clip

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
)

// fakeEncoder is an [Encoder] that codes each picture as a tiny access unit
// naming its sequence: a key frame (SPS, PPS, IDR) every gop pictures, or
// when asked with forces set. Encode refuses pictures with encodeErr when
// set; inject hands Next a unit or an error of the test's instead. Its
// buffers are reused: it allocates nothing once warm.
type fakeEncoder struct {
	gop    int
	forces bool

	mu        sync.Mutex
	encodeErr error
	in        chan fakeIn
	inject    chan encItem
	n         int
	buf       []byte
	pictures  []Picture // every picture encoded, when keep is set
	keep      bool
	closed    chan struct{}
	closeOnce sync.Once
	swallow   int // Next gives no unit for this many pictures (a dying command)
}

type fakeIn struct {
	time time.Time
	seq  uint64
	key  bool
}

func newFakeEncoder(gop int) *fakeEncoder {
	return &fakeEncoder{gop: gop, in: make(chan fakeIn, 256), inject: make(chan encItem, 16),
		buf: make([]byte, 0, 64), closed: make(chan struct{})}
}

func (e *fakeEncoder) Encode(_ context.Context, p *Picture, key bool) error {
	e.mu.Lock()
	err := e.encodeErr
	if e.keep {
		e.pictures = append(e.pictures, Picture{Width: p.Width, Height: p.Height, Time: p.Time, Sequence: p.Sequence, Data: append([]byte(nil), p.Data...)})
	}
	e.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case e.in <- fakeIn{p.Time, p.Sequence, key}:
		return nil
	default:
		return ErrEncoderBusy
	}
}

// unit writes the access unit of picture seq into buf.
func fakeUnit(buf []byte, seq uint64, key bool) []byte {
	b := buf[:0]
	if key {
		b = append(b, 0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0, 0, 1, 0x65, 0x88)
	} else {
		b = append(b, 0, 0, 0, 1, 0x41, 0x9a)
	}
	for i := range 8 {
		b = append(b, byte(seq>>(8*i))|0x80) // never a zero: no start code
	}
	return b
}

func (e *fakeEncoder) Next(ctx context.Context) (AccessUnit, error) {
	select {
	case it := <-e.inject:
		return it.au, it.err
	default:
	}
	select {
	case it := <-e.inject:
		return it.au, it.err
	case x := <-e.in:
		e.mu.Lock()
		if e.swallow > 0 {
			e.swallow--
			e.mu.Unlock()
			return e.Next(ctx)
		}
		e.mu.Unlock()
		key := e.n%e.gop == 0 || (e.forces && x.key)
		if key {
			e.n = 0
		}
		e.n++
		e.buf = fakeUnit(e.buf, x.seq, key)
		return AccessUnit{Time: x.time, Sequence: x.seq, Key: key, Data: e.buf}, nil
	case <-ctx.Done():
		return AccessUnit{}, ctx.Err()
	case <-e.closed:
		return AccessUnit{}, ErrEncoderClosed
	}
}

func (e *fakeEncoder) ForcesKey() bool { return e.forces }

func (e *fakeEncoder) Close() error {
	e.closeOnce.Do(func() { close(e.closed) })
	return nil
}

// h264Config is the default config for H.264 clips at 10 frames/s with
// key frames every gop frames.
func h264Config(gop int) Config {
	c := DefaultConfig()
	c.Codec = CodecH264
	c.KeyInterval = time.Duration(gop) * time.Second / 10
	c.MaxFrames = c.MinFrames() + 20
	return c
}

func newH264Feeder(t testing.TB, cfg Config, enc Encoder) (*Ring, *Feeder) {
	t.Helper()
	r, err := NewRing(cfg)
	if err != nil {
		t.Fatalf("NewRing: %v", err)
	}
	f, err := NewH264Feeder(r, cfg, enc, nil)
	if err != nil {
		t.Fatalf("NewH264Feeder: %v", err)
	}
	return r, f
}

// waitFor polls cond (the feeder's goroutines run on their own) for up to
// 10 s of real time; what is waited for is behaviour, not a duration.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 10000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// settled is how many frames handed to the encoder goroutine are done
// with: dropped, failed, pushed, orphaned or lost.
func settled(f *Feeder) uint64 {
	s := f.Stats()
	return s.Dropped + s.Failed + s.Encoded + s.Orphaned + s.Lost
}

// offerAll offers frames one at a time at 10 frames/s of frame time, each
// once the one before is done with (so none is dropped at the handoff).
func offerAll(t testing.TB, f *Feeder, frames []capture.Frame, from uint64) {
	t.Helper()
	for i := range frames {
		fr := &frames[i]
		fr.Sequence = from + uint64(i)
		fr.Time = t0.Add(time.Duration(fr.Sequence) * 100 * time.Millisecond)
		want := settled(f) + 1
		if err := f.Offer(fr); err != nil {
			t.Fatalf("Offer frame %d: %v", fr.Sequence, err)
		}
		waitFor(t, "the frame to be encoded", func() bool { return settled(f) >= want })
	}
}

// TestH264PreRoll: 20 s of frames through a fake encoder with key frames
// every 2 s: a cursor opened at the trigger minus the 5 s pre-roll starts
// at a key frame at or before that time, at most one group (2 s) earlier,
// and the frames run on without a gap to the newest.
func TestH264PreRoll(t *testing.T) {
	cfg := h264Config(20)
	enc := newFakeEncoder(20)
	r, f := newH264Feeder(t, cfg, enc)
	stop := runFeeder(t, f)
	defer stop()
	offerAll(t, f, syntheticFrames(t, 64, 48, 200), 0)
	trigger := t0.Add(173 * 100 * time.Millisecond)
	from := trigger.Add(-cfg.PreRoll)
	c := r.Cursor(from)
	defer c.Close()
	frames, lost := readAll2(t, c)
	if lost != 0 || len(frames) == 0 {
		t.Fatalf("%d frames, %d lost", len(frames), lost)
	}
	first := frames[0]
	if !first.Key || !isKeyAU(first.Data) {
		t.Fatalf("the clip's first frame %d is not a key frame", first.Sequence)
	}
	if first.Time.After(from) || from.Sub(first.Time) >= cfg.KeyInterval {
		t.Fatalf("the clip starts %v before the trigger, want %v up to %v", trigger.Sub(first.Time), cfg.PreRoll, cfg.PreRoll+cfg.KeyInterval)
	}
	for i, fr := range frames {
		if fr.Sequence != first.Sequence+uint64(i) {
			t.Fatalf("frame %d is sequence %d: a gap", i, fr.Sequence)
		}
		if want := fakeUnit(nil, fr.Sequence, fr.Sequence%20 == 0); string(fr.Data) != string(want) {
			t.Fatalf("frame %d holds another access unit", fr.Sequence)
		}
	}
	st, rs := f.Stats(), r.Stats()
	if st.Encoded != 200 || st.Dropped != 0 || st.Failed != 0 || rs.Orphaned != 0 {
		t.Fatalf("feeder %+v, ring %+v", st, rs)
	}
	// The ring never starts mid-group.
	if rs.Frames == 0 || r.slot(r.first).key != true {
		t.Fatalf("the ring starts at a frame that is not a key frame")
	}
	t.Logf("clip from %v before the trigger (pre-roll %v, key frames every %v): %d frames; ring %d frames, %d evicted",
		trigger.Sub(first.Time), cfg.PreRoll, cfg.KeyInterval, len(frames), rs.Frames, rs.Evicted)
}

// TestH264RequestKey: with an encoder that can force a key frame, the
// frame after RequestKey is one; with one that cannot, the request is
// counted and the groups stay as the encoder makes them.
func TestH264RequestKey(t *testing.T) {
	for _, forces := range []bool{true, false} {
		cfg := h264Config(20)
		enc := newFakeEncoder(20)
		enc.forces = forces
		r, f := newH264Feeder(t, cfg, enc)
		stop := runFeeder(t, f)
		frames := syntheticFrames(t, 64, 48, 10)
		offerAll(t, f, frames[:5], 0)
		f.RequestKey()
		offerAll(t, f, frames[5:], 5)
		stop()
		c := r.Cursor(t0)
		got, _ := readAll2(t, c)
		c.Close()
		if len(got) != 10 {
			t.Fatalf("forces %v: %d frames", forces, len(got))
		}
		if got[5].Key != forces {
			t.Errorf("forces %v: the frame after RequestKey has key %v", forces, got[5].Key)
		}
		if got[6].Key {
			t.Errorf("forces %v: the request is used more than once", forces)
		}
		if n := f.Stats().KeyRequests; n != 1 {
			t.Errorf("%d key requests counted", n)
		}
	}
}

// TestH264EncoderErrors: a busy encoder drops frames (counted, the next
// frames go on); another Encode error is counted with its reason; an error
// from Next (the encoder's command died) breaks the group, and the frames
// it took and never gave back are counted lost when the next unit comes.
func TestH264EncoderErrors(t *testing.T) {
	cfg := h264Config(5)
	enc := newFakeEncoder(5)
	r, f := newH264Feeder(t, cfg, enc)
	stop := runFeeder(t, f)
	defer stop()
	frames := syntheticFrames(t, 64, 48, 30)
	offerAll(t, f, frames[:3], 0)

	enc.mu.Lock()
	enc.encodeErr = ErrEncoderBusy
	enc.mu.Unlock()
	offerAll(t, f, frames[3:5], 3)
	if st := f.Stats(); st.Dropped != 2 || st.Failed != 0 || st.InFlight != 0 {
		t.Fatalf("busy encoder: %+v, want 2 dropped", st)
	}

	enc.mu.Lock()
	enc.encodeErr = errors.New("device gone")
	enc.mu.Unlock()
	offerAll(t, f, frames[5:6], 5)
	if st := f.Stats(); st.Failed != 1 || st.EncoderErrors != 1 || st.LastError == nil || !strings.Contains(st.LastError.Error(), "device gone") {
		t.Fatalf("failing encoder: %+v", st)
	}
	enc.mu.Lock()
	enc.encodeErr = nil
	enc.mu.Unlock()

	// The encoder takes frames 6 and 7, then its command dies: their
	// units never come. The next run's first unit is a key frame.
	enc.mu.Lock()
	enc.swallow = 2
	enc.mu.Unlock()
	for i := uint64(6); i < 8; i++ {
		fr := &frames[i]
		fr.Sequence, fr.Time = i, t0.Add(time.Duration(i)*100*time.Millisecond)
		if err := f.Offer(fr); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the encoder to take the frame", func() bool { return f.Stats().InFlight == int(i-5) })
	}
	waitFor(t, "the units to be swallowed", func() bool { enc.mu.Lock(); defer enc.mu.Unlock(); return enc.swallow == 0 })
	enc.inject <- encItem{err: ErrEncoderExited}
	waitFor(t, "the encoder's error", func() bool { return f.Stats().EncoderErrors == 2 })
	offerAll(t, f, frames[8:9], 8) // a non-key unit: its group is broken
	enc.mu.Lock()
	enc.n = 0
	enc.mu.Unlock()
	offerAll(t, f, frames[9:12], 9) // key frame 9, then 10 and 11
	st, rs := f.Stats(), r.Stats()
	if st.Lost != 2 || rs.Orphaned != 1 {
		t.Fatalf("after the encoder died: feeder %+v, ring %+v; want 2 lost, 1 orphaned", st, rs)
	}
	c := r.Cursor(t0.Add(900 * time.Millisecond)) // the last key frame at or before: 9
	got, _ := readAll2(t, c)
	c.Close()
	if len(got) != 3 || got[0].Sequence != 9 || !got[0].Key {
		t.Fatalf("after the encoder died the ring holds %d frames from %d", len(got), got[0].Sequence)
	}
}

// TestH264Misaligned: an access unit that matches no frame given to the
// encoder (another sequence, or the right sequence at another time) is
// refused and counted, the group it would have continued is broken, and
// the frames in flight are kept for their own units.
func TestH264Misaligned(t *testing.T) {
	cfg := h264Config(5)
	enc := newFakeEncoder(5)
	r, f := newH264Feeder(t, cfg, enc)
	stop := runFeeder(t, f)
	defer stop()
	frames := syntheticFrames(t, 64, 48, 12)
	offerAll(t, f, frames[:2], 0)
	bogus := fakeUnit(nil, 99, false)
	enc.inject <- encItem{au: AccessUnit{Time: t0, Sequence: 99, Data: bogus}}
	enc.inject <- encItem{au: AccessUnit{Time: t0.Add(time.Hour), Sequence: 2, Data: bogus}} // seq 2 is not given yet
	waitFor(t, "the misaligned units", func() bool { return f.Stats().Misaligned == 2 })
	offerAll(t, f, frames[2:12], 2)
	st, rs := f.Stats(), r.Stats()
	if st.Misaligned != 2 || st.Lost != 0 || !errors.Is(st.LastError, ErrEncoderMisaligned) {
		t.Fatalf("feeder %+v", st)
	}
	if rs.Orphaned != 3 { // 2, 3, 4: the broken group's rest
		t.Fatalf("ring %+v, want frames 2..4 orphaned", rs)
	}
	c := r.Cursor(t0)
	got, _ := readAll2(t, c)
	c.Close()
	if len(got) != 9 || got[2].Sequence != 5 || !got[2].Key {
		t.Fatalf("the ring holds %d frames, the third %d", len(got), got[2].Sequence)
	}
}

// TestH264Formats: every raw format the feeder takes, and MJPEG, reaches
// the encoder as YU12 of the same picture; an odd size is refused.
func TestH264Formats(t *testing.T) {
	for _, p := range []capture.PixelFormat{capture.FormatYUYV, capture.FormatNV12, capture.FormatYU12, capture.FormatGrey, capture.FormatRGB24, capture.FormatMJPEG} {
		t.Run(p.String(), func(t *testing.T) {
			cfg := h264Config(5)
			enc := newFakeEncoder(5)
			enc.keep = true
			_, f := newH264Feeder(t, cfg, enc)
			stop := runFeeder(t, f)
			defer stop()
			var fr capture.Frame
			var want func(x, y int) (yy, cb, cr byte)
			if p == capture.FormatMJPEG {
				fr = *mjpegFrame(testJPEG(t, 3), 0, t0)
				want = nil
			} else {
				var rgb func(x, y int) ycc
				fr, rgb = rgbFrameYCC(p, 64, 48, 8)
				want = func(x, y int) (byte, byte, byte) { c := rgb(x, y); return c.y, c.cb, c.cr }
			}
			offerAll(t, f, []capture.Frame{fr}, 0)
			enc.mu.Lock()
			pics := enc.pictures
			enc.mu.Unlock()
			if len(pics) != 1 {
				t.Fatalf("%d pictures encoded", len(pics))
			}
			pic := pics[0]
			w, h := pic.Width, pic.Height
			if w != 64 || h != 48 || len(pic.Data) != w*h*3/2 {
				t.Fatalf("picture %dx%d, %d bytes", w, h, len(pic.Data))
			}
			if want == nil {
				return
			}
			cw := w / 2
			for y := 0; y < h; y += 2 {
				for x := 0; x < w; x += 2 {
					wy, wb, wr := want(x, y)
					gy, gb, gr := pic.Data[y*w+x], pic.Data[w*h+y/2*cw+x/2], pic.Data[w*h+w*h/4+y/2*cw+x/2]
					if d8(gy, wy) > 2 || d8(gb, wb) > 2 || d8(gr, wr) > 2 {
						t.Fatalf("pixel %d,%d: YCbCr %d %d %d, want %d %d %d", x, y, gy, gb, gr, wy, wb, wr)
					}
				}
			}
		})
	}
	cfg := h264Config(5)
	_, f := newH264Feeder(t, cfg, newFakeEncoder(5))
	odd := capture.Frame{Width: 63, Height: 48, Stride: 63, Format: capture.FormatGrey, Data: make([]byte, 63*48), Time: t0}
	if err := f.Offer(&odd); err == nil || !strings.Contains(err.Error(), "even width and height") {
		t.Fatalf("an odd-sized frame: %v", err)
	}
}

type ycc struct{ y, cb, cr byte }

// rgbFrameYCC is a frame of format p (w×h, pad bytes of padding per line)
// whose pixels have known YCbCr values, constant over each 2×2 block.
func rgbFrameYCC(p capture.PixelFormat, w, h, pad int) (capture.Frame, func(x, y int) ycc) {
	at := func(x, y int) ycc {
		x, y = x/2, y/2
		return ycc{y: byte(16 + (x*7+y*3)%200), cb: byte(60 + (x*5)%120), cr: byte(70 + (y*11)%110)}
	}
	f := capture.Frame{Width: w, Height: h, Format: p, Time: t0}
	switch p {
	case capture.FormatYUYV:
		f.Stride = 2*w + pad
		f.Data = make([]byte, f.Stride*h)
		for y := range h {
			for x := 0; x < w; x += 2 {
				c := at(x, y)
				copy(f.Data[y*f.Stride+2*x:], []byte{c.y, c.cb, c.y, c.cr})
			}
		}
	case capture.FormatNV12:
		f.Stride = w + pad
		f.Data = make([]byte, f.Stride*h*3/2)
		for y := range h {
			for x := range w {
				c := at(x, y)
				f.Data[y*f.Stride+x] = c.y
				if x%2 == 0 && y%2 == 0 {
					f.Data[f.Stride*h+y/2*f.Stride+x] = c.cb
					f.Data[f.Stride*h+y/2*f.Stride+x+1] = c.cr
				}
			}
		}
	case capture.FormatYU12:
		f.Stride = w + 2*pad
		cs := f.Stride / 2
		f.Data = make([]byte, f.Stride*h+2*cs*h/2)
		for y := range h {
			for x := range w {
				c := at(x, y)
				f.Data[y*f.Stride+x] = c.y
				if x%2 == 0 && y%2 == 0 {
					f.Data[f.Stride*h+y/2*cs+x/2] = c.cb
					f.Data[f.Stride*h+cs*h/2+y/2*cs+x/2] = c.cr
				}
			}
		}
	case capture.FormatGrey:
		f.Stride = w + pad
		f.Data = make([]byte, f.Stride*h)
		for y := range h {
			for x := range w {
				f.Data[y*f.Stride+x] = at(x, y).y
			}
		}
		return f, func(x, y int) ycc { c := at(x, y); c.cb, c.cr = 128, 128; return c }
	case capture.FormatRGB24:
		// Grey levels: R = G = B = Y, so Cb = Cr = 128.
		f.Stride = 3*w + pad
		f.Data = make([]byte, f.Stride*h)
		for y := range h {
			for x := range w {
				v := at(x, y).y
				copy(f.Data[y*f.Stride+3*x:], []byte{v, v, v})
			}
		}
		return f, func(x, y int) ycc { c := at(x, y); c.cb, c.cr = 128, 128; return c }
	}
	return f, at
}

func d8(a, b byte) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}

// TestH264OfferAllocs: on the H.264 path, Offer (the frame loop), the
// encoder goroutine's conversion and handoff, and pushing the unit into the
// ring allocate nothing in steady state (with a fake encoder that does not
// either).
func TestH264OfferAllocs(t *testing.T) {
	cfg := h264Config(10)
	enc := newFakeEncoder(10)
	r, f := newH264Feeder(t, cfg, enc)
	c := r.Cursor(t0)
	defer c.Close()
	src := syntheticFrames(t, 640, 480, 1)[0]
	ctx := context.Background()
	buf := make([]byte, 0, 256)
	i := 0
	step := func() {
		i++
		src.Time, src.Sequence = t0.Add(time.Duration(i)*cfg.interval()), uint64(i)
		if err := f.Offer(&src); err != nil {
			t.Fatal(err)
		}
		f.encodeH264(ctx, <-f.slot)
		au, err := enc.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f.pushUnit(au)
		c.TryNext(buf)
	}
	for range 30 {
		step()
	}
	if a := testing.AllocsPerRun(50, step); a != 0 {
		t.Errorf("the H.264 path allocates %v times a frame", a)
	}
	if st := f.Stats(); st.Encoded != 81 || st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestNewH264FeederErrors: the H.264 feeder needs an encoder and a ring
// of H.264; the JPEG feeder refuses nothing of it silently.
func TestNewH264FeederErrors(t *testing.T) {
	cfg := h264Config(10)
	r, err := NewRing(cfg)
	if err != nil {
		t.Fatal(err)
	}
	jr, _ := newTestFeeder(t, DefaultConfig())
	for name, fn := range map[string]func() error{
		"no encoder":   func() error { _, err := NewH264Feeder(r, cfg, nil, nil); return err },
		"mjpeg config": func() error { _, err := NewH264Feeder(r, DefaultConfig(), newFakeEncoder(2), nil); return err },
		"jpeg ring":    func() error { _, err := NewH264Feeder(jr, cfg, newFakeEncoder(2), nil); return err },
	} {
		if err := fn(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
