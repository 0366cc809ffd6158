package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/join"
	"github.com/keyframe-cam/keyframe/motion"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/uploader"
)

// The record's media type of a sealed object is e2ee's (provenance cannot
// import e2ee; the two constants must agree).
func TestSealedMediaTypeAgrees(t *testing.T) {
	if provenance.SealedMediaType != e2ee.SealedType {
		t.Fatalf("provenance.SealedMediaType %q, e2ee.SealedType %q", provenance.SealedMediaType, e2ee.SealedType)
	}
}

func newTestOwner(t *testing.T) *e2ee.Owner {
	t.Helper()
	o, err := e2ee.NewOwner(2)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func ownerHex(o *e2ee.Owner) string {
	fp := o.Fingerprint()
	return hex.EncodeToString(fp[:])
}

func keySet(t *testing.T, o *e2ee.Owner, version uint64) *e2ee.KeySet {
	t.Helper()
	ks, err := o.KeySet(version)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// TestE2EEConfig: e2ee.owner takes "", first or 64 hex characters, and a
// wrong value or poll interval is named; joined.conf may set e2ee.owner.
func TestE2EEConfig(t *testing.T) {
	dir := t.TempDir()
	fp := strings.Repeat("ab", 32)
	for _, v := range []string{"", "first", fp, strings.ToUpper(fp)} {
		c := DefaultConfig()
		if err := ParseConfig(strings.NewReader("e2ee.owner = "+v+"\n"), "t.conf", &c); err != nil || c.E2EEOwner != v {
			t.Errorf("e2ee.owner = %q: %v (got %q)", v, err, c.E2EEOwner)
		}
	}
	for _, v := range []string{"yes", fp[:62], fp + "00", strings.Repeat("zz", 32)} {
		c := DefaultConfig()
		err := ParseConfig(strings.NewReader("e2ee.owner = "+v+"\n"), "t.conf", &c)
		if err == nil || !strings.Contains(err.Error(), "t.conf:1: e2ee.owner") || !strings.Contains(err.Error(), "64 hex") {
			t.Errorf("e2ee.owner = %q: %v", v, err)
		}
	}
	c := DefaultConfig()
	if c.E2EEOwner != "" || c.E2EEKeysetPoll.Seconds() != 60 {
		t.Errorf("defaults: e2ee.owner %q, e2ee.keyset_poll %v", c.E2EEOwner, c.E2EEKeysetPoll)
	}
	err := ParseConfig(strings.NewReader("e2ee.keyset_poll = 1s\n"), "t.conf", &c)
	if err == nil || !strings.Contains(err.Error(), "e2ee.keyset_poll") {
		t.Errorf("e2ee.keyset_poll = 1s: %v", err)
	}

	// keyframe join's file may pin the owner.
	if err := os.WriteFile(filepath.Join(dir, "joined.conf"), []byte("upload.url = \"https://a.example/\"\ne2ee.owner = "+fp+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = LoadConfig("", []string{"KEYFRAME_DEVICE_DATA_DIR=" + dir})
	if err != nil || c.E2EEOwner != fp {
		t.Fatalf("joined e2ee.owner: %v (got %q)", err, c.E2EEOwner)
	}
}

// TestE2EEKeysAccept: the holder takes the pinned owner's sets in version
// order, refuses another identity's and an older version (counted, logged
// once per distinct set), keeps sealing to the set it had, and stores what
// it accepted.
func TestE2EEKeysAccept(t *testing.T) {
	owner, other := newTestOwner(t), newTestOwner(t)
	cfg := testConfig(t.TempDir(), 64, 48)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg.E2EEOwner = ownerHex(owner)
	var logs lockedBuffer
	k := newE2EEKeys(&cfg, testLogger(&logs))
	if k.current() != nil {
		t.Fatal("a key set before any was given")
	}
	v2 := keySet(t, owner, 2)
	if !k.offer(v2.Signed()) || k.current().KeySet().Version != 2 {
		t.Fatal("the pinned owner's set was not taken")
	}
	if k.offer(v2.Signed()) {
		t.Error("the same set again counted as a change")
	}
	for _, bad := range [][]byte{keySet(t, other, 9).Signed(), keySet(t, owner, 1).Signed(), []byte(`{"keyset":"x","sig":"y"}`)} {
		for range 2 {
			if k.offer(bad) {
				t.Error("a refused set was taken")
			}
		}
	}
	if got := k.current().KeySet(); !bytes.Equal(got.Raw, v2.Raw) {
		t.Errorf("sealing to version %d after refusals, want 2", got.Version)
	}
	if k.refused.Load() != 6 {
		t.Errorf("%d refusals counted, want 6", k.refused.Load())
	}
	if n := strings.Count(logs.String(), "key set from the receiver refused"); n != 3 {
		t.Errorf("%d refusals logged for 3 distinct sets offered twice each, want 3:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "another identity") || !strings.Contains(logs.String(), "not newer") {
		t.Errorf("the log does not say why:\n%s", logs.String())
	}
	v3 := keySet(t, owner, 3)
	if !k.offer(v3.Signed()) {
		t.Fatal("a newer set was not taken")
	}

	// The stored set is what the next start seals to.
	k2 := newE2EEKeys(&cfg, quietLogger())
	if s := k2.current(); s == nil || !bytes.Equal(s.KeySet().Raw, v3.Raw) {
		t.Fatal("the accepted set was not stored")
	}
	// A stored set of another owner than the one configured is not used.
	cfg.E2EEOwner = ownerHex(other)
	var logs3 lockedBuffer
	if k3 := newE2EEKeys(&cfg, testLogger(&logs3)); k3.current() != nil || !strings.Contains(logs3.String(), "not the pinned owner's") {
		t.Errorf("a stored set of another owner was used: %s", logs3.String())
	}
	// A damaged file is named, and the camera goes on without a set.
	if err := os.WriteFile(KeysetPath(&cfg), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs4 lockedBuffer
	if k4 := newE2EEKeys(&cfg, testLogger(&logs4)); k4.current() != nil || !strings.Contains(logs4.String(), join.KeySetFile) {
		t.Errorf("a damaged key set file: %s", logs4.String())
	}
}

// TestE2EEKeysFirst: e2ee.owner = first pins the identity of the first set
// the receiver gives, and keeps it (stored) across a restart.
func TestE2EEKeysFirst(t *testing.T) {
	owner, other := newTestOwner(t), newTestOwner(t)
	cfg := testConfig(t.TempDir(), 64, 48)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg.E2EEOwner = e2eeFirst
	k := newE2EEKeys(&cfg, quietLogger())
	if !k.offer(keySet(t, owner, 1).Signed()) {
		t.Fatal("the first set was not taken")
	}
	if k.offer(keySet(t, other, 5).Signed()) {
		t.Fatal("another identity's set was taken after the first was pinned")
	}
	k = newE2EEKeys(&cfg, quietLogger())
	if k.current() == nil || k.current().KeySet().Owner() != owner.Fingerprint() {
		t.Fatal("the pinned owner's set was not kept across a restart")
	}
	if k.offer(keySet(t, other, 5).Signed()) {
		t.Fatal("another identity's set was taken after a restart")
	}
	if !k.offer(keySet(t, owner, 2).Signed()) {
		t.Fatal("the pinned owner's newer set was not taken after a restart")
	}
}

// testLogger writes text logs at debug level to w.
func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestE2EEPicturesInTheClearOff: with e2ee on, the MQTT snapshot command is
// refused, a record's thumbnail is not handed to MQTT (sealed in the
// record only), the receiver's live view is sealed, and with an MQTT
// upload.url the log says key set updates need an HTTPS receiver.
func TestE2EEPicturesInTheClearOff(t *testing.T) {
	owner := newTestOwner(t)
	dir := t.TempDir()
	cfg := testConfig(dir, 64, 48)
	cfg.UploadURL = "tcp://127.0.0.1:1"
	cfg.MQTTUsername, cfg.MQTTPasswordFile = "cam", filepath.Join(dir, "pw")
	if err := os.WriteFile(cfg.MQTTPasswordFile, []byte("password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.E2EEOwner = ownerHex(owner)
	var logs lockedBuffer
	a, err := New(cfg, Deps{Logger: testLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.command(context.Background(), uploader.CommandSnapshot, nil); err == nil || !strings.Contains(err.Error(), "e2ee") {
		t.Errorf("snapshot command with e2ee on: %v", err)
	}
	if !strings.Contains(logs.String(), "MQTT thumbnails and snapshots are off") {
		t.Errorf("the log does not say MQTT pictures are off:\n%s", logs.String())
	}
	var wg sync.WaitGroup
	a.startKeyset(context.Background(), &wg)
	wg.Wait()
	if !strings.Contains(logs.String(), "key set updates need an https:// receiver") {
		t.Errorf("the log does not say an MQTT upload.url gets no key set updates:\n%s", logs.String())
	}

	// A record: no thumbnail for MQTT with or without a key set; sealed
	// in the record once there is one.
	f := liveTestFrame(time.Unix(1_764_000_000, 0))
	sum := motion.Summary{Start: f.Time, Trigger: f.Time, End: f.Time}
	for _, set := range []bool{false, true} {
		if set && !a.e2ee.offer(keySet(t, owner, 1).Signed()) {
			t.Fatal("set not taken")
		}
		thumb, err := a.record("ev-"+strconv.FormatBool(set), provenance.KindStart, f, sum, a.stamp.Now(), nil, nil)
		if err != nil || thumb != nil {
			t.Fatalf("record with e2ee on (key set %v): thumbnail for MQTT %d bytes, %v", set, len(thumb), err)
		}
	}
	recs := a.spool.Pending()
	if len(recs) != 2 {
		t.Fatalf("%d records spooled, want 2", len(recs))
	}
	for i, r := range recs {
		rec, err := a.spool.Load(r)
		if err != nil {
			t.Fatal(err)
		}
		b, err := provenance.UnmarshalBundle(rec.Data)
		if err != nil {
			t.Fatal(err)
		}
		v, err := provenance.Verify(b.Envelope, b.Media, nil)
		if err != nil {
			t.Fatal(err)
		}
		switch m := v.Payload.Media; {
		case i == 0 && len(m) != 0:
			t.Errorf("record without a key set carries %+v", m)
		case i == 1 && (len(m) != 1 || m[0].Type != e2ee.SealedType):
			t.Errorf("record with a key set carries %+v, want one sealed thumbnail", m)
		}
	}

	// The receiver's live view is sealed to the key set (docs/e2ee.md §8,
	// TestLiveSealed), never in the clear.
	cfg.UploadURL, cfg.LiveEnabled = "https://cams.example/", true
	cfg.DataDir = filepath.Join(dir, "live")
	var liveLogs lockedBuffer
	b, err := New(cfg, Deps{Logger: testLogger(&liveLogs)})
	if err != nil {
		t.Fatal(err)
	}
	if b.live == nil || b.live.sealer == nil {
		t.Errorf("live view with e2ee on: feed %v, sealed %v, want a sealed live view\n%s", b.live != nil, b.live != nil && b.live.sealer != nil, liveLogs.String())
	}
}
