package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/mqttlink"
)

// The LAN view (docs/live.md, "Home Assistant on the LAN"): with lan.listen
// set, the agent serves GET /snapshot.jpg and GET /stream.mjpg (MJPEG,
// multipart/x-mixed-replace) itself, over TLS, to a client that shows the
// token (HTTP Basic with the token as password, or Bearer). It is off by
// default.
//
// Frames come from the frame loop through the live view's one-slot handoff
// (liveFeed, live.go), which is on only while a viewer waits for a frame; one
// encoder goroutine encodes each frame once (live.max_side, live.quality, at
// most live.fps a second) and hands it to every viewer, each of which holds
// at most one frame (a slow viewer loses frames, counted).
//
// The server is not net/http's (whose server does not fit the camera
// binary's size budget): a bounded HTTP/1.1 responder that reads one request
// head of at most lanMaxHead bytes, parses its request line and
// Authorization header only, answers once and closes the connection.

const (
	lanMaxHead      = 8 << 10          // the longest request head read
	lanMaxHeaders   = 64               // header lines in a request head
	lanHeadTimeout  = 10 * time.Second // TLS handshake and request head
	lanWriteTimeout = 10 * time.Second // one reply, one frame of a stream
	lanSnapshotWait = 5 * time.Second  // a snapshot waits this long for a frame
	lanSpareConns   = 4                // connections beyond lan.max_viewers (handshakes, snapshots, refusals)
	lanMinToken     = 16
	lanBoundary     = "keyframe-frame"
	// The self-signed certificate and its key in the data directory.
	lanCertName = "lan-cert.pem"
	lanKeyName  = "lan-key.pem"
)

// lanView is the LAN view's state: the token, the TLS settings, the frame
// handoff and the viewers.
type lanView struct {
	feed        *liveFeed
	token       [32]byte // SHA-256 of the token: compared in constant time
	tls         *tls.Config
	fingerprint string // SHA-256 of the certificate, for pinning
	maxViewers  int
	conns       chan struct{} // a slot per open connection

	mu      sync.Mutex
	viewers map[*lanViewer]struct{}
	streams int // the viewers that are streams (bounded by maxViewers)
	addr    net.Addr

	streamsServed, snapshots, sent, dropped, busy, unauthorized, badRequests, refused atomic.Uint64
}

// lanViewer is one waiting client: it holds at most one encoded frame.
type lanViewer struct{ ch chan []byte }

// offer is the frame loop's hook (nil: the LAN view is off): one atomic
// load while nobody watches.
func (v *lanView) offer(f *capture.Frame) {
	if v != nil {
		v.feed.offer(f)
	}
}

// LANCounts are the LAN view's counters.
type LANCounts struct {
	Streams      uint64 `json:"streams"`        // streams served
	Snapshots    uint64 `json:"snapshots"`      // snapshots served
	Sent         uint64 `json:"frames_sent"`    // frames written to streams
	Dropped      uint64 `json:"frames_dropped"` // frames a slow viewer had not taken, replaced
	Busy         uint64 `json:"busy"`           // streams refused over lan.max_viewers (503)
	Unauthorized uint64 `json:"unauthorized"`   // requests without the token (401)
	BadRequests  uint64 `json:"bad_requests"`   // request heads refused (400, 405)
	Refused      uint64 `json:"refused"`        // connections closed over the connection limit or a failed handshake
}

// LANCounts returns the LAN view's counters (zero when it is off).
func (a *Agent) LANCounts() LANCounts {
	v := a.lan
	if v == nil {
		return LANCounts{}
	}
	return LANCounts{Streams: v.streamsServed.Load(), Snapshots: v.snapshots.Load(), Sent: v.sent.Load(), Dropped: v.dropped.Load(),
		Busy: v.busy.Load(), Unauthorized: v.unauthorized.Load(), BadRequests: v.badRequests.Load(), Refused: v.refused.Load()}
}

// LANAddr is the LAN view's listening address, nil before Run listens or
// when it is off.
func (a *Agent) LANAddr() net.Addr {
	if a.lan == nil {
		return nil
	}
	a.lan.mu.Lock()
	defer a.lan.mu.Unlock()
	return a.lan.addr
}

// setupLAN reads the token and the certificate when lan.listen is set (New).
func (a *Agent) setupLAN() error {
	c := &a.cfg
	if c.LANListen == "" {
		return nil
	}
	token, err := readLANToken(c.LANTokenFile)
	if err != nil {
		return err
	}
	cert, created, err := lanCertificate(c, a.device, a.deps.Rand)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(cert.Certificate[0])
	v := &lanView{
		feed:        newLiveFeed(c.LiveFPS),
		token:       sha256.Sum256([]byte(token)),
		tls:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		fingerprint: colonHex(sum[:]),
		maxViewers:  c.LANMaxViewers,
		conns:       make(chan struct{}, c.LANMaxViewers+lanSpareConns),
		viewers:     map[*lanViewer]struct{}{},
	}
	if created {
		a.log.Info("LAN view: made a self-signed certificate; pin its fingerprint", "cert", filepath.Join(c.DataDir, lanCertName), "cert_sha256", v.fingerprint)
	}
	a.lan = v
	return nil
}

// readLANToken reads and checks lan.token_file.
func readLANToken(path string) (string, error) {
	if path == "" {
		return "", errors.New("agent: config lan.token_file: must be set when lan.listen is (a file holding the token, mode 0600)")
	}
	tok, err := mqttlink.ReadPasswordFile(path)
	if err != nil {
		return "", fmt.Errorf("agent: lan.token_file: %w", err)
	}
	if n := len(tok); n < lanMinToken {
		return "", fmt.Errorf("agent: lan.token_file: %s: the token is %d characters, want at least %d (e.g. head -c 24 /dev/urandom | base64)", path, n, lanMinToken)
	}
	return tok, nil
}

// lanCertificate loads lan.cert_file and lan.key_file, or the self-signed
// certificate in the data directory, made (and reported created) when it
// is not there.
func lanCertificate(c *Config, device string, rnd io.Reader) (tls.Certificate, bool, error) {
	if c.LANCertFile != "" {
		if err := checkKeyMode(c.LANKeyFile, "lan.key_file"); err != nil {
			return tls.Certificate{}, false, err
		}
		cert, err := tls.LoadX509KeyPair(c.LANCertFile, c.LANKeyFile)
		if err != nil {
			return tls.Certificate{}, false, fmt.Errorf("agent: lan.cert_file, lan.key_file: %w", err)
		}
		return cert, false, nil
	}
	certPath, keyPath := filepath.Join(c.DataDir, lanCertName), filepath.Join(c.DataDir, lanKeyName)
	_, cerr := os.Stat(certPath)
	_, kerr := os.Stat(keyPath)
	if cerr == nil && kerr == nil {
		if err := checkKeyMode(keyPath, "the LAN view's key"); err != nil {
			return tls.Certificate{}, false, err
		}
		cert, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return tls.Certificate{}, false, fmt.Errorf("agent: the LAN view's certificate (delete %s and %s to make a new one): %w", certPath, keyPath, err)
		}
		return cert, false, nil
	}
	// Neither, or one without the other (a power cut between the two
	// writes): make both.
	certPEM, keyPEM, err := selfSignedLANCert(device, rnd)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	if err := atomicfile.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("agent: the LAN view's key: %w", err)
	}
	if err := atomicfile.WriteFile(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("agent: the LAN view's certificate: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("agent: the LAN view's certificate: %w", err)
	}
	return cert, true, nil
}

// checkKeyMode refuses a private key file others can read.
func checkKeyMode(path, what string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("agent: %s: %w", what, err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return fmt.Errorf("agent: %s: %s: mode %04o lets every user read the key: chmod o-rwx it (0600)", what, path, fi.Mode().Perm())
	}
	return nil
}

// selfSignedLANCert makes an ECDSA P-256 certificate for the device's LAN
// view. Its validity does not depend on the clock (a board without RTC
// starts in 1970): from 1970 to 9999-12-31, RFC 5280's "no expiry".
func selfSignedLANCert(device string, rnd io.Reader) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: the LAN view's key: %w", err)
	}
	serial := make([]byte, 16)
	if _, err := io.ReadFull(rnd, serial); err != nil {
		return nil, nil, fmt.Errorf("agent: the LAN view's certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(serial),
		Subject:               pkix.Name{CommonName: "keyframe " + device},
		NotBefore:             time.Unix(0, 0).UTC(),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"keyframe", "localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rnd, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: the LAN view's certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: the LAN view's key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), nil
}

// colonHex is b as upper-case hex bytes separated by colons (as openssl
// x509 -fingerprint prints it).
func colonHex(b []byte) string {
	const digits = "0123456789ABCDEF"
	out := make([]byte, 0, 3*len(b))
	for i, c := range b {
		if i > 0 {
			out = append(out, ':')
		}
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// startLAN listens on lan.listen and serves the LAN view until ctx ends
// (Run).
func (a *Agent) startLAN(ctx context.Context, wg *sync.WaitGroup) error {
	v := a.lan
	if v == nil {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.LANListen)
	if err != nil {
		return fmt.Errorf("agent: lan.listen %q: %w", a.cfg.LANListen, err)
	}
	v.mu.Lock()
	v.addr = ln.Addr()
	v.mu.Unlock()
	a.log.Info("LAN view: listening (https, token required)", "addr", ln.Addr().String(), "cert_sha256", v.fingerprint,
		"max_viewers", v.maxViewers, "fps", a.cfg.LiveFPS, "max_side", a.cfg.LiveMaxSide)
	wg.Go(func() {
		<-ctx.Done()
		ln.Close()
	})
	wg.Go(func() { a.lanEncode(ctx) })
	wg.Go(func() { a.lanServe(ctx, ln, wg) })
	return nil
}

// lanServe accepts connections until the listener closes; beyond the
// connection limit a connection is closed at once (counted).
func (a *Agent) lanServe(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) {
	v := a.lan
	pause := 5 * time.Millisecond
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				c := a.LANCounts()
				a.log.Info("LAN view: stopped", "streams", c.Streams, "snapshots", c.Snapshots, "frames_sent", c.Sent, "frames_dropped", c.Dropped,
					"busy", c.Busy, "unauthorized", c.Unauthorized, "bad_requests", c.BadRequests, "refused", c.Refused)
				return
			}
			// Out of file descriptors and the like: wait, then go on.
			a.log.Warn("LAN view: accept failed", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-a.deps.Clock.After(pause):
			}
			pause = min(2*pause, time.Second)
			continue
		}
		pause = 5 * time.Millisecond
		select {
		case v.conns <- struct{}{}:
			wg.Go(func() {
				defer func() { <-v.conns }()
				a.lanConn(ctx, tls.Server(conn, v.tls))
			})
		default:
			v.refused.Add(1)
			conn.Close()
		}
	}
}

// lanEncode encodes each frame handed over once, for every viewer.
func (a *Agent) lanEncode(ctx context.Context) {
	v := a.lan
	var buf bytes.Buffer
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-v.feed.slot:
			buf.Reset()
			err := capture.EncodeThumbnail(&buf, f, a.cfg.LiveMaxSide, a.cfg.LiveQuality)
			v.feed.free <- f
			if err != nil {
				a.log.Warn("LAN view: frame not encoded", "err", err)
				continue
			}
			v.feed.sent.Add(1)
			v.broadcast(bytes.Clone(buf.Bytes()))
		}
	}
}

// broadcast gives jpg to every viewer, replacing a frame it has not taken.
func (v *lanView) broadcast(jpg []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for w := range v.viewers {
		select {
		case <-w.ch:
			v.dropped.Add(1)
		default:
		}
		w.ch <- jpg // only broadcast sends, under mu: there is room
	}
}

// join adds a viewer; a stream beyond lan.max_viewers is refused.
func (v *lanView) join(stream bool) (*lanViewer, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if stream {
		if v.streams >= v.maxViewers {
			return nil, false
		}
		v.streams++
	}
	w := &lanViewer{ch: make(chan []byte, 1)}
	v.viewers[w] = struct{}{}
	v.feed.on.Store(true)
	return w, true
}

// leave removes a viewer; with none left, frames are no longer handed over.
func (v *lanView) leave(w *lanViewer, stream bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.viewers, w)
	if stream {
		v.streams--
	}
	if len(v.viewers) == 0 {
		v.feed.on.Store(false)
		select { // a frame handed over too late goes back unencoded
		case f := <-v.feed.slot:
			v.feed.free <- f
		default:
		}
	}
}

// lanRequest is what the LAN view reads of a request.
type lanRequest struct {
	method, path, auth string
}

var (
	errLANHeadTooLong = errors.New("request head too long")
	errLANHeadBad     = errors.New("malformed request head")
)

// readLANHead reads a request head (through the blank line) of at most
// limit bytes. Bytes after it (a body) are not read.
func readLANHead(r io.Reader, limit int) ([]byte, error) {
	buf := make([]byte, limit)
	n := 0
	for {
		m, err := r.Read(buf[n:])
		from := max(0, n-3)
		n += m
		if i := bytes.Index(buf[from:n], []byte("\r\n\r\n")); i >= 0 {
			return buf[:from+i+4], nil
		}
		if n == len(buf) {
			return nil, errLANHeadTooLong
		}
		if err != nil {
			return nil, err
		}
	}
}

// parseLANRequest parses a request head: the request line, and the
// Authorization header of the header lines (the others are checked for
// shape and skipped).
func parseLANRequest(head []byte) (lanRequest, error) {
	var req lanRequest
	text, ok := strings.CutSuffix(string(head), "\r\n\r\n")
	if !ok {
		return req, errLANHeadBad
	}
	lines := strings.Split(text, "\r\n")
	if len(lines) > 1+lanMaxHeaders {
		return req, errLANHeadBad
	}
	parts := strings.Split(lines[0], " ")
	if len(parts) != 3 || !isToken(parts[0]) || !strings.HasPrefix(parts[1], "/") || (parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0") {
		return req, errLANHeadBad
	}
	for _, c := range []byte(parts[1]) {
		if c <= ' ' || c >= 0x7f {
			return req, errLANHeadBad
		}
	}
	req.method = parts[0]
	req.path, _, _ = strings.Cut(parts[1], "?")
	seen := false
	for _, line := range lines[1:] {
		name, value, ok := strings.Cut(line, ":")
		if !ok || !isToken(name) { // also obsolete line folding: a line starting with a space
			return req, errLANHeadBad
		}
		for _, c := range []byte(value) {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return req, errLANHeadBad
			}
		}
		if strings.EqualFold(name, "Authorization") {
			if seen {
				return req, errLANHeadBad
			}
			seen = true
			req.auth = strings.Trim(value, " \t")
		}
	}
	return req, nil
}

// isToken says whether s is a non-empty HTTP token (RFC 9110 tchar).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// authorized says whether the Authorization header shows the token: HTTP
// Basic with any username and the token as password, or Bearer.
func (v *lanView) authorized(header string) bool {
	scheme, cred, _ := strings.Cut(header, " ")
	cred = strings.Trim(cred, " \t")
	var tok string
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		tok = cred
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return false
		}
		_, pw, ok := strings.Cut(string(raw), ":")
		if !ok {
			return false
		}
		tok = pw
	default:
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], v.token[:]) == 1
}

// lanConn answers one connection: one request, one reply, closed.
func (a *Agent) lanConn(ctx context.Context, conn *tls.Conn) {
	v := a.lan
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // the agent stops: unblock reads and writes
	defer stop()
	// Network deadlines are the system clock's (the kernel's timers).
	conn.SetDeadline(time.Now().Add(lanHeadTimeout))
	if err := conn.HandshakeContext(ctx); err != nil {
		v.refused.Add(1)
		return
	}
	head, err := readLANHead(conn, lanMaxHead)
	if errors.Is(err, errLANHeadTooLong) {
		v.badRequests.Add(1)
		lanReply(conn, 400, "request head too long\n", "")
		return
	}
	if err != nil {
		return // the client went away or was too slow
	}
	req, err := parseLANRequest(head)
	switch {
	case err != nil:
		v.badRequests.Add(1)
		lanReply(conn, 400, "malformed request\n", "")
		return
	case req.method != "GET":
		v.badRequests.Add(1)
		lanReply(conn, 405, "only GET\n", "Allow: GET\r\n")
		return
	case !v.authorized(req.auth):
		n := v.unauthorized.Add(1)
		// The message is constant (the logger throttles by message); the
		// token is never logged, what was sent neither.
		a.log.Warn("LAN view: refused a request without the token", "remote", conn.RemoteAddr().String(), "unauthorized", n)
		lanReply(conn, 401, "token required\n", "WWW-Authenticate: Basic realm=\"keyframe\", charset=\"UTF-8\"\r\n")
		return
	}
	switch req.path {
	case "/snapshot.jpg":
		a.lanSnapshot(ctx, conn)
	case "/stream.mjpg":
		a.lanStream(ctx, conn)
	default:
		lanReply(conn, 404, "not found: /snapshot.jpg and /stream.mjpg are\n", "")
	}
}

// lanReply writes a short text reply.
func lanReply(conn net.Conn, code int, body, headers string) {
	conn.SetWriteDeadline(time.Now().Add(lanWriteTimeout))
	fmt.Fprintf(conn, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nCache-Control: no-store\r\nConnection: close\r\n%s\r\n%s",
		code, lanStatus(code), len(body), headers, body)
}

// lanStatus is the reason phrase of the codes the LAN view answers.
func lanStatus(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 503:
		return "Service Unavailable"
	}
	return "OK"
}

// lanSnapshot answers with the next frame.
func (a *Agent) lanSnapshot(ctx context.Context, conn net.Conn) {
	v := a.lan
	w, _ := v.join(false)
	var jpg []byte
	select {
	case jpg = <-w.ch:
	case <-ctx.Done():
	case <-a.deps.Clock.After(lanSnapshotWait):
	}
	v.leave(w, false)
	if jpg == nil {
		lanReply(conn, 503, "no frame\n", "Retry-After: 1\r\n")
		return
	}
	conn.SetWriteDeadline(time.Now().Add(lanWriteTimeout))
	bw := bufio.NewWriterSize(conn, 16<<10)
	fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n", len(jpg))
	bw.Write(jpg)
	if bw.Flush() == nil {
		v.snapshots.Add(1)
	}
}

// lanStream streams frames as MJPEG until the viewer leaves (a write
// fails or times out), live.max_time is up or ctx ends.
func (a *Agent) lanStream(ctx context.Context, conn net.Conn) {
	v := a.lan
	w, ok := v.join(true)
	if !ok {
		v.busy.Add(1)
		lanReply(conn, 503, "too many viewers (lan.max_viewers)\n", "Retry-After: 5\r\n")
		return
	}
	defer v.leave(w, true)
	v.streamsServed.Add(1)
	remote := conn.RemoteAddr().String()
	a.log.Info("LAN view: stream started", "remote", remote)
	bw := bufio.NewWriterSize(conn, 16<<10)
	conn.SetWriteDeadline(time.Now().Add(lanWriteTimeout))
	bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=" + lanBoundary +
		"\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
	err := bw.Flush()
	maxTime := a.deps.Clock.After(a.cfg.LiveMaxTime)
	sent, why := 0, "the viewer left"
	for err == nil {
		select {
		case <-ctx.Done():
			err, why = ctx.Err(), "the agent is stopping"
			continue
		case <-maxTime:
			err, why = errors.New("max time"), "live.max_time is up"
			continue
		case jpg := <-w.ch:
			conn.SetWriteDeadline(time.Now().Add(lanWriteTimeout))
			bw.WriteString("--" + lanBoundary + "\r\nContent-Type: image/jpeg\r\nContent-Length: " + strconv.Itoa(len(jpg)) + "\r\n\r\n")
			bw.Write(jpg)
			bw.WriteString("\r\n")
			if err = bw.Flush(); err == nil {
				sent++
				v.sent.Add(1)
			}
		}
	}
	a.log.Info("LAN view: stream stopped", "remote", remote, "why", why, "frames_sent", sent,
		"frames_dropped", v.dropped.Load(), "streams", v.streamsServed.Load())
}
