package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/motion/eval"
	"github.com/keyframe-cam/keyframe/motion/motiontest"
)

// Frames of the sequence writeEvalSequence writes: motiontest's square
// crosses from frame 10 and has left by frame 26.
const (
	evalFrames             = 36
	evalFirstPos, evalLast = motiontest.SquareFirst, motiontest.SquareLast // frames with the square in view
)

// writeEvalSequence writes a labelled sequence in the data set's layout
// (dir/input/ frames, dir/frame_labels.csv): the first 8 frames (the
// detector's warm-up) are don't care (-1), the frames with the square 1,
// the others 0. label3, when not empty, is written as frame 3's label.
func writeEvalSequence(t *testing.T, dir, label3 string) {
	t.Helper()
	motiontest.WriteSquareFrames(t, filepath.Join(dir, "input"), evalFrames)
	var b strings.Builder
	b.WriteString("pos,file,label\n")
	for i := range evalFrames {
		l := "0"
		switch {
		case i == 3 && label3 != "":
			l = label3
		case i < 8:
			l = "-1"
		case i >= evalFirstPos && i <= evalLast:
			l = "1"
		}
		fmt.Fprintf(&b, "%d,f%03d.png,%s\n", i, i, l)
	}
	if err := os.WriteFile(filepath.Join(dir, "frame_labels.csv"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestEvalCommand scores the detector with `keyframe-receiver eval` on a small
// generated labelled sequence: the JSON report counts its frames and labels
// and finds the one crossing as one event with most of its frames; the
// table names the sequence; bad input is refused with the file or flag
// named.
func TestEvalCommand(t *testing.T) {
	root := t.TempDir()
	seq := filepath.Join(root, "crossing")
	writeEvalSequence(t, seq, "")
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(args, &out, &errb)
		return code, out.String(), errb.String()
	}

	code, out, errs := run("eval", "-json", seq)
	if code != 0 {
		t.Fatalf("eval -json: code %d, stderr %q", code, errs)
	}
	var rep eval.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("eval -json output: %v\n%s", err, out)
	}
	s, ok := rep.Sequences["crossing"]
	if !ok || len(rep.Sequences) != 1 {
		t.Fatalf("eval -json sequences %v, want crossing only", rep.Sequences)
	}
	positives := evalLast - evalFirstPos + 1
	if s.Frames != evalFrames || s.Positives != positives || s.Negatives != evalFrames-8-positives || s.Labels != eval.LabelsFromCSV {
		t.Errorf("crossing: %d frames, %d positives, %d negatives, labels from %q; want %d, %d, %d, %q",
			s.Frames, s.Positives, s.Negatives, s.Labels, evalFrames, positives, evalFrames-8-positives, eval.LabelsFromCSV)
	}
	if s.Recall == nil || *s.Recall < 0.8 || s.Precision == nil || *s.Precision < 0.9 {
		t.Errorf("crossing: precision %v, recall %v; want at least 0.9 and 0.8", deref(s.Precision), deref(s.Recall))
	}
	if s.Events != 1 || s.TruthEvents != 1 || s.FalseEvents != 0 || s.EventRecall == nil || *s.EventRecall != 1 {
		t.Errorf("crossing: %d events (%d false) for %d true, event recall %v; want the one crossing found", s.Events, s.FalseEvents, s.TruthEvents, deref(s.EventRecall))
	}
	if rep.Overall.ScoredSequences != 1 || rep.Overall.Recall == nil || *rep.Overall.Recall != *s.Recall {
		t.Errorf("overall %+v, want the one sequence's scores", rep.Overall)
	}

	// A directory without input/ stands for its sequences; the table.
	code, out, errs = run("eval", root)
	if code != 0 || !strings.Contains(out, "\ncrossing ") || !strings.Contains(out, "overall (mean of 1)") {
		t.Errorf("eval (table): code %d, stderr %q, stdout\n%s", code, errs, out)
	}

	bad := filepath.Join(t.TempDir(), "bad")
	writeEvalSequence(t, bad, "2")
	missing := filepath.Join(t.TempDir(), "motion-data")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"eval"}, 2, "no directory given"},
		{[]string{"eval", "-fps", "0", seq}, 2, "-fps 0"},
		{[]string{"eval", "-gap", "-1", seq}, 2, "-gap -1"},
		{[]string{"eval", missing}, 1, missing + ": no such directory"},
		{[]string{"eval", bad}, 1, filepath.Join(bad, "frame_labels.csv") + `:5: label "2" is not 1, 0 or -1`},
	} {
		code, _, errs := run(c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("%q: code %d, stderr %q; want %d and %q", c.args, code, errs, c.code, c.msg)
		}
	}
}

// deref shows a nil metric as "null".
func deref(v *float64) any {
	if v == nil {
		return "null"
	}
	return *v
}
