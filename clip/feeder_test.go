package clip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
)

func newTestFeeder(t testing.TB, cfg Config) (*Ring, *Feeder) {
	t.Helper()
	r, err := NewRing(cfg)
	if err != nil {
		t.Fatalf("NewRing: %v", err)
	}
	f, err := NewFeeder(r, cfg, nil)
	if err != nil {
		t.Fatalf("NewFeeder: %v", err)
	}
	return r, f
}

// runFeeder starts f's encoder and returns a function that stops it.
func runFeeder(t testing.TB, f *Feeder) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}
}

// testJPEG returns a small JPEG that differs with n.
func testJPEG(t testing.TB, n int) []byte {
	t.Helper()
	img := image.NewYCbCr(image.Rect(0, 0, 64, 48), image.YCbCrSubsampleRatio420)
	for i := range img.Y {
		img.Y[i] = byte(i*3 + n*17)
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 80}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func mjpegFrame(data []byte, seq uint64, at time.Time) *capture.Frame {
	return &capture.Frame{Width: 64, Height: 48, Format: capture.FormatMJPEG, Data: data, Time: at, Sequence: seq}
}

// syntheticFrames returns n frames of capture's synthetic scene (YUYV, an
// object crossing a noisy textured background) at w×h.
func syntheticFrames(t testing.TB, w, h, n int) []capture.Frame {
	t.Helper()
	s, err := capture.NewSynthetic(capture.SyntheticConfig{Width: w, Height: h, Seed: 7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	frames := make([]capture.Frame, n)
	for i := range frames {
		if err := s.Next(context.Background(), &frames[i]); err != nil {
			t.Fatal(err)
		}
	}
	return frames
}

// TestPreRollMJPEG feeds 20 s of a 30 fps MJPEG camera at the default
// config (pre-roll 5 s at 10 frames/s) and opens a clip at a trigger: its
// first frame is the pre-roll before the trigger, within one clip interval,
// and the frames run on without a gap through the trigger to the newest.
func TestPreRollMJPEG(t *testing.T) {
	cfg := DefaultConfig()
	r, f := newTestFeeder(t, cfg)
	jpgs := [][]byte{testJPEG(t, 1), testJPEG(t, 2), testJPEG(t, 3)}
	const fps = 30
	for seq := range uint64(20 * fps) {
		at := t0.Add(time.Duration(seq) * time.Second / fps)
		if err := f.Offer(mjpegFrame(jpgs[seq%3], seq, at)); err != nil {
			t.Fatal(err)
		}
	}
	for _, trigger := range []time.Duration{15 * time.Second, 17*time.Second + 40*time.Millisecond, 19 * time.Second} {
		start := t0.Add(trigger - cfg.PreRoll)
		c := r.Cursor(start)
		frames, lost := readAll2(t, c)
		c.Close()
		if lost != 0 || len(frames) == 0 {
			t.Fatalf("trigger %v: %d frames, %d lost", trigger, len(frames), lost)
		}
		lead := frames[0].Time.Sub(start)
		if lead < 0 || lead > cfg.interval() {
			t.Errorf("trigger %v: first frame %v after the pre-roll start, want 0..%v", trigger, lead, cfg.interval())
		}
		for i := 1; i < len(frames); i++ {
			if d := frames[i].Time.Sub(frames[i-1].Time); d < cfg.interval()-cfg.interval()/8 || d > cfg.interval()+time.Second/fps {
				t.Fatalf("trigger %v: frames %d and %d are %v apart", trigger, frames[i-1].Sequence, frames[i].Sequence, d)
			}
		}
		if last := frames[len(frames)-1]; last.Sequence < 20*fps-3 {
			t.Errorf("trigger %v: the clip stops at frame %d, not the newest", trigger, last.Sequence)
		}
	}
}

// TestPreRollEncoded is TestPreRollMJPEG for a raw (YUYV) camera at 10 fps,
// with the real encoder; each frame is waited for, so none is dropped.
func TestPreRollEncoded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PreRoll = 2 * time.Second
	r, f := newTestFeeder(t, cfg)
	stop := runFeeder(t, f)
	defer stop()
	all := r.Cursor(time.Time{})
	defer all.Close()
	src := syntheticFrames(t, 160, 120, 4)
	const fps = 10
	for seq := range uint64(6 * fps) {
		fr := src[seq%4]
		fr.Time, fr.Sequence = t0.Add(time.Duration(seq)*time.Second/fps), seq
		if err := f.Offer(&fr); err != nil {
			t.Fatal(err)
		}
		got, _, err := all.Next(context.Background(), nil)
		if err != nil || got.Sequence != seq || got.Origin != Encoded {
			t.Fatalf("frame %d: read %d (%v), %v", seq, got.Sequence, got.Origin, err)
		}
	}
	trigger := t0.Add(5 * time.Second)
	c := r.Cursor(trigger.Add(-cfg.PreRoll))
	defer c.Close()
	frames, lost := readAll2(t, c)
	if lost != 0 || len(frames) != 30 || !frames[0].Time.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("clip from %v: %d frames from %v, lost %d; want 30 (3.0 s to 5.9 s)", trigger.Add(-cfg.PreRoll).Sub(t0), len(frames), frames[0].Time.Sub(t0), lost)
	}
	for _, fr := range frames {
		img, err := jpeg.Decode(bytes.NewReader(fr.Data))
		if err != nil || img.Bounds() != image.Rect(0, 0, 160, 120) {
			t.Fatalf("frame %d: %v, %v", fr.Sequence, img.Bounds(), err)
		}
	}
	if st := f.Stats(); st.Encoded != 6*fps || st.Dropped != 0 || st.Skipped != 0 || st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func readAll2(t testing.TB, c *Cursor) (frames []Frame, lost uint64) {
	t.Helper()
	for {
		f, l, ok := c.TryNext(nil)
		lost += l
		if !ok {
			return frames, lost
		}
		frames = append(frames, f)
	}
}

func TestMJPEGPassThrough(t *testing.T) {
	r, f := newTestFeeder(t, DefaultConfig())
	c := r.Cursor(time.Time{})
	defer c.Close()
	jpg := testJPEG(t, 5)
	data := append([]byte(nil), jpg...)
	if err := f.Offer(mjpegFrame(data, 42, t0)); err != nil {
		t.Fatal(err)
	}
	clear(data) // the caller reuses its frame
	got, _, ok := c.TryNext(nil)
	if !ok || !bytes.Equal(got.Data, jpg) {
		t.Fatalf("ring frame (ok %v) is not byte for byte the camera's JPEG", ok)
	}
	if got.Origin != Camera || got.Sequence != 42 || !got.Time.Equal(t0) {
		t.Fatalf("frame %+v", got)
	}
	if st := f.Stats(); st.Passed != 1 || st.Bytes != uint64(len(jpg)) || st.Encoded != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDropWhenBusy holds the encoder on a frame: the next frame waits in the
// slot, every later one is dropped and counted, Offer never blocks, and
// once the encoder is free frames flow again.
func TestDropWhenBusy(t *testing.T) {
	cfg := DefaultConfig()
	r, f := newTestFeeder(t, cfg)
	started := make(chan uint64)
	release := make(chan struct{})
	jpg := testJPEG(t, 1)
	f.encode = func(b *raw) ([]byte, error) {
		started <- b.sequence
		<-release
		return jpg, nil
	}
	stop := runFeeder(t, f)
	defer stop()
	c := r.Cursor(time.Time{})
	defer c.Close()

	src := syntheticFrames(t, 64, 48, 1)[0]
	offer := func(seq uint64) {
		t.Helper()
		fr := src
		fr.Time, fr.Sequence = t0.Add(time.Duration(seq)*cfg.interval()), seq
		if err := f.Offer(&fr); err != nil {
			t.Fatal(err)
		}
	}
	offer(0)
	if s := <-started; s != 0 {
		t.Fatalf("encoder started on %d", s)
	}
	offer(1) // waits in the slot
	for seq := uint64(2); seq < 12; seq++ {
		offer(seq) // dropped
	}
	if st := f.Stats(); st.Dropped != 10 || st.Encoded != 0 || st.Offered != 12 || st.Skipped != 0 {
		t.Fatalf("while busy: %+v, want 10 dropped", st)
	}
	release <- struct{}{}
	if s := <-started; s != 1 {
		t.Fatalf("encoder took %d next, want 1 (the frame in the slot)", s)
	}
	release <- struct{}{}
	for want := range uint64(2) {
		if fr, lost, err := c.Next(context.Background(), nil); err != nil || fr.Sequence != want || lost != 0 {
			t.Fatalf("read %d, lost %d, %v; want %d", fr.Sequence, lost, err, want)
		}
	}
	// The drops did not move the rate's schedule: the next frame is taken.
	offer(12)
	if s := <-started; s != 12 {
		t.Fatalf("encoder took %d, want 12", s)
	}
	release <- struct{}{}
	if fr, _, err := c.Next(context.Background(), nil); err != nil || fr.Sequence != 12 {
		t.Fatalf("read %d, %v", fr.Sequence, err)
	}
	if st := f.Stats(); st.Dropped != 10 || st.Encoded != 3 {
		t.Fatalf("after: %+v", st)
	}
}

// TestOfferWithoutEncoder: with no Run, one frame waits and the rest are
// dropped; nothing blocks or grows.
func TestOfferWithoutEncoder(t *testing.T) {
	_, f := newTestFeeder(t, DefaultConfig())
	src := syntheticFrames(t, 64, 48, 1)[0]
	for seq := range uint64(100) {
		fr := src
		fr.Time, fr.Sequence = t0.Add(time.Duration(seq)*time.Second), seq
		if err := f.Offer(&fr); err != nil {
			t.Fatal(err)
		}
	}
	if st := f.Stats(); st.Dropped != 99 || len(f.slot) != 1 {
		t.Fatalf("stats %+v, want 99 dropped and one waiting", st)
	}
}

func TestRunOnce(t *testing.T) {
	_, f := newTestFeeder(t, DefaultConfig())
	stop := runFeeder(t, f)
	defer stop()
	for !f.run.Load() { // wait for Run to set its flag
		runtime.Gosched()
	}
	if err := f.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run: %v, want ErrRunning", err)
	}
}

func TestRate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cameraFPS float64
		jitter    time.Duration
		rate      float64
		wantPerS  float64
	}{
		{"30fps-at-10", 30, 0, 10, 10},
		{"30fps-jitter-at-10", 30, 4 * time.Millisecond, 10, 10},
		{"30fps-at-20", 30, 0, 20, 20},
		{"30fps-at-30", 30, 2 * time.Millisecond, 30, 30},
		{"10fps-jitter-at-10", 10, 8 * time.Millisecond, 10, 10},
		{"5fps-at-10", 5, 0, 10, 5},
		{"25fps-at-7.5", 25, 0, 7.5, 7.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Rate = tc.rate
			r, f := newTestFeeder(t, cfg)
			jpg := testJPEG(t, 0)
			const secs = 20
			n := int(secs * tc.cameraFPS)
			for i := range n {
				at := t0.Add(time.Duration(float64(i) / tc.cameraFPS * float64(time.Second)))
				if i%2 == 1 { // alternate early and late
					at = at.Add(tc.jitter)
				} else if i > 0 {
					at = at.Add(-tc.jitter)
				}
				if err := f.Offer(mjpegFrame(jpg, uint64(i), at)); err != nil {
					t.Fatal(err)
				}
			}
			st := f.Stats()
			want := tc.wantPerS * secs
			if got := float64(st.Passed); got < want-1 || got > want+1 {
				t.Fatalf("%d frames taken of %d, want %v±1 (%+v)", st.Passed, n, want, st)
			}
			if st.Passed+st.Skipped != uint64(n) {
				t.Fatalf("stats %+v do not add up to %d", st, n)
			}
			_ = r
		})
	}
}

// TestRateTimeBackwards: a frame older than the last one taken (a source
// restarted on another timeline) is taken and restarts the schedule.
func TestRateTimeBackwards(t *testing.T) {
	_, f := newTestFeeder(t, DefaultConfig())
	jpg := testJPEG(t, 0)
	for i, at := range []time.Duration{0, 10 * time.Millisecond, 100 * time.Millisecond, -time.Hour, -time.Hour + 50*time.Millisecond, -time.Hour + 100*time.Millisecond} {
		if err := f.Offer(mjpegFrame(jpg, uint64(i), t0.Add(at))); err != nil {
			t.Fatal(err)
		}
	}
	if st := f.Stats(); st.Passed != 4 || st.Skipped != 2 {
		t.Fatalf("stats %+v, want 4 passed (0, 100ms, -1h, -1h+100ms), 2 skipped", st)
	}
}

// rgbFrame makes a w×h frame of format p from an image of four coloured
// quadrants, with stride padding; want gives each quadrant's colour.
func rgbFrame(p capture.PixelFormat, w, h, pad int) (capture.Frame, func(x, y int) color.RGBA) {
	quad := []color.RGBA{{200, 40, 40, 255}, {40, 200, 40, 255}, {40, 40, 200, 255}, {220, 220, 220, 255}}
	if p == capture.FormatGrey {
		quad = []color.RGBA{{30, 30, 30, 255}, {100, 100, 100, 255}, {170, 170, 170, 255}, {240, 240, 240, 255}}
	}
	at := func(x, y int) color.RGBA {
		i := 0
		if x >= w/2 {
			i++
		}
		if y >= h/2 {
			i += 2
		}
		return quad[i]
	}
	ycc := func(x, y int) (uint8, uint8, uint8) {
		c := at(x, y)
		return color.RGBToYCbCr(c.R, c.G, c.B)
	}
	f := capture.Frame{Width: w, Height: h, Format: p, Time: t0}
	cw, ch := (w+1)/2, (h+1)/2
	switch p {
	case capture.FormatYUYV:
		f.Stride = 2*w + pad
		f.Data = make([]byte, f.Stride*h)
		for y := range h {
			for x := 0; x < w; x += 2 {
				y0, u, v := ycc(x, y)
				y1, _, _ := ycc(x+1, y)
				copy(f.Data[y*f.Stride+2*x:], []byte{y0, u, y1, v})
			}
		}
	case capture.FormatGrey:
		f.Stride = w + pad
		f.Data = make([]byte, f.Stride*h)
		for y := range h {
			for x := range w {
				f.Data[y*f.Stride+x], _, _ = ycc(x, y)
			}
		}
	case capture.FormatRGB24:
		f.Stride = 3*w + pad
		f.Data = make([]byte, f.Stride*h)
		for y := range h {
			for x := range w {
				c := at(x, y)
				copy(f.Data[y*f.Stride+3*x:], []byte{c.R, c.G, c.B})
			}
		}
	case capture.FormatNV12, capture.FormatYU12:
		f.Stride = 2*cw + pad*2
		cs := f.Stride / 2
		f.Data = make([]byte, f.Stride*h+f.Stride*ch)
		for y := range h {
			for x := range w {
				f.Data[y*f.Stride+x], _, _ = ycc(x, y)
			}
		}
		for y := range ch {
			for x := range cw {
				_, u, v := ycc(2*x, 2*y)
				if p == capture.FormatNV12 {
					f.Data[f.Stride*h+y*f.Stride+2*x] = u
					f.Data[f.Stride*h+y*f.Stride+2*x+1] = v
				} else {
					f.Data[f.Stride*h+y*cs+x] = u
					f.Data[f.Stride*h+cs*ch+y*cs+x] = v
				}
			}
		}
	}
	return f, at
}

// TestEncodeFormats encodes each raw format and decodes the JPEG: every
// quadrant has its colour.
func TestEncodeFormats(t *testing.T) {
	for _, p := range []capture.PixelFormat{capture.FormatYUYV, capture.FormatNV12, capture.FormatYU12, capture.FormatGrey, capture.FormatRGB24} {
		for _, sz := range []struct{ w, h, pad int }{{64, 48, 0}, {62, 46, 6}, {63, 47, 3}} {
			if p == capture.FormatYUYV && sz.w%2 != 0 {
				continue
			}
			t.Run(fmt.Sprintf("%v-%dx%d+%d", p, sz.w, sz.h, sz.pad), func(t *testing.T) {
				fr, want := rgbFrame(p, sz.w, sz.h, sz.pad)
				r, f := newTestFeeder(t, DefaultConfig())
				stop := runFeeder(t, f)
				defer stop()
				c := r.Cursor(time.Time{})
				defer c.Close()
				if err := f.Offer(&fr); err != nil {
					t.Fatal(err)
				}
				got, _, err := c.Next(context.Background(), nil)
				if err != nil {
					t.Fatal(err)
				}
				img, err := jpeg.Decode(bytes.NewReader(got.Data))
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if img.Bounds() != image.Rect(0, 0, sz.w, sz.h) {
					t.Fatalf("JPEG is %v", img.Bounds())
				}
				if _, grey := img.(*image.Gray); grey != (p == capture.FormatGrey) {
					t.Errorf("JPEG model %T for %v", img, p)
				}
				for _, pt := range []image.Point{{sz.w / 4, sz.h / 4}, {3 * sz.w / 4, sz.h / 4}, {sz.w / 4, 3 * sz.h / 4}, {3 * sz.w / 4, 3 * sz.h / 4}} {
					r, g, b, _ := img.At(pt.X, pt.Y).RGBA()
					w := want(pt.X, pt.Y)
					if diff(r>>8, w.R) > 16 || diff(g>>8, w.G) > 16 || diff(b>>8, w.B) > 16 {
						t.Errorf("pixel %v is %d,%d,%d, want about %d,%d,%d", pt, r>>8, g>>8, b>>8, w.R, w.G, w.B)
					}
				}
			})
		}
	}
}

func diff(a uint32, b uint8) uint32 {
	if a > uint32(b) {
		return a - uint32(b)
	}
	return uint32(b) - a
}

func TestOfferRefuses(t *testing.T) {
	good := syntheticFrames(t, 64, 48, 1)[0]
	good.Time = t0
	big := append([]byte{0xff, 0xd8}, make([]byte, 64<<10)...)
	for _, tc := range []struct {
		name string
		edit func(f *capture.Frame)
		want string
	}{
		{"no time", func(f *capture.Frame) { f.Time = time.Time{} }, "no capture time"},
		{"zero size", func(f *capture.Frame) { f.Width = 0 }, "size 0x48"},
		{"huge", func(f *capture.Frame) { f.Height = 1 << 20 }, "size 64x1048576"},
		{"odd YUYV", func(f *capture.Frame) { f.Width = 63 }, "YUYV width 63 is odd"},
		{"short stride", func(f *capture.Frame) { f.Stride = 100 }, "stride 100 below 128"},
		{"short data", func(f *capture.Frame) { f.Data = f.Data[:1000] }, "has 1000 bytes, want 6144"},
		{"stride overflow", func(f *capture.Frame) { f.Stride = 1 << 30 }, "above 1 GiB"},
		{"unknown format", func(f *capture.Frame) { f.Format = 0x34324742 }, "pixel format BG24"},
		{"not a JPEG", func(f *capture.Frame) { f.Format = capture.FormatMJPEG }, "SOI"},
		{"JPEG too large", func(f *capture.Frame) { f.Format, f.Data = capture.FormatMJPEG, big }, "larger than the ring"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.MaxBytes = 64 << 10
			r, f := newTestFeeder(t, cfg)
			fr := good
			fr.Data = append([]byte(nil), good.Data...)
			tc.edit(&fr)
			err := f.Offer(&fr)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "clip: ") {
				t.Fatalf("Offer: %v, want an error with %q", err, tc.want)
			}
			st := f.Stats()
			if st.Failed != 1 || st.LastError == nil || st.LastError.Error() != err.Error() || len(f.slot) != 0 {
				t.Fatalf("stats %+v after a refused frame", st)
			}
			if r.Stats().Pushed != 0 {
				t.Fatal("a refused frame reached the ring")
			}
			// The feeder goes on with good frames.
			fr = good
			fr.Time = t0.Add(time.Hour)
			if err := f.Offer(&fr); err != nil || len(f.slot) != 1 {
				t.Fatalf("good frame after a bad one: %v", err)
			}
		})
	}
}

func TestNewFeederErrors(t *testing.T) {
	r := newTestRing(t, 64<<10, 10)
	if _, err := NewFeeder(nil, DefaultConfig(), nil); err == nil {
		t.Error("NewFeeder without a ring succeeded")
	}
	bad := DefaultConfig()
	bad.Quality = 0
	if _, err := NewFeeder(r, bad, nil); err == nil || !strings.Contains(err.Error(), "Quality") {
		t.Errorf("NewFeeder with a bad config: %v", err)
	}
}

// TestFeederConcurrent runs the frame loop, the encoder, readers and stats
// together (go test -race): frames arrive in order and intact, and every
// frame offered is accounted for.
func TestFeederConcurrent(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Rate = 30
	cfg.MaxBytes = 256 << 10 // small: readers lose frames to eviction too
	r, f := newTestFeeder(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- f.Run(ctx) }()

	var readers sync.WaitGroup
	for i := range 2 {
		c := r.Cursor(time.Time{})
		readers.Go(func() {
			defer c.Close()
			var buf []byte
			var last uint64
			for n := 0; ; n++ {
				fr, _, err := c.Next(ctx, buf)
				if err != nil {
					return
				}
				buf = fr.Data
				if n > 0 && fr.Sequence <= last {
					t.Errorf("reader %d: sequence %d after %d", i, fr.Sequence, last)
				}
				last = fr.Sequence
				if _, err := jpeg.DecodeConfig(bytes.NewReader(fr.Data)); err != nil {
					t.Errorf("reader %d: frame %d: %v", i, fr.Sequence, err)
				}
				_ = f.Stats()
			}
		})
	}
	src := syntheticFrames(t, 160, 120, 8)
	const n = 600
	for seq := range uint64(n) {
		fr := src[seq%8]
		fr.Time, fr.Sequence = t0.Add(time.Duration(seq)*time.Second/60), seq
		if err := f.Offer(&fr); err != nil {
			t.Fatal(err)
		}
	}
	// The offers can all finish before the encoder goroutine first runs
	// (they return at once by design): let it take at least one frame.
	for deadline := time.Now().Add(20 * time.Second); f.Stats().Encoded == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-runDone
	readers.Wait()
	st := f.Stats()
	waiting := uint64(len(f.slot))
	if st.Offered != n || st.Skipped+st.Dropped+st.Encoded+waiting != n || st.Failed != 0 {
		t.Fatalf("stats %+v (%d waiting) do not add up to %d", st, waiting, n)
	}
	if st.Encoded == 0 {
		t.Fatal("nothing encoded")
	}
}

func TestOfferAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("640x480 frames")
	}
	cfg := DefaultConfig()
	_, f := newTestFeeder(t, cfg)
	src := syntheticFrames(t, 640, 480, 1)[0]
	i := 0
	next := func() *capture.Frame {
		i++
		src.Time, src.Sequence = t0.Add(time.Duration(i)*cfg.interval()), uint64(i)
		return &src
	}
	handoff := func() {
		if err := f.Offer(next()); err != nil {
			t.Fatal(err)
		}
		if len(f.slot) != 1 {
			t.Fatal("frame not handed to the encoder")
		}
		f.spare <- <-f.slot // the encoder's part, without encoding
	}
	handoff()
	handoff() // both buffers have held a frame
	if a := testing.AllocsPerRun(50, handoff); a != 0 {
		t.Errorf("Offer of a raw frame allocates %v times", a)
	}
	skip := func() {
		src.Time = src.Time.Add(time.Millisecond)
		if err := f.Offer(&src); err != nil {
			t.Fatal(err)
		}
	}
	if a := testing.AllocsPerRun(50, skip); a != 0 {
		t.Errorf("Offer of a skipped frame allocates %v times", a)
	}
	if err := f.Offer(next()); err != nil { // fills the slot
		t.Fatal(err)
	}
	drop := func() {
		if err := f.Offer(next()); err != nil {
			t.Fatal(err)
		}
	}
	if a := testing.AllocsPerRun(50, drop); a != 0 {
		t.Errorf("Offer of a dropped frame allocates %v times", a)
	}
	jpg := testJPEG(t, 1)
	pass := func() {
		fr := next()
		m := mjpegFrame(jpg, fr.Sequence, fr.Time)
		if err := f.Offer(m); err != nil {
			t.Fatal(err)
		}
	}
	if a := testing.AllocsPerRun(50, pass); a != 0 {
		t.Errorf("Offer of an MJPEG frame allocates %v times", a)
	}
	if st := f.Stats(); st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestEncodeAllocs states what encoding a frame allocates: image/jpeg's
// Encode allocates its encoder state and a copy of each Huffman table spec
// it writes (5 small objects for a colour frame, 3 for grey); the planes
// and the output buffer are reused.
func TestEncodeAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("640x480 frames")
	}
	src := syntheticFrames(t, 640, 480, 1)[0]
	n, err := rawLayout(src.Format, src.Width, src.Height, src.Stride)
	if err != nil {
		t.Fatal(err)
	}
	var r raw
	r.fill(&src, n)
	e := newEncoder(75)
	if _, err := e.encode(&r); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(10, func() { _, _ = e.encode(&r) }); a > 5 {
		t.Errorf("encoding a 640x480 YUYV frame allocates %v times, want at most image/jpeg's 5", a)
	}
}

// restClock is a clock the test moves: encoding advances it, and each
// After the encoder asks for is sent to the test, which fires it.
type restClock struct {
	mu     sync.Mutex
	now    time.Time
	afters chan restTimer
}

type restTimer struct {
	d    time.Duration
	fire chan time.Time
}

func (c *restClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *restClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *restClock) After(d time.Duration) <-chan time.Time {
	t := restTimer{d, make(chan time.Time, 1)}
	c.afters <- t
	return t.fire
}

// TestEncoderRests: with EncodeShare 0.25, a frame that takes 100 ms to
// encode is followed by a 300 ms rest, during which one frame waits in the
// slot and the others are dropped.
func TestEncoderRests(t *testing.T) {
	cfg := DefaultConfig()
	cfg.EncodeShare = 0.25
	r, err := NewRing(cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := &restClock{now: t0, afters: make(chan restTimer)}
	f, err := NewFeeder(r, cfg, clk)
	if err != nil {
		t.Fatal(err)
	}
	jpg := testJPEG(t, 1)
	f.encode = func(*raw) ([]byte, error) {
		clk.advance(100 * time.Millisecond)
		return jpg, nil
	}
	stop := runFeeder(t, f)
	defer stop()
	src := syntheticFrames(t, 64, 48, 1)[0]
	offer := func(seq uint64) {
		t.Helper()
		fr := src
		fr.Time, fr.Sequence = t0.Add(time.Duration(seq)*cfg.interval()), seq
		if err := f.Offer(&fr); err != nil {
			t.Fatal(err)
		}
	}
	offer(0)
	rest := <-clk.afters
	if rest.d != 300*time.Millisecond {
		t.Fatalf("rest %v after a 100 ms encode at share 0.25, want 300ms", rest.d)
	}
	offer(1) // waits in the slot
	offer(2) // dropped
	offer(3) // dropped
	if st := f.Stats(); st.Encoded != 1 || st.Dropped != 2 || r.Stats().Pushed != 1 {
		t.Fatalf("while resting: %+v, ring %+v", st, r.Stats())
	}
	rest.fire <- t0
	rest = <-clk.afters // frame 1 encoded
	if st := f.Stats(); st.Encoded != 2 || st.Dropped != 2 {
		t.Fatalf("after the rest: %+v", st)
	}
	c := r.Cursor(time.Time{})
	defer c.Close()
	frames, _ := readAll2(t, c)
	if got := seqs(frames); len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Fatalf("ring holds %v, want [0 1]", got)
	}
	rest.fire <- t0
}
