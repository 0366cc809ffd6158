package eval

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io/fs"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/motion"
)

// Generated sequences: 64x48 grey PNG frames of a textured scene with
// sensor noise; in the moving one a bright checkered square crosses the
// frame during the middle third.
const (
	seqW, seqH   = 64, 48
	seqFrames    = 90
	objFirst     = 25 // first frame with the object
	objLast      = 49 // last frame with the object
	objSide      = 12
	warmupFrames = 8 // labelled don't care, as the data set does outside its temporal ROI
)

// objectRect is where the object is in frame i (empty when absent). It
// moves 2 px a frame, left to right, in the middle rows.
func objectRect(i int) image.Rectangle {
	if i < objFirst || i > objLast {
		return image.Rectangle{}
	}
	x := 4 + 2*(i-objFirst)
	return image.Rect(x, 18, x+objSide, 18+objSide)
}

// writeSequence writes a sequence under root/name: input/ frames and, when
// labels is set, frame_labels.csv matching the object. It returns the
// sequence directory and the labels it wrote.
func writeSequence(t *testing.T, root, name string, moving, labels bool) (string, []Label) {
	t.Helper()
	dir := filepath.Join(root, name)
	in := filepath.Join(dir, "input")
	if err := os.MkdirAll(in, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 11))
	bg := make([]uint8, seqW*seqH)
	for y := range seqH {
		for x := range seqW {
			bg[y*seqW+x] = uint8(60 + 40*x/seqW + 30*y/seqH + rng.IntN(11))
		}
	}
	var csv strings.Builder
	csv.WriteString("pos,file,fg,unk,label,rule\n")
	var want []Label
	for i := range seqFrames {
		img := image.NewGray(image.Rect(0, 0, seqW, seqH))
		for p, v := range bg {
			img.Pix[p] = uint8(int(v) + int(rng.NormFloat64()*1.5))
		}
		obj := image.Rectangle{}
		if moving {
			obj = objectRect(i)
		}
		for y := obj.Min.Y; y < obj.Max.Y; y++ {
			for x := obj.Min.X; x < obj.Max.X; x++ {
				lv := uint8(220)
				if ((x-obj.Min.X)/3+(y-obj.Min.Y)/3)%2 == 1 {
					lv = 20
				}
				img.Pix[y*seqW+x] = lv
			}
		}
		file := fmt.Sprintf("in%06d.png", i+1)
		writePNG(t, filepath.Join(in, file), img)
		l := Negative
		switch {
		case i < warmupFrames:
			l = DontCare
		case !obj.Empty():
			l = Positive
		}
		want = append(want, l)
		fmt.Fprintf(&csv, "%d,%s,%d,0,%d,min_frac=0.001\n", i, file, obj.Dx()*obj.Dy(), l)
	}
	if labels {
		writeFile(t, filepath.Join(dir, "frame_labels.csv"), csv.String())
	}
	return dir, want
}

func writePNG(t *testing.T, path string, img image.Image) {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, b.String())
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRunSequenceFindsTheObject(t *testing.T) {
	dir, labels := writeSequence(t, t.TempDir(), "moving", true, true)
	cfg := motion.DefaultConfig()
	r, err := RunSequence(dir, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Frames != seqFrames || len(r.FramePredictions) != seqFrames {
		t.Fatalf("frames %d, predictions %d, want %d", r.Frames, len(r.FramePredictions), seqFrames)
	}
	wantPos := objLast - objFirst + 1
	if r.Positives != wantPos || r.Negatives != seqFrames-wantPos-warmupFrames {
		t.Errorf("positives %d negatives %d, want %d %d", r.Positives, r.Negatives, wantPos, seqFrames-wantPos-warmupFrames)
	}
	if r.Labels != LabelsFromCSV {
		t.Errorf("labels from %q, want %q", r.Labels, LabelsFromCSV)
	}
	if r.Recall == nil || *r.Recall < 0.8 {
		t.Errorf("recall %v, want >= 0.8", deref(r.Recall))
	}
	if r.Precision == nil || *r.Precision < 0.9 {
		t.Errorf("precision %v, want >= 0.9", deref(r.Precision))
	}
	near(t, "event_recall", r.EventRecall, 1)
	near(t, "event_precision", r.EventPrecision, 1)
	near(t, "false_events_per_1000_quiet", r.FalseEventsPer1000Quiet, 0)
	if r.Events != 1 || len(r.PredictedEvents) != 1 {
		t.Fatalf("events %d %v, want one", r.Events, r.PredictedEvents)
	}

	// The event runs from the trigger (the MinMotionFrames-th consecutive
	// motion frame) to the last motion frame plus PostRoll.
	first, last := motionRun(t, r.FramePredictions, labels)
	ev := r.PredictedEvents[0]
	if want := (Span{first + cfg.MinMotionFrames - 1, last + 10}); ev != want {
		t.Errorf("event %v, want %v (motion frames %d..%d)", ev, want, first, last)
	}
}

// TestRunSequenceEventSpan checks the conversion of the Lifecycle's times
// into frames for each way an event ends.
func TestRunSequenceEventSpan(t *testing.T) {
	dir, labels := writeSequence(t, t.TempDir(), "moving", true, true)
	tests := []struct {
		name         string
		fps          float64
		gap, post    time.Duration
		wantLastPlus int // event's last frame minus the last motion frame
	}{
		// EventGap (30 frames) ends the event before the sequence does;
		// PostRoll is 10 frames.
		{"gap at 10 fps", 10, 3 * time.Second, time.Second, 10},
		// At 20 fps EventGap (60 frames) reaches past the end: the event
		// is flushed at the last frame; PostRoll is 20 frames.
		{"flush at 20 fps", 20, 3 * time.Second, time.Second, 20},
		// PostRoll = EventGap: the end is the frame that decided it, which
		// is not part of the event.
		{"post-roll as long as the gap", 10, time.Second, time.Second, 9},
		// A flush cuts PostRoll at the last frame.
		{"flush cuts post-roll", 2, 60 * time.Second, 30 * time.Second, seqFrames - 1 - objLast},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := motion.DefaultConfig()
			cfg.EventGap, cfg.PostRoll = tt.gap, tt.post
			r, err := RunSequence(dir, cfg, Options{FPS: tt.fps})
			if err != nil {
				t.Fatal(err)
			}
			first, last := motionRun(t, r.FramePredictions, labels)
			want := Span{first + cfg.MinMotionFrames - 1, last + tt.wantLastPlus}
			if len(r.PredictedEvents) != 1 || r.PredictedEvents[0] != want {
				t.Errorf("events %v, want [%v] (motion frames %d..%d)", r.PredictedEvents, want, first, last)
			}
			// The frame that closes the event: EventGap after the last
			// motion frame, or past the end (flushed).
			closed := min(last+int(math.Round(tt.gap.Seconds()*tt.fps)), seqFrames)
			if len(r.EventFrames) != 1 || r.EventFrames[0].Closed != closed || r.EventFrames[0].Best < want.First || r.EventFrames[0].Best > last {
				t.Errorf("event frames %+v, want closed at %d and a best frame in [%d, %d]", r.EventFrames, closed, want.First, last)
			}
			if r.TailEvents != 1 || r.TailMaxFrames == nil || *r.TailMaxFrames != closed-objLast || r.BestWithoutMotion != 0 {
				t.Errorf("tail events %d, max %v frames, best without motion %d; want 1, %d, 0", r.TailEvents, deref2(r.TailMaxFrames), r.BestWithoutMotion, closed-objLast)
			}
			near(t, "tail_max_s", r.TailMaxSeconds, float64(closed-objLast)/tt.fps)
		})
	}
}

// motionRun returns the first and last flagged frames, checking they form
// one run (the generated scene has one object pass).
func motionRun(t *testing.T, flags []bool, labels []Label) (int, int) {
	t.Helper()
	first, last := slices.Index(flags, true), -1
	for i, f := range flags {
		if f {
			last = i
		}
	}
	if first < 0 {
		t.Fatal("no frame flagged")
	}
	for i := first; i <= last; i++ {
		if !flags[i] {
			t.Fatalf("frame %d inside the motion run %d..%d not flagged (labels %v)", i, first, last, labels[i])
		}
	}
	return first, last
}

func deref2(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestRunSequenceClock(t *testing.T) {
	dir, _ := writeSequence(t, t.TempDir(), "moving", true, true)
	// A fake wall clock that advances 3 ms a reading: the harness reads it
	// twice a frame, around the detector's work.
	now := time.Unix(1000, 0)
	clock := func() time.Time { now = now.Add(3 * time.Millisecond); return now }
	r, err := RunSequence(dir, motion.DefaultConfig(), Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if r.MsPerFrame != 3 {
		t.Errorf("ms/frame %v, want 3", r.MsPerFrame)
	}
}

func TestRunSequenceQuiet(t *testing.T) {
	dir, _ := writeSequence(t, t.TempDir(), "quiet", false, true)
	r, err := RunSequence(dir, motion.DefaultConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Positives != 0 || r.Negatives != seqFrames-warmupFrames {
		t.Errorf("positives %d negatives %d, want 0 %d", r.Positives, r.Negatives, seqFrames-warmupFrames)
	}
	if r.Events != 0 || r.Flagged != 0 {
		t.Errorf("events %d (%v), flagged %d, want none", r.Events, r.PredictedEvents, r.Flagged)
	}
	near(t, "false_events_per_1000_quiet", r.FalseEventsPer1000Quiet, 0)
	for name, v := range map[string]*float64{"precision": r.Precision, "recall": r.Recall, "f1": r.F1, "event_precision": r.EventPrecision, "event_recall": r.EventRecall} {
		isNil(t, name, v)
	}
}

func TestRunReportJSON(t *testing.T) {
	root := t.TempDir()
	writeSequence(t, root, "moving", true, true)
	writeSequence(t, root, "quiet", false, true)
	writeSequence(t, root, "unlabelled", false, false)                            // input/ only: skipped
	if err := os.MkdirAll(filepath.Join(root, "video", "x"), 0o755); err != nil { // no input/: skipped
		t.Fatal(err)
	}
	rep, err := Run([]string{root}, motion.DefaultConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"moving", "quiet"}; !reflect.DeepEqual(rep.Names, want) {
		t.Errorf("names %v, want %v", rep.Names, want)
	}
	var skipped []string
	for _, s := range rep.Skipped {
		skipped = append(skipped, filepath.Base(s.Dir)+": "+s.Reason)
	}
	if want := []string{"unlabelled: no frame_labels.csv and no groundtruth/ to derive labels from", "video: no input/ and no frame_labels.csv"}; !reflect.DeepEqual(skipped, want) {
		t.Errorf("skipped %q, want %q", skipped, want)
	}

	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	if keys := slices.Sorted(maps.Keys(doc)); !reflect.DeepEqual(keys, []string{"overall", "sequences"}) {
		t.Fatalf("top-level keys %v, want overall and sequences", keys)
	}
	metrics := []string{"precision", "recall", "f1", "event_precision", "event_recall", "false_events_per_1000_quiet"}
	seqs := doc["sequences"]
	if len(seqs) != 2 {
		t.Fatalf("%d sequences in JSON, want 2: %s", len(seqs), b)
	}
	for name, v := range seqs {
		s := v.(map[string]any)
		for _, k := range append(metrics, "frames", "positives", "negatives", "events", "ms_per_frame") {
			if _, ok := s[k]; !ok {
				t.Errorf("sequences.%s has no %q: %v", name, k, s)
			}
		}
	}
	quiet := seqs["quiet"].(map[string]any)
	for _, k := range metrics[:5] {
		if quiet[k] != nil {
			t.Errorf("sequences.quiet.%s = %v, want null", k, quiet[k])
		}
	}
	if quiet["false_events_per_1000_quiet"] != 0.0 {
		t.Errorf("sequences.quiet.false_events_per_1000_quiet = %v, want 0", quiet["false_events_per_1000_quiet"])
	}
	moving := seqs["moving"].(map[string]any)
	for _, k := range metrics {
		if _, ok := moving[k].(float64); !ok {
			t.Errorf("sequences.moving.%s = %v, want a number", k, moving[k])
		}
	}
	// Overall: the means are those of the one sequence with positives.
	o := doc["overall"]
	for _, k := range metrics {
		if o[k] != moving[k] {
			t.Errorf("overall.%s = %v, want moving's %v", k, o[k], moving[k])
		}
	}
	if o["events_on_quiet_sequences"] != 0.0 {
		t.Errorf("overall.events_on_quiet_sequences = %v, want 0", o["events_on_quiet_sequences"])
	}

	var table bytes.Buffer
	if err := WriteTable(&table, rep); err != nil {
		t.Fatal(err)
	}
	out := table.String()
	for _, want := range []string{"moving", "overall (mean of 1)", "skipped " + filepath.Join(root, "video"), "events on the 1 sequences without positives (all false alarms): 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 6 && f[0] == "quiet" && (f[1] != "-" || f[3] != "-" || f[6] != "0.0") {
			t.Errorf("quiet row %q: want - for P..evR and 0.0 false/1k", line)
		}
	}
}

func TestRunMissingDir(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "motion-data")
	_, err := Run([]string{missing}, motion.DefaultConfig(), Options{})
	if err == nil {
		t.Fatal("no error for a missing directory")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v does not wrap fs.ErrNotExist", err)
	}
	for _, want := range []string{missing, "not part of the repo", "pass its path"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := RunSequence(missing, motion.DefaultConfig(), Options{}); err == nil || !strings.Contains(err.Error(), "not part of the repo") {
		t.Errorf("RunSequence: error %v", err)
	}
}

func TestRunErrors(t *testing.T) {
	root := t.TempDir()
	dup := filepath.Join(t.TempDir(), "moving")
	moving, _ := writeSequence(t, root, "moving", true, true)
	writeSequence(t, filepath.Dir(dup), "moving", true, true)
	unlabelled, _ := writeSequence(t, root, "unlabelled", false, false)
	empty := t.TempDir()
	cfg := motion.DefaultConfig()

	tests := []struct {
		name string
		run  func() error
		want string
	}{
		{"no dirs", func() error { _, err := Run(nil, cfg, Options{}); return err }, "no directory"},
		{"empty dir", func() error { _, err := Run([]string{empty}, cfg, Options{}); return err }, "no input/ and no sequence subdirectories"},
		{"duplicate name", func() error { _, err := Run([]string{moving, dup}, cfg, Options{}); return err }, "a sequence named moving was already scored"},
		{"no labels", func() error { _, err := RunSequence(unlabelled, cfg, Options{}); return err }, "no frame_labels.csv and no groundtruth/"},
		{"bad fps", func() error { _, err := RunSequence(moving, cfg, Options{FPS: -1}); return err }, "FPS -1"},
		{"bad config", func() error { c := cfg; c.MinArea = 2; _, err := RunSequence(moving, c, Options{}); return err }, "MinArea"},
	}
	for _, tt := range tests {
		if err := tt.run(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestRunSequenceBadLabels(t *testing.T) {
	cases := []struct {
		name, edit, want string
	}{
		{"missing row", "drop:in000003.png", "1 frames without a label (first in000003.png)"},
		{"extra row", "add:99,in000999.png,0,0,0,x", "1 labels without a frame (first in000999.png)"},
		{"bad label", "add:99,in000999.png,0,0,2,x", `label "2" is not 1, 0 or -1`},
		{"duplicate", "add:0,in000001.png,0,0,0,x", "in000001.png labelled twice"},
		{"no label column", "header:pos,file,fg,unk,lab,rule", "want columns file and label"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, _ := writeSequence(t, t.TempDir(), "s", false, true)
			path := filepath.Join(dir, "frame_labels.csv")
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			op, arg, _ := strings.Cut(c.edit, ":")
			switch op {
			case "drop":
				lines = slices.DeleteFunc(lines, func(l string) bool { return strings.Contains(l, ","+arg+",") })
			case "add":
				lines = append(lines, arg)
			case "header":
				lines[0] = arg
			}
			writeFile(t, path, strings.Join(lines, "\n")+"\n")
			_, err = RunSequence(dir, motion.DefaultConfig(), Options{})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %v, want one naming %s and containing %q", err, path, c.want)
			}
		})
	}
}

func TestRunSequenceCorruptFrame(t *testing.T) {
	dir, _ := writeSequence(t, t.TempDir(), "s", true, true)
	bad := filepath.Join(dir, "input", "in000030.png")
	writeFile(t, bad, "\x89PNG\r\n\x1a\nnot a png at all")
	_, err := RunSequence(dir, motion.DefaultConfig(), Options{})
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "frame 29") {
		t.Errorf("error %v, want one naming %s as frame 29", err, bad)
	}
}

func TestRunSequenceTinyFrames(t *testing.T) {
	// Frames the detector rejects (sides below its minimum) are an error
	// naming the file, not a silently skipped frame.
	dir := filepath.Join(t.TempDir(), "tiny")
	in := filepath.Join(dir, "input")
	if err := os.MkdirAll(in, 0o755); err != nil {
		t.Fatal(err)
	}
	writePNG(t, filepath.Join(in, "a.png"), image.NewGray(image.Rect(0, 0, 4, 4)))
	writeFile(t, filepath.Join(dir, "frame_labels.csv"), "file,label\na.png,0\n")
	_, err := RunSequence(dir, motion.DefaultConfig(), Options{})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(in, "a.png")) || !errors.Is(err, motion.ErrBadFrame) {
		t.Errorf("error %v, want one naming a.png and wrapping motion.ErrBadFrame", err)
	}
}

func TestOptionsResolved(t *testing.T) {
	o, err := Options{}.resolved()
	if err != nil || o.FPS != DefaultFPS || o.GapFrames != DefaultGapFrames || o.Now == nil {
		t.Errorf("zero options resolved to %+v, %v", o, err)
	}
	if o, _ := (Options{GapFrames: -1}).resolved(); o.GapFrames != 0 {
		t.Errorf("GapFrames -1 resolved to %d, want 0", o.GapFrames)
	}
	for _, fps := range []float64{-1, 1001, math.NaN()} {
		if _, err := (Options{FPS: fps}).resolved(); err == nil {
			t.Errorf("FPS %v: no error", fps)
		}
	}
}
