package capture

import (
	"bytes"
	"context"
	"errors"
	"image"
	"math"
	"testing"
	"testing/synctest"
	"time"
)

// fixedClock is a clock that never moves; After fires at once.
type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }
func (c fixedClock) After(time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	ch <- c.t
	return ch
}

var epoch = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newSynth(t testing.TB, w, h int, fps float64, seed int64) *Synthetic {
	t.Helper()
	s, err := NewSynthetic(SyntheticConfig{Width: w, Height: h, FPS: fps, Seed: seed}, fixedClock{epoch})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func meanAbsDiff(a, b []byte) (mean float64, maxd int) {
	var sum int
	for i := range a {
		d := int(a[i]) - int(b[i])
		if d < 0 {
			d = -d
		}
		sum += d
		maxd = max(maxd, d)
	}
	return float64(sum) / float64(len(a)), maxd
}

// fractionAbove is the fraction of pixels where a and b differ by more than d.
func fractionAbove(a, b []byte, d int) float64 {
	n := 0
	for i := range a {
		if abs(int(a[i])-int(b[i])) > d {
			n++
		}
	}
	return float64(n) / float64(len(a))
}

func mean(b []byte) float64 {
	var s int
	for _, v := range b {
		s += int(v)
	}
	return float64(s) / float64(len(b))
}

// region copies r out of a luma plane of width w.
func region(luma []byte, w int, r image.Rectangle) []byte {
	var out []byte
	for y := r.Min.Y; y < r.Max.Y; y++ {
		out = append(out, luma[y*w+r.Min.X:y*w+r.Max.X]...)
	}
	return out
}

// outside copies every pixel not in r.
func outside(luma []byte, w int, r image.Rectangle) []byte {
	var out []byte
	for i, v := range luma {
		if !image.Pt(i%w, i/w).In(r) {
			out = append(out, v)
		}
	}
	return out
}

func TestNewSyntheticConfig(t *testing.T) {
	s, err := NewSynthetic(SyntheticConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w, h := s.Size(); w != 640 || h != 480 {
		t.Errorf("default size %dx%d, want 640x480", w, h)
	}
	for _, cfg := range []SyntheticConfig{
		{Width: 641, Height: 480},
		{Width: 8, Height: 480},
		{Width: 640, Height: -1},
		{Width: 640, Height: 480, FPS: -1},
		{Width: 640, Height: 480, FPS: math.NaN()},
		{Width: 640, Height: 480, FPS: math.Inf(1)},
	} {
		if _, err := NewSynthetic(cfg, nil); err == nil {
			t.Errorf("NewSynthetic(%+v) accepted", cfg)
		}
	}
}

func TestSyntheticDeterministic(t *testing.T) {
	ctx := context.Background()
	a, b, c := newSynth(t, 160, 120, 0, 7), newSynth(t, 160, 120, 0, 7), newSynth(t, 160, 120, 0, 8)
	var fa, fb, fc Frame
	for range 3 {
		for _, p := range []struct {
			s *Synthetic
			f *Frame
		}{{a, &fa}, {b, &fb}, {c, &fc}} {
			if err := p.s.Next(ctx, p.f); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(fa.Data, fb.Data) || !bytes.Equal(fa.Luma, fb.Luma) {
			t.Fatalf("frame %d differs between two sources of seed 7", fa.Sequence)
		}
		if bytes.Equal(fa.Data, fc.Data) {
			t.Fatalf("frame %d is the same for seeds 7 and 8", fa.Sequence)
		}
	}
}

func TestSyntheticFrameLayout(t *testing.T) {
	s := newSynth(t, 64, 32, 0, 1)
	var f Frame
	if err := s.Next(context.Background(), &f); err != nil {
		t.Fatal(err)
	}
	if f.Width != 64 || f.Height != 32 || f.Format != FormatYUYV || f.Stride != 128 || len(f.Data) != 64*32*2 || len(f.Luma) != 64*32 {
		t.Fatalf("frame %dx%d %v stride %d data %d luma %d", f.Width, f.Height, f.Format, f.Stride, len(f.Data), len(f.Luma))
	}
	for i := range f.Luma {
		if f.Luma[i] != f.Data[2*i] {
			t.Fatalf("luma[%d] = %d, YUYV Y byte %d", i, f.Luma[i], f.Data[2*i])
		}
	}
}

func TestSyntheticSchedule(t *testing.T) {
	s := newSynth(t, 320, 240, 0, 3)
	rate := float64(NominalFPS)
	perCycle := uint64(SyntheticCycle.Seconds() * rate)
	if perCycle > 150 {
		t.Fatalf("cycle is %d frames at the nominal rate, want at most 15 s", perCycle)
	}
	ow, oh := s.ObjectSize()
	if area := float64(ow*oh) / (320 * 240); area < 0.05 || area > 0.15 {
		t.Errorf("object covers %.1f%% of the frame, want 5..15%%", 100*area)
	}
	var lastVisible, lastStep = -1, -1
	for cycle := range uint64(3) {
		var visible, full, step int
		var firstX, lastX int
		stepSign := 0
		for i := range perCycle {
			seq := cycle*perCycle + i
			phase := s.Offset(seq) - time.Duration(cycle)*SyntheticCycle
			if v := s.ObjectVisible(seq); v != (phase > SyntheticObjectEnter && phase < SyntheticObjectLeave) {
				t.Errorf("cycle %d frame %d (%v): visible %v", cycle, i, phase, v)
			}
			if phase < 2*time.Second && (s.ObjectVisible(seq) || s.BrightnessStep(seq)) {
				t.Errorf("warm-up frame %d not quiet", seq)
			}
			if s.ObjectVisible(seq) {
				r := s.ObjectRect(seq)
				if visible == 0 {
					firstX = r.Min.X
				}
				lastX = r.Min.X
				visible++
				lastVisible = int(seq)
				if lastStep >= 0 && int(seq)-lastStep < int(rate) {
					t.Errorf("object at frame %d within 1 s of a brightness step at %d", seq, lastStep)
				}
			}
			if s.ObjectFullyVisible(seq) {
				full++
			}
			if s.BrightnessStep(seq) {
				step++
				lastStep = int(seq)
				if s.ObjectVisible(seq) {
					t.Errorf("frame %d has the object during a brightness step", seq)
				}
				if lastVisible >= 0 && int(seq)-lastVisible < int(rate) {
					t.Errorf("brightness step at frame %d within 1 s of the object at %d", seq, lastVisible)
				}
				b := s.Brightness(seq)
				if stepSign == 0 {
					stepSign = b
				} else if b != stepSign {
					t.Errorf("step level changed within cycle %d", cycle)
				}
			}
		}
		if secs := float64(full) / rate; secs < 2 {
			t.Errorf("cycle %d: object fully in view for %.1f s, want at least 2 s", cycle, secs)
		}
		if secs := float64(visible) / rate; secs < 4 || secs > 5.5 {
			t.Errorf("cycle %d: object in view for %.1f s, want 4..5 s", cycle, secs)
		}
		if secs := float64(step) / rate; secs < 2 || secs > 5 {
			t.Errorf("cycle %d: brightness step lasts %.1f s, want a few seconds", cycle, secs)
		}
		if abs(stepSign) < 25 || abs(stepSign) > 40 {
			t.Errorf("cycle %d: brightness step %d, want 25..40 levels", cycle, stepSign)
		}
		wantLR := cycle%2 == 0
		if (lastX > firstX) != wantLR {
			t.Errorf("cycle %d: object moved from x=%d to x=%d, want left-to-right %v", cycle, firstX, lastX, wantLR)
		}
		if wantSign := 1 - 2*int(cycle%2); stepSign*wantSign < 0 {
			t.Errorf("cycle %d: step sign %d", cycle, stepSign)
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// TestSyntheticContent checks the rendered frames against the schedule: noise
// only between quiet frames, the object clearly different from the background
// where it is, and the step shifting the whole frame.
func TestSyntheticContent(t *testing.T) {
	const w, h = 320, 240
	s := newSynth(t, w, h, 0, 11)
	ctx := context.Background()
	var ref, f Frame
	if err := s.Next(ctx, &ref); err != nil { // frame 0: quiet
		t.Fatal(err)
	}
	refMean := mean(ref.Luma)
	perCycle := uint64(SyntheticCycle.Seconds() * NominalFPS)
	var objFrames, stepFrames, quietFrames int
	for seq := uint64(1); seq < 2*perCycle; seq++ {
		if err := s.Next(ctx, &f); err != nil {
			t.Fatal(err)
		}
		if f.Sequence != seq {
			t.Fatalf("sequence %d, want %d", f.Sequence, seq)
		}
		switch r := s.ObjectRect(seq); {
		case !r.Empty():
			objFrames++
			obj, bg := region(f.Luma, w, r), region(ref.Luma, w, r)
			if in, _ := meanAbsDiff(obj, bg); in < 30 {
				t.Errorf("frame %d: object region differs from the background by %.1f levels, want >= 30", seq, in)
			}
			if frac := fractionAbove(obj, bg, 15); frac < 0.99 {
				t.Errorf("frame %d: %.1f%% of the object's pixels differ from the background by more than noise, want all", seq, 100*frac)
			}
			out, maxd := meanAbsDiff(outside(f.Luma, w, r), outside(ref.Luma, w, r))
			if out > 4 || maxd > 16 {
				t.Errorf("frame %d: outside the object mean diff %.1f max %d, want noise only", seq, out, maxd)
			}
		case s.BrightnessStep(seq):
			stepFrames++
			shift := mean(f.Luma) - refMean
			if want := float64(s.Brightness(seq)); math.Abs(shift-want) > 2 {
				t.Errorf("frame %d: mean luma shifted %.1f, want %v", seq, shift, want)
			}
		default:
			quietFrames++
			d, maxd := meanAbsDiff(f.Luma, ref.Luma)
			if d < 1 || d > 4 || maxd > 16 {
				t.Errorf("quiet frame %d: mean diff %.2f max %d from frame 0, want small nonzero noise", seq, d, maxd)
			}
		}
	}
	if objFrames == 0 || stepFrames == 0 || quietFrames == 0 {
		t.Fatalf("object %d, step %d, quiet %d frames: the schedule was not exercised", objFrames, stepFrames, quietFrames)
	}
}

func TestSyntheticObjectChroma(t *testing.T) {
	s := newSynth(t, 160, 120, 0, 5)
	ctx := context.Background()
	var f Frame
	for {
		if err := s.Next(ctx, &f); err != nil {
			t.Fatal(err)
		}
		if s.ObjectFullyVisible(f.Sequence) {
			break
		}
	}
	r := s.ObjectRect(f.Sequence)
	c := r.Min.Add(r.Max).Div(2)
	c.X &^= 1
	o := c.Y*f.Stride + 2*c.X
	if f.Data[o+1] != s.objU || f.Data[o+3] != s.objV {
		t.Errorf("object centre chroma %d/%d, want %d/%d", f.Data[o+1], f.Data[o+3], s.objU, s.objV)
	}
}

func TestSyntheticTimeline(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		fps  float64
		step time.Duration
	}{{0, 100 * time.Millisecond}, {25, 40 * time.Millisecond}} {
		s := newSynth(t, 32, 16, tc.fps, 1)
		var f Frame
		for i := range 5 {
			if err := s.Next(ctx, &f); err != nil {
				t.Fatal(err)
			}
			if want := epoch.Add(time.Duration(i) * tc.step); !f.Time.Equal(want) || f.Sequence != uint64(i) {
				t.Errorf("fps %v frame %d: time %v seq %d, want %v", tc.fps, i, f.Time, f.Sequence, want)
			}
		}
	}
}

// TestSyntheticPacing runs in a synctest bubble: time advances only while
// every goroutine waits, so Next must return exactly when the frame is due.
func TestSyntheticPacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		s, err := NewSynthetic(SyntheticConfig{Width: 32, Height: 16, FPS: 20}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var f Frame
		for i := range 4 {
			if err := s.Next(t.Context(), &f); err != nil {
				t.Fatal(err)
			}
			due := time.Duration(i) * 50 * time.Millisecond
			if got := time.Since(start); got != due || !f.Time.Equal(start.Add(due)) {
				t.Errorf("frame %d returned at %v with time %v, want %v", i, got, f.Time.Sub(start), due)
			}
		}
		// A late consumer gets the next frame at once, on the timeline.
		time.Sleep(time.Second)
		before := time.Now()
		if err := s.Next(t.Context(), &f); err != nil {
			t.Fatal(err)
		}
		if time.Since(before) != 0 || !f.Time.Equal(start.Add(200*time.Millisecond)) {
			t.Errorf("late frame waited %v, time %v", time.Since(before), f.Time.Sub(start))
		}
		// Cancelling stops a wait.
		ctx, cancel := context.WithCancel(t.Context())
		s2, err := NewSynthetic(SyntheticConfig{Width: 32, Height: 16, FPS: 0.1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s2.Next(ctx, &f); err != nil { // frame 0 is due at once
			t.Fatal(err)
		}
		go func() {
			time.Sleep(time.Second)
			cancel()
		}()
		if err := s2.Next(ctx, &f); !errors.Is(err, context.Canceled) {
			t.Errorf("Next after cancel: %v, want context.Canceled", err)
		}
		if got := time.Since(before); got != time.Second {
			t.Errorf("cancelled wait took %v, want 1s", got)
		}
	})
}

func TestSyntheticClose(t *testing.T) {
	s := newSynth(t, 32, 16, 0, 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var f Frame
	if err := s.Next(context.Background(), &f); !errors.Is(err, ErrClosed) {
		t.Errorf("Next after Close: %v, want ErrClosed", err)
	}
}

func TestSyntheticNextDoesNotAllocate(t *testing.T) {
	s := newSynth(t, 640, 480, 0, 1)
	ctx := context.Background()
	var f Frame
	if err := s.Next(ctx, &f); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(20, func() {
		if err := s.Next(ctx, &f); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Synthetic.Next: %v allocations per frame, want 0", n)
	}
}

func BenchmarkSyntheticNext(b *testing.B) {
	s := newSynth(b, 640, 480, 0, 1)
	ctx := context.Background()
	var f Frame
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Next(ctx, &f); err != nil {
			b.Fatal(err)
		}
	}
}
