package receiver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"unicode/utf8"

	"github.com/keyframe-cam/keyframe/e2ee"
	"github.com/keyframe-cam/keyframe/internal/atomicfile"
	"github.com/keyframe-cam/keyframe/internal/livestream"
)

// End-to-end encryption (docs/e2ee.md §5, §6). The receiver keeps, for each
// owner, the owner's signed key set, the recovery backup (opaque bytes it
// cannot open) and the browsers' pending join requests, in
// DATA/e2ee/OWNER.json, written atomically under a flock on
// DATA/e2ee/e2ee.lock. It checks a new set by the cameras' rule (§3) against
// the one it holds, so it never stores a set of another identity or an
// older version, but it is not trusted for that: each camera checks the set
// again against the identity it pinned at claim. The owner's browsers read
// and write their entry (GET, PUT /v1/e2ee/keys; POST, DELETE
// /v1/e2ee/requests); a camera fetches its owner's set with the live view's
// proof (GET /v1/e2ee/{device}/keyset).

// E2EE bounds.
const (
	// MaxE2EEBody bounds the body of an owner's e2ee request.
	MaxE2EEBody = 64 << 10
	// MaxE2EEBackup bounds the recovery backup's bytes.
	MaxE2EEBackup = 4 << 10
	// MaxE2EERequests bounds an owner's pending join requests.
	MaxE2EERequests = 8
	// maxE2EEFile bounds an owner's file as read.
	maxE2EEFile = 256 << 10
)

const (
	e2eeDir  = "e2ee"
	e2eeLock = "e2ee.lock"
)

// e2eeEntry is an owner's DATA/e2ee/OWNER.json, and (without Version) the
// answer of GET /v1/e2ee/keys.
type e2eeEntry struct {
	Version int `json:"version,omitempty"`
	// Signed is the signed key set as e2ee.KeySet.Signed writes it, or
	// null.
	Signed json.RawMessage `json:"signed"`
	// Backup is the recovery backup, base64url without padding, or "".
	Backup   string             `json:"backup"`
	Requests []*e2eeJoinRequest `json:"requests"`
}

// e2eeJoinRequest is a browser's pending request to join the owner's key set.
type e2eeJoinRequest struct {
	ID     string `json:"id"` // e2ee.KeyID of the key
	KEM    uint16 `json:"kem"`
	Pub    string `json:"pub"` // base64url, no padding
	Name   string `json:"name"`
	TimeMs int64  `json:"time_ms"` // when it was made (receiver's clock)
}

// empty reports whether the entry holds nothing.
func (e *e2eeEntry) empty() bool {
	return len(e.Signed) == 0 && e.Backup == "" && len(e.Requests) == 0
}

// keySet parses the entry's set, nil if there is none.
func (e *e2eeEntry) keySet() (*e2ee.KeySet, error) {
	if len(e.Signed) == 0 {
		return nil, nil
	}
	return e2ee.ParseSigned(e.Signed)
}

// e2eePath is owner's file in dir.
func e2eePath(dir, owner string) string { return filepath.Join(dir, e2eeDir, owner+".json") }

// loadE2EE reads owner's entry in dir; a missing file is an empty entry.
// Writers replace the file by rename, so a read needs no lock.
func loadE2EE(dir, owner string) (*e2eeEntry, error) {
	if !ValidOwner(owner) {
		return nil, fmt.Errorf("receiver: e2ee: %q: %w", clip(owner), ErrOwner)
	}
	path := e2eePath(dir, owner)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return &e2eeEntry{Version: 1, Signed: nil, Requests: []*e2eeJoinRequest{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("receiver: e2ee: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxE2EEFile+1))
	if err != nil {
		return nil, fmt.Errorf("receiver: e2ee: read %s: %w", path, err)
	}
	if len(b) > maxE2EEFile {
		return nil, fmt.Errorf("receiver: e2ee: %s: over %d bytes", path, maxE2EEFile)
	}
	var e e2eeEntry
	if err := decodeStrict(b, &e); err != nil {
		return nil, fmt.Errorf("receiver: e2ee: %s: %w", path, err)
	}
	if e.Version != 1 {
		return nil, fmt.Errorf("receiver: e2ee: %s: version %d, want 1", path, e.Version)
	}
	if bytes.Equal(bytes.TrimSpace(e.Signed), []byte("null")) {
		e.Signed = nil
	}
	if _, err := e.keySet(); err != nil {
		return nil, fmt.Errorf("receiver: e2ee: %s: signed: %w", path, err)
	}
	if _, err := decodeBackup(e.Backup); err != nil {
		return nil, fmt.Errorf("receiver: e2ee: %s: %w", path, err)
	}
	if len(e.Requests) > MaxE2EERequests {
		return nil, fmt.Errorf("receiver: e2ee: %s: %d requests, at most %d", path, len(e.Requests), MaxE2EERequests)
	}
	for _, r := range e.Requests {
		if r == nil {
			return nil, fmt.Errorf("receiver: e2ee: %s: a null request", path)
		}
		if _, err := r.check(); err != nil {
			return nil, fmt.Errorf("receiver: e2ee: %s: request %s: %w", path, clip(r.ID), err)
		}
	}
	if e.Requests == nil {
		e.Requests = []*e2eeJoinRequest{}
	}
	return &e, nil
}

// updateE2EE runs fn on owner's entry under the e2ee lock and writes the
// result atomically if fn succeeds.
func updateE2EE(dir, owner string, fn func(*e2eeEntry) error) error {
	if !ValidOwner(owner) {
		return fmt.Errorf("receiver: e2ee: %q: %w", clip(owner), ErrOwner)
	}
	d := filepath.Join(dir, e2eeDir)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("receiver: e2ee directory: %w", err)
	}
	unlock, err := lockFile(filepath.Join(d, e2eeLock), true)
	if err != nil {
		return err
	}
	defer unlock()
	e, err := loadE2EE(dir, owner)
	if err != nil {
		return err
	}
	if err := fn(e); err != nil {
		return err
	}
	e.Version = 1
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return fmt.Errorf("receiver: e2ee: encode: %w", err)
	}
	if err := atomicfile.WriteFile(e2eePath(dir, owner), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("receiver: e2ee: write: %w", err)
	}
	return nil
}

// OwnerKeySet returns owner's signed key set in the data directory dir, nil
// when the owner has none.
func OwnerKeySet(dir, owner string) (*e2ee.KeySet, error) {
	e, err := loadE2EE(dir, owner)
	if err != nil {
		return nil, err
	}
	return e.keySet()
}

// decodeBackup decodes a backup as stored and sent: base64url without
// padding, at most MaxE2EEBackup bytes.
func decodeBackup(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("backup: not base64url without padding: %w", err)
	}
	if len(b) > MaxE2EEBackup {
		return nil, fmt.Errorf("backup: %d bytes, at most %d", len(b), MaxE2EEBackup)
	}
	return b, nil
}

// pubLen is the public key length of a KEM a browser may ask to join with.
func pubLen(kem uint16) int {
	switch kem {
	case e2ee.KEMX25519:
		return 32
	case e2ee.KEMMLKEM768X25519:
		return 1216
	}
	return 0
}

// check validates a join request and returns its public key; a request
// read back must have the ID its key gives.
func (r *e2eeJoinRequest) check() ([]byte, error) {
	n := pubLen(r.KEM)
	if n == 0 {
		return nil, fmt.Errorf("kem: %d is not %d (X25519) or %d (ML-KEM-768+X25519)", r.KEM, e2ee.KEMX25519, e2ee.KEMMLKEM768X25519)
	}
	pub, err := base64.RawURLEncoding.DecodeString(r.Pub)
	if err != nil || len(pub) != n {
		return nil, fmt.Errorf("pub: want %d bytes in base64url without padding", n)
	}
	if len(r.Name) > e2ee.MaxNameLen || !utf8.ValidString(r.Name) {
		return nil, fmt.Errorf("name: at most %d bytes of UTF-8", e2ee.MaxNameLen)
	}
	if r.ID != "" && r.ID != e2ee.KeyID(r.KEM, pub) {
		return nil, errors.New("id: not the key's ID")
	}
	return pub, nil
}

// decodeStrict decodes exactly one JSON value from b into v, refusing
// unknown fields and trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}

// readE2EEBody reads an owner's e2ee request body (at most MaxE2EEBody,
// strict JSON) into v. On failure it has answered.
func readE2EEBody(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxE2EEBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeLine(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", MaxE2EEBody))
			return false
		}
		writeLine(w, http.StatusBadRequest, "cannot read the request: "+clip(err.Error()))
		return false
	}
	if err := decodeStrict(b, v); err != nil {
		writeLine(w, http.StatusBadRequest, "malformed request: "+clip(err.Error()))
		return false
	}
	return true
}

// handleE2EEKeys answers GET /v1/e2ee/keys: the owner's signed key set,
// backup and pending join requests; 404 when there is none of these.
func (s *Server) handleE2EEKeys(w http.ResponseWriter, r *http.Request, u *user) {
	e, err := loadE2EE(s.dir, u.name)
	if err != nil {
		s.log.Error("receiver: e2ee keys unreadable", "owner", u.name, "err", err)
		writeLine(w, http.StatusServiceUnavailable, "keys unavailable, retry later")
		return
	}
	if e.empty() {
		writeLine(w, http.StatusNotFound, "no key set yet: the first browser makes it")
		return
	}
	e.Version = 0
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if err := json.NewEncoder(w).Encode(e); err != nil {
		s.log.Debug("receiver: write e2ee keys", "err", err)
	}
}

// putKeysBody is the body of PUT /v1/e2ee/keys.
type putKeysBody struct {
	Signed json.RawMessage `json:"signed"`
	Backup string          `json:"backup,omitempty"` // "" keeps the stored one
}

// errE2EEConflict stops an update whose refusal is decided (409).
type errE2EEConflict struct{ why string }

func (e *errE2EEConflict) Error() string { return e.why }

// handleE2EEPut answers PUT /v1/e2ee/keys: a new signed key set (and
// perhaps the backup), checked by the cameras' rule against the stored one:
// a set of another identity or of a version not greater is refused (409);
// the very set stored already is taken again (the backup is replaced if
// given). Join requests whose key is in the new set are removed.
func (s *Server) handleE2EEPut(w http.ResponseWriter, r *http.Request, u *user) {
	var body putKeysBody
	if !readE2EEBody(w, r, &body) {
		return
	}
	if len(body.Signed) == 0 || bytes.Equal(body.Signed, []byte("null")) {
		writeLine(w, http.StatusBadRequest, "malformed request: signed: the signed key set is required")
		return
	}
	next, err := e2ee.ParseSigned(body.Signed)
	if err != nil {
		writeLine(w, http.StatusBadRequest, "signed: "+clip(err.Error()))
		return
	}
	if _, err := decodeBackup(body.Backup); err != nil {
		writeLine(w, http.StatusBadRequest, err.Error())
		return
	}
	err = putKeySet(s.dir, u.name, next, body.Backup)
	var conflict *errE2EEConflict
	switch {
	case errors.As(err, &conflict):
		s.log.Info("receiver: e2ee key set refused", "owner", u.name, "why", conflict.why)
		writeLine(w, http.StatusConflict, conflict.why)
		return
	case err != nil:
		s.log.Error("receiver: cannot store an e2ee key set", "owner", u.name, "err", err)
		writeLine(w, http.StatusServiceUnavailable, "keys unavailable, retry later")
		return
	}
	s.log.Info("receiver: e2ee key set stored", "owner", u.name, "version", next.Version, "keys", len(next.Keys), "fingerprint", fmt.Sprintf("%x", next.Owner()))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// ErrKeySetConflict reports a key set refused against the stored one: of
// another identity, or of a version not greater (wrapped, with the reason).
var ErrKeySetConflict = errors.New("key set refused")

// errE2EEConflict is a refusal with its one-line reason.
func (e *errE2EEConflict) Unwrap() error { return ErrKeySetConflict }

// PutKeySet stores signed (a signed key set, docs/e2ee.md §3) as owner's in
// the data directory dir, as PUT /v1/e2ee/keys does: checked against the
// stored set by the cameras' rule (ErrKeySetConflict), the very same set
// taken again. It is for a process beside the running receiver (an
// operator's tool, a test).
func PutKeySet(dir, owner string, signed []byte) error {
	next, err := e2ee.ParseSigned(signed)
	if err != nil {
		return fmt.Errorf("receiver: e2ee: %w", err)
	}
	err = putKeySet(dir, owner, next, "")
	if c := (*errE2EEConflict)(nil); errors.As(err, &c) {
		return fmt.Errorf("receiver: e2ee: %w", err)
	}
	return err
}

// putKeySet stores next as owner's set, and backup unless it is "";
// join requests whose key is in next are removed.
func putKeySet(dir, owner string, next *e2ee.KeySet, backup string) error {
	return updateE2EE(dir, owner, func(e *e2eeEntry) error {
		cur, err := e.keySet()
		if err != nil {
			return err
		}
		if cur != nil {
			err := e2ee.Accept(cur.Owner(), cur, next)
			switch {
			case errors.Is(err, e2ee.ErrOtherIdentity):
				return &errE2EEConflict{fmt.Sprintf("the key set is of another identity than the one stored (owner fingerprint %x…): an identity is kept for good; a new one needs the cameras claimed again", cur.Owner())}
			case errors.Is(err, e2ee.ErrRollback):
				return &errE2EEConflict{fmt.Sprintf("the key set's version %d is not greater than the stored version %d", next.Version, cur.Version)}
			case err != nil:
				return &errE2EEConflict{"the key set is refused: " + err.Error()}
			}
		}
		e.Signed = next.Signed()
		if backup != "" {
			e.Backup = backup
		}
		e.Requests = slices.DeleteFunc(e.Requests, func(jr *e2eeJoinRequest) bool {
			return slices.ContainsFunc(next.Keys, func(k e2ee.Key) bool { return k.ID == jr.ID })
		})
		return nil
	})
}

// handleE2EERequest answers POST /v1/e2ee/requests: a browser asks to join
// the owner's key set with its public key and name. A key already pending
// is 204 again (its name updated); a key in the set, or a ninth request,
// is 409.
func (s *Server) handleE2EERequest(w http.ResponseWriter, r *http.Request, u *user) {
	var jr e2eeJoinRequest
	if !readE2EEBody(w, r, &jr) {
		return
	}
	if jr.ID != "" || jr.TimeMs != 0 {
		writeLine(w, http.StatusBadRequest, "malformed request: id and time_ms are the receiver's")
		return
	}
	pub, err := jr.check()
	if err != nil {
		writeLine(w, http.StatusBadRequest, "malformed request: "+err.Error())
		return
	}
	jr.ID, jr.TimeMs = e2ee.KeyID(jr.KEM, pub), s.clk.Now().UnixMilli()
	err = updateE2EE(s.dir, u.name, func(e *e2eeEntry) error {
		if cur, err := e.keySet(); err != nil {
			return err
		} else if cur != nil && slices.ContainsFunc(cur.Keys, func(k e2ee.Key) bool { return k.ID == jr.ID }) {
			return &errE2EEConflict{"this key is in the key set already"}
		}
		for _, p := range e.Requests {
			if p.ID == jr.ID {
				p.Name = jr.Name
				return nil
			}
		}
		if len(e.Requests) >= MaxE2EERequests {
			return &errE2EEConflict{fmt.Sprintf("%d join requests are pending already: approve or dismiss one first", MaxE2EERequests)}
		}
		e.Requests = append(e.Requests, &jr)
		return nil
	})
	var conflict *errE2EEConflict
	switch {
	case errors.As(err, &conflict):
		writeLine(w, http.StatusConflict, conflict.why)
		return
	case err != nil:
		s.log.Error("receiver: cannot store an e2ee join request", "owner", u.name, "err", err)
		writeLine(w, http.StatusServiceUnavailable, "keys unavailable, retry later")
		return
	}
	s.log.Info("receiver: e2ee join request", "owner", u.name, "key", jr.ID)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// handleE2EERequestDelete answers DELETE /v1/e2ee/requests/{id}: the
// owner dismisses a pending join request (204; 404 if there is none).
func (s *Server) handleE2EERequestDelete(w http.ResponseWriter, r *http.Request, u *user) {
	id := r.PathValue("id")
	found := false
	err := updateE2EE(s.dir, u.name, func(e *e2eeEntry) error {
		n := len(e.Requests)
		e.Requests = slices.DeleteFunc(e.Requests, func(jr *e2eeJoinRequest) bool { return jr.ID == id })
		found = len(e.Requests) < n
		if !found {
			return &errE2EEConflict{"no such join request"}
		}
		return nil
	})
	var conflict *errE2EEConflict
	switch {
	case errors.As(err, &conflict):
		writeLine(w, http.StatusNotFound, conflict.why)
		return
	case err != nil:
		s.log.Error("receiver: cannot remove an e2ee join request", "owner", u.name, "err", err)
		writeLine(w, http.StatusServiceUnavailable, "keys unavailable, retry later")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// handleE2EEKeySet answers a camera's GET /v1/e2ee/{device}/keyset with the
// live view's proof (purpose livestream.PurposeKeySet): the signed key set
// of the owner the device is paired to now, by the open pairing in the
// registry read at this request; 404 with a reason when the device is
// paired to no owner or its owner has no set. Every reply carries a fresh
// nonce.
func (s *Server) handleE2EEKeySet(w http.ResponseWriter, r *http.Request) {
	device, owner, ok := s.deviceProof(w, r, livestream.PurposeKeySet)
	if !ok {
		return
	}
	if owner == "" {
		writeLine(w, http.StatusNotFound, "this camera is paired to no owner: no key set")
		return
	}
	ks, err := OwnerKeySet(s.dir, owner)
	if err != nil {
		s.log.Error("receiver: e2ee keys unreadable", "owner", owner, "err", err)
		w.Header().Set("Retry-After", "5")
		writeLine(w, http.StatusServiceUnavailable, "keys unavailable, retry later")
		return
	}
	if ks == nil {
		writeLine(w, http.StatusNotFound, "the camera's owner has no key set: end-to-end encryption is not set up in their browser")
		return
	}
	s.log.Debug("receiver: e2ee key set fetched", "device", device, "owner", owner, "version", ks.Version)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(ks.Signed())
}
