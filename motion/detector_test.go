package motion

import (
	"errors"
	"image"
	"math/rand/v2"
	"slices"
	"testing"
)

func newTestDetector(t testing.TB, c Config) *Detector {
	t.Helper()
	d, err := NewDetector(c)
	if err != nil {
		t.Fatalf("NewDetector: %v", err)
	}
	return d
}

// warm feeds quiet frames until the detector has left warm-up, checking
// that warm-up reports Warming and nothing else.
func warm(t *testing.T, d *Detector, s *scene, buf []byte) []byte {
	t.Helper()
	for i := range warmFrames + 2 {
		buf = s.frame(buf, 0)
		r := d.Step(buf, s.w, s.h)
		if i < warmFrames && (!r.Warming || r.Motion || r.Global) {
			t.Fatalf("warm-up frame %d: %+v, want Warming only", i, r)
		}
		if i >= warmFrames && (r.Warming || r.Motion || r.Global) {
			t.Fatalf("quiet frame %d after warm-up: %+v, want nothing", i, r)
		}
	}
	return buf
}

// near reports whether box matches want within tol pixels on every side.
func near(box, want image.Rectangle, tol int) bool {
	d := func(a, b int) bool { return a-b <= tol && b-a <= tol }
	return d(box.Min.X, want.Min.X) && d(box.Min.Y, want.Min.Y) && d(box.Max.X, want.Max.X) && d(box.Max.Y, want.Max.Y)
}

func TestObjectEntering(t *testing.T) {
	for _, tc := range []struct {
		name       string
		w, h       int
		size, step int
		tol        int // box tolerance in input pixels (a few analysis pixels)
	}{
		{"160x120 native", 160, 120, 20, 3, 2},
		{"640x480 box 4", 640, 480, 80, 12, 8},
		{"300x200 box 2", 300, 200, 36, 5, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScene(tc.w, tc.h, 1, 2.5)
			d := newTestDetector(t, DefaultConfig())
			buf := warm(t, d, s, nil)
			y := tc.h / 3
			inside := 0
			for x := -tc.size + tc.step; x < tc.w-tc.size-tc.step; x += tc.step {
				obj := image.Rect(x, y, x+tc.size, y+tc.size)
				buf = s.frame(buf, 0, obj)
				r := d.Step(buf, tc.w, tc.h)
				vis := obj.Intersect(image.Rect(0, 0, tc.w, tc.h))
				if vis.Dx() < tc.size/3 {
					continue // a sliver may or may not be enough
				}
				if !r.Motion || r.Global || r.Warming {
					t.Fatalf("object at %v: %+v, want motion", obj, r)
				}
				if !near(r.Box, vis, tc.tol) {
					t.Fatalf("object at %v (visible %v): box %v", obj, vis, r.Box)
				}
				if r.TouchesEdge != (vis.Min.X == 0) {
					t.Fatalf("object at %v: TouchesEdge %v", obj, r.TouchesEdge)
				}
				// The area is the blob in the analysed frame: within a few
				// percent of the visible object (corners may be lost).
				want := float64(vis.Dx()*vis.Dy()) / float64(tc.w*tc.h) * 1e6
				if got := float64(r.AreaPPM); got < 0.85*want || got > 1.1*want {
					t.Fatalf("object at %v: AreaPPM %d, want about %.0f", obj, r.AreaPPM, want)
				}
				if vis == obj {
					inside++
				}
			}
			if inside < 5 {
				t.Fatalf("only %d frames with the object fully inside; the test is too short", inside)
			}
		})
	}
}

// TestNoiseOnly: sensor noise alone is never motion, and the noise estimate
// follows the noise when it changes after warm-up (a camera switching to
// night gain).
func TestNoiseOnly(t *testing.T) {
	for _, tc := range []struct {
		sigma        float64
		frames       int
		wantAdaptive bool // the threshold must rise above NoiseFloor
	}{
		{2, 400, false},
		{4, 300, false},
		{7, 300, true},
	} {
		s := newScene(160, 120, 2, 2)
		c := DefaultConfig()
		d := newTestDetector(t, c)
		buf := warm(t, d, s, nil)
		s.sigma = tc.sigma
		for i := range tc.frames {
			buf = s.frame(buf, 0)
			if r := d.Step(buf, s.w, s.h); r.Motion || r.Global {
				t.Fatalf("sigma %v frame %d: %+v, want no motion", tc.sigma, i, r)
			}
		}
		st := d.Stats()
		// Mean |N(0,σ)| = 0.8σ; the background's own noise adds a little.
		if st.Noise < 0.7*tc.sigma || st.Noise > 1.0*tc.sigma {
			t.Errorf("sigma %v: noise estimate %.2f, want about %.2f", tc.sigma, st.Noise, 0.8*tc.sigma)
		}
		if tc.wantAdaptive && st.Threshold <= float64(c.NoiseFloor) {
			t.Errorf("sigma %v: threshold %.2f did not rise above the floor %d", tc.sigma, st.Threshold, c.NoiseFloor)
		}
		if st.Frames != uint64(warmFrames+2+tc.frames) || st.Globals != 0 {
			t.Errorf("sigma %v: stats %+v", tc.sigma, st)
		}
	}
}

func TestBrightnessStep(t *testing.T) {
	for _, step := range []int{40, -40, 25} {
		s := newScene(160, 120, 3, 2.5)
		d := newTestDetector(t, DefaultConfig())
		buf := warm(t, d, s, nil)
		globals := 0
		for i := range 60 {
			buf = s.frame(buf, step)
			r := d.Step(buf, s.w, s.h)
			if r.Motion {
				t.Fatalf("step %+d, frame %d after it: motion %+v", step, i, r)
			}
			if i == 0 && !r.Global {
				t.Fatalf("step %+d: the step frame is not Global: %+v", step, r)
			}
			if r.Global {
				globals++
			}
		}
		if globals > 1+settleFrames {
			t.Errorf("step %+d: %d global frames, want at most %d", step, globals, 1+settleFrames)
		}
	}
}

// TestRollingShutterStep: the light changes while a frame is read out, so
// one frame is bright only at the top; the frames after it must not show
// the bottom as motion.
func TestRollingShutterStep(t *testing.T) {
	s := newScene(160, 120, 17, 2.5)
	d := newTestDetector(t, DefaultConfig())
	buf := warm(t, d, s, nil)
	buf = s.frame(buf, 0)
	for i := range buf[:s.w*s.h*7/10] {
		buf[i] += 40 // the texture is at most 170 + noise: no overflow
	}
	if r := d.Step(buf, s.w, s.h); !r.Global || r.Motion {
		t.Fatalf("half-switched frame: %+v, want Global", r)
	}
	for i := range 30 {
		buf = s.frame(buf, 40)
		if r := d.Step(buf, s.w, s.h); r.Motion {
			t.Fatalf("frame %d after the switch: motion %+v", i, r)
		}
	}
}

// TestExposureDrift: a slow brightness ramp (auto-exposure) must not look
// like motion.
func TestExposureDrift(t *testing.T) {
	s := newScene(160, 120, 4, 2.5)
	d := newTestDetector(t, DefaultConfig())
	buf := warm(t, d, s, nil)
	for i := range 120 {
		bright := min(i, 60) / 2 // +0.5 level per frame up to +30
		buf = s.frame(buf, bright)
		if r := d.Step(buf, s.w, s.h); r.Motion {
			t.Fatalf("ramp frame %d (+%d): motion %+v", i, bright, r)
		}
	}
}

func TestStepThenObject(t *testing.T) {
	s := newScene(160, 120, 5, 2.5)
	d := newTestDetector(t, DefaultConfig())
	buf := warm(t, d, s, nil)
	for i := range 10 {
		buf = s.frame(buf, 40)
		if r := d.Step(buf, s.w, s.h); r.Motion {
			t.Fatalf("frame %d after the step: motion", i)
		}
	}
	for x := 30; x < 120; x += 4 {
		obj := image.Rect(x, 60, x+20, 80)
		buf = s.frame(buf, 40, obj)
		r := d.Step(buf, s.w, s.h)
		if !r.Motion || r.Global || !near(r.Box, obj, 2) {
			t.Fatalf("object at %v after the step: %+v", obj, r)
		}
	}
}

// TestLightSwitchWithTexture: a change that is not an offset (the scene's
// contrast is inverted about its median, as textures change under IR
// light, so the median difference stays near 0) is global, not motion, and
// the new scene is quiet afterwards.
func TestLightSwitchWithTexture(t *testing.T) {
	s := newScene(160, 120, 6, 2.5)
	d := newTestDetector(t, DefaultConfig())
	buf := warm(t, d, s, nil)
	sorted := slices.Clone(s.bg)
	slices.Sort(sorted)
	med := int(sorted[len(sorted)/2])
	for i := range 20 {
		buf = s.frame(buf, 0)
		for j, v := range buf {
			buf[j] = clampLevel(2*med - int(v))
		}
		r := d.Step(buf, s.w, s.h)
		if r.Motion {
			t.Fatalf("frame %d after the switch: motion %+v", i, r)
		}
		if i == 0 && !r.Global {
			t.Fatalf("switch frame: %+v, want Global", r)
		}
		if i > settleFrames && r.Global {
			t.Fatalf("frame %d after the switch: still Global", i)
		}
	}
}

func TestStoppedObjectAbsorbed(t *testing.T) {
	c := DefaultConfig()
	c.AbsorbFrames = 30
	s := newScene(160, 120, 8, 2.5)
	d := newTestDetector(t, c)
	buf := warm(t, d, s, nil)
	var obj image.Rectangle
	for x := 20; x <= 60; x += 4 {
		obj = image.Rect(x, 40, x+24, 64)
		buf = s.frame(buf, 0, obj)
		if r := d.Step(buf, s.w, s.h); !r.Motion {
			t.Fatalf("moving object at %v: no motion", obj)
		}
	}
	// Parked: still reported as motion at first (held out of the
	// background, not blended in at BackgroundRate)...
	stillMotion, quietFrom := 0, -1
	for i := range 3 * c.AbsorbFrames {
		buf = s.frame(buf, 0, obj)
		r := d.Step(buf, s.w, s.h)
		if r.Motion {
			stillMotion++
			if quietFrom >= 0 {
				t.Fatalf("parked frame %d: motion again after quiet from %d", i, quietFrom)
			}
		} else if quietFrom < 0 {
			quietFrom = i
		}
	}
	if stillMotion < c.AbsorbFrames/2 {
		t.Errorf("parked object reported for %d frames, want most of AbsorbFrames=%d", stillMotion, c.AbsorbFrames)
	}
	if quietFrom < 0 || quietFrom > c.AbsorbFrames+5 {
		t.Errorf("parked object absorbed from frame %d, want by about AbsorbFrames=%d", quietFrom, c.AbsorbFrames)
	}
}

// TestPassingObjectDoesNotBleed: after an object crosses, the background
// is unchanged, so the same object crossing again is seen as fully.
func TestPassingObjectDoesNotBleed(t *testing.T) {
	s := newScene(160, 120, 9, 2.5)
	d := newTestDetector(t, DefaultConfig())
	buf := warm(t, d, s, nil)
	for range 2 {
		for x := 10; x < 130; x += 3 {
			obj := image.Rect(x, 50, x+20, 70)
			buf = s.frame(buf, 0, obj)
			if r := d.Step(buf, s.w, s.h); !r.Motion || !near(r.Box, obj, 2) {
				t.Fatalf("object at %v: %+v", obj, r)
			}
		}
		for i := range 10 {
			buf = s.frame(buf, 0)
			if r := d.Step(buf, s.w, s.h); r.Motion {
				t.Fatalf("quiet frame %d after the crossing: motion %+v (a ghost)", i, r)
			}
		}
	}
}

func TestSmallObjectIgnored(t *testing.T) {
	s := newScene(160, 120, 10, 2.5)
	c := DefaultConfig() // MinArea 0.003 of 19200 px = 58 px
	d := newTestDetector(t, c)
	buf := warm(t, d, s, nil)
	for x := 20; x < 120; x += 2 {
		obj := image.Rect(x, 50, x+6, 56) // 36 px
		buf = s.frame(buf, 0, obj)
		if r := d.Step(buf, s.w, s.h); r.Motion {
			t.Fatalf("6x6 object at %v: motion %+v, below MinArea", obj, r)
		}
	}
}

func TestTwoObjectsBox(t *testing.T) {
	s := newScene(160, 120, 11, 2.5)
	d := newTestDetector(t, DefaultConfig())
	buf := warm(t, d, s, nil)
	for i := range 10 {
		a := image.Rect(20+2*i, 20, 40+2*i, 40)
		b := image.Rect(100-2*i, 70, 130-2*i, 100)
		buf = s.frame(buf, 0, a, b)
		r := d.Step(buf, s.w, s.h)
		if !r.Motion || !near(r.Box, a.Union(b), 2) {
			t.Fatalf("objects %v %v: %+v", a, b, r)
		}
		// The larger blob (30x30) sets the area.
		want := 900.0 / 19200 * 1e6
		if got := float64(r.AreaPPM); got < 0.9*want || got > 1.05*want {
			t.Fatalf("AreaPPM %d, want about %.0f (the largest blob)", r.AreaPPM, want)
		}
	}
}

func TestBadFrames(t *testing.T) {
	s := newScene(160, 120, 12, 2.5)
	d := newTestDetector(t, DefaultConfig())
	buf := warm(t, d, s, nil)
	before := d.Stats()
	for _, tc := range []struct {
		name string
		luma []byte
		w, h int
	}{
		{"short buffer", buf[:100], 160, 120},
		{"nil", nil, 160, 120},
		{"zero size", buf, 0, 0},
		{"negative", buf, -160, 120},
		{"tiny", buf, 4, 4},
		{"huge", buf, 1 << 20, 1 << 20},
		{"too flat to analyse", buf, 4000, 8},
	} {
		r := d.Step(tc.luma, tc.w, tc.h)
		if !errors.Is(r.Err, ErrBadFrame) || r.Motion || r.Warming {
			t.Errorf("%s: %+v, want ErrBadFrame only", tc.name, r)
		}
	}
	st := d.Stats()
	if st.BadFrames != before.BadFrames+7 || st.Frames != before.Frames {
		t.Errorf("stats %+v after 7 bad frames (before %+v)", st, before)
	}
	// The model was left alone: no new warm-up, detection still works.
	buf = s.frame(buf, 0)
	if r := d.Step(buf, 160, 120); r.Warming || r.Motion || r.Err != nil {
		t.Errorf("quiet frame after bad frames: %+v", r)
	}
	obj := image.Rect(50, 50, 70, 70)
	buf = s.frame(buf, 0, obj)
	if r := d.Step(buf, 160, 120); !r.Motion || !near(r.Box, obj, 2) {
		t.Errorf("object after bad frames: %+v", r)
	}
}

func TestZeroDetector(t *testing.T) {
	var d Detector
	if r := d.Step(make([]byte, 160*120), 160, 120); r.Err == nil || r.Motion {
		t.Fatalf("zero Detector: %+v, want an error", r)
	}
}

func TestSizeChangeRestarts(t *testing.T) {
	d := newTestDetector(t, DefaultConfig())
	a := newScene(160, 120, 13, 2.5)
	warm(t, d, a, nil)
	// A new size warms up again (warm checks every frame).
	b := newScene(320, 240, 13, 2.5)
	buf := warm(t, d, b, nil)
	obj := image.Rect(100, 100, 140, 140)
	buf = b.frame(buf, 0, obj)
	if r := d.Step(buf, 320, 240); !r.Motion || !near(r.Box, obj, 4) {
		t.Fatalf("object after the size change: %+v", r)
	}
}

// TestDownscale compares the box filter with a direct computation for
// factors with and without a fast path, including input sizes that are not
// a multiple of the factor.
func TestDownscale(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 14))
	for _, tc := range []struct{ w, h, aw int }{
		{160, 120, 160}, {321, 241, 160}, {643, 483, 160}, {480, 270, 160}, {800, 600, 160}, {1283, 725, 160},
	} {
		c := DefaultConfig()
		c.AnalysisWidth = tc.aw
		d := newTestDetector(t, c)
		luma := make([]byte, tc.w*tc.h)
		for i := range luma {
			luma[i] = byte(rng.UintN(256))
		}
		d.Step(luma, tc.w, tc.h)
		f := d.f
		if want := max(1, (tc.w+tc.aw/2)/tc.aw); f != want || d.sw != tc.w/f || d.sh != tc.h/f {
			t.Fatalf("%dx%d: factor %d, analysed %dx%d", tc.w, tc.h, f, d.sw, d.sh)
		}
		for y := range d.sh {
			for x := range d.sw {
				sum := 0
				for k := range f {
					for j := range f {
						sum += int(luma[(y*f+k)*tc.w+x*f+j])
					}
				}
				want := float64(sum) * 256 / float64(f*f)
				if got := float64(d.cur[y*d.sw+x]); got < want-0.51 || got > want+0.51 {
					t.Fatalf("%dx%d factor %d: pixel (%d,%d) = %v, want %.2f", tc.w, tc.h, f, x, y, got, want)
				}
			}
		}
	}
}

// TestLabelling compares the union-find labelling with a flood fill on
// random masks of several densities.
func TestLabelling(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 15))
	c := DefaultConfig()
	c.MinArea = 0.002
	for trial := range 60 {
		d := newTestDetector(t, c)
		w, h := 40+rng.IntN(60), 30+rng.IntN(50)
		d.resize(w, h) // AnalysisWidth 160: factor 1
		p := []float64{0.05, 0.3, 0.45, 0.6}[trial%4]
		for y := 1; y <= d.sh; y++ {
			for x := 1; x <= d.sw; x++ {
				if rng.Float64() < p {
					d.mask[y*d.pw+x] = 1
				}
			}
		}
		got := d.findBlobs(d.threshold()) // a flat frame and background: no blob moves or is a ghost
		want := floodFill(d)
		if got.Motion != want.Motion || got.AreaPPM != want.AreaPPM || got.Box != want.Box || got.TouchesEdge != want.TouchesEdge {
			t.Fatalf("trial %d (%dx%d, p %.2f): labelling %+v, flood fill %+v", trial, w, h, p, got, want)
		}
	}
}

// floodFill is the reference: 8-connected blobs of d.mask by breadth-first
// search, reported like findBlobs.
func floodFill(d *Detector) Result {
	seen := make([]bool, len(d.mask))
	var res Result
	var box blob
	for start := range d.mask {
		if d.mask[start] == 0 || seen[start] {
			continue
		}
		b := blob{x0: 1 << 30, y0: 1 << 30}
		queue := []int{start}
		seen[start] = true
		for len(queue) > 0 {
			p := queue[0]
			queue = queue[1:]
			x, y := int32(p%d.pw), int32(p/d.pw)
			b.area++
			b.x0, b.y0, b.x1, b.y1 = min(b.x0, x), min(b.y0, y), max(b.x1, x), max(b.y1, y)
			for _, q := range []int{p - d.pw - 1, p - d.pw, p - d.pw + 1, p - 1, p + 1, p + d.pw - 1, p + d.pw, p + d.pw + 1} {
				if d.mask[q] != 0 && !seen[q] {
					seen[q] = true
					queue = append(queue, q)
				}
			}
		}
		if b.area < d.minPix {
			continue
		}
		if !res.Motion {
			box = b
		}
		box.x0, box.y0, box.x1, box.y1 = min(box.x0, b.x0), min(box.y0, b.y0), max(box.x1, b.x1), max(box.y1, b.y1)
		res.Motion = true
		res.AreaPPM = max(res.AreaPPM, uint32(int64(b.area)*1_000_000/int64(d.sw*d.sh)))
	}
	if res.Motion {
		res.Box, res.TouchesEdge = d.inputBox(box)
	}
	return res
}

// TestDetectorWithLifecycle runs a scripted scene through both halves: one
// event for one crossing, none for the noise and the brightness step.
func TestDetectorWithLifecycle(t *testing.T) {
	c := DefaultConfig()
	s := newScene(160, 120, 16, 2.5)
	d := newTestDetector(t, c)
	l := NewLifecycle(c)
	t0 := testTime
	frame := func(i int) (bright int, obj image.Rectangle) {
		switch {
		case i >= 30 && i < 70: // 4 s crossing at 10 fps
			x := -20 + (i-30)*5
			return 0, image.Rect(x, 40, x+24, 64)
		case i >= 110 && i < 140:
			return 40, image.Rectangle{}
		}
		return 0, image.Rectangle{}
	}
	var starts, ends []int
	lastVisible := -1
	var buf []byte
	var last Decision
	for i := range 200 {
		bright, obj := frame(i)
		if obj.Intersect(image.Rect(0, 0, s.w, s.h)).Dx() >= 4 {
			lastVisible = i
		}
		buf = s.frame(buf, bright, obj)
		dec := l.Observe(t0.Add(ms(100*i)), d.Step(buf, s.w, s.h))
		if dec.Start {
			starts = append(starts, i)
		}
		if dec.End {
			ends = append(ends, i)
			last = dec
		}
	}
	if len(starts) != 1 || len(ends) != 1 {
		t.Fatalf("starts at %v, ends at %v; want one event", starts, ends)
	}
	// Motion from frame 30 (a sliver) or 31; start 2 frames later.
	if starts[0] < 32 || starts[0] > 34 {
		t.Errorf("event started at frame %d, want 32..34", starts[0])
	}
	// The gap (3 s = 30 frames) ends the event after the object has left.
	if ends[0] < lastVisible+29 || ends[0] > lastVisible+31 {
		t.Errorf("event ended at frame %d, want about %d", ends[0], lastVisible+30)
	}
	b := last.Summary.Box
	if last.Summary.Reason != ReasonGap || b.Empty() || b.Min.X == 0 || b.Max.X == s.w {
		t.Errorf("summary %+v, want a gap end with an inside box", last.Summary)
	}
}
