package eval

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

// labelsOf turns "1 0 -1 ..." compactly written as "10x..." (x = -1) into
// labels.
func labelsOf(s string) []Label {
	out := make([]Label, len(s))
	for i, c := range s {
		switch c {
		case '1':
			out[i] = Positive
		case '0':
			out[i] = Negative
		case 'x':
			out[i] = DontCare
		default:
			panic("bad label " + string(c))
		}
	}
	return out
}

// flagsOf turns "#.." into flags (# = flagged).
func flagsOf(s string) []bool {
	out := make([]bool, len(s))
	for i, c := range s {
		out[i] = c == '#'
	}
	return out
}

func near(t *testing.T, name string, got *float64, want float64) {
	t.Helper()
	if got == nil {
		t.Errorf("%s = nil, want %v", name, want)
		return
	}
	if math.Abs(*got-want) > 1e-12 {
		t.Errorf("%s = %v, want %v", name, *got, want)
	}
}

func isNil(t *testing.T, name string, got *float64) {
	t.Helper()
	if got != nil {
		t.Errorf("%s = %v, want nil", name, *got)
	}
}

func TestRuns(t *testing.T) {
	tests := []struct {
		marks string
		gap   int
		want  []Span
	}{
		{"", 10, nil},
		{"....", 10, nil},
		{"##..#", 0, []Span{{0, 1}, {4, 4}}},
		{"##..#", 1, []Span{{0, 1}, {4, 4}}}, // two frames between: not merged with gap 1
		{"##..#", 2, []Span{{0, 4}}},
		{"#.#.#", -5, []Span{{0, 0}, {2, 2}, {4, 4}}}, // negative gap is 0
		{"#" + strings.Repeat(".", 10) + "#" + strings.Repeat(".", 11) + "#", 10, []Span{{0, 11}, {23, 23}}},
	}
	for _, tt := range tests {
		if got := Runs(flagsOf(tt.marks), tt.gap); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Runs(%q, %d) = %v, want %v", tt.marks, tt.gap, got, tt.want)
		}
	}
}

func TestScoreFrames(t *testing.T) {
	// tp: frames 1, 2; fn: frame 3; fp: frames 5, 6; tn: 7. The
	// don't-care frames 8 and 9 are flagged and must not count, nor does
	// frame 0 (the first frame is never scored).
	labels := labelsOf("0111x000xx")
	flags := flagsOf(".##..##.##")
	r, err := Score(labels, flags, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "precision", r.Precision, 2.0/4)
	near(t, "recall", r.Recall, 2.0/3)
	near(t, "f1", r.F1, 2*(0.5*(2.0/3))/(0.5+2.0/3))
	if r.Frames != 10 || r.Positives != 3 || r.Negatives != 3 || r.Flagged != 6 {
		t.Errorf("counts frames %d positives %d negatives %d flagged %d, want 10 3 3 6", r.Frames, r.Positives, r.Negatives, r.Flagged)
	}
	// No predicted events: event precision 0/0, recall 0 of 1.
	isNil(t, "event_precision", r.EventPrecision)
	near(t, "event_recall", r.EventRecall, 0)
	near(t, "false_events_per_1000_quiet", r.FalseEventsPer1000Quiet, 0)
}

func TestScoreNothingFlagged(t *testing.T) {
	r, err := Score(labelsOf("0110"), flagsOf("...."), nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	isNil(t, "precision", r.Precision) // 0/0
	near(t, "recall", r.Recall, 0)
	near(t, "f1", r.F1, 0) // a silent detector scores 0, it does not drop out
}

func TestScoreEvents(t *testing.T) {
	// Ground truth: positives at 2..4 and 9..10 merge (4 frames between,
	// gap 5) into [2, 10]; 30..31 is a second event; 50 a third.
	labels := make([]Label, 60)
	for i := range labels {
		labels[i] = Negative
	}
	for _, i := range []int{2, 3, 4, 9, 10, 30, 31, 50} {
		labels[i] = Positive
	}
	labels[20], labels[21] = DontCare, DontCare
	predicted := []Span{
		{6, 7},   // in the gap of the first truth event: overlaps it
		{8, 12},  // overlaps the first truth event too
		{20, 21}, // on don't-care frames only: still a false event
		{40, 45}, // false
		{49, 50}, // finds the third
	}
	r, err := Score(labels, make([]bool, 60), predicted, 5)
	if err != nil {
		t.Fatal(err)
	}
	if r.TruthEvents != 3 || r.Events != 5 || r.FalseEvents != 2 {
		t.Errorf("truth events %d, events %d, false %d, want 3 5 2", r.TruthEvents, r.Events, r.FalseEvents)
	}
	near(t, "event_precision", r.EventPrecision, 3.0/5)
	near(t, "event_recall", r.EventRecall, 2.0/3)
	near(t, "false_events_per_1000_quiet", r.FalseEventsPer1000Quiet, 2*1000.0/49) // frame 0 is not scored

	// With gap 3 the first truth event splits into [2, 4] and [9, 10]:
	// [6, 7] then overlaps neither.
	r, err = Score(labels, make([]bool, 60), predicted, 3)
	if err != nil {
		t.Fatal(err)
	}
	if r.TruthEvents != 4 || r.FalseEvents != 3 {
		t.Errorf("gap 3: truth events %d, false %d, want 4 3", r.TruthEvents, r.FalseEvents)
	}
	near(t, "gap 3 event_recall", r.EventRecall, 2.0/4)
}

func TestScoreDontCareDoesNotJoinOrStart(t *testing.T) {
	// -1 frames are not positive: "1xxx1" with gap 2 stays two events, and
	// an event on -1 frames alone is not a ground-truth event.
	r, err := Score(labelsOf("01xxx1000xx"), make([]bool, 11), []Span{{9, 10}}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if r.TruthEvents != 2 || r.FalseEvents != 1 {
		t.Errorf("truth events %d, false events %d, want 2 1", r.TruthEvents, r.FalseEvents)
	}
	near(t, "event_recall", r.EventRecall, 0)
	near(t, "event_precision", r.EventPrecision, 0)
}

// TestScoreFirstFrameDontCare: the first frame is not scored whatever its
// label, so a ground-truth event of that frame alone is no event (the
// data set's README), and a flag on it is neither right nor wrong.
func TestScoreFirstFrameDontCare(t *testing.T) {
	r, err := Score(labelsOf("100001111"), flagsOf("#....####"), []Span{{5, 8}}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if r.Positives != 4 || r.Negatives != 4 || r.TruthEvents != 1 {
		t.Errorf("positives %d negatives %d truth events %d, want 4 4 1", r.Positives, r.Negatives, r.TruthEvents)
	}
	near(t, "precision", r.Precision, 1)
	near(t, "recall", r.Recall, 1)
	near(t, "event_recall", r.EventRecall, 1)
	// Labelled 0 and flagged: still not a false positive.
	r, err = Score(labelsOf("0011"), flagsOf("#.##"), nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "precision", r.Precision, 1)
}

func TestTails(t *testing.T) {
	// Motion at 2..5 and 20..21 (one ground-truth event each with gap 3);
	// frame 0 is labelled 1 but is never scored.
	labels := labelsOf("1" + "01111" + "00000000000000" + "11" + "00000000")
	events := []Event{
		{Span{2, 7}, 4, 9},     // last motion 5, closed at 9: tail 4
		{Span{12, 14}, 13, 15}, // on quiet frames only: no tail; not a true event
		{Span{19, 23}, 23, 30}, // last motion 21, open at the end: tail 9; best on a quiet frame
	}
	var r SequenceResult
	if err := Tails(labels, events, 3, &r); err != nil {
		t.Fatal(err)
	}
	if r.TailEvents != 2 || r.BestWithoutMotion != 1 {
		t.Errorf("tail events %d, best without motion %d, want 2 1", r.TailEvents, r.BestWithoutMotion)
	}
	if r.TailMaxFrames == nil || *r.TailMaxFrames != 9 {
		t.Errorf("tail max %v, want 9", r.TailMaxFrames)
	}
	near(t, "tail mean", r.TailMeanFrames, 6.5)
	r.setSeconds(10)
	near(t, "tail mean s", r.TailMeanSeconds, 0.65)
	near(t, "tail max s", r.TailMaxSeconds, 0.9)

	// Frame 0's label does not make a tail.
	if err := Tails(labelsOf("1000"), []Event{{Span{0, 1}, 0, 2}}, 3, &r); err != nil {
		t.Fatal(err)
	}
	if r.TailEvents != 0 || r.TailMeanFrames != nil || r.TailMaxFrames != nil || r.BestWithoutMotion != 0 {
		t.Errorf("frame 0 only: %+v, want no tail", r)
	}
	for _, e := range []Event{{Span{2, 1}, 2, 3}, {Span{0, 1}, 2, 3}, {Span{0, 1}, 0, 1}, {Span{0, 1}, 0, 5}} {
		if err := Tails(labelsOf("0110"), []Event{e}, 3, &r); err == nil {
			t.Errorf("event %+v: no error", e)
		}
	}
}

func TestScoreNoPositives(t *testing.T) {
	r, err := Score(labelsOf("0000x00000"), flagsOf("..##......"), []Span{{2, 3}, {5, 9}}, 10)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]*float64{"precision": r.Precision, "recall": r.Recall, "f1": r.F1, "event_precision": r.EventPrecision, "event_recall": r.EventRecall} {
		isNil(t, name, v)
	}
	near(t, "false_events_per_1000_quiet", r.FalseEventsPer1000Quiet, 2*1000.0/8) // frame 0 is not scored
	if r.Events != 2 || r.FalseEvents != 2 {
		t.Errorf("events %d false %d, want 2 2", r.Events, r.FalseEvents)
	}
}

func TestScoreNoNegatives(t *testing.T) {
	r, err := Score(labelsOf("x11"), flagsOf(".##"), []Span{{1, 2}}, 10)
	if err != nil {
		t.Fatal(err)
	}
	isNil(t, "false_events_per_1000_quiet", r.FalseEventsPer1000Quiet)
	near(t, "f1", r.F1, 1)
}

func TestScoreErrors(t *testing.T) {
	if _, err := Score(labelsOf("01"), flagsOf("#"), nil, 10); err == nil {
		t.Error("length mismatch: no error")
	}
	if _, err := Score([]Label{3}, flagsOf("#"), nil, 10); err == nil || !strings.Contains(err.Error(), "label 3") {
		t.Errorf("label 3: error %v", err)
	}
	for _, sp := range []Span{{-1, 0}, {1, 0}, {0, 2}} {
		if _, err := Score(labelsOf("01"), flagsOf(".."), []Span{sp}, 10); err == nil {
			t.Errorf("span %v: no error", sp)
		}
	}
}

func TestOverall(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	seqs := map[string]SequenceResult{
		"a": {Precision: f(1), Recall: f(0.5), F1: f(2.0 / 3), EventPrecision: f(1), EventRecall: f(1), FalseEventsPer1000Quiet: f(0), Positives: 4, Events: 1,
			TailEvents: 1, TailMeanSeconds: f(4), TailMaxSeconds: f(4), BestWithoutMotion: 1},
		// Precision nil (nothing flagged): left out of the precision mean.
		"b": {Recall: f(0), F1: f(0), EventRecall: f(0), FalseEventsPer1000Quiet: f(10), Positives: 2, Events: 4, FalseEvents: 1,
			TailEvents: 3, TailMeanSeconds: f(2), TailMaxSeconds: f(3), BestWithoutMotion: 2},
		// No positives: not in the means, its events summed.
		"q1": {FalseEventsPer1000Quiet: f(20), Events: 2, FalseEvents: 2},
		"q2": {FalseEventsPer1000Quiet: f(5), Events: 1, FalseEvents: 1},
	}
	o := Overall(seqs)
	near(t, "precision", o.Precision, 1)
	near(t, "recall", o.Recall, 0.25)
	near(t, "f1", o.F1, 1.0/3)
	near(t, "event_precision", o.EventPrecision, 1)
	near(t, "event_recall", o.EventRecall, 0.5)
	near(t, "false_events_per_1000_quiet", o.FalseEventsPer1000Quiet, 5)
	if o.EventsOnQuietSequences != 3 || o.ScoredSequences != 2 || o.QuietSequences != 2 {
		t.Errorf("quiet events %d scored %d quiet %d, want 3 2 2", o.EventsOnQuietSequences, o.ScoredSequences, o.QuietSequences)
	}
	// Tails pooled over the events: (4 + 3×2)/4; the longest 4.
	near(t, "tail_mean_s", o.TailMeanSeconds, 2.5)
	near(t, "tail_max_s", o.TailMaxSeconds, 4)
	if o.TailEvents != 4 || o.BestWithoutMotion != 3 || o.TrueEvents != 4 {
		t.Errorf("tail events %d best without motion %d true events %d, want 4 3 4", o.TailEvents, o.BestWithoutMotion, o.TrueEvents)
	}

	o = Overall(map[string]SequenceResult{"q": {Events: 4}})
	isNil(t, "precision with no scored sequence", o.Precision)
	isNil(t, "f1 with no scored sequence", o.F1)
	if o.EventsOnQuietSequences != 4 {
		t.Errorf("quiet events %d, want 4", o.EventsOnQuietSequences)
	}
}
