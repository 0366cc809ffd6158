package receiver

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
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

// TestLateSegmentAdmission: a segment whose seq is at or below the highest
// stored one (its device sent the event's end record, and the next event's
// start, ahead of it) is admitted only inside its event: after its event's
// stored start record and before its end record, if stored; an identical
// re-send is idempotent. A segment of an event whose start is not stored,
// before the start, at or after the end, or of a deleted event, is refused
// as a replay, and so is every other kind of record arriving late.
//
// The records around the segments are real uploads; the segments are
// admitted by admitRecord directly, on entries as ingest makes them after
// verification. Each event stores at most one segment here: the index keys
// a record by device, event and kind.
func TestLateSegmentAdmission(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-a", provenance.KindStart, 10), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-a", provenance.KindEnd, 14), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-b", provenance.KindStart, 15), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-g", provenance.KindStart, 16), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-g", provenance.KindEnd, 18), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-x", provenance.KindStart, 19), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-d", provenance.KindStart, 20), http.StatusCreated)

	seg := func(event string, seq uint64) *indexEntry {
		h := sha256.Sum256([]byte(event + "/" + strconv.FormatUint(seq, 10)))
		return &indexEntry{Device: d.id, Event: event, Kind: kindSegment, Seq: seq, Envelope: hex.EncodeToString(h[:]), ReceivedAt: testNow}
	}
	v := &provenance.Verified{Payload: &provenance.Payload{Kind: kindSegment}, Device: d.id}
	admit := func(en *indexEntry) (bool, error) {
		t.Helper()
		dup, err := e.srv.admitRecord(en, v, admission{}, 1000)
		if err == nil && !dup {
			// Stored, as ingest does once the files are written.
			e.srv.mu.Lock()
			e.srv.addRecord(en)
			e.srv.mu.Unlock()
			e.srv.storing.Done()
		}
		return dup, err
	}
	replay := func(en *indexEntry, why string) {
		t.Helper()
		_, err := admit(en)
		var rej *rejection
		if !errors.As(err, &rej) || rej.reason != ReasonReplay || !strings.Contains(rej.msg, why) {
			t.Errorf("segment %s seq %d: %v, want a replay refusal saying %q", en.Event, en.Seq, err, why)
		}
	}

	late := seg("ev-a", 12)
	if dup, err := admit(late); err != nil || dup {
		t.Fatalf("late segment inside its event: dup %v, err %v; want admitted", dup, err)
	}
	if !strings.Contains(strings.Join(e.logs.lines(), "\n"), "late clip segment accepted") {
		t.Errorf("the late segment was not logged:\n%s", strings.Join(e.logs.lines(), "\n"))
	}
	if dup, err := admit(seg("ev-a", 12)); err != nil || !dup {
		t.Errorf("identical re-send of the late segment: dup %v, err %v; want an idempotent success", dup, err)
	}
	if got := e.srv.maxSeq[d.id]; got != 20 {
		t.Errorf("highest seq %d after a late segment, want 20 still", got)
	}
	replay(seg("ev-g", 13), "start record has seq 16")
	replay(seg("ev-g", 18), "end record has seq 18")
	replay(seg("ev-g", 19), "end record has seq 18")
	replay(seg("ev-c", 17), "start record is not stored")
	// ev-b has no end record yet: its late segments are inside it.
	if _, err := admit(seg("ev-b", 17)); err != nil {
		t.Errorf("late segment of an event without its end yet: %v", err)
	}
	// A deleted event takes no late segment.
	if n, err := e.srv.deleteEvent(e.registry(), "alice", d.id, "ev-x", "alice"); err != nil || n != 1 {
		t.Fatalf("deleteEvent: %d, %v", n, err)
	}
	replay(seg("ev-x", 20), "its event was deleted")

	// Other kinds stay replays, late segment rule or not.
	code, reply := e.upload(d.record(t, "ev-e", provenance.KindStart, 11))
	if code != http.StatusConflict || strings.Contains(reply, "segment") {
		t.Errorf("late start record: %d %q, want 409 replay", code, reply)
	}
	code, _ = e.upload(d.record(t, "ev-b", provenance.KindEnd, 19))
	if code != http.StatusConflict {
		t.Errorf("late end record: %d, want 409 replay", code)
	}
	// A segment above the highest seq is in order: admitted as before.
	if _, err := admit(seg("ev-d", 21)); err != nil {
		t.Errorf("segment in order: %v", err)
	}
}
