package receiver

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
)

func TestRestartKeepsEventsAndReplayState(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	r1 := d.record(t, "ev-1", provenance.KindStart, 1)
	r2 := d.record(t, "ev-1", provenance.KindEnd, 2)
	e.mustUpload(r1, http.StatusCreated)
	e.mustUpload(r2, http.StatusCreated)

	e.close()
	e.open(Options{})

	if st := e.srv.Stats(); st.Records != 2 {
		t.Fatalf("after restart %d records, want 2", st.Records)
	}
	_, page, _ := e.getAs("alice", "/")
	if !bytes.Contains(page, []byte("ev-1")) {
		t.Errorf("owner page lost the event across the restart")
	}
	if code, img, _ := e.getAs("alice", mediaURL(d, r2)); code != http.StatusOK || !bytes.Equal(img, r2.thumb) {
		t.Errorf("thumbnail lost across the restart: %d", code)
	}
	e.mustUpload(r2, http.StatusOK) // still idempotent
	code, reply := e.upload(d.record(t, "ev-2", provenance.KindStart, 2))
	if code != http.StatusConflict || !strings.Contains(reply, "replay: seq 2 ≤ 2") {
		t.Errorf("replay after restart: %d %q, want 409", code, reply)
	}
	e.mustUpload(d.record(t, "ev-2", provenance.KindStart, 3), http.StatusCreated)
}

func TestTornIndexTailIsDropped(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
	e.close()

	path := filepath.Join(e.dir, indexFile)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A crash in the middle of appending the next line.
	torn := append(bytes.Clone(good), []byte(`{"device":"`+d.id+`","event":"ev-2","ki`)...)
	if err := os.WriteFile(path, torn, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := CheckStore(e.dir)
	if err != nil || !rep.OK() || rep.Verified != 1 || rep.Torn == "" {
		t.Errorf("CheckStore on a torn tail: %+v, %v; want ok with the torn line noted", rep, err)
	}

	e.open(Options{})
	if n := e.srv.Stats().Records; n != 1 {
		t.Fatalf("%d records after a torn tail, want 1", n)
	}
	if !strings.Contains(e.logs.buf.String(), "torn") {
		t.Errorf("torn line not logged:\n%s", e.logs.buf.String())
	}
	if cut, _ := os.ReadFile(path); !bytes.Equal(cut, good) {
		t.Errorf("torn line not cut off the index")
	}
	// The next record appends cleanly and survives another restart.
	e.mustUpload(d.record(t, "ev-2", provenance.KindStart, 2), http.StatusCreated)
	e.close()
	e.open(Options{})
	if n := e.srv.Stats().Records; n != 2 {
		t.Fatalf("%d records after append and restart, want 2", n)
	}
}

func TestCorruptIndexLineRefusesOpen(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, 1), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-2", provenance.KindStart, 2), http.StatusCreated)
	e.close()
	path := filepath.Join(e.dir, indexFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[5] = '#' // first line broken, second intact
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if srv, err := Open(Options{Dir: e.dir}); err == nil {
		srv.Close()
		t.Fatal("Open accepted an index with a corrupt line before its last: replay state would be lost")
	} else if !strings.Contains(err.Error(), "line 1") {
		t.Errorf("error %q does not name the line", err)
	}
	rep, err := CheckStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Problems) != 1 || rep.Problems[0].Line != 1 || rep.Verified != 1 {
		t.Errorf("CheckStore: %+v, want line 1 reported and 1 verified", rep)
	}
}

func TestOneServerPerDirectory(t *testing.T) {
	e := newEnv(t, Options{})
	if srv, err := Open(Options{Dir: e.dir}); err == nil {
		srv.Close()
		t.Fatal("a second server opened the same directory")
	}
}

func TestCheckStore(t *testing.T) {
	e := newEnv(t, Options{})
	a, b := newDevice(t), newDevice(t)
	e.enroll(a, "alice")
	e.enroll(b, "bob")
	ra := a.record(t, "ev-a", provenance.KindStart, 1)
	rb := b.record(t, "ev-b", provenance.KindStart, 1)
	rb2 := b.record(t, "ev-b", provenance.KindEnd, 2)
	for _, r := range []*record{ra, rb, rb2} {
		e.mustUpload(r, http.StatusCreated)
	}
	rep, err := CheckStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Verified != 3 || rep.Records != 3 {
		t.Fatalf("fresh store: %+v, want 3 verified", rep)
	}

	// Flip one byte of a stored thumbnail.
	victim := filepath.Join(e.dir, "events", b.id, "ev-b-end.0.jpg")
	data, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	data[100] ^= 0xff
	if err := os.WriteFile(victim, data, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err = CheckStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Verified != 2 || len(rep.Problems) != 1 {
		t.Fatalf("after a flipped byte: %+v, want one problem", rep)
	}
	p := rep.Problems[0]
	if p.Event != "ev-b" || p.Kind != "end" || p.Device != b.id || !strings.Contains(p.String(), "ev-b") || !strings.Contains(p.Reason, "media") {
		t.Errorf("problem %+v (%s) does not name the record and the media", p, p)
	}
	// The server refuses to show it.
	if code, img, _ := e.getAs("bob", mediaURL(b, rb2)); code == http.StatusOK || bytes.Equal(img, data) {
		t.Errorf("a tampered thumbnail was served: %d", code)
	}
	if n := e.srv.Stats().CorruptMedia; n != 1 {
		t.Errorf("corrupt media count %d, want 1", n)
	}

	// Another record, valid in itself (envelope and media of bob's device),
	// copied over alice's record: only the index cross-check catches it.
	for _, f := range [][2]string{{"ev-b-start.cose", "ev-a-start.cose"}, {"ev-b-start.0.jpg", "ev-a-start.0.jpg"}} {
		data, err := os.ReadFile(filepath.Join(e.dir, "events", b.id, f[0]))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.dir, "events", a.id, f[1]), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rep, err = CheckStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 2 || rep.Problems[0].Event != "ev-a" || !strings.Contains(rep.Problems[0].Reason, "signed by device "+b.id) {
		t.Errorf("after swapping in another device's record: %+v, want ev-a reported as signed by %s", rep.Problems, b.id)
	}

	// A device whose enrolment vanished no longer verifies.
	if err := os.Remove(filepath.Join(e.dir, registryFile)); err != nil {
		t.Fatal(err)
	}
	rep, err = CheckStore(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verified != 0 || len(rep.Problems) != 3 {
		t.Errorf("without a registry: %+v, want every record reported", rep)
	}

	if _, err := CheckStore(filepath.Join(e.dir, "missing")); err == nil {
		t.Error("CheckStore of a missing directory succeeded")
	}
}
