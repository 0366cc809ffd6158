package receiver

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/atomicfile/atomicfiletest"
	"github.com/keyframe-cam/keyframe/provenance"
)

// recordedIndex records the appends and fsyncs of the index.
type recordedIndex struct {
	indexHandle
	path string
	rec  *atomicfiletest.Recorder
}

func (x recordedIndex) Write(b []byte) (int, error) {
	n, err := x.indexHandle.Write(b)
	if err == nil {
		x.rec.Record("write", x.path)
	}
	return n, err
}

func (x recordedIndex) Sync() error {
	if err := x.indexHandle.Sync(); err != nil {
		return err
	}
	x.rec.Record("sync", x.path)
	return nil
}

// ackRecorder records the moment the reply's status is sent.
type ackRecorder struct {
	*httptest.ResponseRecorder
	rec *atomicfiletest.Recorder
}

func (a ackRecorder) WriteHeader(code int) {
	a.rec.Record("ack", strconv.Itoa(code))
	a.ResponseRecorder.WriteHeader(code)
}

// TestUploadDurableBeforeAck pins the order of an upload's file system calls:
// each media file and the envelope written, fsynced, renamed and their
// directory fsynced; then the index line appended and fsynced; only then the
// 201. A missing fsync is invisible to a killed process and to tmpfs, so no
// other test can see it.
func TestUploadDurableBeforeAck(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	r := d.record(t, "ev-1", provenance.KindStart, 1)
	// The first record creates the device's directory, the second finds it.
	r2 := d.record(t, "ev-1", provenance.KindEnd, 2)

	rec := &atomicfiletest.Recorder{}
	idx := filepath.Join(e.dir, indexFile)
	e.srv.files = atomicfile.Writer{FS: rec}
	e.srv.index = recordedIndex{indexHandle: e.srv.index, path: idx, rec: rec}

	for _, r := range []*record{r, r2} {
		before := len(rec.Ops())
		req := httptest.NewRequest(http.MethodPut, r.path(), bytes.NewReader(r.body))
		req.Header.Set("Content-Type", provenance.BundleContentType)
		w := ackRecorder{ResponseRecorder: httptest.NewRecorder(), rec: rec}
		e.srv.Handler().ServeHTTP(w, req)
		if w.Code != http.StatusCreated {
			t.Fatalf("upload %s: status %d (%q), want 201", r.path(), w.Code, w.Body)
		}
		ops := rec.Ops()[before:]
		entry := &indexEntry{Device: d.id, Event: r.event, Kind: r.kind, Media: []indexMedia{{Type: "image/jpeg"}}}
		files := []string{mediaPath(e.dir, entry, 0), envelopePath(e.dir, entry)}
		durable := -1
		for _, f := range files {
			at, err := atomicfiletest.CheckDurable(ops, f)
			if err != nil {
				t.Fatal(err)
			}
			durable = max(durable, at)
		}
		write, sync, ack := -1, -1, -1
		for i, o := range ops {
			switch {
			case o.Kind == "write" && o.Path == idx:
				write, sync = i, -1
			case o.Kind == "sync" && o.Path == idx && write >= 0:
				sync = i
			case o.Kind == "ack":
				ack = i
			}
		}
		switch {
		case write < 0:
			t.Fatalf("no index append:\n%s", atomicfiletest.Format(ops))
		case write < durable:
			t.Fatalf("index appended (%d) before the record's files were durable (%d):\n%s", write, durable, atomicfiletest.Format(ops))
		case sync < 0:
			t.Fatalf("index not fsynced after its append:\n%s", atomicfiletest.Format(ops))
		case ack < sync:
			t.Fatalf("acknowledged (%d) before the index fsync (%d):\n%s", ack, sync, atomicfiletest.Format(ops))
		case ops[ack].Path != "201":
			t.Fatalf("acknowledgement %s, want 201", ops[ack])
		}
	}
}
