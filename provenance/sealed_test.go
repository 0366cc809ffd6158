package provenance_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
)

// standInSealed stands in for a sealed object of plaintext (package e2ee
// makes real ones; provenance only ever sees the bytes): a header's worth
// of bytes, the plaintext scrambled, a tag.
func standInSealed(plaintext []byte) []byte {
	out := append([]byte("KFE1"), bytes.Repeat([]byte{0xa5}, 153)...)
	for _, b := range plaintext {
		out = append(out, b^0x5a)
	}
	return append(out, bytes.Repeat([]byte{0x3c}, 16)...)
}

// sealedClip is a clip of two segments whose media objects are sealed.
func sealedClip(t *testing.T) (*testClip, [][]byte) {
	t.Helper()
	c := &testClip{key: newP256(t), event: "sealed-1", seq: 1}
	var hashes [][]byte
	var objs [][]byte
	tUs := int64(0)
	for s, n := range []int{3, 2} {
		var frames [][]byte
		var list []provenance.ClipFrame
		for i := range n {
			f := clipFrame(c.event, s, i)
			frames = append(frames, f)
			list = append(list, provenance.NewClipFrame(f, tUs))
			tUs += 100_000
		}
		_, plain := provenance.SegmentMedia(provenance.FramesMediaType, frames)
		obj := standInSealed(plain)
		p := c.next(t)
		p.Kind = provenance.KindSegment
		p.Media = []provenance.Media{provenance.NewMedia(provenance.RoleFrames, provenance.SealedMediaType, obj)}
		p.Segment = &provenance.Segment{Index: uint32(s), Type: "image/jpeg", Frames: list}
		env := c.sign(t, p)
		c.segs, c.frames, objs = append(c.segs, env), append(c.frames, frames), append(objs, obj)
		h := provenance.HashEnvelope(env)
		hashes = append(hashes, h[:])
	}
	e := c.next(t)
	e.Kind, e.Segments, e.Media = provenance.KindEnd, hashes, nil
	c.end = c.sign(t, e)
	return c, objs
}

// A sealed segment (docs/e2ee.md §7) verifies by its sealed object's size
// and hash: its frames are listed by their plaintext, which only the owner
// sees.
func TestSealedSegmentVerifies(t *testing.T) {
	c, objs := sealedClip(t)
	for s, env := range c.segs {
		if _, err := provenance.Verify(env, [][]byte{objs[s]}, c.key.Public()); err != nil {
			t.Fatalf("segment %d: %v", s, err)
		}
		bad := bytes.Clone(objs[s])
		bad[len(bad)-20] ^= 1
		_, err := provenance.Verify(env, [][]byte{bad}, nil)
		wantClass(t, err, "media")
	}

	// A sealed object too small to hold the frames listed is malformed.
	p := c.next(t)
	p.Kind = provenance.KindSegment
	frame := clipFrame(c.event, 9, 0)
	p.Media = []provenance.Media{provenance.NewMedia(provenance.RoleFrames, provenance.SealedMediaType, frame)}
	p.Segment = &provenance.Segment{Type: "image/jpeg", Frames: []provenance.ClipFrame{provenance.NewClipFrame(frame, 0)}}
	if _, err := provenance.Sign(nil, c.key, p); !errors.Is(err, provenance.ErrMalformed) {
		t.Fatalf("sealed segment smaller than its frames: %v", err)
	}
}

// VerifyClip of a sealed clip: with the sealed objects only it checks them
// and says how many segments it could not open; with the opened frames it
// checks each frame against the record.
func TestVerifyClipSealed(t *testing.T) {
	c, objs := sealedClip(t)
	var asMedia, opened []provenance.ClipSegment
	for s := range c.segs {
		asMedia = append(asMedia, provenance.ClipSegment{Envelope: c.segs[s], Media: objs[s]})
		opened = append(opened, provenance.ClipSegment{Envelope: c.segs[s], Media: objs[s], Frames: c.frames[s]})
	}
	got, err := provenance.VerifyClip(c.end, asMedia, c.key.Public())
	if err != nil || got.Unopened != 2 || got.Frames != 5 {
		t.Fatalf("sealed clip without its frames: %v, %+v", err, got)
	}
	got, err = provenance.VerifyClip(c.end, opened, c.key.Public())
	if err != nil || got.Unopened != 0 {
		t.Fatalf("sealed clip with its opened frames: %v, %+v", err, got)
	}
	// The opened frames alone (the sealed objects not at hand) do too.
	if _, err := provenance.VerifyClip(c.end, c.segments(), nil); err != nil {
		t.Fatal(err)
	}

	// An opened frame that is not the one listed.
	opened[1].Frames = [][]byte{opened[1].Frames[0], append(bytes.Clone(opened[1].Frames[1]), 'x')}
	_, err = provenance.VerifyClip(c.end, opened, nil)
	wantClip(t, err, provenance.ClipAltered, 1, 1)
	// A sealed object that is not the one the record lists.
	asMedia[0].Media = bytes.Clone(objs[0])
	asMedia[0].Media[10] ^= 1
	_, err = provenance.VerifyClip(c.end, asMedia, nil)
	wantClip(t, err, provenance.ClipMedia, 0, -1)
}
