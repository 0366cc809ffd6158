package receiver

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
)

// TestSequenceHoleFailsNothing: a seq never delivered (a clip segment the
// device's spool evicted) leaves a gap: the records after it are stored
// and CheckStore verifies every one of them. A start or end record that
// arrives after a higher seq is still refused as a replay: only segments
// may come late.
func TestSequenceHoleFailsNothing(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-a", provenance.KindStart, 1), http.StatusCreated)
	// seq 2 and 3 were segments of ev-a, evicted on the device.
	e.mustUpload(d.record(t, "ev-a", provenance.KindEnd, 4), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-b", provenance.KindStart, 5), http.StatusCreated)
	// seq 6 was ev-b's end record, lost: a record that comes after a higher
	// one is still a replay when it is not a segment.
	e.mustUpload(d.record(t, "ev-c", provenance.KindStart, 7), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-b", provenance.KindEnd, 6), http.StatusConflict)
	e.mustUpload(d.record(t, "ev-c", provenance.KindEnd, 8), http.StatusCreated)

	st := e.srv.Stats()
	if st.Stored != 5 || st.Rejected[ReasonReplay] != 1 {
		t.Errorf("stored %d, replays %d; want 5 and 1", st.Stored, st.Rejected[ReasonReplay])
	}
	rep, err := CheckStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Verified != 5 {
		t.Errorf("CheckStore: %d verified, problems %v; want 5 and none", rep.Verified, rep.Problems)
	}
}

// segment is a signed clip segment record of d for event: one frame,
// index 0.
func (d *testDevice) segment(t testing.TB, event string, seq uint64) *record {
	t.Helper()
	frame := thumbFor(fmt.Sprintf("%s/segment/%d", event, seq))
	m, obj := provenance.SegmentMedia(provenance.FramesMediaType, [][]byte{frame})
	p := d.payload(event, provenance.KindSegment, seq, nil)
	p.Media = []provenance.Media{m}
	p.Segment = &provenance.Segment{Type: "image/jpeg", Frames: []provenance.ClipFrame{provenance.NewClipFrame(frame, 0)}}
	env := d.sign(t, p)
	return &record{event: event, kind: provenance.KindSegment, seq: seq, env: env, body: bundle(t, env, obj)}
}

// TestLateSegmentAdmission: a segment whose seq is at or below the highest
// stored one (its device sent the event's end record, and the next events'
// starts, ahead of it) is stored only inside its event: after its event's
// stored start record and before its end record, if stored; an identical
// re-send is idempotent, and CheckStore verifies what was stored. A segment
// of an event whose start is not stored, before the start, at or after the
// end, or of a deleted event, is refused as a replay, and so is every other
// kind of record arriving late. (Each event here has one segment: the store
// keys a record by device, event and kind.)
func TestLateSegmentAdmission(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	for _, r := range []*record{
		d.record(t, "ev-a", provenance.KindStart, 10),
		d.record(t, "ev-a", provenance.KindEnd, 14),
		d.record(t, "ev-b", provenance.KindStart, 15),
		d.record(t, "ev-g", provenance.KindStart, 16),
		d.record(t, "ev-g", provenance.KindEnd, 18),
		d.record(t, "ev-x", provenance.KindStart, 19),
		d.record(t, "ev-d", provenance.KindStart, 21),
	} {
		e.mustUpload(r, http.StatusCreated)
	}
	replay := func(r *record, why string) {
		t.Helper()
		code, reply := e.upload(r)
		if code != http.StatusConflict || !strings.Contains(reply, why) {
			t.Errorf("segment %s seq %d: %d %q, want 409 replay saying %q", r.event, r.seq, code, reply, why)
		}
	}

	late := d.segment(t, "ev-a", 12)
	e.mustUpload(late, http.StatusCreated)
	if !strings.Contains(strings.Join(e.logs.lines(), "\n"), "late clip segment accepted") {
		t.Errorf("the late segment was not logged:\n%s", strings.Join(e.logs.lines(), "\n"))
	}
	e.mustUpload(late, http.StatusOK) // an identical re-send
	e.srv.mu.Lock()
	highest := e.srv.maxSeq[d.id]
	e.srv.mu.Unlock()
	if highest != 21 {
		t.Errorf("highest seq %d after a late segment, want 21 still", highest)
	}
	replay(d.segment(t, "ev-g", 13), "start record has seq 16")
	replay(d.segment(t, "ev-g", 18), "end record has seq 18")
	replay(d.segment(t, "ev-g", 19), "end record has seq 18")
	replay(d.segment(t, "ev-c", 17), "start record is not stored")
	// ev-b has no end record yet: its late segments are inside it.
	e.mustUpload(d.segment(t, "ev-b", 17), http.StatusCreated)
	// A deleted event takes no late segment.
	if n, err := e.srv.deleteEvent(e.registry(), "alice", d.id, "ev-x", "alice"); err != nil || n != 1 {
		t.Fatalf("deleteEvent: %d, %v", n, err)
	}
	replay(d.segment(t, "ev-x", 20), "its event was deleted")

	// Other kinds stay replays, late segment rule or not.
	code, reply := e.upload(d.record(t, "ev-e", provenance.KindStart, 11))
	if code != http.StatusConflict || strings.Contains(reply, "segment") {
		t.Errorf("late start record: %d %q, want 409 replay", code, reply)
	}
	if code, _ := e.upload(d.record(t, "ev-b", provenance.KindEnd, 20)); code != http.StatusConflict {
		t.Errorf("late end record: %d, want 409 replay", code)
	}
	// A segment above the highest seq is in order: stored as before.
	e.mustUpload(d.segment(t, "ev-d", 22), http.StatusCreated)

	st := e.srv.Stats()
	if st.Stored != 10 || st.Rejected[ReasonReplay] != 7 {
		t.Errorf("stored %d, replays %d; want 10 and 7", st.Stored, st.Rejected[ReasonReplay])
	}
	rep, err := CheckStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Verified != 9 || rep.Deleted != 1 {
		t.Errorf("CheckStore: %d verified, %d deleted, problems %v; want 9, 1 and none", rep.Verified, rep.Deleted, rep.Problems)
	}
}
