package motion

import (
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"

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

// BenchmarkStep measures the detector's whole per-frame work on YUYV input
// as the agent does it (the frame's capture.Frame.LumaPlane, the YUYV data
// itself read in place, then StepPlane) at 640x480 and 1280x720, each next to a plain copy of the same YUYV bytes: the ratio of
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
			// What the agent does per frame.
			d := newTestDetector(b, DefaultConfig())
			step := func(data []byte) Result {
				f := capture.Frame{Width: w, Height: h, Format: capture.FormatYUYV, Data: data, Stride: 2 * w}
				pix, stride, step := f.LumaPlane()
				return d.StepPlane(pix, w, h, stride, step)
			}
			for range warmFrames {
				step(quiet)
			}
			motion := 0
			b.ReportAllocs()
			b.SetBytes(int64(2 * w * h))
			i := 0
			for b.Loop() {
				if step(frames[i%len(frames)]).Motion {
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
		b.Run(fmt.Sprintf("%dx%d-ratio", w, h), func(b *testing.B) {
			// The step and a memmove of the same frames interleaved, each
			// timed: on a machine shared with other jobs both see the
			// same load, so their ratio (x-memmove) holds where the two
			// ns/op above, measured apart, may not.
			d := newTestDetector(b, DefaultConfig())
			step := func(data []byte) {
				f := capture.Frame{Width: w, Height: h, Format: capture.FormatYUYV, Data: data, Stride: 2 * w}
				pix, stride, step := f.LumaPlane()
				d.StepPlane(pix, w, h, stride, step)
			}
			for range warmFrames {
				step(quiet)
			}
			dst := make([]byte, 2*w*h)
			var inStep, inCopy time.Duration
			i := 0
			for b.Loop() {
				data := frames[i%len(frames)]
				t0 := time.Now()
				copy(dst, data)
				t1 := time.Now()
				step(data)
				t2 := time.Now()
				inCopy += t1.Sub(t0)
				inStep += t2.Sub(t1)
				i++
			}
			b.ReportMetric(float64(inStep)/float64(inCopy), "x-memmove")
			b.ReportMetric(float64(inStep.Nanoseconds())/float64(i), "step-ns/frame")
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

// BenchmarkStepFrames times the agent's per-frame work (StepPlane on YUYV
// in place) on real footage: the 640x480 grey PNG frames in
// $KEYFRAME_BENCH_FRAMES, as `scripts/peers/run.sh --bench-mog2 VIDEO
// --dump-frames DIR` writes them from the video MOG2 is timed on (make
// bench-mog2 does both), next to a memmove of the same YUYV bytes.
func BenchmarkStepFrames(b *testing.B) {
	dir := os.Getenv("KEYFRAME_BENCH_FRAMES")
	if dir == "" {
		b.Skip("KEYFRAME_BENCH_FRAMES not set: make bench-mog2 writes the frames and sets it")
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.png"))
	if err != nil || len(names) == 0 {
		b.Fatalf("no PNG frames in %s (%v)", dir, err)
	}
	var frames [][]byte
	w, h := 0, 0
	for _, n := range names {
		f, err := os.Open(n)
		if err != nil {
			b.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			b.Fatalf("%s: %v", n, err)
		}
		g, ok := img.(*image.Gray)
		if !ok {
			b.Fatalf("%s: %T, want a grey PNG", n, img)
		}
		if w == 0 {
			w, h = g.Rect.Dx(), g.Rect.Dy()
		}
		if g.Rect.Dx() != w || g.Rect.Dy() != h {
			b.Fatalf("%s: %v, want %dx%d like the first frame", n, g.Rect, w, h)
		}
		luma := make([]byte, 0, w*h)
		for y := range h {
			luma = append(luma, g.Pix[y*g.Stride:][:w]...)
		}
		frames = append(frames, packYUYV(luma, w, h))
	}
	b.Run(fmt.Sprintf("%dx%d-yuyv", w, h), func(b *testing.B) {
		d := newTestDetector(b, DefaultConfig())
		step := func(data []byte) {
			f := capture.Frame{Width: w, Height: h, Format: capture.FormatYUYV, Data: data, Stride: 2 * w}
			pix, stride, step := f.LumaPlane()
			d.StepPlane(pix, w, h, stride, step)
		}
		step(frames[0]) // sizes the buffers
		b.ReportAllocs()
		b.SetBytes(int64(2 * w * h))
		i := 0
		for b.Loop() {
			step(frames[i%len(frames)])
			i++
		}
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
