package eval

import (
	"fmt"
	"maps"
	"slices"
)

// Label is a frame's ground truth.
type Label int8

// The labels of frame_labels.csv.
const (
	Positive Label = 1  // motion
	Negative Label = 0  // no motion
	DontCare Label = -1 // ignored in scoring (also warm-up and context frames)
)

// DefaultGapFrames is the gap tolerance of the data set's README: runs of
// frames at most this many frames apart are one event.
const DefaultGapFrames = 10

// Span is an event as an inclusive range of frame indices.
type Span struct {
	First, Last int
}

// Overlaps reports whether s and o share a frame.
func (s Span) Overlaps(o Span) bool { return s.First <= o.Last && o.First <= s.Last }

// Runs groups the marked frames into events: two marked frames with at most
// gap frames (of any kind) between them belong to the same event. A
// negative gap is taken as 0 (only adjacent frames join).
func Runs(marked []bool, gap int) []Span {
	gap = max(gap, 0)
	var spans []Span
	for i, m := range marked {
		if !m {
			continue
		}
		if n := len(spans); n > 0 && i-spans[n-1].Last-1 <= gap {
			spans[n-1].Last = i
			continue
		}
		spans = append(spans, Span{i, i})
	}
	return spans
}

// Score scores one sequence. labels and flags hold one entry per frame fed
// to the detector: flags[i] is the frame prediction. predicted are the
// events the detector raised, in frame indices. Ground-truth events are
// Runs of the Positive frames with gap tolerance gap (DontCare frames are
// not positive, so they neither start nor extend an event, but a gap of
// them is bridged like any other).
//
// The first frame is DontCare whatever its label (the data set's README:
// no detector has an earlier frame to compare it with), so a ground-truth
// event made only of it is no event.
//
// Frame metrics count only Positive and Negative frames. On a sequence
// without Positive frames, Precision, Recall, F1 and the event metrics are
// nil: every event there is a false alarm, counted in
// FalseEventsPer1000Quiet. Precision is also nil when no labelled frame was
// flagged (0/0); F1 is 0 whenever no Positive frame was flagged, so a silent
// detector does not drop out of a mean. Every predicted event counts, also
// one lying wholly on DontCare frames. FalseEventsPer1000Quiet is nil when
// there is no Negative frame.
//
// Score fills the metrics and the counts (Frames, Positives, Negatives,
// Flagged, Events, FalseEvents); the caller adds timing and names.
func Score(labels []Label, flags []bool, predicted []Span, gap int) (SequenceResult, error) {
	if len(labels) != len(flags) {
		return SequenceResult{}, fmt.Errorf("eval: %d labels for %d frame predictions", len(labels), len(flags))
	}
	var r SequenceResult
	var tp, fp, fn int
	positive := make([]bool, len(labels))
	for i, l := range labels {
		if l != Positive && l != Negative && l != DontCare {
			return SequenceResult{}, fmt.Errorf("eval: frame %d: label %d is not 1, 0 or -1", i, l)
		}
		if i == 0 {
			l = DontCare
		}
		switch l {
		case Positive:
			r.Positives++
			positive[i] = true
			if flags[i] {
				tp++
			} else {
				fn++
			}
		case Negative:
			r.Negatives++
			if flags[i] {
				fp++
			}
		}
		if flags[i] {
			r.Flagged++
		}
	}
	for _, p := range predicted {
		if p.First < 0 || p.Last < p.First || p.Last >= len(labels) {
			return SequenceResult{}, fmt.Errorf("eval: predicted event [%d, %d] outside frames [0, %d]", p.First, p.Last, len(labels)-1)
		}
	}
	truth := Runs(positive, gap)
	hits, found := 0, 0
	for _, p := range predicted {
		if overlapsAny(p, truth) {
			hits++
		}
	}
	for _, t := range truth {
		if overlapsAny(t, predicted) {
			found++
		}
	}
	r.Frames = len(labels)
	r.Events = len(predicted)
	r.FalseEvents = len(predicted) - hits
	r.TruthEvents = len(truth)
	if r.Positives > 0 {
		r.Precision = ratio(tp, tp+fp)
		r.Recall = ratio(tp, tp+fn)
		f1 := 0.0
		if tp > 0 {
			f1 = 2 * float64(tp) / float64(2*tp+fp+fn) // = 2PR/(P+R)
		}
		r.F1 = &f1
		r.EventPrecision = ratio(hits, len(predicted))
		r.EventRecall = ratio(found, len(truth))
	}
	if r.Negatives > 0 {
		v := float64(r.FalseEvents) * 1000 / float64(r.Negatives)
		r.FalseEventsPer1000Quiet = &v
	}
	return r, nil
}

func overlapsAny(s Span, in []Span) bool {
	for _, o := range in {
		if s.Overlaps(o) {
			return true
		}
	}
	return false
}

// ratio is num/den, or nil when den is 0.
func ratio(num, den int) *float64 {
	if den == 0 {
		return nil
	}
	v := float64(num) / float64(den)
	return &v
}

// Overall combines sequence results as the data set's README says: each
// metric is the mean over the sequences with Positive frames (a sequence
// where the metric is nil is left out of that mean; nil when none is left),
// and the events raised on sequences without Positive frames, all false
// alarms, are summed. The event tails are pooled over every sequence (the
// mean over all their events open on labelled motion, the longest of
// them), and the best frames without motion summed.
func Overall(seqs map[string]SequenceResult) OverallResult {
	var o OverallResult
	var m [6]mean
	for _, name := range slices.Sorted(maps.Keys(seqs)) { // a fixed order: the same sums on every run
		s := seqs[name]
		if s.Positives == 0 {
			o.QuietSequences++
			o.EventsOnQuietSequences += s.Events
			continue
		}
		o.ScoredSequences++
		for i, v := range []*float64{s.Precision, s.Recall, s.F1, s.EventPrecision, s.EventRecall, s.FalseEventsPer1000Quiet} {
			m[i].add(v)
		}
	}
	var tailSum float64
	for _, name := range slices.Sorted(maps.Keys(seqs)) {
		s := seqs[name]
		o.BestWithoutMotion += s.BestWithoutMotion
		o.TrueEvents += s.Events - s.FalseEvents
		if s.TailEvents == 0 || s.TailMeanSeconds == nil || s.TailMaxSeconds == nil {
			continue
		}
		o.TailEvents += s.TailEvents
		tailSum += *s.TailMeanSeconds * float64(s.TailEvents)
		if o.TailMaxSeconds == nil || *s.TailMaxSeconds > *o.TailMaxSeconds {
			v := *s.TailMaxSeconds
			o.TailMaxSeconds = &v
		}
	}
	if o.TailEvents > 0 {
		v := tailSum / float64(o.TailEvents)
		o.TailMeanSeconds = &v
	}
	o.Precision, o.Recall, o.F1 = m[0].value(), m[1].value(), m[2].value()
	o.EventPrecision, o.EventRecall, o.FalseEventsPer1000Quiet = m[3].value(), m[4].value(), m[5].value()
	return o
}

type mean struct {
	sum float64
	n   int
}

func (m *mean) add(v *float64) {
	if v != nil {
		m.sum += *v
		m.n++
	}
}

func (m *mean) value() *float64 {
	if m.n == 0 {
		return nil
	}
	v := m.sum / float64(m.n)
	return &v
}

// Event is a predicted event as the Lifecycle raised it, in frame indices.
type Event struct {
	// Span runs from the trigger frame to the frame of Summary.End.
	Span
	// Best is the frame the Lifecycle last marked Best: the event's
	// thumbnail.
	Best int
	// Closed is the frame that decided the end (it is not part of the
	// event), or the number of frames when the sequence ended with the
	// event open.
	Closed int
}

// Tails measures how events end against the labels: an event's tail is
// the number of frames from the last Positive frame it was open on (First
// to Closed-1) to the frame that closed it, so an event that closes the
// frame after the last labelled motion has a tail of 1. Events open on no
// Positive frame have no tail. The first frame is DontCare as in Score.
//
// It fills TailEvents, TailMeanFrames and TailMaxFrames, and
// BestWithoutMotion, the events overlapping a ground-truth event (Runs of
// the Positive frames with gap tolerance gap) whose best frame is not
// Positive.
func Tails(labels []Label, events []Event, gap int, r *SequenceResult) error {
	positive := make([]bool, len(labels))
	for i, l := range labels {
		positive[i] = l == Positive && i > 0
	}
	truth := Runs(positive, gap)
	sum := 0
	r.TailEvents, r.TailMaxFrames, r.TailMeanFrames, r.BestWithoutMotion = 0, nil, nil, 0
	for _, e := range events {
		if e.First < 0 || e.Last < e.First || e.Closed <= e.Last || e.Closed > len(labels) || e.Best < e.First || e.Best > e.Last {
			return fmt.Errorf("eval: event [%d, %d] best %d closed %d outside frames [0, %d] or out of order", e.First, e.Last, e.Best, e.Closed, len(labels)-1)
		}
		if overlapsAny(e.Span, truth) && !positive[e.Best] {
			r.BestWithoutMotion++
		}
		last := -1
		for i := e.Closed - 1; i >= e.First; i-- {
			if positive[i] {
				last = i
				break
			}
		}
		if last < 0 {
			continue
		}
		tail := e.Closed - last
		r.TailEvents++
		sum += tail
		if r.TailMaxFrames == nil || tail > *r.TailMaxFrames {
			r.TailMaxFrames = &tail
		}
	}
	if r.TailEvents > 0 {
		m := float64(sum) / float64(r.TailEvents)
		r.TailMeanFrames = &m
	}
	return nil
}
