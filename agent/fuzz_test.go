package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzConfig feeds arbitrary configuration text and KEYFRAME_* environment
// (entries separated by NUL, as no environment entry can hold one) to
// ParseConfig and LoadConfig: they must never panic, and their errors are
// the agent's. A configuration LoadConfig accepts validates, and writing it
// with WriteConfig and reading it back gives an equal Config, with and
// without the defaults underneath.
func FuzzConfig(f *testing.F) {
	var full bytes.Buffer
	def := DefaultConfig()
	if err := WriteConfig(&full, &def); err != nil {
		f.Fatal(err)
	}
	f.Add(full.String(), "")
	f.Add("", "")
	f.Add("capture.source = synthetic\ncapture.fps = 0\ncapture.width = 320\n", "KEYFRAME_CAPTURE_HEIGHT=240")
	f.Add("device.data_dir = \"/tmp/with space\"\n# comment\n\nspool.policy = drop-oldest\n", "KEYFRAME_SPOOL_DIR=/x\x00KEYFRAME_LOG_LEVEL=debug")
	f.Add("motion.zones = door: 0,0 1,0 1,1; yard: 0,0.5 1,0.5 1,1\nmotion.mask = 0,0 0.5,0 0.5,0.5\n", "")
	f.Add("device.tpm_handle = 0x81000001\ndevice.key_backend = tpm\n", "")
	f.Add("upload.backoff_base = 2s\nupload.backoff_cap = 1s\n", "")
	f.Add("capture.controls = \"exposure_absolute=100, gain=4\"\ncapture.format = yuyv\n", "")
	f.Add("capture.dir = \"\\\"quoted\\\" #hash\"\ncapture.source = dir\n", "KEYFRAME_CAPTURE_DIR= lead")
	f.Add("upload.rate = 1e-2\nmotion.min_area = 0x1p-10\ncapture.seed = -4611686018427387904\n", "")
	f.Add("capture.width = 100\ncapture.width = 200\n", "")
	f.Add("=\n", "KEYFRAME_=1\x00KEYFRAME_NOPE=2\x00PATH=/bin")

	f.Fuzz(func(t *testing.T, text, env string) {
		var environ []string
		if env != "" {
			environ = strings.Split(env, "\x00")
		}
		// ParseConfig alone, over the defaults and over a zero Config.
		for _, base := range []Config{DefaultConfig(), {}} {
			if err := ParseConfig(strings.NewReader(text), "fuzz.conf", &base); err != nil && !strings.HasPrefix(err.Error(), "agent: config fuzz.conf") {
				t.Fatalf("ParseConfig error %q does not name the file", err)
			}
		}
		path := filepath.Join(t.TempDir(), "keyframe.conf")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(path, environ)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "agent: ") {
				t.Fatalf("LoadConfig error %q is not the agent's", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("LoadConfig accepted a configuration that does not validate: %v", err)
		}
		if name, why := unwritable(&c); why != "" {
			t.Fatalf("WriteConfig writes %s %s, so the file it writes does not read back", name, why)
		}
		var buf bytes.Buffer
		if err := WriteConfig(&buf, &c); err != nil {
			t.Fatal(err)
		}
		for _, base := range []Config{DefaultConfig(), {}} {
			got := base
			if err := ParseConfig(bytes.NewReader(buf.Bytes()), "written", &got); err != nil {
				t.Fatalf("the written configuration does not parse: %v\n%s", err, buf.String())
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("round trip differs:\n got %+v\nwant %+v\nwritten:\n%s", got, c, buf.String())
			}
		}
		// The written file, loaded on its own, is the same configuration.
		if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := LoadConfig(path, nil)
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("LoadConfig of the written file: %v\n got %+v\nwant %+v", err, again, c)
		}
	})
}

// unwritable names the first field of c that WriteConfig cannot write so
// that ParseConfig reads it back (see TestConfigRoundTripsEveryValue), and
// why; why is "" if there is none.
func unwritable(c *Config) (name, why string) {
	for _, f := range Fields() {
		v := f.Value(c)
		switch {
		case strings.Contains(v, "\n") && quoteIfNeeded(v) == v:
			return f.Name, "with a line break unquoted"
		case len(f.Name)+3+len(quoteIfNeeded(v)) >= maxConfigLine:
			return f.Name, "on a line longer than ParseConfig reads"
		}
	}
	return "", ""
}

// TestConfigRoundTripsEveryValue: every value LoadConfig accepts (an
// environment variable can carry what a file line cannot: line breaks,
// long values) must survive WriteConfig and ParseConfig; a value over
// maxConfigValue is refused when read, naming the variable.
func TestConfigRoundTripsEveryValue(t *testing.T) {
	for _, c := range []struct{ name, env string }{
		{"line break", "KEYFRAME_CAPTURE_DIR=/srv/frames\nupload.url = https://attacker.example"},
		{"line break and a word", "KEYFRAME_CAPTURE_DIR=/srv/frames\nlater"},
		{"line break and a hash", "KEYFRAME_CAPTURE_DIR=/srv/frames\n# quoted, since it holds a hash"},
		{"64 KiB", "KEYFRAME_CAPTURE_DIR=/" + strings.Repeat("a", maxConfigValue-1)},
		{"64 KiB of control characters", "KEYFRAME_CAPTURE_DIR=/" + strings.Repeat("\x01", maxConfigValue-1)},
	} {
		t.Run(c.name, func(t *testing.T) {
			want, err := LoadConfig("", []string{c.env})
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := WriteConfig(&buf, &want); err != nil {
				t.Fatal(err)
			}
			got := DefaultConfig()
			err = ParseConfig(bytes.NewReader(buf.Bytes()), "written", &got)
			if err == nil && reflect.DeepEqual(got, want) {
				return
			}
			t.Fatalf("a capture.dir of %d bytes from the environment does not read back: error %v, capture.dir read back %q",
				len(want.Dir), err, shorten(got.Dir))
		})
	}
}

func shorten(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func TestConfigValueTooLong(t *testing.T) {
	_, err := LoadConfig("", []string{"KEYFRAME_CAPTURE_DIR=/" + strings.Repeat("a", maxConfigValue)})
	if err == nil || !strings.Contains(err.Error(), "KEYFRAME_CAPTURE_DIR") || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("a value over the bound: %v, want a refusal naming the variable", err)
	}
}
