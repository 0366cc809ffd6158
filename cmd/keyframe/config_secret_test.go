package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigDoesNotPrintMQTTPassword: `keyframe config` prints the MQTT
// username and the password file's path, never the password in it.
func TestConfigDoesNotPrintMQTTPassword(t *testing.T) {
	dir := t.TempDir()
	const password = "hunter2-not-printed"
	pw := filepath.Join(dir, "mqtt.pw")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "keyframe.conf")
	text := "device.data_dir = " + filepath.Join(dir, "data") + "\n" +
		"upload.url = mqtt://192.168.1.5\n" +
		"upload.mqtt_allow_plaintext_lan = true\n" +
		"upload.mqtt_username = camera\n" +
		"upload.mqtt_password_file = " + pw + "\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := dispatch([]string{"config", "-config", conf}, &out, &errb); code != 0 {
		t.Fatalf("config: code %d, stderr %q", code, errb.String())
	}
	for _, line := range []string{"\nupload.mqtt_username = camera\n", "\nupload.mqtt_password_file = " + pw + "\n", "\nupload.mqtt_allow_plaintext_lan = true\n"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("config does not print %q", strings.TrimSpace(line))
		}
	}
	if strings.Contains(out.String()+errb.String(), password) {
		t.Errorf("config printed the MQTT password:\n%s%s", out.String(), errb.String())
	}

	// Without the opt-in the same file is refused, naming the key.
	plain := filepath.Join(dir, "plain.conf")
	if err := os.WriteFile(plain, []byte(strings.Replace(text, "upload.mqtt_allow_plaintext_lan = true\n", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if code := dispatch([]string{"config", "-config", plain}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "upload.mqtt_allow_plaintext_lan") {
		t.Errorf("config of mqtt:// to a LAN address without the opt-in: code %d, stderr %q; want 2 naming upload.mqtt_allow_plaintext_lan", code, errb.String())
	}
}
