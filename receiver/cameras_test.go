package receiver

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

// camerasTable returns the cameras table of an owner's page, one string of
// text per row (tags removed), or fails if the page has none.
func camerasTable(t *testing.T, e *testEnv, owner string) []string {
	t.Helper()
	code, page, _ := e.getAs(owner, "/")
	if code != http.StatusOK {
		t.Fatalf("%s's page: %d", owner, code)
	}
	s := string(page)
	i := strings.Index(s, `<table id="cameras">`)
	if i < 0 {
		if strings.Contains(s, "No cameras yet") {
			return nil
		}
		t.Fatalf("%s's page has no cameras table:\n%s", owner, s)
	}
	s = s[i:]
	s = s[:strings.Index(s, "</table>")]
	tags := regexp.MustCompile(`<[^>]*>`)
	var rows []string
	for _, r := range strings.Split(s, "<tr>")[2:] { // [0] before the first row, [1] the heading
		rows = append(rows, strings.Join(strings.Fields(tags.ReplaceAllString(r, " ")), " "))
	}
	return rows
}

// rowOf returns the row naming device, or "".
func rowOf(rows []string, device string) string {
	for _, r := range rows {
		if strings.Contains(r, device) {
			return r
		}
	}
	return ""
}

// TestOwnerCameras: an owner's page lists the cameras paired to them with
// their verification, counts and times; another owner's camera is never
// listed; a transferred camera is listed as past, with only the previous
// owner's records counted and dated (nothing of the new owner's).
func TestOwnerCameras(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk})
	a, b, c := newDevice(t), newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	e.enroll(c, "alice")
	e.mustUpload(a.record(t, "a1", provenance.KindStart, 1), http.StatusCreated)
	e.mustUpload(b.record(t, "b1", provenance.KindStart, 1), http.StatusCreated)
	e.mustUpload(c.record(t, "c1", provenance.KindStart, 1), http.StatusCreated)
	e.mustUpload(c.record(t, "c1", provenance.KindEnd, 2), http.StatusCreated)
	aliceLast := clk.Now().UTC().Format(time.DateTime)

	// c goes to bob (transfer) an hour later; bob's record of it is newer.
	clk.add(time.Hour)
	if err := Pair(e.dir, c.id, "bob"); err != nil {
		t.Fatal(err)
	}
	e.mustUpload(c.record(t, "c2", provenance.KindStart, 3), http.StatusCreated)
	bobLast := clk.Now().UTC().Format(time.DateTime)

	alice := camerasTable(t, e, "alice")
	if len(alice) != 2 {
		t.Fatalf("alice's cameras: %q, want a and c", alice)
	}
	if rowOf(alice, b.id) != "" {
		t.Errorf("alice's cameras list bob's camera: %q", alice)
	}
	if !strings.HasPrefix(alice[0], a.id) || !strings.HasPrefix(alice[1], c.id) {
		t.Errorf("alice's cameras: %q, want the current one first", alice)
	}
	ra := rowOf(alice, a.id)
	for _, want := range []string{"now", "records from seq 0", "enrolled key", aliceLast, " 1"} {
		if !strings.Contains(ra, want) {
			t.Errorf("alice's camera a: %q lacks %q", ra, want)
		}
	}
	rc := rowOf(alice, c.id)
	for _, want := range []string{"transferred at seq 3", "records seq 0 to 2", "enrolled key", aliceLast, " 2"} {
		if !strings.Contains(rc, want) {
			t.Errorf("alice's transferred camera c: %q lacks %q", rc, want)
		}
	}
	if strings.Contains(rc, bobLast) || strings.Contains(rc, "bob") || strings.Contains(rc, " now") {
		t.Errorf("alice's transferred camera c shows something of bob's time: %q", rc)
	}

	bob := camerasTable(t, e, "bob")
	if len(bob) != 2 || rowOf(bob, a.id) != "" {
		t.Fatalf("bob's cameras: %q, want b and c only", bob)
	}
	rc = rowOf(bob, c.id)
	for _, want := range []string{"now", "records from seq 3", bobLast, " 1"} {
		if !strings.Contains(rc, want) {
			t.Errorf("bob's camera c: %q lacks %q", rc, want)
		}
	}
	if strings.Contains(rc, aliceLast) || strings.Contains(rc, "alice") {
		t.Errorf("bob's camera c shows alice's time: %q", rc)
	}

	// An owner without a camera gets none, and the add-a-camera hint.
	if rows := camerasTable(t, e, "mallory"); len(rows) != 0 {
		t.Errorf("mallory's cameras: %q", rows)
	}

	// Unpaired: past, "removed"; revoked: shown revoked, no records.
	if err := Unpair(e.dir, a.id); err != nil {
		t.Fatal(err)
	}
	if r := rowOf(camerasTable(t, e, "alice"), a.id); !strings.Contains(r, "removed at seq 2") || !strings.Contains(r, "enrolled key") {
		t.Errorf("alice's unpaired camera a: %q", r)
	}
	if err := Revoke(e.dir, b.id); err != nil {
		t.Fatal(err)
	}
	rb := rowOf(camerasTable(t, e, "bob"), b.id)
	if !strings.Contains(rb, "revoked") || !strings.Contains(rb, "never") || !strings.HasSuffix(rb, " 0") {
		t.Errorf("bob's revoked camera b: %q, want revoked, never seen, 0 records", rb)
	}
}

// TestOwnerCamerasVerification: the verification column for a fleet CA's
// and a rotated key; a previous owner is not told the device ID the next
// owner's camera rotated to.
func TestOwnerCamerasVerification(t *testing.T) {
	reg := emptyRegistry()
	reg.Devices["ca"] = &registration{Via: ViaFleetCA + "ff", Pairings: []pairing{{Owner: "alice"}}}
	reg.Devices["old"] = &registration{RotatedTo: "new", RotatedSeq: 5, Pairings: []pairing{{Owner: "alice", Until: 6}}}
	reg.Devices["new"] = &registration{Via: ViaRotation + "old", Pairings: []pairing{{Owner: "alice", From: 5}}}
	reg.Devices["sold"] = &registration{RotatedTo: "secret", RotatedSeq: 8, Pairings: []pairing{{Owner: "alice", Until: 4}, {Owner: "bob", From: 4, Until: 9}}}
	got := map[string]camera{}
	for _, c := range ownerCameras(reg, "alice", nil) {
		got[c.Device] = c
	}
	for id, want := range map[string]struct{ verification, ended string }{
		"ca":   {"key certified by a fleet CA", ""},
		"new":  {"key rotated from old", ""},
		"old":  {"key retired: rotated to new at seq 5", "key rotated at seq 6"},
		"sold": {"enrolled key", "transferred at seq 4"},
	} {
		if c := got[id]; c.Verification != want.verification || c.Ended != want.ended || c.Past != (want.ended != "") {
			t.Errorf("camera %s: %+v, want %q, ended %q", id, c, want.verification, want.ended)
		}
	}
	if len(got) != 4 {
		t.Errorf("alice's cameras: %v", got)
	}
	for _, c := range ownerCameras(reg, "bob", nil) {
		if c.Device != "sold" || !strings.Contains(c.Verification, "secret") || c.Ended != "key rotated at seq 9" {
			t.Errorf("bob's camera: %+v", c)
		}
	}
}
