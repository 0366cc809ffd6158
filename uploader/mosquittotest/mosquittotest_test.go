package mosquittotest

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/keyframe-cam/keyframe/internal/mqttlink"
)

// connect connects an MQTT client over tc and returns it or the error.
func connect(t *testing.T, b *Broker, id string, tc *tls.Config) (paho.Client, error) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(b.URL).SetClientID(id).SetTLSConfig(tc).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("connect did not complete")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func TestBrokerRequiresClientCertificateAndRestartsOnSamePort(t *testing.T) {
	b := Start(t)
	if !strings.HasPrefix(b.Addr, "127.0.0.1:") {
		t.Fatalf("Addr = %q, want 127.0.0.1:port", b.Addr)
	}
	if _, err := connect(t, b, "with-cert", b.ClientTLS(HomeAssistant)); err != nil {
		t.Fatalf("client with a CA-signed certificate: %v", err)
	}
	noCert := &tls.Config{RootCAs: b.RootCAs, ServerName: "127.0.0.1"}
	if _, err := connect(t, b, "no-cert", noCert); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	// A certificate from another CA (another broker's) is refused too.
	other := Start(t)
	if _, err := connect(t, b, "foreign-cert", other.ClientTLS(HomeAssistant)); err == nil {
		t.Fatal("a client with a certificate of another CA was accepted")
	}

	addr := b.Addr
	b.Stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("broker still listening after Stop")
	}
	b.Restart()
	if b.Addr != addr {
		t.Fatalf("Restart moved the broker from %s to %s", addr, b.Addr)
	}
	if _, err := connect(t, b, "after-restart", b.ClientTLS(HomeAssistant)); err != nil {
		t.Fatalf("after Restart: %v", err)
	}
}

// TestRestartWaitsForItsPort takes the stopped broker's port, frees it only
// once the broker has failed to listen there, and expects Restart to
// succeed on that port.
func TestRestartWaitsForItsPort(t *testing.T) {
	b := Start(t)
	addr := b.Addr
	b.Stop()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("take the broker's port: %v", err)
	}
	mark := len(b.Log())
	released := make(chan struct{})
	go func() {
		defer close(released)
		defer l.Close()
		for end := time.Now().Add(2 * portTimeout); !strings.Contains(b.Log()[mark:], "Address already in use") && time.Now().Before(end); {
			time.Sleep(10 * time.Millisecond)
		}
	}()
	b.Restart()
	<-released
	if b.Addr != addr {
		t.Fatalf("Restart moved the broker from %s to %s", addr, b.Addr)
	}
	if _, err := connect(t, b, "after-restart", b.ClientTLS(HomeAssistant)); err != nil {
		t.Fatalf("after Restart on a port that was taken: %v", err)
	}
}

// recordTB records Skip and Fatal instead of ending the test.
type recordTB struct {
	testing.TB
	skipped, fatal string
}

func (r *recordTB) Helper()               {}
func (r *recordTB) Skip(args ...any)      { r.skipped = fmt.Sprint(args...) }
func (r *recordTB) Fatal(args ...any)     { r.fatal = fmt.Sprint(args...) }
func (r *recordTB) Failed() bool          { return r.fatal != "" }
func (r *recordTB) Cleanup(func())        {}
func (r *recordTB) Logf(string, ...any)   {}
func (r *recordTB) Errorf(string, ...any) {}

func TestMissingBinarySkipsOutsideCIAndFailsInCI(t *testing.T) {
	r := &recordTB{TB: t}
	if haveBinary(r, "", "") || r.fatal != "" || !strings.Contains(r.skipped, "not installed") {
		t.Errorf("without CI: skipped %q, fatal %q; want a skip", r.skipped, r.fatal)
	}
	r = &recordTB{TB: t}
	if haveBinary(r, "", "true") || r.skipped != "" || !strings.Contains(r.fatal, "CI is set") {
		t.Errorf("with CI: skipped %q, fatal %q; want a failure", r.skipped, r.fatal)
	}
	r = &recordTB{TB: t}
	if !haveBinary(r, "/usr/sbin/mosquitto", "true") || r.skipped != "" || r.fatal != "" {
		t.Errorf("with a binary: skipped %q, fatal %q", r.skipped, r.fatal)
	}
}

// TestDocsGiveTheTestBrokersConfiguration: docs/mqtt.md's Mosquitto
// configuration and ACL are the ones the test broker runs, and its
// max_packet_size admits the largest record with its topic.
func TestDocsGiveTheTestBrokersConfiguration(t *testing.T) {
	doc, err := os.ReadFile("../../docs/mqtt.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"configuration": DocConfig(), "ACL": DefaultACL} {
		if !strings.Contains(string(doc), "```\n"+want+"```\n") {
			t.Errorf("docs/mqtt.md does not give the test broker's %s as a block; want:\n%s", name, want)
		}
	}
	if want := fmt.Sprintf("max_packet_size %d\n", mqttlink.DefaultMaxPayload+mqttlink.PacketOverhead); !strings.Contains(Limits, want) {
		t.Errorf("Limits lack %q", want)
	}
}

// connectPassword connects an MQTT client with a username and password
// (over TLS when the broker's URL is tls://) and returns it or the error.
func connectPassword(t *testing.T, b *Broker, id, user, password string) (paho.Client, error) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(b.URL).SetClientID(id).SetUsername(user).SetPassword(password).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
	if strings.HasPrefix(b.URL, "tls://") {
		opts.SetTLSConfig(&tls.Config{RootCAs: b.RootCAs, ServerName: b.ServerName(), MinVersion: tls.VersionTLS12})
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("connect did not complete")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

// TestPasswordBroker: the broker of Home Assistant's Mosquitto add-on lets
// in a user with the right password, over TLS and in clear text on a
// private address, and refuses a wrong password, an unknown user and no
// credentials.
func TestPasswordBroker(t *testing.T) {
	for name, useTLS := range map[string]bool{"tls": true, "plain lan": false} {
		t.Run(name, func(t *testing.T) {
			pc := PasswordConfig{TLS: useTLS}
			if !useTLS {
				pc.Host = LANAddr(t)
			}
			pc.Users = map[string]string{"camera": "s3cret pass", "ha": "other"}
			b := StartPasswords(t, pc)
			if want := map[bool]string{true: "tls://", false: "tcp://"}[pc.TLS]; !strings.HasPrefix(b.URL, want) {
				t.Fatalf("URL %q, want %s...", b.URL, want)
			}
			if _, err := connectPassword(t, b, "good", "camera", "s3cret pass"); err != nil {
				t.Fatalf("the right password: %v\n%s", err, b.Log())
			}
			for _, c := range []struct{ user, pw string }{{"camera", "wrong"}, {"nobody", "s3cret pass"}, {"", ""}} {
				if _, err := connectPassword(t, b, "bad", c.user, c.pw); err == nil {
					t.Errorf("user %q with password %q was let in", c.user, c.pw)
				}
			}
		})
	}
}
