package provenance_test

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"image"
	"slices"
	"testing"

	"github.com/keyframe-cam/keyframe/provenance"
)

type okFunc = func(name string, key testKey, p *provenance.Payload, mediaFile string, media []byte, follows string, chain ...certFile) []byte

// clipVectors writes the clip vectors (docs/envelope.md §10): device-b's
// third event, after prev (its record ok-source-synthetic, whose envelope is
// prevEnv), with a clip of two segments, the records that break a segment
// or an end record's list, and whole clips with a frame or segment dropped,
// reordered, duplicated or altered.
func clipVectors(t *testing.T, key testKey, hdr []header, prev *provenance.Payload, prevEnv []byte, ok okFunc, add func(vector, []byte)) []clipVector {
	t.Helper()
	pub := key.ref.Public
	// Six frames 100 ms apart, an object crossing: frames 0 and 1 are the
	// pre-roll, frame 2 the trigger.
	var frames [][]byte
	var files []string
	for k := range 6 {
		f := thumbnail(t, image.Rect(4+8*k, 10, 16+8*k, 26))
		frames = append(frames, f)
		files = append(files, fmt.Sprintf("clip/frame-%d.jpg", k))
		writeVector(t, files[k], f)
	}
	tUs := func(k int) int64 { return int64(k-2) * 100_000 }
	const trigger = int64(1764000300000) // unix ms of frame 2
	at := func(k int) provenance.Time {
		ms := tUs(k) / 1000
		return provenance.Time{UnixMs: trigger + ms, BootMs: uint64(180000 + ms), Clock: provenance.ClockSynced}
	}
	flipped := bytes.Clone(frames[2])
	flipped[len(flipped)/2] ^= 0x01
	writeVector(t, "clip/frame-2-flipped.jpg", flipped)

	start := *prev
	start.Event, start.Kind, start.Seq = "0mz4kg3j5l7n9q1s3u5w7y", provenance.KindStart, 3
	h := provenance.HashEnvelope(prevEnv)
	start.Prev = h[:]
	start.Time = at(2)
	start.Motion = provenance.Motion{Frames: 1, PeakAreaPPM: 31000, Box: [4]int32{160, 100, 260, 260}, Width: 640, Height: 480}
	start.Media = []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", frames[2])}
	start.Source = &provenance.Source{Kind: provenance.SourceV4L2, Name: "HD Pro Webcam C920", Bus: "usb-0000:01:00.0-1.2"}
	startEnv := ok("ok-clip-start", key, &start, files[2], frames[2], "ok-source-synthetic")

	segment := func(name string, index uint32, seq uint64, prevEnv []byte, ks []int, follows string) (*provenance.Payload, []byte, []byte) {
		p := start
		p.Kind, p.Seq = provenance.KindSegment, seq
		h := provenance.HashEnvelope(prevEnv)
		p.Prev = h[:]
		p.Time = at(ks[0])
		p.Motion.DurationMs = uint64(max(0, tUs(ks[len(ks)-1])/1000))
		var fs [][]byte
		var listed []provenance.ClipFrame
		for _, k := range ks {
			fs = append(fs, frames[k])
			listed = append(listed, provenance.NewClipFrame(frames[k], tUs(k)))
		}
		m, obj := provenance.SegmentMedia(provenance.FramesMediaType, fs)
		p.Media = []provenance.Media{m}
		p.Segment = &provenance.Segment{Index: index, Type: "image/jpeg", Frames: listed}
		writeVector(t, name+".mjpeg", obj)
		return &p, ok(name, key, &p, name+".mjpeg", obj, follows), obj
	}
	seg0, seg0Env, seg0Obj := segment("ok-clip-segment-0", 0, 4, startEnv, []int{0, 1, 2}, "ok-clip-start")
	_, seg1Env, _ := segment("ok-clip-segment-1", 1, 5, seg0Env, []int{3, 4, 5}, "ok-clip-segment-0")
	end := start
	end.Kind, end.Seq = provenance.KindEnd, 6
	h = provenance.HashEnvelope(seg1Env)
	end.Prev = h[:]
	end.Time = at(4)
	end.Motion = provenance.Motion{DurationMs: 300, Frames: 4, PeakAreaPPM: 44000, Box: [4]int32{300, 100, 400, 260}, Width: 640, Height: 480}
	end.Media = []provenance.Media{provenance.NewMedia(provenance.RoleThumbnail, "image/jpeg", frames[4])}
	h0, h1 := provenance.HashEnvelope(seg0Env), provenance.HashEnvelope(seg1Env)
	end.Segments = [][]byte{h0[:], h1[:]}
	ok("ok-clip-end", key, &end, files[4], frames[4], "ok-clip-segment-1")

	// Records that break a segment or a list, each signed properly by
	// device-b: only the rule named catches them.
	resigned := func(name, breaks, expect string, media []string, payload []byte) {
		t.Helper()
		env, err := rawEnvelope{protected: hdr, payload: payload}.build(key.signer)
		if err != nil {
			t.Fatal(err)
		}
		add(vector{Name: name, Breaks: breaks, Envelope: name + ".cose", Media: media, Expect: expect, SignedBy: pub}, env)
	}
	edit := func(p *provenance.Payload, f func(m map[string]any)) []byte {
		b, err := provenance.MarshalPayload(p)
		if err != nil {
			t.Fatal(err)
		}
		m := payloadMap(t, b)
		f(m)
		return mustDet(t, m)
	}
	frameMap := func(m map[string]any, k int) map[any]any {
		return m["segment"].(map[any]any)["frames"].([]any)[k].(map[any]any)
	}
	seg0Media := []string{"ok-clip-segment-0.mjpeg"}
	resigned("bad-segment-frame-hash", "ok-clip-segment-0 with the first byte of frame 1's sha256 flipped", "media", seg0Media,
		edit(seg0, func(m map[string]any) { frameMap(m, 1)["sha256"].([]byte)[0] ^= 0x01 }))
	resigned("bad-segment-times", "ok-clip-segment-0 with frame 2's t_us equal to frame 1's", "malformed", seg0Media,
		edit(seg0, func(m map[string]any) { frameMap(m, 2)["t_us"] = frameMap(m, 1)["t_us"] }))
	resigned("bad-segment-frame-size", "ok-clip-segment-0 with frame 0's size one more (the sizes no longer add up to the media object's)", "malformed", seg0Media,
		edit(seg0, func(m map[string]any) { frameMap(m, 0)["size"] = uint64(len(frames[0]) + 1) }))
	resigned("bad-segment-no-frames", "ok-clip-segment-0 with an empty frames list", "malformed", seg0Media,
		edit(seg0, func(m map[string]any) { m["segment"].(map[any]any)["frames"] = []any{} }))
	resigned("bad-segment-media-role", `ok-clip-segment-0 with its media object's role "thumbnail"`, "malformed", seg0Media,
		edit(seg0, func(m map[string]any) { m["media"].([]any)[0].(map[any]any)["role"] = provenance.RoleThumbnail }))
	resigned("bad-segment-extra-field", `ok-clip-segment-0 with an extra segment field "fps"`, "malformed", seg0Media,
		edit(seg0, func(m map[string]any) { m["segment"].(map[any]any)["fps"] = uint64(10) }))
	startMedia := []string{files[2]}
	resigned("bad-segment-on-start", "ok-clip-start with ok-clip-segment-0's segment field", "malformed", startMedia,
		edit(&start, func(m map[string]any) {
			b, err := provenance.MarshalPayload(seg0)
			if err != nil {
				t.Fatal(err)
			}
			m["segment"] = payloadMap(t, b)["segment"]
		}))
	resigned("bad-segments-on-start", "ok-clip-start with ok-clip-end's segments field", "malformed", startMedia,
		edit(&start, func(m map[string]any) { m["segments"] = []any{h0[:], h1[:]} }))
	endMedia := []string{files[4]}
	resigned("bad-segments-short-hash", "ok-clip-end with segments[0] cut to 31 bytes", "malformed", endMedia,
		edit(&end, func(m map[string]any) { m["segments"].([]any)[0] = h0[:31] }))
	resigned("bad-segments-empty", "ok-clip-end with segments = [] (an end record without a clip has no segments field)", "malformed", endMedia,
		edit(&end, func(m map[string]any) { m["segments"] = []any{} }))
	flippedObj := bytes.Clone(seg0Obj)
	copy(flippedObj[len(frames[0])+len(frames[1]):], flipped)
	writeVector(t, "ok-clip-segment-0-flipped.mjpeg", flippedObj)
	add(vector{Name: "bad-segment-media-flipped", Breaks: "ok-clip-segment-0 with one bit of frame 2 flipped in its media object",
		Envelope: "ok-clip-segment-0.cose", Media: []string{"ok-clip-segment-0-flipped.mjpeg"}, Expect: "media", SignedBy: pub}, nil)

	// Segments that verify on their own but are not the clip's: one of
	// another event, and another segment 1 of this event, signed later.
	otherEvent := edit(seg0, func(m map[string]any) {
		m["event"] = "0mz4kh4k6m8p0r2t4w6y8z"
		m["segment"].(map[any]any)["index"] = uint64(1)
	})
	writeVector(t, "bad-clip-other-event-segment-1.cose", mustEnv(t, hdr, key.signer, otherEvent))
	unlisted := edit(seg0, func(m map[string]any) {
		m["seq"] = uint64(7)
		m["segment"].(map[any]any)["index"] = uint64(1)
		for k := range 3 {
			frameMap(m, k)["t_us"] = uint64(1_000_000 + k*100_000)
		}
	})
	writeVector(t, "bad-clip-unlisted-segment-1.cose", mustEnv(t, hdr, key.signer, unlisted))

	s0 := clipSegment{Envelope: "ok-clip-segment-0.cose", Frames: files[0:3]}
	s1 := clipSegment{Envelope: "ok-clip-segment-1.cose", Frames: files[3:6]}
	with := func(s clipSegment, fs ...string) clipSegment { s.Frames = fs; return s }
	ip := func(i int) *int { return &i }
	const endFile = "ok-clip-end.cose"
	return []clipVector{
		{Name: "ok-clip", End: endFile, Segments: []clipSegment{s0, s1}, Expect: "ok", Frames: 6},
		{Name: "ok-clip-as-uploaded", Breaks: "", End: endFile, Expect: "ok", Frames: 6, Segments: []clipSegment{
			{Envelope: s0.Envelope, Media: "ok-clip-segment-0.mjpeg"}, {Envelope: s1.Envelope, Media: "ok-clip-segment-1.mjpeg"}}},
		{Name: "ok-clip-interrupted", Breaks: "", Segments: []clipSegment{s0}, Expect: "ok", Frames: 3},
		{Name: "bad-clip-frame-missing", Breaks: "segment 1's frame 1 left out", End: endFile,
			Segments: []clipSegment{s0, with(s1, files[3], files[5])}, Expect: provenance.ClipMissing, Segment: ip(1), Frame: ip(1)},
		{Name: "bad-clip-frame-reordered", Breaks: "segment 0's frames 0 and 1 swapped", End: endFile,
			Segments: []clipSegment{with(s0, files[1], files[0], files[2]), s1}, Expect: provenance.ClipReordered, Segment: ip(0), Frame: ip(0)},
		{Name: "bad-clip-frame-duplicated", Breaks: "segment 1's frame 2 given twice", End: endFile,
			Segments: []clipSegment{s0, with(s1, files[3], files[4], files[5], files[5])}, Expect: provenance.ClipDuplicate, Segment: ip(1), Frame: ip(3)},
		{Name: "bad-clip-frame-altered", Breaks: "one bit of segment 0's frame 2 flipped", End: endFile,
			Segments: []clipSegment{with(s0, files[0], files[1], "clip/frame-2-flipped.jpg"), s1}, Expect: provenance.ClipAltered, Segment: ip(0), Frame: ip(2)},
		{Name: "bad-clip-segment-missing", Breaks: "segment 1 left out", End: endFile,
			Segments: []clipSegment{s0}, Expect: provenance.ClipMissing, Segment: ip(1), Frame: ip(-1)},
		{Name: "bad-clip-segment-other-event", Breaks: "segment 1 is a valid segment 1 of another event of device-b", End: endFile,
			Segments: []clipSegment{s0, {Envelope: "bad-clip-other-event-segment-1.cose", Frames: files[0:3]}}, Expect: provenance.ClipOther, Segment: ip(1), Frame: ip(-1)},
		{Name: "bad-clip-segment-unlisted", Breaks: "segment 1 is another valid segment 1 of the event (seq 7), not the one the end record lists", End: endFile,
			Segments: []clipSegment{s0, {Envelope: "bad-clip-unlisted-segment-1.cose", Frames: files[0:3]}}, Expect: provenance.ClipUnlisted, Segment: ip(1), Frame: ip(-1)},
	}
}

// mustEnv signs payload with the headers hdr.
func mustEnv(t *testing.T, hdr []header, key crypto.Signer, payload []byte) []byte {
	t.Helper()
	env, err := rawEnvelope{protected: hdr, payload: payload}.build(key)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// checkClipVector runs VerifyClip on a clip vector and compares its result
// with the manifest's.
func checkClipVector(t testing.TB, c clipVector) error {
	t.Helper()
	var end []byte
	if c.End != "" {
		end = readVector(t, c.End)
	}
	segs := make([]provenance.ClipSegment, len(c.Segments))
	for i, s := range c.Segments {
		segs[i].Envelope = readVector(t, s.Envelope)
		if s.Media != "" {
			segs[i].Media = readVector(t, s.Media)
		}
		for _, f := range s.Frames {
			segs[i].Frames = append(segs[i].Frames, readVector(t, f))
		}
	}
	got, err := provenance.VerifyClip(end, segs, nil)
	if c.Expect == "ok" {
		if err != nil {
			return err
		}
		if got.Frames != c.Frames {
			return fmt.Errorf("%d frames, manifest says %d", got.Frames, c.Frames)
		}
		return nil
	}
	var ce *provenance.ClipError
	if !errors.As(err, &ce) {
		return fmt.Errorf("got %v, want %s", err, c.Expect)
	}
	if c.Segment == nil || c.Frame == nil {
		return errors.New("a broken clip vector without segment and frame")
	}
	if ce.Problem != c.Expect || ce.Segment != *c.Segment || ce.Frame != *c.Frame {
		return fmt.Errorf("got %s segment %d frame %d (%v), want %s segment %d frame %d", ce.Problem, ce.Segment, ce.Frame, err, c.Expect, *c.Segment, *c.Frame)
	}
	return nil
}

// clipFiles lists the files a clip vector refers to.
func clipFiles(c clipVector) []string {
	out := []string{c.End}
	for _, s := range c.Segments {
		out = append(out, s.Envelope, s.Media)
		out = append(out, s.Frames...)
	}
	return slices.DeleteFunc(out, func(s string) bool { return s == "" })
}

// FuzzVerifyClip: whatever frames are given for segment 0 of the ok-clip
// vector (split at "|" bytes; seeds are the vector's edits), VerifyClip
// does not panic, accepts exactly the segment's own frames, and otherwise
// names a problem of segment 0 with a frame or -1.
func FuzzVerifyClip(f *testing.F) {
	m := readManifest(f)
	var ok clipVector
	for _, c := range m.Clips {
		if c.Name == "ok-clip" {
			ok = c
		}
	}
	if ok.Name == "" {
		f.Fatal("no ok-clip vector")
	}
	end := readVector(f, ok.End)
	var segs []provenance.ClipSegment
	for _, s := range ok.Segments {
		seg := provenance.ClipSegment{Envelope: readVector(f, s.Envelope)}
		for _, fr := range s.Frames {
			seg.Frames = append(seg.Frames, readVector(f, fr))
		}
		segs = append(segs, seg)
	}
	own := segs[0].Frames
	f.Add(bytes.Join(own, []byte("|")))
	f.Add(bytes.Join([][]byte{own[1], own[0], own[2]}, []byte("|")))
	f.Add(bytes.Join([][]byte{own[0], own[2]}, []byte("|")))
	f.Add(bytes.Join([][]byte{own[0], own[1], own[1], own[2]}, []byte("|")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		frames := bytes.Split(data, []byte("|"))
		if len(frames) > 3*provenance.MaxSegmentFrames {
			return
		}
		given := slices.Clone(segs)
		given[0].Frames = frames
		_, err := provenance.VerifyClip(end, given, nil)
		same := slices.EqualFunc(frames, own, bytes.Equal)
		if (err == nil) != same {
			t.Fatalf("frames %q: err %v, the segment's own frames: %v", data, err, same)
		}
		if err == nil {
			return
		}
		var ce *provenance.ClipError
		if !errors.As(err, &ce) || ce.Segment != 0 || ce.Frame < -1 || ce.Frame > len(frames) {
			t.Fatalf("frames %q: %v", data, err)
		}
	})
}
