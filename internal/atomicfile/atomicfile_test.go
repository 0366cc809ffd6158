package atomicfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/atomicfile/atomicfiletest"
)

func TestWriteFileReplacesAndSetsMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := atomicfile.WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.WriteFile(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "two" {
		t.Fatalf("content = %q, %v; want two", got, err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("leftover temp files: %v", ents)
	}
}

func TestWriteFileMissingDir(t *testing.T) {
	if err := atomicfile.WriteFile(filepath.Join(t.TempDir(), "nope", "f"), nil, 0o600); err == nil {
		t.Fatal("want error for missing directory")
	}
}

// TestWriteFileOrder pins the order that makes a write durable: write, fsync
// the file, rename, fsync the directory, and only then return.
func TestWriteFileOrder(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "chain")
	rec := &atomicfiletest.Recorder{}
	if err := (atomicfile.Writer{FS: rec}).WriteFile(p, []byte("state"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec.Record("returned", "")
	ops := rec.Ops()
	if _, err := atomicfiletest.CheckDurable(ops, p); err != nil {
		t.Fatal(err)
	}
	tmp := ops[0].Path
	want := []atomicfiletest.Op{
		{Kind: "create", Path: tmp},
		{Kind: "chmod", Path: tmp},
		{Kind: "write", Path: tmp},
		{Kind: "sync", Path: tmp},
		{Kind: "close", Path: tmp},
		{Kind: "rename", Path: tmp, To: p},
		{Kind: "open", Path: dir},
		{Kind: "sync", Path: dir},
		{Kind: "close", Path: dir},
		{Kind: "returned"},
	}
	if !slices.Equal(ops, want) {
		t.Fatalf("calls:\n%swant:\n%s", atomicfiletest.Format(ops), atomicfiletest.Format(want))
	}
}

// TestSyncDirOrder: SyncDir fsyncs the directory before it returns.
func TestSyncDirOrder(t *testing.T) {
	dir := t.TempDir()
	rec := &atomicfiletest.Recorder{}
	if err := (atomicfile.Writer{FS: rec}).SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	ops := rec.Ops()
	want := []atomicfiletest.Op{{Kind: "open", Path: dir}, {Kind: "sync", Path: dir}, {Kind: "close", Path: dir}}
	if !slices.Equal(ops, want) {
		t.Fatalf("calls:\n%swant:\n%s", atomicfiletest.Format(ops), atomicfiletest.Format(want))
	}
}

// failSync is a file system whose files fail to fsync.
type failSync struct{ *atomicfiletest.Recorder }

func (f failSync) CreateTemp(dir, pattern string) (atomicfile.File, error) {
	file, err := f.Recorder.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return syncFails{file}, nil
}

type syncFails struct{ atomicfile.File }

func (syncFails) Sync() error { return errors.New("injected fsync failure") }

// TestWriteFileSyncFails: a file that cannot be fsynced is never renamed into
// place, and the write fails.
func TestWriteFileSyncFails(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "chain")
	rec := &atomicfiletest.Recorder{}
	err := (atomicfile.Writer{FS: failSync{rec}}).WriteFile(p, []byte("state"), 0o600)
	if err == nil || !strings.Contains(err.Error(), "injected fsync failure") {
		t.Fatalf("err = %v, want the fsync failure", err)
	}
	for _, o := range rec.Ops() {
		if o.Kind == "rename" {
			t.Fatalf("renamed after a failed fsync:\n%s", atomicfiletest.Format(rec.Ops()))
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}
