package receiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
)

// lyingLookup answers from a fixed map (a cache whose entries were mixed
// up), counting its calls.
type lyingLookup struct {
	mu    sync.Mutex
	owner map[string]string
	err   error
	calls int
}

func (l *lyingLookup) OwnerOf(device string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	return l.owner[device], l.err
}

func (l *lyingLookup) set(device, owner string) {
	l.mu.Lock()
	l.owner[device] = owner
	l.mu.Unlock()
}

// mixupEnv stores two records of alice's device and one of bob's, with the
// owner view going through a lookup that starts out telling the truth.
func mixupEnv(t *testing.T) (e *testEnv, look *lyingLookup, a, b *testDevice, ra, ra2, rb *record) {
	look = &lyingLookup{owner: map[string]string{}}
	e = newEnv(t, Options{OwnerLookup: look})
	a, b = newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	look.set(a.id, "alice")
	look.set(b.id, "bob")
	ra = a.record(t, "alice-ev", provenance.KindStart, 1)
	ra2 = a.record(t, "alice-ev", provenance.KindEnd, 2)
	rb = b.record(t, "bob-ev", provenance.KindStart, 1)
	for _, r := range []*record{ra, ra2, rb} {
		e.mustUpload(r, http.StatusCreated)
	}
	return e, look, a, b, ra, ra2, rb
}

func envelopeURL(d *testDevice, r *record) string {
	return "/envelope/" + d.id + "/" + r.event + "/" + r.kind
}

// TestLyingLookupIsCaughtNotServed is the 2024 incident against keyframe: the
// lookup in front of the pairing says alice's camera is bob's. Bob must see
// nothing of it, on the page, through OwnerEvents, as an image or as an
// envelope; each withheld event is counted, and the mix-up logged once per
// device and owner with both owners named.
func TestLyingLookupIsCaughtNotServed(t *testing.T) {
	e, look, a, b, ra, ra2, _ := mixupEnv(t)

	// Telling the truth: each sees their own, nothing is caught.
	evs, err := e.srv.OwnerEvents("alice")
	if err != nil || len(evs) != 2 || evs[0].Event != "alice-ev" || evs[0].Kind != provenance.KindEnd || evs[1].Kind != provenance.KindStart {
		t.Fatalf("alice's events with an honest lookup: %+v, %v (want her end and start, newest first)", evs, err)
	}
	if evs[0].Device != a.id || evs[0].Owner != "alice" || evs[0].Seq != 2 || evs[0].Thumbnail() != 0 || evs[0].Media[0].Size != uint64(len(ra2.thumb)) {
		t.Errorf("alice's newest event: %+v", evs[0])
	}
	if n := e.srv.Stats().MixupsCaught; n != 0 {
		t.Fatalf("mix-ups caught with an honest lookup: %d", n)
	}

	look.set(a.id, "bob") // the mix-up
	evs, err = e.srv.OwnerEvents("bob")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Device != b.id || evs[0].Event != "bob-ev" {
		t.Fatalf("bob's events through the lying lookup: %+v, want only his own", evs)
	}
	if n := e.srv.Stats().MixupsCaught; n != 2 {
		t.Fatalf("mix-ups caught after one view: %d, want 2 (alice's two records withheld)", n)
	}
	code, page, _ := e.getAs("bob", "/")
	if code != http.StatusOK || bytes.Contains(page, []byte("alice-ev")) || bytes.Contains(page, []byte(a.id)) || !bytes.Contains(page, []byte("bob-ev")) {
		t.Fatalf("bob's page through the lying lookup: %d\n%s", code, page)
	}
	for _, path := range []string{mediaURL(a, ra), mediaURL(a, ra2), envelopeURL(a, ra)} {
		code, body, _ := e.getAs("bob", path)
		if code != http.StatusNotFound || bytes.Contains(body, ra.thumb) || bytes.Contains(body, ra.env) {
			t.Errorf("GET %s through the lying lookup: %d, want 404 and nothing of alice's", path, code)
		}
	}
	st := e.srv.Stats()
	if st.MixupsCaught != 2+2+3 {
		t.Errorf("mix-ups caught: %d, want 7 (2 + 2 page rows + 3 objects)", st.MixupsCaught)
	}
	// The lookup now says alice's device is not hers: she is not shown it
	// either (the view fails closed), and that is a denied view, not a mix-up.
	if evs, err := e.srv.OwnerEvents("alice"); err != nil || len(evs) != 0 {
		t.Errorf("alice's events while the lookup gives her device to bob: %d, %v", len(evs), err)
	}
	if code, _, _ := e.getAs("alice", mediaURL(a, ra)); code != http.StatusNotFound {
		t.Errorf("alice's thumbnail while the lookup gives her device to bob: %d", code)
	}
	if n := e.srv.Stats().DeniedViews; n != st.DeniedViews+1 {
		t.Errorf("denied views %d, want %d", n, st.DeniedViews+1)
	}
	if n := e.srv.Stats().MixupsCaught; n != st.MixupsCaught {
		t.Errorf("a denied view counted as a mix-up: %d", n)
	}

	// Logged once for (alice's device, bob), naming both owners.
	logs := e.logs.buf.String()
	if n := strings.Count(logs, "owner lookup mix-up caught"); n != 1 {
		t.Errorf("mix-up logged %d times, want once:\n%s", n, logs)
	}
	for _, want := range []string{"device=" + a.id, "offered_to=bob", "paired_owner=alice"} {
		if !strings.Contains(logs, want) {
			t.Errorf("mix-up log lacks %q:\n%s", want, logs)
		}
	}
	// The counter is in /v1/stats.
	_, body, _ := e.adminGet("/v1/stats")
	var js map[string]any
	if err := json.Unmarshal(body, &js); err != nil || js["mixups_caught"] != float64(7) {
		t.Errorf("/v1/stats mixups_caught: %v (%v)\n%s", js["mixups_caught"], err, body)
	}
}

// An unpaired device offered by the lookup is a mix-up too for the records
// after the unpairing, and the log says nobody is paired; the records before
// stay the owner's.
func TestLookupOfferingUnpairedDevice(t *testing.T) {
	e, _, a, _, ra, _, _ := mixupEnv(t)
	if err := Unpair(e.dir, a.id); err != nil {
		t.Fatal(err)
	}
	after := a.record(t, "after-unpair", provenance.KindStart, 3)
	e.mustUpload(after, http.StatusCreated)
	// The lookup (a stale cache) still says alice.
	if evs, err := e.srv.OwnerEvents("alice"); err != nil || len(evs) != 2 || evs[0].Seq != 2 {
		t.Fatalf("alice's events after unpairing, through a stale lookup: %+v, %v; want her two from before", evs, err)
	}
	if code, _, _ := e.getAs("alice", mediaURL(a, after)); code != http.StatusNotFound {
		t.Errorf("unpaired device's thumbnail served through a stale lookup: %d", code)
	}
	if code, _, _ := e.getAs("alice", mediaURL(a, ra)); code != http.StatusOK {
		t.Errorf("alice's thumbnail from before the unpairing: %d", code)
	}
	if n := e.srv.Stats().MixupsCaught; n != 2 {
		t.Errorf("mix-ups caught: %d, want 2", n)
	}
	if !strings.Contains(e.logs.buf.String(), "paired_owner=(none)") {
		t.Errorf("log does not say the device is unpaired:\n%s", e.logs.buf.String())
	}
}

// A lookup that fails makes the view fail (503), never show anything.
func TestLookupErrorFailsClosed(t *testing.T) {
	e, look, a, _, ra, _, _ := mixupEnv(t)
	look.mu.Lock()
	look.err = errors.New("cache unreachable")
	look.mu.Unlock()
	if evs, err := e.srv.OwnerEvents("alice"); err == nil || len(evs) != 0 || !strings.Contains(err.Error(), "cache unreachable") {
		t.Errorf("OwnerEvents with a failing lookup: %d events, %v", len(evs), err)
	}
	for _, path := range []string{"/", mediaURL(a, ra), envelopeURL(a, ra)} {
		if code, body, _ := e.getAs("alice", path); code != http.StatusServiceUnavailable || bytes.Contains(body, ra.thumb) {
			t.Errorf("GET %s with a failing lookup: %d, want 503", path, code)
		}
	}
	if _, err := e.srv.OwnerEvents("Not An Owner"); !errors.Is(err, ErrOwner) {
		t.Errorf("OwnerEvents of a malformed name: %v, want ErrOwner", err)
	}
}

// The default lookup is the registry: no lookup is called, nothing can be
// mixed up, and the owner page shows what OwnerEvents returns.
func TestDefaultLookupIsTheRegistry(t *testing.T) {
	e, a, b, ra, _ := twoOwners(t)
	evs, err := e.srv.OwnerEvents("alice")
	if err != nil || len(evs) != 1 || evs[0].Device != a.id || evs[0].Event != ra.event {
		t.Fatalf("alice's events: %+v, %v", evs, err)
	}
	if err := Pair(e.dir, b.id, "alice"); err != nil {
		t.Fatal(err)
	}
	evs, err = e.srv.OwnerEvents("alice")
	if err != nil || len(evs) != 1 {
		t.Fatalf("alice's events after bob's device was paired to her: %+v, %v; want only her own (bob's history stays his)", evs, err)
	}
	e.mustUpload(b.record(t, "after", provenance.KindStart, 2), http.StatusCreated)
	evs, err = e.srv.OwnerEvents("alice")
	if err != nil || len(evs) != 2 || evs[0].Device != b.id || evs[0].Event != "after" {
		t.Fatalf("alice's events after the device's next record: %+v, %v", evs, err)
	}
	if evs, err := e.srv.OwnerEvents("bob"); err != nil || len(evs) != 1 || evs[0].Event != "bob-ev" {
		t.Fatalf("bob's events after the transfer: %+v, %v; want his own", evs, err)
	}
	if n := e.srv.Stats().MixupsCaught; n != 0 {
		t.Errorf("mix-ups with the registry as the lookup: %d", n)
	}
}

// TestOwnerEnvelope: the owner gets the envelope byte for byte and can verify
// it; another owner gets 404; an envelope swapped on disk for another
// device's is refused by the view-time verification, and so are the media of
// its record.
func TestOwnerEnvelope(t *testing.T) {
	e, a, b, ra, rb := twoOwners(t)
	code, env, h := e.getAs("alice", envelopeURL(a, ra))
	if code != http.StatusOK || !bytes.Equal(env, ra.env) || h.Get("X-Content-Type-Options") != "nosniff" || !strings.HasPrefix(h.Get("Content-Type"), "application/cose") {
		t.Fatalf("alice's envelope: %d, %d bytes, %v", code, len(env), h)
	}
	if v, err := provenance.Verify(env, [][]byte{ra.thumb}, nil); err != nil || v.Device != a.id {
		t.Fatalf("served envelope does not verify as alice's device: %v", err)
	}
	if code, _, _ := e.getAs("bob", envelopeURL(a, ra)); code != http.StatusNotFound {
		t.Errorf("alice's envelope in bob's view: %d", code)
	}
	if code, _, _ := e.getAs("alice", "/envelope/"+a.id+"/no-such/start"); code != http.StatusNotFound {
		t.Errorf("a missing envelope: %d", code)
	}

	// Bob's record (envelope and thumbnail, valid in themselves) copied over
	// alice's: her index entry says the record is her device's, the
	// signature says bob's.
	var data []byte
	for _, f := range [][2]string{{rb.event + "-" + rb.kind + ".cose", ra.event + "-" + ra.kind + ".cose"}, {rb.event + "-" + rb.kind + ".0.jpg", ra.event + "-" + ra.kind + ".0.jpg"}} {
		content, err := os.ReadFile(filepath.Join(e.dir, "events", b.id, f[0]))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.dir, "events", a.id, f[1]), content, 0o600); err != nil {
			t.Fatal(err)
		}
		if data == nil {
			data = content
		}
	}
	before := e.srv.Stats().CorruptMedia
	for _, path := range []string{envelopeURL(a, ra), mediaURL(a, ra)} {
		code, body, _ := e.getAs("alice", path)
		if code != http.StatusInternalServerError || bytes.Equal(body, data) || bytes.Equal(body, rb.thumb) {
			t.Errorf("GET %s of a record whose envelope was swapped: %d, want 500 and nothing served", path, code)
		}
	}
	if n := e.srv.Stats().CorruptMedia; n != before+2 {
		t.Errorf("refused at view time: %d, want %d", n, before+2)
	}
	if !strings.Contains(e.logs.buf.String(), "signed by device "+b.id) {
		t.Errorf("the refusal does not name the real signer:\n%s", e.logs.buf.String())
	}
}

// BenchmarkViewTimeVerify measures the re-verification every served
// thumbnail and envelope goes through: reading the stored envelope and media
// and provenance.Verify.
func BenchmarkViewTimeVerify(b *testing.B) {
	dir := b.TempDir()
	srv, err := Open(Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	d := newDevice(b)
	if _, err := Enroll(dir, d.pem); err != nil {
		b.Fatal(err)
	}
	r := d.record(b, "ev", provenance.KindStart, 1)
	if res := srv.Ingest(r.body, Claim{}); res.Status != http.StatusCreated {
		b.Fatal(res)
	}
	e := srv.lookup(d.id, "ev", provenance.KindStart)
	reg, err := srv.regs.read()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, reason := verifyStored(dir, reg, e); reason != "" {
			b.Fatal(reason)
		}
	}
}
