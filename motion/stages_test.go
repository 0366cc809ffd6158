package motion

import (
	"errors"
	"image"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// leaves makes every pixel of r jump by a random ±levels each frame, like
// foliage in wind (or the digits of an on-screen clock).
func leaves(buf []byte, w int, r image.Rectangle, levels int, rng *rand.Rand) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			buf[y*w+x] = clampLevel(int(buf[y*w+x]) + rng.IntN(2*levels+1) - levels)
		}
	}
}

// shade darkens r to num/den of its level (a shadow keeps the texture).
func shade(buf []byte, w int, r image.Rectangle, num, den int) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			buf[y*w+x] = byte(int(buf[y*w+x]) * num / den)
		}
	}
}

// TestFlickerLearned: a patch that keeps changing (leaves) from the first
// frame never counts as motion, and an object crossing elsewhere does, with
// its box.
func TestFlickerLearned(t *testing.T) {
	s := newScene(160, 120, 21, 2.5)
	d := newTestDetector(t, DefaultConfig())
	rng := rand.New(rand.NewPCG(21, 21))
	tree := image.Rect(100, 10, 150, 60)
	var buf []byte
	for i := range 150 {
		buf = s.frame(buf, 0)
		leaves(buf, s.w, tree, 45, rng)
		if r := d.Step(buf, s.w, s.h); r.Motion || (i >= warmFrames && r.Warming) {
			t.Fatalf("frame %d, leaves only: %+v", i, r)
		}
	}
	var v View
	d.View(&v)
	flicker := 0
	for _, st := range v.State {
		if st == StateFlicker {
			flicker++
		}
	}
	if flicker == 0 {
		t.Error("View shows no flicker pixel in the leaves: the test does not exercise the flicker threshold")
	}
	seen := 0
	for x := 0; x < 70; x += 3 {
		obj := image.Rect(x, 70, x+24, 100)
		buf = s.frame(buf, 0, obj)
		leaves(buf, s.w, tree, 45, rng)
		r := d.Step(buf, s.w, s.h)
		if obj.Min.X >= 4 && r.Motion {
			seen++
			if !near(r.Box, obj, 4) {
				t.Fatalf("object at %v: box %v (the leaves joined it?)", obj, r.Box)
			}
		}
	}
	if seen < 15 {
		t.Fatalf("object beside the leaves seen in %d frames, want nearly all", seen)
	}
}

// TestFlickerStartsLater: leaves that start moving after warm-up may raise
// motion at first, but are learned within a bounded number of frames.
func TestFlickerStartsLater(t *testing.T) {
	s := newScene(160, 120, 22, 2.5)
	d := newTestDetector(t, DefaultConfig())
	rng := rand.New(rand.NewPCG(22, 22))
	buf := warm(t, d, s, nil)
	tree := image.Rect(20, 20, 70, 70)
	last := -1
	for i := range 300 {
		buf = s.frame(buf, 0)
		leaves(buf, s.w, tree, 45, rng)
		if d.Step(buf, s.w, s.h).Motion {
			last = i
		}
	}
	if last < 0 {
		t.Fatal("leaves starting after warm-up never raised motion: the scene does not test learning")
	}
	if last > 100 {
		t.Fatalf("leaves still raised motion at frame %d of 300, want learned within 100", last)
	}
}

// TestShadowIgnored: a shadow (the background darkened by one ratio)
// crossing the frame is not motion; an object as dark but with its own
// texture is.
func TestShadowIgnored(t *testing.T) {
	s := newScene(160, 120, 23, 2.5)
	d := newTestDetector(t, DefaultConfig())
	buf := warm(t, d, s, nil)
	for x := -40; x < 160; x += 4 {
		buf = s.frame(buf, 0)
		shade(buf, s.w, image.Rect(x, 40, x+50, 80), 3, 5)
		if r := d.Step(buf, s.w, s.h); r.Motion {
			t.Fatalf("shadow at x=%d: %+v", x, r)
		}
	}
	for range 30 {
		buf = s.frame(buf, 0)
		d.Step(buf, s.w, s.h)
	}
	seen := 0
	for x := 0; x < 110; x += 4 {
		obj := image.Rect(x, 40, x+40, 80)
		buf = s.frame(buf, 0)
		// A dark object with its own texture: stripes at 25 and 45.
		for y := obj.Min.Y; y < obj.Max.Y; y++ {
			for xx := max(0, obj.Min.X); xx < min(s.w, obj.Max.X); xx++ {
				buf[y*s.w+xx] = byte(25 + 20*((xx-obj.Min.X)/3%2))
			}
		}
		if d.Step(buf, s.w, s.h).Motion {
			seen++
		}
	}
	if seen < 20 {
		t.Fatalf("dark textured object seen in %d of 28 frames", seen)
	}

	// With Shadow 0 the same shadow is motion.
	c := DefaultConfig()
	c.Shadow = 0
	d = newTestDetector(t, c)
	buf = warm(t, d, s, buf)
	seen = 0
	for x := 0; x < 100; x += 4 {
		buf = s.frame(buf, 0)
		shade(buf, s.w, image.Rect(x, 40, x+50, 80), 3, 5)
		if d.Step(buf, s.w, s.h).Motion {
			seen++
		}
	}
	if seen == 0 {
		t.Fatal("with Shadow 0 the shadow is never motion: the first half proves nothing")
	}
}

// TestContrastChange: a contrast change of the whole frame (an IR switch,
// exposure) is global or compensated, never motion.
func TestContrastChange(t *testing.T) {
	for _, tc := range []struct {
		name       string
		num, den   int
		wantGlobal bool
	}{
		{"gain 1.5", 3, 2, true},
		{"gain 0.45", 9, 20, true},
		{"gain 1.15", 23, 20, false},
		{"gain 0.88", 22, 25, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScene(160, 120, 24, 2.5)
			d := newTestDetector(t, DefaultConfig())
			buf := warm(t, d, s, nil)
			globals := 0
			for i := range 40 {
				buf = s.frame(buf, 0)
				for j, v := range buf {
					buf[j] = clampLevel((int(v)-110)*tc.num/tc.den + 110)
				}
				r := d.Step(buf, s.w, s.h)
				if r.Motion {
					t.Fatalf("frame %d: motion %+v", i, r)
				}
				if r.Global {
					globals++
				}
			}
			if tc.wantGlobal != (globals > 0) {
				t.Fatalf("%d global frames, want global %v", globals, tc.wantGlobal)
			}
		})
	}
}

// TestZones: with a zone, motion outside it does not count and motion in it
// names it.
func TestZones(t *testing.T) {
	zones, err := ParseZones("door: 0.5,0 1,0 1,1 0.5,1; sky: 0,0 0.1,0 0.1,0.1")
	if err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.Zones = zones
	s := newScene(160, 120, 25, 2.5)
	d := newTestDetector(t, c)
	buf := warm(t, d, s, nil)
	var v View
	for x := 4; x < 50; x += 4 {
		obj := image.Rect(x, 40, x+24, 70)
		buf = s.frame(buf, 0, obj)
		if r := d.Step(buf, s.w, s.h); r.Motion || r.Zones != 0 {
			t.Fatalf("object at %v, left of the door zone: %+v", obj, r)
		}
		d.View(&v)
		if st := v.State[55*v.Width+(x+12)]; st != StateSmall {
			t.Fatalf("object at %v outside the zones: state %d, want StateSmall", obj, st)
		}
	}
	seen := 0
	for x := 90; x < 130; x += 4 {
		obj := image.Rect(x, 40, x+24, 70)
		buf = s.frame(buf, 0, obj)
		r := d.Step(buf, s.w, s.h)
		if r.Motion {
			seen++
			if r.Zones != 1 {
				t.Fatalf("object at %v: zones %b, want door only", obj, r.Zones)
			}
			if got := ZoneNames(zones, r.Zones); !slices.Equal(got, []string{"door"}) {
				t.Fatalf("ZoneNames: %v", got)
			}
		}
	}
	if seen == 0 {
		t.Fatal("object in the door zone never seen")
	}

}

// TestLifecycleZones: an event's zones are those of all its motion frames.
func TestLifecycleZones(t *testing.T) {
	c := DefaultConfig()
	c.MinMotionFrames = 2
	l := NewLifecycle(c)
	at := func(i int) time.Time { return time.Unix(int64(i), 0) }
	if d := l.Observe(at(0), Result{Motion: true, Zones: 1}); d.Start {
		t.Fatal("started after one frame")
	}
	d := l.Observe(at(1), Result{Motion: true, Zones: 4})
	if !d.Start || d.Summary.Zones != 5 {
		t.Fatalf("start: %+v, want zones 101", d)
	}
	l.Observe(at(2), Result{Motion: true, Zones: 2})
	d = l.Flush(at(3))
	if !d.End || d.Summary.Zones != 7 {
		t.Fatalf("end: %+v, want zones 111", d)
	}
}

func TestParseZones(t *testing.T) {
	z, err := ParseZones(" door : 0.5,0 1,0 1,1 ; drive-way_2: 0,0.5 0.5,0.5 0.5,1 ")
	if err != nil {
		t.Fatal(err)
	}
	if len(z) != 2 || z[0].Name != "door" || z[1].Name != "drive-way_2" || len(z[1].Area) != 3 {
		t.Fatalf("ParseZones: %+v", z)
	}
	back, err := ParseZones(FormatZones(z))
	if err != nil || FormatZones(back) != FormatZones(z) {
		t.Fatalf("round trip: %q, %v", FormatZones(back), err)
	}
	if z, err := ParseZones(""); err != nil || z != nil {
		t.Fatalf("empty: %v, %v", z, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"0,0 1,0 1,1", "no \"name:\""},
		{"Door: 0,0 1,0 1,1", "name \"Door\""},
		{"a: 0,0 1,0 1,1; a: 0,0 1,0 1,1", "used twice"},
		{"a: 0,0 1,0", "2 points"},
		{"a: 0,0 1,0 1,2", "outside the frame"},
		{"a:", "no points"},
	} {
		if _, err := ParseZones(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseZones(%q): %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
	c := DefaultConfig()
	c.Zones = make([]Zone, MaxZones+1)
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("%d zones: %v", MaxZones+1, err)
	}
}

// TestViewStates: the View marks an object's pixels as motion and a masked
// area as masked, and its blob box matches the Result.
func TestViewStates(t *testing.T) {
	c := DefaultConfig()
	mask, err := ParsePolygons("0,0 0.25,0 0.25,0.25 0,0.25")
	if err != nil {
		t.Fatal(err)
	}
	c.Mask = mask
	s := newScene(320, 240, 26, 2.5)
	d := newTestDetector(t, c)
	var v View
	d.View(&v)
	if len(v.State) != 0 || len(v.Blobs) != 0 {
		t.Fatalf("View before the first frame: %+v", v)
	}
	buf := warm(t, d, s, nil)
	obj := image.Rect(160, 120, 220, 180)
	buf = s.frame(buf, 0, obj)
	r := d.Step(buf, s.w, s.h)
	d.View(&v)
	if !r.Motion || v.Result != r || v.Scale != 2 || v.Width != 160 || v.Height != 120 {
		t.Fatalf("View: %dx%d scale %d result %+v, step %+v", v.Width, v.Height, v.Scale, v.Result, r)
	}
	if len(v.Blobs) != 1 || v.Blobs[0] != r.Box {
		t.Fatalf("View blobs %v, Result box %v", v.Blobs, r.Box)
	}
	at := func(x, y int) uint8 { return v.State[(y/v.Scale)*v.Width+x/v.Scale] }
	if st := at(190, 150); st != StateMotion {
		t.Errorf("inside the object: state %d, want StateMotion", st)
	}
	if st := at(20, 20); st != StateMasked {
		t.Errorf("inside the mask: state %d, want StateMasked", st)
	}
	if st := at(280, 40); st != StateStill {
		t.Errorf("still background: state %d, want StateStill", st)
	}
}

// TestDespeckleMatchesNaive: the majority filter (eight pixels a step on
// 64-bit targets) equals a plain 3×3 count on random masks of many widths.
func TestDespeckleMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(27, 27))
	for _, w := range []int{8, 9, 15, 16, 17, 23, 40, 161} {
		d := newTestDetector(t, DefaultConfig())
		d.sw, d.sh, d.pw = w, 9, w+2
		d.raw = make([]uint8, d.pw*(d.sh+2))
		d.mask = make([]uint8, len(d.raw))
		d.colSum = make([]uint8, d.pw)
		for y := 1; y <= d.sh; y++ {
			for x := 1; x <= w; x++ {
				d.raw[y*d.pw+x] = uint8(rng.IntN(2))
			}
		}
		kept := d.despeckle()
		want := 0
		for y := 1; y <= d.sh; y++ {
			for x := 1; x <= w; x++ {
				n := 0
				for dy := -1; dy <= 1; dy++ {
					for dx := -1; dx <= 1; dx++ {
						n += int(d.raw[(y+dy)*d.pw+x+dx])
					}
				}
				m := uint8(0)
				if n >= 5 {
					m = 1
					want++
				}
				if got := d.mask[y*d.pw+x]; got != m {
					t.Fatalf("width %d: pixel (%d,%d) = %d, want %d", w, x, y, got, m)
				}
			}
		}
		if kept != want {
			t.Fatalf("width %d: kept %d, want %d", w, kept, want)
		}
	}
}

// TestStepPlaneYUYV: analysing YUYV in place (pixel step 2, padded stride)
// gives exactly what analysing its extracted luma gives, frame by frame,
// for box sizes with and without a word path.
func TestStepPlaneYUYV(t *testing.T) {
	for _, sz := range []struct{ w, h int }{{160, 120}, {320, 240}, {328, 246}, {640, 480}, {642, 482}, {1280, 720}, {962, 541}} {
		s := newScene(sz.w, sz.h, 28, 2.5)
		a := newTestDetector(t, DefaultConfig())
		b := newTestDetector(t, DefaultConfig())
		stride := 2*sz.w + 6
		yuyv := make([]byte, stride*(sz.h-1)+2*sz.w)
		var luma []byte
		for i := range 30 {
			x := sz.w * i / 40
			luma = s.frame(luma, 0, image.Rect(x, sz.h/3, x+sz.w/6, sz.h/2))
			for y := range sz.h {
				for x := range sz.w {
					yuyv[y*stride+2*x] = luma[y*sz.w+x]
					yuyv[y*stride+2*x+1] = byte(x * 7)
				}
			}
			ra := a.Step(luma, sz.w, sz.h)
			rb := b.StepPlane(yuyv, sz.w, sz.h, stride, 2)
			if ra != rb {
				t.Fatalf("%dx%d frame %d: luma %+v, yuyv %+v", sz.w, sz.h, i, ra, rb)
			}
			if !slices.Equal(a.cur, b.cur) {
				t.Fatalf("%dx%d frame %d: analysed planes differ", sz.w, sz.h, i)
			}
		}
	}
	d := newTestDetector(t, DefaultConfig())
	for _, tc := range []struct{ n, stride, step int }{
		{2*160*120 - 2, 320, 2}, // one byte short
		{2 * 160 * 120, 200, 2}, // stride below the row
		{2 * 160 * 120, 320, 0}, // no step
		{2 * 160 * 120, 320, 5}, // step too large
	} {
		if r := d.StepPlane(make([]byte, tc.n), 160, 120, tc.stride, tc.step); !errors.Is(r.Err, ErrBadFrame) {
			t.Errorf("%d bytes, stride %d, step %d: %+v, want ErrBadFrame", tc.n, tc.stride, tc.step, r)
		}
	}
}

// TestLifecyclePreRoll: an event's start is moved back by PreRoll, but
// never before the first frame seen nor the previous event's end.
func TestLifecyclePreRoll(t *testing.T) {
	c := DefaultConfig()
	c.MinMotionFrames = 1
	c.PreRoll = 2 * time.Second
	c.EventGap = time.Second
	c.PostRoll = 0
	l := NewLifecycle(c)
	at := func(ms int) time.Time { return time.UnixMilli(int64(ms)) }
	// First frame at 1 s, motion at 2 s: start clamped to the first frame.
	l.Observe(at(1000), Result{})
	if d := l.Observe(at(2000), Result{Motion: true}); !d.Start || !d.Summary.Start.Equal(at(1000)) || !d.Summary.End.Equal(at(2000)) {
		t.Fatalf("first event: %+v, want start 1s (first frame), end 2s", d.Summary)
	}
	d := l.Observe(at(3500), Result{})
	if !d.End || !d.Summary.End.Equal(at(2000)) {
		t.Fatalf("end: %+v", d)
	}
	// Next motion at 3.8 s: pre-roll would reach 1.8 s, clamped to the last end (2 s).
	if d := l.Observe(at(3800), Result{Motion: true}); !d.Start || !d.Summary.Start.Equal(at(2000)) {
		t.Fatalf("second event: %+v, want start at the last end 2s", d.Summary)
	}
	l.Flush(at(3900))
	// Much later: the full pre-roll.
	l.Observe(at(10000), Result{})
	if d := l.Observe(at(20000), Result{Motion: true}); !d.Start || !d.Summary.Start.Equal(at(18000)) {
		t.Fatalf("third event: %+v, want start 18s", d.Summary)
	}
}

// TestLifecycleFramesMissing: frames stop for longer than the event gap (a
// camera lost and reopened) while an event is open: the event ends (at the
// last motion plus PostRoll), although the next frame has motion again, and
// a new event can start after it.
func TestLifecycleFramesMissing(t *testing.T) {
	c := DefaultConfig()
	c.MinMotionFrames = 2
	c.EventGap = 3 * time.Second
	c.PostRoll = time.Second
	l := NewLifecycle(c)
	at := func(ms int) time.Time { return time.UnixMilli(int64(ms)) }
	m := Result{Motion: true}
	l.Observe(at(0), m)
	if d := l.Observe(at(100), m); !d.Start {
		t.Fatal("no start")
	}
	l.Observe(at(200), m)
	// The camera is gone for 8 s; the first frame back has motion.
	d := l.Observe(at(8200), m)
	if !d.End || d.Summary.Reason != ReasonGap || !d.Summary.End.Equal(at(1200)) {
		t.Fatalf("first frame after the loss: %+v, want the event ended at the last motion + post-roll (1.2s)", d)
	}
	l.Observe(at(8300), m)
	if d := l.Observe(at(8400), m); !d.Start || !d.Summary.Start.Equal(at(8400)) {
		t.Fatalf("motion after the camera came back: %+v, want a new event", d)
	}
	// A short pause in frames (under the gap) keeps the event going.
	if d := l.Observe(at(10400), m); d.End || d.Start {
		t.Fatalf("2s without frames ended the event: %+v", d)
	}
}
