package uploader

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/atomicfile/atomicfiletest"
)

// TestPutDurableBeforeReturn pins the order of a Put's file system calls:
// the record written, fsynced, renamed into the spool, the spool directory
// fsynced, and only then Put returns. A missing fsync is invisible to a
// killed process and to the board's tmpfs, so no other test can see it.
func TestPutDurableBeforeReturn(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, SpoolConfig{Dir: dir})
	rec := &atomicfiletest.Recorder{}
	sp.files = atomicfile.Writer{FS: rec}
	for _, seq := range []uint64{1, 2} {
		r := testRecord(seq, 100)
		before := len(rec.Ops())
		mustPut(t, sp, r)
		rec.Record("returned", "")
		ops := rec.Ops()[before:]
		p := filepath.Join(dir, fileName(Entry{Seq: r.Seq, Event: r.Event, Kind: r.Kind}))
		at, err := atomicfiletest.CheckDurable(ops, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(ops) != at+3 || ops[at+1].Kind != "close" || ops[at+2].Kind != "returned" {
			t.Fatalf("Put did more after the directory fsync (%d):\n%s", at, atomicfiletest.Format(ops))
		}
	}
	if got := seqs(sp.Pending()); len(got) != 2 {
		t.Fatalf("pending %v, want 1 and 2", got)
	}
}

// dirSyncFails is a file system whose directories fail to fsync.
type dirSyncFails struct{ *atomicfiletest.Recorder }

func (f dirSyncFails) Open(name string) (atomicfile.File, error) {
	d, err := f.Recorder.Open(name)
	if err != nil {
		return nil, err
	}
	return syncFails{d}, nil
}

type syncFails struct{ atomicfile.File }

func (syncFails) Sync() error { return errors.New("injected fsync failure") }

// TestPutFailsWithoutDirSync: a Put whose rename cannot be made durable
// reports failure, so the record is not taken as stored.
func TestPutFailsWithoutDirSync(t *testing.T) {
	sp := openSpool(t, SpoolConfig{Dir: t.TempDir()})
	sp.files = atomicfile.Writer{FS: dirSyncFails{&atomicfiletest.Recorder{}}}
	if err := sp.Put(testRecord(1, 100)); err == nil {
		t.Fatal("Put returned nil although the spool directory could not be fsynced")
	}
}
