package receiver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestEnrollAndPair(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new") // created on first enroll
	d := newDevice(t)
	id, err := Enroll(dir, d.pem)
	if err != nil || id != d.id {
		t.Fatalf("Enroll: %q, %v; want %s", id, err, d.id)
	}
	if again, err := Enroll(dir, d.pem); err != nil || again != id {
		t.Errorf("re-enrolling the same key: %q, %v", again, err)
	}
	if err := Pair(dir, id, "alice"); err != nil {
		t.Fatal(err)
	}
	// Re-enrolling keeps the pairing.
	if _, err := Enroll(dir, d.pem); err != nil {
		t.Fatal(err)
	}
	reg, err := loadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	if reg.owner(id) != "alice" {
		t.Errorf("owner %q after re-enroll, want alice", reg.owner(id))
	}
	if st, err := os.Stat(filepath.Join(dir, registryFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("registry file: %v, %v", st, err)
	}

	stranger := newDevice(t)
	if err := Pair(dir, stranger.id, "alice"); !errors.Is(err, ErrNotEnrolled) {
		t.Errorf("pairing an unenrolled device: %v, want ErrNotEnrolled", err)
	}
	if err := Unpair(dir, stranger.id); !errors.Is(err, ErrNotEnrolled) {
		t.Errorf("unpairing an unenrolled device: %v, want ErrNotEnrolled", err)
	}
	for _, bad := range []string{"", "Alice", "al ice", "../x", "a/b", string(make([]byte, 65))} {
		if err := Pair(dir, id, bad); !errors.Is(err, ErrOwner) {
			t.Errorf("owner %q accepted: %v", bad, err)
		}
	}
	if err := Unpair(dir, id); err != nil {
		t.Fatal(err)
	}
	if reg, _ := loadRegistry(dir); reg.owner(id) != "" {
		t.Errorf("owner %q after unpair", reg.owner(id))
	}
}

func TestEnrollRejectsBadKeys(t *testing.T) {
	dir := t.TempDir()
	for name, in := range map[string][]byte{
		"empty":       nil,
		"not pem":     []byte("hello"),
		"private key": []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
		"bad der":     []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
	} {
		if id, err := Enroll(dir, in); err == nil {
			t.Errorf("%s: enrolled as %s", name, id)
		}
	}
}

func TestCorruptRegistryIsAnError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, registryFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Enroll(dir, newDevice(t).pem); err == nil {
		t.Error("Enroll overwrote a corrupt registry")
	}
	if _, err := Open(Options{Dir: dir}); err == nil {
		t.Error("Open accepted a corrupt registry")
	}
}

// TestRegistryConcurrentUpdates runs many read-modify-write updates at once,
// as the enroll command and a pairing change would while the server runs:
// none may be lost.
func TestRegistryConcurrentUpdates(t *testing.T) {
	dir := t.TempDir()
	const n = 24
	devs := make([]*testDevice, n)
	for i := range devs {
		devs[i] = newDevice(t)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := Enroll(dir, d.pem); err != nil {
				errs <- err
				return
			}
			if err := Pair(dir, d.id, fmt.Sprintf("owner-%d", i)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	reg, err := loadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Devices) != n {
		t.Fatalf("%d devices enrolled, want %d: concurrent updates were lost", len(reg.Devices), n)
	}
	for i, d := range devs {
		if got := reg.owner(d.id); got != fmt.Sprintf("owner-%d", i) {
			t.Errorf("device %d paired to %q", i, got)
		}
	}
}

func TestValidOwnerAndLoopback(t *testing.T) {
	for s, want := range map[string]bool{"alice": true, "a_b-9": true, "": false, "Bob": false, "x.y": false} {
		if ValidOwner(s) != want {
			t.Errorf("ValidOwner(%q) = %v", s, !want)
		}
	}
	for addr, want := range map[string]bool{
		"127.0.0.1:8417": true, "[::1]:80": true, "localhost:1": true, "127.1.2.3:9": true,
		":8417": false, "0.0.0.0:80": false, "192.168.1.2:80": false, "[::]:80": false, "example.com:80": false,
	} {
		got, err := IsLoopback(addr)
		if err != nil || got != want {
			t.Errorf("IsLoopback(%q) = %v, %v; want %v", addr, got, err, want)
		}
	}
	if _, err := IsLoopback("no-port"); err == nil {
		t.Error("IsLoopback accepted an address without a port")
	}
}
