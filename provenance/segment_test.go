package provenance_test

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/veraison/go-cose"

	"github.com/keyframe-cam/keyframe/provenance"
)

// testClip is an event's records with a clip: start, segments, end, all
// chained, and the frames of each segment.
type testClip struct {
	key    crypto.Signer
	event  string
	start  []byte
	segs   [][]byte   // segment envelopes, by index
	frames [][][]byte // each segment's frames
	end    []byte
	seq    uint64 // the next free sequence number
}

// clipFrame is a distinct stand-in for a JPEG frame.
func clipFrame(event string, seg, i int) []byte {
	return fmt.Appendf(nil, "\xff\xd8 frame %d of segment %d of %s %s\xff\xd9", i, seg, event, strings.Repeat("x", seg+i))
}

// makeClip signs an event whose clip has len(perSeg) segments of perSeg[i]
// frames, 100 ms apart, the first two frames of the clip before the
// trigger.
func makeClip(t testing.TB, key crypto.Signer, event string, perSeg ...int) *testClip {
	t.Helper()
	c := &testClip{key: key, event: event, seq: 1}
	p := samplePayload(idOf(t, key), thumb)
	p.Event, p.Seq, p.Prev = event, c.seq, nil
	c.start = c.sign(t, p)
	tUs := int64(-200_000)
	var hashes [][]byte
	for s, n := range perSeg {
		var frames [][]byte
		var listed []provenance.ClipFrame
		for i := range n {
			f := clipFrame(event, s, i)
			frames = append(frames, f)
			listed = append(listed, provenance.NewClipFrame(f, tUs))
			tUs += 100_000
		}
		c.frames = append(c.frames, frames)
		env := c.signSegment(t, uint32(s), listed, frames)
		c.segs = append(c.segs, env)
		h := provenance.HashEnvelope(env)
		hashes = append(hashes, h[:])
	}
	e := c.next(t)
	e.Kind, e.Segments = provenance.KindEnd, hashes
	c.end = c.sign(t, e)
	return c
}

// next is a payload for the clip's next record.
func (c *testClip) next(t testing.TB) *provenance.Payload {
	p := samplePayload(idOf(t, c.key), thumb)
	p.Event, p.Seq = c.event, c.seq
	return p
}

func (c *testClip) sign(t testing.TB, p *provenance.Payload) []byte {
	t.Helper()
	env, err := provenance.Sign(nil, c.key, p)
	if err != nil {
		t.Fatal(err)
	}
	c.seq++
	return env
}

func (c *testClip) signSegment(t testing.TB, index uint32, listed []provenance.ClipFrame, frames [][]byte) []byte {
	t.Helper()
	p := c.next(t)
	p.Kind = provenance.KindSegment
	m, _ := provenance.SegmentMedia(provenance.FramesMediaType, frames)
	p.Media = []provenance.Media{m}
	p.Segment = &provenance.Segment{Index: index, Type: "image/jpeg", Frames: listed}
	return c.sign(t, p)
}

// segments is the clip's segments with their frames given one by one
// (copies, so a test may change them).
func (c *testClip) segments() []provenance.ClipSegment {
	out := make([]provenance.ClipSegment, len(c.segs))
	for i := range c.segs {
		out[i] = provenance.ClipSegment{Envelope: c.segs[i], Frames: slices.Clone(c.frames[i])}
	}
	return out
}

func TestSegmentRecordVerifies(t *testing.T) {
	key := newP256(t)
	c := makeClip(t, key, "clip-1", 3, 4)
	for s, env := range c.segs {
		_, obj := provenance.SegmentMedia(provenance.FramesMediaType, c.frames[s])
		v, err := provenance.Verify(env, [][]byte{obj}, key.Public())
		if err != nil {
			t.Fatalf("segment %d: %v", s, err)
		}
		seg := v.Payload.Segment
		if seg == nil || seg.Index != uint32(s) || len(seg.Frames) != len(c.frames[s]) || v.Payload.Kind != provenance.KindSegment {
			t.Fatalf("segment %d verified as %+v", s, v.Payload)
		}
		// One bit of one frame in the media object.
		bad := bytes.Clone(obj)
		bad[len(bad)-3] ^= 1
		_, err = provenance.Verify(env, [][]byte{bad}, nil)
		wantClass(t, err, "media")
	}
	v, err := provenance.Verify(c.end, [][]byte{thumb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Payload.Segments) != 2 {
		t.Fatalf("end record lists %d segments, want 2", len(v.Payload.Segments))
	}
	// An end record without a clip encodes as before: no segments key.
	p := samplePayload(idOf(t, key), thumb)
	p.Kind = provenance.KindEnd
	b, err := provenance.MarshalPayload(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := payloadMap(t, b)["segments"]; ok {
		t.Error("an end record without a clip has a segments key")
	}
}

// TestSegmentTamperEveryField changes each field of a segment record's
// payload: spliced without signing again it fails the signature; signed
// properly it gives what the field means on its own.
func TestSegmentTamperEveryField(t *testing.T) {
	key := newP256(t)
	c := makeClip(t, key, "clip-1", 3)
	env := c.segs[0]
	_, obj := provenance.SegmentMedia(provenance.FramesMediaType, c.frames[0])
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(env); err != nil {
		t.Fatal(err)
	}
	for _, m := range []mutation{
		{"segment.index", func(p *provenance.Payload) { p.Segment.Index = 9 }, "ok"},
		{"segment.type", func(p *provenance.Payload) { p.Segment.Type = "image/png" }, "ok"},
		{"segment.type", func(p *provenance.Payload) { p.Segment.Type = "" }, "malformed"},
		{"segment.type", func(p *provenance.Payload) { p.Segment.Type = strings.Repeat("x", provenance.MaxFrameType+1) }, "malformed"},
		{"segment", func(p *provenance.Payload) { p.Segment = nil }, "malformed"},
		{"segment.frames", func(p *provenance.Payload) { p.Segment.Frames = nil }, "malformed"},
		{"segment.frames", func(p *provenance.Payload) {
			p.Segment.Frames = slices.Repeat(p.Segment.Frames[:1], provenance.MaxSegmentFrames+1)
		}, "malformed"},
		{"segment.frames", func(p *provenance.Payload) {
			p.Segment.Frames[1], p.Segment.Frames[2] = p.Segment.Frames[2], p.Segment.Frames[1]
		}, "malformed"},
		{"segment.frames.size", func(p *provenance.Payload) { p.Segment.Frames[0].Size = 0 }, "malformed"},
		{"segment.frames.size", func(p *provenance.Payload) { p.Segment.Frames[0].Size++ }, "malformed"},
		{"segment.frames.size", func(p *provenance.Payload) { p.Segment.Frames[0].Size++; p.Segment.Frames[1].Size-- }, "media"},
		{"segment.frames.sha256", func(p *provenance.Payload) { p.Segment.Frames[1].SHA256[0] ^= 1 }, "media"},
		{"segment.frames.sha256", func(p *provenance.Payload) { p.Segment.Frames[1].SHA256 = p.Segment.Frames[1].SHA256[:31] }, "malformed"},
		{"segment.frames.t_us", func(p *provenance.Payload) { p.Segment.Frames[0].TUs-- }, "ok"},
		{"segment.frames.t_us", func(p *provenance.Payload) { p.Segment.Frames[2].TUs = p.Segment.Frames[1].TUs }, "malformed"},
		{"media", func(p *provenance.Payload) { p.Media[0].Role = provenance.RoleThumbnail }, "malformed"},
		{"media", func(p *provenance.Payload) { p.Media = append(p.Media, p.Media[0]) }, "malformed"},
		{"media", func(p *provenance.Payload) { p.Media[0].Type = "application/octet-stream" }, "ok"},
		{"kind", func(p *provenance.Payload) { p.Kind = provenance.KindEnd }, "malformed"},
		{"segments", func(p *provenance.Payload) { p.Segments = [][]byte{make([]byte, 32)} }, "malformed"},
	} {
		t.Run(m.field, func(t *testing.T) {
			p, err := provenance.UnmarshalPayload(msg.Payload)
			if err != nil {
				t.Fatal(err)
			}
			m.mutate(p)
			changed, err := provenance.MarshalPayload(p)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(changed, msg.Payload) {
				t.Fatal("mutation changed nothing")
			}
			spliced := spliceEnvelope(t, env, func(s *cose.Sign1Message) { s.Payload = changed })
			_, err = provenance.Verify(spliced, [][]byte{obj}, nil)
			wantClass(t, err, "signature")
			media := [][]byte{obj}
			if len(p.Media) == 2 {
				media = append(media, obj)
			}
			_, err = provenance.Verify(signRaw(t, key, changed), media, nil)
			wantClass(t, err, m.resigned)
		})
	}

	// The end record's list.
	end := c.end
	if err := msg.UnmarshalCBOR(end); err != nil {
		t.Fatal(err)
	}
	for _, m := range []mutation{
		{"segments", func(p *provenance.Payload) { p.Segments[0][0] ^= 1 }, "ok"},
		{"segments", func(p *provenance.Payload) { p.Segments = nil }, "ok"},
		{"segments", func(p *provenance.Payload) { p.Segments[0] = p.Segments[0][:31] }, "malformed"},
		{"segments", func(p *provenance.Payload) {
			p.Segments = slices.Repeat(p.Segments[:1], provenance.MaxClipSegments+1)
		}, "malformed"},
		{"kind", func(p *provenance.Payload) { p.Kind = provenance.KindStart }, "malformed"},
	} {
		t.Run("end/"+m.field, func(t *testing.T) {
			p, err := provenance.UnmarshalPayload(msg.Payload)
			if err != nil {
				t.Fatal(err)
			}
			m.mutate(p)
			changed, err := provenance.MarshalPayload(p)
			if err != nil {
				t.Fatal(err)
			}
			_, err = provenance.Verify(spliceEnvelope(t, end, func(s *cose.Sign1Message) { s.Payload = changed }), [][]byte{thumb}, nil)
			wantClass(t, err, "signature")
			_, err = provenance.Verify(signRaw(t, key, changed), [][]byte{thumb}, nil)
			wantClass(t, err, m.resigned)
		})
	}
}

// TestSegmentsEmptyIsNotAnEncoding: an end record has no clip by leaving
// segments out; an empty array is not another way to say it.
func TestSegmentsEmptyIsNotAnEncoding(t *testing.T) {
	key := newP256(t)
	p := samplePayload(idOf(t, key), thumb)
	p.Kind = provenance.KindEnd
	b, err := provenance.MarshalPayload(p)
	if err != nil {
		t.Fatal(err)
	}
	m := payloadMap(t, b)
	m["segments"] = []any{}
	_, err = provenance.Verify(signRaw(t, key, mustDet(t, m)), [][]byte{thumb}, nil)
	wantClass(t, err, "malformed")
}

// wantClip fails unless err is a *ClipError with this problem, segment and
// frame.
func wantClip(t *testing.T, err error, problem string, segment, frame int) *provenance.ClipError {
	t.Helper()
	var ce *provenance.ClipError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a clip error (%s, segment %d, frame %d)", err, problem, segment, frame)
	}
	if !errors.Is(err, provenance.ErrClip) {
		t.Errorf("%v does not wrap ErrClip", err)
	}
	if ce.Problem != problem || ce.Segment != segment || ce.Frame != frame {
		t.Fatalf("got %s segment %d frame %d (%v), want %s segment %d frame %d", ce.Problem, ce.Segment, ce.Frame, err, problem, segment, frame)
	}
	return ce
}

func TestVerifyClip(t *testing.T) {
	key := newP256(t)
	c := makeClip(t, key, "clip-1", 4, 4, 3)

	got, err := provenance.VerifyClip(c.end, c.segments(), key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if got.Frames != 11 || len(got.Segments) != 3 || got.End == nil || got.FirstUs != -200_000 || got.LastUs != 800_000 {
		t.Fatalf("clip of %d frames, %d segments, %d..%d µs, want 11, 3, -200000..800000", got.Frames, len(got.Segments), got.FirstUs, got.LastUs)
	}
	// The same with each segment's media object instead of its frames, and
	// the segments in another order.
	var asMedia []provenance.ClipSegment
	for i := len(c.segs) - 1; i >= 0; i-- {
		_, obj := provenance.SegmentMedia(provenance.FramesMediaType, c.frames[i])
		asMedia = append(asMedia, provenance.ClipSegment{Envelope: c.segs[i], Media: obj})
	}
	if _, err := provenance.VerifyClip(c.end, asMedia, nil); err != nil {
		t.Fatal(err)
	}
	// An interrupted event: no end record, segments 0 and 1 arrived.
	if got, err := provenance.VerifyClip(nil, c.segments()[:2], nil); err != nil || got.End != nil || got.Frames != 8 {
		t.Fatalf("clip without an end record: %v, %+v", err, got)
	}
}

// TestVerifyClipNamesTheFrame drops, reorders, duplicates and alters one
// frame, at the start, in the middle and at the end of a segment:
// verification names the segment, the frame and what happened to it.
func TestVerifyClipNamesTheFrame(t *testing.T) {
	key := newP256(t)
	c := makeClip(t, key, "clip-1", 5, 5)
	type edit struct {
		name    string
		change  func(f [][]byte) [][]byte
		problem string
		frame   int
	}
	var edits []edit
	for _, k := range []int{0, 2, 4} {
		edits = append(edits,
			edit{fmt.Sprintf("drop %d", k), func(f [][]byte) [][]byte { return slices.Delete(f, k, k+1) }, provenance.ClipMissing, k},
			edit{fmt.Sprintf("duplicate %d", k), func(f [][]byte) [][]byte { return slices.Insert(f, k+1, f[k]) }, provenance.ClipDuplicate, k + 1},
			edit{fmt.Sprintf("alter %d", k), func(f [][]byte) [][]byte {
				f[k] = bytes.Clone(f[k])
				f[k][3] ^= 0x20
				return f
			}, provenance.ClipAltered, k},
			edit{fmt.Sprintf("insert before %d", k), func(f [][]byte) [][]byte {
				return slices.Insert(f, k, []byte("\xff\xd8 a frame from elsewhere\xff\xd9"))
			}, provenance.ClipInserted, k},
		)
	}
	for _, k := range []int{0, 3} {
		edits = append(edits, edit{fmt.Sprintf("swap %d and %d", k, k+1), func(f [][]byte) [][]byte {
			f[k], f[k+1] = f[k+1], f[k]
			return f
		}, provenance.ClipReordered, k})
	}
	edits = append(edits,
		edit{"copy over 3", func(f [][]byte) [][]byte { f[3] = f[2]; return f }, provenance.ClipDuplicate, 3},
		edit{"move 0 to the end", func(f [][]byte) [][]byte { return append(f[1:], f[0]) }, provenance.ClipReordered, 0},
		edit{"truncate 2", func(f [][]byte) [][]byte { f[2] = f[2][:len(f[2])-1]; return f }, provenance.ClipAltered, 2},
	)
	for _, e := range edits {
		for seg := range 2 {
			t.Run(fmt.Sprintf("%s of segment %d", e.name, seg), func(t *testing.T) {
				segs := c.segments()
				segs[seg].Frames = e.change(segs[seg].Frames)
				_, err := provenance.VerifyClip(c.end, segs, key.Public())
				ce := wantClip(t, err, e.problem, seg, e.frame)
				if !strings.Contains(err.Error(), fmt.Sprintf("segment %d frame %d: %s", seg, e.frame, e.problem)) {
					t.Errorf("message %q does not name segment %d frame %d", err, seg, e.frame)
				}
				if ce.Record != seg {
					t.Errorf("record #%d, want #%d", ce.Record, seg)
				}
			})
		}
	}

	// Frames altered inside the media object (as uploaded): named too.
	segs := c.segments()
	_, obj := provenance.SegmentMedia(provenance.FramesMediaType, c.frames[1])
	obj = bytes.Clone(obj)
	obj[len(c.frames[1][0])+len(c.frames[1][1])+4] ^= 1 // in frame 2
	segs[1] = provenance.ClipSegment{Envelope: c.segs[1], Media: obj}
	_, err := provenance.VerifyClip(c.end, segs, nil)
	wantClip(t, err, provenance.ClipAltered, 1, 2)
	segs[1].Media = obj[:len(obj)-1]
	_, err = provenance.VerifyClip(c.end, segs, nil)
	wantClip(t, err, provenance.ClipMedia, 1, -1)
}

func TestVerifyClipSegments(t *testing.T) {
	key, other := newP256(t), newP256(t)
	c := makeClip(t, key, "clip-1", 2, 2, 2, 2)
	another := makeClip(t, key, "clip-2", 2, 2)
	stranger := makeClip(t, other, "clip-1", 2, 2)

	segs := c.segments()
	_, err := provenance.VerifyClip(c.end, slices.Delete(segs, 1, 2), nil)
	if ce := wantClip(t, err, provenance.ClipMissing, 1, -1); !slices.Equal(ce.Missing, []int{1}) {
		t.Errorf("missing %v, want [1]", ce.Missing)
	}
	segs = c.segments()
	_, err = provenance.VerifyClip(c.end, []provenance.ClipSegment{segs[0], segs[2]}, nil)
	if ce := wantClip(t, err, provenance.ClipMissing, 1, -1); !slices.Equal(ce.Missing, []int{1, 3}) || !strings.Contains(err.Error(), "segments 1, 3: missing") {
		t.Errorf("missing %v (%v), want [1 3]", ce.Missing, err)
	}
	_, err = provenance.VerifyClip(nil, []provenance.ClipSegment{segs[0], segs[2]}, nil)
	wantClip(t, err, provenance.ClipMissing, 1, -1)
	_, err = provenance.VerifyClip(c.end, nil, nil)
	wantClip(t, err, provenance.ClipMissing, 0, -1)

	// Segment 1 of another event of the same device in place of this one's.
	segs = c.segments()
	segs[1] = another.segments()[1]
	_, err = provenance.VerifyClip(c.end, segs, nil)
	wantClip(t, err, provenance.ClipOther, 1, -1)
	// Of another device, with this event's ID.
	segs = c.segments()
	segs[1] = stranger.segments()[1]
	_, err = provenance.VerifyClip(c.end, segs, nil)
	wantClip(t, err, provenance.ClipOther, 1, -1)
	// Given twice.
	segs = c.segments()
	_, err = provenance.VerifyClip(c.end, append(segs, segs[2]), nil)
	wantClip(t, err, provenance.ClipDuplicate, 2, -1)
	// A segment the end record does not list: another record of this
	// event with index 1 (signed by the device later), and one with index 4.
	extra := c.signSegment(t, 1, listed(c.frames[1], 0), c.frames[1])
	segs = c.segments()
	segs[1] = provenance.ClipSegment{Envelope: extra, Frames: c.frames[1]}
	_, err = provenance.VerifyClip(c.end, segs, nil)
	wantClip(t, err, provenance.ClipUnlisted, 1, -1)
	beyond := c.signSegment(t, 4, listed(c.frames[1], 1_000_000), c.frames[1])
	_, err = provenance.VerifyClip(c.end, append(c.segments(), provenance.ClipSegment{Envelope: beyond, Frames: c.frames[1]}), nil)
	wantClip(t, err, provenance.ClipUnlisted, 4, -1)
	// Times must go on increasing from one segment to the next.
	early := c.signSegment(t, 1, listed(c.frames[1], -300_000), c.frames[1])
	segs = c.segments()
	_, err = provenance.VerifyClip(nil, []provenance.ClipSegment{segs[0], {Envelope: early, Frames: c.frames[1]}}, nil)
	wantClip(t, err, provenance.ClipOrder, 1, 0)
	// Sequence numbers must increase with the index: a segment 0 signed
	// after segment 1.
	late0 := c.signSegment(t, 0, listed(c.frames[0], -200_000), c.frames[0])
	_, err = provenance.VerifyClip(nil, []provenance.ClipSegment{{Envelope: late0, Frames: c.frames[0]}, segs[1]}, nil)
	wantClip(t, err, provenance.ClipOrder, 1, -1)

	// A record that does not verify: named by its place in the argument.
	segs = c.segments()
	segs[2].Envelope = spliceEnvelope(t, segs[2].Envelope, func(m *cose.Sign1Message) { m.Signature[3] ^= 1 })
	_, err = provenance.VerifyClip(c.end, segs, nil)
	ce := wantClip(t, err, provenance.ClipRecord, -1, -1)
	if ce.Record != 2 || !errors.Is(err, provenance.ErrSignature) || !strings.Contains(err.Error(), "segment record #2") {
		t.Errorf("record #%d, %v: want #2 and a signature error", ce.Record, err)
	}
	_, err = provenance.VerifyClip(c.end, c.segments(), other.Public())
	if ce := wantClip(t, err, provenance.ClipRecord, -1, -1); !errors.Is(err, provenance.ErrKey) || ce.Record != -1 {
		t.Errorf("%v: want the end record refused with ErrKey", err)
	}
	// The start record in place of the end record, or of a segment.
	_, err = provenance.VerifyClip(c.start, c.segments(), nil)
	wantClip(t, err, provenance.ClipNotSegment, -1, -1)
	_, err = provenance.VerifyClip(c.end, append(c.segments(), provenance.ClipSegment{Envelope: c.start}), nil)
	wantClip(t, err, provenance.ClipNotSegment, -1, -1)
	// An end record without a clip.
	p := c.next(t)
	p.Kind = provenance.KindEnd
	_, err = provenance.VerifyClip(c.sign(t, p), c.segments(), nil)
	wantClip(t, err, provenance.ClipNoClip, -1, -1)
}

// listed describes frames 100 ms apart from t0 µs.
func listed(frames [][]byte, t0 int64) []provenance.ClipFrame {
	out := make([]provenance.ClipFrame, len(frames))
	for i, f := range frames {
		out[i] = provenance.NewClipFrame(f, t0+int64(i)*100_000)
	}
	return out
}
