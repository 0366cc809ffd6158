package agent

import (
	"bytes"
	"context"
	"image"
	"image/jpeg"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/provenance"
)

// TestClipPreRoll: on the synthetic scene, every event has a clip that
// verifies frame by frame against its end record; the second crossing's
// clip (its pre-roll not cut short by the start of the stream or an
// earlier event) starts motion.pre_roll before the trigger, within one
// frame interval, holds the trigger frame, and its pre-roll shows the
// object coming in (the run-up) while its first frame does not.
func TestClipPreRoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cycle := uint64(capture.SyntheticCycle / (time.Second / capture.NominalFPS))
		src := newDriverSource(t, 3, 2*cycle)
		a, spool := delayedAgent(t, src, 0, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 2*capture.SyntheticCycle+time.Minute)
		defer cancel()
		if err := a.Run(ctx); err != nil {
			t.Fatalf("Run: %v", err)
		}
		recs := spool.records()
		checkChain(t, a, recs) // every event's clip verifies against its end record
		if got := countKind(recs, provenance.KindStart); got != 2 {
			t.Fatalf("%d events for two crossings", got)
		}
		// The second event's segments, in order.
		var segs []provenance.ClipSegment
		var frames [][]byte
		var times []int64
		var end []byte
		second := recs[len(recs)-1].Event
		for _, r := range recs {
			if r.Event != second {
				continue
			}
			b, err := provenance.UnmarshalBundle(r.Data)
			if err != nil {
				t.Fatal(err)
			}
			v, err := provenance.Verify(b.Envelope, b.Media, nil)
			if err != nil {
				t.Fatal(err)
			}
			switch r.Kind {
			case provenance.KindSegment:
				segs = append(segs, provenance.ClipSegment{Envelope: b.Envelope, Media: b.Media[0]})
				off := 0
				for _, f := range v.Payload.Segment.Frames {
					frames = append(frames, b.Media[0][off:off+int(f.Size)])
					times = append(times, f.TUs)
					off += int(f.Size)
				}
			case provenance.KindEnd:
				end = b.Envelope
			}
		}
		c, err := provenance.VerifyClip(end, segs, nil)
		if err != nil {
			t.Fatal(err)
		}
		pre := a.cfg.Motion.PreRoll
		interval := time.Second / capture.NominalFPS
		if first := time.Duration(c.FirstUs) * time.Microsecond; first < -pre-interval || first > -pre+interval {
			t.Errorf("the clip starts %v from the trigger, want -%v ± %v", first, pre, interval)
		}
		trigger := -1
		for i, us := range times {
			if us == 0 {
				trigger = i
			}
		}
		if trigger < 0 {
			t.Fatalf("no frame at the trigger (t_us 0) among %d", len(times))
		}
		// The run-up: pre-roll frames that differ from the clip's first
		// frame (the empty scene) where the object comes in.
		bg := decodeGray(t, frames[0])
		runUp := 0
		for i := 1; i < trigger; i++ {
			if changed(bg, decodeGray(t, frames[i])) >= 40 {
				runUp++
			}
		}
		if runUp == 0 {
			t.Errorf("no pre-roll frame of %d shows the object coming in", trigger)
		}
		if changed(bg, decodeGray(t, frames[trigger])) < 40 {
			t.Error("the trigger frame does not show the object")
		}
		t.Logf("second event: %d frames in %d segments, from %v to %v; %d pre-roll frames show the run-up",
			c.Frames, len(segs), time.Duration(c.FirstUs)*time.Microsecond, time.Duration(c.LastUs)*time.Microsecond, runUp)
	})
}

func decodeGray(t *testing.T, b []byte) *image.Gray {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	r := img.Bounds()
	g := image.NewGray(r)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			g.Set(x, y, img.At(x, y))
		}
	}
	return g
}

// changed counts the pixels of b more than 40 levels from a.
func changed(a, b *image.Gray) int {
	n := 0
	for i := range a.Pix {
		if d := int(a.Pix[i]) - int(b.Pix[i]); d > 40 || d < -40 {
			n++
		}
	}
	return n
}
