package uploader

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// testRecord is a deterministic record: its data depends only on seq.
func testRecord(seq uint64, size int) Record {
	kind := "start"
	if seq%2 == 1 {
		kind = "end"
	}
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seq, 7))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return Record{Seq: seq, Event: fmt.Sprintf("ev-%d", seq/2), Kind: kind, Data: data}
}

// logBuffer is a concurrency-safe log sink for assertions on logged lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) Count(substr string) int { return strings.Count(l.String(), substr) }

func newLogger(w *logBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// fileSize is the size testRecord(seq, n) takes on disk.
func fileSize(seq uint64, n int) int64 {
	r := testRecord(seq, n)
	return int64(len(encodeFile(&r)))
}

// sizes sums fileSize over seqs.
func sizes(n int, seqs ...uint64) int64 {
	var t int64
	for _, s := range seqs {
		t += fileSize(s, n)
	}
	return t
}

func openSpool(t *testing.T, cfg SpoolConfig) *Spool {
	t.Helper()
	sp, err := OpenSpool(cfg)
	if err != nil {
		t.Fatalf("OpenSpool: %v", err)
	}
	return sp
}

func mustPut(t *testing.T, sp *Spool, r Record) {
	t.Helper()
	if err := sp.Put(r); err != nil {
		t.Fatalf("Put(%d): %v", r.Seq, err)
	}
}

func seqs(es []Entry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

// dirNames lists a directory's entries, sorted.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// quarantined returns the records in quarantine/ (not the .reason files).
func quarantined(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, n := range dirNames(t, filepath.Join(dir, QuarantineDir)) {
		if !strings.HasSuffix(n, ".reason") {
			out = append(out, n)
		}
	}
	return out
}

func TestSpoolPutPendingLoadAck(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, SpoolConfig{Dir: dir})
	recs := map[uint64]Record{}
	for _, seq := range []uint64{3, 1, 2} {
		r := testRecord(seq, 100+int(seq))
		recs[seq] = r
		mustPut(t, sp, r)
	}
	select {
	case <-sp.Notify():
	default:
		t.Fatal("Notify not signalled after Put")
	}
	pend := sp.Pending()
	if got := seqs(pend); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("Pending = %v, want [1 2 3]", got)
	}
	var total int64
	for _, e := range pend {
		want := recs[e.Seq]
		if e.Event != want.Event || e.Kind != want.Kind {
			t.Errorf("entry %d = %s/%s, want %s/%s", e.Seq, e.Event, e.Kind, want.Event, want.Kind)
		}
		info, err := os.Stat(filepath.Join(dir, fileName(e)))
		if err != nil {
			t.Fatalf("entry %d has no file: %v", e.Seq, err)
		}
		if info.Size() != e.Size {
			t.Errorf("entry %d size %d, file %d", e.Seq, e.Size, info.Size())
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("entry %d mode %v, want 0600", e.Seq, info.Mode().Perm())
		}
		total += e.Size
		got, err := sp.Load(e)
		if err != nil {
			t.Fatalf("Load(%d): %v", e.Seq, err)
		}
		if got.Seq != want.Seq || got.Event != want.Event || got.Kind != want.Kind || !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("Load(%d) returned a different record", e.Seq)
		}
	}
	if st := sp.Stats(); st.Pending != 3 || st.Bytes != total {
		t.Fatalf("Stats = %+v, want 3 pending, %d bytes", st, total)
	}
	if err := sp.Ack(pend[0]); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, fileName(pend[0]))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("acked file still there: %v", err)
	}
	if got := seqs(sp.Pending()); !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("Pending after Ack = %v, want [2 3]", got)
	}
	if st := sp.Stats(); st.Bytes != total-pend[0].Size {
		t.Fatalf("Bytes after Ack = %d, want %d", st.Bytes, total-pend[0].Size)
	}
	if _, err := sp.Load(pend[0]); !errors.Is(err, ErrNotPending) {
		t.Fatalf("Load of an acked entry: %v, want ErrNotPending", err)
	}
	if err := sp.Ack(pend[0]); !errors.Is(err, ErrNotPending) {
		t.Fatalf("second Ack: %v, want ErrNotPending", err)
	}
	if st := sp.Stats(); st.Quarantined != 0 || st.Corrupt != 0 {
		t.Fatalf("nothing should be quarantined: %+v", st)
	}
}

func TestSpoolOldest(t *testing.T) {
	sp := openSpool(t, SpoolConfig{Dir: t.TempDir()})
	if _, ok := sp.Oldest(); ok {
		t.Fatal("Oldest of an empty spool")
	}
	for _, seq := range []uint64{7, 0, 3} {
		mustPut(t, sp, testRecord(seq, 10))
	}
	for _, want := range []uint64{0, 3, 7} {
		e, ok := sp.Oldest()
		if !ok || e.Seq != want {
			t.Fatalf("Oldest = %d, %v; want %d", e.Seq, ok, want)
		}
		if err := sp.Ack(e); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := sp.Oldest(); ok {
		t.Fatal("Oldest after acking everything")
	}
}

func TestSpoolSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, SpoolConfig{Dir: dir})
	for seq := uint64(10); seq < 15; seq++ {
		mustPut(t, sp, testRecord(seq, 300))
	}
	if err := sp.Ack(sp.Pending()[0]); err != nil {
		t.Fatal(err)
	}
	before := sp.Pending()

	sp2 := openSpool(t, SpoolConfig{Dir: dir})
	after := sp2.Pending()
	if !slices.Equal(before, after) {
		t.Fatalf("after reopen Pending = %v, want %v", after, before)
	}
	for _, e := range after {
		r, err := sp2.Load(e)
		if err != nil {
			t.Fatalf("Load(%d) after reopen: %v", e.Seq, err)
		}
		if want := testRecord(e.Seq, 300); !bytes.Equal(r.Data, want.Data) {
			t.Fatalf("record %d changed across reopen", e.Seq)
		}
	}
	if st := sp2.Stats(); st.Pending != 4 || st.Quarantined != 0 {
		t.Fatalf("Stats after reopen = %+v", st)
	}
}

func TestSpoolCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "spool")
	openSpool(t, SpoolConfig{Dir: dir})
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o700 {
		t.Fatalf("spool dir mode %v, want 0700", info.Mode().Perm())
	}
}

// corruptions damage a spooled file in ways a crash, a bad SD card or a
// stray write could.
var corruptions = []struct {
	name string
	do   func(b []byte) []byte
}{
	{"truncated to half", func(b []byte) []byte { return b[:len(b)/2] }},
	{"last byte torn off", func(b []byte) []byte { return b[:len(b)-1] }},
	{"header only", func(b []byte) []byte { return b[:20] }},
	{"empty", func([]byte) []byte { return nil }},
	{"bit flip in data", func(b []byte) []byte { b[len(b)/2] ^= 0x10; return b }},
	{"bit flip in seq", func(b []byte) []byte { b[12] ^= 0x01; return b }},
	{"bit flip in checksum", func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }},
	{"extra byte appended", func(b []byte) []byte { return append(b, 0) }},
	{"zeroed tail", func(b []byte) []byte { clear(b[len(b)-64:]); return b }},
}

func damage(t *testing.T, path string, f func([]byte) []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSpoolQuarantinesCorruptFilesAtOpen(t *testing.T) {
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			sp := openSpool(t, SpoolConfig{Dir: dir})
			mustPut(t, sp, testRecord(1, 500))
			mustPut(t, sp, testRecord(2, 500))
			bad := sp.Pending()[0]
			damage(t, filepath.Join(dir, fileName(bad)), c.do)

			logs := &logBuffer{}
			sp2 := openSpool(t, SpoolConfig{Dir: dir, Logger: newLogger(logs)})
			if got := seqs(sp2.Pending()); !slices.Equal(got, []uint64{2}) {
				t.Fatalf("Pending = %v, want only the intact record [2]", got)
			}
			st := sp2.Stats()
			if st.Corrupt != 1 || st.Quarantined != 1 {
				t.Fatalf("Stats = %+v, want 1 corrupt, 1 quarantined", st)
			}
			if q := quarantined(t, dir); !slices.Equal(q, []string{fileName(bad)}) {
				t.Fatalf("quarantine holds %v, want [%s]", q, fileName(bad))
			}
			reason, err := os.ReadFile(filepath.Join(dir, QuarantineDir, fileName(bad)+".reason"))
			if err != nil || !strings.Contains(string(reason), "corrupt") {
				t.Fatalf("reason file = %q, %v", reason, err)
			}
			if logs.Count("record quarantined") != 1 {
				t.Fatalf("quarantine not logged once:\n%s", logs)
			}
			if _, err := os.Stat(filepath.Join(dir, fileName(bad))); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("corrupt file left in the spool")
			}
		})
	}
}

func TestSpoolLoadQuarantinesCorruptFile(t *testing.T) {
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			sp := openSpool(t, SpoolConfig{Dir: dir})
			mustPut(t, sp, testRecord(1, 500))
			mustPut(t, sp, testRecord(2, 500))
			bad := sp.Pending()[0]
			damage(t, filepath.Join(dir, fileName(bad)), c.do)

			r, err := sp.Load(bad)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load of a damaged file = %v, want ErrCorrupt", err)
			}
			if r.Data != nil {
				t.Fatal("Load returned data for a corrupt record")
			}
			if got := seqs(sp.Pending()); !slices.Equal(got, []uint64{2}) {
				t.Fatalf("Pending = %v, want [2]", got)
			}
			if st := sp.Stats(); st.Corrupt != 1 || st.Quarantined != 1 || st.Pending != 1 {
				t.Fatalf("Stats = %+v", st)
			}
			if q := quarantined(t, dir); !slices.Equal(q, []string{fileName(bad)}) {
				t.Fatalf("quarantine holds %v", q)
			}
			if _, err := sp.Load(sp.Pending()[0]); err != nil {
				t.Fatalf("intact record: %v", err)
			}
		})
	}
}

// Every single-bit error anywhere in a file is caught.
func TestDecodeFileDetectsEveryBitFlip(t *testing.T) {
	r := testRecord(77, 64)
	b := encodeFile(&r)
	if _, err := decodeFile(b); err != nil {
		t.Fatalf("intact file: %v", err)
	}
	for i := range b {
		for bit := range 8 {
			c := bytes.Clone(b)
			c[i] ^= 1 << bit
			if got, err := decodeFile(c); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip of byte %d bit %d not detected (got seq %d, err %v)", i, bit, got.Seq, err)
			}
		}
	}
	for n := range len(b) {
		if _, err := decodeFile(b[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("file truncated to %d of %d bytes not detected", n, len(b))
		}
	}
}

func TestSpoolQuarantinesMisnamedFile(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, SpoolConfig{Dir: dir})
	mustPut(t, sp, testRecord(4, 50))
	e := sp.Pending()[0]
	// An intact file under another record's name must not be taken for it.
	other := fileName(Entry{Seq: 5, Event: e.Event, Kind: e.Kind})
	if err := os.Rename(filepath.Join(dir, fileName(e)), filepath.Join(dir, other)); err != nil {
		t.Fatal(err)
	}
	sp2 := openSpool(t, SpoolConfig{Dir: dir})
	if n := len(sp2.Pending()); n != 0 {
		t.Fatalf("misnamed file accepted: %v", sp2.Pending())
	}
	if st := sp2.Stats(); st.Corrupt != 1 {
		t.Fatalf("Stats = %+v, want 1 corrupt", st)
	}
}

func TestSpoolRemovesLeftoverTempFiles(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, SpoolConfig{Dir: dir})
	mustPut(t, sp, testRecord(1, 50))
	// What a Put killed between create and rename leaves behind.
	r := testRecord(2, 50)
	tmp := "." + fileName(Entry{Seq: 2, Event: r.Event, Kind: r.Kind}) + ".tmp-123456"
	if err := os.WriteFile(filepath.Join(dir, tmp), encodeFile(&r)[:30], 0o600); err != nil {
		t.Fatal(err)
	}
	// An unknown file is left alone (and logged), not deleted.
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// And a quarantine reason whose write was cut off.
	qtmp := filepath.Join(dir, QuarantineDir, ".x.kfr.reason.tmp-99")
	if err := os.WriteFile(qtmp, []byte("spool fu"), 0o600); err != nil {
		t.Fatal(err)
	}
	sp2 := openSpool(t, SpoolConfig{Dir: dir})
	if st := sp2.Stats(); st.TempRemoved != 2 || st.Pending != 1 || st.Quarantined != 0 {
		t.Fatalf("Stats = %+v, want 2 temp files removed, 1 pending", st)
	}
	if q := dirNames(t, filepath.Join(dir, QuarantineDir)); len(q) != 0 {
		t.Fatalf("quarantine holds %v", q)
	}
	want := []string{fileName(sp.Pending()[0]), "README", QuarantineDir}
	slices.Sort(want)
	if got := dirNames(t, dir); !slices.Equal(got, want) {
		t.Fatalf("spool dir = %v, want %v", got, want)
	}
}

func TestSpoolRefuseNew(t *testing.T) {
	dir := t.TempDir()
	// Room for records 1-3 and not for a fourth (kinds alternate, so sizes
	// differ by a few bytes).
	bound := sizes(1000, 1, 2, 3) + 2
	logs := &logBuffer{}
	sp := openSpool(t, SpoolConfig{Dir: dir, MaxBytes: bound, Logger: newLogger(logs)})
	for seq := uint64(1); seq <= 3; seq++ {
		mustPut(t, sp, testRecord(seq, 1000))
	}
	<-sp.Notify()
	err := sp.Put(testRecord(4, 1000))
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Put over the bound = %v, want ErrFull", err)
	}
	select {
	case <-sp.Notify():
		t.Fatal("Notify signalled for a refused Put")
	default:
	}
	st := sp.Stats()
	if st.Refused != 1 || st.Pending != 3 || st.Bytes != sizes(1000, 1, 2, 3) || st.Dropped != 0 || st.Quarantined != 0 {
		t.Fatalf("Stats = %+v, want 1 refused, 3 pending", st)
	}
	if !strings.Contains(logs.String(), "spool full, record refused") || !strings.Contains(logs.String(), "refused=1") {
		t.Fatalf("refusal not logged with counts:\n%s", logs)
	}
	if got := seqs(sp.Pending()); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("pending = %v: refuse-new must keep the old records", got)
	}
	if n := len(dirNames(t, dir)); n != 4 { // 3 records + quarantine/
		t.Fatalf("spool dir has %d entries, want 4", n)
	}
	// Room again after an ack.
	if err := sp.Ack(sp.Pending()[0]); err != nil {
		t.Fatal(err)
	}
	mustPut(t, sp, testRecord(4, 1000))
	// Re-putting a pending record replaces it and needs no extra room.
	mustPut(t, sp, testRecord(4, 1000))
	if st := sp.Stats(); st.Pending != 3 || st.Refused != 1 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestSpoolDropOldest(t *testing.T) {
	dir := t.TempDir()
	bound := sizes(1000, 1, 2, 3) + 2
	logs := &logBuffer{}
	sp := openSpool(t, SpoolConfig{Dir: dir, MaxBytes: bound, Policy: DropOldest, Logger: newLogger(logs)})
	for seq := uint64(1); seq <= 5; seq++ {
		mustPut(t, sp, testRecord(seq, 1000))
	}
	if got := seqs(sp.Pending()); !slices.Equal(got, []uint64{3, 4, 5}) {
		t.Fatalf("Pending = %v, want [3 4 5]", got)
	}
	st := sp.Stats()
	if st.Dropped != 2 || st.Quarantined != 2 || st.Refused != 0 || st.Corrupt != 0 || st.Bytes != sizes(1000, 3, 4, 5) {
		t.Fatalf("Stats = %+v, want 2 dropped (quarantined), 3 pending", st)
	}
	if logs.Count("oldest unsent record moved to quarantine") != 2 {
		t.Fatalf("drops not logged:\n%s", logs)
	}
	// Nothing deleted: the dropped records are intact in quarantine/, with
	// their reason.
	q := quarantined(t, dir)
	if len(q) != 2 {
		t.Fatalf("quarantine holds %v, want 2 records", q)
	}
	for i, name := range q {
		b, err := os.ReadFile(filepath.Join(dir, QuarantineDir, name))
		if err != nil {
			t.Fatal(err)
		}
		r, err := decodeFile(b)
		want := testRecord(uint64(i+1), 1000)
		if err != nil || r.Seq != want.Seq || !bytes.Equal(r.Data, want.Data) {
			t.Fatalf("quarantined %s is not record %d intact: %v", name, want.Seq, err)
		}
		reason, err := os.ReadFile(filepath.Join(dir, QuarantineDir, name+".reason"))
		if err != nil || strings.TrimSpace(string(reason)) != "spool full" {
			t.Fatalf("reason = %q, %v", reason, err)
		}
	}
	// A record larger than the whole bound is refused, and nothing is
	// dropped for it.
	if err := sp.Put(testRecord(6, int(bound))); !errors.Is(err, ErrFull) {
		t.Fatalf("Put of an oversized record = %v, want ErrFull", err)
	}
	if st := sp.Stats(); st.Dropped != 2 || st.Refused != 1 || st.Pending != 3 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestSpoolQuarantineIsBounded(t *testing.T) {
	dir := t.TempDir()
	size := fileSize(2, 1000) // the larger of the two kinds
	logs := &logBuffer{}
	// Room in quarantine/ for two records and their reasons, not three.
	sp := openSpool(t, SpoolConfig{Dir: dir, MaxBytes: sizes(1000, 1, 2, 3) + 2, Policy: DropOldest,
		QuarantineMaxBytes: 2*size + 100, Logger: newLogger(logs)})
	for seq := uint64(1); seq <= 8; seq++ {
		mustPut(t, sp, testRecord(seq, 1000))
	}
	// 1..5 were dropped into quarantine; it keeps the newest two.
	st := sp.Stats()
	if st.Dropped != 5 || st.Pruned != 3 {
		t.Fatalf("Stats = %+v, want 5 dropped, 3 pruned", st)
	}
	want := []string{fileName(entryFor(4)), fileName(entryFor(5))}
	if q := quarantined(t, dir); !slices.Equal(q, want) {
		t.Fatalf("quarantine holds %v, want %v", q, want)
	}
	if logs.Count("oldest quarantined file deleted") != 3 {
		t.Fatalf("pruning not logged:\n%s", logs)
	}
	var total int64
	for _, n := range dirNames(t, filepath.Join(dir, QuarantineDir)) {
		info, _ := os.Stat(filepath.Join(dir, QuarantineDir, n))
		total += info.Size()
	}
	if total > 2*size+100 {
		t.Fatalf("quarantine holds %d bytes, bound %d", total, 2*size+100)
	}
}

// entryFor is the entry testRecord(seq, ...) is spooled under (size aside).
func entryFor(seq uint64) Entry {
	r := testRecord(seq, 1)
	return Entry{Seq: seq, Event: r.Event, Kind: r.Kind}
}

func TestSpoolRejectsBadRecords(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, SpoolConfig{Dir: dir})
	for _, r := range []Record{
		{Seq: 1, Event: "../etc", Kind: "start", Data: []byte("x")},
		{Seq: 1, Event: "a/b", Kind: "start", Data: []byte("x")},
		{Seq: 1, Event: "", Kind: "start", Data: []byte("x")},
		{Seq: 1, Event: strings.Repeat("a", 65), Kind: "start", Data: []byte("x")},
		{Seq: 1, Event: "ev", Kind: "middle", Data: []byte("x")},
		{Seq: 1, Event: "ev", Kind: "../start", Data: []byte("x")},
		{Seq: 1, Event: "ev", Kind: "start"},
	} {
		if err := sp.Put(r); err == nil || !strings.HasPrefix(err.Error(), "uploader: ") {
			t.Errorf("Put(%q, %q, %d bytes) = %v, want an uploader error", r.Event, r.Kind, len(r.Data), err)
		}
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{QuarantineDir}) {
		t.Fatalf("bad records wrote files: %v", got)
	}
	// A sequence number is never reused for another record.
	mustPut(t, sp, Record{Seq: 9, Event: "ev-a", Kind: "start", Data: []byte("a")})
	if err := sp.Put(Record{Seq: 9, Event: "ev-b", Kind: "start", Data: []byte("b")}); err == nil {
		t.Fatal("Put reused a pending sequence number for another event")
	}
	if _, err := OpenSpool(SpoolConfig{Dir: dir, Policy: "drop-newest"}); err == nil {
		t.Fatal("unknown policy accepted")
	}
	if _, err := OpenSpool(SpoolConfig{Dir: dir, MaxBytes: -1}); err == nil {
		t.Fatal("negative bound accepted")
	}
}

func TestSpoolQuarantineAndAckAfterDrop(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, SpoolConfig{Dir: dir})
	mustPut(t, sp, testRecord(1, 10))
	mustPut(t, sp, testRecord(2, 10))
	e1, e2 := sp.Pending()[0], sp.Pending()[1]
	if err := sp.Quarantine(e1, "receiver replied 403: unknown device\nsecond line"); err != nil {
		t.Fatal(err)
	}
	reason, err := os.ReadFile(filepath.Join(dir, QuarantineDir, fileName(e1)+".reason"))
	if err != nil || string(reason) != "receiver replied 403: unknown device second line\n" {
		t.Fatalf("reason = %q, %v", reason, err)
	}
	if err := sp.Quarantine(e1, "again"); !errors.Is(err, ErrNotPending) {
		t.Fatalf("second Quarantine = %v, want ErrNotPending", err)
	}
	// A record dropped to quarantine while in flight, then acknowledged:
	// the quarantined copy goes, since it was delivered.
	if err := sp.Quarantine(e2, "spool full"); err != nil {
		t.Fatal(err)
	}
	if err := sp.Ack(e2); err != nil {
		t.Fatalf("Ack of a quarantined, delivered record: %v", err)
	}
	if q := quarantined(t, dir); !slices.Equal(q, []string{fileName(e1)}) {
		t.Fatalf("quarantine holds %v, want only %s", q, fileName(e1))
	}
	if st := sp.Stats(); st.Quarantined != 2 || st.Pending != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}
