package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/join"
	"github.com/keyframe-cam/keyframe/receiver"
)

// TestJoinE2EECommand: keyframe join with a code that commits to alice's
// e2ee identity pins it: e2ee.owner in joined.conf and the signed set in
// e2ee-keyset.json. A receiver that answers the set of another identity
// makes the join fail, with a clear message and nothing written.
func TestJoinE2EECommand(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, certDER := receiverCert(t, dir)
	rdir := filepath.Join(dir, "receiver")
	srv, err := receiver.Open(receiver.Options{Dir: rdir, TLSCertificate: certDER})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	alice, mallory := newOwner(t), newOwner(t)
	aliceKS, err := alice.KeySet(1)
	if err != nil {
		t.Fatal(err)
	}
	malloryKS, err := mallory.KeySet(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := receiver.PutKeySet(rdir, "alice", aliceKS.Signed()); err != nil {
		t.Fatal(err)
	}
	// The receiver, or one that swaps the key set of join answers.
	var substitute atomic.Bool
	h := srv.Handler()
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != claimcode.JoinPath || !substitute.Load() {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		var jr claimcode.JoinResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &jr); err != nil {
			t.Errorf("the join answer: %v", err)
		}
		jr.KeySet = malloryKS.Signed()
		json.NewEncoder(w).Encode(jr)
	}))
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	hs.StartTLS()
	defer hs.Close()

	newCode := func() string {
		cc, err := receiver.IssueClaim(rdir, certDER, "alice", time.Now(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(cc.Code) != claimcode.LenE2EE {
			t.Fatalf("code %q: want %d characters", cc.Code, claimcode.LenE2EE)
		}
		return cc.Code
	}
	cfgFile, dataDir := cameraConfig(t, dir)
	written := []string{"joined.conf", "receiver-ca.pem", join.KeySetFile}

	substitute.Store(true)
	var out, errb bytes.Buffer
	if code := runJoin(context.Background(), []string{"-config", cfgFile, hs.URL, newCode()}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "did not give the key set of the owner the claim code names") {
		t.Errorf("another identity's set: exit %d, stderr %q", code, errb.String())
	}
	for _, f := range written {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err == nil {
			t.Errorf("a refused join wrote %s", f)
		}
	}

	substitute.Store(false)
	out.Reset()
	errb.Reset()
	if code := runJoin(context.Background(), []string{"-config", cfgFile, hs.URL, newCode()}, nil, &out, &errb); code != 0 {
		t.Fatalf("keyframe join: exit %d\n%s%s", code, out.String(), errb.String())
	}
	fp := alice.Fingerprint()
	want := hex.EncodeToString(fp[:])
	if !strings.Contains(out.String(), "pinned the owner's identity "+want) {
		t.Errorf("keyframe join said:\n%s", out.String())
	}
	conf, err := os.ReadFile(filepath.Join(dataDir, "joined.conf"))
	if err != nil || !strings.Contains(string(conf), "\ne2ee.owner = "+strconv.Quote(want)+"\n") {
		t.Errorf("joined.conf (%v):\n%s", err, conf)
	}
	b, err := os.ReadFile(filepath.Join(dataDir, join.KeySetFile))
	if err != nil {
		t.Fatal(err)
	}
	var kept join.PinnedKeySet
	if err := json.Unmarshal(b, &kept); err != nil || kept.Owner != want || !bytes.Equal(kept.Signed, aliceKS.Signed()) {
		t.Errorf("%s: %s (%v)", join.KeySetFile, b, err)
	}
	t.Logf("keyframe join said:\n%s", out.String())
}

func newOwner(t *testing.T) *e2ee.Owner {
	t.Helper()
	o, err := e2ee.NewOwner(1)
	if err != nil {
		t.Fatal(err)
	}
	return o
}
