// Package e2ee seals pictures to an owner's keys (docs/e2ee.md): the owner's
// signed key set and the camera's rule for accepting one (§3), sealed media
// objects (§4) and the live view's key frame and frames (§8).
//
// It is a pure library: no files, no network, no clock of its own (Owner
// takes one). Everything it parses is bounded and refused, with an error
// naming the field, when it is not exactly what the specification allows.
package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// SealedType is a sealed object's media type in a record (docs/e2ee.md §7).
const SealedType = "application/vnd.keyframe.sealed"

// The KEMs a key set may list (HPKE KEM identifiers).
const (
	KEMX25519         uint16 = 0x0020 // DHKEM(X25519, HKDF-SHA256)
	KEMMLKEM768X25519 uint16 = 0x647a // ML-KEM-768+X25519 (X-Wing)
)

// Limits of a key set (docs/e2ee.md §3).
const (
	MaxKeySetSize = 16 << 10 // bytes of the set's JSON
	MaxKeys       = 16
	MaxNameLen    = 64
	maxVersion    = 1<<53 - 1
	// maxSignedSize bounds the signed wire form: the set in base64url, the
	// signature and the JSON around them.
	maxSignedSize = (MaxKeySetSize+2)/3*4 + 256
)

// Domain separation strings (docs/e2ee.md §1, §3).
const (
	fingerprintLabel = "keyframe e2ee identity v1\x00"
	keyIDLabel       = "keyframe e2ee key id v1\x00"
	keySetSigLabel   = "keyframe e2ee keyset v1\x00"
)

// Errors of Accept and of parsing, for errors.Is.
var (
	// ErrOtherIdentity: the set is signed by an identity other than the
	// pinned owner's.
	ErrOtherIdentity = errors.New("e2ee: key set of another identity")
	// ErrRollback: the set's version is lower than the held set's, or equal
	// with different bytes.
	ErrRollback = errors.New("e2ee: key set version not newer than the one held")
	// ErrSignature: the set's signature does not verify with its identity.
	ErrSignature = errors.New("e2ee: key set signature does not verify")
	// ErrMalformed: the input is not in the form docs/e2ee.md specifies.
	ErrMalformed = errors.New("e2ee: malformed")
)

// FieldError is a parse error naming the field at fault, such as
// "keys[2].pub". It wraps ErrMalformed.
type FieldError struct {
	What  string // "key set", "signed key set", "sealed header", ...
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return "e2ee: " + e.What + ": " + e.Msg
	}
	return "e2ee: " + e.What + ": " + e.Field + ": " + e.Msg
}

// Unwrap lets errors.Is(err, ErrMalformed) hold.
func (e *FieldError) Unwrap() error { return ErrMalformed }

func fieldErr(what, field, format string, args ...any) error {
	return &FieldError{What: what, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Fingerprint is the owner fingerprint of an identity public key:
// SHA-256("keyframe e2ee identity v1\0" ‖ identity).
func Fingerprint(identity ed25519.PublicKey) [32]byte {
	h := sha256.New()
	h.Write([]byte(fingerprintLabel))
	h.Write(identity)
	var fp [32]byte
	h.Sum(fp[:0])
	return fp
}

// ClaimCommit is what an owner-committing claim code carries: the first 100
// bits of the fingerprint as 13 bytes, the low 4 bits of the last one zero.
func ClaimCommit(fp [32]byte) []byte {
	c := make([]byte, 13)
	copy(c, fp[:13])
	c[12] &= 0xf0
	return c
}

// KeyID is a key's id: hex of the first 16 bytes of
// SHA-256("keyframe e2ee key id v1\0" ‖ uint16(kem) ‖ pub).
func KeyID(kem uint16, pub []byte) string {
	h := sha256.New()
	h.Write([]byte(keyIDLabel))
	var k [2]byte
	binary.BigEndian.PutUint16(k[:], kem)
	h.Write(k[:])
	h.Write(pub)
	var sum [32]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// pubSize is the size of a serialized public key of a KEM a key set may
// list, or 0 for a KEM it may not.
func pubSize(kem uint16) int {
	switch kem {
	case KEMX25519:
		return 32
	case KEMMLKEM768X25519:
		return 1216
	}
	return 0
}

// Key is one public key of a key set.
type Key struct {
	ID       string // KeyID(KEM, Pub)
	KEM      uint16
	Pub      []byte // RFC 9180 SerializePublicKey
	Name     string
	Recovery bool
}

// KeySet is an owner's signed key set, verified against its own identity
// (which says nothing about whose it is: Accept decides that).
type KeySet struct {
	Raw      []byte // the set's JSON, exactly as signed
	Sig      []byte // Ed25519 over "keyframe e2ee keyset v1\0" ‖ Raw
	Identity ed25519.PublicKey
	Version  uint64
	TimeMs   int64
	Keys     []Key
}

// Owner is Fingerprint(ks.Identity).
func (ks *KeySet) Owner() [32]byte { return Fingerprint(ks.Identity) }

// Signed is the signed key set's wire form, {"keyset": ..., "sig": ...}.
func (ks *KeySet) Signed() []byte {
	b, _ := json.Marshal(signedJSON{
		KeySet: base64.RawURLEncoding.EncodeToString(ks.Raw),
		Sig:    base64.RawURLEncoding.EncodeToString(ks.Sig),
	})
	return b
}

type signedJSON struct {
	KeySet string `json:"keyset"`
	Sig    string `json:"sig"`
}

type keySetJSON struct {
	V        int       `json:"v"`
	Identity string    `json:"identity"`
	Version  uint64    `json:"version"`
	TimeMs   int64     `json:"time_ms"`
	Keys     []keyJSON `json:"keys"`
}

type keyJSON struct {
	ID       string `json:"id"`
	KEM      uint16 `json:"kem"`
	Pub      string `json:"pub"`
	Name     string `json:"name"`
	Recovery bool   `json:"recovery"`
}

// The members each object may have, by schema path ("" is the top level,
// "keys[]" an entry of keys); false for a path without a schema.
// encoding/json matches names without regard to case; these are matched
// exactly.
func signedMembers(schema string) ([]string, bool) {
	if schema == "" {
		return []string{"keyset", "sig"}, true
	}
	return nil, false
}

func keySetMembers(schema string) ([]string, bool) {
	switch schema {
	case "":
		return []string{"v", "identity", "version", "time_ms", "keys"}, true
	case "keys[]":
		return []string{"id", "kem", "pub", "name", "recovery"}, true
	}
	return nil, false
}

// ParseSigned parses and verifies a signed key set's wire form (docs/e2ee.md
// §3): strict JSON, at most 16 KiB of set, the set's own signature verified.
// Whether the set is the pinned owner's is Accept's question.
func ParseSigned(data []byte) (*KeySet, error) {
	const what = "signed key set"
	if len(data) > maxSignedSize {
		return nil, fieldErr(what, "", "%d bytes, more than %d", len(data), maxSignedSize)
	}
	var s signedJSON
	if err := strictJSON(what, data, signedMembers, &s); err != nil {
		return nil, err
	}
	raw, err := b64(what, "keyset", s.KeySet)
	if err != nil {
		return nil, err
	}
	sig, err := b64(what, "sig", s.Sig)
	if err != nil {
		return nil, err
	}
	return ParseKeySet(raw, sig)
}

// ParseKeySet parses a key set's JSON and verifies its signature with the
// identity it names.
func ParseKeySet(raw, sig []byte) (*KeySet, error) {
	const what = "key set"
	if len(raw) > MaxKeySetSize {
		return nil, fieldErr(what, "", "%d bytes, more than %d", len(raw), MaxKeySetSize)
	}
	if !utf8.Valid(raw) {
		return nil, fieldErr(what, "", "not UTF-8")
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fieldErr("signed key set", "sig", "%d bytes, want %d", len(sig), ed25519.SignatureSize)
	}
	var j keySetJSON
	if err := strictJSON(what, raw, keySetMembers, &j); err != nil {
		return nil, err
	}
	if j.V != 1 {
		return nil, fieldErr(what, "v", "%d, want 1", j.V)
	}
	id, err := b64(what, "identity", j.Identity)
	if err != nil {
		return nil, err
	}
	if len(id) != ed25519.PublicKeySize {
		return nil, fieldErr(what, "identity", "%d bytes, want %d", len(id), ed25519.PublicKeySize)
	}
	if j.Version < 1 || j.Version > maxVersion {
		return nil, fieldErr(what, "version", "%d, want 1 to 2^53-1", j.Version)
	}
	if j.TimeMs < 0 {
		return nil, fieldErr(what, "time_ms", "negative (%d)", j.TimeMs)
	}
	if len(j.Keys) < 1 || len(j.Keys) > MaxKeys {
		return nil, fieldErr(what, "keys", "%d entries, want 1 to %d", len(j.Keys), MaxKeys)
	}
	ks := &KeySet{
		Raw:      bytes.Clone(raw),
		Sig:      bytes.Clone(sig),
		Identity: ed25519.PublicKey(id),
		Version:  j.Version,
		TimeMs:   j.TimeMs,
		Keys:     make([]Key, len(j.Keys)),
	}
	recovery := -1
	for i, k := range j.Keys {
		f := "keys[" + strconv.Itoa(i) + "]."
		size := pubSize(k.KEM)
		if size == 0 {
			return nil, fieldErr(what, f+"kem", "%d is not a supported KEM (%d X25519, %d ML-KEM-768+X25519)", k.KEM, KEMX25519, KEMMLKEM768X25519)
		}
		pub, err := b64(what, f+"pub", k.Pub)
		if err != nil {
			return nil, err
		}
		if len(pub) != size {
			return nil, fieldErr(what, f+"pub", "%d bytes, want %d for kem %d", len(pub), size, k.KEM)
		}
		if _, err := newPublicKey(k.KEM, pub); err != nil {
			return nil, fieldErr(what, f+"pub", "not a public key of kem %d: %v", k.KEM, err)
		}
		if want := KeyID(k.KEM, pub); k.ID != want {
			return nil, fieldErr(what, f+"id", "%q, want %q (the key id of kem and pub)", k.ID, want)
		}
		for _, prev := range ks.Keys[:i] {
			if prev.ID == k.ID {
				return nil, fieldErr(what, f+"id", "%s listed twice", k.ID)
			}
		}
		if len(k.Name) > MaxNameLen {
			return nil, fieldErr(what, f+"name", "%d bytes, more than %d", len(k.Name), MaxNameLen)
		}
		if k.Recovery {
			if recovery >= 0 {
				return nil, fieldErr(what, f+"recovery", "a second recovery key (keys[%d] is one)", recovery)
			}
			recovery = i
		}
		ks.Keys[i] = Key{ID: k.ID, KEM: k.KEM, Pub: pub, Name: k.Name, Recovery: k.Recovery}
	}
	if !ed25519.Verify(ks.Identity, signedMessage(raw), sig) {
		return nil, ErrSignature
	}
	return ks, nil
}

func signedMessage(raw []byte) []byte {
	m := make([]byte, 0, len(keySetSigLabel)+len(raw))
	return append(append(m, keySetSigLabel...), raw...)
}

// Accept is the camera's rule for a new signed key set (docs/e2ee.md §3):
// next must verify, be the pinned owner's (ErrOtherIdentity otherwise) and,
// when a set is held (cur not nil), have a greater version, or the same
// version and the same bytes (ErrRollback otherwise). A nil error with
// next's bytes equal to cur's means nothing changes.
func Accept(pinned [32]byte, cur, next *KeySet) error {
	if next == nil {
		return fmt.Errorf("e2ee: accept: no key set")
	}
	if len(next.Identity) != ed25519.PublicKeySize || len(next.Sig) != ed25519.SignatureSize ||
		!ed25519.Verify(next.Identity, signedMessage(next.Raw), next.Sig) {
		return ErrSignature
	}
	if next.Owner() != pinned {
		return fmt.Errorf("%w: owner %x, pinned %x", ErrOtherIdentity, next.Owner(), pinned)
	}
	if cur == nil {
		return nil
	}
	switch {
	case next.Version < cur.Version:
		return fmt.Errorf("%w: version %d, holding %d", ErrRollback, next.Version, cur.Version)
	case next.Version == cur.Version && !bytes.Equal(next.Raw, cur.Raw):
		return fmt.Errorf("%w: version %d again with different contents", ErrRollback, next.Version)
	}
	return nil
}

// b64 decodes base64url without padding, refusing any other spelling of the
// same bytes (padding, line breaks, non-zero trailing bits).
func b64(what, field, s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || base64.RawURLEncoding.EncodeToString(b) != s {
		return nil, fieldErr(what, field, "not base64url without padding")
	}
	return b, nil
}

// strictJSON decodes data into v, refusing duplicate members, members not
// in members (matched exactly) and anything after the value.
func strictJSON(what string, data []byte, members func(string) ([]string, bool), v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := walkJSON(what, dec, "", "", members, 0); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fieldErr(what, "", "data after the JSON value")
	}
	if err := json.Unmarshal(data, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fieldErr(what, te.Field, "a JSON %s is not a valid value", te.Value)
		}
		return fieldErr(what, "", "%v", err)
	}
	return nil
}

// maxDepth bounds the nesting walkJSON follows: the documents have two.
const maxDepth = 4

// walkJSON reads one value from dec. path names it for errors ("keys[2].pub"),
// schema for members ("keys[]").
func walkJSON(what string, dec *json.Decoder, path, schema string, members func(string) ([]string, bool), depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return fieldErr(what, path, "not JSON: %v", err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	if depth >= maxDepth {
		return fieldErr(what, path, "nested too deeply")
	}
	switch d {
	case '{':
		allowed, known := members(schema)
		var seen []string
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return fieldErr(what, path, "not JSON: %v", err)
			}
			name, _ := tok.(string)
			field := name
			if path != "" {
				field = path + "." + name
			}
			for _, s := range seen {
				if s == name {
					return fieldErr(what, field, "duplicate member")
				}
			}
			seen = append(seen, name)
			if known && !contains(allowed, name) {
				return fieldErr(what, field, "unknown member")
			}
			sub := name
			if schema != "" {
				sub = schema + "." + name
			}
			if err := walkJSON(what, dec, field, sub, members, depth+1); err != nil {
				return err
			}
		}
	case '[':
		for i := 0; dec.More(); i++ {
			if err := walkJSON(what, dec, path+"["+strconv.Itoa(i)+"]", schema+"[]", members, depth+1); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return fieldErr(what, path, "not JSON: %v", err)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
