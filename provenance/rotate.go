package provenance

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"fmt"
	"io"
)

// Key rotation: a device hands its identity to a new key with a rotate
// record. The record is signed by the old key, is the next record of the old
// key's chain (seq, prev), names the new key in next_key, and carries as its
// one media object a proof of possession: a COSE_Sign1 by the new key over a
// statement naming the old key and this record (from, event, seq). The old
// key's signature covers the proof's hash and the proof names the record, so
// each key vouches for the other and neither can be reused for another
// rotation. Specified in docs/envelope.md, "Key rotation".

// ProofContentType is the COSE content type (header 3) of a rotation proof.
// It differs from ContentType, so a proof can never pass as an event record
// nor a record as a proof.
const ProofContentType = "application/vnd.keyframe.rotation-proof+cbor"

// ProofMediaType is the media type a rotate record lists for its proof.
const ProofMediaType = "application/cose"

// rotationProof is the payload the new key signs.
type rotationProof struct {
	Version uint64 `cbor:"v"`     // Version
	From    []byte `cbor:"from"`  // the old key's SPKI (the signer of the rotate record)
	Event   string `cbor:"event"` // the rotate record's event ID
	Seq     uint64 `cbor:"seq"`   // the rotate record's seq
}

// Rotate makes a rotate record: old hands the device's identity to next. p is
// the record as the old device's next record: Device (old's device ID), Event,
// Seq, Prev, Boot, Time and KeyStore as for any record; Rotate sets Kind to
// KindRotate, NextKey to next's SPKI and Media to the proof, which it signs
// with next, and leaves Motion as given (a rotate record has no motion: leave
// it zero). chain is the old key's certificate chain for the x5chain header,
// or nil (see SignWithChain). The returned bundle holds the envelope and the
// proof as its one media object; upload it as any record, kind "rotate".
func Rotate(rnd io.Reader, old, next crypto.Signer, p *Payload, chain [][]byte) (*Bundle, error) {
	oldSPKI, oldID, err := signerKey(old)
	if err != nil {
		return nil, fmt.Errorf("provenance: rotate: old key: %w", err)
	}
	nextSPKI, nextID, err := signerKey(next)
	if err != nil {
		return nil, fmt.Errorf("provenance: rotate: new key: %w", err)
	}
	if bytes.Equal(oldSPKI, nextSPKI) {
		return nil, fmt.Errorf("provenance: rotate: the new key is the old key")
	}
	if p.Device != oldID {
		return nil, fmt.Errorf("provenance: rotate: payload device %q is not the old key's %q", p.Device, oldID)
	}
	if !validID(p.Event) {
		return nil, fmt.Errorf("provenance: rotate: %w: event %q is not 1-64 characters of [A-Za-z0-9_-]", ErrMalformed, p.Event)
	}
	statement, err := encMode.Marshal(&rotationProof{Version: Version, From: oldSPKI, Event: p.Event, Seq: p.Seq})
	if err != nil {
		return nil, fmt.Errorf("provenance: rotate: encode proof: %w", err)
	}
	proof, err := sign1(rnd, next, ProofContentType, nextID, nextSPKI, nil, statement)
	if err != nil {
		return nil, fmt.Errorf("provenance: rotate: proof: %w", err)
	}
	p.Kind = KindRotate
	p.NextKey = nextSPKI
	p.Media = []Media{NewMedia(RoleRotationProof, ProofMediaType, proof)}
	env, err := signRecord(rnd, old, p, chain)
	if err != nil {
		return nil, err
	}
	return &Bundle{Envelope: env, Media: [][]byte{proof}}, nil
}

// checkRotatePayload checks what a rotate record's payload must hold (step 12
// of docs/envelope.md §8): a new key that is a canonical P-256 or Ed25519 SPKI
// other than the signer's, and exactly one media object, the proof.
func checkRotatePayload(p *Payload, spki []byte) error {
	bad := func(field, why string) error {
		return fmt.Errorf("provenance: %w: %s %s", ErrMalformed, field, why)
	}
	if len(p.NextKey) == 0 {
		return bad("next_key", "is missing from a rotate record")
	}
	pub, err := x509.ParsePKIXPublicKey(p.NextKey)
	if err != nil {
		return bad("next_key", "is not a SubjectPublicKeyInfo: "+err.Error())
	}
	if _, err := Algorithm(pub); err != nil {
		return bad("next_key", err.Error())
	}
	if again, err := x509.MarshalPKIXPublicKey(pub); err != nil || !bytes.Equal(again, p.NextKey) {
		return bad("next_key", "is not in canonical DER")
	}
	if bytes.Equal(p.NextKey, spki) {
		return bad("next_key", "is the signer's own key")
	}
	if len(p.Media) != 1 || p.Media[0].Role != RoleRotationProof || p.Media[0].Type != ProofMediaType {
		return bad("media", fmt.Sprintf("of a rotate record must be exactly one %q of type %q", RoleRotationProof, ProofMediaType))
	}
	return nil
}

// verifyProof checks a rotate record's proof (step 14 of docs/envelope.md §8):
// a COSE_Sign1 by the record's next_key, of ProofContentType, whose statement
// names the record's signer, event and seq.
func verifyProof(proof []byte, p *Payload, oldSPKI []byte) (*opened, error) {
	o, err := openSign1(proof, ProofContentType, false, p.NextKey, "rotation proof: ")
	if err != nil {
		return nil, err
	}
	var st rotationProof
	if err := decMode.Unmarshal(o.msg.Payload, &st); err != nil {
		return nil, fmt.Errorf("provenance: rotation proof: %w: %w", ErrMalformed, err)
	}
	if again, err := encMode.Marshal(&st); err != nil || !bytes.Equal(again, o.msg.Payload) {
		return nil, fmt.Errorf("provenance: rotation proof: %w: statement is not in deterministic CBOR", ErrMalformed)
	}
	switch {
	case st.Version != Version:
		return nil, fmt.Errorf("provenance: rotation proof: %w: version %d, want %d", ErrMalformed, st.Version, Version)
	case !bytes.Equal(st.From, oldSPKI) || st.Event != p.Event || st.Seq != p.Seq:
		return nil, fmt.Errorf("provenance: rotation proof: %w: it is for another record (event %q seq %d)", ErrMalformed, st.Event, st.Seq)
	}
	return o, nil
}
