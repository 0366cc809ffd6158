package mqttlink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func TestCheckBrokerURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"tls://broker.example:8883", "tls://broker.example:8883"},
		{"mqtts://broker.example", "tls://broker.example:8883"},
		{"ssl://10.0.0.1:1234", "tls://10.0.0.1:1234"},
		{"tcp://127.0.0.1", "tcp://127.0.0.1:1883"},
		{"mqtt://localhost:1884", "tcp://localhost:1884"},
		{"tcp://[::1]:1883", "tcp://[::1]:1883"},
	} {
		u, err := CheckBrokerURL(c.in, URLRules{})
		if err != nil {
			t.Errorf("CheckBrokerURL(%q): %v", c.in, err)
			continue
		}
		if u.String() != c.want {
			t.Errorf("CheckBrokerURL(%q) = %q, want %q", c.in, u, c.want)
		}
	}
	for _, in := range []string{
		"tcp://broker.example:1883", // clear text over a network
		"tcp://10.0.0.1",
		"http://127.0.0.1",
		"ws://127.0.0.1",
		"tls://user:pw@broker.example",
		"tls://broker.example/path",
		"tls://broker.example?x=1",
		"tls://:8883",
		"tls://broker.example:0",
		"tls://broker.example:99999",
		"broker.example:8883",
		"",
	} {
		if u, err := CheckBrokerURL(in, URLRules{}); err == nil {
			t.Errorf("CheckBrokerURL(%q) = %v, want an error", in, u)
		}
	}
}

func TestIsBrokerScheme(t *testing.T) {
	for scheme, want := range map[string]bool{
		"tls": true, "mqtts": true, "ssl": true, "tcp": true, "mqtt": true, "TLS": true,
		"https": false, "http": false, "ws": false, "": false,
	} {
		if got := IsBrokerScheme(scheme); got != want {
			t.Errorf("IsBrokerScheme(%q) = %v, want %v", scheme, got, want)
		}
	}
}

// TestCheckBrokerURLPlaintextLAN: with the opt-in, tcp:// reaches a
// private-network address or a host name (checked when dialling), never a
// public address; TLS URLs are unchanged.
func TestCheckBrokerURLPlaintextLAN(t *testing.T) {
	lan := URLRules{PlaintextLAN: true}
	for in, want := range map[string]string{
		"mqtt://192.168.1.20":         "tcp://192.168.1.20:1883",
		"tcp://10.0.0.1:1884":         "tcp://10.0.0.1:1884",
		"mqtt://172.16.5.5":           "tcp://172.16.5.5:1883",
		"mqtt://[fd00::2]":            "tcp://[fd00::2]:1883",
		"mqtt://169.254.10.1":         "tcp://169.254.10.1:1883",
		"mqtt://homeassistant.local":  "tcp://homeassistant.local:1883",
		"tcp://127.0.0.1":             "tcp://127.0.0.1:1883",
		"mqtts://homeassistant.local": "tls://homeassistant.local:8883",
	} {
		u, err := CheckBrokerURL(in, lan)
		if err != nil {
			t.Errorf("CheckBrokerURL(%q, PlaintextLAN): %v", in, err)
			continue
		}
		if u.String() != want {
			t.Errorf("CheckBrokerURL(%q, PlaintextLAN) = %q, want %q", in, u, want)
		}
	}
	for _, in := range []string{"mqtt://8.8.8.8", "tcp://192.0.2.2", "mqtt://[2001:db8::1]", "mqtt://172.32.0.1", "mqtt://100.64.0.1", "mqtt://0.0.0.0"} {
		if u, err := CheckBrokerURL(in, lan); err == nil {
			t.Errorf("CheckBrokerURL(%q, PlaintextLAN) = %v, want an error", in, u)
		}
	}
	// Without the opt-in a private address is refused, and the error
	// names the opt-in.
	if _, err := CheckBrokerURL("mqtt://192.168.1.20", URLRules{}); err == nil || !strings.Contains(err.Error(), "opt-in") {
		t.Errorf("CheckBrokerURL(mqtt://192.168.1.20) without the opt-in: %v, want a refusal naming the opt-in", err)
	}
}

// TestDialBrokerRefusesPublicPlaintext: a tcp:// broker whose connection
// ends at a public address (a host name that resolved there) is closed
// before anything is sent; a loopback one is kept.
func TestDialBrokerRefusesPublicPlaintext(t *testing.T) {
	u, err := CheckBrokerURL("mqtt://broker.lan", URLRules{PlaintextLAN: true})
	if err != nil {
		t.Fatal(err)
	}
	public := &fakeConn{remote: &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 1883}}
	_, err = DialBroker(context.Background(), u, nil, func(context.Context, string, string) (net.Conn, error) { return public, nil })
	if !errors.Is(err, ErrPublicPlaintext) {
		t.Errorf("DialBroker to a public address: %v, want ErrPublicPlaintext", err)
	}
	if !public.closed || public.wrote {
		t.Errorf("the connection to a public address: closed %v, written to %v; want closed, nothing written", public.closed, public.wrote)
	}
	private := &fakeConn{remote: &net.TCPAddr{IP: net.ParseIP("192.168.1.20"), Port: 1883}}
	c, err := DialBroker(context.Background(), u, nil, func(context.Context, string, string) (net.Conn, error) { return private, nil })
	if err != nil || c != net.Conn(private) {
		t.Errorf("DialBroker to a private address: %v, %v", c, err)
	}
}

type fakeConn struct {
	net.Conn
	remote        net.Addr
	closed, wrote bool
}

func (c *fakeConn) RemoteAddr() net.Addr        { return c.remote }
func (c *fakeConn) Close() error                { c.closed = true; return nil }
func (c *fakeConn) Write(p []byte) (int, error) { c.wrote = true; return len(p), nil }

func TestExplainConnect(t *testing.T) {
	for _, refusal := range []error{packets.ErrorRefusedBadUsernameOrPassword, packets.ErrorRefusedNotAuthorised} {
		err := ExplainConnect(fmt.Errorf("connect: %w", refusal), "camera")
		if !errors.Is(err, ErrCredentials) || !errors.Is(err, refusal) || !strings.Contains(err.Error(), `user "camera"`) {
			t.Errorf("ExplainConnect(%v) = %v, want ErrCredentials naming the user", refusal, err)
		}
	}
	other := errors.New("connection refused")
	if err := ExplainConnect(other, "camera"); err != other {
		t.Errorf("ExplainConnect(%v) = %v, want it unchanged", other, err)
	}
}
