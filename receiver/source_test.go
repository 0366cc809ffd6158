package receiver

import (
	"net/http"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
)

// recordFrom is a record of d naming src as its frames' source.
func (d *testDevice) recordFrom(t *testing.T, event string, seq uint64, src *provenance.Source) *record {
	t.Helper()
	thumb := thumbFor(event)
	p := d.payload(event, provenance.KindStart, seq, thumb)
	p.Source = src
	env := d.sign(t, p)
	return &record{event: event, kind: provenance.KindStart, seq: seq, thumb: thumb, env: env, body: bundle(t, env, thumb)}
}

// TestSourceMarked: the signed source is stored and shown; a record from a
// synthetic scene, from images or naming no source is marked "not from a
// camera" on the owner's page and in the verified line, a camera's is not.
func TestSourceMarked(t *testing.T) {
	e := newEnv(t, Options{})
	a := newDevice(t)
	e.enroll(a, "alice")
	recs := []struct {
		event  string
		src    *provenance.Source
		camera bool
		shown  string
	}{
		{"cam-ev", &provenance.Source{Kind: provenance.SourceV4L2, Name: "HD Pro Webcam C920", Bus: "usb-0000:01:00.0-1.2"}, true, "camera HD Pro Webcam C920 usb-0000:01:00.0-1.2"},
		{"pi-ev", &provenance.Source{Kind: provenance.SourceExec, Name: "rpicam-vid"}, true, "camera via command rpicam-vid"},
		{"synth-ev", &provenance.Source{Kind: provenance.SourceSynthetic}, false, "synthetic scene"},
		{"dir-ev", &provenance.Source{Kind: provenance.SourceImages, Name: "clips"}, false, "still images clips"},
		{"old-ev", nil, false, "source not stated"},
	}
	for i, r := range recs {
		e.mustUpload(a.recordFrom(t, r.event, uint64(i+1), r.src), http.StatusCreated)
	}
	lines := e.lines.lines()
	views, err := e.srv.OwnerEvents("alice")
	if err != nil {
		t.Fatal(err)
	}
	code, page, _ := e.getAs("alice", "/")
	if code != http.StatusOK {
		t.Fatalf("page: %d", code)
	}
	rows := strings.Split(string(page), "<tr>")
	for _, r := range recs {
		for _, l := range lines {
			if strings.Contains(l, "event="+r.event) && strings.Contains(l, "NOT-FROM-A-CAMERA") == r.camera {
				t.Errorf("%s: verified line %q, from a camera %v", r.event, l, r.camera)
			}
		}
		for _, v := range views {
			if v.Event == r.event && (v.FromCamera != r.camera || v.Source != r.shown) {
				t.Errorf("%s: view says %q, from a camera %v; want %q, %v", r.event, v.Source, v.FromCamera, r.shown, r.camera)
			}
		}
		found := false
		for _, row := range rows {
			if !strings.Contains(row, r.event) {
				continue
			}
			found = true
			if strings.Contains(row, "not from a camera") == r.camera || !strings.Contains(row, r.shown) {
				t.Errorf("%s: row does not say %q with the mark %v:\n%s", r.event, r.shown, !r.camera, row)
			}
		}
		if !found {
			t.Errorf("%s: no row on the page", r.event)
		}
	}
	if rep, err := CheckStore(e.dir); err != nil || !rep.OK() {
		t.Fatalf("store with sources: %+v, %v", rep, err)
	}
}
