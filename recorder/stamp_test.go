package recorder_test

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/recorder"
)

func boardRoot(t *testing.T, files map[string]string) *board.FS {
	t.Helper()
	root := t.TempDir()
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := board.NewFS(root)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStamper(t *testing.T) {
	b := boardRoot(t, map[string]string{
		"proc/sys/kernel/random/boot_id": "3f1c9a52-7e0b-4d8e-9a61-0c5b2d7e4f10\n",
		"proc/uptime":                    "100.50 80.00\n",
	})
	now := time.Date(2025, 11, 24, 12, 0, 0, 0, time.UTC)
	synced, up, upErr := false, 42*time.Second, error(nil)
	s, err := recorder.NewStamper(recorder.StampConfig{
		Board:     b,
		Synced:    func() bool { return synced },
		SinceBoot: func() (time.Duration, error) { return up, upErr },
		Now:       func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.Boot() != "3f1c9a52-7e0b-4d8e-9a61-0c5b2d7e4f10" {
		t.Errorf("boot %q", s.Boot())
	}
	wall := time.UnixMilli(1764000000123)
	if got := s.Now().Time(wall); got != (provenance.Time{UnixMs: 1764000000123, BootMs: 42000, Clock: provenance.ClockUnsynced}) {
		t.Errorf("unsynced stamp %+v", got)
	}
	synced = true
	if got := s.Now().Time(wall); got.Clock != provenance.ClockSynced {
		t.Errorf("synced stamp %+v", got)
	}
	// No boot-time clock: the uptime read at the start, plus the clock since.
	upErr = errors.ErrUnsupported
	now = now.Add(2 * time.Second)
	if got := s.Now(); got.SinceBoot != 102500*time.Millisecond {
		t.Errorf("since boot without the kernel's clock: %v, want 1m42.5s", got.SinceBoot)
	}
}

// Without a kernel boot ID (off Linux) every process makes up its own, the
// same way for the agent and keyframe identity.
func TestStamperProcessBootID(t *testing.T) {
	b := boardRoot(t, nil)
	ids := map[string]bool{}
	for range 2 {
		s, err := recorder.NewStamper(recorder.StampConfig{Board: b})
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^process-[0-9a-hjkmnp-tv-z]{13}$`).MatchString(s.Boot()) {
			t.Errorf("boot ID %q is not process-<random>", s.Boot())
		}
		ids[s.Boot()] = true
	}
	if len(ids) != 2 {
		t.Error("two processes made the same boot ID")
	}
}
