//go:build unix

package uploader

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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
	"time"

	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/provenance"
)

// The crash test re-executes this test binary as a child that spools and
// uploads records, kills it with SIGKILL at random points, restarts it, and
// checks what a receiver in the parent saw. Real files, real fsync, real
// SIGKILL.
const (
	crashChildEnv = "KEYFRAME_UPLOADER_CRASH_CHILD" // "1" in the child
	crashDirEnv   = "KEYFRAME_UPLOADER_CRASH_DIR"
	crashURLEnv   = "KEYFRAME_UPLOADER_CRASH_URL"
	crashFromEnv  = "KEYFRAME_UPLOADER_CRASH_FROM"  // first sequence number to put
	crashCountEnv = "KEYFRAME_UPLOADER_CRASH_COUNT" // records to put; 0 = drain and exit
	crashSeedEnv  = "KEYFRAME_UPLOADER_CRASH_SEED"  // optional, to replay a run

	crashRounds   = 20
	crashPerChild = 200
)

// crashRecord is the record for seq: its body starts with seq and is
// otherwise a function of seq alone, so the receiver can tell a torn or
// mixed-up body from the real one.
func crashRecord(seq uint64) Record {
	r := rand.New(rand.NewPCG(seq, 0xc0ffee))
	data := make([]byte, 8+256+r.IntN(24<<10))
	binary.BigEndian.PutUint64(data, seq)
	for i := 8; i < len(data); i++ {
		data[i] = byte(r.Uint32())
	}
	kind := provenance.KindStart
	if seq%2 == 1 {
		kind = provenance.KindEnd
	}
	return Record{Seq: seq, Event: fmt.Sprintf("crash-%d", seq/2), Kind: kind, Data: data}
}

// TestCrashChild is the child process of TestCrashSIGKILL.
func TestCrashChild(t *testing.T) {
	if os.Getenv(crashChildEnv) != "1" {
		t.Skip("helper process for TestCrashSIGKILL; runs only as its child")
	}
	from, err1 := strconv.ParseUint(os.Getenv(crashFromEnv), 10, 64)
	count, err2 := strconv.ParseUint(os.Getenv(crashCountEnv), 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("bad child environment: %v %v", err1, err2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	sp, err := OpenSpool(SpoolConfig{Dir: os.Getenv(crashDirEnv), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewHTTP(os.Getenv(crashURLEnv), &http.Client{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	up := New(Config{
		BackoffBase:   time.Millisecond,
		BackoffCap:    20 * time.Millisecond,
		RetryWindow:   5 * time.Millisecond,
		QuickRetry:    5 * time.Millisecond,
		RetryAfterCap: 50 * time.Millisecond,
		StableAfter:   100 * time.Millisecond,
		Rate:          1e6,
	}, sp, tr, clock.System{}, rand.New(rand.NewPCG(from, count)), log)
	// Never outlive a parent that died without killing us.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- up.Run(ctx) }()

	say := func(format string, args ...any) {
		// Unbuffered: once the line is written, the parent can read it even
		// if we are killed right after.
		if _, err := fmt.Fprintf(os.Stdout, format+"\n", args...); err != nil {
			t.Fatal(err)
		}
	}
	say("ready")
	for seq := from; seq < from+count; seq++ {
		if err := sp.Put(crashRecord(seq)); err != nil {
			t.Fatalf("put %d: %v", seq, err)
		}
		say("put %d", seq) // only after Put returned: the record is durable
	}
	if count > 0 {
		say("all put")
		<-ctx.Done() // upload until killed
		return
	}
	for len(sp.Pending()) > 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("spool did not drain: %d pending, uploader %+v", len(sp.Pending()), up.Stats())
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	<-done
	say("drained %+v", up.Stats())
}

// crashReceiver checks every complete body against crashRecord and records
// the sequence numbers it acknowledged.
type crashReceiver struct {
	mu         sync.Mutex
	rnd        *rand.Rand
	acked      map[uint64]int // 2xx replies per sequence number
	torn       []string       // complete bodies that were not the expected record
	aborted    int            // bodies cut off because the client died mid-request
	duplicates int            // identical re-sends (ack lost to a kill), answered 200
	refused    int            // injected 503s
}

func (c *crashReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/events/"), "/")
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		// Content-Length not reached: the sender died mid-request. A
		// receiver stores nothing; this is not a torn record sent.
		c.aborted++
		http.Error(w, "incomplete body", http.StatusBadRequest)
		return
	}
	if r.Method != http.MethodPut || len(parts) != 2 || r.Header.Get("Content-Type") != provenance.BundleContentType {
		c.torn = append(c.torn, fmt.Sprintf("bad request %s %s", r.Method, r.URL.Path))
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if len(body) < 8 {
		c.torn = append(c.torn, fmt.Sprintf("%d-byte body for %s", len(body), r.URL.Path))
		http.Error(w, "short body", http.StatusUnprocessableEntity)
		return
	}
	seq := binary.BigEndian.Uint64(body)
	want := crashRecord(seq)
	if !bytes.Equal(body, want.Data) || parts[0] != want.Event || parts[1] != want.Kind {
		c.torn = append(c.torn, fmt.Sprintf("seq %d at %s: %d bytes, want %d intact bytes at %s/%s",
			seq, r.URL.Path, len(body), len(want.Data), want.Event, want.Kind))
		http.Error(w, "body is not the record", http.StatusUnprocessableEntity)
		return
	}
	if c.rnd.IntN(20) == 0 {
		c.refused++
		w.Header().Set("Retry-After", "0")
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
		return
	}
	c.acked[seq]++
	if c.acked[seq] > 1 {
		c.duplicates++
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// crashChild is one run of the child process.
type crashChild struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	ready  chan struct{}
	lines  chan struct{} // closed when stdout is exhausted
	puts   []uint64
	allPut bool
	out    []string
}

func startCrashChild(t *testing.T, dir, url string, from, count uint64) *crashChild {
	t.Helper()
	c := &crashChild{ready: make(chan struct{}), lines: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1", "-test.timeout=60s")
	c.cmd.Env = append(os.Environ(),
		crashChildEnv+"=1", crashDirEnv+"="+dir, crashURLEnv+"="+url,
		crashFromEnv+"="+strconv.FormatUint(from, 10), crashCountEnv+"="+strconv.FormatUint(count, 10))
	c.cmd.Stderr = &c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
	})
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		readyOnce := sync.OnceFunc(func() { close(c.ready) })
		defer readyOnce()
		for sc.Scan() {
			line := sc.Text()
			c.out = append(c.out, line)
			switch {
			case line == "ready":
				readyOnce()
			case line == "all put":
				c.allPut = true
			case strings.HasPrefix(line, "put "):
				n, err := strconv.ParseUint(strings.TrimPrefix(line, "put "), 10, 64)
				if err == nil {
					c.puts = append(c.puts, n)
				}
			}
		}
	}()
	return c
}

// wait reaps the child after its stdout is exhausted.
func (c *crashChild) wait() error {
	<-c.lines
	return c.cmd.Wait()
}

func TestCrashSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test re-executes the test binary 21 times; skipped in -short mode")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s: %v", crashSeedEnv, err)
		}
	}
	t.Logf("seed %d (replay with %s=%d)", seed, crashSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	recv := &crashReceiver{rnd: rand.New(rand.NewPCG(seed, 2)), acked: map[uint64]int{}}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	dir := filepath.Join(t.TempDir(), "spool")

	put := map[uint64]bool{} // reported by a child after Put returned
	next := uint64(1)
	midPut := 0
	for round := range crashRounds {
		c := startCrashChild(t, dir, srv.URL, next, crashPerChild)
		select {
		case <-c.ready:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: child not ready:\n%s", round, c.stderr.String())
		}
		// Kill somewhere in the first ~150 ms of work: mid-Put, mid-upload,
		// between the two, or (rarely) once all is put.
		time.Sleep(time.Duration(rng.Int64N(int64(150 * time.Millisecond))))
		if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("round %d: kill: %v", round, err)
		}
		err := c.wait()
		ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended by itself (%v), not by SIGKILL:\n%s\n%s", round, err, strings.Join(c.out, "\n"), c.stderr.String())
		}
		for _, s := range c.puts {
			put[s] = true
			next = max(next, s+1)
		}
		if !c.allPut {
			midPut++
		}
		t.Logf("round %d: %d records put before SIGKILL", round, len(c.puts))
	}

	// A last child drains whatever is left.
	c := startCrashChild(t, dir, srv.URL, next, 0)
	done := make(chan error, 1)
	go func() { done <- c.wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("draining child failed: %v\n%s", err, c.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("draining child did not finish:\n%s", c.stderr.String())
	}
	if !slices.ContainsFunc(c.out, func(l string) bool { return strings.HasPrefix(l, "drained") }) {
		t.Fatalf("draining child did not report draining: %q\n%s", c.out, c.stderr.String())
	}

	recv.mu.Lock()
	defer recv.mu.Unlock()
	t.Logf("%d records put, %d acknowledged, %d duplicates (ack lost to a kill), %d aborted uploads, %d injected 503s, %d of %d rounds killed mid-put",
		len(put), len(recv.acked), recv.duplicates, recv.aborted, recv.refused, midPut, crashRounds)

	// No torn or mixed-up record was ever sent.
	if len(recv.torn) > 0 {
		t.Fatalf("%d bodies were not intact records, e.g. %s", len(recv.torn), recv.torn[0])
	}
	// Nothing durable was lost: every record whose Put returned reached the
	// receiver.
	var lost []uint64
	for s := range put {
		if recv.acked[s] == 0 {
			lost = append(lost, s)
		}
	}
	slices.Sort(lost)
	if len(lost) > 0 {
		t.Fatalf("%d records were put but never acknowledged: %v", len(lost), lost[:min(len(lost), 20)])
	}
	// The receiver only saw records that were put (at most the one in each
	// round whose "put" line the kill cut off).
	for s := range recv.acked {
		if !put[s] && s > next {
			t.Fatalf("receiver acknowledged seq %d that no child put", s)
		}
	}
	// The spool is empty: acknowledged records were removed, none was
	// quarantined (a kill never leaves a torn record behind the rename), and
	// leftover temp files are gone.
	sp, err := OpenSpool(SpoolConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if st := sp.Stats(); st.Pending != 0 || st.Quarantined != 0 || st.TempRemoved != 0 {
		t.Fatalf("spool after the final drain: %+v", st)
	}
	if q := dirNames(t, filepath.Join(dir, QuarantineDir)); len(q) != 0 {
		t.Fatalf("quarantine holds %v", q)
	}
	// The test must have exercised crashes during work.
	if len(put) < crashRounds || midPut < crashRounds/2 {
		t.Fatalf("too little work was interrupted: %d records, %d rounds killed mid-put", len(put), midPut)
	}
}
