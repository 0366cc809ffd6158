// Package rotation keeps a device's key rotation on disk between the moment
// it is prepared (keyframe identity rotate) and the moment the receiver has
// accepted it (the agent completes it), so that a crash at any point leaves a
// device that can still sign and still finish the rotation.
//
// On disk, at the paths of the device's recorder.Layout:
//
//	NextKey     the new key (PKCS#8 PEM, 0600), written before anything else
//	Rotation    the signed rotate record with its proof, an upload bundle
//	RetiredKey  the old key, kept after Complete
//
// A rotation is pending while the Rotation bundle exists. The device keeps
// its chain across the rotation: the rotate record is the next record of the
// old key's chain, made by a recorder.Recorder whose spool is the bundle file,
// and the new key's records continue from the following sequence number with
// prev = SHA-256 of the rotate envelope (docs/envelope.md, "Key rotation").
//
// This package is device-side bookkeeping, kept apart from package provenance
// (which clouds import).
package rotation

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/recorder"
	"github.com/keyframe-cam/keyframe/uploader"
)

// EventPrefix starts the event ID of a rotate record; the new device ID
// follows.
const EventPrefix = "rotate-"

// ErrPending is returned (wrapped) by Prepare when a rotation is already
// pending: it must be completed before another one starts.
var ErrPending = errors.New("a key rotation is already pending")

// ErrUnused is returned (wrapped) by Prepare when the key the last rotation
// made has signed no record yet: a receiver refuses a rotation of a key
// that has stored no record of its own (its rotate record would be
// quarantined and the camera stranded), so let the camera record an event
// first.
var ErrUnused = errors.New("the current key has signed no record since the last rotation: let the camera record an event, then rotate")

// Request is what Prepare needs.
type Request struct {
	Layout   recorder.Layout // the device's paths; the new key must already be at Layout.NextKey
	Old      crypto.Signer   // the current device key
	New      crypto.Signer   // the new key (loaded from Layout.NextKey)
	KeyStore string          // backend of the old key, for the record's keystore field ("file")
	Boot     string          // boot ID
	Time     provenance.Time
	// CertChain is the old key's certificate chain (DER, device
	// certificate first) for the rotate record's x5chain, or nil. A receiver
	// that admitted the old device by its certificate needs it.
	CertChain [][]byte
	Chain     recorder.ChainStore // the device's chain state (recorder.ChainFile(Layout.Chain))
	Rand      io.Reader           // nil: crypto/rand
}

// Pending describes a prepared rotation that the receiver has not yet
// confirmed.
type Pending struct {
	BundlePath string // the upload bundle's file
	Bundle     []byte // its bytes: upload as kind provenance.KindRotate, event Event, sequence Seq
	Event      string // the rotate record's event ID
	Seq        uint64 // the rotate record's sequence number (the old key's chain)
	OldDevice  string
	NewDevice  string
	// NewKeyPath holds the new key: Layout.NextKey, or the key file
	// itself when a Complete was interrupted after switching keys (Switched).
	NewKeyPath string
	Switched   bool
}

// Prepare makes the rotate record for req and writes it to
// req.Layout.Rotation. The new key must already be durable at
// req.Layout.NextKey (the old key is never touched here). The rotate record
// is the next record of req.Chain, made by a recorder.Recorder whose spool is
// the bundle file: the chain state advances past it before the bundle is
// written, so a crash can leave a gap in the sequence, never a reuse. It
// refuses with ErrPending if a rotation is already pending.
func Prepare(req Request) (*Pending, error) {
	l := req.Layout
	if _, err := os.Stat(l.Rotation); err == nil {
		return nil, fmt.Errorf("rotation: %s: %w", l.Rotation, ErrPending)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("rotation: %w", err)
	}
	if req.Old == nil || req.New == nil || req.Chain == nil {
		return nil, errors.New("rotation: prepare: old key, new key and chain state are required")
	}
	if err := checkUsed(l, req.Chain); err != nil {
		return nil, err
	}
	nextPub, err := publicKeyOfFile(l.NextKey)
	if err != nil {
		return nil, err
	}
	if !sameKey(nextPub, req.New.Public()) {
		return nil, fmt.Errorf("rotation: prepare: %s does not hold the new key", l.NextKey)
	}
	oldID, err := provenance.DeviceID(req.Old.Public())
	if err != nil {
		return nil, fmt.Errorf("rotation: %w", err)
	}
	newID, err := provenance.DeviceID(req.New.Public())
	if err != nil {
		return nil, fmt.Errorf("rotation: %w", err)
	}
	rec, err := recorder.Open(recorder.Config{
		Chain:     req.Chain,
		Spool:     bundleFile(l.Rotation),
		Key:       req.Old,
		CertChain: func() [][]byte { return req.CertChain },
		Rand:      req.Rand,
	})
	if err != nil {
		return nil, fmt.Errorf("rotation: %w", err)
	}
	p := &provenance.Payload{
		Device:   oldID,
		Event:    EventPrefix + newID,
		Boot:     req.Boot,
		Time:     req.Time,
		KeyStore: req.KeyStore,
	}
	r, err := rec.Rotate(req.New, p)
	if err != nil {
		return nil, fmt.Errorf("rotation: %w", err)
	}
	return &Pending{
		BundlePath: l.Rotation, Bundle: r.Data, Event: r.Event, Seq: r.Seq,
		OldDevice: oldID, NewDevice: newID, NewKeyPath: l.NextKey,
	}, nil
}

// bundleFile is the spool of a rotate record while the rotation is being
// prepared: the bundle file, written atomically.
type bundleFile string

func (f bundleFile) Put(r uploader.Record) error {
	if err := atomicfile.WriteFile(string(f), r.Data, 0o600); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}

// Record is the pending rotate record as the agent spools it.
func (p *Pending) Record() uploader.Record {
	return uploader.Record{Seq: p.Seq, Event: p.Event, Kind: provenance.KindRotate, Data: p.Bundle}
}

// Load reports the rotation pending at the paths of l, or nil (and no error)
// if there is none. It verifies the bundle and checks that the new key it
// names is on disk: at l.NextKey, or already in l.Key (a Complete was
// interrupted; Switched is then set). A bundle whose new key is nowhere is an
// error: the device must not sign with a key the rotation does not name.
func Load(l recorder.Layout) (*Pending, error) {
	path, keyFile := l.Rotation, l.Key
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rotation: %w", err)
	}
	v, err := verifyBundle(data)
	if err != nil {
		return nil, fmt.Errorf("rotation: %s: %w", path, err)
	}
	p := &Pending{
		BundlePath: path, Bundle: data, Event: v.Payload.Event, Seq: v.Payload.Seq,
		OldDevice: v.Device, NewDevice: v.NextDevice,
	}
	nextPath := l.NextKey
	pub, err := publicKeyOfFile(nextPath)
	switch {
	case err == nil:
		if !sameKey(pub, v.NextKey) {
			return nil, fmt.Errorf("rotation: %s does not hold the new key %s that %s names", nextPath, v.NextDevice, path)
		}
		p.NewKeyPath = nextPath
		return p, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	pub, err = publicKeyOfFile(keyFile)
	if err != nil {
		return nil, err
	}
	if !sameKey(pub, v.NextKey) {
		return nil, fmt.Errorf("rotation: %s names the new key %s, which is neither in %s nor in %s", path, v.NextDevice, nextPath, keyFile)
	}
	p.NewKeyPath, p.Switched = keyFile, true
	return p, nil
}

// Complete finishes the rotation pending at the paths of l once the receiver
// has accepted its bundle (a 2xx answer): it keeps the old key as
// l.RetiredKey (replacing the key an earlier rotation retired), moves the new
// key into l.Key, moves a device certificate file (l.Cert, if not empty) that
// certifies the old key aside to l.Cert+".retired", and removes the bundle.
// At every step l.Key holds a whole key, old or new, and a crash leaves a
// state Load and Complete understand. Completing when nothing is pending
// does nothing.
func Complete(l recorder.Layout) error {
	keyFile := l.Key
	p, err := Load(l)
	if err != nil || p == nil {
		return err
	}
	v, err := verifyBundle(p.Bundle)
	if err != nil {
		return fmt.Errorf("rotation: %w", err)
	}
	if !p.Switched {
		old, err := os.ReadFile(keyFile)
		if err != nil {
			return fmt.Errorf("rotation: read old key: %w", err)
		}
		if err := atomicfile.WriteFile(l.RetiredKey, old, 0o600); err != nil {
			return fmt.Errorf("rotation: keep old key: %w", err)
		}
		// rename replaces the key file atomically: it holds the old key or
		// the new one, never nothing.
		if err := os.Rename(p.NewKeyPath, keyFile); err != nil {
			return fmt.Errorf("rotation: switch keys: %w", err)
		}
		if err := atomicfile.SyncDir(filepath.Dir(keyFile)); err != nil {
			return fmt.Errorf("rotation: %w", err)
		}
	}
	if l.Cert != "" {
		if err := retireCert(l.Cert, v.SPKI); err != nil {
			return err
		}
	}
	if l.Rotated != "" {
		if err := atomicfile.WriteFile(l.Rotated, []byte(hex.EncodeToString(v.Hash[:])+"\n"), 0o600); err != nil {
			return fmt.Errorf("rotation: %w", err)
		}
	}
	if err := os.Remove(p.BundlePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rotation: remove bundle: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(p.BundlePath)); err != nil {
		return fmt.Errorf("rotation: %w", err)
	}
	return nil
}

// retireCert moves certFile aside if its device certificate is for oldSPKI.
// A certificate for another key (one installed for the new key already) and
// a missing file are left alone.
func retireCert(certFile string, oldSPKI []byte) error {
	chain, err := provenance.LoadCertChain(certFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rotation: %w", err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return fmt.Errorf("rotation: %s: %w", certFile, err)
	}
	if !bytes.Equal(leaf.RawSubjectPublicKeyInfo, oldSPKI) {
		return nil
	}
	if err := os.Rename(certFile, certFile+".retired"); err != nil {
		return fmt.Errorf("rotation: retire the old key's certificate: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(certFile)); err != nil {
		return fmt.Errorf("rotation: %w", err)
	}
	return nil
}

// verifyBundle decodes and verifies a rotate bundle.
func verifyBundle(data []byte) (*provenance.Verified, error) {
	b, err := provenance.UnmarshalBundle(data)
	if err != nil {
		return nil, err
	}
	v, err := provenance.Verify(b.Envelope, b.Media, nil)
	if err != nil {
		return nil, err
	}
	if v.Payload.Kind != provenance.KindRotate {
		return nil, fmt.Errorf("the bundle is a %s record, not a rotation", v.Payload.Kind)
	}
	return v, nil
}

// publicKeyOfFile returns the public key of a PKCS#8 PEM private key file.
// A missing file wraps fs.ErrNotExist.
func publicKeyOfFile(path string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rotation: key: %w", err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("rotation: key %s: no PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("rotation: key %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("rotation: key %s: %T is not a signing key", path, k)
	}
	return s.Public(), nil
}

func sameKey(a, b crypto.PublicKey) bool {
	da, err1 := x509.MarshalPKIXPublicKey(a)
	db, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(da, db)
}

// checkUsed refuses (ErrUnused) while the chain's last record is the rotate
// record of the last completed rotation: the current key has signed nothing.
func checkUsed(l recorder.Layout, chain recorder.ChainStore) error {
	if l.Rotated == "" {
		return nil
	}
	b, err := os.ReadFile(l.Rotated)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rotation: %w", err)
	}
	last, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("rotation: %s: %w", l.Rotated, err)
	}
	c, err := chain.Load()
	if err != nil {
		return fmt.Errorf("rotation: %w", err)
	}
	if bytes.Equal(c.Prev, last) {
		return fmt.Errorf("rotation: %w", ErrUnused)
	}
	return nil
}
