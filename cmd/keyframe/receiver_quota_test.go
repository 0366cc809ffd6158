package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
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
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, _ := x509.MarshalPKIXPublicKey(key.Public())
	id, err := receiver.Enroll(dir, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}))
	if err != nil {
		t.Fatal(err)
	}
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
		seq := uint64(i + 1)
		thumb := []byte("thumbnail " + strconv.Itoa(i))
		p := &provenance.Payload{Device: id, Event: "ev-" + strconv.Itoa(i), Kind: provenance.KindStart, Seq: seq, Boot: "b",
			Time:  provenance.Time{UnixMs: 1, Clock: provenance.ClockSynced},
			Media: []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", thumb)}, KeyStore: "file"}
		env, err := provenance.Sign(rand.Reader, key, p)
		if err != nil {
			t.Fatal(err)
		}
		body, err := (&provenance.Bundle{Envelope: env, Media: [][]byte{thumb}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := sp.Put(uploader.Record{Seq: seq, Event: p.Event, Kind: p.Kind, Data: body}); err != nil {
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
