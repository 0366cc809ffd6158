package motion

import (
	"fmt"
	"image"
	"testing"

	"github.com/keyframe-cam/keyframe/capture"
)

// benchFrames renders n frames of a w×h scene with an object crossing it,
// so Step runs every stage, labelling included.
func benchFrames(w, h, n int) [][]byte {
	s := newScene(w, h, 42, 2.5)
	frames := make([][]byte, n)
	for i := range frames {
		x := w/8 + i*w/(2*n)
		frames[i] = s.frame(nil, 0, image.Rect(x, h/3, x+w/6, h/3+h/5))
	}
	return frames
}

func TestStepAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("renders 640x480 frames")
	}
	const w, h = 640, 480
	frames := benchFrames(w, h, 8)
	quiet := newScene(w, h, 42, 2.5)
	d := newTestDetector(t, DefaultConfig())
	for range warmFrames + 1 {
		d.Step(quiet.frame(nil, 0), w, h)
	}
	i := 0
	motion := 0
	allocs := testing.AllocsPerRun(50, func() {
		if d.Step(frames[i%len(frames)], w, h).Motion {
			motion++
		}
		i++
	})
	if allocs != 0 {
		t.Fatalf("Step allocates %v times per frame in steady state", allocs)
	}
	if motion == 0 {
		t.Fatal("no motion in the measured frames: the labelling path was not measured")
	}
	// A global change (re-seed) does not allocate either.
	bright := newScene(w, h, 42, 2.5).frame(nil, 40)
	if a := testing.AllocsPerRun(5, func() { d.Step(bright, w, h) }); a != 0 {
		t.Fatalf("a global change allocates %v times", a)
	}
}

func BenchmarkStep640x480(b *testing.B) {
	const w, h = 640, 480
	frames := benchFrames(w, h, 16)
	d := newTestDetector(b, DefaultConfig())
	quiet := newScene(w, h, 42, 2.5).frame(nil, 0)
	for range warmFrames {
		d.Step(quiet, w, h)
	}
	b.ReportAllocs()
	b.SetBytes(w * h)
	i := 0
	for b.Loop() {
		d.Step(frames[i%len(frames)], w, h)
		i++
	}
}

// packYUYV returns a YUYV 4:2:2 image (Y0 U Y1 V, stride 2w) whose luma is
// the w×h plane luma and whose chroma is neutral.
func packYUYV(luma []byte, w, h int) []byte {
	out := make([]byte, 2*w*h)
	for i, y := range luma[:w*h] {
		out[2*i] = y
		out[2*i+1] = 128
	}
	return out
}

// yuyvLuma extracts the Y bytes of a YUYV image with the capture package's own
// code, so the benchmark pays what the agent pays per frame before Step.
func yuyvLuma(dst, src []byte, w, h, stride int) {
	f := capture.Frame{Width: w, Height: h, Format: capture.FormatYUYV, Data: src, Stride: stride, Luma: dst}
	f.FillLuma()
}

func TestYUYVLumaRoundTrip(t *testing.T) {
	const w, h = 64, 48
	luma := newScene(w, h, 7, 2.5).frame(nil, 0)
	got := make([]byte, w*h)
	yuyvLuma(got, packYUYV(luma, w, h), w, h, 2*w)
	for i := range luma {
		if got[i] != luma[i] {
			t.Fatalf("pixel %d: luma %d after the YUYV round trip, want %d", i, got[i], luma[i])
		}
	}
}

// BenchmarkStep measures the detector's whole per-frame work on YUYV input
// (the luma extraction the capture package does, then Step) at 640x480 and
// 1280x720, each next to a plain copy of the same YUYV bytes: the ratio of
// the two ns/op says how many memmoves of the frame a detector step costs.
// The frames are synthetic (an object crossing a textured, noisy scene), so
// the labelling path runs.
func BenchmarkStep(b *testing.B) {
	for _, sz := range []struct{ w, h int }{{640, 480}, {1280, 720}} {
		w, h := sz.w, sz.h
		lumas := benchFrames(w, h, 16)
		frames := make([][]byte, len(lumas))
		for i, l := range lumas {
			frames[i] = packYUYV(l, w, h)
		}
		quiet := packYUYV(newScene(w, h, 42, 2.5).frame(nil, 0), w, h)

		b.Run(fmt.Sprintf("%dx%d-yuyv", w, h), func(b *testing.B) {
			d := newTestDetector(b, DefaultConfig())
			luma := make([]byte, w*h)
			for range warmFrames {
				yuyvLuma(luma, quiet, w, h, 2*w)
				d.Step(luma, w, h)
			}
			motion := 0
			b.ReportAllocs()
			b.SetBytes(int64(2 * w * h))
			i := 0
			for b.Loop() {
				yuyvLuma(luma, frames[i%len(frames)], w, h, 2*w)
				if d.Step(luma, w, h).Motion {
					motion++
				}
				i++
			}
			if motion == 0 {
				b.Fatal("no motion in the measured frames: the labelling path was not measured")
			}
			b.ReportMetric(float64(motion)/float64(i), "motion/frame")
		})
		b.Run(fmt.Sprintf("%dx%d-memmove", w, h), func(b *testing.B) {
			dst := make([]byte, 2*w*h)
			b.ReportAllocs()
			b.SetBytes(int64(2 * w * h))
			i := 0
			for b.Loop() {
				copy(dst, frames[i%len(frames)])
				i++
			}
		})
	}
}

func BenchmarkLifecycleObserve(b *testing.B) {
	l := NewLifecycle(DefaultConfig())
	r := Result{Motion: true, AreaPPM: 1000, Box: image.Rect(1, 1, 9, 9)}
	t0 := testTime
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Observe(t0.Add(ms(100*i)), r)
		i++
	}
}
