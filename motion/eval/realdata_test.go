package eval

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/motion"
)

// motionData returns the labelled data set's directory from
// KEYFRAME_MOTION_DATA, or skips: the data set is not part of the repo. In
// CI (CI=true, where .ci/run sets KEYFRAME_MOTION_DATA) it fails instead.
func motionData(t *testing.T) string {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("CI") == "true" {
		skip = t.Fatalf
	}
	dir := os.Getenv("KEYFRAME_MOTION_DATA")
	if dir == "" {
		skip("KEYFRAME_MOTION_DATA not set: set it to the labelled footage (../shared/motion-data on the developers' and CI's machines) to run this test")
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		skip("KEYFRAME_MOTION_DATA=%s is not a directory: the labelled footage is not on this machine", dir)
	}
	return dir
}

// The default detector's quality floor on the data set: the targets of
// issue 14 (2026-12-06, measured: frame F1 0.932, event precision 0.958,
// event recall 1.00, no event on the quiet sequences, every best frame on
// labelled motion; means over the sequences with positive frames). A
// detector change that falls below it fails TestRealData.
const (
	minF1             = 0.93
	minEventPrecision = 0.95
	minEventRecall    = 0.95
	maxQuietEvents    = 0
	// Event tails: motion.post_roll + motion.event_gap + 1 s (issue 14).
	maxTailSeconds = 5.0
	// Events on labelled motion whose best frame (the thumbnail) is not.
	maxBestWithoutMotion = 0
)

// TestRealData runs the default detector over the whole data set, checks
// what the JSON looks like and holds the overall figures to the floor above.
func TestRealData(t *testing.T) {
	dir := motionData(t)
	rep, err := Run([]string{dir}, motion.DefaultConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Sequences) == 0 || len(rep.Names) != len(rep.Sequences) {
		t.Fatalf("%d sequences, %d names", len(rep.Sequences), len(rep.Names))
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Sequences map[string]map[string]any `json:"sequences"`
		Overall   map[string]any            `json:"overall"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	metrics := []string{"precision", "recall", "f1", "event_precision", "event_recall", "false_events_per_1000_quiet"}
	for name, s := range doc.Sequences {
		for _, k := range metrics {
			if _, ok := s[k]; !ok {
				t.Errorf("sequences.%s has no %q", name, k)
			}
		}
		if s["frames"].(float64) <= 0 {
			t.Errorf("sequences.%s: no frames", name)
		}
	}
	for _, k := range append(metrics, "events_on_quiet_sequences") {
		if _, ok := doc.Overall[k]; !ok {
			t.Errorf("overall has no %q", k)
		}
	}
	var table strings.Builder
	if err := WriteTable(&table, rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("default config on %s:\n%s", dir, table.String())
	o := rep.Overall
	for _, f := range []struct {
		name string
		got  *float64
		min  float64
	}{
		{"frame F1", o.F1, minF1},
		{"event precision", o.EventPrecision, minEventPrecision},
		{"event recall", o.EventRecall, minEventRecall},
	} {
		if f.got == nil {
			t.Errorf("overall %s: not measured (no sequence with positive frames?)", f.name)
		} else if *f.got < f.min {
			t.Errorf("overall %s %.3f, want >= %.2f", f.name, *f.got, f.min)
		}
	}
	if o.TailMaxSeconds == nil || *o.TailMaxSeconds > maxTailSeconds {
		t.Errorf("longest event tail %v s, want <= %v", o.TailMaxSeconds, maxTailSeconds)
	}
	if o.EventsOnQuietSequences > maxQuietEvents {
		t.Errorf("%d events on the sequences without motion, want <= %d", o.EventsOnQuietSequences, maxQuietEvents)
	}
	if o.BestWithoutMotion > maxBestWithoutMotion {
		t.Errorf("%d events whose best frame has no labelled motion, want <= %d", o.BestWithoutMotion, maxBestWithoutMotion)
	}
}

// TestRealDataDerivedLabels checks DeriveLabels against the data set's own
// frame_labels.csv wherever that file says it applied the mask rule
// (rule "min_frac=0.001"; other rules, such as a script of events, are not
// derivable from masks).
func TestRealDataDerivedLabels(t *testing.T) {
	dir := motionData(t)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, e := range entries {
		seq := filepath.Join(dir, e.Name())
		if !isDir(filepath.Join(seq, truthDir)) || !fileExists(filepath.Join(seq, labelsFile)) {
			continue
		}
		if !maskRule(t, filepath.Join(seq, labelsFile)) {
			t.Logf("%s: labels not from the mask rule, not derivable", e.Name())
			continue
		}
		files, err := listImages(filepath.Join(seq, inputDir))
		if err != nil {
			t.Fatal(err)
		}
		want, err := readLabelsFile(filepath.Join(seq, labelsFile), files)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DeriveLabels(seq, files)
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			n := 0
			for i := range got {
				if got[i] != want[i] {
					n++
				}
			}
			t.Errorf("%s: %d of %d derived labels differ from %s", e.Name(), n, len(got), labelsFile)
		}
		checked++
	}
	if checked == 0 {
		t.Skipf("no sequence in %s has both %s from masks and %s/", dir, labelsFile, truthDir)
	}
}

// maskRule reports whether every row of a frame_labels.csv has the rule
// "min_frac=0.001", the mask rule with MinForegroundFraction.
func maskRule(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 2 {
		return false
	}
	col := -1
	for i, h := range rows[0] {
		if h == "rule" {
			col = i
		}
	}
	if col < 0 {
		return false
	}
	for _, r := range rows[1:] {
		if r[col] != "min_frac=0.001" { // MinForegroundFraction
			return false
		}
	}
	return true
}
