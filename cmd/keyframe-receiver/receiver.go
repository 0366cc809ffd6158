package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keyframe-cam/keyframe/internal/cli"
	"github.com/keyframe-cam/keyframe/internal/logthrottle"
	"github.com/keyframe-cam/keyframe/receiver"
)

// syncWriter serialises writes to stdout from the server's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func receiverServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe-receiver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", defaultReceiverData, "data directory: registry, stored events, index")
	listen := fs.String("listen", defaultReceiverListen, "address to listen on (loopback unless -public)")
	public := fs.Bool("public", false, "allow a non-loopback listen address (serve TLS: passwords and session cookies cross the network)")
	allowHosts := fs.String("allow-host", "", "comma-separated host names (NAME or NAME:PORT) the pages answer; default: the listen address and localhost, 127.0.0.1, [::1] with its port")
	maxBody := fs.Int64("max-body", receiver.DefaultMaxBody, "largest accepted upload in bytes")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with this certificate (PEM; with -tls-key)")
	tlsKey := fs.String("tls-key", "", "private key (PEM) of -tls-cert")
	clientCA := fs.String("client-ca", "", "with -tls-cert: uploads (/v1/) must come with a client certificate from these CAs (PEM), signed with the device's key (mutual TLS); the pages need none (they need a signed-in session)")
	mqttURL := fs.String("mqtt", "", "also ingest records from this MQTT broker (mqtts://HOST:8883, or tcp:// to a loopback host; docs/mqtt.md)")
	mqttCert := fs.String("mqtt-cert", "", "the receiver's client certificate for the broker (PEM; with -mqtt-key)")
	mqttKey := fs.String("mqtt-key", "", "private key (PEM) of -mqtt-cert")
	mqttCA := fs.String("mqtt-ca", "", "CA certificates (PEM) trusted for the broker, in addition to the system's")
	mqttUser := fs.String("mqtt-user", "", "username for a broker that authenticates by password (password from -mqtt-password-file or KEYFRAME_MQTT_PASSWORD)")
	mqttPasswordFile := fs.String("mqtt-password-file", "", "file holding the -mqtt-user password (its first line; not readable by other users)")
	mqttPlainLAN := fs.Bool("mqtt-allow-plaintext-lan", false, "allow -mqtt tcp:// to a private-network address (RFC 1918, fc00::/7, link-local): the password and the records (still signed) cross the LAN in the clear")
	tlsMode := fs.String("tls", receiver.TLSAuto, "HTTPS: auto (-tls-cert and -tls-key if given; else, on a non-loopback -listen, self), self (the receiver's own CA and a certificate for -tls-names, made on first start under DATA/tls/; claim codes pin the CA), off")
	tlsNames := fs.String("tls-names", "", "comma-separated host names and addresses of the self-made certificate; default: the host name, HOST.local, localhost and the machine's addresses")
	turnListen := fs.String("turn-listen", "", "run a TURN relay for the WebRTC live view on this UDP address (e.g. :3478), for browsers that cannot reach the camera; media stays encrypted end to end (docs/live.md)")
	turnIP := fs.String("turn-ip", "", "with -turn-listen: the receiver's address as browsers and cameras reach it (relayed media flows to it)")
	turnHost := fs.String("turn-host", "", "with -turn-listen: the host name in the turn: URL handed out; default: the name each request used")
	turnRelayOnly := fs.Bool("turn-relay-only", false, "with -turn-listen: media always through the relay (browsers and cameras never see each other's addresses)")
	turnAllowPrivate := fs.Bool("turn-allow-private", false, "with -turn-listen: let the relay reach private, loopback and shared (100.64/10) addresses (a receiver on the cameras' own network); off, it relays to public addresses only")
	var limits receiverLimits
	limits.addFlags(fs)
	if code, ok := cli.Parse(fs, args, receiverUsage, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keyframe-receiver: unexpected argument %q\n%s", fs.Arg(0), receiverUsage)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver: -log-level: %v\n", err)
		return 2
	}
	log, throttle := logthrottle.NewText(stderr, level) // repeated lines rate-limited: a flood of refusals writes counts
	defer throttle.Flush()
	out := &syncWriter{w: stdout}
	cfg := receiver.ServeConfig{
		Options:     receiver.Options{Dir: *data, Logger: log, Events: out, MaxBody: *maxBody},
		Listen:      *listen,
		Public:      *public,
		TLSCertFile: *tlsCert,
		TLSKeyFile:  *tlsKey,
		TLS:         *tlsMode,
		TLSNames:    strings.FieldsFunc(*tlsNames, func(r rune) bool { return r == ',' || r == ' ' }),
	}
	if *maxBody <= 0 {
		fmt.Fprintf(stderr, "keyframe-receiver: -max-body %d: want a positive number of bytes\n", *maxBody)
		return 2
	}
	if err := limits.apply(&cfg); err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver: %v\n", err)
		return 2
	}
	if *turnListen != "" {
		ip := net.ParseIP(*turnIP)
		if ip == nil {
			fmt.Fprintf(stderr, "keyframe-receiver: -turn-listen needs -turn-ip, the receiver's address as browsers and cameras reach it (got %q)\n", *turnIP)
			return 2
		}
		cfg.Options.Live.TURN = receiver.TURNOptions{Listen: *turnListen, RelayIP: ip, Host: *turnHost, RelayOnly: *turnRelayOnly, AllowPrivatePeers: *turnAllowPrivate}
	} else if *turnIP != "" || *turnHost != "" || *turnRelayOnly || *turnAllowPrivate {
		fmt.Fprintf(stderr, "keyframe-receiver: -turn-ip, -turn-host, -turn-relay-only and -turn-allow-private go with -turn-listen\n")
		return 2
	}
	for _, h := range strings.Split(*allowHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			cfg.AllowedHosts = append(cfg.AllowedHosts, h)
		}
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		fmt.Fprintf(stderr, "keyframe-receiver: -tls-cert and -tls-key go together\n")
		return 2
	}
	if *clientCA != "" { // Serve refuses it without TLS
		pool, err := certPool(*clientCA, false)
		if err != nil {
			fmt.Fprintf(stderr, "keyframe-receiver: -client-ca: %v\n", err)
			return 2
		}
		cfg.ClientCAs = pool
	}
	if *mqttURL != "" {
		mc := receiver.MQTTConfig{Broker: *mqttURL, Username: *mqttUser, Password: os.Getenv("KEYFRAME_MQTT_PASSWORD"), Logger: log,
			PasswordFile: *mqttPasswordFile, AllowPlaintextLAN: *mqttPlainLAN}
		if (*mqttCert == "") != (*mqttKey == "") {
			fmt.Fprintf(stderr, "keyframe-receiver: -mqtt-cert and -mqtt-key go together\n")
			return 2
		}
		if *mqttCert != "" {
			c, err := tls.LoadX509KeyPair(*mqttCert, *mqttKey)
			if err != nil {
				fmt.Fprintf(stderr, "keyframe-receiver: -mqtt-cert: %v\n", err)
				return 2
			}
			mc.Certificate = &c
		}
		if *mqttCA != "" {
			pool, err := certPool(*mqttCA, true)
			if err != nil {
				fmt.Fprintf(stderr, "keyframe-receiver: -mqtt-ca: %v\n", err)
				return 2
			}
			mc.RootCAs = pool
		}
		cfg.MQTT = &mc
	}
	cfg.Ready = func(url string) {
		if *mqttURL != "" {
			fmt.Fprintf(out, "receiver: ingesting from %s\n", *mqttURL)
		}
		fmt.Fprintf(out, "receiver: listening on %s\n", url)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := receiver.Serve(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver: %v\n", err)
		if ce := (*receiver.ConfigError)(nil); errors.As(err, &ce) {
			return 2
		}
		return 1
	}
	return 0
}

func receiverEnroll(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe-receiver enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", defaultReceiverData, "data directory")
	keyFile := fs.String("key", "", "the device's public key, PEM \"PUBLIC KEY\" (keyframe identity -pubout writes it)")
	owner := fs.String("owner", "", "also pair the device to this owner")
	if code, ok := cli.Parse(fs, args, receiverUsage, stdout, stderr); !ok {
		return code
	}
	if !requireFlags(fs, stderr, "key") {
		return 2
	}
	if *owner != "" && !receiver.ValidOwner(*owner) {
		fmt.Fprintf(stderr, "keyframe-receiver enroll: -owner %q: %v\n", *owner, receiver.ErrOwner)
		return 2
	}
	pem, err := os.ReadFile(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver enroll: %v\n", err)
		return 1
	}
	id, err := receiver.Enroll(*data, pem)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver enroll: %v\n", err)
		return 1
	}
	if *owner != "" {
		if err := receiver.Pair(*data, id, *owner); err != nil {
			fmt.Fprintf(stderr, "keyframe-receiver enroll: %v\n", err)
			return 1
		}
	}
	fmt.Fprintln(stdout, id)
	return 0
}

func receiverPair(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe-receiver pair", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", defaultReceiverData, "data directory")
	device := fs.String("device", "", "device ID (as enroll printed it)")
	owner := fs.String("owner", "", "owner name: 1-64 characters of a-z, 0-9, '_' and '-'")
	if code, ok := cli.Parse(fs, args, receiverUsage, stdout, stderr); !ok {
		return code
	}
	if !requireFlags(fs, stderr, "device", "owner") {
		return 2
	}
	if err := receiver.Pair(*data, *device, *owner); err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver pair: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "paired %s to %s\n", *device, *owner)
	return 0
}

func receiverUnpair(sub string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe-receiver "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", defaultReceiverData, "data directory")
	device := fs.String("device", "", "device ID")
	if code, ok := cli.Parse(fs, args, receiverUsage, stdout, stderr); !ok {
		return code
	}
	if !requireFlags(fs, stderr, "device") {
		return 2
	}
	do, done := receiver.Unpair, "unpaired"
	if sub == "revoke" {
		do, done = receiver.Revoke, "revoked"
	}
	if err := do(*data, *device); err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver %s: %v\n", sub, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s %s\n", done, *device)
	return 0
}

// requireFlags reports whether each of the flags named (defined in fs, by
// their names without "-") was given a value and no argument follows them;
// if not, it says so on stderr, prefixed with the command (fs's name), with
// the usage.
func requireFlags(fs *flag.FlagSet, stderr io.Writer, names ...string) bool {
	ok := fs.NArg() == 0
	for _, n := range names {
		ok = ok && fs.Lookup(n).Value.String() != ""
	}
	if ok {
		return true
	}
	verb := "is"
	if len(names) > 1 {
		verb = "are"
	}
	fmt.Fprintf(stderr, "%s: -%s %s required\n%s", fs.Name(), strings.Join(names, " and -"), verb, receiverUsage)
	return false
}

// dataFlag defines -data, and -dir as another name for it.
func dataFlag(fs *flag.FlagSet) *string {
	data := fs.String("data", defaultReceiverData, "data directory")
	fs.StringVar(data, "dir", defaultReceiverData, "the same as -data")
	return data
}

func receiverTrustCA(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe-receiver trust-ca", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := dataFlag(fs)
	if code, ok := cli.Parse(fs, args, receiverUsage, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "keyframe-receiver trust-ca: want one CA certificate file (PEM)\n%s", receiverUsage)
		return 2
	}
	pem, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver trust-ca: %v\n", err)
		return 1
	}
	cas, err := receiver.TrustCA(*data, pem)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver trust-ca: %v\n", err)
		return 1
	}
	for _, ca := range cas {
		fmt.Fprintf(stdout, "trusted fleet CA %s %s (until %s)\n", ca.Fingerprint, ca.Subject, ca.NotAfter.UTC().Format(time.RFC3339))
	}
	return 0
}

func receiverUntrustCA(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe-receiver untrust-ca", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := dataFlag(fs)
	fp := fs.String("fingerprint", "", "SHA-256 fingerprint of the CA certificate (as trust-ca and cas print it)")
	if code, ok := cli.Parse(fs, args, receiverUsage, stdout, stderr); !ok {
		return code
	}
	var fps []string
	switch {
	case *fp != "" && fs.NArg() == 0:
		fps = []string{strings.ToLower(*fp)}
	case *fp == "" && fs.NArg() == 1:
		b, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			fmt.Fprintf(stderr, "keyframe-receiver untrust-ca: %v\n", err)
			return 1
		}
		for rest := b; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			if blk.Type == "CERTIFICATE" {
				fps = append(fps, receiver.CertFingerprint(blk.Bytes))
			}
		}
		if len(fps) == 0 {
			fmt.Fprintf(stderr, "keyframe-receiver untrust-ca: %s: no PEM CERTIFICATE block\n", fs.Arg(0))
			return 1
		}
	default:
		fmt.Fprintf(stderr, "keyframe-receiver untrust-ca: want a CA certificate file or -fingerprint\n%s", receiverUsage)
		return 2
	}
	for _, f := range fps {
		if err := receiver.UntrustCA(*data, f); err != nil {
			fmt.Fprintf(stderr, "keyframe-receiver untrust-ca: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "untrusted fleet CA %s\n", f)
	}
	return 0
}

func receiverCAs(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe-receiver cas", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := dataFlag(fs)
	if code, ok := cli.Parse(fs, args, receiverUsage, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "keyframe-receiver cas: unexpected argument %q\n%s", fs.Arg(0), receiverUsage)
		return 2
	}
	cas, err := receiver.TrustedCAs(*data)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver cas: %v\n", err)
		return 1
	}
	for _, ca := range cas {
		fmt.Fprintf(stdout, "%s %s (until %s)\n", ca.Fingerprint, ca.Subject, ca.NotAfter.UTC().Format(time.RFC3339))
	}
	return 0
}

// certPool reads PEM CA certificates from path, on top of the system's roots
// when withSystem is set.
func certPool(path string, withSystem bool) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if withSystem {
		if sys, err := x509.SystemCertPool(); err == nil {
			pool = sys
		}
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}
