package receiver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/uploader/mosquittotest"
)

// TestMQTTIngestPasswordFile: the ingest reads its password from a file
// others cannot read, connects with it to a password broker (Home
// Assistant's add-on), in clear text on a LAN address only with
// AllowPlaintextLAN; a readable, missing or wrong file is refused.
func TestMQTTIngestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := MQTTConfig{Broker: "tls://b.example", Username: "receiver", PasswordFile: write("pw", "p4ss word\n", 0o600)}
	m, err := NewMQTTIngest(good, &fakeIngester{})
	if err != nil || m.cfg.Password != "p4ss word" {
		t.Fatalf("password file: %v (password read: %v)", err, err == nil && m.cfg.Password == "p4ss word")
	}
	for name, path := range map[string]string{"readable by all": write("open", "p4ss word\n", 0o644), "missing": filepath.Join(dir, "none")} {
		c := good
		c.PasswordFile = path
		if _, err := NewMQTTIngest(c, &fakeIngester{}); err == nil || !strings.Contains(err.Error(), filepath.Base(path)) || strings.Contains(err.Error(), "p4ss") {
			t.Errorf("%s: %v, want an error naming the file, without the password", name, err)
		}
	}
	lan := good
	lan.Broker = "mqtt://192.168.1.4"
	if _, err := NewMQTTIngest(lan, &fakeIngester{}); err == nil {
		t.Error("mqtt:// to a LAN address accepted without AllowPlaintextLAN")
	}
	lan.AllowPlaintextLAN = true
	if _, err := NewMQTTIngest(lan, &fakeIngester{}); err != nil {
		t.Errorf("mqtt:// to a LAN address with AllowPlaintextLAN: %v", err)
	}

	// A real broker: the file's password gets in, a wrong one says so.
	b := mosquittotest.StartPasswords(t, mosquittotest.PasswordConfig{Host: mosquittotest.LANAddr(t), Users: map[string]string{"receiver": "p4ss word"}})
	env := newEnv(t, Options{})
	c := good
	c.Broker, c.AllowPlaintextLAN = b.URL, true
	ing, err := NewMQTTIngest(c, env.srv)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ing.dial(t.Context())
	if err != nil {
		t.Fatalf("connect with the file's password: %v\n%s", err, b.Log())
	}
	s.Close()
	c.PasswordFile = write("wrong", "nope\n", 0o600)
	if ing, err = NewMQTTIngest(c, env.srv); err != nil {
		t.Fatal(err)
	}
	if _, err := ing.dial(t.Context()); err == nil || !strings.Contains(err.Error(), `refused the credentials: wrong password for user "receiver"`) {
		t.Errorf("a wrong password: %v, want the credentials refusal naming the user", err)
	}
}
