package agent

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestWriteParseRoundTrip(t *testing.T) {
	c := DefaultConfig()
	c.Width = 1280
	c.Motion.EventGap = 7 * time.Second
	c.Dir = "/tmp/with space"
	c.KeyFile = ""
	var buf bytes.Buffer
	if err := WriteConfig(&buf, &c); err != nil {
		t.Fatal(err)
	}
	got := DefaultConfig()
	got.Width = 1
	if err := ParseConfig(&buf, "written", &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip differs:\n got %+v\nwant %+v", got, c)
	}
}

func TestEveryFieldWritten(t *testing.T) {
	c := DefaultConfig()
	var buf bytes.Buffer
	if err := WriteConfig(&buf, &c); err != nil {
		t.Fatal(err)
	}
	for _, f := range Fields() {
		if !strings.Contains(buf.String(), "\n"+f.Name+" = ") {
			t.Errorf("%s missing from the written configuration", f.Name)
		}
		if f.Desc == "" {
			t.Errorf("%s has no description", f.Name)
		}
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	cases := []struct{ in, want string }{
		{"capture.width = -5", "capture.width"},
		{"capture.width = wide", "capture.width"},
		{"capture.fps = 500", "capture.fps"},
		{"capture.source = webcam", "capture.source"},
		{"motion.event_gap = soon", "motion.event_gap"},
		{"motion.min_area = 2", "motion.min_area"},
		{"spool.policy = yolo", "spool.policy"},
		{"capture.format = bogus", "capture.format"},
		{"capture.controls = =3", "capture.controls"},
		{"motion.mask = 0,0 1,1", "motion.mask"},
		{"motion.zones = door 0,0 1,0 1,1", "motion.zones"},
		{"motion.flicker_k = 0.5", "motion.flicker_k"},
		{"motion.shadow = 1", "motion.shadow"},
		{"device.key_backend = hsm", "device.key_backend"},
		{"device.tpm_handle = 0x81000000x", "device.tpm_handle"},
		{"device.tpm_handle = 0x80000001", "device.tpm_handle"},
		{"no.such.key = 1", "no.such.key"},
		{"capture.width", "want \"key = value\""},
		{"capture.width = 100\ncapture.width = 200", "already set on line 1"},
	}
	for _, tc := range cases {
		c := DefaultConfig()
		err := ParseConfig(strings.NewReader(tc.in), "test.conf", &c)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "test.conf:") {
			t.Errorf("%q: error %v, want one naming %q and the line", tc.in, err, tc.want)
		}
	}
}

func TestTPMHandleRoundTrip(t *testing.T) {
	c := DefaultConfig()
	if err := ParseConfig(strings.NewReader("device.key_backend = tpm\ndevice.tpm_handle = 0x817FFFFF\ndevice.tpm = tcp:127.0.0.1:2321"), "t.conf", &c); err != nil {
		t.Fatal(err)
	}
	if c.KeyBackend != "tpm" || c.TPMHandle != 0x817FFFFF || c.TPM != "tcp:127.0.0.1:2321" {
		t.Fatalf("parsed %q %#x %q", c.KeyBackend, c.TPMHandle, c.TPM)
	}
	var buf bytes.Buffer
	if err := WriteConfig(&buf, &c); err != nil || !strings.Contains(buf.String(), "device.tpm_handle = 0x817fffff") {
		t.Fatalf("written: %v\n%s", err, buf.String())
	}
}

func TestEnvOverrides(t *testing.T) {
	c := DefaultConfig()
	if err := ApplyEnv([]string{"PATH=/bin", "KEYFRAME_CAPTURE_WIDTH=800", "KEYFRAME_UPLOAD_URL=https://cloud.example/"}, &c); err != nil {
		t.Fatal(err)
	}
	if c.Width != 800 || c.UploadURL != "https://cloud.example/" {
		t.Fatalf("env not applied: %d %s", c.Width, c.UploadURL)
	}
	err := ApplyEnv([]string{"KEYFRAME_CAPTURE_HEIGHT=x"}, &c)
	if err == nil || !strings.Contains(err.Error(), "capture.height") {
		t.Fatalf("bad env value: %v", err)
	}
	err = ApplyEnv([]string{"KEYFRAME_CAPTUR_WIDTH=1"}, &c)
	if err == nil || !strings.Contains(err.Error(), "KEYFRAME_CAPTUR_WIDTH") {
		t.Fatalf("misspelt env: %v", err)
	}
}

func TestValidateCrossField(t *testing.T) {
	c := DefaultConfig()
	c.Source = "dir"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "capture.dir") {
		t.Fatalf("dir source without dir: %v", err)
	}
	c = DefaultConfig()
	c.BackoffBase = time.Hour
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "upload.backoff_base") {
		t.Fatalf("base above cap: %v", err)
	}
}

// TestValidateReportsEveryMistake: the source's and the MQTT settings'
// checks add to the other mistakes instead of hiding them.
func TestValidateReportsEveryMistake(t *testing.T) {
	c := DefaultConfig()
	c.DataDir = ""
	c.Source, c.Exec = "exec", ""
	c.UploadURL, c.MQTTUsername = "https://cloud.example/", "cam"
	c.BackoffBase = time.Hour
	err := c.Validate()
	for _, key := range []string{"device.data_dir", "capture.exec", "upload.mqtt_username", "upload.backoff_base"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate: %v, want a mistake naming %s", err, key)
		}
	}
}

// TestConfigDocInSync keeps docs/config.md true: it must contain the default
// configuration exactly as `keyframe config` prints it.
func TestConfigDocInSync(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatalf("docs/config.md: %v", err)
	}
	c := DefaultConfig()
	var buf bytes.Buffer
	if err := WriteConfig(&buf, &c); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, buf.Bytes()) {
		t.Fatal("docs/config.md does not contain the current defaults: regenerate its block with `keyframe config`")
	}
}

// TestValidateSource: exec needs a command (and even sides for raw
// frames); a shell pipeline, an unknown exec format and fps 0 on the camera
// are refused, naming the key.
func TestValidateSource(t *testing.T) {
	for _, c := range []struct {
		text, want string
	}{
		{"capture.source = exec", "capture.exec"},
		{"capture.source = exec\ncapture.exec = rpicam-vid -o - | cat", "capture.exec"},
		{"capture.source = exec\ncapture.exec_format = h264", "capture.exec_format"},
		{"capture.source = exec\ncapture.exec = cam\ncapture.exec_format = yuv420\ncapture.width = 321", "capture.width"},
		{"capture.exec_max_jpeg = 100", "capture.exec_max_jpeg"},
		{"capture.fps = 0", "capture.fps"},
	} {
		cfg := DefaultConfig()
		err := ParseConfig(strings.NewReader(c.text), "test.conf", &cfg)
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error naming %s", c.text, err, c.want)
		}
	}
	cfg := DefaultConfig()
	if err := ParseConfig(strings.NewReader("capture.source = exec\ncapture.exec = rpicam-vid -t 0 -n --codec mjpeg -o -"), "pi.conf", &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestConfigTemplate: the template names every key once, commented out; as
// it stands it sets nothing, and with every key uncommented it gives the
// defaults (so the values written there are the defaults, and valid).
func TestConfigTemplate(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteConfigTemplate(&buf); err != nil {
		t.Fatal(err)
	}
	tmpl := buf.String()
	for _, f := range Fields() {
		if n := strings.Count(tmpl, "\n#"+f.Name+" = "); n != 1 {
			t.Errorf("%s appears %d times commented out, want once", f.Name, n)
		}
	}
	got := DefaultConfig()
	got.Width, got.DataDir = 1, "/unchanged"
	want := got
	if err := ParseConfig(strings.NewReader(tmpl), "template", &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the template as installed sets keys:\n got %+v\nwant %+v", got, want)
	}
	var uncommented strings.Builder
	for _, line := range strings.SplitAfter(tmpl, "\n") {
		if name, _, ok := strings.Cut(line, " = "); ok && strings.HasPrefix(name, "#") && !strings.Contains(name, " ") {
			line = line[1:]
		}
		uncommented.WriteString(line)
	}
	got = DefaultConfig()
	got.Width, got.DataDir = 1, "/unchanged"
	if err := ParseConfig(strings.NewReader(uncommented.String()), "uncommented", &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, DefaultConfig()) {
		t.Fatalf("the template uncommented is not the defaults:\n got %+v\nwant %+v", got, DefaultConfig())
	}
}

// TestConffileInSync keeps the package's /etc/keyframe/keyframe.conf
// (packaging/keyframe.conf) equal to the template; `make config-doc`
// regenerates it.
func TestConffileInSync(t *testing.T) {
	file, err := os.ReadFile("../packaging/keyframe.conf")
	if err != nil {
		t.Fatalf("packaging/keyframe.conf: %v", err)
	}
	var buf bytes.Buffer
	if err := WriteConfigTemplate(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, buf.Bytes()) {
		t.Fatal("packaging/keyframe.conf is not the current template: run `make config-doc` (keyframe config -template)")
	}
}
