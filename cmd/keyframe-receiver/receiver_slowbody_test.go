package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
	"github.com/keyframe-cam/keyframe/uploader"
)

// TestSlowBodiesAgentStores is the slow-body attack against the agent's
// own uploader: twice MaxInFlight upload bodies from 127.0.0.1 that are
// read and never finish, while a real uploader (spool, uploader.HTTP,
// the agent's retry loop) on 127.0.0.2 drains 20 records into the same
// receiver.Serve. Every record is delivered and none quarantined (before
// the bodies were read ahead of a slot, the agent stored 0 records during
// such an attack).
func TestSlowBodiesAgentStores(t *testing.T) {
	dir := t.TempDir()
	key, id := enrolledKey(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	ready, served := make(chan string, 1), make(chan error, 1)
	go func() {
		served <- receiver.Serve(ctx, receiver.ServeConfig{Options: receiver.Options{Dir: dir, UploadGrace: time.Hour},
			Listen: "127.0.0.1:0", Ready: func(url string) { ready <- url }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	var base string
	select {
	case base = <-ready:
	case err := <-served:
		t.Fatalf("Serve: %v", err)
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(base, "http://"), "/")

	const slow = 2 * receiver.DefaultMaxInFlight
	for range slow {
		holdSlowBody(t, addr)
	}

	sp, err := uploader.OpenSpool(uploader.SpoolConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	const records = 20
	for i := range records {
		seq, event := uint64(i+1), "ev-"+strconv.Itoa(i)
		body := signedBundle(t, key, id, event, seq)
		if err := sp.Put(uploader.Record{Seq: seq, Event: event, Kind: provenance.KindStart, Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	tr, err := uploader.NewHTTP(base, &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var delivered atomic.Int64
	all := make(chan struct{})
	up := uploader.New(uploader.Config{Rate: 1e10, Delivered: func(uploader.Entry) {
		if delivered.Add(1) == records {
			close(all)
		}
	}}, sp, tr, nil, nil, nil)
	uctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- up.Run(uctx) }()
	select {
	case <-all:
	case <-time.After(2 * time.Minute): // a hung receiver fails the test rather than hang it
	}
	stop()
	<-done
	st := up.Stats()
	t.Logf("%d slow bodies open from 127.0.0.1: the agent's uploader on 127.0.0.2 delivered %d of %d records (%d failed attempts, %d quarantined)",
		slow, st.Sent, records, st.Failures, st.Quarantined)
	if st.Sent != records || st.Quarantined != 0 || len(sp.Pending()) != 0 {
		t.Errorf("delivered %d, quarantined %d, %d left in the spool; want %d, 0, 0", st.Sent, st.Quarantined, len(sp.Pending()), records)
	}
}

// holdSlowBody opens a connection from 127.0.0.1 to addr and starts an
// upload whose body it never finishes: once the server reads the body (its
// 100 Continue), one byte of it is sent.
func holdSlowBody(t *testing.T, addr string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req := "PUT /v1/events/slow/start HTTP/1.1\r\nHost: " + addr + "\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, " 100 ") {
		t.Fatalf("slow body: %q %v, want 100 Continue", line, err)
	}
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "\xa2"); err != nil {
		t.Fatal(err)
	}
}
