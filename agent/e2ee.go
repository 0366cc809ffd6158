package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/claimcode"
	"github.com/keyframe-cam/keyframe/internal/livestream"
	"github.com/keyframe-cam/keyframe/join"
	"github.com/keyframe-cam/keyframe/provenance"
)

// End-to-end encryption (docs/e2ee.md): with e2ee.owner set, every picture
// a record carries (thumbnails, clip segments) is sealed on the record
// worker to the owner's key set before it is signed, and no picture leaves
// the camera in the clear: without a key set, records go without pictures;
// MQTT thumbnails and snapshots and the receiver's live view are off. The
// key set is the one keyframe join stored, or the last one the receiver
// gave that e2ee.Accept took (§3, §5), kept in DATA/e2ee-keyset.json.

const (
	// e2eeFirst is e2ee.owner's trust on first use.
	e2eeFirst = "first"
	// maxKeysetFile bounds the stored file (join.KeySetFile).
	maxKeysetFile = 64 << 10
)

// checkE2EEOwner checks an e2ee.owner value.
func checkE2EEOwner(v string) error {
	if v == "" || v == e2eeFirst {
		return nil
	}
	if b, err := hex.DecodeString(v); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("%q is not empty, %s or an owner fingerprint of 64 hex characters", v, e2eeFirst)
	}
	return nil
}

// KeysetPath is where the camera keeps its owner's key set (written by
// keyframe join too: join.KeySetFile).
func KeysetPath(c *Config) string { return filepath.Join(c.DataDir, join.KeySetFile) }

// writeKeyset stores the signed key set ks of the pinned owner (atomically).
func writeKeyset(path string, ks *e2ee.KeySet) error {
	fp := ks.Owner()
	b, err := json.Marshal(join.PinnedKeySet{Owner: hex.EncodeToString(fp[:]), Signed: ks.Signed()})
	if err != nil {
		return fmt.Errorf("agent: e2ee: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("agent: e2ee: write %s: %w", path, err)
	}
	return nil
}

// e2eeKeys holds the pinned owner and the key set media are sealed to. A
// nil *e2eeKeys is e2ee off.
type e2eeKeys struct {
	path string
	log  *slog.Logger

	mu     sync.Mutex
	pinned [32]byte
	pin    bool         // pinned is set (false only with e2ee.owner = first before a set)
	sealer *e2ee.Sealer // nil: no key set yet
	last   [32]byte     // SHA-256 of the last set refused, logged once

	refused, accepted atomic.Uint64
	noSet             atomic.Bool // "records without pictures" was logged
}

// newE2EEKeys returns the holder for c (nil when e2ee.owner is empty),
// with the stored key set if there is one that the pinned owner signed.
func newE2EEKeys(c *Config, log *slog.Logger) *e2eeKeys {
	if c.E2EEOwner == "" {
		return nil
	}
	k := &e2eeKeys{path: KeysetPath(c), log: log}
	if c.E2EEOwner != e2eeFirst {
		b, _ := hex.DecodeString(c.E2EEOwner) // checked by the config
		k.pinned, k.pin = [32]byte(b), true
	}
	ks, owner, err := loadKeyset(k.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		log.Warn("e2ee: no key set of the owner yet: records go without pictures until the receiver gives one", "owner", c.E2EEOwner)
		return k
	case err != nil:
		log.Error("e2ee: the stored key set is unusable; asking the receiver for the owner's", "file", k.path, "err", err)
		return k
	}
	if !k.pin {
		k.pinned, k.pin = owner, true // pinned on first use, earlier
	}
	if err := k.take(ks); err != nil {
		log.Error("e2ee: the stored key set is not the pinned owner's; asking the receiver for the owner's", "file", k.path, "err", err)
		return k
	}
	log.Info("e2ee on: pictures are sealed to the owner's key set", "owner", hex.EncodeToString(k.pinned[:]), "version", ks.Version, "keys", len(ks.Keys))
	return k
}

// loadKeyset reads the stored key set and the owner it was pinned to.
func loadKeyset(path string) (*e2ee.KeySet, [32]byte, error) {
	var owner [32]byte
	f, err := os.Open(path)
	if err != nil {
		return nil, owner, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeysetFile+1))
	if err != nil {
		return nil, owner, err
	}
	if len(data) > maxKeysetFile {
		return nil, owner, fmt.Errorf("over %d bytes", maxKeysetFile)
	}
	var s join.PinnedKeySet
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, owner, fmt.Errorf("not a stored key set: %w", err)
	}
	b, err := hex.DecodeString(s.Owner)
	if err != nil || len(b) != len(owner) {
		return nil, owner, fmt.Errorf("owner: %q is not 64 hex characters", s.Owner)
	}
	ks, err := e2ee.ParseSigned(s.Signed)
	if err != nil {
		return nil, owner, fmt.Errorf("signed: %w", err)
	}
	return ks, [32]byte(b), nil
}

// take makes ks the set media are sealed to if e2ee.Accept takes it.
func (k *e2eeKeys) take(ks *e2ee.KeySet) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var cur *e2ee.KeySet
	if k.sealer != nil {
		cur = k.sealer.KeySet()
	}
	if err := e2ee.Accept(k.pinned, cur, ks); err != nil {
		return err
	}
	if cur != nil && bytes.Equal(cur.Raw, ks.Raw) {
		return nil
	}
	s, err := e2ee.NewSealer(ks)
	if err != nil {
		return err
	}
	k.sealer = s
	return nil
}

// current is the sealer of the key set held, nil without one (or with
// e2ee off).
func (k *e2eeKeys) current() *e2ee.Sealer {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sealer
}

// withoutPictures logs, once until a set arrives, that records go without
// pictures.
func (k *e2eeKeys) withoutPictures() {
	if !k.noSet.Swap(true) {
		k.log.Warn("e2ee: no key set of the owner yet: records are signed and sent without pictures (no thumbnail, no clip), never with pictures in the clear")
	}
}

// offer takes a signed key set from the receiver: accepted (and stored) by
// §3's rule, or refused, logged once per distinct set and counted. It
// reports whether the set held changed.
func (k *e2eeKeys) offer(signed []byte) bool {
	ks, err := e2ee.ParseSigned(signed)
	k.mu.Lock()
	if err == nil && !k.pin {
		// e2ee.owner = first: the first set the receiver gives is the
		// owner's (pinned once stored).
		k.pinned = ks.Owner()
	}
	var prev uint64
	if k.sealer != nil {
		prev = k.sealer.KeySet().Version
	}
	k.mu.Unlock()
	if err == nil {
		err = k.take(ks)
	}
	if err != nil {
		k.refused.Add(1)
		sum := sha256.Sum256(signed)
		k.mu.Lock()
		again := sum == k.last
		k.last = sum
		k.mu.Unlock()
		if !again {
			k.log.Warn("e2ee: key set from the receiver refused; sealing to the set held", "held_version", prev, "refused", k.refused.Load(), "err", err)
		}
		return false
	}
	k.mu.Lock()
	changed := k.sealer.KeySet() == ks
	first := !k.pin
	k.pin = true
	k.mu.Unlock()
	if !changed {
		return false
	}
	k.accepted.Add(1)
	if err := writeKeyset(k.path, ks); err != nil {
		k.log.Error("e2ee: key set accepted but not stored: it is asked for again at the next start", "err", err)
	}
	fp := ks.Owner()
	k.log.Info("e2ee: key set accepted: pictures are sealed to it", "owner", hex.EncodeToString(fp[:]), "version", ks.Version, "keys", len(ks.Keys), "pinned_now", first)
	k.noSet.Store(false)
	return true
}

// sealed returns the media maker for recorder.RecordWith that seals obj,
// the record's only media object of role, to s with the record's binding.
func sealed(s *e2ee.Sealer, role string, obj []byte) func(*provenance.Payload) ([][]byte, error) {
	return func(p *provenance.Payload) ([][]byte, error) {
		b, err := s.Seal(e2ee.Binding{Device: p.Device, Event: p.Event, Seq: p.Seq, Role: role}, obj)
		if err != nil {
			return nil, fmt.Errorf("agent: e2ee: seal the %s: %w", role, err)
		}
		p.Media = []provenance.Media{provenance.NewMedia(role, e2ee.SealedType, b)}
		return [][]byte{b}, nil
	}
}

// setupE2EE prepares the key set holder and says what e2ee turns off (New).
func (a *Agent) setupE2EE() {
	a.e2ee = newE2EEKeys(&a.cfg, a.log)
	if a.e2ee == nil {
		return
	}
	if a.mqtt != nil {
		a.log.Warn("e2ee: MQTT thumbnails and snapshots are off (they would be pictures in the clear); the motion state is still published")
	}
	if a.cfg.LANListen != "" {
		a.log.Info("e2ee: the LAN view stays on: it is the owner's own network path")
	}
}

// startKeyset asks the receiver for the owner's key set at start and every
// e2ee.keyset_poll (Run).
func (a *Agent) startKeyset(ctx context.Context, wg *sync.WaitGroup) {
	if a.e2ee == nil {
		return
	}
	if isMQTT(a.cfg.UploadURL) {
		a.log.Warn("e2ee: key set updates need an https:// receiver (upload.url is MQTT): sealing to the stored key set only")
		return
	}
	wg.Go(func() { a.pollKeyset(ctx) })
}

// pollKeyset fetches the key set now and then every e2ee.keyset_poll,
// ±25 %.
func (a *Agent) pollKeyset(ctx context.Context) {
	client, err := a.liveClient()
	if err != nil {
		a.log.Error("e2ee: cannot ask the receiver for key sets", "err", err)
		return
	}
	sign := func(msg []byte) ([]byte, error) { return claimcode.Sign(a.deps.Rand, a.key, msg) }
	lastErr := ""
	for {
		rctx, cancel := context.WithTimeout(ctx, a.cfg.UploadTimeout)
		signed, err := livestream.FetchKeySet(rctx, client, a.cfg.UploadURL, a.device, sign)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, livestream.ErrNoKeySet):
			lastErr = ""
			if a.e2ee.current() == nil {
				a.e2ee.withoutPictures()
			}
		case err != nil:
			if msg := err.Error(); msg != lastErr {
				a.log.Warn("e2ee: cannot fetch the owner's key set; sealing to the set held", "err", err)
				lastErr = msg
			}
		default:
			lastErr = ""
			a.e2ee.offer(signed)
		}
		var r [8]byte
		_, _ = io.ReadFull(a.deps.Rand, r[:])
		f := float64(binary.LittleEndian.Uint64(r[:])>>11) / (1 << 53)
		select {
		case <-ctx.Done():
			return
		case <-a.deps.Clock.After(time.Duration(float64(a.cfg.E2EEKeysetPoll) * (0.75 + f/2))):
		}
	}
}
