package receiver

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

// countFiles returns the regular files under dir.
func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// wantQuota uploads r and fails unless it is refused 429 quota with
// Retry-After retry (seconds); it returns the files written meanwhile.
func (e *testEnv) wantQuota(r *record, retry int) int {
	e.t.Helper()
	before := countFiles(e.t, e.dir)
	code, body, h := e.do(http.MethodPut, r.path(), bytes.NewReader(r.body))
	if code != http.StatusTooManyRequests || !strings.Contains(string(body), "quota") {
		e.t.Fatalf("seq %d: %d %q, want 429 naming the quota", r.seq, code, body)
	}
	if got := h.Get("Retry-After"); got != strconv.Itoa(retry) {
		e.t.Errorf("seq %d: Retry-After %q, want %d", r.seq, got, retry)
	}
	return countFiles(e.t, e.dir) - before
}

// TestQuotaRecords is the flood of one admitted device: over its records
// per hour it is refused 429 quota with Retry-After the time until its
// hour ends, at the cost of no file written, while another device stores
// as ever; an identical re-send is not a new record and is answered 200;
// the refused record is stored once the window has room, and the day's
// quota holds across hours and across a restart.
func TestQuotaRecords(t *testing.T) {
	clk := &stepClock{t: testNow}
	opts := Options{Clock: clk, Quota: Quota{RecordsPerHour: 3, RecordsPerDay: 5}}
	e := newEnv(t, opts)
	flood, other := newDevice(t), newDevice(t)
	e.enroll(flood, "alice")
	e.enroll(other, "bob")
	recs := make([]*record, 7)
	for i := range recs {
		recs[i] = flood.record(t, "ev-"+strconv.Itoa(i), provenance.KindStart, uint64(i+1))
	}
	for _, r := range recs[:3] {
		e.mustUpload(r, http.StatusCreated)
	}
	clk.add(10 * time.Minute)
	written := e.wantQuota(recs[3], 3000)
	e.mustUpload(recs[0], http.StatusOK) // an identical re-send: not counted, not refused
	e.mustUpload(other.record(t, "ev-other", provenance.KindStart, 1), http.StatusCreated)
	clk.add(50*time.Minute - time.Second)
	written += e.wantQuota(recs[3], 1)
	clk.add(time.Second)
	e.mustUpload(recs[3], http.StatusCreated)
	e.mustUpload(recs[4], http.StatusCreated)
	// Five today: the day's quota, until 24 hours after the first.
	written += e.wantQuota(recs[5], 23*3600)
	// A restart keeps the windows (rebuilt from the index).
	e.close()
	e.open(opts)
	written += e.wantQuota(recs[5], 23*3600)
	clk.add(23 * time.Hour)
	e.mustUpload(recs[5], http.StatusCreated)
	t.Logf("records quota 3/hour 5/day: 4 uploads refused 429 quota, %d files written by them", written)
	if written != 0 {
		t.Errorf("quota refusals wrote %d files, want 0", written)
	}
}

// TestQuotaBytes: the bytes of an hour (envelope and media) are bounded as
// the records are; a quota below MaxBody is refused by Open (a record that
// large could never be stored).
func TestQuotaBytes(t *testing.T) {
	d := newDevice(t)
	r1 := d.record(t, "ev-1", provenance.KindStart, 1)
	size := int64(len(r1.env) + len(r1.thumb))
	limit := 2*size + size/2
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk, MaxBody: limit, Quota: Quota{BytesPerHour: limit, BytesPerDay: 10 * limit}})
	e.enroll(d, "alice")
	e.mustUpload(r1, http.StatusCreated)
	e.mustUpload(d.record(t, "ev-2", provenance.KindStart, 2), http.StatusCreated)
	if n := e.wantQuota(d.record(t, "ev-3", provenance.KindStart, 3), 3600); n != 0 {
		t.Errorf("the refusal wrote %d files", n)
	}
	clk.add(time.Hour)
	e.mustUpload(d.record(t, "ev-3", provenance.KindStart, 3), http.StatusCreated)

	for name, q := range map[string]Quota{"hour": {BytesPerHour: 1000}, "day": {BytesPerDay: 1000}} {
		if _, err := Open(Options{Dir: t.TempDir(), MaxBody: 1001, Quota: q}); err == nil || !strings.Contains(err.Error(), "MaxBody") {
			t.Errorf("bytes per %s below MaxBody: Open %v, want an error naming MaxBody", name, err)
		}
	}
}

// TestQuotaStateBounded: quota state is kept only for devices that stored
// records (after their signature verified and their admission), and
// forgotten a day after their last one.
func TestQuotaStateBounded(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk})
	d := newDevice(t)
	e.enroll(d, "alice")
	stranger := newDevice(t) // not enrolled: refused 403 before any state
	for i := range 50 {
		e.mustUpload(stranger.record(t, "ev-"+strconv.Itoa(i), provenance.KindStart, uint64(i+1)), http.StatusForbidden)
	}
	if n := e.srv.quotas.tracked(); n != 0 {
		t.Fatalf("%d devices tracked after refused uploads, want 0", n)
	}
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
	if n := e.srv.quotas.tracked(); n != 1 {
		t.Fatalf("%d devices tracked, want 1", n)
	}
	clk.add(25 * time.Hour)
	other := newDevice(t)
	e.enroll(other, "bob")
	e.mustUpload(other.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
	if n := e.srv.quotas.tracked(); n != 1 {
		t.Errorf("%d devices tracked a day later, want 1 (the first forgotten)", n)
	}
}

// TestManyMediaObjects is the attack of one admitted device sending one
// record with 1,024 empty media objects (before: 4.3 s and 1,025 fsynced
// files). It is refused 400 from the bundle's media head, before anything
// is hashed or written; a record with MaxMedia objects is stored.
func TestManyMediaObjects(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	for _, n := range []int{1024, provenance.MaxMedia + 1, provenance.MaxMedia} {
		p := d.payload("ev-"+strconv.Itoa(n), provenance.KindStart, uint64(n), nil)
		media := make([][]byte, n)
		p.Media = p.Media[:0]
		for i := range media {
			if n <= provenance.MaxMedia { // distinct objects; Sign refuses more
				media[i] = thumbFor(strconv.Itoa(i))
			}
			p.Media = append(p.Media, provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", media[i]))
		}
		var env []byte
		if n <= provenance.MaxMedia {
			env = d.sign(t, p)
		} else {
			env = d.sign(t, d.payload("ev-"+strconv.Itoa(n), provenance.KindStart, uint64(n), thumbFor("x")))
		}
		body := bundle(t, env, media...)
		before := countFiles(t, e.dir)
		code, reply := e.put("/v1/events/ev-"+strconv.Itoa(n)+"/start", body)
		written := countFiles(t, e.dir) - before
		if n > provenance.MaxMedia {
			t.Logf("%d media objects (%d bytes): %d %q, %d files written", n, len(body), code, strings.TrimSpace(reply), written)
			if code != http.StatusBadRequest || written != 0 {
				t.Errorf("%d media objects: %d, %d files written; want 400 and none", n, code, written)
			}
			continue
		}
		if code != http.StatusCreated || written != n+1 {
			t.Errorf("%d media objects: %d %q, %d files written; want 201 and %d", n, code, reply, written, n+1)
		}
	}
	if st := e.srv.Stats(); st.Rejected[ReasonMalformed] != 2 {
		t.Errorf("malformed refusals %d, want 2", st.Rejected[ReasonMalformed])
	}
}

// TestBodyBudget: bodies in progress hold at most BodyBudget bytes in all
// and BodyBudgetPerAddr from one address: a body that does not fit is
// answered 503 with Retry-After (which the agent retries) without being
// read, and once the bodies in progress end, uploads are stored again.
func TestBodyBudget(t *testing.T) {
	dir := t.TempDir()
	d := newDevice(t)
	if _, err := Enroll(dir, d.pem); err != nil {
		t.Fatal(err)
	}
	// Each slow body declares 100,000 bytes: two fit the budget, one per
	// address.
	s := startServe(t, ServeConfig{Options: Options{Dir: dir, UploadGrace: time.Hour, MaxBody: 100_000, BodyBudget: 250_000, BodyBudgetPerAddr: 150_000},
		Listen: "127.0.0.1:0"})
	addr := strings.TrimSuffix(strings.TrimPrefix(s.url, "http://"), "/")
	first := dialFrom(t, "127.0.0.1", addr)
	startSlowBody(t, first, addr)
	r1 := d.record(t, "ev-1", provenance.KindStart, 1)
	junk := bytes.Repeat([]byte{0}, 60_000)
	want503 := func(from, what string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, "http://"+addr+r1.path(), bytes.NewReader(junk))
		resp, err := clientFrom(from).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: %d Retry-After %q, want 503 with Retry-After", what, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	// The same address has no room for another 60,000 bytes (100,000 of
	// its 150,000 held).
	want503("127.0.0.1", "a second body from 127.0.0.1")
	startSlowBody(t, dialFrom(t, "127.0.0.3", addr), addr)
	// Another address: the budget in all is full now (200,000 of 250,000
	// held).
	want503("127.0.0.2", "a body over the budget in all")
	c := clientFrom("127.0.0.2")
	// A small record still fits (its Content-Length is known and exact).
	if code, body := do(t, c, http.MethodPut, "http://"+addr+r1.path(), r1.body); code != http.StatusCreated {
		t.Errorf("a record of %d bytes with 200,000 of 250,000 held: %d %q, want 201", len(r1.body), code, body)
	}
	first.Close()
	r2 := d.record(t, "ev-2", provenance.KindStart, 2)
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _ := do(t, clientFrom("127.0.0.1"), http.MethodPut, "http://"+addr+r2.path(), r2.body)
		if code == http.StatusCreated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("127.0.0.1 after its slow body ended: %d, want 201", code)
		}
		time.Sleep(10 * time.Millisecond) // the server notices the closed connection
	}
}

// TestClientCertTiedToSigner is the attack of a fleet certificate used for
// another device's records: with ClientCAs, bob's record sent with alice's
// client certificate is refused 403 client_cert (before: stored, 201),
// bob's own certificate passes, and a revoked device's certificate fails
// the handshake.
func TestClientCertTiedToSigner(t *testing.T) {
	dir := t.TempDir()
	alice, bob := newDevice(t), newDevice(t)
	for _, d := range []*testDevice{alice, bob} {
		if _, err := Enroll(dir, d.pem); err != nil {
			t.Fatal(err)
		}
	}
	serverCA, fleetCA := newCA(t, "server CA", nil), newCA(t, "fleet CA", nil)
	certFile, keyFile := serverFiles(t, serverCA)
	s := startServe(t, ServeConfig{
		Options: Options{Dir: dir},
		Listen:  "127.0.0.1:0", TLSCertFile: certFile, TLSKeyFile: keyFile, ClientCAs: caPool(fleetCA),
	})
	client := func(cert tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool(serverCA), Certificates: []tls.Certificate{cert}}}}
	}
	asAlice, asBob := client(clientCert(t, fleetCA, alice)), client(clientCert(t, fleetCA, bob))
	r := bob.record(t, "ev-1", provenance.KindStart, 1)
	url := strings.TrimSuffix(s.url, "/") + r.path()
	code, body := do(t, asAlice, http.MethodPut, url, r.body)
	t.Logf("bob's record with alice's client certificate: %d %q", code, strings.TrimSpace(body))
	if code != http.StatusForbidden || !strings.Contains(body, "client certificate") {
		t.Errorf("bob's record with alice's certificate: %d %q, want 403 naming the client certificate", code, body)
	}
	if code, body := do(t, asBob, http.MethodPut, url, r.body); code != http.StatusCreated {
		t.Errorf("bob's record with bob's certificate: %d %q, want 201", code, body)
	}
	if err := Revoke(dir, alice.id); err != nil {
		t.Fatal(err)
	}
	ra := alice.record(t, "ev-a", provenance.KindStart, 1)
	req, _ := http.NewRequest(http.MethodPut, strings.TrimSuffix(s.url, "/")+ra.path(), bytes.NewReader(ra.body))
	resp, err := client(clientCert(t, fleetCA, alice)).Do(req) // a new connection: a new handshake
	if err == nil {
		resp.Body.Close()
		t.Errorf("revoked alice's handshake succeeded: %d, want a failed handshake", resp.StatusCode)
	} else {
		t.Logf("revoked alice's handshake: %v", err)
	}
	if err := s.wait(); err != nil {
		t.Fatal(err)
	}
	if n := storedRecords(t, dir); n != 1 {
		t.Errorf("%d records stored, want 1 (bob's own)", n)
	}
}

// TestBodyUnknownLength: a chunked body (no Content-Length) is read into a
// buffer that grows within the budget: a record is stored, a body over
// MaxBody is 413, and a body that outgrows the budget is 503.
func TestBodyUnknownLength(t *testing.T) {
	e := newEnv(t, Options{MaxBody: 200_000, BodyBudget: 200_000, BodyBudgetPerAddr: -1})
	d := newDevice(t)
	e.enroll(d, "alice")
	put := func(body []byte) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, e.hs.URL+"/v1/events/ev-1/start", io.MultiReader(bytes.NewReader(body))) // no length: chunked
		resp, err := e.hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put(bytes.Repeat([]byte{0}, 300_000)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a chunked body over MaxBody: %d, want 413", code)
	}
	// Half the budget held by another upload: the buffer cannot grow to
	// 131,072 bytes.
	key := sourcePrefix("127.0.0.1:1")
	if !e.srv.bodies.take(key, 100_000) {
		t.Fatal("take")
	}
	if code := put(bytes.Repeat([]byte{0}, 150_000)); code != http.StatusServiceUnavailable {
		t.Errorf("a chunked body outgrowing the budget: %d, want 503", code)
	}
	e.srv.bodies.give(key, 100_000)
	if total, _ := e.srv.bodies.inUse(key); total != 0 {
		t.Errorf("%d bytes of the budget held after every upload was answered, want 0", total)
	}
	if code := put(d.record(t, "ev-1", provenance.KindStart, 1).body); code != http.StatusCreated {
		t.Errorf("a chunked record: %d, want 201", code)
	}
}

// TestCertifiesRotation: a rotate record is signed by the old key while the
// agent already presents the new key's certificate; either key's
// certificate may carry it, and no other. Any other record needs its
// signer's.
func TestCertifiesRotation(t *testing.T) {
	oldKey, newKey, stranger := newDevice(t), newDevice(t), newDevice(t)
	ca := newCA(t, "fleet CA", nil)
	cert := func(d *testDevice) *x509.Certificate {
		c, err := x509.ParseCertificate(clientCert(t, ca, d).Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rotate := &provenance.Verified{Device: oldKey.id, NextDevice: newKey.id, Payload: &provenance.Payload{Kind: provenance.KindRotate}}
	start := &provenance.Verified{Device: oldKey.id, Payload: &provenance.Payload{Kind: provenance.KindStart}}
	for _, c := range []struct {
		name string
		cert *testDevice
		v    *provenance.Verified
		ok   bool
	}{
		{"rotate, old key's certificate", oldKey, rotate, true},
		{"rotate, new key's certificate", newKey, rotate, true},
		{"rotate, a stranger's certificate", stranger, rotate, false},
		{"start, signer's certificate", oldKey, start, true},
		{"start, another key's certificate", newKey, start, false},
	} {
		if err := certifies(cert(c.cert), c.v); (err == nil) != c.ok {
			t.Errorf("%s: %v, want accepted %v", c.name, err, c.ok)
		}
	}
}
