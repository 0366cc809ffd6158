package recorder_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"github.com/keyframe-cam/keyframe/board"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/recorder"
	"github.com/keyframe-cam/keyframe/uploader"
)

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// payload is a start record of event ev by key k; Seq and Prev are the
// recorder's to fill.
func payload(t *testing.T, k crypto.Signer, ev string) (*provenance.Payload, [][]byte) {
	t.Helper()
	id, err := provenance.DeviceID(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	thumb := []byte("thumbnail of " + ev)
	return &provenance.Payload{
		Device:   id,
		Event:    ev,
		Kind:     provenance.KindStart,
		Boot:     "boot-1",
		Time:     provenance.Time{UnixMs: 1764000000000, Clock: provenance.ClockSynced},
		Media:    []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", thumb)},
		KeyStore: "file",
	}, [][]byte{thumb}
}

// memSpool keeps what it is given; Put fails while fail is set.
type memSpool struct {
	recs []uploader.Record
	fail error
	seen []uploader.Record // every record offered, spooled or not
}

func (s *memSpool) Put(r uploader.Record) error {
	s.seen = append(s.seen, r)
	if s.fail != nil {
		return s.fail
	}
	s.recs = append(s.recs, r)
	return nil
}

// verify checks that rec is a record of seq chained to prev, and returns
// the hash of its envelope.
func verify(t *testing.T, rec uploader.Record, seq uint64, prev []byte) []byte {
	t.Helper()
	b, err := provenance.UnmarshalBundle(rec.Data)
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.Verify(b.Envelope, b.Media, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Seq != seq || v.Payload.Seq != seq || !bytes.Equal(v.Payload.Prev, prev) || rec.Event != v.Payload.Event || rec.Kind != v.Payload.Kind {
		t.Fatalf("record %d (payload %d, prev %x, %s/%s), want %d after %x", rec.Seq, v.Payload.Seq, v.Payload.Prev, rec.Event, rec.Kind, seq, prev)
	}
	h := provenance.HashEnvelope(b.Envelope)
	return h[:]
}

// Records are numbered from the chain state on disk, each chained to the
// one before, and the chain state is saved past each.
func TestRecordChains(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chain")
	k := newKey(t)
	sp := &memSpool{}
	r, err := recorder.Open(recorder.Config{Chain: recorder.ChainFile(path), Spool: sp, Key: k})
	if err != nil {
		t.Fatal(err)
	}
	var prev []byte
	for i := range 3 {
		p, media := payload(t, k, fmt.Sprintf("ev-%d", i))
		rec, err := r.Record(p, media)
		if err != nil {
			t.Fatal(err)
		}
		if p.Seq != uint64(i+1) {
			t.Errorf("payload seq %d, want %d", p.Seq, i+1)
		}
		prev = verify(t, rec, uint64(i+1), prev)
		c, err := board.LoadChain(path)
		if err != nil || c.Next != uint64(i+2) || !bytes.Equal(c.Prev, prev) {
			t.Fatalf("chain state after record %d: %+v, %v", i+1, c, err)
		}
		if got := r.Chain(); got.Next != c.Next || !bytes.Equal(got.Prev, c.Prev) {
			t.Errorf("Chain() %+v, on disk %+v", got, c)
		}
	}
	if len(sp.recs) != 3 {
		t.Errorf("%d records spooled, want 3", len(sp.recs))
	}
}

// A spool that fails after the chain state was saved (a full disk, or a
// crash between the two) leaves a gap: the record is not spooled, and the
// next record, in this recorder or in one opened again on the same chain
// state, takes the following number and chains to the lost one.
func TestSpoolFailureLeavesGap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chain")
	k := newKey(t)
	sp := &memSpool{}
	r, err := recorder.Open(recorder.Config{Chain: recorder.ChainFile(path), Spool: sp, Key: k})
	if err != nil {
		t.Fatal(err)
	}
	p, media := payload(t, k, "ev-1")
	if _, err := r.Record(p, media); err != nil {
		t.Fatal(err)
	}
	disk := errors.New("no space left on device")
	sp.fail = disk
	p, media = payload(t, k, "ev-2")
	if _, err := r.Record(p, media); !errors.Is(err, disk) {
		t.Fatalf("Record with a failing spool: %v", err)
	}
	lost := sp.seen[len(sp.seen)-1]
	lostHash := verify(t, lost, 2, verify(t, sp.recs[0], 1, nil))
	if c := r.Chain(); c.Next != 3 {
		t.Fatalf("chain after the lost record: next %d, want 3", c.Next)
	}

	// Reopened, as after a restart.
	sp2 := &memSpool{}
	r2, err := recorder.Open(recorder.Config{Chain: recorder.ChainFile(path), Spool: sp2, Key: k})
	if err != nil {
		t.Fatal(err)
	}
	p, media = payload(t, k, "ev-3")
	rec, err := r2.Record(p, media)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, rec, 3, lostHash)
}

// A chain state that cannot be saved stops the record before the spool:
// nothing went out, so the number is still free.
func TestChainSaveFailure(t *testing.T) {
	k := newKey(t)
	ch := &failChain{c: board.Chain{Next: 7}}
	sp := &memSpool{}
	r, err := recorder.Open(recorder.Config{Chain: ch, Spool: sp, Key: k})
	if err != nil {
		t.Fatal(err)
	}
	ch.fail = true
	p, media := payload(t, k, "ev-1")
	if _, err := r.Record(p, media); err == nil {
		t.Fatal("Record despite a chain state that cannot be saved")
	}
	if len(sp.seen) != 0 || r.Chain().Next != 7 {
		t.Fatalf("spooled %d, chain next %d after a failed save", len(sp.seen), r.Chain().Next)
	}
	ch.fail = false
	p, media = payload(t, k, "ev-1")
	rec, err := r.Record(p, media)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, rec, 7, nil)
}

type failChain struct {
	c    board.Chain
	fail bool
}

func (f *failChain) Load() (board.Chain, error) { return f.c, nil }
func (f *failChain) Save(c board.Chain) error {
	if f.fail {
		return errors.New("read-only file system")
	}
	f.c = c
	return nil
}

const crashChildEnv = "KEYFRAME_RECORDER_CRASH_CHILD" // the data directory, in the child

// TestCrashChild is the child of TestCrashBetweenSaveAndSpool: it records
// into a real spool and is killed (SIGKILL, by itself) in the spool write of
// its third record, after the chain state was saved.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("only run as the child of TestCrashBetweenSaveAndSpool")
	}
	k := loadKey(t, filepath.Join(dir, "device.key"))
	sp, err := uploader.OpenSpool(uploader.SpoolConfig{Dir: filepath.Join(dir, "spool")})
	if err != nil {
		t.Fatal(err)
	}
	r, err := recorder.Open(recorder.Config{Chain: recorder.ChainFile(filepath.Join(dir, "chain")), Spool: killingSpool{sp, 3}, Key: k})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		p, media := payload(t, k, "ev-"+strconv.Itoa(i))
		if _, err := r.Record(p, media); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("not killed at the third record")
}

// killingSpool kills the process when it is handed record killAt.
type killingSpool struct {
	*uploader.Spool
	killAt uint64
}

func (s killingSpool) Put(r uploader.Record) error {
	if r.Seq == s.killAt {
		if self, err := os.FindProcess(os.Getpid()); err == nil {
			self.Kill() // SIGKILL
		}
		select {}
	}
	return s.Spool.Put(r)
}

func loadKey(t *testing.T, path string) board.Key {
	t.Helper()
	k, _, err := board.LoadOrCreateFileKey(path, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A process killed between saving the chain state and spooling: reopening
// does not reuse the number of the record that was lost.
func TestCrashBetweenSaveAndSpool(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("in the child")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(exe, "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child not killed: %v\n%s", err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child not killed by SIGKILL: %v\n%s", err, out)
	}
	c, err := board.LoadChain(filepath.Join(dir, "chain"))
	if err != nil || c.Next != 4 {
		t.Fatalf("chain state after the kill: %+v, %v (want next 4: record 3 was signed)", c, err)
	}
	sp, err := uploader.OpenSpool(uploader.SpoolConfig{Dir: filepath.Join(dir, "spool")})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range sp.Pending() {
		seqs = append(seqs, e.Seq)
	}
	if !slices.Equal(seqs, []uint64{1, 2}) {
		t.Fatalf("spooled before the kill: %v, want [1 2]", seqs)
	}
	k := loadKey(t, filepath.Join(dir, "device.key"))
	r, err := recorder.Open(recorder.Config{Chain: recorder.ChainFile(filepath.Join(dir, "chain")), Spool: sp, Key: k})
	if err != nil {
		t.Fatal(err)
	}
	p, media := payload(t, k, "after")
	rec, err := r.Record(p, media)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, rec, 4, c.Prev)
	seqs = seqs[:0]
	for _, e := range sp.Pending() {
		seqs = append(seqs, e.Seq)
	}
	if !slices.Equal(seqs, []uint64{1, 2, 4}) {
		t.Fatalf("spooled after the restart: %v, want [1 2 4] (3 lost, never reused)", seqs)
	}
}

// A rotate record is the chain's next record like any other, signed by the
// old key with the new key's proof; a pending one is spooled at Open, first.
func TestRotateAndPending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chain")
	prev := bytes.Repeat([]byte{7}, 32)
	if err := board.SaveChain(path, board.Chain{Next: 5, Prev: prev}); err != nil {
		t.Fatal(err)
	}
	old, next := newKey(t), newKey(t)
	bundle := &memSpool{}
	r, err := recorder.Open(recorder.Config{Chain: recorder.ChainFile(path), Spool: bundle, Key: old})
	if err != nil {
		t.Fatal(err)
	}
	oldID, _ := provenance.DeviceID(old.Public())
	newID, _ := provenance.DeviceID(next.Public())
	p := &provenance.Payload{Device: oldID, Event: "rotate-" + newID, Boot: "boot-1", KeyStore: "file",
		Time: provenance.Time{UnixMs: 1764000000000, Clock: provenance.ClockUnsynced}}
	rot, err := r.Rotate(next, p)
	if err != nil {
		t.Fatal(err)
	}
	if rot.Kind != provenance.KindRotate || len(bundle.recs) != 1 {
		t.Fatalf("rotate record %s, %d spooled", rot.Kind, len(bundle.recs))
	}
	h := verify(t, rot, 5, prev)

	// The agent's next start: the rotate record first, then the new key's
	// records continue the chain.
	sp := &memSpool{}
	r2, err := recorder.Open(recorder.Config{Chain: recorder.ChainFile(path), Spool: sp, Key: next, Pending: []uploader.Record{rot}})
	if err != nil {
		t.Fatal(err)
	}
	p2, media := payload(t, next, "ev-1")
	if _, err := r2.Record(p2, media); err != nil {
		t.Fatal(err)
	}
	if len(sp.recs) != 2 || sp.recs[0].Seq != 5 || sp.recs[0].Kind != provenance.KindRotate {
		t.Fatalf("spooled %+v, want the rotate record first", sp.recs)
	}
	verify(t, sp.recs[1], 6, h)

	// A pending record the chain has not moved past is refused: the chain
	// state went back, and numbers would be reused.
	if err := board.SaveChain(path, board.Chain{Next: 5, Prev: prev}); err != nil {
		t.Fatal(err)
	}
	if _, err := recorder.Open(recorder.Config{Chain: recorder.ChainFile(path), Spool: &memSpool{}, Key: next, Pending: []uploader.Record{rot}}); err == nil {
		t.Error("Open with a pending record at the chain's next number")
	}
}

func TestLayout(t *testing.T) {
	l := recorder.NewLayout("/data", "", "", "")
	want := recorder.Layout{
		DataDir: "/data", Key: "/data/device.key", Cert: "/data/device-cert.pem", Chain: "/data/chain",
		Spool: "/data/spool", Rotation: "/data/rotation.bundle", Rotated: "/data/rotation.done", NextKey: "/data/device.key.next", RetiredKey: "/data/device.key.retired",
		Joined: "/data/joined.conf", ReceiverCA: "/data/receiver-ca.pem",
	}
	if l != want {
		t.Errorf("defaults %+v, want %+v", l, want)
	}
	l = recorder.NewLayout("/data", "/keys/k.pem", "/certs/c.pem", "/var/spool/kf")
	want = recorder.Layout{
		DataDir: "/data", Key: "/keys/k.pem", Cert: "/certs/c.pem", Chain: "/data/chain",
		Spool: "/var/spool/kf", Rotation: "/data/rotation.bundle", Rotated: "/data/rotation.done", NextKey: "/keys/k.pem.next", RetiredKey: "/keys/k.pem.retired",
		Joined: "/data/joined.conf", ReceiverCA: "/data/receiver-ca.pem",
	}
	if l != want {
		t.Errorf("overrides %+v, want %+v", l, want)
	}
}

// RecordWith makes the media once the record's sequence number is known
// (what a sealed object binds), and a failure to make them leaves the
// chain where it was.
func TestRecordWith(t *testing.T) {
	k := newKey(t)
	sp := &memSpool{}
	r, err := recorder.Open(recorder.Config{Chain: &failChain{c: board.Chain{Next: 5}}, Spool: sp, Key: k})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := payload(t, k, "ev-1")
	if _, _, err := r.RecordWith(p, func(*provenance.Payload) ([][]byte, error) { return nil, errors.New("no key") }); err == nil {
		t.Fatal("RecordWith despite media that could not be made")
	}
	if r.Chain().Next != 5 || len(sp.seen) != 0 {
		t.Fatalf("after a media failure: chain next %d, %d records offered", r.Chain().Next, len(sp.seen))
	}
	var sawSeq uint64
	rec, h, err := r.RecordWith(p, func(p *provenance.Payload) ([][]byte, error) {
		sawSeq = p.Seq
		obj := []byte(fmt.Sprintf("object of record %d", p.Seq))
		p.Media = []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", obj)}
		return [][]byte{obj}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if sawSeq != 5 {
		t.Errorf("media made for seq %d, want 5", sawSeq)
	}
	if got := verify(t, rec, 5, nil); !bytes.Equal(got, h[:]) {
		t.Errorf("hash %x, record's %x", h, got)
	}
	b, _ := provenance.UnmarshalBundle(rec.Data)
	if string(b.Media[0]) != "object of record 5" {
		t.Errorf("media %q", b.Media[0])
	}
}
