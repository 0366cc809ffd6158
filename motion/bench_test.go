package motion

import (
	"image"
	"testing"
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
