package agent

import (
	"context"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/join"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
	"github.com/keyframe-cam/keyframe/recorder"
)

// TestE2EETransfer: a camera claimed by alice with an owner-committing code
// (docs/e2ee.md §5) seals to her key set; alice removes it, bob claims it
// with his code, and from that claim on it seals to his set only: every
// picture stored at the receiver opens with the keys of the owner the
// camera was claimed by when it was sealed, and not with the other's, so
// alice's pictures stay hers and bob's are his. Real receiver over its own
// TLS, real claims and joins, the agent's own key-set holder.
func TestE2EETransfer(t *testing.T) {
	dir := t.TempDir()
	rdir := filepath.Join(dir, "receiver")
	lines := &lineWatcher{ch: make(chan struct{}, 1)}
	url, stop := serveReceiver(t, rdir, "127.0.0.1:0", lines, "127.0.0.1")
	defer stop()
	alice, bob := newTestOwner(t), newTestOwner(t)
	for name, o := range map[string]*e2ee.Owner{"alice": alice, "bob": bob} {
		if err := receiver.PutKeySet(rdir, name, keySet(t, o, 1).Signed()); err != nil {
			t.Fatal(err)
		}
	}
	caPEM, err := os.ReadFile(filepath.Join(rdir, receiver.SelfCertDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(caPEM)
	if blk == nil {
		t.Fatal("the receiver's ca.pem holds no certificate")
	}

	cfg := testConfig(dir, 320, 240)
	cfg.E2EEKeysetPoll = 20 * time.Millisecond // the test's pace, below the configurable 5 s
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	key, device, _, err := Identity(&cfg, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public()
	defer closeKey(key)

	// claim joins the camera to owner with a code from owner's page, as
	// `keyframe join` does, and returns the sequence number it starts at.
	claim := func(owner string, o *e2ee.Owner) uint64 {
		t.Helper()
		chain, err := recorder.ChainFile(Layout(&cfg).Chain).Load()
		if err != nil {
			t.Fatal(err)
		}
		cc, err := receiver.IssueClaim(rdir, blk.Bytes, owner, time.Now(), nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := join.Join(context.Background(), join.Request{URL: url, Code: cc.Code, Key: key, Seq: chain.Next})
		if err != nil {
			t.Fatalf("%s's claim: %v", owner, err)
		}
		if res.KeySet == nil {
			t.Fatalf("%s's claim (code %s) carried no key set: the code does not commit to the owner", owner, cc.Code)
		}
		_, fp, err := join.WriteKeySet(cfg.DataDir, res)
		if err != nil {
			t.Fatal(err)
		}
		if fp != ownerHex(o) {
			t.Fatalf("%s's claim pinned %s, want %s", owner, fp, ownerHex(o))
		}
		if _, err := WriteJoinedOwner(&cfg, res.UploadURL, res.Cert, fp); err != nil {
			t.Fatal(err)
		}
		cfg.UploadURL, cfg.UploadCAFile, cfg.E2EEOwner = res.UploadURL, Layout(&cfg).ReceiverCA, fp
		return chain.Next
	}
	// ends counts the end records the receiver verified at seq from or later
	// (a run first uploads what the previous one left in the spool).
	ends := func(from uint64) int {
		lines.mu.Lock()
		defer lines.mu.Unlock()
		n := 0
		for _, l := range lines.lines {
			var seq uint64
			if i := strings.Index(l, " seq="); strings.Contains(l, "kind=end ") && i >= 0 {
				if _, err := fmt.Sscanf(l[i:], " seq=%d", &seq); err == nil && seq >= from {
					n++
				}
			}
		}
		return n
	}
	// run runs the agent until the receiver verified an end record signed
	// at seq from or later.
	run := func(from uint64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		a, err := New(cfg, Deps{Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		for ends(from) < 1 {
			select {
			case <-lines.ch:
			case err := <-done:
				t.Fatalf("agent stopped before an end record from seq %d: %v", from, err)
			case <-ctx.Done():
				t.Fatalf("no verified end record from seq %d; lines %q", from, lines.lines)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("agent: %v", err)
		}
	}

	run(claim("alice", alice))
	// Alice removes the camera; bob claims it.
	if err := receiver.Unpair(rdir, device); err != nil {
		t.Fatal(err)
	}
	bobFrom := claim("bob", bob)
	run(bobFrom)

	// Every sealed picture stored: its record verified, opened by the
	// owner of its time only.
	ddir := filepath.Join(rdir, "events", device)
	files, err := filepath.Glob(filepath.Join(ddir, "*.sealed"))
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, f := range files {
		sealed, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		base := strings.TrimSuffix(filepath.Base(f), ".sealed")
		env, err := os.ReadFile(filepath.Join(ddir, base[:strings.LastIndexByte(base, '.')]+".cose"))
		if err != nil {
			t.Fatal(err)
		}
		v, err := provenance.Verify(env, [][]byte{sealed}, pub)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		p := v.Payload
		mine, theirs, who := alice, bob, "alice"
		if p.Seq >= bobFrom {
			mine, theirs, who = bob, alice, "bob"
		}
		b := e2ee.Binding{Device: device, Event: p.Event, Seq: p.Seq, Role: p.Media[0].Role}
		b.Owner = mine.Fingerprint()
		if _, err := mine.Open(sealed, b); err != nil {
			t.Errorf("%s (seq %d): %s cannot open it: %v", filepath.Base(f), p.Seq, who, err)
		}
		b.Owner = theirs.Fingerprint()
		if _, err := theirs.Open(sealed, b); err == nil {
			t.Errorf("%s (seq %d, %s's): the other owner opened it", filepath.Base(f), p.Seq, who)
		}
		counts[who]++
	}
	if counts["alice"] == 0 || counts["bob"] == 0 {
		t.Fatalf("sealed pictures stored: %v, want some of each owner's time", counts)
	}
	t.Logf("sealed pictures stored: %d from alice's time (opened by her only), %d from bob's claim on at seq %d (by him only)", counts["alice"], counts["bob"], bobFrom)
}
