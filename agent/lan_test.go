package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"image/jpeg"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

const lanTestToken = "correct-horse-battery-staple"

// TestLANOfferAllocs: the LAN view's frame loop hook allocates nothing
// while nobody watches (and is a no-op when the view is off).
func TestLANOfferAllocs(t *testing.T) {
	v := &lanView{feed: newLiveFeed(5), viewers: map[*lanViewer]struct{}{}, maxViewers: 2}
	f := liveTestFrame(time.Unix(1_700_000_000, 0))
	if n := testing.AllocsPerRun(1000, func() { v.offer(f) }); n != 0 {
		t.Errorf("nobody watching: %v allocations a frame, want 0", n)
	}
	if len(v.feed.slot) != 0 {
		t.Fatal("nobody watching: a frame was handed over")
	}
	var off *lanView
	if n := testing.AllocsPerRun(1000, func() { off.offer(f) }); n != 0 {
		t.Errorf("off: %v allocations a frame, want 0", n)
	}
	// A viewer turns the handoff on; its leaving turns it off and gives
	// back a frame handed over too late.
	w, _ := v.join(false)
	v.offer(f)
	if len(v.feed.slot) != 1 {
		t.Fatal("a viewer waits: no frame handed over")
	}
	v.leave(w, false)
	if v.feed.on.Load() || len(v.feed.slot) != 0 || len(v.feed.free) != 1 {
		t.Errorf("nobody left: on=%v, %d in the slot, %d free", v.feed.on.Load(), len(v.feed.slot), len(v.feed.free))
	}
}

// TestLANViewerDrops: a viewer holds one frame; a newer replaces it
// (counted), and streams beyond lan.max_viewers are refused.
func TestLANViewerDrops(t *testing.T) {
	v := &lanView{feed: newLiveFeed(5), viewers: map[*lanViewer]struct{}{}, maxViewers: 1}
	w, ok := v.join(true)
	if !ok {
		t.Fatal("first stream refused")
	}
	if _, ok := v.join(true); ok {
		t.Fatal("a second stream over lan.max_viewers 1 joined")
	}
	snap, ok := v.join(false)
	if !ok {
		t.Fatal("a snapshot was refused: snapshots do not count against lan.max_viewers")
	}
	for i := range 3 {
		v.broadcast([]byte{byte(i)})
	}
	if got := <-w.ch; got[0] != 2 {
		t.Errorf("the viewer got frame %d, want the newest, 2", got[0])
	}
	if d := v.dropped.Load(); d != 4 { // two frames each for the stream and the snapshot
		t.Errorf("%d frames dropped, want 4", d)
	}
	v.leave(snap, false)
	v.leave(w, true)
	if _, ok := v.join(true); !ok {
		t.Error("a stream was refused after the last one left")
	}
}

// TestParseLANRequest: the request line and the Authorization header are
// read; anything else malformed is refused.
func TestParseLANRequest(t *testing.T) {
	good := []struct {
		head, method, path, auth string
	}{
		{"GET /snapshot.jpg HTTP/1.1\r\nHost: cam\r\nAuthorization: Basic eDp5\r\n\r\n", "GET", "/snapshot.jpg", "Basic eDp5"},
		{"GET /stream.mjpg?x=1 HTTP/1.0\r\n\r\n", "GET", "/stream.mjpg", ""},
		{"POST / HTTP/1.1\r\nauthorization:\tBearer t \r\nX-Y: \r\n\r\n", "POST", "/", "Bearer t"},
	}
	for _, c := range good {
		req, err := parseLANRequest([]byte(c.head))
		if err != nil || req.method != c.method || req.path != c.path || req.auth != c.auth {
			t.Errorf("%q: %+v, %v; want %s %s %q", c.head, req, err, c.method, c.path, c.auth)
		}
	}
	bad := []string{
		"",
		"\r\n\r\n",
		"GET /snapshot.jpg HTTP/1.1\r\n",                 // no blank line
		"GET /snapshot.jpg HTTP/2.0\r\n\r\n",             // not HTTP/1.x
		"GET snapshot.jpg HTTP/1.1\r\n\r\n",              // not a path
		"GET  /snapshot.jpg HTTP/1.1\r\n\r\n",            // two spaces
		"G(T /snapshot.jpg HTTP/1.1\r\n\r\n",             // not a token
		"GET /snap\x00shot.jpg HTTP/1.1\r\n\r\n",         // a control byte in the path
		"GET / HTTP/1.1\r\nHost cam\r\n\r\n",             // no colon
		"GET / HTTP/1.1\r\nHost: cam\r\n folded\r\n\r\n", // obsolete folding
		"GET / HTTP/1.1\r\nX: a\nb\r\n\r\n",              // a bare LF
		"GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", // twice
		"GET / HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", lanMaxHeaders+1) + "\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", // a TLS hello inside TLS
	}
	for _, h := range bad {
		if req, err := parseLANRequest([]byte(h)); err == nil {
			t.Errorf("%q accepted: %+v", h, req)
		}
	}
}

// FuzzParseLANRequest: the request parser never panics, and what it
// accepts has a token method and a path starting with "/".
func FuzzParseLANRequest(f *testing.F) {
	f.Add([]byte("GET /snapshot.jpg HTTP/1.1\r\nAuthorization: Basic eDp5\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		req, err := parseLANRequest(head)
		if err != nil {
			return
		}
		if !isToken(req.method) || !strings.HasPrefix(req.path, "/") || strings.ContainsAny(req.auth, "\r\n") {
			t.Fatalf("accepted %+v from %q", req, head)
		}
		// readLANHead finds the same head in a stream that goes on.
		got, err := readLANHead(io.MultiReader(bytes.NewReader(head), strings.NewReader("body")), len(head)+8)
		if err != nil || !bytes.HasPrefix(head, got) {
			t.Fatalf("readLANHead: %q, %v from %q", got, err, head)
		}
	})
}

// TestReadLANHead: a head is read through its blank line, in pieces; a
// longer one is refused at the limit.
func TestReadLANHead(t *testing.T) {
	head := "GET / HTTP/1.1\r\nA: b\r\n\r\n"
	got, err := readLANHead(io.MultiReader(strings.NewReader(head[:15]), strings.NewReader(head[15:23]), strings.NewReader(head[23:]+"rest")), 64)
	if err != nil || string(got) != head {
		t.Errorf("read %q, %v; want %q", got, err, head)
	}
	if _, err := readLANHead(strings.NewReader(strings.Repeat("x", 100)), 64); !errors.Is(err, errLANHeadTooLong) {
		t.Errorf("a 100-byte head with a 64-byte limit: %v", err)
	}
	if _, err := readLANHead(strings.NewReader("GET / HTTP/1.1\r\n"), 64); !errors.Is(err, io.EOF) {
		t.Errorf("a head cut short: %v", err)
	}
}

// writeToken writes the token file with mode.
func writeToken(t *testing.T, dir, token string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, "lan.token")
	if err := os.WriteFile(p, []byte(token+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLANConfig: off by default; lan.listen needs a token file; a short
// or world-readable token, or a lone certificate, is refused with the key
// named.
func TestLANConfig(t *testing.T) {
	def := DefaultConfig()
	if def.LANListen != "" || def.LANMaxViewers != 2 {
		t.Fatalf("defaults: lan.listen %q, lan.max_viewers %d", def.LANListen, def.LANMaxViewers)
	}
	dir := t.TempDir()
	a, err := New(testConfig(dir, 64, 48), Deps{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if a.lan != nil || a.LANAddr() != nil {
		t.Error("the LAN view is on by default")
	}
	closeKey(a.key)

	for _, c := range []struct {
		set  func(*Config)
		want string
	}{
		{func(c *Config) { c.LANListen = ":8443" }, "lan.token_file: must be set"},
		{func(c *Config) { c.LANListen = "8443"; c.LANTokenFile = "/t" }, "lan.listen"},
		{func(c *Config) { c.LANTokenFile = "/t" }, "lan.listen is empty"},
		{func(c *Config) { c.LANListen = ":8443"; c.LANTokenFile = "/t"; c.LANCertFile = "/c" }, "lan.cert_file, lan.key_file: set both"},
	} {
		cfg := DefaultConfig()
		c.set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate: %v, want %q", err, c.want)
		}
	}
	for _, c := range []struct {
		token string
		mode  os.FileMode
		want  string
	}{
		{"short-token", 0o600, "lan.token_file: " + dir + "/lan.token: the token is 11 characters, want at least 16"},
		{lanTestToken, 0o604, "lan.token_file: " + dir + "/lan.token: mode 0604"},
	} {
		cfg := testConfig(dir, 64, 48)
		cfg.LANListen, cfg.LANTokenFile = "127.0.0.1:0", writeToken(t, dir, c.token, c.mode)
		_, err := New(cfg, Deps{Logger: quietLogger()})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("token %d characters, mode %04o: %v, want %q", len(c.token), c.mode, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), c.token) {
			t.Errorf("the error shows the token: %v", err)
		}
	}
}

// lanRig is an agent on the synthetic scene with the LAN view on loopback.
type lanRig struct {
	a      *Agent
	addr   string
	client *http.Client // pins the certificate's fingerprint from the log
	tlsCfg *tls.Config
	log    *lockedBuffer
}

func newLANRig(t *testing.T, edit func(*Config)) *lanRig {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig(dir, 320, 240)
	cfg.FPS = 20
	cfg.LiveFPS = 10
	cfg.LANListen = "127.0.0.1:0"
	cfg.LANTokenFile = writeToken(t, dir, lanTestToken, 0o600)
	if edit != nil {
		edit(&cfg)
	}
	logs := &lockedBuffer{}
	a, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
		if !strings.Contains(logs.String(), `msg="LAN view: stopped" streams=`) {
			t.Errorf("the agent stopped without logging the LAN view's counts:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for a.LANAddr() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the LAN view does not listen:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The fingerprint the log gives is the certificate in the data dir,
	// and the one the client pins.
	m := regexp.MustCompile(`cert_sha256=([0-9A-F:]{95})`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no certificate fingerprint logged:\n%s", logs.String())
	}
	pin := m[1]
	certPEM, err := os.ReadFile(filepath.Join(cfg.DataDir, lanCertName))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(cfg.DataDir, lanKeyName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the LAN view's key: %v, %v", fi, err)
	}
	pair, err := tls.X509KeyPair(certPEM, must(os.ReadFile(filepath.Join(cfg.DataDir, lanKeyName))))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pair.Certificate[0])
	if colonHex(sum[:]) != pin {
		t.Fatalf("logged fingerprint %s is not the certificate's %s", pin, colonHex(sum[:]))
	}
	tlsCfg := &tls.Config{
		InsecureSkipVerify: true, // the certificate is pinned by its fingerprint
		VerifyConnection: func(cs tls.ConnectionState) error {
			s := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if colonHex(s[:]) != pin {
				return fmt.Errorf("certificate %s, pinned %s", colonHex(s[:]), pin)
			}
			if _, err := x509.ParseCertificate(cs.PeerCertificates[0].Raw); err != nil {
				return err
			}
			return nil
		},
	}
	return &lanRig{a: a, addr: a.LANAddr().String(), tlsCfg: tlsCfg, log: logs,
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true}, Timeout: 20 * time.Second}}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// get asks for path with auth (an Authorization header, or none).
func (r *lanRig) get(t *testing.T, path, auth string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+r.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// raw sends bytes over TLS and returns all the reply until the server
// closes the connection.
func (r *lanRig) raw(t *testing.T, send []byte) string {
	t.Helper()
	conn, err := tls.Dial("tcp", r.addr, r.tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(send); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(conn) // the server closes: EOF, or a reset after its reply when bytes were left unread
	if err != nil && (len(reply) == 0 || !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("the connection was not closed: %v (read %q)", err, reply)
	}
	return string(reply)
}

// TestLANView: with the token, a snapshot is a JPEG and the stream
// delivers distinct frames; without it, 401 and no picture; a stream over
// lan.max_viewers gets 503; malformed and oversized request heads get 400
// and a closed connection; when nobody watches, nothing is handed over.
func TestLANView(t *testing.T) {
	r := newLANRig(t, func(c *Config) { c.LANMaxViewers = 1 })
	basic := "Basic " + b64("home-assistant:"+lanTestToken)

	for _, auth := range []string{basic, "Bearer " + lanTestToken} {
		resp := r.get(t, "/snapshot.jpg", auth)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" {
			t.Fatalf("snapshot with %.6s: %d %s %q", auth, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		img, err := jpeg.Decode(bytes.NewReader(body))
		if err != nil || img.Bounds().Dx() != 320 {
			t.Fatalf("snapshot: %v, %v", img, err)
		}
	}

	for _, auth := range []string{"", "Basic " + b64("u:wrong-token-wrong-token"), "Bearer " + lanTestToken + "x", "Basic " + b64(lanTestToken), "Digest x"} {
		for _, path := range []string{"/snapshot.jpg", "/stream.mjpg", "/nope"} {
			resp := r.get(t, path, auth)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 || bytes.Contains(body, []byte{0xff, 0xd8}) || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("%s with %q: %d %q", path, auth, resp.StatusCode, body)
			}
		}
	}
	if n := r.a.LANCounts().Unauthorized; n != 15 {
		t.Errorf("%d unauthorized counted, want 15", n)
	}
	if strings.Contains(r.log.String(), lanTestToken) || !strings.Contains(r.log.String(), "refused a request without the token") {
		t.Errorf("the log shows the token or not the refusals:\n%s", r.log.String())
	}
	if resp := r.get(t, "/nope", basic); resp.StatusCode != 404 {
		t.Errorf("an unknown path with the token: %d", resp.StatusCode)
	}

	// The stream: distinct JPEG parts.
	resp := r.get(t, "/stream.mjpg", basic)
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 200 || err != nil || mt != "multipart/x-mixed-replace" {
		t.Fatalf("stream: %d %q %v", resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	var parts [][]byte
	for len(parts) < 3 {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", len(parts), err)
		}
		b, err := io.ReadAll(p)
		if err != nil || p.Header.Get("Content-Type") != "image/jpeg" {
			t.Fatalf("part %d: %v %v", len(parts), p.Header, err)
		}
		if _, err := jpeg.Decode(bytes.NewReader(b)); err != nil {
			t.Fatalf("part %d is not a JPEG: %v", len(parts), err)
		}
		parts = append(parts, b)
	}
	if bytes.Equal(parts[0], parts[1]) && bytes.Equal(parts[1], parts[2]) {
		t.Error("the stream's frames are all the same")
	}
	// A second stream over lan.max_viewers 1: 503, no picture.
	busy := r.get(t, "/stream.mjpg", basic)
	body, _ := io.ReadAll(busy.Body)
	busy.Body.Close()
	if busy.StatusCode != 503 || bytes.Contains(body, []byte{0xff, 0xd8}) {
		t.Errorf("a second stream: %d %q", busy.StatusCode, body)
	}
	resp.Body.Close()

	// Attacks: each gets 400 (or 405) and a closed connection.
	for _, c := range []struct {
		send []byte
		want string
	}{
		{[]byte("\x00\x01\x02garbage\r\n\r\n"), "HTTP/1.1 400 "},
		{[]byte("GET /snapshot.jpg HTTP/1.1\r\nX: " + strings.Repeat("a", 9<<10)), "HTTP/1.1 400 "},
		{[]byte("GET /snapshot.jpg HTTP/1.1\r\n" + strings.Repeat("X-A: b\r\n", 200) + "\r\n"), "HTTP/1.1 400 "},
		{[]byte("POST /snapshot.jpg HTTP/1.1\r\nAuthorization: " + basic + "\r\n\r\n"), "HTTP/1.1 405 "},
		{[]byte("GET /snapshot.jpg HTTP/1.1\r\nAuthorization: " + basic + "\r\n folded\r\n\r\n"), "HTTP/1.1 400 "},
	} {
		reply := r.raw(t, c.send)
		if !strings.HasPrefix(reply, c.want) || strings.Contains(reply, "\xff\xd8") {
			t.Errorf("%.40q: reply %.60q, want %q", c.send, reply, c.want)
		}
	}
	// Still serving after all that.
	if resp := r.get(t, "/snapshot.jpg", basic); resp.StatusCode != 200 {
		t.Errorf("a snapshot after the attacks: %d", resp.StatusCode)
	}
	// Nobody watches: the handoff is off.
	deadline := time.Now().Add(20 * time.Second)
	for r.a.lan.feed.on.Load() {
		if time.Now().After(deadline) {
			t.Fatal("nobody watches, and frames are still handed over")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c := r.a.LANCounts()
	if c.Streams != 1 || c.Snapshots != 3 || c.Sent < 3 || c.Busy != 1 || c.BadRequests != 5 {
		t.Errorf("counts %+v", c)
	}
}

// TestLANFFprobe: ffprobe reads the stream (the MJPEG Home Assistant and
// ffmpeg read) over TLS with the token as the password. It needs ffprobe:
// CI installs ffmpeg.
func TestLANFFprobe(t *testing.T) {
	ffprobe, err := exec.LookPath("ffprobe")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ffprobe is not installed (scripts/ensure-test-deps.sh installs ffmpeg)")
		}
		t.Skip("ffprobe not found: install ffmpeg to run this test")
	}
	r := newLANRig(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := "https://home-assistant:" + lanTestToken + "@" + r.addr + "/stream.mjpg"
	out, err := exec.CommandContext(ctx, ffprobe, "-v", "error", "-tls_verify", "0", "-f", "mpjpeg", "-read_intervals", "%+#3",
		"-show_entries", "frame=width,height", "-of", "csv=p=0", url).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s\n%s", err, out, r.log.String())
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	frames := 0
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "320,240" {
			frames++
		}
	}
	if frames < 2 {
		t.Errorf("ffprobe decoded %d 320x240 frames, want at least 2:\n%s", frames, out)
	}
}

// TestLANConnLimit: connections beyond lan.max_viewers + lanSpareConns
// are closed at accept (counted), and the frames go on.
func TestLANConnLimit(t *testing.T) {
	r := newLANRig(t, func(c *Config) { c.LANMaxViewers = 1 })
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range 1 + lanSpareConns {
		c, err := net.Dial("tcp", r.addr) // holds a slot: no handshake
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The next is closed at once: its handshake fails long before the
	// held ones' deadline.
	frames := r.a.Frames()
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(&d, "tcp", r.addr, r.tlsCfg)
	if err == nil {
		conn.Close()
		t.Fatal("a connection over the limit was served")
	}
	if n := r.a.LANCounts().Refused; n != 1 {
		t.Errorf("%d connections refused, want 1", n)
	}
	deadline := time.Now().Add(20 * time.Second)
	for r.a.Frames() < frames+5 {
		if time.Now().After(deadline) {
			t.Fatal("the frame loop stalled while the LAN view's connections were full")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
