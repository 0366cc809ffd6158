// Package atomicfile writes files so that a crash or power cut leaves either the
// old content or the new one, never a torn file: write a temporary file in the
// same directory, fsync it, rename it over the target, then fsync the directory
// so the rename itself is durable.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// FS is the file system calls an atomic write makes, in the order it makes
// them. The operating system's is the default; a test passes one that
// records the order (atomicfiletest.Recorder), since neither a killed
// process nor tmpfs can show a missing fsync.
type FS interface {
	CreateTemp(dir, pattern string) (File, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
	Open(name string) (File, error)
}

// File is the part of *os.File an atomic write uses.
type File interface {
	Name() string
	Chmod(mode os.FileMode) error
	Write(b []byte) (int, error)
	Sync() error
	Close() error
}

// A Writer writes files atomically through FS. The zero Writer uses the
// operating system.
type Writer struct {
	FS FS // nil: the operating system
}

// osFS is the operating system's file system.
type osFS struct{}

func (osFS) CreateTemp(dir, pattern string) (File, error) { return os.CreateTemp(dir, pattern) }
func (osFS) Rename(oldpath, newpath string) error         { return os.Rename(oldpath, newpath) }
func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) Open(name string) (File, error)               { return os.Open(name) }

func (w Writer) fs() FS {
	if w.FS == nil {
		return osFS{}
	}
	return w.FS
}

// WriteFile atomically replaces path with data, created with mode perm.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return Writer{}.WriteFile(path, data, perm)
}

// SyncDir fsyncs a directory so that entries created, renamed or removed in it
// survive a power cut.
func SyncDir(dir string) error { return Writer{}.SyncDir(dir) }

// WriteFile atomically replaces path with data, created with mode perm: it
// returns nil only once the data and the rename are durable.
func (w Writer) WriteFile(path string, data []byte, perm os.FileMode) error {
	fsys := w.fs()
	dir := filepath.Dir(path)
	f, err := fsys.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("atomicfile: create temp for %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = fsys.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("atomicfile: chmod %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("atomicfile: close %s: %w", tmp, err)
	}
	if err := fsys.Rename(tmp, path); err != nil {
		return fmt.Errorf("atomicfile: rename %s: %w", path, err)
	}
	ok = true
	return w.SyncDir(dir)
}

// SyncDir fsyncs a directory so that entries created, renamed or removed in it
// survive a power cut.
func (w Writer) SyncDir(dir string) error {
	d, err := w.fs().Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: open dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicfile: fsync dir %s: %w", dir, err)
	}
	return nil
}
