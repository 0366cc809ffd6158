package claimcode

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	spki := []byte("receiver spki")
	c, err := New(rand.Reader, spki)
	if err != nil {
		t.Fatal(err)
	}
	s := c.String()
	if len(s) != Len || strings.Count(s, "-") != 5 {
		t.Fatalf("code %q: want %d characters in six dashed groups", s, Len)
	}
	for _, typed := range []string{s, strings.ToLower(s), strings.ReplaceAll(s, "-", ""), " " + strings.ReplaceAll(s, "-", " ") + " "} {
		p, err := Parse(typed)
		if err != nil {
			t.Fatalf("Parse(%q): %v", typed, err)
		}
		if p != c {
			t.Fatalf("Parse(%q) = %v, want %v", typed, p, c)
		}
	}
	if !c.MatchesSPKI(spki) || c.MatchesSPKI([]byte("another key")) {
		t.Error("MatchesSPKI does not tell the pinned key from another")
	}
	if c.Pin() != Pin(spki) || len(c.Pin()) != PinChars {
		t.Errorf("pin %q, want %q", c.Pin(), Pin(spki))
	}
	if !ValidID(c.ID()) || bytes.Contains(c.Verifier(), []byte(c.ID())) {
		t.Errorf("ID %q", c.ID())
	}
	d, err := New(rand.Reader, spki)
	if err != nil {
		t.Fatal(err)
	}
	if d.ID() == c.ID() || bytes.Equal(d.Verifier(), c.Verifier()) || d.Pin() != c.Pin() {
		t.Error("two codes for one receiver: want other secrets, the same pin")
	}
}

// TestCrockfordAliases: I and L read as 1, O as 0.
func TestCrockfordAliases(t *testing.T) {
	c := Code{secret: "0123456789AB", pin: "CDEFGHJKMNPQRSTV1"}
	s := c.String()
	typed := strings.NewReplacer("0", "o", "1", "l").Replace(s)
	p, err := Parse(typed)
	if err != nil || p != c {
		t.Fatalf("Parse(%q) = %v, %v; want %v", typed, p, err, c)
	}
}

// TestCheckCatchesTypos: every single wrong character is caught by the
// check character, and so are most swaps of neighbours.
func TestCheckCatchesTypos(t *testing.T) {
	c, err := New(rand.Reader, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	canon := strings.ReplaceAll(c.String(), "-", "")
	for i := range canon {
		for _, r := range alphabet {
			if byte(r) == canon[i] {
				continue
			}
			typo := canon[:i] + string(r) + canon[i+1:]
			if _, err := Parse(typo); !errors.Is(err, ErrCheck) {
				t.Fatalf("typo at %d (%q): err %v, want ErrCheck", i, typo, err)
			}
		}
	}
	caught, swaps := 0, 0
	for i := 0; i+1 < len(canon); i++ {
		if canon[i] == canon[i+1] {
			continue
		}
		swaps++
		typo := canon[:i] + string(canon[i+1]) + string(canon[i]) + canon[i+2:]
		if _, err := Parse(typo); errors.Is(err, ErrCheck) {
			caught++
		}
	}
	if caught < swaps-2 {
		t.Errorf("%d of %d adjacent swaps caught", caught, swaps)
	}
}

func TestParseRefuses(t *testing.T) {
	c, err := New(rand.Reader, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	s := c.String()
	for _, bad := range []string{"", s[:Len-1], s + "0", strings.Replace(s, s[:1], "U", 1), s[:3] + "é" + s[4:], strings.Repeat("0", 1000)} {
		if _, err := Parse(bad); !errors.Is(err, ErrFormat) {
			t.Errorf("Parse(%q): %v, want ErrFormat", bad, err)
		}
	}
}

func TestSignVerify(t *testing.T) {
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	msg := JoinMessage([]byte("nonce"), "id", "pin", "device", 7)
	for _, signer := range []struct {
		name string
		key  crypto.Signer
	}{{"p256", ek}, {"ed25519", edk}} {
		spki, err := x509.MarshalPKIXPublicKey(signer.key.Public())
		if err != nil {
			t.Fatal(err)
		}
		sig, err := Sign(rand.Reader, signer.key, msg)
		if err != nil {
			t.Fatalf("%s: %v", signer.name, err)
		}
		if _, err := Verify(spki, msg, sig); err != nil {
			t.Errorf("%s: %v", signer.name, err)
		}
		other := JoinMessage([]byte("nonce"), "id", "pin", "device", 8)
		if _, err := Verify(spki, other, sig); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: a signature over seq 7 verified for seq 8: %v", signer.name, err)
		}
	}
}

// TestJoinMessageUnambiguous: moving bytes from one field to the next makes
// another message.
func TestJoinMessageUnambiguous(t *testing.T) {
	a := JoinMessage([]byte("ab"), "c", "p", "d", 1)
	b := JoinMessage([]byte("a"), "bc", "p", "d", 1)
	if bytes.Equal(a, b) {
		t.Fatal("field boundaries are not encoded")
	}
}

// TestCommittedCode: a code with an owner commitment is 50 characters in ten
// groups, parses back with the same secret, pin and commitment, matches the
// committed owner's first 100 bits only, and a typo anywhere is caught.
func TestCommittedCode(t *testing.T) {
	spki := []byte("receiver spki")
	commit := bytes.Repeat([]byte{0xa5}, CommitBytes)
	commit[CommitBytes-1] &^= 0x0f // the low 4 bits are not committed
	c, err := NewCommitted(rand.Reader, spki, commit)
	if err != nil {
		t.Fatal(err)
	}
	s := c.String()
	if len(s) != LenE2EE || strings.Count(s, "-") != 9 {
		t.Fatalf("code %q: want %d characters in ten dashed groups", s, LenE2EE)
	}
	p, err := Parse(strings.ToLower(strings.ReplaceAll(s, "-", " ")))
	if err != nil || p != c {
		t.Fatalf("Parse(%q) = %v, %v; want %v", s, p, err, c)
	}
	if !p.HasCommit() || !bytes.Equal(p.Commit(), commit) || !p.MatchesSPKI(spki) {
		t.Errorf("commitment %x (has %v), want %x", p.Commit(), p.HasCommit(), commit)
	}
	if !p.MatchesCommit(commit) {
		t.Error("the code does not match its own commitment")
	}
	// Any of the 100 bits differs: no match; bits past 100 do not count.
	for bit := range CommitBits {
		other := bytes.Clone(commit)
		other[bit/8] ^= 0x80 >> (bit % 8)
		if p.MatchesCommit(other) {
			t.Fatalf("bit %d flipped: still matches", bit)
		}
	}
	longer := append(bytes.Clone(commit), 0xff)
	longer[CommitBytes-1] |= 0x0f
	if !p.MatchesCommit(longer) {
		t.Error("bits past the 100 committed ones changed the match")
	}
	// The same secret without the commitment is the 30-character code, with
	// the same ID: the receiver tells them apart by the commitment it stored.
	plain := p.WithoutCommit()
	if plain.HasCommit() || plain.Commit() != nil || plain.ID() != p.ID() || len(plain.String()) != Len || plain.MatchesCommit(commit) {
		t.Errorf("without the commitment: %q", plain.String())
	}
	canon := strings.ReplaceAll(s, "-", "")
	for i := range canon {
		r := alphabet[(strings.IndexByte(alphabet, canon[i])+1)%32]
		if _, err := Parse(canon[:i] + string(r) + canon[i+1:]); !errors.Is(err, ErrCheck) {
			t.Fatalf("typo at %d: %v, want ErrCheck", i, err)
		}
	}
	for _, bad := range []string{canon[:CharsE2EE-1], canon + "0", canon[:40]} {
		if _, err := Parse(bad); !errors.Is(err, ErrFormat) {
			t.Errorf("Parse(%d characters): %v, want ErrFormat", len(bad), err)
		}
	}
	if _, err := NewCommitted(rand.Reader, spki, commit[:12]); err == nil {
		t.Error("a commitment of 12 bytes was taken")
	}
}
