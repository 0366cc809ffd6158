package provenance

import (
	"bytes"
	"cmp"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrClip is wrapped by VerifyClip's error when the records verify one by
// one but the clip they and its frames make is not the one they sign: a
// segment or frame missing, altered, duplicated or out of order, or a
// record of another event (docs/envelope.md §8.1).
var ErrClip = errors.New("clip does not match its records")

// Clip problems (ClipError.Problem), as docs/envelope.md §8.1 names them.
const (
	ClipRecord     = "record"      // a record fails Verify (steps 1-12); Err says how
	ClipNotSegment = "not-segment" // a segment record is of another kind, or the end record is not an end
	ClipNoClip     = "no-clip"     // the end record lists no segments
	ClipOther      = "other-event" // a segment of another device or event than the clip's
	ClipDuplicate  = "duplicate"   // two segment records with one index, or a frame given twice
	ClipUnlisted   = "unlisted"    // a segment the end record does not list, or not the record it lists
	ClipOrder      = "order"       // segments' sequence numbers or frame times out of order
	ClipMissing    = "missing"     // a segment or frame the records list is not there
	ClipAltered    = "altered"     // a frame whose bytes match no frame the segment lists
	ClipReordered  = "reordered"   // a frame of the segment in another place
	ClipInserted   = "inserted"    // a frame the segment does not list, added among its frames
	ClipMedia      = "media"       // a segment's frames do not make its media object
)

// ClipError is what VerifyClip found wrong, the first thing in the order of
// docs/envelope.md §8.1.
type ClipError struct {
	Problem string // ClipRecord, ClipMissing, ...
	// Segment is the segment's index in the clip, -1 for the end record
	// or when the record's index is not known (it failed to verify).
	Segment int
	// Record is the segment record's position in VerifyClip's argument, -1
	// for the end record and for a missing segment.
	Record int
	// Frame is the frame's position in the segment, -1 when the problem is
	// the record's or the segment's as a whole.
	Frame int
	// Missing lists every missing segment when Problem is ClipMissing and
	// Frame is -1.
	Missing []int
	Detail  string
	Err     error // the record's verification error, for ClipRecord
}

func (e *ClipError) Error() string {
	var b strings.Builder
	b.WriteString("provenance: clip: ")
	switch {
	case e.Problem == ClipMissing && e.Frame < 0 && len(e.Missing) > 1:
		fmt.Fprintf(&b, "segments %s", joinInts(e.Missing))
	case e.Segment >= 0:
		fmt.Fprintf(&b, "segment %d", e.Segment)
	case e.Record >= 0:
		fmt.Fprintf(&b, "segment record #%d", e.Record)
	default:
		b.WriteString("end record")
	}
	if e.Frame >= 0 {
		fmt.Fprintf(&b, " frame %d", e.Frame)
	}
	fmt.Fprintf(&b, ": %s", e.Problem)
	if e.Detail != "" {
		fmt.Fprintf(&b, " (%s)", e.Detail)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap returns ErrClip and, for ClipRecord, the record's error (so
// errors.Is finds ErrSignature, ErrMalformed, ...).
func (e *ClipError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrClip, e.Err}
	}
	return []error{ErrClip}
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

// ClipSegment is one segment record of a clip as stored: its envelope and
// its frames, either one by one (Frames, as a player's container or a
// directory holds them) or as the record's media object (Media, the frames
// concatenated, as uploaded). Frames is used when it is not nil.
//
// A sealed segment (media type SealedMediaType, docs/e2ee.md §7): Media is
// the sealed object as uploaded, checked by its size and hash; Frames, if
// not nil, are the frames the owner opened from it (package e2ee, with the
// binding the record's own fields give), checked against the frames the
// record lists. Either or both may be given.
type ClipSegment struct {
	Envelope []byte
	Frames   [][]byte
	Media    []byte
}

// Clip is what VerifyClip established.
type Clip struct {
	End      *Verified   // the end record; nil if VerifyClip was given none
	Segments []*Verified // by index
	Frames   int         // frames in all segments
	// Unopened counts the sealed segments given without their opened
	// frames: their sealed objects matched the records, their frames
	// were not checked (only their owner can open them).
	Unopened int
	// FirstUs and LastUs are the first and last frames' times relative to
	// the trigger (docs/envelope.md §4.4): FirstUs < 0 when the clip has a
	// pre-roll.
	FirstUs, LastUs int64
}

// VerifyClip checks an event's clip (docs/envelope.md §8.1): the end record
// (its signature and payload, not its thumbnail: Verify checks that), each
// segment record, that they are of one device and event, that the segments
// are exactly those the end record lists, each once, in sequence order, and
// that each segment's frames are the ones it lists, in order, with times
// increasing across the clip. end may be nil for an event that has none (it
// was interrupted): then the segments given must be 0 to N without a gap,
// and nothing says the clip was not longer. want, if not nil, is the key
// every record must be signed by.
//
// The error, if any, is a *ClipError naming the segment and frame.
func VerifyClip(end []byte, segments []ClipSegment, want crypto.PublicKey) (*Clip, error) {
	wantSPKI, err := expectedSPKI(want)
	if err != nil {
		return nil, err
	}
	clip := &Clip{}
	fail := func(problem string, seg, rec, frame int, detail string, err error) (*Clip, error) {
		return nil, &ClipError{Problem: problem, Segment: seg, Record: rec, Frame: frame, Detail: detail, Err: err}
	}
	if len(segments) > MaxClipSegments {
		return fail(ClipUnlisted, -1, -1, -1, fmt.Sprintf("%d segment records, a clip has at most %d", len(segments), MaxClipSegments), nil)
	}
	var device, event string
	if end != nil {
		v, _, err := verifyRecord(end, wantSPKI)
		if err != nil {
			return fail(ClipRecord, -1, -1, -1, "", err)
		}
		if v.Payload.Kind != KindEnd {
			return fail(ClipNotSegment, -1, -1, -1, fmt.Sprintf("the end record is of kind %q", v.Payload.Kind), nil)
		}
		if len(v.Payload.Segments) == 0 {
			return fail(ClipNoClip, -1, -1, -1, "the end record lists no segments", nil)
		}
		clip.End, device, event = v, v.Device, v.Payload.Event
	}

	// Each record, then who it belongs to and where it goes.
	byIndex := map[uint32]int{}
	verified := make([]*Verified, len(segments))
	for i, s := range segments {
		v, _, err := verifyRecord(s.Envelope, wantSPKI)
		if err != nil {
			return fail(ClipRecord, -1, i, -1, "", err)
		}
		p := v.Payload
		if p.Kind != KindSegment {
			return fail(ClipNotSegment, -1, i, -1, fmt.Sprintf("a record of kind %q", p.Kind), nil)
		}
		idx := int(p.Segment.Index)
		if device == "" {
			device, event = v.Device, p.Event
		}
		if v.Device != device || p.Event != event {
			return fail(ClipOther, idx, i, -1, fmt.Sprintf("device %s event %s, the clip's is device %s event %s", v.Device, p.Event, device, event), nil)
		}
		if j, dup := byIndex[p.Segment.Index]; dup {
			return fail(ClipDuplicate, idx, i, -1, fmt.Sprintf("segment record #%d has the same index", j), nil)
		}
		byIndex[p.Segment.Index] = i
		verified[i] = v
	}
	order := make([]int, 0, len(segments)) // positions in segments, by index
	for _, i := range byIndex {
		order = append(order, i)
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Compare(verified[a].Payload.Segment.Index, verified[b].Payload.Segment.Index)
	})

	// The end record's list, and the chain's order.
	if clip.End != nil {
		list := clip.End.Payload.Segments
		for _, i := range order {
			v := verified[i]
			idx := int(v.Payload.Segment.Index)
			switch {
			case idx >= len(list):
				return fail(ClipUnlisted, idx, i, -1, fmt.Sprintf("the end record lists %d segments", len(list)), nil)
			case !bytes.Equal(list[idx], v.Hash[:]):
				return fail(ClipUnlisted, idx, i, -1, "not the record the end record lists for this index", nil)
			case v.Payload.Seq >= clip.End.Payload.Seq:
				return fail(ClipOrder, idx, i, -1, fmt.Sprintf("seq %d is not before the end record's %d", v.Payload.Seq, clip.End.Payload.Seq), nil)
			}
		}
	}
	for n := 1; n < len(order); n++ {
		a, b := verified[order[n-1]], verified[order[n]]
		if b.Payload.Seq <= a.Payload.Seq {
			return fail(ClipOrder, int(b.Payload.Segment.Index), order[n], -1,
				fmt.Sprintf("seq %d is not after segment %d's %d", b.Payload.Seq, a.Payload.Segment.Index, a.Payload.Seq), nil)
		}
	}

	// Frames, segment by segment, and their times across the clip.
	var last *Verified
	for _, i := range order {
		v := verified[i]
		seg := v.Payload.Segment
		idx := int(seg.Index)
		frames := segments[i].Frames
		m := v.Payload.Media[0]
		isSealed := sealed(v.Payload)
		if frames == nil || (isSealed && segments[i].Media != nil) {
			if segments[i].Media == nil {
				return fail(ClipMissing, idx, i, -1, "no frames given for the segment", nil)
			}
			if uint64(len(segments[i].Media)) != m.Size {
				return fail(ClipMedia, idx, i, -1, fmt.Sprintf("the media object is %d bytes, the record lists %d", len(segments[i].Media), m.Size), nil)
			}
			if isSealed {
				if sum := sha256.Sum256(segments[i].Media); !bytes.Equal(sum[:], m.SHA256) {
					return fail(ClipMedia, idx, i, -1, "the sealed object is not the one the record lists", nil)
				}
			} else {
				frames = splitFrames(seg, segments[i].Media)
			}
		}
		if isSealed && frames == nil {
			clip.Unopened++
		} else if k, problem, detail := diagnoseFrames(seg.Frames, frames); problem != "" {
			return fail(problem, idx, i, k, detail, nil)
		}
		if !isSealed {
			// Every frame is the one listed, so their concatenation is
			// the media object; check the record says so of itself.
			h := sha256.New()
			for _, f := range frames {
				h.Write(f)
			}
			if !bytes.Equal(h.Sum(nil), m.SHA256) {
				return fail(ClipMedia, idx, i, -1, "the frames do not make the media object the record lists", nil)
			}
		}
		if last != nil && int(last.Payload.Segment.Index) == idx-1 {
			prev := last.Payload.Segment.Frames
			if t, p := seg.Frames[0].TUs, prev[len(prev)-1].TUs; t <= p {
				return fail(ClipOrder, idx, i, 0, fmt.Sprintf("t_us %d is not after segment %d's last frame's %d", t, idx-1, p), nil)
			}
		}
		last = v
		clip.Frames += len(seg.Frames)
	}

	// Completeness: every index the end record lists (or, without one,
	// from 0 to the highest given).
	want0 := 0
	if clip.End != nil {
		want0 = len(clip.End.Payload.Segments)
	} else if len(order) > 0 {
		want0 = int(verified[order[len(order)-1]].Payload.Segment.Index) + 1
	}
	var missing []int
	for idx := range want0 {
		if _, ok := byIndex[uint32(idx)]; !ok {
			missing = append(missing, idx)
		}
	}
	if len(missing) > 0 {
		return nil, &ClipError{Problem: ClipMissing, Segment: missing[0], Record: -1, Frame: -1, Missing: missing,
			Detail: fmt.Sprintf("%d of %d segments missing", len(missing), want0)}
	}
	if len(order) == 0 {
		return fail(ClipMissing, -1, -1, -1, "no segment records", nil)
	}
	for _, i := range order {
		clip.Segments = append(clip.Segments, verified[i])
	}
	first := clip.Segments[0].Payload.Segment.Frames
	lastFrames := clip.Segments[len(clip.Segments)-1].Payload.Segment.Frames
	clip.FirstUs, clip.LastUs = first[0].TUs, lastFrames[len(lastFrames)-1].TUs
	return clip, nil
}

// splitFrames cuts a segment's media object, whose length is the sum of the
// frames' sizes, into its frames (slices of obj).
func splitFrames(s *Segment, obj []byte) [][]byte {
	out := make([][]byte, len(s.Frames))
	off := 0
	for i, f := range s.Frames {
		out[i] = obj[off : off+int(f.Size)]
		off += int(f.Size)
	}
	return out
}

// diagnoseFrames compares the frames given with those a segment lists and,
// if they differ, names the first place they do and what one change
// explains it (docs/envelope.md §8.1): a frame missing, altered, inserted,
// given twice or out of order. k is the frame's position: in the segment's
// list for ClipMissing, among the frames given otherwise.
func diagnoseFrames(listed []ClipFrame, given [][]byte) (k int, problem, detail string) {
	sums := make([][sha256.Size]byte, len(given))
	for i, f := range given {
		sums[i] = sha256.Sum256(f)
	}
	n, m := len(listed), len(given)
	eq := func(i, k int) bool {
		return uint64(len(given[i])) == uint64(listed[k].Size) && bytes.Equal(sums[i][:], listed[k].SHA256)
	}
	find := func(i int) int {
		for k := range listed {
			if eq(i, k) {
				return k
			}
		}
		return -1
	}
	// tailsEqual: given[i:] is listed[k:].
	tailsEqual := func(i, k int) bool {
		if m-i != n-k {
			return false
		}
		for j := 0; i+j < m; j++ {
			if !eq(i+j, k+j) {
				return false
			}
		}
		return true
	}
	p := 0
	for p < n && p < m && eq(p, p) {
		p++
	}
	if p == n && p == m {
		return 0, "", ""
	}
	switch {
	case m == n-1 && tailsEqual(p, p+1):
		return p, ClipMissing, fmt.Sprintf("%d frames given, the segment lists %d", m, n)
	case m == n+1 && tailsEqual(p+1, p):
		if k := find(p); k >= 0 {
			return p, ClipDuplicate, fmt.Sprintf("a second copy of frame %d", k)
		}
		return p, ClipInserted, "matches no frame the segment lists"
	case m == n && tailsEqual(p+1, p+1):
		if k := find(p); k >= 0 {
			return p, ClipDuplicate, fmt.Sprintf("a copy of frame %d in place of frame %d", k, p)
		}
		return p, ClipAltered, "matches no frame the segment lists"
	}
	if p < m {
		if k := find(p); k >= 0 {
			return p, ClipReordered, fmt.Sprintf("holds frame %d", k)
		}
		return p, ClipAltered, "matches no frame the segment lists"
	}
	return p, ClipMissing, fmt.Sprintf("%d frames given, the segment lists %d", m, n)
}
