package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestStormFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--devices", "0"},
		{"--events", "0"},
		{"--outage", "0s"},
		{"--mixup-rate", "1.5"},
		{"--owners", "20", "--devices", "10"},
		{"--devices", "many"},
		{"extra"},
	} {
		var out, errb bytes.Buffer
		if code := dispatch(append([]string{"storm"}, args...), &out, &errb); code != 2 {
			t.Errorf("storm %v: exit %d, want 2 (stderr %q)", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := dispatch([]string{"storm", "-h"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "control_peak_rps") || !strings.Contains(out.String(), "-mixup-rate") {
		t.Errorf("storm -h: exit %d, stdout %q", code, out.String())
	}
}

// TestStormRuns runs a tiny storm (the uploader's timings scaled down) and
// checks the summary line and the JSON.
func TestStormRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("a real storm of a few seconds; skipped with -short")
	}
	var out, errb bytes.Buffer
	args := []string{"storm", "--devices", "8", "--events", "1", "--owners", "4", "--outage", "500ms", "--mixup-rate", "0.5",
		"--retry-window", "300ms", "--backoff-base", "50ms", "--backoff-cap", "300ms", "--naive-retry", "100ms", "--rate", "100",
		"--seed", "3", "--dir", t.TempDir(), "--json"}
	if code := dispatch(args, &out, &errb); code != 0 {
		t.Fatalf("storm: exit %d\nstdout %s\nstderr %s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "storm: devices=8 events=1 lost=0 duplicates=0 misattributed=0 peak_rps=") {
		t.Errorf("summary line missing from stderr: %q", errb.String())
	}
	var res struct {
		Devices        int            `json:"devices"`
		Lost           int            `json:"lost"`
		Misattributed  int            `json:"misattributed"`
		ControlPeakRPS int            `json:"control_peak_rps"`
		Seed           uint64         `json:"seed"`
		Jittered       map[string]any `json:"jittered"`
		Control        map[string]any `json:"control"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not the JSON result: %v\n%s", err, out.String())
	}
	if res.Devices != 8 || res.Lost != 0 || res.Misattributed != 0 || res.Seed != 3 || res.ControlPeakRPS == 0 || res.Jittered["created"] != float64(8*2*2) || res.Control == nil {
		t.Errorf("result: %+v", res)
	}
}
