package e2ee

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// The fuzz targets' seeds are real objects; `go test -fuzz FuzzX ./e2ee`
// mutates them. The normal test run runs each seed once.

func FuzzParseHeader(f *testing.F) {
	o := mixedOwner(f)
	sealed, err := mustSealer(f, o).Seal(testBinding(), []byte("seed"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed)
	f.Add(sealed[:fixedHeaderSize])
	f.Add([]byte("KFE1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b)
		if err != nil {
			return
		}
		if h.Size > len(b)-TagSize || len(h.Recipients) < 1 || len(h.Recipients) > MaxRecipients || len(h.Nonce) != NonceSize {
			t.Fatalf("header out of bounds: size %d of %d, %d recipients", h.Size, len(b), len(h.Recipients))
		}
		for _, r := range h.Recipients {
			if len(r.Enc) != encSize(r.KEM) || len(r.WK) != wrappedKeySize {
				t.Fatalf("recipient %x: enc %d, wk %d", r.KeyID, len(r.Enc), len(r.WK))
			}
		}
	})
}

// loadVectors reads testdata/vectors.json: the fuzz targets need objects
// that are the same in every fuzzing process.
func loadVectors(f *testing.F) *Vectors {
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		f.Fatal(err)
	}
	var v Vectors
	if err := json.Unmarshal(b, &v); err != nil {
		f.Fatal(err)
	}
	return &v
}

func FuzzOpen(f *testing.F) {
	o, _ := vectorOwnerKeys(f)
	v := loadVectors(f)
	sealed := unhex(f, v.Thumbnail.Sealed)
	pt := unhex(f, v.Thumbnail.Plaintext)
	bv := v.Thumbnail.Binding
	b := Binding{Owner: o.Fingerprint(), Device: bv.Device, Event: bv.Event, Seq: bv.Seq, Role: bv.Role}
	f.Add(sealed)
	f.Add(sealed[:len(sealed)-1])
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, k := range o.Keys {
			got, err := Open(data, b, k.ID, k.Priv)
			if err != nil {
				continue
			}
			// Only the sealed bytes themselves open.
			if !bytes.Equal(data, sealed) || !bytes.Equal(got, pt) {
				t.Fatalf("other bytes opened: %x", data)
			}
		}
	})
}

func FuzzParseSigned(f *testing.F) {
	o, _ := vectorOwnerKeys(f)
	ks, err := o.KeySet(1)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ks.Signed())
	f.Add([]byte(`{"keyset":"","sig":""}`))
	f.Add([]byte(`{"keyset":"e30","sig":"` + string(bytes.Repeat([]byte("A"), 86)) + `"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseSigned(data)
		if err != nil {
			return
		}
		if len(got.Keys) < 1 || len(got.Keys) > MaxKeys || len(got.Raw) > MaxKeySetSize {
			t.Fatalf("accepted a set out of bounds: %d keys, %d bytes", len(got.Keys), len(got.Raw))
		}
		if err := Accept(got.Owner(), nil, got); err != nil {
			t.Fatalf("parsed but not acceptable to its own owner: %v", err)
		}
	})
}

func FuzzOpenLive(f *testing.F) {
	o, _ := vectorOwnerKeys(f)
	v := loadVectors(f)
	kf := unhex(f, v.Live.KeyFrame)
	frame := unhex(f, v.Live.Frames[0].Frame)
	f.Add(kf, frame)
	f.Fuzz(func(t *testing.T, kfb, fb []byte) {
		lo, err := o.OpenLive(kfb, v.Live.Device)
		if err != nil {
			return
		}
		if !bytes.Equal(kfb, kf) {
			t.Fatalf("a key frame other than the one sealed opened: %x", kfb)
		}
		if _, err := lo.OpenFrame(fb); err == nil && !bytes.Equal(fb, frame) {
			t.Fatalf("a frame other than the one sealed opened: %x", fb)
		}
	})
}
