// Package atomicfiletest records the order of the file system calls of an
// atomic write, so a test can show that data is fsynced before it is renamed
// into place and the directory fsynced before the write is acknowledged: a
// missing fsync is invisible to a killed process (the page cache survives it)
// and to tmpfs.
package atomicfiletest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
)

// Op is one recorded call.
type Op struct {
	Kind string // "create", "chmod", "write", "sync", "close", "rename", "remove", "open", or a caller's own (Recorder.Record)
	Path string // the file or directory; for a rename, the old path
	To   string // for a rename, the new path
}

func (o Op) String() string {
	if o.To != "" {
		return o.Kind + " " + o.Path + " -> " + o.To
	}
	return o.Kind + " " + o.Path
}

// A Recorder is an atomicfile.FS over the operating system's file system
// that records every call, in order. It is safe for concurrent use.
type Recorder struct {
	mu  sync.Mutex
	ops []Op
}

var _ atomicfile.FS = (*Recorder)(nil)

// Record adds a caller's own event (an index fsync, an acknowledgement) to
// the sequence.
func (r *Recorder) Record(kind, path string) { r.add(Op{Kind: kind, Path: path}) }

// Ops returns the calls recorded so far.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

func (r *Recorder) add(o Op) {
	r.mu.Lock()
	r.ops = append(r.ops, o)
	r.mu.Unlock()
}

// CreateTemp creates a temporary file with os.CreateTemp.
func (r *Recorder) CreateTemp(dir, pattern string) (atomicfile.File, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	r.add(Op{Kind: "create", Path: f.Name()})
	return &file{f: f, r: r}, nil
}

// Rename renames with os.Rename.
func (r *Recorder) Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	r.add(Op{Kind: "rename", Path: oldpath, To: newpath})
	return nil
}

// Remove removes with os.Remove.
func (r *Recorder) Remove(name string) error {
	r.add(Op{Kind: "remove", Path: name})
	return os.Remove(name)
}

// Open opens with os.Open.
func (r *Recorder) Open(name string) (atomicfile.File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	r.add(Op{Kind: "open", Path: name})
	return &file{f: f, r: r}, nil
}

// file records the calls made on an open file; only successful calls are
// recorded.
type file struct {
	f *os.File
	r *Recorder
}

func (f *file) Name() string { return f.f.Name() }

func (f *file) Chmod(mode os.FileMode) error {
	if err := f.f.Chmod(mode); err != nil {
		return err
	}
	f.r.add(Op{Kind: "chmod", Path: f.f.Name()})
	return nil
}

func (f *file) Write(b []byte) (int, error) {
	n, err := f.f.Write(b)
	if err == nil {
		f.r.add(Op{Kind: "write", Path: f.f.Name()})
	}
	return n, err
}

func (f *file) Sync() error {
	if err := f.f.Sync(); err != nil {
		return err
	}
	f.r.add(Op{Kind: "sync", Path: f.f.Name()})
	return nil
}

func (f *file) Close() error {
	f.r.add(Op{Kind: "close", Path: f.f.Name()})
	return f.f.Close()
}

// CheckDurable checks that ops hold an atomic write of path in the order
// that makes it durable: the temporary file renamed to path was written,
// then fsynced, then renamed, then path's directory was fsynced. It returns
// the position in ops of that directory fsync, so a caller can check what
// must come after it.
func CheckDurable(ops []Op, path string) (int, error) {
	ren := -1
	for i, o := range ops {
		if o.Kind == "rename" && o.To == path {
			ren = i
		}
	}
	if ren < 0 {
		return 0, fmt.Errorf("atomicfiletest: %s was never renamed into place:\n%s", path, Format(ops))
	}
	tmp := ops[ren].Path
	lastWrite, syncAfter := -1, -1
	for i, o := range ops[:ren] {
		switch {
		case o.Kind == "write" && o.Path == tmp:
			lastWrite, syncAfter = i, -1
		case o.Kind == "sync" && o.Path == tmp && lastWrite >= 0:
			syncAfter = i
		}
	}
	if lastWrite < 0 {
		return 0, fmt.Errorf("atomicfiletest: %s was renamed to %s without being written:\n%s", tmp, path, Format(ops))
	}
	if syncAfter < 0 {
		return 0, fmt.Errorf("atomicfiletest: %s was renamed to %s without an fsync after its last write:\n%s", tmp, path, Format(ops))
	}
	dir := filepath.Dir(path)
	for i := ren + 1; i < len(ops); i++ {
		if ops[i].Kind == "sync" && ops[i].Path == dir {
			return i, nil
		}
	}
	return 0, fmt.Errorf("atomicfiletest: directory %s was not fsynced after the rename to %s:\n%s", dir, path, Format(ops))
}

// Format lists ops one a line, for a test's failure message.
func Format(ops []Op) string {
	var b strings.Builder
	for i, o := range ops {
		fmt.Fprintf(&b, "\t%d: %s\n", i, o)
	}
	return b.String()
}
