package motion

import (
	"image"
	"time"
)

// End reasons in Summary.Reason.
const (
	ReasonGap       = "gap"        // EventGap passed without motion, or without frames (a lost camera), or frame time went backwards
	ReasonMaxLength = "max-length" // the event reached MaxLength
	ReasonFlush     = "flush"      // Flush: shutdown or end of stream
)

// Decision is what the Lifecycle decided at one frame.
type Decision struct {
	// Start: an event starts at this frame, the trigger frame (send its
	// thumbnail at once). Best is also set.
	Start bool
	// Best: this frame is the open event's best frame so far; keep a copy.
	// Never set together with End.
	Best bool
	// End: the open event ended, at this frame or by Flush; the frame that
	// ends an event is not part of it (nor of the next one).
	End bool
	// Summary describes the event: so far at Start, complete at End.
	Summary Summary
}

// Summary describes an event.
type Summary struct {
	// Start is the trigger frame's time less PreRoll, but never before the
	// first frame seen or the previous event's end. End is the last motion
	// frame's time plus PostRoll, but never beyond the time of the frame
	// (or Flush) that decided the end; at Start it is the trigger frame's
	// time.
	Start, End time.Time
	// Trigger is the trigger frame's time (Start plus the pre-roll it got).
	Trigger time.Time
	// MotionFrames counts the event's motion frames, including the
	// MinMotionFrames-1 frames before the trigger.
	MotionFrames int
	// PeakAreaPPM is the largest Result.AreaPPM of those frames.
	PeakAreaPPM uint32
	// Box is the best frame's motion box.
	Box image.Rectangle
	// Zones has the bits of every Config.Zones entry the event's motion
	// frames touched (Result.Zones).
	Zones uint32
	// Reason is why the event ended: ReasonGap, ReasonMaxLength or
	// ReasonFlush; empty at Start.
	Reason string
}

// Lifecycle turns per-frame Results into events. The best frame is the one
// with the largest motion area, where a frame whose box touches the frame's
// edge counts half its area: a whole object beats a cut-off one of up to
// twice its size, but a person cut off by the edge still beats a small blob
// elsewhere (a lamp's flicker on one frame). Make it with NewLifecycle. It is not safe for concurrent use.
type Lifecycle struct {
	minFrames                         int
	preRoll, gap, postRoll, maxLength time.Duration

	// Idle: the run of consecutive motion frames so far.
	run      int
	runPeak  uint32
	runZones uint32

	// Open event.
	open       bool
	trigger    time.Time // the trigger frame's time
	sum        Summary
	lastMotion time.Time
	bestScore  uint32 // see score

	lastSeen  time.Time
	seen      bool
	firstSeen time.Time // since the last clock jump
	lastEnd   time.Time // the last event's end (zero: none since firstSeen)
}

// NewLifecycle returns a lifecycle for c. Give it a Config that
// [Config.Validate] accepts (NewDetector checks the same one); out of range
// values are clamped: MinMotionFrames to at least 1, durations to at least
// 0 (MaxLength to at least 1s).
func NewLifecycle(c Config) *Lifecycle {
	return &Lifecycle{
		minFrames: max(1, c.MinMotionFrames),
		preRoll:   max(0, c.PreRoll),
		gap:       max(0, c.EventGap),
		postRoll:  max(0, c.PostRoll),
		maxLength: max(minMaxLength, c.MaxLength),
	}
}

// Observe feeds one frame's Result with the frame's capture time.
func (l *Lifecycle) Observe(t time.Time, r Result) Decision {
	if l.seen && t.Before(l.lastSeen) {
		// The frame clock went backwards (a clock set, a source restart):
		// no duration across the jump means anything. End at the last
		// time seen and start counting afresh from this frame.
		prev := l.lastSeen
		l.lastSeen, l.firstSeen, l.lastEnd = t, t, time.Time{}
		l.run, l.runPeak, l.runZones = 0, 0, 0
		if l.open {
			return l.end(prev, ReasonGap)
		}
		return Decision{}
	}
	if !l.seen {
		l.firstSeen = t
	}
	if l.open && l.seen && t.Sub(l.lastSeen) >= l.gap && t.Sub(l.lastMotion) >= l.gap {
		// No frame for longer than the event gap (the camera was lost
		// and came back): the event ended while nothing was seen, even if
		// this frame has motion. This frame starts no event either.
		l.lastSeen = t
		l.run, l.runPeak, l.runZones = 0, 0, 0
		return l.end(t, ReasonGap)
	}
	l.lastSeen, l.seen = t, true

	if l.open {
		if !r.Motion && t.Sub(l.lastMotion) >= l.gap {
			return l.end(t, ReasonGap)
		}
		if t.Sub(l.trigger) >= l.maxLength {
			return l.end(t, ReasonMaxLength)
		}
		if !r.Motion {
			return Decision{}
		}
		l.lastMotion = t
		l.sum.MotionFrames++
		l.sum.PeakAreaPPM = max(l.sum.PeakAreaPPM, r.AreaPPM)
		l.sum.Zones |= r.Zones
		if !l.better(r) {
			return Decision{}
		}
		l.bestScore = score(r)
		l.sum.Box = r.Box
		return Decision{Best: true}
	}

	if !r.Motion {
		l.run, l.runPeak, l.runZones = 0, 0, 0
		return Decision{}
	}
	l.run++
	l.runPeak = max(l.runPeak, r.AreaPPM)
	l.runZones |= r.Zones
	if l.run < l.minFrames {
		return Decision{}
	}
	l.open = true
	start := t.Add(-l.preRoll)
	if floor := l.firstSeen; start.Before(floor) {
		start = floor
	}
	if !l.lastEnd.IsZero() && start.Before(l.lastEnd) {
		start = l.lastEnd
	}
	l.trigger = t
	l.sum = Summary{Start: start, End: t, Trigger: t, MotionFrames: l.run, PeakAreaPPM: l.runPeak, Box: r.Box, Zones: l.runZones}
	l.lastMotion = t
	l.bestScore = score(r)
	l.run, l.runPeak, l.runZones = 0, 0, 0
	return Decision{Start: true, Best: true, Summary: l.sum}
}

// better reports whether r beats the open event's best frame: a higher
// score; on a tie the earlier frame stays.
func (l *Lifecycle) better(r Result) bool {
	return score(r) > l.bestScore
}

// score is a frame's claim to be the event's picture: its motion area, half
// of it when the box touches the frame's edge.
func score(r Result) uint32 {
	if r.TouchesEdge {
		return r.AreaPPM / 2
	}
	return r.AreaPPM
}

// Flush ends the open event at time t (shutdown, end of stream); t is
// normally the last frame's time. Without an open event it returns a zero
// Decision.
func (l *Lifecycle) Flush(t time.Time) Decision {
	l.run, l.runPeak, l.runZones = 0, 0, 0
	if !l.open {
		return Decision{}
	}
	return l.end(t, ReasonFlush)
}

// end closes the open event, decided at time t.
func (l *Lifecycle) end(t time.Time, reason string) Decision {
	end := l.lastMotion.Add(l.postRoll)
	if t.Before(l.lastMotion) {
		t = l.lastMotion
	}
	if end.After(t) {
		end = t
	}
	s := l.sum
	s.End, s.Reason = end, reason
	l.lastEnd = end
	l.open = false
	l.sum = Summary{}
	return Decision{End: true, Summary: s}
}
