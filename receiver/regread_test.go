package receiver

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
)

// The registry is read per request, cheaply: a parsed copy is reused only
// while the snapshot on disk is the same file with the same generation, and
// the journal's new lines are applied to it.

func TestRegistryParsedOnceUntilItChanges(t *testing.T) {
	e, a, _, ra, _ := twoOwners(t)
	base := e.srv.RegistryReads()
	for range 5 {
		e.getAs("alice", "/")
		e.getAs("alice", mediaURL(a, ra))
		e.mustUpload(ra, http.StatusOK)
	}
	if n := e.srv.RegistryReads(); n != base {
		t.Fatalf("15 requests with no registry change parsed it %d more times, want 0", n-base)
	}
	setPairings(t, e.dir, a.id, pairing{Owner: "carol"})
	if evs, _ := e.srv.OwnerEvents("carol"); len(evs) != 1 {
		t.Fatalf("the request right after Pair does not see it: carol has %d events", len(evs))
	}
	// The change is one journal line: read and applied, the snapshot is not
	// parsed again.
	if n := e.srv.RegistryReads(); n != base {
		t.Fatalf("after one change: %d parses, want %d", n, base)
	}
	if err := compactRegistry(e.dir); err != nil {
		t.Fatal(err)
	}
	if evs, _ := e.srv.OwnerEvents("carol"); len(evs) != 1 {
		t.Fatalf("after a compaction: carol has %d events", len(evs))
	}
	if n := e.srv.RegistryReads(); n != base+1 {
		t.Fatalf("after a compaction: %d parses, want %d", n, base+1)
	}
}

// TestEveryWriteSeenByTheNextRequest flips the owner of a stored record back
// and forth with names of the same length, many times in a row (a
// correction of the registry, not a transfer: see setPairings), across
// compactions: every request must see the write before it.
func TestEveryWriteSeenByTheNextRequest(t *testing.T) {
	e, a, _, ra, _ := twoOwners(t)
	for i := range 40 {
		owner := []string{"carol", "dave1"}[i%2]
		setPairings(t, e.dir, a.id, pairing{Owner: owner})
		if got, err := e.srv.PairedOwner(a.id); err != nil || got != owner {
			t.Fatalf("write %d: PairedOwner %q, %v; want %q", i, got, err, owner)
		}
		if code, _, _ := e.getAs(owner, mediaURL(a, ra)); code != http.StatusOK {
			t.Fatalf("write %d: %s cannot see the thumbnail: %d", i, owner, code)
		}
		other := []string{"carol", "dave1"}[(i+1)%2]
		if code, _, _ := e.getAs(other, mediaURL(a, ra)); code != http.StatusNotFound {
			t.Fatalf("write %d: %s, no longer paired, still gets the thumbnail: %d", i, other, code)
		}
	}
	if err := Revoke(e.dir, a.id); err != nil {
		t.Fatal(err)
	}
	if code, body := e.upload(a.record(t, "after-revoke", provenance.KindStart, 9)); code != http.StatusForbidden {
		t.Fatalf("upload right after Revoke: %d %s", code, body)
	}
}

// TestRegistryWriteByAnotherProcess pairs a device from another process (the
// test binary run again, as `keyframe-receiver pair` would) and checks the
// very next request follows it.
func TestRegistryWriteByAnotherProcess(t *testing.T) {
	if os.Getenv("KEYFRAME_TEST_PAIR_DIR") != "" {
		return // the helper branch runs in TestHelperPair
	}
	e, a, _, ra, _ := twoOwners(t)
	if code, _, _ := e.getAs("alice", mediaURL(a, ra)); code != http.StatusOK {
		t.Fatal("alice cannot see her thumbnail")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPair$")
	cmd.Env = append(os.Environ(), "KEYFRAME_TEST_PAIR_DIR="+e.dir, "KEYFRAME_TEST_PAIR_DEVICE="+a.id, "KEYFRAME_TEST_PAIR_OWNER=erin")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	if got, err := e.srv.PairedOwner(a.id); err != nil || got != "erin" {
		t.Fatalf("after another process paired the device to erin: paired to %q, %v", got, err)
	}
	// A transfer: the record from before stays alice's, the next is erin's.
	if code, _, _ := e.getAs("alice", mediaURL(a, ra)); code != http.StatusOK {
		t.Errorf("alice lost her thumbnail when another process paired the device to erin: %d", code)
	}
	if code, _, _ := e.getAs("erin", mediaURL(a, ra)); code != http.StatusNotFound {
		t.Errorf("erin got the thumbnail of before her pairing: %d", code)
	}
	next := a.record(t, "erin-ev", provenance.KindStart, 2)
	e.mustUpload(next, http.StatusCreated)
	if code, _, _ := e.getAs("erin", mediaURL(a, next)); code != http.StatusOK {
		t.Errorf("erin does not get the thumbnail recorded after her pairing: %d", code)
	}
	if code, _, _ := e.getAs("alice", mediaURL(a, next)); code != http.StatusNotFound {
		t.Errorf("alice gets the thumbnail recorded after the transfer: %d", code)
	}
}

// TestHelperPair is the other process of TestRegistryWriteByAnotherProcess.
func TestHelperPair(t *testing.T) {
	dir := os.Getenv("KEYFRAME_TEST_PAIR_DIR")
	if dir == "" {
		t.Skip("helper process for TestRegistryWriteByAnotherProcess")
	}
	if err := Pair(dir, os.Getenv("KEYFRAME_TEST_PAIR_DEVICE"), os.Getenv("KEYFRAME_TEST_PAIR_OWNER")); err != nil {
		t.Fatal(err)
	}
}

// A registry written by hand (or by an older version) has no generation in
// its first bytes: every request parses it, and is never stale. An edit
// that keeps the generation but replaces the file is seen too.
func TestRegistryWithoutGenerationIsReadEveryTime(t *testing.T) {
	e, a, _, ra, _ := twoOwners(t)
	if err := compactRegistry(e.dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.dir, registryFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte(generationPrefix)) {
		t.Fatalf("registry does not start with its generation:\n%.80s", b)
	}
	// Same content and generation, different layout: one line.
	var flat bytes.Buffer
	for _, line := range strings.Split(string(b), "\n") {
		flat.WriteString(strings.TrimSpace(line))
	}
	if err := os.WriteFile(path+".tmp", flat.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	base := e.srv.RegistryReads()
	for range 3 {
		if code, _, _ := e.getAs("alice", mediaURL(a, ra)); code != http.StatusOK {
			t.Fatalf("alice's thumbnail with a hand-written registry: %d", code)
		}
	}
	if n := e.srv.RegistryReads() - base; n != 3 {
		t.Errorf("3 requests parsed a registry without a readable generation %d times, want 3", n)
	}
	// A hand edit that keeps the generation: alice → bob.
	edited := bytes.Replace(b, []byte(`"owner": "alice"`), []byte(`"owner": "bob"`), 1)
	if bytes.Equal(edited, b) {
		t.Fatal("test setup: no alice pairing to edit")
	}
	if err := os.WriteFile(path+".tmp", edited, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.srv.PairedOwner(a.id); got != "bob" {
		t.Errorf("a hand edit keeping the generation was not seen: owner %q, want bob", got)
	}
	// The next write through the package functions carries on.
	if err := Pair(e.dir, a.id, "alice"); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.srv.PairedOwner(a.id); got != "alice" {
		t.Errorf("after Pair: owner %q, want alice", got)
	}
}

func TestHeadGeneration(t *testing.T) {
	for in, want := range map[string]int64{
		"{\n  \"generation\": 7,\n  \"version\": 1":  7,
		"{\n  \"generation\": 0,":                    0,
		"{\n  \"generation\": 18446744073709551615,": -2, // max uint64: ok, checked below
		"{\n  \"generation\": 7":                     -1, // cut before the comma
		"{\n  \"generation\": ,":                     -1,
		"{\n  \"generation\": 99999999999999999999,": -1, // overflows
		"{\"generation\": 7,":                        -1,
		"{\n  \"version\": 1,":                       -1,
		"":                                           -1,
	} {
		got, ok := headGeneration([]byte(in))
		switch {
		case want == -1 && ok:
			t.Errorf("headGeneration(%q) = %d, want not found", in, got)
		case want == -2 && (!ok || got != 18446744073709551615):
			t.Errorf("headGeneration(%q) = %d, %v", in, got, ok)
		case want >= 0 && (!ok || got != uint64(want)):
			t.Errorf("headGeneration(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
}

func TestEnrollAll(t *testing.T) {
	dir := t.TempDir()
	devs := make([]*testDevice, 30)
	es := make([]Enrollment, len(devs))
	for i := range devs {
		devs[i] = newDevice(t)
		es[i] = Enrollment{PublicKey: devs[i].key.Public(), Owner: fmt.Sprintf("owner-%d", i%4)}
	}
	es[29].Owner = "" // enrolled, not paired
	ids, err := EnrollAll(dir, es)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := loadRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Generation != 1 {
		t.Errorf("one EnrollAll wrote generation %d, want 1 (one write)", reg.Generation)
	}
	for i, d := range devs {
		want := fmt.Sprintf("owner-%d", i%4)
		if i == 29 {
			want = ""
		}
		if ids[i] != d.id || reg.owner(d.id) != want {
			t.Errorf("device %d: id %s (want %s), owner %q (want %q)", i, ids[i], d.id, reg.owner(d.id), want)
		}
	}

	// One bad entry and nothing is written.
	extra := newDevice(t)
	for name, bad := range map[string][]Enrollment{
		"bad owner":   {{PublicKey: extra.key.Public(), Owner: "Extra!"}},
		"bad key":     {{PublicKey: extra.key.Public()}, {PublicKey: "not a key"}},
		"revoked key": {{PublicKey: extra.key.Public()}, {PublicKey: devs[0].key.Public()}},
	} {
		if name == "revoked key" {
			if err := Revoke(dir, devs[0].id); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := EnrollAll(dir, bad); err == nil {
			t.Errorf("%s: EnrollAll succeeded", name)
		}
		if reg, _ := loadRegistry(dir); reg.Devices[extra.id] != nil {
			t.Errorf("%s: a failed EnrollAll enrolled the good key", name)
		}
	}
	if _, err := EnrollAll(dir, []Enrollment{{PublicKey: crypto.PublicKey(nil)}}); err == nil {
		t.Error("EnrollAll accepted a nil key")
	}
	if _, err := EnrollAll(dir, []Enrollment{{PublicKey: devs[0].key.Public()}}); !errors.Is(err, ErrRevoked) {
		t.Errorf("re-enrolling a revoked key: %v, want ErrRevoked", err)
	}
}

// TestGenerationTellsVersionsApart rewrites the registry in place with the
// same size and the same modification time (what two writes within one
// clock tick into a reused inode look like): only the generation shows the
// change, and the reader must see it.
func TestGenerationTellsVersionsApart(t *testing.T) {
	dir := t.TempDir()
	d := newDevice(t)
	if _, err := EnrollAll(dir, []Enrollment{{PublicKey: d.key.Public(), Owner: "alice"}}); err != nil {
		t.Fatal(err)
	}
	rr := newRegistryReader(dir)
	reg, err := rr.read()
	if err != nil || reg.owner(d.id) != "alice" {
		t.Fatalf("first read: %v, %v", reg, err)
	}
	path := filepath.Join(dir, registryFile)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	next := bytes.Replace(b, []byte(`"owner": "alice"`), []byte(`"owner": "bobby"`), 1)
	next = bytes.Replace(next, []byte(generationPrefix+"1,"), []byte(generationPrefix+"2,"), 1)
	if len(next) != len(b) || bytes.Equal(next, b) {
		t.Fatal("test setup: the edit must keep the size")
	}
	if err := os.WriteFile(path, next, 0o600); err != nil { // in place: same inode
		t.Fatal(err)
	}
	if err := os.Chtimes(path, before.ModTime(), before.ModTime()); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if !sameFile(before, after) {
		t.Skip("this filesystem changed the file's identity anyway; nothing to tell apart")
	}
	if reg, err := rr.read(); err != nil || reg.owner(d.id) != "bobby" {
		t.Fatalf("after an in-place rewrite with a new generation: owner %q, %v; want bobby", reg.owner(d.id), err)
	}
}

// BenchmarkRegistryRead measures what a request pays to read a registry of
// 10,000 devices: "unchanged" is every request between two writes (open,
// stat, 64 bytes), "parse" what every request paid before (and pays after a
// write): reading and parsing the whole file.
func BenchmarkRegistryRead(b *testing.B) {
	dir := b.TempDir()
	es := make([]Enrollment, 10000)
	for i := range es {
		es[i] = Enrollment{PublicKey: newDevice(b).key.Public(), Owner: fmt.Sprintf("owner-%d", i%1000)}
	}
	if _, err := EnrollAll(dir, es); err != nil {
		b.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, registryFile)); err == nil {
		b.Logf("registry of %d devices: %d bytes", len(es), st.Size())
	}
	b.Run("unchanged", func(b *testing.B) {
		rr := newRegistryReader(dir)
		if _, err := rr.read(); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := rr.read(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			if _, err := loadRegistry(dir); err != nil {
				b.Fatal(err)
			}
		}
	})
}
