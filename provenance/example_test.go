package provenance_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/keyframe-cam/keyframe/provenance"
)

// The examples use the test-vector keys and media under testdata/vectors
// (TEST ONLY: their private halves are public), so that their device IDs,
// and so their output, are fixed. A device's key is the PKCS#8 PEM file
// `keyframe identity` creates (or lives in its TPM); a cloud knows the
// device's public key from enrolment (`keyframe identity -pubout`).

// loadDeviceKey reads a PKCS#8 PEM private key, as `keyframe identity`
// stores it in <device.data_dir>/device.key.
func loadDeviceKey(path string) crypto.Signer {
	b, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		log.Fatalf("%s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		log.Fatal(err)
	}
	return k.(crypto.Signer)
}

// loadPublicKey reads a PEM "PUBLIC KEY" block, as `keyframe identity
// -pubout` writes it.
func loadPublicKey(path string) crypto.PublicKey {
	b, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		log.Fatalf("%s: no PEM PUBLIC KEY block", path)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		log.Fatal(err)
	}
	return pub
}

// A record's round trip: the device signs a payload that binds a thumbnail
// by hash and puts envelope and thumbnail in one bundle; the cloud decodes
// the bundle, verifies it, and learns which device signed it.
func Example() {
	// On the device.
	key := loadDeviceKey("testdata/vectors/keys/device-a.key.pem")
	id, err := provenance.DeviceID(key.Public())
	if err != nil {
		log.Fatal(err)
	}
	thumb, err := os.ReadFile("testdata/vectors/start.jpg")
	if err != nil {
		log.Fatal(err)
	}
	env, err := provenance.Sign(nil, key, &provenance.Payload{
		Device:   id,
		Event:    "0mz4k7c1x9d2q8vr3h6a5b",
		Kind:     provenance.KindStart,
		Seq:      1,
		Boot:     "3f1c2a9e-6b7d-4e21-9a53-0c8d7e6f5a41",
		Time:     provenance.Time{UnixMs: 1764000000123, BootMs: 3600123, Clock: provenance.ClockSynced},
		Motion:   provenance.Motion{Frames: 1, PeakAreaPPM: 41250, Box: [4]int32{120, 64, 300, 240}, Width: 640, Height: 480},
		Media:    []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", thumb)},
		KeyStore: "file",
	})
	if err != nil {
		log.Fatal(err)
	}
	body, err := (&provenance.Bundle{Envelope: env, Media: [][]byte{thumb}}).Marshal()
	if err != nil {
		log.Fatal(err)
	}

	// In the cloud, body arrives as Content-Type provenance.BundleContentType.
	b, err := provenance.UnmarshalBundle(body)
	if err != nil {
		log.Fatal(err)
	}
	v, err := provenance.Verify(b.Envelope, b.Media, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("signed by device", v.Device)
	fmt.Println("event", v.Payload.Event, v.Payload.Kind, "seq", v.Payload.Seq)
	fmt.Println("thumbnail", v.Payload.Media[0].Type, len(b.Media[0]), "bytes")
	// Output:
	// signed by device usigogq6v6jnaht53hzv72ug6a
	// event 0mz4k7c1x9d2q8vr3h6a5b start seq 1
	// thumbnail image/jpeg 593 bytes
}

// A device signs an event's start and end records: the payload names the
// signing key's device ID, each record carries the next sequence number and
// the hash of the previous envelope (Prev), and media travel beside the
// envelope, bound by their hash.
func ExampleSign() {
	key := loadDeviceKey("testdata/vectors/keys/device-a.key.pem")
	id, err := provenance.DeviceID(key.Public())
	if err != nil {
		log.Fatal(err)
	}
	thumb, err := os.ReadFile("testdata/vectors/start.jpg")
	if err != nil {
		log.Fatal(err)
	}
	p := &provenance.Payload{
		Device:   id,
		Event:    "0mz4k7c1x9d2q8vr3h6a5b",
		Kind:     provenance.KindStart,
		Seq:      1,
		Boot:     "3f1c2a9e-6b7d-4e21-9a53-0c8d7e6f5a41",
		Time:     provenance.Time{UnixMs: 1764000000123, BootMs: 3600123, Clock: provenance.ClockSynced},
		Motion:   provenance.Motion{Frames: 1, PeakAreaPPM: 41250, Box: [4]int32{120, 64, 300, 240}, Width: 640, Height: 480},
		Media:    []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", thumb)},
		KeyStore: "file",
	}
	start, err := provenance.Sign(nil, key, p) // nil: crypto/rand
	if err != nil {
		log.Fatal(err)
	}

	// The end record: the next sequence number, chained to the start.
	prev := provenance.HashEnvelope(start)
	p.Kind, p.Seq, p.Prev = provenance.KindEnd, 2, prev[:]
	p.Time.UnixMs, p.Time.BootMs = p.Time.UnixMs+4000, p.Time.BootMs+4000
	p.Motion.DurationMs, p.Motion.Frames = 4000, 40
	end, err := provenance.Sign(nil, key, p)
	if err != nil {
		log.Fatal(err)
	}

	v, err := provenance.Verify(end, [][]byte{thumb}, key.Public())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("device", v.Device, "kind", v.Payload.Kind, "seq", v.Payload.Seq)
	fmt.Println("chained to the start record:", bytes.Equal(v.Payload.Prev, prev[:]))

	// A payload must name the signing key's own device ID.
	p.Device = "3eqon6c66uojezb5fjq3yqft5e"
	_, err = provenance.Sign(nil, key, p)
	fmt.Println("another device's ID refused:", err != nil)
	// Output:
	// device usigogq6v6jnaht53hzv72ug6a kind end seq 2
	// chained to the start record: true
	// another device's ID refused: true
}

// A cloud verifies an uploaded record against the key it enrolled for the
// device, and tells a tampered thumbnail and a record signed by another key
// apart by their sentinel errors.
func ExampleVerify() {
	enrolled := loadPublicKey("testdata/vectors/keys/device-a.pub.pem")
	body, err := os.ReadFile("testdata/vectors/ok-start.bundle") // an upload's body
	if err != nil {
		log.Fatal(err)
	}
	b, err := provenance.UnmarshalBundle(body)
	if err != nil {
		log.Fatal(err)
	}

	v, err := provenance.Verify(b.Envelope, b.Media, enrolled)
	if err != nil {
		log.Fatal(err)
	}
	p := v.Payload
	fmt.Println("device", v.Device, "event", p.Event, p.Kind, "seq", p.Seq)
	fmt.Println("captured", p.Time.UnixMs, "ms, clock", p.Time.Clock, "key in", p.KeyStore)

	// One flipped byte of the thumbnail.
	tampered := bytes.Clone(b.Media[0])
	tampered[100] ^= 1
	_, err = provenance.Verify(b.Envelope, [][]byte{tampered}, enrolled)
	fmt.Println("tampered thumbnail:", errors.Is(err, provenance.ErrMedia))

	// The same record checked against another device's enrolled key.
	other := loadPublicKey("testdata/vectors/keys/device-b.pub.pem")
	_, err = provenance.Verify(b.Envelope, b.Media, other)
	fmt.Println("not the enrolled key:", errors.Is(err, provenance.ErrKey))
	// Output:
	// device usigogq6v6jnaht53hzv72ug6a event 0mz4k7c1x9d2q8vr3h6a5b start seq 1
	// captured 1764000000123 ms, clock synced key in file
	// tampered thumbnail: true
	// not the enrolled key: true
}

// A bundle is one upload: the envelope and its media in the payload's
// order, as the CBOR array [envelope, [media...]]. UnmarshalBundle checks
// only the framing; Verify checks the contents.
func ExampleBundle() {
	env, err := os.ReadFile("testdata/vectors/ok-start.cose")
	if err != nil {
		log.Fatal(err)
	}
	thumb, err := os.ReadFile("testdata/vectors/start.jpg")
	if err != nil {
		log.Fatal(err)
	}
	body, err := (&provenance.Bundle{Envelope: env, Media: [][]byte{thumb}}).Marshal()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("Content-Type:", provenance.BundleContentType)

	b, err := provenance.UnmarshalBundle(body)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("envelope intact:", bytes.Equal(b.Envelope, env), "media:", len(b.Media))

	_, err = provenance.UnmarshalBundle([]byte("not a bundle"))
	fmt.Println("garbage is malformed:", errors.Is(err, provenance.ErrMalformed))
	// Output:
	// Content-Type: application/vnd.keyframe.bundle+cbor
	// envelope intact: true media: 1
	// garbage is malformed: true
}
