package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/uploader"
)

// TestConfigSegmentBudgetAndMaxRate: spool.segment_bytes defaults to the
// uploader's segment budget and takes a value in range; upload.max_rate is
// 0 (no cap) by default and takes a bandwidth of at least 1024 bytes/s;
// anything else is refused with the key named.
func TestConfigSegmentBudgetAndMaxRate(t *testing.T) {
	dir := t.TempDir()
	load := func(text string) (Config, error) {
		t.Helper()
		conf := filepath.Join(dir, "keyframe.conf")
		if err := os.WriteFile(conf, []byte("device.data_dir = "+dir+"\n"+text), 0o600); err != nil {
			t.Fatal(err)
		}
		return LoadConfig(conf, nil)
	}
	c, err := load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.SpoolSegBytes != uploader.DefaultSegmentMaxBytes || c.UploadMaxRate != 0 {
		t.Errorf("defaults: spool.segment_bytes %d, upload.max_rate %d; want %d and 0", c.SpoolSegBytes, c.UploadMaxRate, uploader.DefaultSegmentMaxBytes)
	}
	c, err = load("spool.segment_bytes = 8388608\nupload.max_rate = 250000\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.SpoolSegBytes != 8<<20 || c.UploadMaxRate != 250000 {
		t.Errorf("set: spool.segment_bytes %d, upload.max_rate %d", c.SpoolSegBytes, c.UploadMaxRate)
	}
	for text, want := range map[string]string{
		"spool.segment_bytes = 1000\n": "spool.segment_bytes: 1000 is out of range",
		"spool.segment_bytes = -1\n":   "spool.segment_bytes: -1 is out of range",
		"spool.segment_bytes = lots\n": "spool.segment_bytes: \"lots\" is not an integer",
		"upload.max_rate = 512\n":      "upload.max_rate: 512 bytes/s is below 1024",
		"upload.max_rate = -5\n":       "upload.max_rate: -5 is out of range",
		"upload.max_rate = 1.5e6\n":    "upload.max_rate: \"1.5e6\" is not an integer",
	} {
		if _, err := load(text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error containing %q", text, err, want)
		}
	}
}
