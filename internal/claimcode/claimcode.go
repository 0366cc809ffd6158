// Package claimcode is what the receiver and the camera share about claiming a
// camera (docs/claim.md): the claim code a signed-in owner gets and types on
// the camera, the message the device key signs to prove possession, and the
// JSON bodies of the two camera-facing endpoints. Both sides parse a code
// and build the signed message here, so they cannot disagree.
//
// A code is 30 characters of Crockford's base32, written in six groups of
// five with dashes (e.g. "7K3QD-X9M2A-4TB8R-...-..."): 12 characters (60
// bits) of random secret, 17 characters (85 bits) of pin — the first bits
// of the SHA-256 of the receiver's TLS certificate's SubjectPublicKeyInfo —
// and one check character (Luhn mod 32), so a typing mistake is caught on
// the camera before anything is sent.
//
// A code may also commit to its owner's end-to-end encryption identity
// (docs/e2ee.md §5): 20 more characters (100 bits, the start of the owner
// fingerprint) before the check character, 50 characters in ten groups. The
// camera then accepts only a key set of that identity from the join answer.
//
// It imports nothing of the module: the receiver (cloud side) and the device
// side both use it.
package claimcode

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The shape of a code.
const (
	SecretChars = 12                                 // characters of secret
	PinChars    = 17                                 // characters of pin
	Chars       = SecretChars + PinChars + 1         // characters of a code, with the check character
	SecretBits  = 5 * SecretChars                    // 60
	PinBits     = 5 * PinChars                       // 85
	groupLen    = 5                                  // characters between dashes
	Len         = Chars + Chars/groupLen - 1         // length of a code as written, with dashes (35)
	alphabet    = "0123456789ABCDEFGHJKMNPQRSTVWXYZ" // Crockford's base32: no I, L, O, U

	// CommitChars is the length of the owner commitment of a code that has
	// one: the first CommitBits bits of the owner fingerprint.
	CommitChars = 20
	CommitBits  = 5 * CommitChars                    // 100
	CommitBytes = (CommitBits + 7) / 8               // 13: e2ee.ClaimCommit's length
	CharsE2EE   = Chars + CommitChars                // 50
	LenE2EE     = CharsE2EE + CharsE2EE/groupLen - 1 // 59
)

// The camera-facing endpoints of a receiver (relative to its base URL).
const (
	ChallengePath = "/v1/claim/challenge"
	JoinPath      = "/v1/claim/join"
)

// Errors of Parse, returned wrapped.
var (
	// ErrFormat reports a code that is not 30 characters of Crockford's
	// base32 (dashes and spaces aside).
	ErrFormat = errors.New("not a claim code (want 30 characters like XXXXX-XXXXX-XXXXX-XXXXX-XXXXX-XXXXX, or 50 in ten groups)")
	// ErrCheck reports a code whose check character does not match: a
	// character was mistyped.
	ErrCheck = errors.New("the claim code's check character does not match: a character is mistyped")
)

// Code is a parsed claim code.
type Code struct {
	secret string // SecretChars canonical characters
	pin    string // PinChars canonical characters
	commit string // CommitChars canonical characters, or "" (no e2ee)
}

// New makes a code with a fresh secret from rnd for the receiver whose
// certificate has the SubjectPublicKeyInfo spki.
func New(rnd io.Reader, spki []byte) (Code, error) {
	var b [8]byte
	if _, err := io.ReadFull(rnd, b[:]); err != nil {
		return Code{}, fmt.Errorf("claimcode: random secret: %w", err)
	}
	return Code{secret: encodeBits(b[:], SecretChars), pin: Pin(spki)}, nil
}

// NewCommitted makes a code as New does that also commits to an owner's
// identity: commit is what e2ee.ClaimCommit gives for the owner fingerprint
// (its first CommitBits bits are kept).
func NewCommitted(rnd io.Reader, spki, commit []byte) (Code, error) {
	if len(commit) < CommitBytes {
		return Code{}, fmt.Errorf("claimcode: owner commitment of %d bytes, want %d", len(commit), CommitBytes)
	}
	c, err := New(rnd, spki)
	if err != nil {
		return Code{}, err
	}
	c.commit = encodeBits(commit, CommitChars)
	return c, nil
}

// Pin is the pin of a certificate's SubjectPublicKeyInfo as it is written in
// a code: the first PinBits bits of its SHA-256, PinChars characters.
func Pin(spki []byte) string {
	sum := sha256.Sum256(spki)
	return encodeBits(sum[:], PinChars)
}

// encodeBits writes the first 5n bits of b as n base32 characters.
func encodeBits(b []byte, n int) string {
	out := make([]byte, n)
	for i := range n {
		v := 0
		for j := range 5 {
			bit := i*5 + j
			v = v<<1 | int(b[bit/8]>>(7-bit%8)&1)
		}
		out[i] = alphabet[v]
	}
	return string(out)
}

// Parse reads a code as a person may type it: case does not matter, dashes
// and spaces are ignored, and I, L (read as 1) and O (read as 0) are
// accepted as Crockford's base32 allows.
func Parse(s string) (Code, error) {
	if len(s) > 4*LenE2EE {
		return Code{}, fmt.Errorf("claimcode: %w", ErrFormat)
	}
	var b strings.Builder
	for _, c := range strings.ToUpper(s) {
		switch {
		case c == '-' || c == ' ':
			continue
		case c == 'I' || c == 'L':
			c = '1'
		case c == 'O':
			c = '0'
		}
		if c > 0x7f || strings.IndexByte(alphabet, byte(c)) < 0 {
			return Code{}, fmt.Errorf("claimcode: %q is not a character of a claim code: %w", c, ErrFormat)
		}
		b.WriteRune(c)
	}
	t := b.String()
	if len(t) != Chars && len(t) != CharsE2EE {
		return Code{}, fmt.Errorf("claimcode: %d characters: %w", len(t), ErrFormat)
	}
	if checkChar(t[:len(t)-1]) != t[len(t)-1] {
		return Code{}, fmt.Errorf("claimcode: %w", ErrCheck)
	}
	c := Code{secret: t[:SecretChars], pin: t[SecretChars : SecretChars+PinChars]}
	if len(t) == CharsE2EE {
		c.commit = t[SecretChars+PinChars : CharsE2EE-1]
	}
	return c, nil
}

// checkChar is the Luhn mod 32 check character of data (canonical
// characters): it catches any one wrong character and most swaps of two
// adjacent characters.
func checkChar(data string) byte {
	sum, factor := 0, 2
	for i := len(data) - 1; i >= 0; i-- {
		v := factor * strings.IndexByte(alphabet, data[i])
		sum += v/32 + v%32
		factor = 3 - factor
	}
	return alphabet[(32-sum%32)%32]
}

// String writes the code in groups of five with dashes.
func (c Code) String() string {
	t := c.secret + c.pin + c.commit
	t += string(checkChar(t))
	var b strings.Builder
	for i := 0; i < len(t); i += groupLen {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(t[i:min(i+groupLen, len(t))])
	}
	return b.String()
}

// IsZero reports whether c is the zero Code (no code).
func (c Code) IsZero() bool { return c.secret == "" }

// Pin returns the code's pin (PinChars characters).
func (c Code) Pin() string { return c.pin }

// HasCommit reports whether the code commits to an owner's identity (a
// 50-character code): the camera must then get and check its key set.
func (c Code) HasCommit() bool { return c.commit != "" }

// Commit returns the code's owner commitment as CommitBytes bytes (the
// first CommitBits bits, the rest zero, as e2ee.ClaimCommit gives them), or
// nil for a code without one.
func (c Code) Commit() []byte {
	if c.commit == "" {
		return nil
	}
	out := make([]byte, CommitBytes)
	for i := range CommitChars {
		v := strings.IndexByte(alphabet, c.commit[i])
		for j := range 5 {
			bit := i*5 + j
			out[bit/8] |= byte(v>>(4-j)&1) << (7 - bit%8)
		}
	}
	return out
}

// MatchesCommit reports whether the code commits to the owner whose
// commitment (e2ee.ClaimCommit of the fingerprint) is commit: the first
// CommitBits bits agree. A code without a commitment matches nothing.
func (c Code) MatchesCommit(commit []byte) bool {
	return c.commit != "" && len(commit) >= CommitBytes && encodeBits(commit, CommitChars) == c.commit
}

// WithoutCommit returns the code without its owner commitment: the same
// secret and pin.
func (c Code) WithoutCommit() Code { c.commit = ""; return c }

// MatchesSPKI reports whether a certificate's SubjectPublicKeyInfo is the one
// the code pins.
func (c Code) MatchesSPKI(spki []byte) bool { return c.pin != "" && Pin(spki) == c.pin }

// ID is the code's public name: 32 hex characters of a hash of the secret
// (domain-separated from Verifier). The camera sends it to ask for a
// challenge; it tells nothing about the secret.
func (c Code) ID() string {
	sum := sha256.Sum256([]byte("keyframe claim id v1\x00" + c.secret))
	return hex.EncodeToString(sum[:16])
}

// Verifier is what the receiver stores to recognise the secret: its
// SHA-256, domain-separated from ID.
func (c Code) Verifier() []byte {
	sum := sha256.Sum256([]byte("keyframe claim verifier v1\x00" + c.secret))
	return sum[:]
}

// ValidID reports whether s has the form of an ID.
func ValidID(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// ChallengeRequest is the body of POST ChallengePath.
type ChallengeRequest struct {
	Claim string `json:"claim"` // Code.ID
}

// ChallengeResponse is the receiver's answer: a fresh nonce for one join.
type ChallengeResponse struct {
	Nonce     []byte `json:"nonce"`        // NonceSize random bytes, single use
	ExpiresIn int    `json:"expires_in_s"` // seconds the nonce stays valid
}

// NonceSize is the length of a challenge nonce.
const NonceSize = 32

// JoinRequest is the body of POST JoinPath: the code, and the device key's
// proof of possession over the challenge.
type JoinRequest struct {
	Code      string `json:"code"`      // the claim code as typed (Parse)
	Nonce     []byte `json:"nonce"`     // from the ChallengeResponse
	Device    string `json:"device"`    // the device ID, provenance.DeviceID of the key
	SPKI      []byte `json:"spki"`      // the device key, DER SubjectPublicKeyInfo
	Seq       uint64 `json:"seq"`       // the device's next sequence number: its pairing starts there
	Signature []byte `json:"signature"` // Sign over JoinMessage
}

// JoinResponse is the receiver's answer to a successful join.
type JoinResponse struct {
	Device    string `json:"device"`     // the enrolled device ID
	Owner     string `json:"owner"`      // the owner it is paired to now
	UploadURL string `json:"upload_url"` // where the camera uploads (the receiver's base URL)
	// KeySet is the owner's signed key set (docs/e2ee.md §3: {"keyset",
	// "sig"}), given when the code commits to the owner's identity; the
	// camera checks it against the commitment and pins it.
	KeySet json.RawMessage `json:"keyset,omitempty"`
}

// MaxJoinResponse bounds a join answer as the camera reads it: a signed key
// set is at most about 22 KiB of JSON (a 16 KiB set in base64url).
const MaxJoinResponse = 64 << 10

// MaxBody bounds the request bodies of both endpoints (a join with a P-256
// key is about 500 bytes).
const MaxBody = 4 << 10

// JoinMessage is the message the device key signs to join: a domain
// separation string, then the nonce, the code's ID, the code's pin (the
// receiver it was made for), the device ID and the sequence number, each
// length-prefixed (uint32, big-endian) but the last (uint64).
func JoinMessage(nonce []byte, id, pin, device string, seq uint64) []byte {
	var b bytes.Buffer
	b.WriteString("keyframe claim join v1\x00")
	for _, f := range [][]byte{nonce, []byte(id), []byte(pin), []byte(device)} {
		binary.Write(&b, binary.BigEndian, uint32(len(f)))
		b.Write(f)
	}
	binary.Write(&b, binary.BigEndian, seq)
	return b.Bytes()
}

// Sign signs msg with a device key: ECDSA P-256 over its SHA-256 (ASN.1
// signature), or Ed25519 over msg itself.
func Sign(rnd io.Reader, signer crypto.Signer, msg []byte) ([]byte, error) {
	switch pub := signer.Public().(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			break
		}
		sum := sha256.Sum256(msg)
		sig, err := signer.Sign(rnd, sum[:], crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("claimcode: sign: %w", err)
		}
		return sig, nil
	case ed25519.PublicKey:
		sig, err := signer.Sign(rnd, msg, crypto.Hash(0))
		if err != nil {
			return nil, fmt.Errorf("claimcode: sign: %w", err)
		}
		return sig, nil
	}
	return nil, fmt.Errorf("claimcode: sign: unsupported key type %T (want ECDSA P-256 or Ed25519)", signer.Public())
}

// ErrSignature reports a signature that does not verify.
var ErrSignature = errors.New("the signature does not verify")

// Verify checks a signature made by Sign with the key in spki (DER
// SubjectPublicKeyInfo) and returns the key.
func Verify(spki, msg, sig []byte) (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, fmt.Errorf("claimcode: device key: %w", err)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			break
		}
		sum := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(k, sum[:], sig) {
			return nil, fmt.Errorf("claimcode: %w", ErrSignature)
		}
		return pub, nil
	case ed25519.PublicKey:
		if !ed25519.Verify(k, msg, sig) {
			return nil, fmt.Errorf("claimcode: %w", ErrSignature)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("claimcode: unsupported key type %T (want ECDSA P-256 or Ed25519)", pub)
}
