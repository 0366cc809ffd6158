package e2ee

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
)

// Owner is an owner's keys in Go: for tests, tools and third-party
// decryptors. A real owner's keys live in browsers (docs/e2ee.md §6).
type Owner struct {
	Identity ed25519.PrivateKey
	Keys     []OwnerKey
	// Now stamps the sets KeySet makes (time_ms); nil means time.Now.
	Now func() time.Time
}

// OwnerKey is one of an owner's HPKE key pairs.
type OwnerKey struct {
	ID       string
	KEM      uint16
	Priv     hpke.PrivateKey
	Pub      []byte
	Name     string
	Recovery bool
}

// newPublicKey deserializes a public key of a KEM a key set may list.
func newPublicKey(kem uint16, pub []byte) (hpke.PublicKey, error) {
	k, err := hpkeKEM(kem)
	if err != nil {
		return nil, err
	}
	return k.NewPublicKey(pub)
}

func hpkeKEM(kem uint16) (hpke.KEM, error) {
	if pubSize(kem) == 0 {
		return nil, fmt.Errorf("e2ee: kem %d not supported", kem)
	}
	k, err := hpke.NewKEM(kem)
	if err != nil {
		return nil, fmt.Errorf("e2ee: kem %d: %w", kem, err)
	}
	return k, nil
}

// NewOwner makes an identity and nKeys X25519 keys (1 to 16), the first
// of them marked as the recovery key when nKeys > 1.
func NewOwner(nKeys int) (*Owner, error) {
	if nKeys < 1 || nKeys > MaxKeys {
		return nil, fmt.Errorf("e2ee: new owner: %d keys, want 1 to %d", nKeys, MaxKeys)
	}
	_, id, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("e2ee: new owner: %w", err)
	}
	o := &Owner{Identity: id}
	for i := range nKeys {
		if _, err := o.AddKey(KEMX25519, fmt.Sprintf("key %d", i+1), nKeys > 1 && i == 0); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// AddKey makes a key pair of kem (KEMX25519 or KEMMLKEM768X25519) and adds
// it to o.Keys.
func (o *Owner) AddKey(kem uint16, name string, recovery bool) (*OwnerKey, error) {
	k, err := hpkeKEM(kem)
	if err != nil {
		return nil, err
	}
	priv, err := k.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("e2ee: new key: %w", err)
	}
	return o.AddPrivateKey(priv, name, recovery)
}

// AddPrivateKey adds an existing key pair (one from KEM.DeriveKeyPair or
// KEM.NewPrivateKey, say) to o.Keys.
func (o *Owner) AddPrivateKey(priv hpke.PrivateKey, name string, recovery bool) (*OwnerKey, error) {
	kem := priv.KEM().ID()
	if pubSize(kem) == 0 {
		return nil, fmt.Errorf("e2ee: add key: kem %d not supported", kem)
	}
	pub := priv.PublicKey().Bytes()
	o.Keys = append(o.Keys, OwnerKey{ID: KeyID(kem, pub), KEM: kem, Priv: priv, Pub: pub, Name: name, Recovery: recovery})
	return &o.Keys[len(o.Keys)-1], nil
}

// Fingerprint is the owner fingerprint of o's identity.
func (o *Owner) Fingerprint() [32]byte {
	return Fingerprint(o.Identity.Public().(ed25519.PublicKey))
}

// KeySet makes and signs the set of o.Keys with the given version.
func (o *Owner) KeySet(version uint64) (*KeySet, error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	j := keySetJSON{
		V:        1,
		Identity: base64.RawURLEncoding.EncodeToString(o.Identity.Public().(ed25519.PublicKey)),
		Version:  version,
		TimeMs:   now().UnixMilli(),
		Keys:     make([]keyJSON, len(o.Keys)),
	}
	for i, k := range o.Keys {
		j.Keys[i] = keyJSON{ID: k.ID, KEM: k.KEM, Pub: base64.RawURLEncoding.EncodeToString(k.Pub), Name: k.Name, Recovery: k.Recovery}
	}
	raw, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("e2ee: key set: %w", err)
	}
	return ParseKeySet(raw, ed25519.Sign(o.Identity, signedMessage(raw)))
}

// Key is o's key with the given id, or nil.
func (o *Owner) Key(id string) *OwnerKey {
	for i := range o.Keys {
		if o.Keys[i].ID == id {
			return &o.Keys[i]
		}
	}
	return nil
}

// RecoverySecretSize is the recovery secret's size: 128 bits (docs/e2ee.md §6).
const RecoverySecretSize = 16

// RecoveryKey derives the recovery key pair from the recovery secret
// (docs/e2ee.md §6): DeriveKeyPair of DHKEM(X25519) with
// ikm = HKDF-SHA256(secret, salt "", "keyframe e2ee recovery kem v1", 32).
// With it, a tool opens everything sealed to a set holding the recovery key.
func RecoveryKey(secret []byte) (hpke.PrivateKey, error) {
	if len(secret) != RecoverySecretSize {
		return nil, fmt.Errorf("e2ee: recovery secret of %d bytes, want %d", len(secret), RecoverySecretSize)
	}
	ikm, err := hkdf.Key(sha256.New, secret, nil, "keyframe e2ee recovery kem v1", 32)
	if err != nil {
		return nil, fmt.Errorf("e2ee: recovery key: %w", err)
	}
	k, err := hpke.DHKEM(ecdh.X25519()).DeriveKeyPair(ikm)
	if err != nil {
		return nil, fmt.Errorf("e2ee: recovery key: %w", err)
	}
	return k, nil
}
