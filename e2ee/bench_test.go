package e2ee

import (
	"crypto/rand"
	"testing"
)

// The sizes of docs/e2ee.md §9: a thumbnail-sized JPEG and one second of
// clip frames (docs/clips.md measures 303 KB a second: 10 frames/s of
// 30.3 KB).
const (
	benchThumbnail  = 30_000
	benchClipSecond = 303_000
)

func benchSeal(b *testing.B, size int) {
	o := newTestOwner(b, 2) // two X25519 keys: a browser and the recovery key
	s := mustSealer(b, o)
	pt := make([]byte, size)
	rand.Read(pt)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Seal(testBinding(), pt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealThumbnail(b *testing.B)  { benchSeal(b, benchThumbnail) }
func BenchmarkSealClipSecond(b *testing.B) { benchSeal(b, benchClipSecond) }

func BenchmarkOpenThumbnail(b *testing.B) {
	o := newTestOwner(b, 2)
	pt := make([]byte, benchThumbnail)
	rand.Read(pt)
	sealed, err := mustSealer(b, o).Seal(testBinding(), pt)
	if err != nil {
		b.Fatal(err)
	}
	bd := testBinding()
	bd.Owner = o.Fingerprint()
	k := o.Keys[1]
	b.SetBytes(benchThumbnail)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(sealed, bd, k.ID, k.Priv); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLiveFrame seals one live frame of thumbnail size into a reused
// buffer: the live view's per-frame cost.
func BenchmarkLiveFrame(b *testing.B) {
	o := newTestOwner(b, 2)
	ls, _, err := mustSealer(b, o).NewLive(testDevice)
	if err != nil {
		b.Fatal(err)
	}
	jpeg := make([]byte, benchThumbnail)
	rand.Read(jpeg)
	buf := make([]byte, 0, benchThumbnail+64)
	b.SetBytes(benchThumbnail)
	b.ReportAllocs()
	for b.Loop() {
		buf = ls.SealFrame(buf[:0], jpeg)
	}
}
