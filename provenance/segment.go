package provenance

import (
	"bytes"
	"crypto/sha256"
	"fmt"
)

// MaxSegmentFrames is the most frames one segment record lists: a segment
// is a few seconds (8.5 s at 30 frames a second). Verify refuses more.
const MaxSegmentFrames = 256

// MaxClipSegments is the most segments an end record lists (its payload's
// segments array; the payload decoder's array limit).
const MaxClipSegments = 1024

// MaxFrameType is the longest Segment.Type, in bytes.
const MaxFrameType = 128

// FramesMediaType is the media type of a segment record's media object
// when its frames are JPEG: the frames concatenated, which is a raw Motion
// JPEG stream (ffmpeg -f mjpeg).
const FramesMediaType = "video/x-motion-jpeg"

// H264MediaType is the media type of a segment's frames when they are
// H.264 (segment.type), each an access unit as an Annex B byte stream, and
// of its media object: the access units concatenated, which is a raw H.264
// elementary stream (ffmpeg -f h264).
const H264MediaType = "video/h264"

// SealedMediaType is the media type of an object sealed to its owner's
// keys (docs/e2ee.md §4, §7; package e2ee's SealedType). A segment record
// whose media object is sealed lists its frames by their plaintext: the
// frames' sizes add up to the opened object, not to the sealed one, and a
// verifier without the owner's keys checks the sealed object by its size
// and hash only (Verify); the owner checks the frames after opening it
// (VerifyClip with ClipSegment.Frames).
const SealedMediaType = "application/vnd.keyframe.sealed"

// sealedOverhead is the least a sealed object adds to its plaintext: the
// header with one recipient (docs/e2ee.md §4) and the content's tag.
const sealedOverhead = 4 + 2 + 2 + 2 + 32 + 1 + (16 + 2 + 2 + 32 + 2 + 32) + 12 + 16

// sealed reports whether a segment record's media object is sealed.
func sealed(p *Payload) bool { return len(p.Media) == 1 && p.Media[0].Type == SealedMediaType }

// Segment is the part of a KindSegment payload that lists its frames
// (docs/envelope.md §4.4). The frames themselves travel as the record's one
// media object (role RoleFrames): their bytes concatenated in this order,
// which Frames' sizes split again.
type Segment struct {
	// Index numbers the segments of an event's clip from 0, without gaps.
	Index uint32 `cbor:"index"`
	// Type is the media type of every frame, e.g. image/jpeg.
	Type string `cbor:"type"`
	// Frames are the segment's frames in capture order: 1 to
	// MaxSegmentFrames, times strictly increasing.
	Frames []ClipFrame `cbor:"frames"`
}

// ClipFrame is one frame of a segment.
type ClipFrame struct {
	Size   uint32 `cbor:"size"`   // length in bytes, at least 1
	SHA256 []byte `cbor:"sha256"` // SHA-256 of the bytes
	// TUs is the capture time in microseconds relative to the event's
	// trigger frame (the start record's frame): negative in the pre-roll,
	// 0 for the trigger frame itself.
	TUs int64 `cbor:"t_us"`
}

// NewClipFrame describes a frame captured t microseconds after the trigger.
func NewClipFrame(data []byte, tUs int64) ClipFrame {
	sum := sha256.Sum256(data)
	return ClipFrame{Size: uint32(len(data)), SHA256: sum[:], TUs: tUs}
}

// SegmentMedia describes the media object of a segment whose frames are
// frames, of media type typ (FramesMediaType for JPEG frames), and returns
// it with the object itself: the frames concatenated.
func SegmentMedia(typ string, frames [][]byte) (Media, []byte) {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	obj := make([]byte, 0, n)
	for _, f := range frames {
		obj = append(obj, f...)
	}
	return NewMedia(RoleFrames, typ, obj), obj
}

// checkClipFields checks the segment and segments fields (docs/envelope.md
// §4.4), part of checkPayload: nothing here reads a media object.
func checkClipFields(p *Payload) error {
	bad := func(field, why string) error {
		return fmt.Errorf("provenance: %w: %s %s", ErrMalformed, field, why)
	}
	if len(p.Segments) != 0 {
		if p.Kind != KindEnd {
			return bad("segments", "is only allowed in an end record")
		}
		if len(p.Segments) > MaxClipSegments {
			return bad("segments", fmt.Sprintf("lists %d segments, at most %d", len(p.Segments), MaxClipSegments))
		}
		for i, h := range p.Segments {
			if len(h) != sha256.Size {
				return bad(fmt.Sprintf("segments[%d]", i), fmt.Sprintf("is %d bytes, want 32", len(h)))
			}
		}
	}
	if p.Kind != KindSegment {
		if p.Segment != nil {
			return bad("segment", "is only allowed in a segment record")
		}
		return nil
	}
	s := p.Segment
	if s == nil {
		return bad("segment", "is missing from a segment record")
	}
	if len(s.Type) == 0 || len(s.Type) > MaxFrameType {
		return bad("segment.type", fmt.Sprintf("is %d bytes, want 1 to %d", len(s.Type), MaxFrameType))
	}
	if len(s.Frames) == 0 || len(s.Frames) > MaxSegmentFrames {
		return bad("segment.frames", fmt.Sprintf("lists %d frames, want 1 to %d", len(s.Frames), MaxSegmentFrames))
	}
	var total uint64
	for i, f := range s.Frames {
		switch {
		case f.Size == 0:
			return bad(fmt.Sprintf("segment.frames[%d].size", i), "is 0")
		case len(f.SHA256) != sha256.Size:
			return bad(fmt.Sprintf("segment.frames[%d].sha256", i), "is not 32 bytes")
		case i > 0 && f.TUs <= s.Frames[i-1].TUs:
			return bad(fmt.Sprintf("segment.frames[%d].t_us", i), fmt.Sprintf("%d is not after frame %d's %d", f.TUs, i-1, s.Frames[i-1].TUs))
		}
		total += uint64(f.Size)
	}
	if len(p.Media) != 1 || p.Media[0].Role != RoleFrames {
		return bad("media", fmt.Sprintf("of a segment record must be exactly one object of role %q", RoleFrames))
	}
	switch {
	case sealed(p):
		if p.Media[0].Size < total+sealedOverhead {
			return bad("media[0].size", fmt.Sprintf("is %d, too small for sealed frames whose sizes add up to %d", p.Media[0].Size, total))
		}
	case p.Media[0].Size != total:
		return bad("media[0].size", fmt.Sprintf("is %d, the frames' sizes add up to %d", p.Media[0].Size, total))
	}
	return nil
}

// checkFrames checks that a segment's media object, split by the frames'
// sizes (which checkClipFields found add up to its length), is the frames
// the segment lists (step 15 of docs/envelope.md §8).
func checkFrames(s *Segment, obj []byte) error {
	off := 0
	for i, f := range s.Frames {
		end := off + int(f.Size)
		if end > len(obj) {
			return fmt.Errorf("provenance: %w: segment %d frame %d: beyond the media object", ErrMedia, s.Index, i)
		}
		sum := sha256.Sum256(obj[off:end])
		if !bytes.Equal(sum[:], f.SHA256) {
			return fmt.Errorf("provenance: %w: segment %d frame %d does not match its hash", ErrMedia, s.Index, i)
		}
		off = end
	}
	return nil
}
