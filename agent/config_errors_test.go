package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadConfigReportsEveryMistake: a file with four mistakes (a line that
// is no "key = value", an unknown key, a bad value, a key set twice) and a
// bad KEYFRAME_* variable is refused with all five named, each with its
// line; a file with many mistakes stops at maxConfigErrors and says so.
func TestLoadConfigReportsEveryMistake(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "four.conf")
	text := "device.data_dir = " + dir + "\ncapture.width = huge\nno equals sign\ncapture.widht = 320\nmotion.noise_floor = 999\ncapture.height = 480\ncapture.height = 240\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(conf, []string{"KEYFRAME_CAPTURE_FPS=fast"})
	if err == nil {
		t.Fatal("LoadConfig accepted four mistakes")
	}
	for _, want := range []string{conf + ":2: capture.width", conf + ":3: want \"key = value\"", conf + `:4: unknown key "capture.widht"`,
		conf + ":5: motion.noise_floor: 999 is out of range", conf + ":7: capture.height already set on line 6", "KEYFRAME_CAPTURE_FPS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not name %q:\n%v", want, err)
		}
	}
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 2 { // the file's (four joined), the environment's
		t.Errorf("%d errors joined at the top, want the file's and the environment's", n)
	}

	var many strings.Builder
	for i := range 3 * maxConfigErrors {
		fmt.Fprintf(&many, "nokey%d = 1\n", i)
	}
	manyConf := filepath.Join(dir, "many.conf")
	if err := os.WriteFile(manyConf, []byte(many.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(manyConf, nil)
	if err == nil || strings.Count(err.Error(), "unknown key") != maxConfigErrors || !strings.Contains(err.Error(), "stopped after") {
		t.Errorf("a file of %d mistakes: %v", 3*maxConfigErrors, err)
	}

	// The checks between keys: each one that fails is named.
	both := filepath.Join(dir, "both.conf")
	if err := os.WriteFile(both, []byte("device.data_dir = "+dir+"\ncapture.retry = 1m\ncapture.retry_cap = 1s\nupload.backoff_base = 1m\nupload.backoff_cap = 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(both, nil)
	if err == nil || !strings.Contains(err.Error(), "capture.retry:") || !strings.Contains(err.Error(), "upload.backoff_base:") {
		t.Errorf("two failed checks between keys: %v", err)
	}
}
