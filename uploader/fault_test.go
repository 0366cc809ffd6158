package uploader

// Fault tests of the device side's delivery path: a spool on a filesystem
// that fills up, a receiver that misbehaves in every way the network allows,
// and spool files damaged while the device was off. Each test drives the real
// Spool, the real HTTP transport and the real upload loop; time and
// randomness are injected, so the delays checked are the ones the loop asked
// for, never wall-clock measurements.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyframe-cam/keyframe/internal/backoff"
	"github.com/keyframe-cam/keyframe/internal/backoff/backofftest"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/provenance"
)

// ---------------------------------------------------------------------------
// Spool on a full disk

// smallFS mounts a tmpfs of the given size ("256k") on a fresh directory and
// unmounts it when the test ends. Without the right to mount (not root, no
// CAP_SYS_ADMIN, not Linux) the test is skipped, or fails when $CI is set:
// CI must run it.
func smallFS(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("disk-full test needs to mount a %s tmpfs (root or CAP_SYS_ADMIN on Linux): mount: %v: %s",
			size, err, bytes.TrimSpace(out))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillUp appends to path until the filesystem says ENOSPC, so not one block
// is left.
func fillUp(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{0xa5}, 4096)
	for i := 0; ; i++ {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the filesystem: %v", err)
			}
			return
		}
		if i > 1<<16 {
			t.Fatal("the filesystem never filled up")
		}
	}
}

// flipInPlace flips one bit of the file without changing its size, so it
// needs no new block on a full filesystem.
func flipInPlace(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x20
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// drainInBubble uploads everything pending in the spool at cfg.Dir (opened
// again inside a synctest bubble, then handed to before) through a
// transport that checks every body; it returns the transport, what is still pending and the loop's
// counters.
func drainInBubble(t *testing.T, cfg SpoolConfig, before func(*Spool)) (tr *fakeTransport, pending int, ust UploadStats) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		sp := openSpool(t, cfg)
		if before != nil {
			before(sp)
		}
		tr = &fakeTransport{script: func(uint64, int) error { return nil }}
		up := New(testConfig(), sp, tr, clock.System{}, backofftest.Seeded(3), nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- up.Run(ctx) }()
		settle(time.Hour)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
		ust = up.Stats()
		pending = len(sp.Pending())
	})
	return tr, pending, ust
}

// sentOnce checks that the transport saw exactly want, each once, in order.
func sentOnce(t *testing.T, tr *fakeTransport, want []uint64) {
	t.Helper()
	var got []uint64
	for _, a := range tr.Attempts() {
		if a.err != nil {
			t.Fatalf("attempt for seq %d failed: %v", a.seq, a.err)
		}
		got = append(got, a.seq)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("sent %v, want each of %v once, in order", got, want)
	}
}

// TestFaultSpoolDiskFull runs the spool on a real 256 KiB filesystem.
func TestFaultSpoolDiskFull(t *testing.T) {
	const size = 5000 // a 5030-byte file: two 4 KiB pages on tmpfs

	// The filesystem fills up long before MaxBytes (64 MiB by default).
	for _, policy := range []Policy{RefuseNew, DropOldest} {
		t.Run("filesystem full/"+string(policy), func(t *testing.T) {
			root := smallFS(t, "256k")
			dir := filepath.Join(root, "spool")
			logs := &logBuffer{}
			sp := openSpool(t, SpoolConfig{Dir: dir, Policy: policy, Logger: newLogger(logs)})
			var put []uint64
			var full error
			for seq := uint64(1); seq <= 64; seq++ {
				if err := sp.Put(testRecord(seq, size)); err != nil {
					full = err
					break
				}
				put = append(put, seq)
			}
			if full == nil {
				t.Fatal("64 records of 5 KB fit in a 256 KiB filesystem")
			}
			if !errors.Is(full, syscall.ENOSPC) || !errors.Is(full, ErrFull) || !strings.HasPrefix(full.Error(), "uploader: spool: put") {
				t.Fatalf("Put on a full filesystem = %q, want an uploader error wrapping ErrFull and ENOSPC", full)
			}
			// Use up the last free blocks: nothing at all can be written now.
			fillUp(t, filepath.Join(root, "filler"))
			refused := 1
			for _, r := range []Record{testRecord(uint64(len(put)+1), size), testRecord(uint64(len(put)+1), 1)} {
				if err := sp.Put(r); !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrFull) {
					t.Fatalf("Put of %d bytes on a full filesystem = %v", len(r.Data), err)
				}
				refused++
			}
			st := sp.Stats()
			if st.Refused != refused || st.Pending != len(put) || st.Dropped != 0 || st.Quarantined != 0 {
				t.Fatalf("Stats = %+v, want %d refused, %d pending, nothing dropped", st, refused, len(put))
			}
			if n := logs.Count("filesystem is full, record refused"); n != refused {
				t.Fatalf("%d refusals logged, want %d:\n%s", n, refused, logs)
			}
			// No torn or temporary file is left behind, let alone counted.
			want := []string{QuarantineDir}
			for _, e := range sp.Pending() {
				want = append(want, fileName(e))
			}
			slices.Sort(want)
			if got := dirNames(t, dir); !slices.Equal(got, want) {
				t.Fatalf("spool dir = %v, want %v", got, want)
			}

			// Opening the spool on the full filesystem (a restart) finds every
			// record intact. One of them was damaged meanwhile: it must be
			// quarantined even though no reason file can be written.
			bad := sp.Pending()[1]
			flipInPlace(t, filepath.Join(dir, fileName(bad)), 100)
			logs2 := &logBuffer{}
			sp2, err := OpenSpool(SpoolConfig{Dir: dir, Policy: policy, Logger: newLogger(logs2)})
			if err != nil {
				t.Fatalf("OpenSpool on a full filesystem with a corrupt record: %v", err)
			}
			st = sp2.Stats()
			if st.Pending != len(put)-1 || st.Corrupt != 1 || st.Quarantined != 1 || st.TempRemoved != 0 {
				t.Fatalf("reopened Stats = %+v, want %d pending, 1 corrupt", st, len(put)-1)
			}
			if q := quarantined(t, dir); !slices.Equal(q, []string{fileName(bad)}) {
				t.Fatalf("quarantine holds %v, want [%s]", q, fileName(bad))
			}
			if !strings.Contains(logs2.String(), "checksum") || logs2.Count("record quarantined") != 1 {
				t.Fatalf("the quarantine and its reason are not in the log:\n%s", logs2)
			}
			for _, e := range sp2.Pending() {
				r, err := sp2.Load(e)
				if want := testRecord(e.Seq, size); err != nil || !bytes.Equal(r.Data, want.Data) {
					t.Fatalf("record %d after reopen: %v", e.Seq, err)
				}
			}

			// The receiver is reachable: every intact record goes, once, in
			// order; the damaged one never. Another record is damaged after
			// the spool opened: the upload loop finds it when it loads it,
			// and must be able to quarantine it on the full filesystem.
			cfg := SpoolConfig{Dir: dir, Policy: policy}
			bad2 := sp2.Pending()[0] // the oldest: loaded first, with no space freed by any ack yet
			tr, pending, ust := drainInBubble(t, cfg, func(*Spool) {
				flipInPlace(t, filepath.Join(dir, fileName(bad2)), 60)
			})
			good := slices.DeleteFunc(slices.Clone(put), func(s uint64) bool { return s == bad.Seq || s == bad2.Seq })
			sentOnce(t, tr, good)
			if ust.Sent != len(good) || ust.Corrupt != 1 || pending != 0 {
				t.Fatalf("upload Stats = %+v, %d pending; want %d sent, the record damaged while open quarantined", ust, pending, len(good))
			}
			if q := quarantined(t, dir); !slices.Equal(q, []string{fileName(bad2), fileName(bad)}) { // bad2 is seq 1
				t.Fatalf("quarantine holds %v", q)
			}
			// Space came back with the acknowledgements.
			if err := openSpool(t, cfg).Put(testRecord(1000, size)); err != nil {
				t.Fatalf("Put after the spool drained: %v", err)
			}
		})
	}

	// The bound is below the filesystem's size: the policy applies and the
	// filesystem never fills up.
	t.Run("bound/refuse-new", func(t *testing.T) {
		root := smallFS(t, "256k")
		dir := filepath.Join(root, "spool")
		const bound = 40 << 10
		sp := openSpool(t, SpoolConfig{Dir: dir, MaxBytes: bound})
		var put []uint64
		for seq := uint64(1); ; seq++ {
			err := sp.Put(testRecord(seq, size))
			if err != nil {
				if !errors.Is(err, ErrFull) || errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("Put over the bound = %v, want ErrFull from the bound, not from the disk", err)
				}
				break
			}
			put = append(put, seq)
		}
		st := sp.Stats()
		if want := int(bound / fileSize(2, size)); len(put) != want || st.Refused != 1 || st.Bytes > bound {
			t.Fatalf("%d put, Stats %+v; want %d records within %d bytes, 1 refused", len(put), st, want, bound)
		}
		tr, pending, _ := drainInBubble(t, SpoolConfig{Dir: dir, MaxBytes: bound}, nil)
		if pending != 0 {
			t.Fatalf("%d still pending", pending)
		}
		sentOnce(t, tr, put)
	})

	t.Run("bound/drop-oldest", func(t *testing.T) {
		root := smallFS(t, "256k")
		dir := filepath.Join(root, "spool")
		const bound = 40 << 10
		logs := &logBuffer{}
		cfg := SpoolConfig{Dir: dir, MaxBytes: bound, Policy: DropOldest, Logger: newLogger(logs)}
		sp := openSpool(t, cfg)
		const n = 60 // three times what the whole filesystem holds
		for seq := uint64(1); seq <= n; seq++ {
			if err := sp.Put(testRecord(seq, size)); err != nil {
				t.Fatalf("Put %d with drop-oldest: %v (the bounds must keep the disk from filling)", seq, err)
			}
		}
		st := sp.Stats()
		pending := seqs(sp.Pending())
		if st.Dropped != n-len(pending) || st.Quarantined != st.Dropped || st.Refused != 0 || st.Bytes > bound {
			t.Fatalf("Stats = %+v with %d pending, want every record not pending dropped and counted", st, len(pending))
		}
		if pending[len(pending)-1] != n || pending[0] != uint64(n-len(pending)+1) {
			t.Fatalf("pending %v, want the newest records", pending)
		}
		// Each dropped record is intact in quarantine/ with its reason, or
		// was pruned (counted) to keep quarantine/ bounded.
		q := quarantined(t, dir)
		if len(q)+st.Pruned != st.Dropped || st.Pruned == 0 {
			t.Fatalf("%d in quarantine + %d pruned, want the %d dropped (and some pruned)", len(q), st.Pruned, st.Dropped)
		}
		for _, name := range q {
			b, err := os.ReadFile(filepath.Join(dir, QuarantineDir, name))
			if err != nil {
				t.Fatal(err)
			}
			r, err := decodeFile(b)
			if err != nil || !bytes.Equal(r.Data, testRecord(r.Seq, size).Data) || slices.Contains(pending, r.Seq) {
				t.Fatalf("quarantined %s is not an intact dropped record: %v", name, err)
			}
			reason, err := os.ReadFile(filepath.Join(dir, QuarantineDir, name+".reason"))
			if err != nil || strings.TrimSpace(string(reason)) != "spool full" {
				t.Fatalf("%s: reason %q, %v", name, reason, err)
			}
		}
		if logs.Count("oldest unsent record moved to quarantine") != st.Dropped || logs.Count("oldest quarantined file deleted") != st.Pruned {
			t.Fatalf("drops or prunes not each logged:\n%s", logs)
		}
		tr, left, _ := drainInBubble(t, cfg, nil)
		if left != 0 {
			t.Fatalf("%d still pending", left)
		}
		sentOnce(t, tr, pending)
	})
}

// TestFaultCorruptRecordThatCannotBeQuarantined: the oldest record is found
// damaged when loaded, and quarantine/ cannot take it (here it was replaced
// by a file; on a board, an SD card remounted read-only). The loop must not
// spin on it, count it over and over or send it: it backs off like any local
// failure, and quarantines it once it can.
func TestFaultCorruptRecordThatCannotBeQuarantined(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, SpoolConfig{Dir: dir})
	for s := uint64(1); s <= 4; s++ {
		mustPut(t, sp, testRecord(s, 300))
	}
	synctest.Test(t, func(t *testing.T) {
		sp := openSpool(t, SpoolConfig{Dir: dir})
		qdir := filepath.Join(dir, QuarantineDir)
		if err := os.Remove(qdir); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(qdir, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		damage(t, filepath.Join(dir, fileName(entryFor(1))), func(b []byte) []byte { b[40] ^= 1; return b })
		tr := &fakeTransport{script: func(uint64, int) error { return nil }}
		rnd := backofftest.Ceil()
		up := New(testConfig(), sp, tr, clock.System{}, rnd, nil)
		ctx, cancel := context.WithCancel(context.Background())
		// A failed check below stops the uploader too: a goroutine left
		// blocked in the bubble would abort the package's whole run.
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- up.Run(ctx) }()
		settle(time.Minute)
		st := up.Stats()
		// With the largest draws the backoff waits 1+2+4+8+16 s before the
		// sixth attempt at 31 s and the seventh at 63 s: six tries in a minute.
		if len(tr.Attempts()) != 0 || st.Corrupt != 0 || st.Failures != 6 || !strings.Contains(st.LastError, "cannot be quarantined") {
			t.Fatalf("after a minute: %d sent, Stats %+v; want nothing sent, 6 backed-off failures", len(tr.Attempts()), st)
		}
		if p := seqs(sp.Pending()); !slices.Equal(p, []uint64{1, 2, 3, 4}) {
			t.Fatalf("pending %v", p)
		}
		// quarantine/ is writable again.
		if err := os.Remove(qdir); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(qdir, 0o700); err != nil {
			t.Fatal(err)
		}
		settle(time.Hour)
		cancel()
		<-done
		if got := seqs(sp.Pending()); len(got) != 0 {
			t.Fatalf("pending %v", got)
		}
		var sent []uint64
		for _, a := range tr.Attempts() {
			sent = append(sent, a.seq)
		}
		if !slices.Equal(sent, []uint64{2, 3, 4}) || up.Stats().Corrupt != 1 || sp.Stats().Corrupt != 1 {
			t.Fatalf("sent %v, uploader %+v, spool %+v", sent, up.Stats(), sp.Stats())
		}
	})
	if q := quarantined(t, dir); !slices.Equal(q, []string{fileName(entryFor(1))}) {
		t.Fatalf("quarantine holds %v", q)
	}
}

// ---------------------------------------------------------------------------
// A misbehaving receiver

// stepClock is a Clock that never waits: After records the delay asked for,
// moves the clock on by it and fires at once. Delays are what the upload
// loop asked for, not what real time did.
type stepClock struct {
	mu    sync.Mutex
	now   time.Time
	asked []time.Duration
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = append(c.asked, d)
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *stepClock) Asked() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.asked)
}

// outcome is what one Send returned, as the upload loop saw it.
type outcome struct {
	seq uint64
	err error
}

// outcomeTransport records every Send's result.
type outcomeTransport struct {
	tr Transport

	mu  sync.Mutex
	log []outcome
}

func (o *outcomeTransport) Send(ctx context.Context, r Record) error {
	err := o.tr.Send(ctx, r)
	o.mu.Lock()
	o.log = append(o.log, outcome{r.Seq, err})
	o.mu.Unlock()
	return err
}

func (o *outcomeTransport) Outcomes() []outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.log)
}

// fault is what the receiver does to one attempt instead of answering it.
type fault struct {
	code       int    // reply with this status (without storing, unless store); with raw, the status raw holds
	retryAfter string // Retry-After header of the reply
	date       string // Date header of the reply
	body       []byte // reply body
	store      bool   // store the record first: the acknowledgement is what is lost
	slow       bool   // never answer; the client must give up (its timeout)
	midRequest bool   // read half the body, then drop the connection
	hangUp     bool   // read the whole request, then drop the connection without a word
	raw        string // write these bytes on the bare connection, then drop it
	acks       bool   // raw is a success reply nonetheless (the client takes it as stored)
}

// permanent reports whether the fault must get the record quarantined.
func (f fault) permanent() bool {
	return (&StatusError{Code: f.code}).Permanent()
}

// faultReceiver is an idempotent, strict receiver for testRecord(seq,
// faultSize) records that misbehaves by script: faults[seq][n-1] is applied
// to seq's n-th attempt, later attempts are answered properly. It stores a
// record once (201), answers a re-send 200, refuses with 409 a record below
// the highest stored (so an upload out of sequence order would end up
// quarantined) and with 422 a body that is not the record.
type faultReceiver struct {
	faults map[uint64][]fault
	done   chan struct{} // closed at the end: slow handlers give up

	mu         sync.Mutex
	attempts   map[uint64]int
	stored     []uint64 // in store order
	isStored   map[uint64]bool
	duplicates int
	violations []string // 409s and 422s this receiver had to give
	aborted    int      // bodies cut off by the client (a dropped or timed out request)
}

const faultSize = 3000

func newFaultReceiver(faults map[uint64][]fault) *faultReceiver {
	return &faultReceiver{faults: faults, done: make(chan struct{}), attempts: map[uint64]int{}, isStored: map[uint64]bool{}}
}

// seqFromPath inverts testRecord's event and kind: ev-N/start is 2N, ev-N/end 2N+1.
func seqFromPath(p string) (uint64, bool) {
	ev, kind, ok := strings.Cut(strings.TrimPrefix(p, "/v1/events/"), "/")
	n, err := strconv.ParseUint(strings.TrimPrefix(ev, "ev-"), 10, 64)
	if !ok || err != nil || !strings.HasPrefix(ev, "ev-") {
		return 0, false
	}
	switch kind {
	case provenance.KindStart:
		return 2 * n, true
	case provenance.KindEnd:
		return 2*n + 1, true
	}
	return 0, false
}

// attempt counts an attempt at seq and returns its fault, if any.
func (rc *faultReceiver) attempt(seq uint64) (fault, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.attempts[seq]++
	fs := rc.faults[seq]
	if n := rc.attempts[seq]; n <= len(fs) {
		return fs[n-1], true
	}
	return fault{}, false
}

// store is the idempotent, strict receiver's verdict on an intact body.
func (rc *faultReceiver) store(seq uint64) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.isStored[seq] {
		rc.duplicates++
		return http.StatusOK
	}
	if n := len(rc.stored); n > 0 && seq < rc.stored[n-1] {
		rc.violations = append(rc.violations, fmt.Sprintf("seq %d arrived after seq %d was stored", seq, rc.stored[n-1]))
		return http.StatusConflict
	}
	rc.isStored[seq] = true
	rc.stored = append(rc.stored, seq)
	return http.StatusCreated
}

func (rc *faultReceiver) violation(format string, args ...any) {
	rc.mu.Lock()
	rc.violations = append(rc.violations, fmt.Sprintf(format, args...))
	rc.mu.Unlock()
}

// readRecord reads and checks the request; ok is false if a reply was sent
// or nothing can be sent.
func (rc *faultReceiver) readRecord(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	seq, ok := seqFromPath(r.URL.Path)
	if !ok || r.Method != http.MethodPut || r.Header.Get("Content-Type") != provenance.BundleContentType {
		rc.violation("bad request %s %s %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		http.Error(w, "bad request", http.StatusBadRequest)
		return 0, false
	}
	return seq, true
}

// checkBody reads the body and compares it with the record.
func (rc *faultReceiver) checkBody(w http.ResponseWriter, r *http.Request, seq uint64) bool {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		rc.mu.Lock()
		rc.aborted++
		rc.mu.Unlock()
		return false
	}
	if !bytes.Equal(body, testRecord(seq, faultSize).Data) {
		rc.violation("body of seq %d is not the record (%d bytes)", seq, len(body))
		http.Error(w, "body is not the record", http.StatusUnprocessableEntity)
		return false
	}
	return true
}

func (rc *faultReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	seq, ok := rc.readRecord(w, r)
	if !ok {
		return
	}
	f, faulty := rc.attempt(seq)
	if faulty && f.midRequest {
		half := make([]byte, faultSize/2)
		if _, err := io.ReadFull(r.Body, half); err != nil {
			rc.violation("seq %d: could not read half the body: %v", seq, err)
		}
		hijackClose(w, "")
		return
	}
	if !rc.checkBody(w, r, seq) {
		return
	}
	if !faulty {
		w.WriteHeader(rc.store(seq))
		return
	}
	if f.store {
		rc.store(seq)
	}
	switch {
	case f.slow:
		select {
		case <-r.Context().Done(): // the client gave up
		case <-rc.done:
		}
	case f.hangUp:
		hijackClose(w, "")
	case f.raw != "":
		hijackClose(w, f.raw)
	default:
		reply(w.Header(), f)
		w.WriteHeader(f.code)
		w.Write(f.body)
	}
}

func reply(h http.Header, f fault) {
	if f.retryAfter != "" {
		h.Set("Retry-After", f.retryAfter)
	}
	if f.date != "" {
		h.Set("Date", f.date)
	}
	if f.code == http.StatusTemporaryRedirect {
		h.Set("Location", "http://127.0.0.1:1/elsewhere")
	}
}

// hijackClose takes the connection from net/http, writes raw and drops it.
func hijackClose(w http.ResponseWriter, raw string) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err) // an HTTP/1.1 test server always can
	}
	if raw != "" {
		buf.WriteString(raw)
		buf.Flush()
	}
	conn.Close()
}

// serveRaw is the receiver on a bare TCP listener: raw faults are written as
// they are (garbage status lines, cut-off headers), every other attempt is
// answered by ServeHTTP's logic and written with Response.Write.
func (rc *faultReceiver) serveRaw(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			br := bufio.NewReader(conn)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				seq, ok := seqFromPath(req.URL.Path)
				if ok {
					if f, faulty := rc.peek(seq); faulty && (f.raw != "" || f.hangUp) {
						rc.attempt(seq)
						if !rc.checkBody(httptest.NewRecorder(), req, seq) {
							return
						}
						if f.store {
							rc.store(seq)
						}
						conn.Write([]byte(f.raw))
						return
					}
				}
				rec := httptest.NewRecorder()
				rc.ServeHTTP(rec, req)
				resp := rec.Result()
				resp.ContentLength = int64(rec.Body.Len())
				if err := resp.Write(conn); err != nil {
					return
				}
			}
		}()
	}
}

// peek returns the fault the next attempt at seq will get.
func (rc *faultReceiver) peek(seq uint64) (fault, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	fs := rc.faults[seq]
	if n := rc.attempts[seq] + 1; n <= len(fs) {
		return fs[n-1], true
	}
	return fault{}, false
}

// faultUploaderConfig: small enough delays to reach the cap, a Retry-After
// cap to exceed, no rate limit (only backoff delays reach the clock) and a
// StableAfter the step clock never reaches between a success and the next
// failure, so the failure count never resets and the ceilings keep growing.
func faultUploaderConfig() Config {
	return Config{
		BackoffBase:   time.Second,
		BackoffCap:    time.Minute,
		RetryWindow:   4 * time.Second,
		QuickRetry:    500 * time.Millisecond,
		RetryAfterCap: 10 * time.Minute,
		StableAfter:   time.Hour,
		Rate:          noLimit,
	}
}

// runAgainst uploads records 1..n through the real HTTP transport to url
// until each is acknowledged or quarantined, and checks what the receiver
// saw and the delays the loop asked for.
func runAgainst(t *testing.T, rc *faultReceiver, url string, n uint64) {
	t.Helper()
	dir := t.TempDir()
	sp := openSpool(t, SpoolConfig{Dir: dir})
	for s := uint64(1); s <= n; s++ {
		mustPut(t, sp, testRecord(s, faultSize))
	}
	// A short client timeout so a receiver that never answers costs little
	// real time; a timed-out attempt is an ordinary retried failure.
	h, err := NewHTTP(url, &http.Client{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tr := &outcomeTransport{tr: h}
	clk := &stepClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	rnd := backofftest.Seeded(11)
	cfg := faultUploaderConfig()
	logs := &logBuffer{}
	up := New(cfg, sp, tr, clk, rnd, newLogger(logs))

	var permanent []uint64
	for s := uint64(1); s <= n; s++ {
		for _, f := range rc.faults[s] {
			if f.permanent() {
				permanent = append(permanent, s)
				break
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- up.Run(ctx) }()
	// Wait (as a hang guard only) until every record left the spool.
	deadline := time.Now().Add(60 * time.Second)
	for len(sp.Pending()) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	close(rc.done)
	if p := sp.Pending(); len(p) > 0 {
		t.Fatalf("%d records still pending (first %d) after the receiver's faults; uploader %+v\n%s", len(p), p[0].Seq, up.Stats(), logs)
	}

	rc.mu.Lock()
	stored, violations, attempts := slices.Clone(rc.stored), slices.Clone(rc.violations), maps.Clone(rc.attempts)
	duplicates, aborted := rc.duplicates, rc.aborted
	rc.mu.Unlock()
	t.Logf("%d attempts for %d records: %d stored, %d identical re-sends, %d bodies cut off, %d quarantined",
		len(tr.Outcomes()), n, len(stored), duplicates, aborted, len(permanent))
	if len(violations) > 0 {
		t.Fatalf("the receiver saw what it must never see: %q", violations)
	}
	// Every record is delivered exactly once, in sequence order, except
	// those the receiver rejected permanently.
	var want []uint64
	for s := uint64(1); s <= n; s++ {
		if !slices.Contains(permanent, s) {
			want = append(want, s)
		}
	}
	if !slices.Equal(stored, want) {
		t.Fatalf("stored %v, want %v", stored, want)
	}
	// Each fault was met (each record was tried at least once more than it
	// had faults, unless the fault was permanent).
	for s, fs := range rc.faults {
		if s > n {
			continue
		}
		need := len(fs) + 1
		if last := fs[len(fs)-1]; last.permanent() || last.acks {
			need = len(fs)
		}
		if attempts[s] != need {
			t.Errorf("seq %d: %d attempts, want %d (its %d faults, then success)", s, attempts[s], need, len(fs))
		}
	}
	// Quarantined: the permanent rejections and nothing else.
	var q []uint64
	for _, name := range quarantined(t, dir) {
		seq, err := strconv.ParseUint(name[:20], 10, 64)
		if err != nil {
			t.Fatalf("quarantined %s", name)
		}
		q = append(q, seq)
	}
	if !slices.Equal(q, permanent) {
		t.Fatalf("quarantined %v, want exactly the permanently rejected %v", q, permanent)
	}
	if st := up.Stats(); st.Sent != len(want) || st.Quarantined != len(permanent) || st.Corrupt != 0 {
		t.Fatalf("uploader Stats = %+v", st)
	}
	checkBackoff(t, cfg, tr.Outcomes(), rnd, clk)
}

// checkBackoff replays the attempts' outcomes against the backoff's
// contract and checks every random draw and every delay the loop asked of
// its clock: the very first failure, if it got no answer, is retried
// within [0, QuickRetry]; every other retry is uniform over
// [0, max(RetryWindow, min(Cap, Base·2^n))] with n the failures so far
// (full jitter with the outage window as a floor; StableAfter is never
// reached here), and a Retry-After, capped at RetryAfterCap, wins when it
// is longer.
func checkBackoff(t *testing.T, cfg Config, outs []outcome, rnd *backofftest.Rand, clk *stepClock) {
	t.Helper()
	bo := backoff.Backoff{Base: cfg.BackoffBase, Cap: cfg.BackoffCap}
	asked, drawn := rnd.Asked(), rnd.Drawn()
	var wantSleeps []time.Duration
	reachable, failures, i := true, 0, 0
	var ceilings []time.Duration
	reachedCap, low, high := false, false, false
	for _, o := range outs {
		if o.err == nil || isPermanent(o.err) {
			reachable = true
			continue
		}
		ceil := max(cfg.RetryWindow, bo.Ceiling(failures))
		if reachable && failures == 0 && !answered(o.err) {
			ceil = cfg.QuickRetry
		}
		reachable = false
		failures++
		if i >= len(asked) {
			t.Fatalf("failure %d (seq %d: %v) drew no random delay", failures, o.seq, o.err)
		}
		if asked[i] != int64(ceil)+1 {
			t.Fatalf("failure %d (seq %d: %v): delay drawn from [0, %v], want [0, %v]", failures, o.seq, o.err, time.Duration(asked[i]-1), ceil)
		}
		d := time.Duration(drawn[i])
		i++
		ceilings = append(ceilings, ceil)
		reachedCap = reachedCap || ceil == cfg.BackoffCap
		low, high = low || d < ceil/4, high || d > 3*ceil/4
		if se := (*StatusError)(nil); errors.As(o.err, &se) && se.RetryAfter > 0 {
			ra := min(se.RetryAfter, cfg.RetryAfterCap)
			d = max(d, ra)
		}
		if d > 0 {
			wantSleeps = append(wantSleeps, d)
		}
	}
	if i != len(asked) {
		t.Fatalf("%d random draws for %d failures", len(asked), i)
	}
	if got := clk.Asked(); !slices.Equal(got, wantSleeps) {
		t.Fatalf("the loop slept %v\nwant          %v", got, wantSleeps)
	}
	if !reachedCap || !low || !high {
		t.Fatalf("ceilings %v: want them to grow to the cap %v with draws spread over each range", ceilings, cfg.BackoffCap)
	}
}

// TestFaultReceiverHTTP: an httptest receiver that fails with every status
// and every broken connection an HTTP server can produce.
func TestFaultReceiverHTTP(t *testing.T) {
	garbage := make([]byte, 100<<10)
	g := rand.New(rand.NewPCG(5, 5))
	for i := range garbage {
		garbage[i] = byte(g.Uint32())
	}
	faults := map[uint64][]fault{
		1:  {{code: 500}},
		2:  {{code: 503}, {code: 503, retryAfter: "7"}},
		3:  {{code: 429, retryAfter: "3600"}}, // capped at RetryAfterCap
		4:  {{code: 500, body: garbage}},
		5:  {{code: 502, body: []byte("<html><body>Bad Gateway</body></html>")}, {code: 504}},
		6:  {{slow: true}},              // never answered: the client times out
		7:  {{slow: true, store: true}}, // stored, but the answer never comes
		8:  {{midRequest: true}},
		9:  {{store: true, raw: "HTTP/1.1 201 Cre"}}, // stored, answer cut mid-status-line
		10: {{hangUp: true}},
		11: {{code: http.StatusForbidden, body: []byte("unknown device\n")}},
		12: {{store: true, code: 503, retryAfter: "1"}}, // stored, then told to retry
		13: {{code: http.StatusUnprocessableEntity, body: []byte("media hash mismatch")}},
		14: {{code: 404}, {code: http.StatusTemporaryRedirect}}, // neither is permanent
		16: {{code: http.StatusConflict, body: []byte("replay: seq 16 <= 20")}},
		17: {{code: 500}, {code: 500}, {code: 500}, {code: 500}, {code: 500}, {code: 500}, {code: 500}, {code: 500}},
		18: {{store: true, acks: true, raw: "HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\nshort"}}, // acknowledged, body cut
		19: {{code: http.StatusRequestEntityTooLarge}},
		21: {{code: http.StatusBadRequest, body: []byte("malformed\x00bundle\r\nsecond line")}},
		22: {{midRequest: true}, {hangUp: true}, {code: 503, retryAfter: "Wed, 21 Oct 2015 07:28:00 GMT"}}, // a date long past
		23: {{code: http.StatusUnauthorized, body: []byte("client certificate required")}},                 // a fleet CA not yet set up: retried
	}
	rc := newFaultReceiver(faults)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	runAgainst(t, rc, srv.URL, 24)
}

// TestFaultReceiverRawTCP: a bare TCP listener answers with garbage status
// lines, cut-off headers and bytes that are not HTTP at all.
func TestFaultReceiverRawTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	date := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	faults := map[uint64][]fault{
		1:  {{raw: "HTTP/1.1 2O1 Created\r\n\r\n"}},
		2:  {{raw: "\x00\xff\xfegarbage\x7f\r\n\r\n"}, {raw: "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"}},
		3:  {{store: true, raw: "HTTP/1.1 201\r\nContent-Le"}}, // stored, headers cut
		4:  {{raw: "HTTP/1.1 999 What\r\nContent-Length: 3\r\n\r\nabc"}},
		5:  {{raw: "HTTP/1.1 201 Created\r\nContent-Length: nope\r\n\r\n"}},
		6:  {{store: true, acks: true, raw: "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}}, // acknowledged, body garbage
		7:  {{raw: "HTTP/1.1 100 Continue\r\n\r\n"}},
		8:  {{raw: ""}, {raw: "\r\n\r\n"}},
		9:  {{raw: "HTTP/1.1 503 Busy\r\nRetry-After: soon\r\nContent-Length: 0\r\n\r\n"}},
		10: {{raw: "HTTP/1.1 429 Slow Down\r\nRetry-After: 9999999999\r\nContent-Length: 0\r\n\r\n"}}, // overflows; capped
		11: {{raw: "HTTP/1.1 503 Busy\r\nDate: " + date.Format(http.TimeFormat) + "\r\nRetry-After: " +
			date.Add(2*time.Minute).Format(http.TimeFormat) + "\r\nContent-Length: 0\r\n\r\n"}}, // an HTTP-date: 2 minutes
		12: {{code: 403, raw: "HTTP/1.1 403 Forbidden\r\nContent-Length: 13\r\n\r\nunknown\x00dev\n\n"}},
		13: {{raw: "HTTP/1.1 500 " + strings.Repeat("x", 70<<10) + "\r\n\r\n"}},
		15: {{code: 422, raw: "HTTP/1.1 422 Unprocessable Entity\r\nContent-Length: 1\r\n\r\n"}}, // body shorter than announced
	}
	// raw "" is a connection dropped after the whole request was read.
	for s, fs := range faults {
		for i := range fs {
			if fs[i].raw == "" {
				fs[i].hangUp = true
			}
		}
		faults[s] = fs
	}
	rc := newFaultReceiver(faults)
	go rc.serveRaw(ln)
	runAgainst(t, rc, "http://"+ln.Addr().String(), 16)
}

// ---------------------------------------------------------------------------
// Spool files damaged while the device was off

// TestFaultCorruptSpoolFiles damages a stopped spool every way a disk, a
// person or a bad tool can, opens it, and uploads: every damaged file is
// quarantined with a reason and counted, none of its bytes are ever sent,
// and every intact record is delivered.
func TestFaultCorruptSpoolFiles(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 99))
	dir := t.TempDir()
	sp := openSpool(t, SpoolConfig{Dir: dir})
	const n = 20
	for s := uint64(1); s <= n; s++ {
		mustPut(t, sp, testRecord(s, 700+int(s)*13))
	}
	path := func(s uint64) string { return filepath.Join(dir, fileName(entryFor(s))) }
	read := func(s uint64) []byte {
		b, err := os.ReadFile(path(s))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// withCRC gives a damaged body its right checksum again, so only the
	// damage itself can give it away.
	withCRC := func(body []byte) []byte {
		return binary.BigEndian.AppendUint32(slices.Clone(body), crc32.Checksum(body, castagnoli))
	}

	bad := map[string]string{} // file name -> what was done to it
	// Random bit flips, one to three of them, anywhere in the file.
	for _, s := range []uint64{2, 5, 11} {
		b := read(s)
		// Distinct bits: flipping one twice would undo the damage.
		for _, bit := range rng.Perm(8 * len(b))[:1+rng.IntN(3)] {
			b[bit/8] ^= 1 << (bit % 8)
		}
		write(fileName(entryFor(s)), b)
		bad[fileName(entryFor(s))] = "bit flips"
	}
	// Truncated at a random length, and to nothing.
	{
		b := read(7)
		write(fileName(entryFor(7)), b[:rng.IntN(len(b))])
		bad[fileName(entryFor(7))] = "truncated"
		write(fileName(entryFor(8)), nil)
		bad[fileName(entryFor(8))] = "zero length"
	}
	// Headers that are wrong though the checksum is right: another version,
	// another magic, a data length that disagrees with the file.
	{
		b := read(9)
		b[4] = 2
		write(fileName(entryFor(9)), withCRC(b[:len(b)-4]))
		bad[fileName(entryFor(9))] = "version 2"
		b = read(10)
		copy(b, "KFSQ")
		write(fileName(entryFor(10)), withCRC(b[:len(b)-4]))
		bad[fileName(entryFor(10))] = "bad magic"
		b = read(12)
		body := b[:len(b)-4]
		body = body[:len(body)-1] // one data byte short of its length
		write(fileName(entryFor(12)), withCRC(body))
		bad[fileName(entryFor(12))] = "data length"
	}
	// An intact file renamed to another sequence number, and an intact copy
	// under a third name.
	{
		if err := os.Rename(path(13), filepath.Join(dir, fileName(entryFor(31)))); err != nil {
			t.Fatal(err)
		}
		bad[fileName(entryFor(31))] = "renamed from 13"
		write(fileName(entryFor(33)), read(14))
		bad[fileName(entryFor(33))] = "copy of 14"
	}
	// Garbage under record names, and a zero-length file with a record name.
	for _, s := range []uint64{41, 42} {
		g := make([]byte, 1+rng.IntN(4000))
		for i := range g {
			g[i] = byte(rng.Uint32())
		}
		write(fileName(entryFor(s)), g)
		bad[fileName(entryFor(s))] = "garbage"
	}
	write(fileName(entryFor(43)), nil)
	bad[fileName(entryFor(43))] = "zero length, never a record"
	// Garbage that does not even look like a record: left alone, counted.
	write("core", []byte("\x7fELF garbage"))
	write("notes.txt", nil)
	if err := os.Mkdir(filepath.Join(dir, "junk.kfr"), 0o700); err != nil {
		t.Fatal(err)
	}
	unknown := []string{"core", "junk.kfr", "notes.txt"}

	good := []uint64{1, 3, 4, 6, 14, 15, 16, 17, 18, 19, 20}
	goodData := map[string]bool{}
	for _, s := range good {
		goodData[string(testRecord(s, 700+int(s)*13).Data)] = true
	}

	logs := &logBuffer{}
	var (
		sent []uint64
		mu   sync.Mutex
	)
	var st SpoolStats
	synctest.Test(t, func(t *testing.T) {
		sp := openSpool(t, SpoolConfig{Dir: dir, Logger: newLogger(logs)})
		st = sp.Stats()
		tr := transportFunc(func(_ context.Context, r Record) error {
			mu.Lock()
			defer mu.Unlock()
			if !goodData[string(r.Data)] {
				t.Errorf("sent %d bytes as seq %d that are not an intact record", len(r.Data), r.Seq)
			}
			sent = append(sent, r.Seq)
			return nil
		})
		up := New(testConfig(), sp, tr, clock.System{}, backofftest.Seeded(1), nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- up.Run(ctx) }()
		settle(time.Hour)
		cancel()
		<-done
		if p := sp.Pending(); len(p) != 0 {
			t.Errorf("%d records still pending", len(p))
		}
	})
	if !slices.Equal(sent, good) {
		t.Fatalf("sent %v, want the intact records %v", sent, good)
	}
	if st.Corrupt != len(bad) || st.Quarantined != len(bad) || st.Pending != len(good) || st.Unknown != len(unknown) {
		t.Fatalf("Stats at open = %+v, want %d corrupt and quarantined, %d pending, %d unknown", st, len(bad), len(good), len(unknown))
	}
	var names []string
	for name := range bad {
		names = append(names, name)
	}
	slices.Sort(names)
	if q := quarantined(t, dir); !slices.Equal(q, names) {
		t.Fatalf("quarantine holds %v\nwant %v", q, names)
	}
	for _, name := range names {
		reason, err := os.ReadFile(filepath.Join(dir, QuarantineDir, name+".reason"))
		if err != nil || !strings.Contains(string(reason), "corrupt") {
			t.Errorf("%s (%s): reason %q, %v", name, bad[name], reason, err)
		}
	}
	want := append([]string{QuarantineDir}, unknown...)
	slices.Sort(want)
	if got := dirNames(t, dir); !slices.Equal(got, want) {
		t.Fatalf("spool dir after the upload = %v, want %v", got, want)
	}
	if n := logs.Count("ignoring unknown file"); n != len(unknown) {
		t.Fatalf("%d unknown files logged, want %d", n, len(unknown))
	}
}

// transportFunc adapts a function to Transport.
type transportFunc func(context.Context, Record) error

func (f transportFunc) Send(ctx context.Context, r Record) error { return f(ctx, r) }
