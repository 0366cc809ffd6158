package receiver

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

// TestEventListMerged: an event's start and end are one row, newest event
// first; a start without its end is "in progress".
func TestEventListMerged(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-old", provenance.KindStart, 1), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-old", provenance.KindEnd, 2), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-new", provenance.KindStart, 3), http.StatusCreated)
	code, body, _ := e.getAs("alice", "/")
	if code != http.StatusOK {
		t.Fatalf("GET /: %d", code)
	}
	rows := eventRows(t, string(body))
	if len(rows) != 2 {
		t.Fatalf("%d event rows, want 2 (start and end of ev-old together): %q", len(rows), rows)
	}
	if !strings.Contains(rows[0], "ev-new") || !strings.Contains(rows[0], "in progress") {
		t.Errorf("first row is not the newest event, in progress: %q", rows[0])
	}
	if !strings.Contains(rows[1], "ev-old") || !strings.Contains(rows[1], "1.5s") || !strings.Contains(rows[1], "start and end records") {
		t.Errorf("second row is not ev-old with its duration and both records: %q", rows[1])
	}
	// The row's image is the end's best frame.
	if !strings.Contains(rows[1], `src="/media/`+d.id+`/ev-old/end/0"`) {
		t.Errorf("ev-old's row does not show the end record's best frame: %q", rows[1])
	}
}

// eventRows returns the rows of the events table in page.
func eventRows(t *testing.T, page string) []string {
	t.Helper()
	i := strings.Index(page, `<table id="events">`)
	if i < 0 {
		return nil
	}
	page = page[i:]
	page = page[:strings.Index(page, "</table>")]
	parts := strings.Split(page, "<tr>")
	return parts[2:] // [0] before, [1] the heading
}

// TestEventListPages: EventsPerPage events a page, newest first, and an
// "older" link whose cursor shows the next ones without overlap or gap;
// a malformed cursor is 400.
func TestEventListPages(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	const n = EventsPerPage + 3
	for i := 1; i <= n; i++ {
		e.mustUpload(d.record(t, fmt.Sprintf("ev-%03d", i), provenance.KindStart, uint64(i)), http.StatusCreated)
	}
	var seen []string
	path := "/"
	for pages := 0; path != ""; pages++ {
		if pages > 3 {
			t.Fatal("more pages than events allow")
		}
		code, body, _ := e.getAs("alice", path)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d", path, code)
		}
		rows := eventRows(t, string(body))
		if len(rows) > EventsPerPage {
			t.Errorf("GET %s: %d rows, more than %d", path, len(rows), EventsPerPage)
		}
		for _, r := range rows {
			i := strings.Index(r, "ev-")
			seen = append(seen, r[i:i+6])
		}
		path = ""
		if i := strings.Index(string(body), `<a href="/?before=`); i >= 0 {
			rest := string(body)[i+len(`<a href="`):]
			path = rest[:strings.IndexByte(rest, '"')]
		}
	}
	if len(seen) != n {
		t.Fatalf("%d events over the pages, want %d: %v", len(seen), n, seen)
	}
	for i, ev := range seen {
		if want := fmt.Sprintf("ev-%03d", n-i); ev != want {
			t.Errorf("event %d is %s, want %s (newest first, no overlap)", i, ev, want)
		}
	}
	for _, bad := range []string{"/?before=x", "/?before=-1", "/?before=01", "/?before=99999999999999999999999"} {
		if code, _, _ := e.getAs("alice", bad); code != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", bad, code)
		}
	}
}

// TestEventPage: the event page shows both frames, the duration, the
// camera, the checks, the decoded payload, the envelope link; another
// owner, an unknown event and an admin get nothing of it.
func TestEventPage(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.account("bob", RoleOwner)
	uploadJPEG(t, e, d, "ev-1", provenance.KindStart, 1, provenance.ClockUnsynced)
	uploadJPEG(t, e, d, "ev-1", provenance.KindEnd, 2, provenance.ClockSynced)
	code, body, h := e.getAs("alice", "/events/"+d.id+"/ev-1")
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("event page: %d %s", code, h.Get("Content-Type"))
	}
	page := string(body)
	for _, want := range []string{
		`src="/media/` + d.id + `/ev-1/start/0"`, `src="/media/` + d.id + `/ev-1/end/0"`,
		"Trigger frame", "Best frame", d.id, "1.5s", "camera HD Pro Webcam C920",
		`<rect x="16" y="12" width="16" height="12"`, // the box, in the 64×48 frame
		"ES256 signature", "fingerprint", "&#34;peak_area_ppm&#34;: 40000", "&#34;kind&#34;: &#34;end&#34;",
		`href="/envelope/` + d.id + `/ev-1/start"`, "unsynced clock", `id="unsynced"`, `action="/events/` + d.id + `/ev-1/delete"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("event page lacks %q", want)
		}
	}
	if strings.Contains(page, `id="oneimage"`) {
		t.Errorf("both frames are there, yet the page says only one is")
	}
	code, env, h := e.getAs("alice", "/envelope/"+d.id+"/ev-1/start")
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "application/cose") || !strings.Contains(h.Get("Content-Disposition"), `attachment; filename="`+d.id+`-ev-1-start.cose"`) || len(env) == 0 {
		t.Errorf("envelope download: %d %q %q", code, h.Get("Content-Type"), h.Get("Content-Disposition"))
	}
	for _, who := range []string{"bob"} {
		code, body, _ := e.getAs(who, "/events/"+d.id+"/ev-1")
		if code != http.StatusNotFound || bytes.Contains(body, []byte("ev-1")) {
			t.Errorf("%s asks for alice's event: %d (want 404, as for none)", who, code)
		}
	}
	if code, _, _ := e.getAs("alice", "/events/"+d.id+"/no-such"); code != http.StatusNotFound {
		t.Errorf("an unknown event: %d, want 404", code)
	}
	if code, _, _ := e.adminGet("/events/" + d.id + "/ev-1"); code != http.StatusForbidden {
		t.Errorf("admin: %d, want 403", code)
	}
	// Only the end stored: the page says so.
	uploadJPEG(t, e, d, "ev-2", provenance.KindEnd, 3, provenance.ClockSynced)
	_, body, _ = e.getAs("alice", "/events/"+d.id+"/ev-2")
	if !strings.Contains(string(body), "Only the end record (the best frame) is stored") {
		t.Errorf("an event with its end only does not say the trigger frame is missing")
	}
}

// uploadJPEG stores a record with a real 64×48 JPEG and the motion box
// (16,12)-(32,24) of a 64×48 frame.
func uploadJPEG(t *testing.T, e *testEnv, d *testDevice, event, kind string, seq uint64, clk string) {
	t.Helper()
	thumb := realJPEG(t)
	p := d.payload(event, kind, seq, thumb)
	p.Motion.Box, p.Motion.Width, p.Motion.Height = [4]int32{16, 12, 32, 24}, 64, 48
	p.Time.Clock = clk
	p.Source = &provenance.Source{Kind: provenance.SourceV4L2, Name: "HD Pro Webcam C920", Bus: "usb-0000:01:00.0-1.2"}
	if code, reply := e.put("/v1/events/"+event+"/"+kind, bundle(t, d.sign(t, p), thumb)); code != http.StatusCreated {
		t.Fatalf("upload %s/%s: %d %s", event, kind, code, reply)
	}
}

// TestDeleteEvent: only the owner deletes, with a POST from this origin
// that confirms; the records go from the list, the event page, media,
// envelopes and disk, stay deleted across a restart and a re-send, and the
// store still verifies.
func TestDeleteEvent(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.account("bob", RoleOwner)
	start, end := d.record(t, "ev-1", provenance.KindStart, 1), d.record(t, "ev-1", provenance.KindEnd, 2)
	e.mustUpload(start, http.StatusCreated)
	e.mustUpload(end, http.StatusCreated)
	e.mustUpload(d.record(t, "ev-2", provenance.KindStart, 3), http.StatusCreated)
	del := "/events/" + d.id + "/ev-1/delete"
	if code, _, _ := e.do(http.MethodPost, del, strings.NewReader("confirm=yes"), e.cookieOf("bob")); code != http.StatusNotFound {
		t.Errorf("bob deletes alice's event: %d, want 404", code)
	}
	if code, _, _ := e.do(http.MethodPost, del, strings.NewReader(""), e.cookieOf("alice")); code != http.StatusBadRequest {
		t.Errorf("delete without confirm: %d, want 400", code)
	}
	if resp, _ := e.rawReq(http.MethodPost, del, "confirm=yes", map[string]string{"Sec-Fetch-Site": "cross-site"}, e.cookieOf("alice")); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site delete: %d, want 403", resp.StatusCode)
	}
	if _, err := os.Stat(envelopePath(e.dir, &indexEntry{Device: d.id, Event: "ev-1", Kind: "start"})); err != nil {
		t.Fatalf("the refused deletions removed a file: %v", err)
	}
	resp, _ := e.rawReq(http.MethodPost, del, "confirm=yes", nil, e.cookieOf("alice"))
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("alice deletes her event: %d, want 303", resp.StatusCode)
	}
	check := func(when string) {
		t.Helper()
		_, page, _ := e.getAs("alice", "/")
		if bytes.Contains(page, []byte("ev-1")) || !bytes.Contains(page, []byte("ev-2")) {
			t.Errorf("%s: the list shows ev-1 or lacks ev-2", when)
		}
		for _, p := range []string{"/events/" + d.id + "/ev-1", mediaURL(d, start), mediaURL(d, end), envelopeURL(d, start)} {
			if code, _, _ := e.getAs("alice", p); code != http.StatusNotFound {
				t.Errorf("%s: GET %s: %d, want 404", when, p, code)
			}
		}
		for _, k := range []string{"start", "end"} {
			ie := &indexEntry{Device: d.id, Event: "ev-1", Kind: k, Media: []indexMedia{{Type: "image/jpeg"}}}
			for _, f := range []string{envelopePath(e.dir, ie), mediaPath(e.dir, ie, 0)} {
				if _, err := os.Stat(f); !os.IsNotExist(err) {
					t.Errorf("%s: %s is still on disk (%v)", when, f, err)
				}
			}
		}
	}
	check("after deleting")
	if st := e.srv.Stats(); st.Deleted != 2 || st.Records != 1 {
		t.Errorf("stats deleted %d, records %d; want 2, 1", st.Deleted, st.Records)
	}
	// A re-send is answered as a duplicate and stays deleted; a replay of
	// its sequence number is still refused.
	e.mustUpload(start, http.StatusOK)
	e.close()
	e.open(Options{})
	check("after a restart and a re-send")
	if st := e.srv.Stats(); st.Records != 1 {
		t.Errorf("after a restart: stats records %d, want 1", st.Records)
	}
	rep, err := CheckStore(e.dir)
	if err != nil || !rep.OK() || rep.Deleted != 2 || rep.Verified != 1 {
		t.Errorf("CheckStore: %+v %v, want 1 verified, 2 deleted, no problem", rep, err)
	}
}

// TestRetention: the sweep deletes, of each owner's events, those older
// than their days and those past their bytes (oldest first), on the
// injected clock, and nothing of an owner without retention.
func TestRetention(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk})
	a, b := newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	for i := 1; i <= 4; i++ {
		e.mustUpload(a.record(t, fmt.Sprintf("a-%d", i), provenance.KindStart, uint64(i)), http.StatusCreated)
		e.mustUpload(b.record(t, fmt.Sprintf("b-%d", i), provenance.KindStart, uint64(i)), http.StatusCreated)
		clk.add(24 * time.Hour)
	}
	// Now: a-1 is 4 days old, a-4 1 day.
	if err := e.srv.SetRetention("alice", Retention{Days: 2}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.srv.Sweep(); err != nil || n != 2 {
		t.Fatalf("sweep by days: %d deleted, %v; want 2 (a-1, a-2)", n, err)
	}
	names := func(owner string) string {
		evs, err := e.srv.OwnerEvents(owner)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, v := range evs {
			out = append(out, v.Event)
		}
		return strings.Join(out, ",")
	}
	if got := names("alice"); got != "a-4,a-3" {
		t.Errorf("alice keeps %s, want a-4,a-3", got)
	}
	if got := names("bob"); got != "b-4,b-3,b-2,b-1" {
		t.Errorf("bob, without retention, keeps %s", got)
	}
	// Bytes: each thumbnail is 300-odd bytes: room for one.
	if err := e.srv.SetRetention("bob", Retention{Bytes: 400}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Sweep(); err != nil {
		t.Fatal(err)
	}
	if got := names("bob"); got != "b-4" {
		t.Errorf("bob keeps %s, want b-4 (the newest within 400 bytes)", got)
	}
	if err := e.srv.SetRetention("alice", Retention{Days: -1}); err == nil {
		t.Error("negative days accepted")
	}
	// The form: bad values are 400 and name the field; good ones apply.
	for _, form := range []string{"days=x&mib=0", "days=1&mib=-1", "days=99999999&mib=0"} {
		code, body, _ := e.do(http.MethodPost, "/settings", strings.NewReader(form), e.cookieOf("alice"))
		if code != http.StatusBadRequest || !(bytes.Contains(body, []byte("days")) || bytes.Contains(body, []byte("MiB"))) {
			t.Errorf("settings %q: %d", form, code)
		}
	}
	code, body, _ := e.do(http.MethodPost, "/settings", strings.NewReader("days=1&mib=0"), e.cookieOf("alice"))
	if code != http.StatusOK || !bytes.Contains(body, []byte("Saved. 1 record(s)")) {
		t.Errorf("settings days=1: %d %s", code, body)
	}
	if r, _ := e.srv.RetentionOf("alice"); r != (Retention{Days: 1}) {
		t.Errorf("alice's retention %+v", r)
	}
}

// sseReader reads a live stream.
type sseReader struct {
	resp *http.Response
	rd   *bufio.Reader
}

func (e *testEnv) openStream(ctx context.Context, c *http.Cookie) (*http.Response, *sseReader) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.hs.URL+"/events/stream", nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.AddCookie(c)
	resp, err := e.hs.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp, &sseReader{resp: resp, rd: bufio.NewReader(resp.Body)}
}

// until reads messages until one holds want and returns all read.
func (r *sseReader) until(t *testing.T, want string) string {
	t.Helper()
	var all strings.Builder
	for {
		line, err := r.rd.ReadString('\n')
		all.WriteString(line)
		if strings.Contains(line, want) {
			return all.String()
		}
		if err != nil {
			t.Fatalf("stream ended (%v) before %q; read %q", err, want, all.String())
		}
	}
}

// TestStreamOwnerScoped: an owner's live stream carries their new records
// and never another owner's, even of a camera that was theirs before; an
// admin has none; the limits hold; a stream ends after its lifetime.
func TestStreamOwnerScoped(t *testing.T) {
	e := newEnv(t, Options{MaxStreams: 3, MaxStreamsPerOwner: 2})
	a, b := newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, alice := e.openStream(ctx, e.cookieOf("alice"))
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("alice's stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	_, bob := e.openStream(ctx, e.cookieOf("bob"))
	alice.until(t, "retry:")
	bob.until(t, "retry:")

	e.mustUpload(a.record(t, "alice-ev", provenance.KindStart, 1), http.StatusCreated)
	e.mustUpload(b.record(t, "bob-ev", provenance.KindStart, 1), http.StatusCreated)
	got := alice.until(t, "alice-ev")
	if !strings.Contains(got, "event: record") || !strings.Contains(got, a.id) {
		t.Errorf("alice's stream: %q", got)
	}
	// Bob's stream reaches his own record, sent after alice's: alice's
	// would have come first.
	got = bob.until(t, "bob-ev")
	if strings.Contains(got, "alice-ev") || strings.Contains(got, a.id) {
		t.Errorf("bob's stream carries alice's record: %q", got)
	}
	// Alice's camera goes to bob: its next records are bob's, never alice's.
	if err := Pair(e.dir, a.id, "bob"); err != nil {
		t.Fatal(err)
	}
	e.mustUpload(a.record(t, "now-bobs", provenance.KindStart, 2), http.StatusCreated)
	e.mustUpload(a.record(t, "bobs-2", provenance.KindStart, 3), http.StatusCreated)
	bob.until(t, "bobs-2")
	e.mustUpload(d2(t, e, "alice", "alice-again"), http.StatusCreated)
	got = alice.until(t, "alice-again")
	if strings.Contains(got, "now-bobs") || strings.Contains(got, "bobs-2") {
		t.Errorf("alice's stream carries a record of her former camera made for bob: %q", got)
	}

	// Limits: alice has 1 of 2; one more, then 429; then all 3 are taken.
	if resp, _ := e.openStream(ctx, e.cookieOf("alice")); resp.StatusCode != http.StatusOK {
		t.Errorf("alice's second stream: %d", resp.StatusCode)
	}
	if resp, _ := e.openStream(ctx, e.cookieOf("alice")); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("alice's third stream: %d, want 429", resp.StatusCode)
	}
	if resp, _ := e.openStream(ctx, e.cookieOf("carol")); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a fourth stream in all: %d, want 429", resp.StatusCode)
	}
	e.account("ops", RoleAdmin)
	if code, _, _ := e.getAs("ops", "/events/stream"); code != http.StatusForbidden {
		t.Errorf("admin's stream: %d, want 403", code)
	}
	if code, _, _ := e.get("/events/stream"); code != http.StatusUnauthorized {
		t.Errorf("a stream without a session: %d, want 401", code)
	}
}

// d2 enrolls a new device of owner and returns the body path of one record
// upload, for the stream test.
func d2(t *testing.T, e *testEnv, owner, event string) *record {
	t.Helper()
	d := newDevice(t)
	e.enroll(d, owner)
	return d.record(t, event, provenance.KindStart, 1)
}

// TestStreamLifetime: a stream ends after its lifetime (the browser
// reconnects), so a revoked session or a changed pairing waits at most
// that long.
func TestStreamLifetime(t *testing.T) {
	e := newEnv(t, Options{StreamLifetime: 10 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, st := e.openStream(ctx, e.cookieOf("alice"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	st.until(t, "retry:")
	for {
		if _, err := st.rd.ReadString('\n'); err != nil {
			if ctx.Err() != nil {
				t.Fatal("the stream did not end by itself")
			}
			break
		}
	}
	if n := e.srv.hub.open(); n != 0 {
		t.Errorf("%d streams still counted open", n)
	}
}

// TestHealthAndFavicon: /healthz says ok and nothing else, to anyone; the
// icon is an SVG that cannot run script.
func TestHealthAndFavicon(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev", provenance.KindStart, 1), http.StatusCreated)
	code, body, _ := e.get("/healthz")
	if code != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if err := os.WriteFile(e.dir+"/registry.json", []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := e.get("/healthz"); code != http.StatusServiceUnavailable || string(body) != "unavailable\n" {
		t.Errorf("healthz with an unreadable registry: %d %q", code, body)
	}
	code, body, h := e.get("/favicon.ico")
	if code != http.StatusOK || h.Get("Content-Type") != "image/svg+xml" || !strings.Contains(h.Get("Content-Security-Policy"), "sandbox") || !bytes.HasPrefix(body, []byte("<svg")) {
		t.Errorf("favicon: %d %q %q", code, h.Get("Content-Type"), h.Get("Content-Security-Policy"))
	}
}

// TestDeletionsTornAndCorrupt: a torn last line of deleted.jsonl (a crash
// while appending) is cut off at open and deletes nothing; a corrupt line
// before the last refuses to open, naming the file.
func TestDeletionsTornAndCorrupt(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-2", provenance.KindStart, 2), http.StatusCreated)
	if resp, _ := e.rawReq(http.MethodPost, "/events/"+d.id+"/ev-1/delete", "confirm=yes", nil, e.cookieOf("alice")); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	e.close()
	path := e.dir + "/" + deletedFile
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	torn := append(bytes.Clone(good), []byte(`{"device":"`+d.id+`","event":"ev-2","kind":"start","at":"2025-11-24T12:00:00Z","by":"owner","owner":"alice"}`)...)
	if err := os.WriteFile(path, torn, 0o600); err != nil {
		t.Fatal(err)
	}
	e.open(Options{})
	evs, err := e.srv.OwnerEvents("alice")
	if err != nil || len(evs) != 1 || evs[0].Event != "ev-2" {
		t.Errorf("after a torn deletion line: %+v %v, want ev-2 only", evs, err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, good) {
		t.Errorf("the torn line was not cut off: %q", got)
	}
	e.close()
	if err := os.WriteFile(path, append([]byte("{not json\n"), good...), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(Options{Dir: e.dir})
	if err == nil || !strings.Contains(err.Error(), deletedFile+" line 1") {
		t.Errorf("open with a corrupt deletion line: %v", err)
	}
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	e.open(Options{})
}
