package uploader

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyframe-cam/keyframe/internal/backoff/backofftest"
	"github.com/keyframe-cam/keyframe/internal/clock"
	"github.com/keyframe-cam/keyframe/provenance"
)

// clipRecord is a record of kind of event "clip", with testRecord's data
// (so fakeTransport accepts it).
func clipRecord(seq uint64, kind string, size int) Record {
	r := testRecord(seq, size)
	r.Event, r.Kind = "clip", kind
	return r
}

// clipSize is the size clipRecord(seq, kind, n) takes on disk.
func clipSize(seq uint64, kind string, n int) int64 {
	r := clipRecord(seq, kind, n)
	return int64(len(encodeFile(&r)))
}

// TestSpoolSegmentBudgetEvictsOldestSegments: segments over their budget
// evict the oldest segments, each deleted (not quarantined), logged and
// counted for their event; start and end records stay, whatever their age.
func TestSpoolSegmentBudgetEvictsOldestSegments(t *testing.T) {
	const n = 1000
	dir := t.TempDir()
	logs := &logBuffer{}
	sp := openSpool(t, SpoolConfig{Dir: dir, SegmentMaxBytes: 3 * clipSize(2, provenance.KindSegment, n), Logger: newLogger(logs)})
	mustPut(t, sp, clipRecord(1, "start", n))
	for seq := uint64(2); seq <= 7; seq++ {
		mustPut(t, sp, clipRecord(seq, provenance.KindSegment, n))
	}
	mustPut(t, sp, clipRecord(8, "end", n))

	if got, want := seqs(sp.Pending()), []uint64{1, 5, 6, 7, 8}; !slices.Equal(got, want) {
		t.Fatalf("pending %v, want %v (start, the 3 newest segments, end)", got, want)
	}
	st := sp.Stats()
	if st.Evicted != 3 || st.Segments != 3 || st.SegmentBytes != 3*clipSize(2, provenance.KindSegment, n) || st.Quarantined != 0 || st.Refused != 0 {
		t.Errorf("stats %+v, want 3 evicted, 3 segments pending, nothing quarantined or refused", st)
	}
	if got := sp.DroppedSegments("clip"); got != 3 {
		t.Errorf("DroppedSegments(clip) = %d, want 3", got)
	}
	if got := sp.DroppedSegments("other"); got != 0 {
		t.Errorf("DroppedSegments(other) = %d, want 0", got)
	}
	if got := logs.Count("oldest clip segment deleted, not delivered"); got != 3 {
		t.Errorf("%d eviction log lines, want 3:\n%s", got, logs)
	}
	for _, seq := range []uint64{2, 3, 4} {
		if !strings.Contains(logs.String(), fmt.Sprintf("seq=%d event=clip", seq)) {
			t.Errorf("no log line names evicted segment %d:\n%s", seq, logs)
		}
	}
	if q := quarantined(t, dir); len(q) != 0 {
		t.Errorf("evicted segments quarantined: %v", q)
	}
	// The files went, and a reopened spool agrees.
	sp2 := openSpool(t, SpoolConfig{Dir: dir, SegmentMaxBytes: 3 * clipSize(2, provenance.KindSegment, n)})
	if got, want := seqs(sp2.Pending()), []uint64{1, 5, 6, 7, 8}; !slices.Equal(got, want) {
		t.Fatalf("reopened: pending %v, want %v", got, want)
	}
	if st := sp2.Stats(); st.Segments != 3 || st.SegmentBytes != 3*clipSize(2, provenance.KindSegment, n) {
		t.Errorf("reopened: %d segments of %d bytes, want 3 of %d", st.Segments, st.SegmentBytes, 3*clipSize(2, provenance.KindSegment, n))
	}
}

// TestSpoolBudgetsAreSeparate: segments do not count against MaxBytes, and
// records do not count against the segment budget: a full record bound
// refuses a record (the policy) and leaves the segments alone, a full
// segment budget never touches a record, even under drop-oldest.
func TestSpoolBudgetsAreSeparate(t *testing.T) {
	const n = 1000
	for _, policy := range []Policy{RefuseNew, DropOldest} {
		t.Run(string(policy), func(t *testing.T) {
			sp := openSpool(t, SpoolConfig{Dir: t.TempDir(), Policy: policy,
				MaxBytes: 2 * clipSize(1, "start", n), SegmentMaxBytes: 2 * clipSize(2, provenance.KindSegment, n)})
			mustPut(t, sp, clipRecord(1, "start", n))
			for seq := uint64(2); seq <= 10; seq++ { // 4.5 times MaxBytes of segments
				mustPut(t, sp, clipRecord(seq, provenance.KindSegment, n))
			}
			mustPut(t, sp, clipRecord(11, "end", n))
			if got, want := seqs(sp.Pending()), []uint64{1, 9, 10, 11}; !slices.Equal(got, want) {
				t.Fatalf("pending %v, want %v", got, want)
			}
			// The record bound is full: the policy applies to records only.
			err := sp.Put(Record{Seq: 12, Event: "next", Kind: "start", Data: testRecord(12, n).Data})
			st := sp.Stats()
			switch policy {
			case RefuseNew:
				if !errors.Is(err, ErrFull) || st.Refused != 1 {
					t.Fatalf("Put over the record bound = %v (refused %d), want ErrFull", err, st.Refused)
				}
				if got, want := seqs(sp.Pending()), []uint64{1, 9, 10, 11}; !slices.Equal(got, want) {
					t.Errorf("pending %v, want %v", got, want)
				}
			case DropOldest:
				if err != nil || st.Dropped != 1 {
					t.Fatalf("Put over the record bound = %v (dropped %d), want the oldest record dropped", err, st.Dropped)
				}
				if got, want := seqs(sp.Pending()), []uint64{9, 10, 11, 12}; !slices.Equal(got, want) {
					t.Errorf("pending %v, want %v (record 1 dropped, segments kept)", got, want)
				}
			}
			if st.Evicted != 7 || st.Segments != 2 {
				t.Errorf("evicted %d, %d segments pending; want 7 and 2", st.Evicted, st.Segments)
			}
		})
	}
}

// TestSpoolRefusesSegmentOverBudget: a segment larger than the whole budget
// is refused (ErrFull), counted for its event and logged; the pending
// segments stay.
func TestSpoolRefusesSegmentOverBudget(t *testing.T) {
	logs := &logBuffer{}
	sp := openSpool(t, SpoolConfig{Dir: t.TempDir(), SegmentMaxBytes: 4000, Logger: newLogger(logs)})
	mustPut(t, sp, clipRecord(1, provenance.KindSegment, 1000))
	err := sp.Put(clipRecord(2, provenance.KindSegment, 4000))
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "segment budget") {
		t.Fatalf("Put of a segment over the budget = %v, want ErrFull naming the segment budget", err)
	}
	st := sp.Stats()
	if st.Refused != 1 || st.Evicted != 0 || st.Segments != 1 {
		t.Errorf("stats %+v, want 1 refused, none evicted, 1 segment pending", st)
	}
	if sp.DroppedSegments("clip") != 1 {
		t.Errorf("DroppedSegments = %d, want 1", sp.DroppedSegments("clip"))
	}
	if logs.Count("clip segment refused") != 1 {
		t.Errorf("refusal not logged:\n%s", logs)
	}
}

// TestSpoolNextPutsRecordsBeforeSegments: Next hands out every pending
// record other than a segment first, in sequence order, then the segments
// in sequence order.
func TestSpoolNextPutsRecordsBeforeSegments(t *testing.T) {
	sp := openSpool(t, SpoolConfig{Dir: t.TempDir()})
	kinds := map[uint64]string{1: "start", 2: provenance.KindSegment, 3: provenance.KindSegment, 4: "end", 5: "start", 6: provenance.KindSegment, 7: "rotate"}
	for seq := uint64(1); seq <= 7; seq++ {
		mustPut(t, sp, clipRecord(seq, kinds[seq], 100))
	}
	var got []uint64
	for {
		e, ok := sp.Next()
		if !ok {
			break
		}
		got = append(got, e.Seq)
		if err := sp.Ack(e); err != nil {
			t.Fatal(err)
		}
		if e.Seq == 4 {
			mustPut(t, sp, clipRecord(8, "end", 100)) // arrives while segments wait
		}
	}
	if want := []uint64{1, 4, 5, 7, 8, 2, 3, 6}; !slices.Equal(got, want) {
		t.Errorf("Next order %v, want %v", got, want)
	}
}

// TestSpoolEvictionSparesSegmentInFlight: the segment being sent is evicted
// last; if it is evicted and then acknowledged, it is delivered after all
// and no longer counted as dropped.
func TestSpoolEvictionSparesSegmentInFlight(t *testing.T) {
	const n = 1000
	s := clipSize(2, provenance.KindSegment, n)
	sp := openSpool(t, SpoolConfig{Dir: t.TempDir(), SegmentMaxBytes: 2 * s})
	mustPut(t, sp, clipRecord(2, provenance.KindSegment, n))
	mustPut(t, sp, clipRecord(3, provenance.KindSegment, n))
	e, _ := sp.Next()
	if _, err := sp.Load(e); err != nil { // 2 is in flight
		t.Fatal(err)
	}
	mustPut(t, sp, clipRecord(4, provenance.KindSegment, n))
	if got, want := seqs(sp.Pending()), []uint64{2, 4}; !slices.Equal(got, want) {
		t.Fatalf("pending %v, want %v (3 evicted, not 2 in flight)", got, want)
	}
	mustPut(t, sp, clipRecord(5, provenance.KindSegment, 2*n)) // needs the whole budget
	if got, want := seqs(sp.Pending()), []uint64{5}; !slices.Equal(got, want) {
		t.Fatalf("pending %v, want %v", got, want)
	}
	if got := sp.DroppedSegments("clip"); got != 3 {
		t.Fatalf("dropped %d, want 3", got)
	}
	if err := sp.Ack(e); err != nil { // 2 was delivered all the same
		t.Fatalf("Ack of the evicted in-flight segment: %v", err)
	}
	if got := sp.DroppedSegments("clip"); got != 2 {
		t.Errorf("dropped %d after the in-flight segment's ack, want 2", got)
	}
	if err := sp.Ack(e); !errors.Is(err, ErrNotPending) {
		t.Errorf("second Ack = %v, want ErrNotPending", err)
	}
}

// TestSpoolPressureClipLosesOnlySegments is the spool pressure test of
// clips: an event's clip is larger than the segment budget and the link
// (capped at 1 kB/s) is slower than the clip. Only segments are lost, each
// counted and logged against the event; the start and end records (which
// carry the thumbnails) all arrive, ahead of the segments still waiting.
func TestSpoolPressureClipLosesOnlySegments(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			seg      = 2000 // bytes of a segment, one a second: twice the link
			segments = 30
		)
		logs := &logBuffer{}
		sp := openSpool(t, SpoolConfig{Dir: t.TempDir(), Logger: newLogger(logs),
			SegmentMaxBytes: 4 * clipSize(2, provenance.KindSegment, seg)})
		tr := &fakeTransport{script: func(uint64, int) error { return nil }}
		cfg := testConfig()
		cfg.MaxRate = 1000
		up := New(cfg, sp, tr, clock.System{}, backofftest.Seeded(1), nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- up.Run(ctx) }()

		mustPut(t, sp, clipRecord(1, "start", 500))
		for i := uint64(0); i < segments; i++ {
			time.Sleep(time.Second)
			mustPut(t, sp, clipRecord(2+i, provenance.KindSegment, seg))
		}
		end := uint64(2 + segments)
		mustPut(t, sp, clipRecord(end, "end", 500))
		endPut := time.Now()
		settle(time.Hour)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v", err)
		}

		var sentSegs []uint64
		var endAt time.Time
		sent := map[uint64]int{}
		for _, a := range tr.Attempts() {
			sent[a.seq]++
			switch {
			case a.seq == end:
				endAt = a.at
			case a.seq > 1:
				sentSegs = append(sentSegs, a.seq)
			}
		}
		if sent[1] != 1 || sent[end] != 1 {
			t.Fatalf("start sent %d times, end %d times; want once each", sent[1], sent[end])
		}
		st := sp.Stats()
		if st.Pending != 0 || st.Quarantined != 0 || st.Refused != 0 {
			t.Errorf("spool %+v: want everything delivered or evicted, nothing quarantined or refused", st)
		}
		if st.Evicted == 0 || len(sentSegs)+st.Evicted != segments {
			t.Errorf("%d segments sent + %d evicted, want %d in all with some evicted", len(sentSegs), st.Evicted, segments)
		}
		if got := sp.DroppedSegments("clip"); got != st.Evicted {
			t.Errorf("DroppedSegments(clip) = %d, want %d", got, st.Evicted)
		}
		if got := logs.Count("event=clip"); got != st.Evicted {
			t.Errorf("%d log lines name the event's evicted segments, want %d", got, st.Evicted)
		}
		if !slices.IsSorted(sentSegs) {
			t.Errorf("segments sent out of order: %v", sentSegs)
		}
		// The end went ahead of the segments still waiting when it came:
		// at most the one segment in flight then was sent after it began.
		var after int
		for _, a := range tr.Attempts() {
			if a.seq > 1 && a.seq < end && a.at.After(endAt) {
				after++
			}
		}
		if endAt.Sub(endPut) > 3*time.Second || after == 0 {
			t.Errorf("end sent %v after it was spooled with %d segments after it: want it ahead of the waiting segments", endAt.Sub(endPut), after)
		}
		if want := tr.Attempts()[len(tr.Attempts())-1].seq; want != end-1 {
			t.Errorf("last record sent %d, want the newest segment %d", want, end-1)
		}
	})
}

// TestUploaderBandwidthCap: with MaxRate, a record of n bytes waits until
// the token bucket (one second's worth, full at start) has paid for it: the
// send times follow the byte counts exactly on the bubble's clock, a record
// larger than the bucket waits its share rather than for ever, and the
// bytes sent by any time t never exceed MaxRate·(t+1s).
func TestUploaderBandwidthCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sizes := []int{500, 500, 500, 500, 3000, 100}
		dir := t.TempDir()
		sp := openSpool(t, SpoolConfig{Dir: dir})
		for i, n := range sizes {
			mustPut(t, sp, testRecord(uint64(i+1), n))
		}
		tr := &fakeTransport{script: func(uint64, int) error { return nil }}
		cfg := testConfig()
		cfg.MaxRate = 1000
		up := New(cfg, sp, tr, clock.System{}, backofftest.Seeded(1), nil)
		t0 := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- up.Run(ctx) }()
		settle(time.Hour)
		cancel()
		<-done
		as := tr.Attempts()
		if len(as) != len(sizes) {
			t.Fatalf("%d records sent, want %d", len(as), len(sizes))
		}
		// The bucket holds 1000: 500, 500 at once; then 0.5 s per 500
		// bytes; 3000 bytes 3 s; 100 bytes 0.1 s.
		want := []time.Duration{0, 0, 500 * time.Millisecond, time.Second, 4 * time.Second, 4100 * time.Millisecond}
		var total int
		for i, a := range as {
			at := a.at.Sub(t0)
			if at != want[i] {
				t.Errorf("record %d (%d bytes) sent at %v, want %v", a.seq, sizes[i], at, want[i])
			}
			total += sizes[i]
			if limit := cfg.MaxRate * int64(at+time.Second); int64(total)*int64(time.Second) > limit {
				t.Errorf("%d bytes sent by %v, above the cap's %d", total, at, limit/int64(time.Second))
			}
		}
		if got, want := up.Stats().Throttled, 4100*time.Millisecond; got != want {
			t.Errorf("Throttled %v, want %v", got, want)
		}

		// Without a cap nothing waits for bandwidth.
		sp2 := openSpool(t, SpoolConfig{Dir: filepath.Join(dir, "nocap")})
		for i, n := range sizes {
			mustPut(t, sp2, testRecord(uint64(i+1), n))
		}
		tr2 := &fakeTransport{script: func(uint64, int) error { return nil }}
		up2 := New(testConfig(), sp2, tr2, clock.System{}, backofftest.Seeded(1), nil)
		t1 := time.Now()
		ctx2, cancel2 := context.WithCancel(context.Background())
		go func() { done <- up2.Run(ctx2) }()
		settle(time.Hour)
		cancel2()
		<-done
		for _, a := range tr2.Attempts() {
			if !a.at.Equal(t1) {
				t.Errorf("uncapped: record %d sent after %v", a.seq, a.at.Sub(t1))
			}
		}
		if up2.Stats().Throttled != 0 {
			t.Errorf("uncapped: Throttled %v", up2.Stats().Throttled)
		}
	})
}
