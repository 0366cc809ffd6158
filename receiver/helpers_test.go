package receiver

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

// testDevice is a device key as a test uses it.
type testDevice struct {
	key  *ecdsa.PrivateKey
	id   string
	pem  []byte
	spki []byte
}

func newDevice(t testing.TB) *testDevice {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	id, err := provenance.DeviceID(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &testDevice{key: k, id: id, spki: spki, pem: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})}
}

// thumbFor returns a fake JPEG of a few hundred bytes, different per tag.
func thumbFor(tag string) []byte {
	var b bytes.Buffer
	b.Write([]byte{0xff, 0xd8, 0xff, 0xe0})
	for b.Len() < 300 {
		b.WriteString(tag)
		b.WriteByte(byte(b.Len()))
	}
	b.Write([]byte{0xff, 0xd9})
	return b.Bytes()
}

// payload is a well-formed payload of d.
func (d *testDevice) payload(event, kind string, seq uint64, thumb []byte) *provenance.Payload {
	return &provenance.Payload{
		Device:   d.id,
		Event:    event,
		Kind:     kind,
		Seq:      seq,
		Boot:     "boot-1",
		Time:     provenance.Time{UnixMs: 1_764_000_000_000 + int64(seq)*1000, BootMs: seq * 1000, Clock: provenance.ClockSynced},
		Motion:   provenance.Motion{DurationMs: 1500, Frames: 12, PeakAreaPPM: 40000, Box: [4]int32{1, 2, 30, 40}, Width: 320, Height: 240},
		Media:    []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", thumb)},
		KeyStore: "file",
	}
}

// sign signs p with d's key and returns the envelope.
func (d *testDevice) sign(t testing.TB, p *provenance.Payload) []byte {
	t.Helper()
	env, err := provenance.Sign(rand.Reader, d.key, p)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// bundle encodes an envelope and its media.
func bundle(t testing.TB, env []byte, media ...[]byte) []byte {
	t.Helper()
	b := provenance.Bundle{Envelope: env, Media: media}
	out, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// record is a signed record of d with its thumbnail, ready to upload.
type record struct {
	event, kind string
	seq         uint64
	thumb       []byte
	env         []byte
	body        []byte
}

func (d *testDevice) record(t testing.TB, event, kind string, seq uint64) *record {
	t.Helper()
	thumb := thumbFor(fmt.Sprintf("%s/%s/%d", event, kind, seq))
	env := d.sign(t, d.payload(event, kind, seq, thumb))
	return &record{event: event, kind: kind, seq: seq, thumb: thumb, env: env, body: bundle(t, env, thumb)}
}

func (r *record) path() string { return "/v1/events/" + r.event + "/" + r.kind }

// lineBuf collects the server's event lines.
type lineBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lineBuf) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.TrimSpace(l.buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// testEnv is a server over a temporary directory behind an httptest server.
type testEnv struct {
	t     *testing.T
	dir   string
	srv   *Server
	hs    *httptest.Server
	lines *lineBuf
	logs  *lineBuf
	// cookies are the session cookies of cookieOf, by account; they
	// outlive a reopen, as sessions do.
	cookies map[string]*http.Cookie
}

var testNow = time.Date(2025, 11, 24, 12, 0, 0, 0, time.UTC)

func newEnv(t *testing.T, opts Options) *testEnv {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	e := &testEnv{t: t, dir: opts.Dir}
	e.open(opts)
	t.Cleanup(e.close)
	return e
}

func (e *testEnv) open(opts Options) {
	e.t.Helper()
	e.lines, e.logs = &lineBuf{}, &lineBuf{}
	opts.Dir = e.dir
	opts.Events = e.lines
	opts.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.Clock == nil {
		opts.Clock = fixedClock{testNow}
	}
	if opts.Argon2 == nil {
		opts.Argon2 = &testArgon2
	}
	srv, err := Open(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv = srv
	e.hs = httptest.NewServer(srv.Handler())
}

func (e *testEnv) close() {
	if e.hs != nil {
		e.hs.Close()
		e.hs = nil
	}
	if e.srv != nil {
		if err := e.srv.Close(); err != nil {
			e.t.Error(err)
		}
		e.srv = nil
	}
}

// enroll enrolls d and pairs it to owner (if not empty).
func (e *testEnv) enroll(d *testDevice, owner string) {
	e.t.Helper()
	id, err := Enroll(e.dir, d.pem)
	if err != nil {
		e.t.Fatal(err)
	}
	if id != d.id {
		e.t.Fatalf("Enroll returned %s, want %s", id, d.id)
	}
	if owner != "" {
		if err := Pair(e.dir, d.id, owner); err != nil {
			e.t.Fatal(err)
		}
	}
}

// put uploads body to path and returns the status and the reply.
func (e *testEnv) put(path string, body []byte) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPut, e.hs.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", provenance.BundleContentType)
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// upload uploads r to its own path.
func (e *testEnv) upload(r *record) (int, string) {
	e.t.Helper()
	return e.put(r.path(), r.body)
}

// mustUpload uploads r and fails unless it gets want.
func (e *testEnv) mustUpload(r *record, want int) string {
	e.t.Helper()
	code, reply := e.upload(r)
	if code != want {
		e.t.Fatalf("upload %s seq %d: status %d (%q), want %d", r.path(), r.seq, code, reply, want)
	}
	return reply
}

// get fetches path.
func (e *testEnv) get(path string) (int, []byte, http.Header) {
	e.t.Helper()
	resp, err := e.hs.Client().Get(e.hs.URL + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

func mediaURL(d *testDevice, r *record) string {
	return "/media/" + d.id + "/" + r.event + "/" + r.kind + "/0"
}

// testArgon2 are cheap Argon2id parameters for tests: the hashing's
// correctness does not depend on its cost.
var testArgon2 = Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}

// account makes the account name with role unless it exists.
func (e *testEnv) account(name string, role Role) {
	e.t.Helper()
	if _, err := (Accounts{Dir: e.dir}).Add(name, role); err != nil && !errors.Is(err, ErrAccountExists) {
		e.t.Fatal(err)
	}
}

// cookieOf returns a session cookie of name (an owner account made if
// missing), the same one for every call with the same server.
func (e *testEnv) cookieOf(name string) *http.Cookie {
	e.t.Helper()
	if c := e.cookies[name]; c != nil {
		return c
	}
	e.account(name, RoleOwner)
	c, err := e.srv.NewSession(name)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.cookies == nil {
		e.cookies = map[string]*http.Cookie{}
	}
	e.cookies[name] = c
	return c
}

// getAs fetches path signed in as name (an owner unless made otherwise).
func (e *testEnv) getAs(name, path string) (int, []byte, http.Header) {
	e.t.Helper()
	return e.do(http.MethodGet, path, nil, e.cookieOf(name))
}

// adminGet fetches path signed in as the admin "ops".
func (e *testEnv) adminGet(path string) (int, []byte, http.Header) {
	e.t.Helper()
	e.account("ops", RoleAdmin)
	return e.getAs("ops", path)
}

// do sends a request with optional cookies and returns the status, body and
// headers.
func (e *testEnv) do(method, path string, body io.Reader, cookies ...*http.Cookie) (int, []byte, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.hs.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

// fixedClock is a clock that always says t.
type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

func (c fixedClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// stepClock is a clock a test moves forward.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func (c *stepClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
