package main

import (
	"context"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
	"github.com/keyframe-cam/keyframe/uploader"
)

// movedClock is the system clock moved forward by what a test adds.
type movedClock struct {
	mu sync.Mutex
	by time.Duration
}

func (c *movedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.by)
}

func (c *movedClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func (c *movedClock) add(d time.Duration) {
	c.mu.Lock()
	c.by += d
	c.mu.Unlock()
}

// TestQuotaBurstLosesNothing: an honest camera that bursts over its
// hourly quota loses nothing. The agent's uploader gets 429 quota with
// Retry-After, keeps the records (none quarantined) and retries them; once
// the receiver's hour has passed, every record is stored.
func TestQuotaBurstLosesNothing(t *testing.T) {
	dir := t.TempDir()
	key, id := enrolledKey(t, dir)
	clk := &movedClock{}
	srv, err := receiver.Open(receiver.Options{Dir: dir, Clock: clk, Quota: receiver.Quota{RecordsPerHour: 3}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	tr, err := uploader.NewHTTP(hs.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	quota := func() uint64 { return srv.Stats().Rejected[receiver.ReasonQuota] }

	sp, err := uploader.OpenSpool(uploader.SpoolConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	const records = 8
	for i := range records {
		seq, event := uint64(i+1), "ev-"+strconv.Itoa(i)
		body := signedBundle(t, key, id, event, seq)
		if err := sp.Put(uploader.Record{Seq: seq, Event: event, Kind: provenance.KindStart, Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	var delivered atomic.Int64
	all := make(chan struct{})
	const tiny = time.Millisecond
	up := uploader.New(uploader.Config{Rate: 1e10, BackoffBase: tiny, BackoffCap: tiny, RetryWindow: tiny, QuickRetry: tiny, RetryAfterCap: tiny,
		Delivered: func(uploader.Entry) {
			if delivered.Add(1) == records {
				close(all)
			}
		}}, sp, tr, nil, nil, nil)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- up.Run(ctx) }()
	defer func() { stop(); <-done }()
	// Each time the uploader is refused over quota, the receiver's hour
	// passes.
	deadline := time.After(2 * time.Minute)
	for refusals := uint64(0); ; {
		select {
		case <-all:
		case <-deadline:
			t.Fatalf("delivered %d of %d", delivered.Load(), records)
		case <-time.After(5 * time.Millisecond):
			if n := quota(); n > refusals {
				refusals = n
				clk.add(time.Hour)
			}
			continue
		}
		break
	}
	st := up.Stats()
	t.Logf("%d records against a quota of 3 an hour, over HTTP: %d refused 429 quota, delivered %d, quarantined %d",
		records, quota(), st.Sent, st.Quarantined)
	if st.Sent != records || st.Quarantined != 0 || quota() == 0 {
		t.Errorf("delivered %d, quarantined %d, %d quota refusals; want %d, 0, some", st.Sent, st.Quarantined, quota(), records)
	}
	if got := srv.Stats().Stored; got != records {
		t.Errorf("receiver stored %d, want %d", got, records)
	}
}
