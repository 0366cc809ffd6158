package board

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFSFixtures(t *testing.T) {
	fs, err := NewFS("testdata/fixtures")
	if err != nil {
		t.Fatal(err)
	}
	id, err := fs.BootID()
	if err != nil || id != "6a0f0d4e-53f2-4b43-9a66-0e5b1d1c2f10" {
		t.Fatalf("BootID = %q, %v", id, err)
	}
	up, err := fs.Uptime()
	if err != nil || up != 12345670*time.Millisecond {
		t.Fatalf("Uptime = %v, %v", up, err)
	}
	m, err := fs.Model()
	if err != nil || m != "Raspberry Pi Zero W Rev 1.1" {
		t.Fatalf("Model = %q, %v", m, err)
	}
}

func TestFSAbsent(t *testing.T) {
	fs, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.BootID(); !errors.Is(err, ErrAbsent) {
		t.Fatalf("BootID on empty root: %v, want ErrAbsent", err)
	}
	if _, err := fs.Model(); !errors.Is(err, ErrAbsent) {
		t.Fatalf("Model on empty root: %v, want ErrAbsent", err)
	}
	if _, err := NewFS(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("NewFS on a missing root: want error")
	}
}

func TestFSRealMachine(t *testing.T) {
	if _, err := os.Stat("/proc/sys/kernel/random/boot_id"); err != nil {
		t.Skip("no /proc/sys/kernel/random/boot_id on this machine")
	}
	fs, err := NewFS("/")
	if err != nil {
		t.Fatal(err)
	}
	id, err := fs.BootID()
	if err != nil || len(id) != 36 {
		t.Fatalf("BootID = %q, %v", id, err)
	}
}

func TestFileKeyCreateReuse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "device.key")
	k1, created, err := LoadOrCreateFileKey(p, rand.Reader)
	if err != nil || !created {
		t.Fatalf("create: created=%v err=%v", created, err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", st.Mode().Perm())
	}
	k2, created, err := LoadOrCreateFileKey(p, rand.Reader)
	if err != nil || created {
		t.Fatalf("reload: created=%v err=%v", created, err)
	}
	p1, _ := PublicKeyPEM(k1.Public())
	p2, _ := PublicKeyPEM(k2.Public())
	if !bytes.Equal(p1, p2) {
		t.Fatal("reloaded key differs from the created one")
	}
	if k2.Backend() != BackendFile {
		t.Fatalf("backend %q", k2.Backend())
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Fatalf("leftover files beside the key: %v", ents)
	}
}

func TestFileKeyRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.key")
	if _, _, err := LoadOrCreateFileKey(open, rand.Reader); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateFileKey(open, rand.Reader); err == nil {
		t.Fatal("world-readable key accepted")
	}
	torn := filepath.Join(dir, "torn.key")
	if err := os.WriteFile(torn, []byte("-----BEGIN PRIVATE KEY-----\nMIGH"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateFileKey(torn, rand.Reader); err == nil {
		t.Fatal("torn key accepted")
	}
}

func TestChainPersistence(t *testing.T) {
	p := filepath.Join(t.TempDir(), "chain")
	c, err := LoadChain(p)
	if err != nil || c.Next != 1 || len(c.Prev) != 0 {
		t.Fatalf("new chain = %+v, %v", c, err)
	}
	want := Chain{Next: 42, Prev: bytes.Repeat([]byte{7}, 32)}
	if err := SaveChain(p, want); err != nil {
		t.Fatal(err)
	}
	got, err := LoadChain(p)
	if err != nil || got.Next != 42 || !bytes.Equal(got.Prev, want.Prev) {
		t.Fatalf("loaded %+v, %v", got, err)
	}
	if err := os.WriteFile(p, []byte(`{"next":4`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadChain(p); err == nil {
		t.Fatal("corrupt chain accepted (would restart at 1 and reuse sequence numbers)")
	}
}
