package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/receiver"
	"github.com/keyframe-cam/keyframe/uploader/mosquittotest"
)

// The password of the tests' password brokers: it must appear in no log.
const (
	cameraPassword   = "camera pass-7Qx"
	receiverPassword = "receiver pass-9Wz"
	haPassword       = "ha pass-3Kd"
)

// TestMQTTPasswordConfig: an mqtt:// broker on a private network is refused
// at validation unless upload.mqtt_allow_plaintext_lan is set, and the error
// names that key; a public address is refused even with it; a password file
// needs a username, and MQTT credentials need an MQTT upload.url.
func TestMQTTPasswordConfig(t *testing.T) {
	for _, c := range []struct {
		url, user, pwFile string
		lan               bool
		want              string // "" = valid
	}{
		{url: "mqtt://192.168.1.5", user: "camera", want: "upload.mqtt_allow_plaintext_lan = true"},
		{url: "mqtt://homeassistant.local", user: "camera", want: "upload.mqtt_allow_plaintext_lan = true"},
		{url: "mqtt://192.168.1.5", user: "camera", lan: true},
		{url: "mqtt://[fd00::5]:1883", user: "camera", pwFile: "/etc/keyframe/mqtt.pw", lan: true},
		{url: "mqtt://homeassistant.local", user: "camera", lan: true},
		{url: "mqtt://203.0.113.9", user: "camera", lan: true, want: "private-network"},
		{url: "mqtts://203.0.113.9", user: "camera", pwFile: "/etc/keyframe/mqtt.pw"},
		{url: "tcp://127.0.0.1:1883", user: "camera"},
		{url: "mqtts://broker.example", pwFile: "/etc/keyframe/mqtt.pw", want: "upload.mqtt_password_file: needs upload.mqtt_username"},
		{url: "https://receiver.example", user: "camera", want: "for an MQTT upload.url (mqtts://), and upload.url"},
	} {
		cfg := DefaultConfig()
		cfg.UploadURL, cfg.MQTTUsername, cfg.MQTTPasswordFile, cfg.MQTTPlaintextLAN = c.url, c.user, c.pwFile, c.lan
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v, want valid", c, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: %v, want an error with %q", c, err, c.want)
		}
	}
}

// TestReadPassword: the password is the file's first line; a file others
// may read, an empty one and a missing one are refused with the file
// named, and no error carries the password.
func TestReadPassword(t *testing.T) {
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
	for text, want := range map[string]string{"s3cret\n": "s3cret", "s3cret": "s3cret", "two words\r\nignored\n": "two words"} {
		if got, err := readPassword(write("pw", text, 0o600)); err != nil || got != want {
			t.Errorf("readPassword of %q = %q, %v; want %q", text, got, err, want)
		}
	}
	if got, err := readPassword(""); got != "" || err != nil {
		t.Errorf("readPassword(\"\") = %q, %v; want no password", got, err)
	}
	for _, c := range []struct {
		path, want string
	}{
		{write("open", "s3cret\n", 0o644), "mode 0644"},
		{write("empty", "\ns3cret\n", 0o600), "first line is empty"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		_, err := readPassword(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), filepath.Base(c.path)) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("readPassword(%s) = %v; want an error naming the file with %q, without the password", c.path, err, c.want)
		}
	}
}

// passwordFile writes pw to a 0600 file under dir.
func passwordFile(t *testing.T, dir, name, pw string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEndToEndMQTTPasswords runs the real agent against Mosquitto as Home
// Assistant's add-on runs it: usernames and passwords, no client
// certificates, no ACL; over TLS, and in clear text to a private-network
// address with upload.mqtt_allow_plaintext_lan. The receiver ingests with
// its own username: start and end records arrive verified; Home Assistant
// (its own user) sees the discovery configs and motion. No log line of the
// agent (at debug level) carries the password.
func TestEndToEndMQTTPasswords(t *testing.T) {
	for name, useTLS := range map[string]bool{"tls": true, "plain lan": false} {
		t.Run(name, func(t *testing.T) {
			pc := mosquittotest.PasswordConfig{TLS: useTLS, Users: map[string]string{"camera": cameraPassword, "receiver": receiverPassword, "homeassistant": haPassword}}
			if !useTLS {
				pc.Host = mosquittotest.LANAddr(t)
			}
			broker := mosquittotest.StartPasswords(t, pc)
			passwordEndToEnd(t, broker, !useTLS)
		})
	}
}

func passwordEndToEnd(t *testing.T, broker *mosquittotest.Broker, lan bool) {
	dir := t.TempDir()
	quiet := quietLogger()
	cfg := testConfig(dir, 320, 240)
	cfg.UploadURL = broker.URL
	cfg.MQTTUsername = "camera"
	cfg.MQTTPasswordFile = passwordFile(t, dir, "mqtt.pw", cameraPassword)
	cfg.MQTTPlaintextLAN = lan
	if !lan {
		trustBroker(t, broker, &cfg, dir)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	key, device, _, err := Identity(&cfg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := board.PublicKeyPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	closeKey(key)
	rdir := filepath.Join(dir, "receiver")
	pairDevice(t, rdir, pub, device)
	srv, lines := openReceiver(t, rdir, quiet)
	mc := receiver.MQTTConfig{Broker: broker.URL, Username: "receiver", Password: receiverPassword, AllowPlaintextLAN: lan, Logger: quiet}
	if !lan {
		mc.RootCAs = broker.RootCAs
	}
	ingest, err := receiver.NewMQTTIngest(mc, srv)
	if err != nil {
		t.Fatal(err)
	}

	ha := make(chan paho.Message, 256)
	haOpts := paho.NewClientOptions().AddBroker(broker.URL).SetClientID("ha-test").SetUsername("homeassistant").SetPassword(haPassword).
		SetProtocolVersion(4).SetAutoReconnect(false)
	if !lan {
		haOpts.SetTLSConfig(&tls.Config{RootCAs: broker.RootCAs, ServerName: broker.ServerName(), MinVersion: tls.VersionTLS12})
	}
	haClient := paho.NewClient(haOpts)
	if tok := haClient.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("home assistant connect: %v", tok.Error())
	}
	defer haClient.Disconnect(100)
	for _, f := range []string{"homeassistant/#", "keyframe/" + device + "/motion"} {
		if tok := haClient.Subscribe(f, 1, func(_ paho.Client, m paho.Message) { ha <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", f, tok.Error())
		}
	}

	logs := &lockedBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go ingest.Run(ctx)
	a, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitStartEnd(ctx, t, lines, done, func() string { return "agent log:\n" + logs.String() + "\nbroker log:\n" + broker.Log() })
	var discovery, motionOn bool
	deadline := time.After(20 * time.Second)
	for !discovery || !motionOn {
		select {
		case m := <-ha:
			switch {
			case strings.HasPrefix(m.Topic(), "homeassistant/") && strings.Contains(m.Topic(), device):
				var v map[string]any
				// The motion binary_sensor's config, with its state topic.
				discovery = discovery || (json.Unmarshal(m.Payload(), &v) == nil && v["state_topic"] == "keyframe/"+device+"/motion")
			case strings.HasSuffix(m.Topic(), "/motion"):
				motionOn = motionOn || string(m.Payload()) == "ON"
			}
		case <-deadline:
			t.Fatalf("Home Assistant saw discovery %v, motion on %v", discovery, motionOn)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent: %v", err)
	}
	if strings.Contains(logs.String(), cameraPassword) {
		t.Errorf("the agent logged the MQTT password:\n%s", logs)
	}
}

// TestMQTTWrongPassword: a wrong password delivers nothing, and the agent's
// log says the broker refused the credentials of its user, without the
// password.
func TestMQTTWrongPassword(t *testing.T) {
	broker := mosquittotest.StartPasswords(t, mosquittotest.PasswordConfig{TLS: true, Users: map[string]string{"camera": cameraPassword}})
	dir := t.TempDir()
	cfg := testConfig(dir, 320, 240)
	cfg.UploadURL = broker.URL
	cfg.MQTTUsername = "camera"
	const wrong = "not the pass-5Tq"
	cfg.MQTTPasswordFile = passwordFile(t, dir, "mqtt.pw", wrong)
	trustBroker(t, broker, &cfg, dir)
	logs := &lockedBuffer{}
	a, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	const want = `the broker refused the credentials: wrong password for user \"camera\"`
	for !strings.Contains(logs.String(), want) {
		select {
		case err := <-done:
			t.Fatalf("agent stopped: %v\n%s", err, logs)
		case <-ctx.Done():
			t.Fatalf("no log line with %q:\n%s", want, logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if st := a.mqtt.Stats(); st.Published != 0 || st.Connects != 0 {
		t.Errorf("with a wrong password: %d connects, %d records published; want none", st.Connects, st.Published)
	}
	cancel()
	<-done
	if strings.Contains(logs.String(), wrong) {
		t.Errorf("the agent logged the MQTT password:\n%s", logs)
	}
}
