package motion

import (
	"image"
	"testing"
	"time"
)

var testTime = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func moving(area uint32, box image.Rectangle, edge bool) Result {
	return Result{Motion: true, AreaPPM: area, Box: box, TouchesEdge: edge}
}

var someBox = image.Rect(10, 10, 50, 50)

func lifecycleConfig() Config {
	c := DefaultConfig()
	c.MinMotionFrames = 3
	c.EventGap = 2 * time.Second
	c.PostRoll = 500 * time.Millisecond
	c.MaxLength = 10 * time.Second
	return c
}

func TestLifecycleStart(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5} {
		c := lifecycleConfig()
		c.MinMotionFrames = n
		l := NewLifecycle(c)
		at := func(i int) time.Time { return testTime.Add(ms(100 * i)) }
		// A run one frame short, broken by a quiet, a global and a
		// warming frame: no start.
		i := 0
		for _, breaker := range []Result{{}, {Global: true}, {Warming: true}} {
			for range n - 1 {
				if d := l.Observe(at(i), moving(1000, someBox, false)); d != (Decision{}) {
					t.Fatalf("n=%d frame %d: %+v before the run is complete", n, i, d)
				}
				i++
			}
			if d := l.Observe(at(i), breaker); d != (Decision{}) {
				t.Fatalf("n=%d frame %d: %+v", n, i, d)
			}
			i++
		}
		// Now n in a row: start at exactly the n-th.
		for k := range n {
			d := l.Observe(at(i), moving(uint32(1000+k), someBox, false))
			if k < n-1 && d != (Decision{}) {
				t.Fatalf("n=%d run frame %d: %+v", n, k, d)
			}
			if k == n-1 {
				if !d.Start || !d.Best || d.End {
					t.Fatalf("n=%d trigger frame: %+v, want Start and Best", n, d)
				}
				want := Summary{Start: at(i), End: at(i), Trigger: at(i), MotionFrames: n, PeakAreaPPM: uint32(1000 + n - 1), Box: someBox}
				if d.Summary != want {
					t.Fatalf("n=%d start summary %+v, want %+v", n, d.Summary, want)
				}
			}
			i++
		}
		// More motion: no second start.
		if d := l.Observe(at(i), moving(10, someBox, false)); d.Start {
			t.Fatalf("n=%d: second start during an open event", n)
		}
	}
}

func TestLifecycleGapEnd(t *testing.T) {
	c := lifecycleConfig()
	l := NewLifecycle(c)
	at := func(i int) time.Time { return testTime.Add(ms(100 * i)) }
	var i int
	peak := uint32(0)
	for i = 0; i < 20; i++ {
		area := uint32(500 + 37*((i*7)%11))
		peak = max(peak, area)
		d := l.Observe(at(i), moving(area, someBox, false))
		if d.End {
			t.Fatalf("frame %d: end during motion", i)
		}
	}
	lastMotion := at(i - 1)
	// Quiet: the end comes at the first frame EventGap after the last
	// motion frame, not before.
	for ; ; i++ {
		d := l.Observe(at(i), Result{})
		gap := at(i).Sub(lastMotion)
		if gap < c.EventGap {
			if d != (Decision{}) {
				t.Fatalf("quiet %v after motion: %+v", gap, d)
			}
			continue
		}
		if !d.End || d.Start || d.Best {
			t.Fatalf("quiet %v after motion: %+v, want End", gap, d)
		}
		want := Summary{Start: at(2), End: lastMotion.Add(c.PostRoll), Trigger: at(2), MotionFrames: 20, PeakAreaPPM: peak, Box: someBox, Reason: ReasonGap}
		if d.Summary != want {
			t.Fatalf("summary %+v\nwant %+v", d.Summary, want)
		}
		break
	}
	// Closed: quiet frames do nothing, and a new event needs a new run.
	if d := l.Observe(at(i+1), Result{}); d != (Decision{}) {
		t.Fatalf("after the end: %+v", d)
	}
	if d := l.Flush(at(i + 2)); d != (Decision{}) {
		t.Fatalf("Flush without an event: %+v", d)
	}
}

// TestLifecyclePostRollCapped: the end never lies beyond the deciding frame.
func TestLifecyclePostRollCapped(t *testing.T) {
	c := lifecycleConfig()
	c.EventGap = time.Second
	c.PostRoll = 5 * time.Second
	l := NewLifecycle(c)
	for i := range 3 {
		l.Observe(testTime.Add(ms(100*i)), moving(100, someBox, false))
	}
	// Frames stall; the next (quiet) one arrives 1.5 s after the motion.
	decide := testTime.Add(ms(200 + 1500))
	d := l.Observe(decide, Result{})
	if !d.End || !d.Summary.End.Equal(decide) {
		t.Fatalf("%+v, want End at the deciding frame %v", d, decide)
	}
}

func TestLifecycleMaxLength(t *testing.T) {
	c := lifecycleConfig()
	l := NewLifecycle(c)
	at := func(i int) time.Time { return testTime.Add(ms(100 * i)) }
	type ev struct{ start, end int }
	var evs []ev
	var sums []Summary
	open := -1
	for i := range 260 { // 26 s of continuous motion
		d := l.Observe(at(i), moving(1000, someBox, false))
		if d.End {
			evs = append(evs, ev{open, i})
			sums = append(sums, d.Summary)
			open = -1
			if d.Start || d.Best {
				t.Fatalf("frame %d: End with Start or Best: %+v", i, d)
			}
		}
		if d.Start {
			if open >= 0 {
				t.Fatalf("frame %d: start while open", i)
			}
			open = i
		}
	}
	// Start at 2 (3rd frame); max length 10 s = 100 frames: end at 102.
	// The deciding frame belongs to neither event, so the next run is
	// frames 103..105, start at 105, end at 205.
	want := []ev{{2, 102}, {105, 205}}
	if len(evs) != len(want) || evs[0] != want[0] || evs[1] != want[1] {
		t.Fatalf("events %v, want %v", evs, want)
	}
	for k, s := range sums {
		if s.Reason != ReasonMaxLength || !s.Start.Equal(at(want[k].start)) {
			t.Errorf("event %d: %+v", k, s)
		}
		// Last motion at end-1 plus PostRoll, capped at the deciding frame.
		if !s.End.Equal(at(want[k].end)) {
			t.Errorf("event %d: End %v, want %v", k, s.End, at(want[k].end))
		}
		// 3 run frames before the trigger ... frame before the end.
		if s.MotionFrames != want[k].end-want[k].start+2 {
			t.Errorf("event %d: MotionFrames %d", k, s.MotionFrames)
		}
	}
	if open != 208 { // the third event is open
		t.Fatalf("third event open at %d", open)
	}
	d := l.Flush(at(259))
	if !d.End || d.Summary.Reason != ReasonFlush || !d.Summary.Start.Equal(at(208)) || !d.Summary.End.Equal(at(259)) {
		t.Fatalf("flush: %+v", d)
	}
}

func TestLifecycleFlush(t *testing.T) {
	c := lifecycleConfig()
	l := NewLifecycle(c)
	for i := range 5 {
		l.Observe(testTime.Add(ms(100*i)), moving(700, someBox, false))
	}
	l.Observe(testTime.Add(ms(500)), Result{})
	// Flush 2 s after the last motion frame (beyond the post-roll).
	d := l.Flush(testTime.Add(ms(400 + 2000)))
	want := Summary{Start: testTime.Add(ms(200)), End: testTime.Add(ms(400)).Add(c.PostRoll), Trigger: testTime.Add(ms(200)), MotionFrames: 5, PeakAreaPPM: 700, Box: someBox, Reason: ReasonFlush}
	if !d.End || d.Summary != want {
		t.Fatalf("flush: %+v\nwant %+v", d.Summary, want)
	}
	// Flush just after the last motion frame: capped at the flush time.
	l = NewLifecycle(c)
	for i := range 3 {
		l.Observe(testTime.Add(ms(100*i)), moving(700, someBox, false))
	}
	if d := l.Flush(testTime.Add(ms(250))); !d.End || !d.Summary.End.Equal(testTime.Add(ms(250))) {
		t.Fatalf("early flush: %+v", d)
	}
	if d := l.Flush(testTime.Add(ms(300))); d.End {
		t.Fatalf("second flush ended again: %+v", d)
	}
}

func TestLifecycleBest(t *testing.T) {
	c := lifecycleConfig()
	c.MinMotionFrames = 1
	l := NewLifecycle(c)
	box := func(i int) image.Rectangle { return image.Rect(i, i, i+10, i+10) }
	steps := []struct {
		area     uint32
		edge     bool
		wantBest bool
	}{
		{500, true, true},    // the trigger is always best (score 250)
		{400, true, false},   // smaller, edge
		{300, false, true},   // inside: 300 beats the edge frame's 250
		{200, false, false},  // smaller inside
		{600, true, false},   // on the edge: 300 ties, the first one stays
		{900, true, true},    // on the edge, 450: a large cut-off object beats a small whole one
		{400, false, false},  // inside, 400 < 450
		{0, false, false},    // quiet frame
		{1000, false, true},  // larger inside
		{1000, false, false}, // equal: the first one stays
	}
	for i, s := range steps {
		r := moving(s.area, box(i), s.edge)
		if s.area == 0 {
			r = Result{}
		}
		d := l.Observe(testTime.Add(ms(100*i)), r)
		if d.Best != s.wantBest {
			t.Fatalf("step %d (%d ppm, edge %v): Best %v, want %v", i, s.area, s.edge, d.Best, s.wantBest)
		}
	}
	d := l.Flush(testTime.Add(ms(100 * len(steps))))
	if d.Summary.Box != box(8) || d.Summary.PeakAreaPPM != 1000 || d.Summary.MotionFrames != 9 {
		t.Fatalf("summary %+v, want the box of step 8, peak 1000, 9 frames", d.Summary)
	}
}

// TestLifecycleEdgeOnly: with only edge frames, the largest edge frame is
// best.
func TestLifecycleEdgeOnly(t *testing.T) {
	c := lifecycleConfig()
	c.MinMotionFrames = 2
	l := NewLifecycle(c)
	areas := []uint32{100, 200, 150, 300, 250}
	var bestAt []int
	for i, a := range areas {
		if l.Observe(testTime.Add(ms(100*i)), moving(a, image.Rect(0, 0, int(a), 10), true)).Best {
			bestAt = append(bestAt, i)
		}
	}
	if len(bestAt) != 2 || bestAt[0] != 1 || bestAt[1] != 3 {
		t.Fatalf("best at %v, want [1 3]", bestAt)
	}
}

func TestLifecycleTimeBackwards(t *testing.T) {
	c := lifecycleConfig()
	l := NewLifecycle(c)
	for i := range 5 {
		l.Observe(testTime.Add(ms(100*i)), moving(100, someBox, false))
	}
	d := l.Observe(testTime.Add(-time.Hour), moving(100, someBox, false))
	if !d.End || d.Summary.Reason != ReasonGap || !d.Summary.End.Equal(testTime.Add(ms(400))) {
		t.Fatalf("time went back: %+v, want the event ended at the last frame seen", d)
	}
	// That frame belongs to neither event; three more motion frames on
	// the new timeline start one.
	for i := 1; i <= 3; i++ {
		d = l.Observe(testTime.Add(-time.Hour+ms(100*i)), moving(100, someBox, false))
		if d.Start != (i == 3) {
			t.Fatalf("frame %d on the new timeline: %+v", i, d)
		}
	}
}
