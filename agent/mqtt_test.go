package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/board/swtpmtest"
	"github.com/keyframe-cam/keyframe/receiver"
	"github.com/keyframe-cam/keyframe/uploader"
	"github.com/keyframe-cam/keyframe/uploader/mosquittotest"
)

// TestEndToEndMQTT runs the real agent against a real Mosquitto (client
// certificates required, identity as username, per-device ACL) with the
// device certificate made for its key, and the real receiver ingesting from
// the broker: start and end records arrive verified; Home Assistant sees
// the discovery configs, motion ON then OFF and a JPEG thumbnail; the status
// command is answered on the device's state topic. With the key in a TPM the
// TLS handshake with the broker is signed inside the TPM.
func TestEndToEndMQTT(t *testing.T) {
	t.Run("file key", func(t *testing.T) { mqttEndToEnd(t, "") })
	t.Run("tpm key", func(t *testing.T) { mqttEndToEnd(t, swtpmtest.Start(t).Spec()) })
}

func mqttEndToEnd(t *testing.T, tpm string) {
	broker := mosquittotest.Start(t)
	dir := t.TempDir()
	quiet := quietLogger()

	cfg := testConfig(dir, 320, 240)
	cfg.UploadURL = broker.URL
	keystore := board.BackendFile
	if tpm != "" {
		cfg.KeyBackend, cfg.TPM, keystore = board.BackendTPM, tpm, board.BackendTPM
	}
	key, device := brokerIdentity(t, broker, &cfg, dir)
	pub, err := board.PublicKeyPEM(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	closeKey(key) // a swtpm serves one connection: the agent opens its own

	rdir := filepath.Join(dir, "receiver")
	pairDevice(t, rdir, pub, device)
	srv, lines := openReceiver(t, rdir, quiet)
	rtls := broker.ClientTLS(mosquittotest.Receiver)
	ingest, err := receiver.NewMQTTIngest(receiver.MQTTConfig{Broker: broker.URL, Certificate: &rtls.Certificates[0], RootCAs: broker.RootCAs, Logger: quiet}, srv)
	if err != nil {
		t.Fatal(err)
	}

	// Home Assistant's view: everything it may read about this device.
	ha := make(chan paho.Message, 256)
	haOpts := paho.NewClientOptions().AddBroker(broker.URL).SetClientID("ha-test").SetTLSConfig(broker.ClientTLS(mosquittotest.HomeAssistant)).
		SetProtocolVersion(4).SetAutoReconnect(false)
	haClient := paho.NewClient(haOpts)
	if tok := haClient.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("home assistant connect: %v", tok.Error())
	}
	defer haClient.Disconnect(100)
	for _, f := range []string{"homeassistant/#", "keyframe/" + device + "/motion", "keyframe/" + device + "/thumbnail", "keyframe/" + device + "/state"} {
		if tok := haClient.Subscribe(f, 1, func(_ paho.Client, m paho.Message) { ha <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", f, tok.Error())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go ingest.Run(ctx)
	a, err := New(cfg, Deps{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	waitStartEnd(ctx, t, lines, done, func() string { return "broker log:\n" + broker.Log() })
	for _, l := range lines.lines {
		if !strings.Contains(l, "device="+device) || !strings.Contains(l, "keystore="+keystore) {
			t.Errorf("receiver line %q is not from device %s with keystore %s", l, device, keystore)
		}
	}

	// The status command, as Home Assistant may send it.
	if tok := haClient.Publish("keyframe/"+device+"/cmd/"+uploader.CommandStatus, 1, false, "{}"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("status command: %v", tok.Error())
	}
	var discovery, motionOn, motionOff, thumb, statusReply bool
	deadline := time.After(20 * time.Second)
	for !(discovery && motionOn && motionOff && thumb && statusReply) {
		select {
		case m := <-ha:
			switch {
			case strings.HasPrefix(m.Topic(), "homeassistant/") && strings.Contains(m.Topic(), device):
				discovery = json.Valid(m.Payload())
			case strings.HasSuffix(m.Topic(), "/motion"):
				motionOn = motionOn || string(m.Payload()) == uploader.MotionOn
				motionOff = motionOff || (motionOn && string(m.Payload()) == uploader.MotionOff)
			case strings.HasSuffix(m.Topic(), "/thumbnail"):
				if _, err := jpeg.DecodeConfig(bytes.NewReader(m.Payload())); err == nil {
					thumb = true
				}
			case strings.HasSuffix(m.Topic(), "/state"):
				statusReply = statusReply || (strings.Contains(string(m.Payload()), `"device":"`+device+`"`) && strings.Contains(string(m.Payload()), `"keystore":"`+keystore+`"`))
			}
		case <-deadline:
			t.Fatalf("Home Assistant saw discovery %v, motion on %v, off %v, thumbnail %v, status %v", discovery, motionOn, motionOff, thumb, statusReply)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent: %v", err)
	}
}

// brokerIdentity makes the device key of cfg (in cfg.DataDir) and installs
// a client certificate for it from broker's CA, and the broker's CA as
// cfg.UploadCAFile (in dir): what a device needs to connect to broker. The
// caller closes the key.
func brokerIdentity(t *testing.T, broker *mosquittotest.Broker, cfg *Config, dir string) (board.Key, string) {
	t.Helper()
	trustBroker(t, broker, cfg, dir)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	key, device, _, err := Identity(cfg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var chain bytes.Buffer
	for _, der := range broker.ClientCert(device, key.Public()) {
		pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	if err := os.WriteFile(CertPath(cfg), chain.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return key, device
}

// trustBroker writes broker's CA to dir and makes it cfg.UploadCAFile.
func trustBroker(t *testing.T, broker *mosquittotest.Broker, cfg *Config, dir string) {
	t.Helper()
	cfg.UploadCAFile = filepath.Join(dir, "broker-ca.pem")
	if err := os.WriteFile(cfg.UploadCAFile, broker.CAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
}
