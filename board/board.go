// Package board is keyframe's view of the machine it runs on: the boot ID, the
// clock's state, the device key, and the persisted signing chain. Every path
// to /proc, /sys and /dev is taken under a root passed to NewFS, so tests point
// it at testdata and nothing here keeps global state.
package board

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ErrAbsent reports that a piece of hardware or kernel interface is not present
// on this machine.
var ErrAbsent = errors.New("board: not present on this machine")

// FS reads the machine's kernel interfaces under a root ("/" on a device).
type FS struct {
	root string
}

// NewFS returns an FS rooted at root, which must be an existing directory.
func NewFS(root string) (*FS, error) {
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("board: root %q: %w", root, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("board: root %q is not a directory", root)
	}
	return &FS{root: root}, nil
}

// Path returns p (an absolute machine path such as /proc/uptime) under the root.
func (fs *FS) Path(p string) string {
	return filepath.Join(fs.root, filepath.FromSlash(p))
}

func (fs *FS) readTrimmed(p string) (string, error) {
	b, err := os.ReadFile(fs.Path(p))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("board: %s: %w", p, ErrAbsent)
	}
	if err != nil {
		return "", fmt.Errorf("board: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// BootID returns the kernel's random boot ID, which changes on every boot.
func (fs *FS) BootID() (string, error) {
	id, err := fs.readTrimmed("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	if id == "" {
		return "", fmt.Errorf("board: empty boot ID in %s", fs.Path("/proc/sys/kernel/random/boot_id"))
	}
	return id, nil
}

// Uptime returns the time since boot, from /proc/uptime.
func (fs *FS) Uptime() (time.Duration, error) {
	s, err := fs.readTrimmed("/proc/uptime")
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(s, " ")
	secs, err := strconv.ParseFloat(first, 64)
	if err != nil || secs < 0 {
		return 0, fmt.Errorf("board: parse %s: %q", fs.Path("/proc/uptime"), s)
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// Model returns the board model from the device tree, or ErrAbsent on machines
// without one (x86 PCs, QEMU without a device tree).
func (fs *FS) Model() (string, error) {
	m, err := fs.readTrimmed("/proc/device-tree/model")
	if err != nil {
		return "", err
	}
	return strings.TrimRight(m, "\x00"), nil
}
