// Package mosquittotest starts a real Mosquitto broker for a test: on
// 127.0.0.1 at a free port, TLS only, client certificates required (a
// throwaway CA made with crypto/x509 for each broker), the certificate's CN
// taken as the username, and keyframe's ACL (DefaultACL). Stop and Restart
// keep the port and the persistence directory, for outage tests.
//
// StartPasswords starts the other kind a home has: Home Assistant's
// Mosquitto add-on, which authenticates by username and password, over TLS
// or in clear text on the LAN.
//
// When the mosquitto binary is not installed the test is skipped, unless the
// CI environment variable is set: then it fails.
package mosquittotest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Users of DefaultACL that are not devices. Devices are users named by their
// device ID (the CN of their certificate).
const (
	// Receiver may read every device's events.
	Receiver = "receiver"
	// HomeAssistant may read devices' status, motion, thumbnail, state and
	// the discovery configs, and send commands.
	HomeAssistant = "homeassistant"
)

// DefaultACL is the broker's ACL: a device (username = its ID) may publish
// its events, status, motion, thumbnail, command replies and its own Home
// Assistant discovery configs, read its commands and acks, and publish and
// read its identity probe; it may not publish on its ack topic. The
// receiver reads events and writes acks; Home Assistant reads the states
// and sends commands. It is the ACL docs/mqtt.md gives (a test compares
// them).
const DefaultACL = `# keyframe devices: username = certificate CN = device ID
pattern write keyframe/%u/events/+/+
pattern write keyframe/%u/status
pattern write keyframe/%u/motion
pattern write keyframe/%u/thumbnail
pattern write keyframe/%u/state
pattern readwrite keyframe/%u/probe
pattern read keyframe/%u/cmd/+
pattern read keyframe/%u/ack
pattern write homeassistant/+/keyframe_%u/#

# the receiver (certificate CN "receiver")
user receiver
topic read keyframe/+/events/#
topic write keyframe/+/ack

# Home Assistant (certificate CN "homeassistant")
user homeassistant
topic read keyframe/+/status
topic read keyframe/+/motion
topic read keyframe/+/thumbnail
topic read keyframe/+/state
topic write keyframe/+/cmd/#
topic read homeassistant/#
`

// Limits are the broker settings docs/mqtt.md prescribes for keyframe:
// max_packet_size is the receiver's default body limit plus
// mqttlink.PacketOverhead, so the largest record passes and a larger packet
// disconnects its sender before anyone reads it. The queue limits bound
// what the broker holds for the receiver while it is away; a message beyond
// them is dropped, which the devices' end-to-end acks make up for by
// sending again.
const Limits = `max_packet_size 4195328
max_queued_messages 10000
max_queued_bytes 268435456
`

// Paths are the places and the listener a Config names.
type Paths struct {
	ACL, Persistence string // the ACL file; the persistence directory, ending in "/"
	Listener         string // the listener line's arguments: "8883", or "port address"
	CA, Cert, Key    string // the client CA, the broker's certificate and key (PEM)
}

// Config returns keyframe's Mosquitto configuration: mutual TLS with the
// certificate's CN as the username, no anonymous access, the ACL,
// persistence and Limits. docs/mqtt.md gives it with its paths and the
// test broker runs it with its own (a test compares them).
func Config(p Paths) string {
	return "per_listener_settings false\n" +
		"allow_anonymous false\n" +
		"acl_file " + p.ACL + "\n" +
		"persistence true\n" +
		"persistence_location " + p.Persistence + "\n" +
		Limits +
		"\n" +
		"listener " + p.Listener + "\n" +
		"cafile " + p.CA + "\n" +
		"certfile " + p.Cert + "\n" +
		"keyfile " + p.Key + "\n" +
		"require_certificate true\n" +
		"use_identity_as_username true\n"
}

// DocConfig is Config with the paths docs/mqtt.md uses.
func DocConfig() string {
	return Config(Paths{
		ACL: "/etc/mosquitto/keyframe.acl", Persistence: "/var/lib/mosquitto/", Listener: "8883",
		CA: "/etc/mosquitto/ca/keyframe-ca.pem", Cert: "/etc/mosquitto/certs/broker.pem", Key: "/etc/mosquitto/certs/broker.key",
	})
}

// readyTimeout bounds the wait for the broker to listen; stopTimeout the wait
// for it to exit after SIGINT; portTimeout how long Restart waits for its
// port to be free again.
const (
	readyTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
	portTimeout  = 10 * time.Second
)

// errAddrInUse: mosquitto could not listen, its port was taken.
var errAddrInUse = errors.New("address in use")

// Broker is a running (or stopped) mosquitto.
type Broker struct {
	// Addr is "127.0.0.1:port", URL "tls://127.0.0.1:port".
	Addr, URL string
	// RootCAs holds the throwaway CA that signed the broker's and the
	// clients' certificates.
	RootCAs *x509.CertPool

	t      testing.TB
	bin    string
	dir    string
	conf   string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	host   net.IP // the listener's address (127.0.0.1 unless a PasswordConfig names one)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exited
	out  *syncBuffer   // all runs' output
}

// Binary returns the path of the mosquitto binary, or "" if not found.
func Binary() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// haveBinary reports whether bin is set; if not, it skips t, or fails it
// when ci (the CI environment variable) is set.
func haveBinary(t testing.TB, bin, ci string) bool {
	t.Helper()
	if bin != "" {
		return true
	}
	const msg = "mosquittotest: mosquitto is not installed (Debian: apt-get install mosquitto)"
	if ci != "" {
		t.Fatal(msg + "; CI is set, so this is a failure")
		return false
	}
	t.Skip(msg + "; skipping (set CI to make this a failure)")
	return false
}

// Start starts a broker for t and stops it at t's cleanup (logging its
// output if t failed).
func Start(t testing.TB) *Broker {
	t.Helper()
	bin := Binary()
	if !haveBinary(t, bin, os.Getenv("CI")) {
		return nil
	}
	b := &Broker{t: t, bin: bin, dir: t.TempDir(), out: &syncBuffer{}}
	b.makeCA()
	if err := os.Mkdir(filepath.Join(b.dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	b.writeFile("acl", []byte(DefaultACL))
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			t.Logf("mosquittotest: broker output:\n%s", b.Log())
		}
	})
	// A port found free may be taken before mosquitto binds it: try a few.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		b.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		b.URL = "tls://" + b.Addr
		b.writeConfig(port)
		if lastErr = b.start(); lastErr == nil {
			return b
		}
	}
	t.Fatalf("mosquittotest: %v\n%s", lastErr, b.Log())
	return nil
}

// Stop stops the broker gracefully (SIGINT: it saves its persistence
// database and closes every connection) and waits for it to exit. Stopping
// a stopped broker does nothing.
func (b *Broker) Stop() {
	b.t.Helper()
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	// A SIGINT that lands between mosquitto's check of its run flag and its
	// wait for network events is noticed only when that wait ends, which on
	// an idle broker can outlast stopTimeout: repeat the signal until it exits.
	deadline := time.After(stopTimeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			b.t.Logf("mosquittotest: signal broker: %v", err)
		}
		select {
		case <-done:
			return
		case <-tick.C:
		case <-deadline:
			b.t.Errorf("mosquittotest: broker did not exit %s after SIGINT; killing it", stopTimeout)
			_ = cmd.Process.Kill()
			<-done
			return
		}
	}
}

// Restart starts a stopped broker again on the same port with the same
// persistence directory (retained messages and persistent sessions survive).
// Its clients know that port, so Restart cannot pick another: if the port was
// taken while the broker was down (a connection's ephemeral port, say), it
// tries again until it is free, for up to portTimeout.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	deadline := time.Now().Add(portTimeout)
	for {
		err := b.start()
		if err == nil {
			return
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			b.t.Fatalf("mosquittotest: restart: %v\n%s", err, b.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Log returns everything the broker printed so far (log_type all).
func (b *Broker) Log() string { return b.out.String() }

// CAPEM returns the throwaway CA's certificate as PEM (for a client's CA
// file).
func (b *Broker) CAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.caCert.Raw})
}

// ClientCert issues a client certificate with CN cn for pub, signed by the
// broker's CA, and returns its chain (DER, leaf first).
func (b *Broker) ClientCert(cn string, pub crypto.PublicKey) [][]byte {
	b.t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: b.serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"keyframe test"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, b.caCert, pub, b.caKey)
	if err != nil {
		b.t.Fatal(err)
	}
	return [][]byte{der}
}

// ClientTLS returns a TLS configuration for a client with CN cn and a fresh
// P-256 key, trusting the broker's CA.
func (b *Broker) ClientTLS(cn string) *tls.Config {
	b.t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      b.RootCAs,
		ServerName:   "127.0.0.1",
		Certificates: []tls.Certificate{{Certificate: b.ClientCert(cn, k.Public()), PrivateKey: k}},
	}
}

func (b *Broker) start() error {
	cmd := exec.Command(b.bin, "-c", b.conf)
	cmd.Stdout, cmd.Stderr = b.out, b.out
	mark := b.out.Len()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", b.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(readyTimeout)
	for {
		// mosquitto prints this once every listener is open.
		out := b.out.From(mark)
		if strings.Contains(out, " running") {
			break
		}
		select {
		case <-done:
			if strings.Contains(b.out.From(mark), "Address already in use") {
				return fmt.Errorf("mosquitto exited at start-up: %w", errAddrInUse)
			}
			return fmt.Errorf("mosquitto exited at start-up")
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("mosquitto not running after %s", readyTimeout)
		}
	}
	b.mu.Lock()
	b.cmd, b.done = cmd, done
	b.mu.Unlock()
	return nil
}

func (b *Broker) writeConfig(port int) {
	b.t.Helper()
	var c strings.Builder
	if os.Geteuid() == 0 {
		// As root, mosquitto would switch to the "mosquitto" user, which
		// cannot read the test's private files.
		c.WriteString("user root\n")
	}
	c.WriteString(Config(Paths{
		ACL: filepath.Join(b.dir, "acl"), Persistence: filepath.Join(b.dir, "data") + "/",
		Listener: strconv.Itoa(port) + " 127.0.0.1",
		CA:       filepath.Join(b.dir, "ca.pem"), Cert: filepath.Join(b.dir, "server.pem"), Key: filepath.Join(b.dir, "server.key"),
	}))
	c.WriteString("log_dest stderr\nlog_type all\nconnection_messages true\n")
	b.conf = b.writeFile("mosquitto.conf", []byte(c.String()))
}

// makeCA makes the throwaway CA and the server certificate for 127.0.0.1.
func (b *Broker) makeCA() {
	b.t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          b.serial(),
		Subject:               pkix.Name{CommonName: "keyframe test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		b.t.Fatal(err)
	}
	b.caCert, err = x509.ParseCertificate(caDER)
	if err != nil {
		b.t.Fatal(err)
	}
	b.caKey = caKey
	b.RootCAs = x509.NewCertPool()
	b.RootCAs.AddCert(b.caCert)

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: b.serial(),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  b.serverIPs(),
		DNSNames:     []string{"localhost"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, b.caCert, srvKey.Public(), caKey)
	if err != nil {
		b.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		b.t.Fatal(err)
	}
	b.writeFile("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	b.writeFile("server.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}))
	b.writeFile("server.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

// serverIPs are the addresses the broker's certificate names.
func (b *Broker) serverIPs() []net.IP {
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	if b.host != nil && !b.host.Equal(ips[0]) {
		ips = append(ips, b.host)
	}
	return ips
}

func (b *Broker) serial() *big.Int {
	b.t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		b.t.Fatal(err)
	}
	return n
}

func (b *Broker) writeFile(name string, data []byte) string {
	b.t.Helper()
	p := filepath.Join(b.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		b.t.Fatal(err)
	}
	return p
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) { return freePortOn("127.0.0.1") }

// freePortOn returns a TCP port on host that was free a moment ago.
func freePortOn(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("mosquittotest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Len()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// From returns the output after the first n bytes.
func (s *syncBuffer) From(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.buf.Bytes()[n:])
}

// PasswordConfig is a broker that authenticates by username and password,
// as Home Assistant's Mosquitto add-on does: no client certificates.
type PasswordConfig struct {
	// Users maps each username to its password (at least one).
	Users map[string]string
	// TLS makes the listener TLS (a certificate from the throwaway CA, for
	// 127.0.0.1, localhost and Host; RootCAs trusts it); otherwise it is
	// clear-text MQTT, the add-on's default on port 1883.
	TLS bool
	// Host is the address to listen on (an IP); "" means 127.0.0.1.
	Host string
	// ACL is the ACL file's text; "" means none, as in the add-on's
	// default: every user may read and write every topic.
	ACL string
}

// PasswordsBinary returns the path of mosquitto_passwd, or "" if not found.
func PasswordsBinary() string {
	if p, err := exec.LookPath("mosquitto_passwd"); err == nil {
		return p
	}
	return ""
}

// PasswordConfigText returns the Mosquitto configuration of a password
// broker: no anonymous access, the password file, the ACL file when acl is
// not "", persistence, Limits and the listener (with its certificate when
// cert is not "").
func PasswordConfigText(passwords, acl, persistence, listener, cert, key string) string {
	var c strings.Builder
	c.WriteString("per_listener_settings false\nallow_anonymous false\npassword_file " + passwords + "\n")
	if acl != "" {
		c.WriteString("acl_file " + acl + "\n")
	}
	c.WriteString("persistence true\npersistence_location " + persistence + "\n" + Limits + "\nlistener " + listener + "\n")
	if cert != "" {
		c.WriteString("certfile " + cert + "\nkeyfile " + key + "\n")
	}
	return c.String()
}

// StartPasswords starts a broker that authenticates by username and
// password (pc) for t and stops it at t's cleanup. URL is tls://ADDR with
// pc.TLS, else tcp://ADDR. Without mosquitto or mosquitto_passwd the test is
// skipped (failed under CI).
func StartPasswords(t testing.TB, pc PasswordConfig) *Broker {
	t.Helper()
	bin := Binary()
	if !haveBinary(t, bin, os.Getenv("CI")) {
		return nil
	}
	passwd := PasswordsBinary()
	if passwd == "" {
		const msg = "mosquittotest: mosquitto_passwd is not installed (Debian: apt-get install mosquitto)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI is set, so this is a failure")
		}
		t.Skip(msg + "; skipping (set CI to make this a failure)")
	}
	if len(pc.Users) == 0 {
		t.Fatal("mosquittotest: StartPasswords: no users")
	}
	host := net.IPv4(127, 0, 0, 1)
	if pc.Host != "" {
		if host = net.ParseIP(pc.Host); host == nil {
			t.Fatalf("mosquittotest: StartPasswords: Host %q is not an IP address", pc.Host)
		}
	}
	b := &Broker{t: t, bin: bin, dir: t.TempDir(), out: &syncBuffer{}, host: host}
	b.makeCA()
	if err := os.Mkdir(filepath.Join(b.dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(b.dir, "passwords")
	for user, pw := range pc.Users {
		args := []string{"-b", pwFile, user, pw}
		if _, err := os.Stat(pwFile); errors.Is(err, os.ErrNotExist) {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(passwd, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquittotest: mosquitto_passwd: %v\n%s", err, out)
		}
	}
	if err := os.Chmod(pwFile, 0o600); err != nil {
		t.Fatal(err)
	}
	acl := ""
	if pc.ACL != "" {
		acl = b.writeFile("acl", []byte(pc.ACL))
	}
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			t.Logf("mosquittotest: broker output:\n%s", b.Log())
		}
	})
	scheme, cert, key := "tcp", "", ""
	if pc.TLS {
		scheme, cert, key = "tls", filepath.Join(b.dir, "server.pem"), filepath.Join(b.dir, "server.key")
	}
	var lastErr error
	for range 3 {
		port, err := freePortOn(host.String())
		if err != nil {
			t.Fatal(err)
		}
		b.Addr = net.JoinHostPort(host.String(), strconv.Itoa(port))
		b.URL = scheme + "://" + b.Addr
		var c strings.Builder
		if os.Geteuid() == 0 {
			c.WriteString("user root\n")
		}
		c.WriteString(PasswordConfigText(pwFile, acl, filepath.Join(b.dir, "data")+"/", strconv.Itoa(port)+" "+host.String(), cert, key))
		c.WriteString("log_dest stderr\nlog_type all\nconnection_messages true\n")
		b.conf = b.writeFile("mosquitto.conf", []byte(c.String()))
		if lastErr = b.start(); lastErr == nil {
			return b
		}
	}
	t.Fatalf("mosquittotest: %v\n%s", lastErr, b.Log())
	return nil
}

// ServerName is the name a TLS client verifies the broker's certificate
// with: its listening address.
func (b *Broker) ServerName() string {
	host, _, _ := net.SplitHostPort(b.Addr)
	return host
}

// LANAddr returns an address of this machine on a private network (RFC 1918
// or an IPv6 unique local address; IPv4 first), where a clear-text LAN
// broker can listen. Without one the test is skipped (failed under CI).
func LANAddr(t testing.TB) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("mosquittotest: interface addresses: %v", err)
	}
	var v6 string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || !n.IP.IsPrivate() {
			continue
		}
		if n.IP.To4() != nil {
			return n.IP.String()
		}
		if v6 == "" {
			v6 = n.IP.String()
		}
	}
	if v6 != "" {
		return v6
	}
	const msg = "mosquittotest: this machine has no private-network address (RFC 1918 or fc00::/7) for a LAN broker"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + "; CI is set, so this is a failure")
	}
	t.Skip(msg + "; skipping (set CI to make this a failure)")
	return ""
}
