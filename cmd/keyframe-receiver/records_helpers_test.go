package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
	"github.com/keyframe-cam/keyframe/receiver"
)

// enrolledKey makes a P-256 device key and enrolls it in the receiver
// data directory dir; it returns the key and the device ID.
func enrolledKey(t *testing.T, dir string) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	id, err := receiver.Enroll(dir, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}))
	if err != nil {
		t.Fatal(err)
	}
	return key, id
}

// signedBundle returns the upload bundle of a start record of device id,
// signed with key, with a small thumbnail naming event.
func signedBundle(t *testing.T, key crypto.Signer, id, event string, seq uint64) []byte {
	t.Helper()
	thumb := []byte("thumbnail " + event)
	p := &provenance.Payload{Device: id, Event: event, Kind: provenance.KindStart, Seq: seq, Boot: "b",
		Time:  provenance.Time{UnixMs: 1, Clock: provenance.ClockSynced},
		Media: []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", thumb)}, KeyStore: "file"}
	env, err := provenance.Sign(rand.Reader, key, p)
	if err != nil {
		t.Fatal(err)
	}
	body, err := (&provenance.Bundle{Envelope: env, Media: [][]byte{thumb}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return body
}
