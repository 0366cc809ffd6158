package receiver

import (
	"bytes"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
)

// TestSequenceRange: a record at or above 2^63 is refused (400 seq_range),
// as is a device's first record at or above 2^62; a refused record stores
// nothing and the device's next plausible record is stored.
func TestSequenceRange(t *testing.T) {
	e := newEnv(t, Options{})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-first-high", provenance.KindStart, MaxFirstSeq+1), http.StatusBadRequest)
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, MaxFirstSeq), http.StatusCreated)
	for _, seq := range []uint64{1 << 63, 1<<64 - 1} {
		e.mustUpload(d.record(t, "ev-high-"+strconv.FormatUint(seq, 10), provenance.KindStart, seq), http.StatusBadRequest)
	}
	e.mustUpload(d.record(t, "ev-2", provenance.KindStart, MaxFirstSeq+1), http.StatusCreated)
	st := e.srv.Stats()
	if st.Stored != 2 || st.Rejected[ReasonSeqRange] != 3 {
		t.Errorf("stored %d, seq_range %d; want 2 and 3", st.Stored, st.Rejected[ReasonSeqRange])
	}
}

// TestSequenceJump: a record jumping more than SeqJumpBase past the
// device's highest stored seq is answered 429 with a Retry-After (the
// uploader keeps and retries it, never quarantines it), and nothing
// changes: the device's next records are stored. The allowance grows by
// SeqJumpPerSecond per second since the highest stored record, so the same
// record is stored once enough time has passed.
func TestSequenceJump(t *testing.T) {
	clk := &stepClock{t: testNow}
	e := newEnv(t, Options{Clock: clk})
	d := newDevice(t)
	e.enroll(d, "alice")
	e.mustUpload(d.record(t, "ev-1", provenance.KindStart, 10), http.StatusCreated)
	e.mustUpload(d.record(t, "ev-gap", provenance.KindStart, 10+SeqJumpBase), http.StatusCreated) // the largest jump always allowed

	jump := d.record(t, "ev-jump", provenance.KindStart, 10+2*SeqJumpBase+10*SeqJumpPerSecond)
	code, h := e.putHeader(jump)
	if code != http.StatusTooManyRequests {
		t.Fatalf("jump: %d, want 429", code)
	}
	if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra != 10 {
		t.Errorf("jump: Retry-After %q, want 10 (seconds until the allowance covers it)", h.Get("Retry-After"))
	}
	// The refusal locks nothing: the next record in sequence is stored.
	e.mustUpload(d.record(t, "ev-next", provenance.KindStart, 11+SeqJumpBase), http.StatusCreated)
	clk.add(9 * time.Second)
	e.mustUpload(jump, http.StatusTooManyRequests)
	clk.add(time.Second)
	e.mustUpload(jump, http.StatusCreated)
	if n := e.srv.Stats().Rejected[ReasonSeqJump]; n != 2 {
		t.Errorf("seq_jump refusals %d, want 2", n)
	}
}

// putHeader uploads r and returns the status and the reply's header.
func (e *testEnv) putHeader(r *record) (int, http.Header) {
	e.t.Helper()
	code, _, h := e.do(http.MethodPut, r.path(), bytes.NewReader(r.body))
	return code, h
}
