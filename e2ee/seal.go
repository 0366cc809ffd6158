package e2ee

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
)

// The sealed object's fixed parts (docs/e2ee.md §4).
const (
	sealedMagic   = "KFE1"
	bindingLabel  = "keyframe e2ee v1\x00"
	wrapInfoLabel = "keyframe e2ee wrap v1\x00"
	commitLabel   = "keyframe e2ee commit v1\x00"

	kdfHKDFSHA256 uint16 = 0x0001
	aeadAES128GCM uint16 = 0x0001

	// KeySize is a content key's size (AES-128), NonceSize the content
	// nonce's, TagSize the GCM tag's.
	KeySize   = 16
	NonceSize = 12
	TagSize   = 16

	// MaxSealedSize bounds a sealed object.
	MaxSealedSize = 64 << 20
	// MaxRecipients bounds a sealed object's recipient list.
	MaxRecipients = MaxKeys

	fixedHeaderSize = 4 + 2 + 2 + 2 + 32 + 1 // magic, kem, kdf, aead, commit, n
	wrappedKeySize  = KeySize + TagSize
)

// The media roles a binding may name.
const (
	RoleThumbnail = "thumbnail"
	RoleFrames    = "frames"
	RoleLive      = "live"
)

// Errors of Open, for errors.Is.
var (
	// ErrNotRecipient: the object is not sealed to the given key.
	ErrNotRecipient = errors.New("e2ee: key is not among the object's recipients")
	// ErrOpen: authentication failed (the wrong binding, a changed byte, the
	// wrong private key).
	ErrOpen = errors.New("e2ee: sealed object does not open")
	// ErrCommit: the content key does not match the header's commitment.
	ErrCommit = errors.New("e2ee: content key does not match the commitment")
)

// encSize is the size of an HPKE encapsulated key of a KEM a key set may
// list.
func encSize(kem uint16) int {
	switch kem {
	case KEMX25519:
		return 32
	case KEMMLKEM768X25519:
		return 1120
	}
	return 0
}

// Binding is where a sealed object belongs (docs/e2ee.md §4).
type Binding struct {
	Owner  [32]byte // the owner fingerprint
	Device string
	Event  string // the live stream's id for a live key frame
	Seq    uint64 // 0 for a live key frame
	Role   string // RoleThumbnail, RoleFrames or RoleLive
}

func (b *Binding) check() error {
	switch b.Role {
	case RoleThumbnail, RoleFrames, RoleLive:
	default:
		return fmt.Errorf("e2ee: binding: role %q, want %s, %s or %s", b.Role, RoleThumbnail, RoleFrames, RoleLive)
	}
	if b.Device == "" {
		return errors.New("e2ee: binding: no device")
	}
	return nil
}

// Append appends the binding's bytes:
// "keyframe e2ee v1\0" ‖ owner ‖ lp(device) ‖ lp(event) ‖ uint64(seq) ‖ lp(role).
func (b *Binding) Append(dst []byte) []byte {
	dst = append(dst, bindingLabel...)
	dst = append(dst, b.Owner[:]...)
	dst = appendLP(dst, b.Device)
	dst = appendLP(dst, b.Event)
	dst = binary.BigEndian.AppendUint64(dst, b.Seq)
	return appendLP(dst, b.Role)
}

// Bytes is the binding's bytes.
func (b *Binding) Bytes() []byte {
	return b.Append(make([]byte, 0, len(bindingLabel)+32+12+8+len(b.Device)+len(b.Event)+len(b.Role)))
}

func appendLP(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

// Commit is SHA-256("keyframe e2ee commit v1\0" ‖ key).
func Commit(key []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(commitLabel))
	h.Write(key)
	var c [32]byte
	h.Sum(c[:0])
	return c
}

func wrapInfo(binding []byte) []byte {
	info := make([]byte, 0, len(wrapInfoLabel)+len(binding))
	return append(append(info, wrapInfoLabel...), binding...)
}

// recipient is a key of the set, parsed once.
type recipient struct {
	id  [16]byte
	kem uint16
	pub hpke.PublicKey
}

// Sealer seals objects to every key of one key set. It is safe for
// concurrent use.
type Sealer struct {
	ks    *KeySet
	owner [32]byte
	to    []recipient
}

// NewSealer parses the set's public keys.
func NewSealer(ks *KeySet) (*Sealer, error) {
	if ks == nil || len(ks.Keys) == 0 || len(ks.Keys) > MaxRecipients {
		return nil, errors.New("e2ee: sealer: no key set or a key set without 1 to 16 keys")
	}
	s := &Sealer{ks: ks, owner: ks.Owner(), to: make([]recipient, len(ks.Keys))}
	for i, k := range ks.Keys {
		pub, err := newPublicKey(k.KEM, k.Pub)
		if err != nil {
			return nil, fmt.Errorf("e2ee: sealer: keys[%d]: %w", i, err)
		}
		id, err := hex.DecodeString(k.ID)
		if err != nil || len(id) != 16 || k.ID != KeyID(k.KEM, k.Pub) {
			return nil, fmt.Errorf("e2ee: sealer: keys[%d].id %q is not the key's id", i, k.ID)
		}
		s.to[i] = recipient{kem: k.KEM, pub: pub}
		copy(s.to[i].id[:], id)
	}
	return s, nil
}

// KeySet is the set s seals to.
func (s *Sealer) KeySet() *KeySet { return s.ks }

// Seal seals plaintext to every key of the set, bound to b; b.Owner is set
// from the key set.
func (s *Sealer) Seal(b Binding, plaintext []byte) ([]byte, error) {
	var key [KeySize]byte
	var nonce [NonceSize]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("e2ee: seal: %w", err)
	}
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("e2ee: seal: %w", err)
	}
	return s.seal(b, plaintext, key[:], nonce[:], Commit(key[:]))
}

// seal is Seal with the content key, nonce and commitment given (tests
// build a wrong commitment with it).
func (s *Sealer) seal(b Binding, plaintext, key, nonce []byte, commit [32]byte) ([]byte, error) {
	b.Owner = s.owner
	if err := b.check(); err != nil {
		return nil, err
	}
	headerSize := fixedHeaderSize + NonceSize
	for _, r := range s.to {
		headerSize += 16 + 2 + 2 + encSize(r.kem) + 2 + wrappedKeySize
	}
	if headerSize+len(plaintext)+TagSize > MaxSealedSize {
		return nil, fmt.Errorf("e2ee: seal: %d bytes of plaintext, more than a sealed object holds (%d bytes)", len(plaintext), MaxSealedSize)
	}
	binding := b.Bytes()
	info := wrapInfo(binding)
	out := make([]byte, 0, headerSize+len(plaintext)+TagSize)
	out = append(out, sealedMagic...)
	out = binary.BigEndian.AppendUint16(out, s.to[0].kem)
	out = binary.BigEndian.AppendUint16(out, kdfHKDFSHA256)
	out = binary.BigEndian.AppendUint16(out, aeadAES128GCM)
	out = append(out, commit[:]...)
	out = append(out, byte(len(s.to)))
	for i, r := range s.to {
		enc, sender, err := hpke.NewSender(r.pub, hpke.HKDFSHA256(), hpke.AES128GCM(), info)
		if err != nil {
			return nil, fmt.Errorf("e2ee: seal: recipient %d: %w", i, err)
		}
		wk, err := sender.Seal(nil, key)
		if err != nil {
			return nil, fmt.Errorf("e2ee: seal: recipient %d: %w", i, err)
		}
		out = append(out, r.id[:]...)
		out = binary.BigEndian.AppendUint16(out, r.kem)
		out = binary.BigEndian.AppendUint16(out, uint16(len(enc)))
		out = append(out, enc...)
		out = binary.BigEndian.AppendUint16(out, uint16(len(wk)))
		out = append(out, wk...)
	}
	out = append(out, nonce...)
	if len(out) != headerSize {
		return nil, fmt.Errorf("e2ee: seal: header of %d bytes, want %d", len(out), headerSize)
	}
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	aad := append(binding, out...)
	return gcm.Seal(out, nonce, plaintext, aad), nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("e2ee: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("e2ee: %w", err)
	}
	return gcm, nil
}

// Header is a sealed object's header. Its slices point into the object.
type Header struct {
	KEM, KDF, AEAD uint16
	Commit         [32]byte
	Recipients     []Recipient
	Nonce          []byte
	Size           int // bytes of header: the content ciphertext starts here
}

// Recipient is one wrapped copy of the content key.
type Recipient struct {
	KeyID [16]byte
	KEM   uint16
	Enc   []byte // HPKE encapsulated key
	WK    []byte // HPKE ciphertext of the content key
}

// ID is the recipient key's id in hex, as in a key set.
func (r *Recipient) ID() string { return hex.EncodeToString(r.KeyID[:]) }

// ParseHeader parses a sealed object's header, bounded: 1 to 16
// recipients, encapsulated and wrapped keys of the sizes their KEM gives, at
// most 64 MiB in all, and a content ciphertext of at least a tag.
func ParseHeader(sealed []byte) (*Header, error) {
	const what = "sealed header"
	if len(sealed) > MaxSealedSize {
		return nil, fieldErr(what, "", "%d bytes, more than %d", len(sealed), MaxSealedSize)
	}
	if len(sealed) < fixedHeaderSize {
		return nil, fieldErr(what, "", "%d bytes, shorter than a header", len(sealed))
	}
	if string(sealed[:4]) != sealedMagic {
		return nil, fieldErr(what, "magic", "%q, want %q", sealed[:4], sealedMagic)
	}
	h := &Header{
		KEM:  binary.BigEndian.Uint16(sealed[4:]),
		KDF:  binary.BigEndian.Uint16(sealed[6:]),
		AEAD: binary.BigEndian.Uint16(sealed[8:]),
	}
	if h.KDF != kdfHKDFSHA256 {
		return nil, fieldErr(what, "kdf_id", "%#04x, want %#04x", h.KDF, kdfHKDFSHA256)
	}
	if h.AEAD != aeadAES128GCM {
		return nil, fieldErr(what, "aead_id", "%#04x, want %#04x", h.AEAD, aeadAES128GCM)
	}
	copy(h.Commit[:], sealed[10:42])
	n := int(sealed[42])
	if n < 1 || n > MaxRecipients {
		return nil, fieldErr(what, "n", "%d recipients, want 1 to %d", n, MaxRecipients)
	}
	h.Recipients = make([]Recipient, n)
	off := fixedHeaderSize
	u16 := func(field string) (int, error) {
		if len(sealed)-off < 2 {
			return 0, fieldErr(what, field, "truncated")
		}
		v := binary.BigEndian.Uint16(sealed[off:])
		off += 2
		return int(v), nil
	}
	for i := range h.Recipients {
		f := "recipients[" + strconv.Itoa(i) + "]."
		r := &h.Recipients[i]
		if len(sealed)-off < 16 {
			return nil, fieldErr(what, f+"key_id", "truncated")
		}
		copy(r.KeyID[:], sealed[off:])
		off += 16
		for _, prev := range h.Recipients[:i] {
			if prev.KeyID == r.KeyID {
				return nil, fieldErr(what, f+"key_id", "%x listed twice", r.KeyID)
			}
		}
		kem, err := u16(f + "kem")
		if err != nil {
			return nil, err
		}
		r.KEM = uint16(kem)
		want := encSize(r.KEM)
		if want == 0 {
			return nil, fieldErr(what, f+"kem", "%d is not a supported KEM", r.KEM)
		}
		encLen, err := u16(f + "enc_len")
		if err != nil {
			return nil, err
		}
		if encLen != want {
			return nil, fieldErr(what, f+"enc_len", "%d, want %d for kem %d", encLen, want, r.KEM)
		}
		if len(sealed)-off < encLen {
			return nil, fieldErr(what, f+"enc", "truncated")
		}
		r.Enc = sealed[off : off+encLen : off+encLen]
		off += encLen
		wkLen, err := u16(f + "wk_len")
		if err != nil {
			return nil, err
		}
		if wkLen != wrappedKeySize {
			return nil, fieldErr(what, f+"wk_len", "%d, want %d", wkLen, wrappedKeySize)
		}
		if len(sealed)-off < wkLen {
			return nil, fieldErr(what, f+"wk", "truncated")
		}
		r.WK = sealed[off : off+wkLen : off+wkLen]
		off += wkLen
	}
	if h.KEM != h.Recipients[0].KEM {
		return nil, fieldErr(what, "kem_id", "%#04x, the first recipient's is %#04x", h.KEM, h.Recipients[0].KEM)
	}
	if len(sealed)-off < NonceSize {
		return nil, fieldErr(what, "nonce", "truncated")
	}
	h.Nonce = sealed[off : off+NonceSize : off+NonceSize]
	off += NonceSize
	if len(sealed)-off < TagSize {
		return nil, fieldErr(what, "ct", "%d bytes, shorter than the %d-byte tag", len(sealed)-off, TagSize)
	}
	h.Size = off
	return h, nil
}

// Recipient is the entry for the key with the given id (hex), or nil.
func (h *Header) Recipient(keyID string) *Recipient {
	var id [16]byte
	if len(keyID) != 32 {
		return nil
	}
	if _, err := hex.Decode(id[:], []byte(keyID)); err != nil {
		return nil
	}
	for i := range h.Recipients {
		if h.Recipients[i].KeyID == id {
			return &h.Recipients[i]
		}
	}
	return nil
}

// Open opens a sealed object with the private key whose id is keyID, under
// the binding b the record gives (b.Owner: the owner's fingerprint).
func Open(sealed []byte, b Binding, keyID string, priv hpke.PrivateKey) ([]byte, error) {
	key, h, err := openKey(sealed, b, keyID, priv)
	if err != nil {
		return nil, err
	}
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	aad := append(b.Bytes(), sealed[:h.Size]...)
	pt, err := gcm.Open(nil, h.Nonce, sealed[h.Size:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w: content: %w", ErrOpen, err)
	}
	return pt, nil
}

// openKey parses the header, unwraps the content key for keyID and checks
// it against the commitment.
func openKey(sealed []byte, b Binding, keyID string, priv hpke.PrivateKey) ([]byte, *Header, error) {
	if err := b.check(); err != nil {
		return nil, nil, err
	}
	if priv == nil {
		return nil, nil, errors.New("e2ee: open: no private key")
	}
	h, err := ParseHeader(sealed)
	if err != nil {
		return nil, nil, err
	}
	r := h.Recipient(keyID)
	if r == nil {
		return nil, nil, fmt.Errorf("%w: key %q, the object names %d other key(s)", ErrNotRecipient, keyID, len(h.Recipients))
	}
	if kem := priv.KEM().ID(); kem != r.KEM {
		return nil, nil, fmt.Errorf("e2ee: open: the private key is of kem %d, the object's entry for %s of kem %d", kem, keyID, r.KEM)
	}
	rcp, err := hpke.NewRecipient(r.Enc, priv, hpke.HKDFSHA256(), hpke.AES128GCM(), wrapInfo(b.Bytes()))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: key wrap: %w", ErrOpen, err)
	}
	key, err := rcp.Open(nil, r.WK)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: key wrap: %w", ErrOpen, err)
	}
	c := Commit(key)
	if len(key) != KeySize || subtle.ConstantTimeCompare(c[:], h.Commit[:]) != 1 {
		return nil, nil, ErrCommit
	}
	return key, h, nil
}

// Open opens a sealed object with whichever of o's keys it names, under b
// with b.Owner set to o's fingerprint.
func (o *Owner) Open(sealed []byte, b Binding) ([]byte, error) {
	h, err := ParseHeader(sealed)
	if err != nil {
		return nil, err
	}
	b.Owner = o.Fingerprint()
	for _, r := range h.Recipients {
		if k := o.Key(r.ID()); k != nil {
			return Open(sealed, b, k.ID, k.Priv)
		}
	}
	return nil, fmt.Errorf("%w: none of the owner's %d keys", ErrNotRecipient, len(o.Keys))
}
