package motion

import (
	"image"
	"strings"
	"testing"
)

// TestMaskHidesClock: a flickering block (an on-screen clock) inside a masked
// polygon never raises motion, while the same change outside the mask does.
func TestMaskHidesClock(t *testing.T) {
	clockAt := func(frame int) image.Rectangle {
		// The "digits" change every frame: a block that jumps between two spots.
		if frame%2 == 0 {
			return image.Rect(4, 4, 36, 16)
		}
		return image.Rect(8, 6, 40, 18)
	}
	run := func(mask []Polygon) (motionFrames int) {
		s := newScene(160, 120, 10, 2.5)
		c := DefaultConfig()
		c.Mask = mask
		d := newTestDetector(t, c)
		buf := warm(t, d, s, nil)
		for i := range 200 {
			buf = s.frame(buf, 0, clockAt(i))
			if r := d.Step(buf, s.w, s.h); r.Motion {
				motionFrames++
			}
		}
		return motionFrames
	}
	if n := run(nil); n == 0 {
		t.Fatal("unmasked flickering block never raised motion: the test cannot tell a mask works")
	}
	mask, err := ParsePolygons("0,0 0.3,0 0.3,0.2 0,0.2")
	if err != nil {
		t.Fatal(err)
	}
	if n := run(mask); n != 0 {
		t.Fatalf("masked clock raised motion on %d frames", n)
	}

	// An object crossing outside the mask is still seen.
	s := newScene(160, 120, 10, 2.5)
	c := DefaultConfig()
	c.Mask = mask
	d := newTestDetector(t, c)
	buf := warm(t, d, s, nil)
	seen := false
	for x := 10; x < 120; x += 3 {
		buf = s.frame(buf, 0, image.Rect(x, 60, x+20, 90))
		if r := d.Step(buf, s.w, s.h); r.Motion {
			seen = true
		}
	}
	if !seen {
		t.Fatal("object outside the mask not detected")
	}
}

func TestParsePolygons(t *testing.T) {
	polys, err := ParsePolygons(" 0,0 0.5,0 0.5,0.5 ; 0.6,0.6 1,0.6 1,1 0.6,1")
	if err != nil || len(polys) != 2 || len(polys[0]) != 3 || len(polys[1]) != 4 {
		t.Fatalf("parsed %v, %v", polys, err)
	}
	again, err := ParsePolygons(FormatPolygons(polys))
	if err != nil || FormatPolygons(again) != FormatPolygons(polys) {
		t.Fatalf("round trip: %q vs %q (%v)", FormatPolygons(again), FormatPolygons(polys), err)
	}
	if !polys[0].Contains(Point{0.4, 0.1}) || polys[0].Contains(Point{0.1, 0.4}) {
		t.Fatal("Contains wrong for a triangle")
	}
	if p, err := ParsePolygons(""); err != nil || p != nil {
		t.Fatalf("empty: %v %v", p, err)
	}
	for _, bad := range []string{"0,0 1,1", "0,0 1,x 1,1", "0,0 2,0 1,1", "0;0 1,0 1,1"} {
		if _, err := ParsePolygons(bad); err == nil || !strings.Contains(err.Error(), "polygon") {
			t.Errorf("%q: error %v, want one naming the polygon", bad, err)
		}
	}
	c := DefaultConfig()
	c.Mask = []Polygon{{{0, 0}, {1.5, 0}, {1, 1}}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "Mask[0]") {
		t.Fatalf("Validate: %v", err)
	}
}
