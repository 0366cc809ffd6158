package motion

import (
	"image"
	"testing"
	"time"
)

// sitStill plays a person (a textured box) walking in, sitting still for
// sit frames while a hand (a small part of the box) moves every handEvery
// frames, then walking out of the frame. It returns the Results of every
// frame and the index of the first frame without the person.
func sitStill(t *testing.T, c Config, sit, handEvery int) ([]Result, int) {
	t.Helper()
	s := newScene(160, 120, 21, 2.5)
	d := newTestDetector(t, c)
	buf := warm(t, d, s, nil)
	var out []Result
	seat := image.Rect(60, 40, 84, 76)
	for x := 0; x <= seat.Min.X; x += 4 { // walks in from the left
		buf = s.frame(buf, 0, image.Rect(x, 40, x+24, 76))
		out = append(out, d.Step(buf, s.w, s.h))
	}
	for i := range sit {
		hand := image.Rect(84, 50, 90, 56)
		if handEvery > 0 && (i/handEvery)%2 == 1 {
			hand = hand.Add(image.Pt(0, 8))
		}
		buf = s.frame(buf, 0, seat, hand)
		out = append(out, d.Step(buf, s.w, s.h))
	}
	for x := seat.Min.X; x < s.w; x += 6 { // walks out to the right
		buf = s.frame(buf, 0, image.Rect(x, 40, x+24, 76))
		out = append(out, d.Step(buf, s.w, s.h))
	}
	gone := len(out)
	for range 50 {
		buf = s.frame(buf, 0)
		out = append(out, d.Step(buf, s.w, s.h))
	}
	return out, gone
}

// TestStillPersonHeld: a person who sits for 30 s (300 frames at 10 fps,
// three times AbsorbFrames) moving a hand now and then stays motion the
// whole time, makes one event, and leaves no ghost: the event ends within
// EventGap + PostRoll + 1 s of the person leaving the frame.
func TestStillPersonHeld(t *testing.T) {
	c := DefaultConfig()
	res, gone := sitStill(t, c, 300, 40)
	for i, r := range res[:gone] {
		if !r.Motion {
			t.Fatalf("frame %d with the person in view: no motion %+v", i, r)
		}
	}
	for i, r := range res[gone+2:] {
		if r.Motion {
			t.Fatalf("frame %d after the person left: motion %+v (a ghost)", gone+2+i, r)
		}
	}
	l := NewLifecycle(c)
	at := func(i int) time.Time { return testTime.Add(time.Duration(i) * 100 * time.Millisecond) }
	starts, ended := 0, -1
	for i, r := range res {
		dec := l.Observe(at(i), r)
		if dec.Start {
			starts++
		}
		if dec.End && ended < 0 {
			ended = i
		}
	}
	if starts != 1 {
		t.Errorf("%d events, want one while the person is in view", starts)
	}
	bound := c.EventGap + c.PostRoll + time.Second
	if ended < 0 || at(ended).Sub(at(gone)) > bound {
		t.Errorf("event ended at frame %d, the person left at %d: want within %v", ended, gone, bound)
	}

	// Without the hand moving the person is a still object: absorbed
	// after AbsorbFrames, as a parked car is.
	res, gone = sitStill(t, c, 300, 0)
	quiet := 0
	for _, r := range res[:gone] {
		if !r.Motion {
			quiet++
		}
	}
	if quiet < 300-c.AbsorbFrames-10 {
		t.Errorf("a motionless sitter quiet on %d frames, want absorbed after about %d", quiet, c.AbsorbFrames)
	}

	// HoldFrames bounds the hold: with 150 frames the moving sitter is
	// absorbed (no motion while sitting after about 150 frames).
	c.HoldFrames = 150
	res, gone = sitStill(t, c, 300, 40)
	if q := countQuiet(res[:gone]); q < 100 {
		t.Errorf("HoldFrames 150: quiet on %d frames of a 300-frame sit, want the hold to end", q)
	}
}

func countQuiet(rs []Result) int {
	n := 0
	for _, r := range rs {
		if !r.Motion {
			n++
		}
	}
	return n
}

// TestGhostSuppressed: an object that became background (a box put down,
// absorbed) and then vanishes leaves a ghost; with GhostFrames set it is
// never motion, and the background is re-seeded there within about a second
// (10 frames), on a textured and on a flat region. Without ghost detection
// the ghost stays motion until AbsorbFrames absorbs it.
func TestGhostSuppressed(t *testing.T) {
	s := newScene(160, 120, 33, 2.5)
	// A flat region in the scene for the second case.
	flat := image.Rect(100, 70, 150, 110)
	for y := flat.Min.Y; y < flat.Max.Y; y++ {
		for x := flat.Min.X; x < flat.Max.X; x++ {
			s.bg[y*s.w+x] = 90
		}
	}
	for _, tc := range []struct {
		name string
		obj  image.Rectangle
	}{
		{"textured", image.Rect(20, 30, 44, 54)},
		{"flat", image.Rect(112, 78, 136, 100)},
	} {
		for _, ghostFrames := range []int{5, 0} {
			c := DefaultConfig()
			c.AbsorbFrames, c.GhostFrames = 30, ghostFrames
			d := newTestDetector(t, c)
			buf := warm(t, d, s, nil)
			for range c.AbsorbFrames + 10 { // put down, then absorbed
				buf = s.frame(buf, 0, tc.obj)
				d.Step(buf, s.w, s.h)
			}
			if r := d.Step(s.frame(buf, 0, tc.obj), s.w, s.h); r.Motion {
				t.Fatalf("%s: the box is still motion after AbsorbFrames", tc.name)
			}
			motion := 0
			var v View
			for i := range 20 { // taken away
				buf = s.frame(buf, 0)
				if d.Step(buf, s.w, s.h).Motion {
					motion++
				}
				if i == 10 { // about a second at 10 fps
					d.View(&v)
				}
			}
			if ghostFrames > 0 {
				// The frame the box vanishes changes where it was (a real
				// change, one frame: no event at MinMotionFrames 3); from
				// the next the place is a ghost.
				if motion > 1 {
					t.Errorf("%s: the ghost was motion on %d frames, want at most the one the box vanished on", tc.name, motion)
				}
				if left := changedPixels(&v); left*10 > tc.obj.Dx()*tc.obj.Dy() {
					t.Errorf("%s: 10 frames after: %d ghost pixels left of %d, want the place re-seeded", tc.name, left, tc.obj.Dx()*tc.obj.Dy())
				}
			} else if motion < 10 {
				t.Errorf("%s, no ghost detection: the ghost was motion on %d of 20 frames, want most (the test would not see a ghost)", tc.name, motion)
			}
		}
	}
}

// changedPixels counts the pixels of v that are motion or ghost.
func changedPixels(v *View) int {
	n := 0
	for _, st := range v.State {
		if st == StateGhost || st == StateMotion || st == StateSmall {
			n++
		}
	}
	return n
}

// TestStoppedObjectNotGhost: a box put down (in front of a textured and of
// a flat background) is a still object, not a ghost: it stays motion until
// AbsorbFrames takes it into the background, with ghost detection on (the
// default) as without it.
func TestStoppedObjectNotGhost(t *testing.T) {
	s := newScene(160, 120, 34, 2.5)
	flat := image.Rect(100, 70, 150, 110)
	for y := flat.Min.Y; y < flat.Max.Y; y++ {
		for x := flat.Min.X; x < flat.Max.X; x++ {
			s.bg[y*s.w+x] = 90
		}
	}
	for _, obj := range []image.Rectangle{image.Rect(20, 30, 44, 54), image.Rect(112, 78, 136, 100)} {
		c := DefaultConfig()
		if c.GhostFrames == 0 {
			t.Fatal("ghost detection is off by default")
		}
		c.AbsorbFrames = 40
		d := newTestDetector(t, c)
		buf := warm(t, d, s, nil)
		// Carried in from the left edge, then put down.
		for x := -24; x < obj.Min.X; x += 6 {
			buf = s.frame(buf, 0, image.Rect(x, obj.Min.Y, x+obj.Dx(), obj.Max.Y))
			d.Step(buf, s.w, s.h)
		}
		var v View
		for i := range c.AbsorbFrames + 20 {
			buf = s.frame(buf, 0, obj)
			r := d.Step(buf, s.w, s.h)
			d.View(&v)
			if i < c.AbsorbFrames-5 {
				if !r.Motion {
					t.Fatalf("box at %v, frame %d after it stopped: no motion, want it foreground until AbsorbFrames (%d)", obj, i, c.AbsorbFrames)
				}
				for _, st := range v.State {
					if st == StateGhost {
						t.Fatalf("box at %v, frame %d after it stopped: pixels classified ghost", obj, i)
					}
				}
			}
			if i > c.AbsorbFrames+5 && r.Motion {
				t.Fatalf("box at %v, frame %d after it stopped: still motion after AbsorbFrames", obj, i)
			}
		}
	}
}

// TestCarParksAndLeaves: a car drives in, parks (and becomes background
// after AbsorbFrames), and drives off a minute later: its departure is one
// event that ends within EventGap + PostRoll + 1 s of the car leaving the
// frame, with no ghost left where it stood; and the parked car raised no
// event while it stood. Then a second car takes the same place and leaves:
// the same again (the old level is tracked afresh).
func TestCarParksAndLeaves(t *testing.T) {
	c := DefaultConfig()
	c.AbsorbFrames = 100
	s := newScene(160, 120, 35, 2.5)
	d := newTestDetector(t, c)
	buf := warm(t, d, s, nil)
	l := NewLifecycle(c)
	frame := 0
	at := func(i int) time.Time { return testTime.Add(time.Duration(i) * 100 * time.Millisecond) }
	step := func(objs ...image.Rectangle) (Result, Decision) {
		buf = s.frame(buf, 0, objs...)
		r := d.Step(buf, s.w, s.h)
		dec := l.Observe(at(frame), r)
		frame++
		return r, dec
	}
	spot := image.Rect(60, 70, 100, 90)
	for round := range 2 {
		starts, ends, ended := 0, 0, -1
		count := func(dec Decision) {
			if dec.Start {
				starts++
			}
			if dec.End {
				ends++
				ended = frame - 1
			}
		}
		for x := -40; x < spot.Min.X; x += 5 { // drives in
			_, dec := step(image.Rect(x, spot.Min.Y, x+spot.Dx(), spot.Max.Y))
			count(dec)
		}
		for range 600 { // parked for a minute
			_, dec := step(spot)
			count(dec)
		}
		if starts != 1 || ends != 1 {
			t.Fatalf("round %d: arriving and parking made %d starts and %d ends, want one event", round, starts, ends)
		}
		starts, ends, ended = 0, 0, -1
		for x := spot.Min.X; x < s.w; x += 5 { // drives off to the right
			_, dec := step(image.Rect(x, spot.Min.Y, x+spot.Dx(), spot.Max.Y))
			count(dec)
		}
		gone := frame
		quietFrom := -1
		for i := range 100 {
			r, dec := step()
			count(dec)
			if r.Motion {
				quietFrom = -1
			} else if quietFrom < 0 {
				quietFrom = i
			}
		}
		if starts != 1 || ends != 1 {
			t.Fatalf("round %d: leaving made %d starts and %d ends, want one event", round, starts, ends)
		}
		if quietFrom < 0 || quietFrom > 10 {
			t.Errorf("round %d: motion on the empty spot until %d frames after the car left, want quiet within a second (a ghost)", round, quietFrom)
		}
		if bound := c.EventGap + c.PostRoll + time.Second; at(ended).Sub(at(gone)) > bound {
			t.Errorf("round %d: event ended %v after the car left, want within %v", round, at(ended).Sub(at(gone)), bound)
		}
	}
}

// TestStillSitterLeaves: a person who sits without moving for 30 s is
// absorbed like a parked car; when they get up and walk out, the seat they
// leave is a ghost and is not motion for longer than a second (without
// ghost detection it stays motion until AbsorbFrames).
func TestStillSitterLeaves(t *testing.T) {
	for _, ghostFrames := range []int{DefaultConfig().GhostFrames, 0} {
		c := DefaultConfig()
		c.GhostFrames = ghostFrames
		res, gone := sitStill(t, c, 300, 0)
		after := 0
		for _, r := range res[gone:] {
			if r.Motion {
				after++
			}
		}
		if ghostFrames > 0 && after > 10 {
			t.Errorf("ghost detection on: motion on %d of the 50 frames after the sitter left, want at most a second's", after)
		}
		if ghostFrames == 0 && after < 40 {
			t.Errorf("ghost detection off: motion on %d of the 50 frames after the sitter left, want most (the test would not see a ghost)", after)
		}
	}
}
