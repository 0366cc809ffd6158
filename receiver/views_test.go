package receiver

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
)

// twoOwners stores one record of alice's device and one of bob's.
func twoOwners(t *testing.T) (e *testEnv, a, b *testDevice, ra, rb *record) {
	e = newEnv(t, Options{})
	a, b = newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	ra = a.record(t, "alice-ev", provenance.KindStart, 1)
	rb = b.record(t, "bob-ev", provenance.KindStart, 1)
	e.mustUpload(ra, http.StatusCreated)
	e.mustUpload(rb, http.StatusCreated)
	return e, a, b, ra, rb
}

func TestOwnerSeesOnlyOwnDevices(t *testing.T) {
	e, a, b, ra, rb := twoOwners(t)

	code, page, _ := e.getAs("alice", "/")
	if code != http.StatusOK {
		t.Fatalf("alice's page: %d", code)
	}
	if !bytes.Contains(page, []byte("alice-ev")) || !bytes.Contains(page, []byte(a.id)) {
		t.Errorf("alice's page lacks her event")
	}
	if bytes.Contains(page, []byte("bob-ev")) || bytes.Contains(page, []byte(b.id)) {
		t.Errorf("alice's page shows bob's event")
	}
	if !bytes.Contains(page, []byte(`src="`+mediaURL(a, ra)+`"`)) {
		t.Errorf("alice's page has no owner-scoped thumbnail link:\n%s", page)
	}

	// Her own thumbnail: served as a JPEG.
	code, img, h := e.getAs("alice", mediaURL(a, ra))
	if code != http.StatusOK || !bytes.Equal(img, ra.thumb) {
		t.Fatalf("alice's own thumbnail: %d, %d bytes", code, len(img))
	}
	if h.Get("Content-Type") != "image/jpeg" || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("media headers: %v", h)
	}
	// Bob's thumbnail through alice's view: 404, counted.
	code, img, _ = e.getAs("alice", mediaURL(b, rb))
	if code != http.StatusNotFound || bytes.Contains(img, rb.thumb) {
		t.Fatalf("bob's thumbnail in alice's view: %d", code)
	}
	// An owner with no devices sees nothing.
	code, page, _ = e.getAs("mallory", "/")
	if code != http.StatusOK || bytes.Contains(page, []byte("alice-ev")) || bytes.Contains(page, []byte("bob-ev")) {
		t.Errorf("mallory's page: %d, shows events of others", code)
	}
	if code, _, _ := e.getAs("mallory", mediaURL(a, ra)); code != http.StatusNotFound {
		t.Errorf("alice's thumbnail in mallory's view: %d, want 404", code)
	}
	if n := e.srv.Stats().DeniedViews; n != 2 {
		t.Errorf("denied views %d, want 2", n)
	}
	// A media index out of range is just not found; the old owner URLs,
	// where the path chose the owner, are gone.
	for _, p := range []string{"/media/" + a.id + "/alice-ev/start/1", "/media/" + a.id + "/alice-ev/start/00", "/owners/alice/", "/owners/alice/media/" + a.id + "/alice-ev/start/0"} {
		if code, _, _ := e.getAs("alice", p); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
	}
}

// TestRepairingChangesViewsAtOnce: a device's pairing changes and the very
// next view must follow it, with no cache in between, and the change moves
// no history (the pairing covers the device's sequence numbers from the
// change on): re-pairing once handed the new owner the previous owner's
// whole history.
func TestRepairingChangesViewsAtOnce(t *testing.T) {
	e, a, _, ra, _ := twoOwners(t)
	if code, _, _ := e.getAs("alice", mediaURL(a, ra)); code != http.StatusOK {
		t.Fatalf("alice cannot see her own thumbnail: %d", code)
	}
	if _, page, _ := e.getAs("alice", "/"); !bytes.Contains(page, []byte("alice-ev")) { // and warm any cache there might be
		t.Fatalf("alice's page lacks her event before the change")
	}

	if err := Pair(e.dir, a.id, "bob"); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.srv.PairedOwner(a.id); got != "bob" {
		t.Fatalf("paired to %q right after Pair, want bob", got)
	}
	if code, _, _ := e.getAs("bob", mediaURL(a, ra)); code != http.StatusNotFound {
		t.Errorf("after re-pairing to bob, bob gets alice's thumbnail from before: %d", code)
	}
	if _, page, _ := e.getAs("bob", "/"); bytes.Contains(page, []byte("alice-ev")) || !bytes.Contains(page, []byte("bob-ev")) {
		t.Errorf("bob's page after the re-pairing: want his own event and not alice's")
	}
	if code, img, _ := e.getAs("alice", mediaURL(a, ra)); code != http.StatusOK || !bytes.Equal(img, ra.thumb) {
		t.Errorf("after re-pairing, alice lost her own thumbnail: %d", code)
	}
	rn := a.record(t, "bob-era", provenance.KindStart, 2)
	e.mustUpload(rn, http.StatusCreated)
	if code, _, _ := e.getAs("bob", mediaURL(a, rn)); code != http.StatusOK {
		t.Errorf("bob cannot see the device's record after the re-pairing: %d", code)
	}
	if code, _, _ := e.getAs("alice", mediaURL(a, rn)); code != http.StatusNotFound {
		t.Errorf("alice sees the device's record after the re-pairing: %d", code)
	}

	if err := Unpair(e.dir, a.id); err != nil {
		t.Fatal(err)
	}
	ru := a.record(t, "unpaired", provenance.KindStart, 3)
	e.mustUpload(ru, http.StatusCreated)
	for _, owner := range []string{"alice", "bob"} {
		if code, _, _ := e.getAs(owner, mediaURL(a, ru)); code != http.StatusNotFound {
			t.Errorf("unpaired device's thumbnail served to %s: %d", owner, code)
		}
	}
	if code, _, _ := e.getAs("bob", mediaURL(a, rn)); code != http.StatusOK {
		t.Errorf("bob lost his record after the unpairing: %d", code)
	}
	e.account("ops", RoleAdmin)
	if _, page, _ := e.getAs("ops", "/"); !bytes.Contains(page, []byte("not paired")) || !bytes.Contains(page, []byte(a.id)) {
		t.Errorf("the admin's fleet page does not show the device as unpaired")
	}
}

// TestOwnerPage: the signed-in owner's page lists their events newest
// first, marks an unsynced clock and links each thumbnail, served as a JPEG.
func TestOwnerPage(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	first := d.record(t, "ev-first", provenance.KindStart, 1)
	e.mustUpload(first, http.StatusCreated)
	// A board without RTC: the second record's clock is unsynced.
	thumb := thumbFor("second")
	p := d.payload("ev-second", provenance.KindStart, 2, thumb)
	p.Time = provenance.Time{UnixMs: 5000, BootMs: 5000, Clock: provenance.ClockUnsynced}
	second := &record{event: "ev-second", kind: provenance.KindStart, seq: 2, thumb: thumb}
	second.env = d.sign(t, p)
	second.body = bundle(t, second.env, thumb)
	e.mustUpload(second, http.StatusCreated)

	code, body, h := e.getAs("alice", "/")
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", code, h.Get("Content-Type"))
	}
	page := string(body)
	for _, want := range []string{d.id, "ev-first", "ev-second", "verified", "alice", "unsynced clock", "1970-01-01 00:00:05.000 UTC",
		`src="` + mediaURL(d, first) + `"`, `src="` + mediaURL(d, second) + `"`, `action="/signout"`} {
		if !strings.Contains(page, want) {
			t.Errorf("owner page lacks %q", want)
		}
	}
	if strings.Index(page, "ev-second") > strings.Index(page, "ev-first") {
		t.Errorf("owner page is not newest first")
	}
	if strings.Count(page, "unsynced clock") != 1 {
		t.Errorf("unsynced clock marker shown %d times, want once", strings.Count(page, "unsynced clock"))
	}
	code, img, h := e.getAs("alice", mediaURL(d, first))
	if code != http.StatusOK || !bytes.Equal(img, first.thumb) || h.Get("Content-Type") != "image/jpeg" || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("owner media: %d, %d bytes, %v", code, len(img), h)
	}
	if code, _, _ := e.getAs("alice", "/media/"+d.id+"/ev-none/start/0"); code != http.StatusNotFound {
		t.Errorf("unknown media: %d, want 404", code)
	}
}

// TestAdminSeesFleetNotMedia: an admin's home page is the fleet (devices,
// owners, status, counts) with no event, thumbnail or envelope; the media
// and envelope routes refuse an admin (403) and /v1/stats answers.
func TestAdminSeesFleetNotMedia(t *testing.T) {
	e, a, b, ra, rb := twoOwners(t)
	e.account("ops", RoleAdmin)
	code, page, _ := e.getAs("ops", "/")
	if code != http.StatusOK {
		t.Fatalf("fleet page: %d", code)
	}
	for _, want := range []string{a.id, b.id, "alice", "bob", "enrolled"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("fleet page lacks %q", want)
		}
	}
	for _, leak := range [][]byte{[]byte("alice-ev"), []byte("bob-ev"), []byte("<img"), []byte("/media/"), []byte("/envelope/"), ra.thumb[:16], rb.thumb[:16]} {
		if bytes.Contains(page, leak) {
			t.Errorf("fleet page shows %q", leak)
		}
	}
	for _, p := range []string{mediaURL(a, ra), envelopeURL(b, rb)} {
		code, body, _ := e.getAs("ops", p)
		if code != http.StatusForbidden || bytes.Contains(body, ra.thumb) || bytes.Contains(body, rb.env) {
			t.Errorf("admin GET %s: %d, want 403 and nothing of the record", p, code)
		}
	}
	code, body, _ := e.getAs("ops", "/v1/stats")
	var st Stats
	if err := json.Unmarshal(body, &st); code != http.StatusOK || err != nil || st.Records != 2 {
		t.Errorf("admin /v1/stats: %d %v %+v", code, err, st)
	}
	if code, _, _ := e.getAs("alice", "/v1/stats"); code != http.StatusForbidden {
		t.Errorf("owner /v1/stats: %d, want 403", code)
	}
}

// TestDeviceMediaTypeCannotBecomeHTML checks that a media type chosen by the
// device does not make this origin serve HTML.
func TestDeviceMediaTypeCannotBecomeHTML(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	html := []byte("<script>alert(1)</script>")
	p := d.payload("ev-1", provenance.KindStart, 1, html)
	p.Media[0].Type = "text/html"
	env := d.sign(t, p)
	e.mustUpload(&record{event: "ev-1", kind: "start", seq: 1, env: env, body: bundle(t, env, html)}, http.StatusCreated)
	code, _, h := e.getAs("alice", "/media/"+d.id+"/ev-1/start/0")
	if code != http.StatusOK || h.Get("Content-Type") == "text/html" || h.Get("Content-Disposition") != "attachment" {
		t.Errorf("text/html media served as %d %q disposition %q", code, h.Get("Content-Type"), h.Get("Content-Disposition"))
	}
	if _, page, _ := e.getAs("alice", "/"); bytes.Contains(page, []byte("<img")) {
		t.Errorf("a non-image medium is shown as an image")
	}
}
