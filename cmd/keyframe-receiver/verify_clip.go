package main

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/keyframe-cam/keyframe/provenance"
)

// maxClipFile is the largest file verify -clip reads: a frame, a record or
// a segment's bundle (a few seconds of frames).
const maxClipFile = 64 << 20

// clipDir is a clip as read from a directory (docs/envelope.md §8.2):
// end.cose or end.bundle, and for each segment segment-NAME.cose with its
// frames in segment-NAME/, or segment-NAME.bundle.
type clipDir struct {
	end      []byte
	segments []provenance.ClipSegment
	names    []string // each segment's file, for messages
}

// readClipDir reads a clip directory. Segment records may come in any
// order (VerifyClip orders them by their signed index); frames are the
// regular files of a segment's directory in name order, those whose names
// start with "." left out.
func readClipDir(dir string) (*clipDir, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	c := &clipDir{}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(dir, name)
		switch {
		case name == "end.cose" || name == "end.bundle":
			if c.end != nil {
				return nil, fmt.Errorf("%s: both end.cose and end.bundle", dir)
			}
			data, err := readClipFile(path)
			if err != nil {
				return nil, err
			}
			if c.end = data; name == "end.bundle" {
				b, err := provenance.UnmarshalBundle(data)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", path, err)
				}
				c.end = b.Envelope
			}
		case strings.HasPrefix(name, "segment-") && strings.HasSuffix(name, ".cose") && e.Type().IsRegular():
			if len(c.segments) >= provenance.MaxClipSegments {
				return nil, fmt.Errorf("%s: more than %d segment records", dir, provenance.MaxClipSegments)
			}
			env, err := readClipFile(path)
			if err != nil {
				return nil, err
			}
			frames, err := readFrames(strings.TrimSuffix(path, ".cose"))
			if err != nil {
				return nil, err
			}
			c.segments = append(c.segments, provenance.ClipSegment{Envelope: env, Frames: frames})
			c.names = append(c.names, name)
		case strings.HasPrefix(name, "segment-") && strings.HasSuffix(name, ".bundle") && e.Type().IsRegular():
			if len(c.segments) >= provenance.MaxClipSegments {
				return nil, fmt.Errorf("%s: more than %d segment records", dir, provenance.MaxClipSegments)
			}
			data, err := readClipFile(path)
			if err != nil {
				return nil, err
			}
			b, err := provenance.UnmarshalBundle(data)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if len(b.Media) != 1 {
				return nil, fmt.Errorf("%s: %d media objects, a segment record has 1", path, len(b.Media))
			}
			c.segments = append(c.segments, provenance.ClipSegment{Envelope: b.Envelope, Media: b.Media[0]})
			c.names = append(c.names, name)
		}
	}
	if c.end == nil && len(c.segments) == 0 {
		return nil, fmt.Errorf("%s: no end record (end.cose, end.bundle) and no segment records (segment-*.cose, segment-*.bundle)", dir)
	}
	return c, nil
}

// readFrames reads the frames of a segment: the regular files of dir in
// name order. A missing directory is no frames at all.
func readFrames(dir string) ([][]byte, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return [][]byte{}, nil
	}
	if err != nil {
		return nil, err
	}
	var frames [][]byte
	for _, e := range entries { // ReadDir sorts by name
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if len(frames) >= 2*provenance.MaxSegmentFrames {
			return nil, fmt.Errorf("%s: more than %d frames", dir, 2*provenance.MaxSegmentFrames)
		}
		f, err := readClipFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		frames = append(frames, f)
	}
	if frames == nil {
		frames = [][]byte{}
	}
	return frames, nil
}

func readClipFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxClipFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxClipFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxClipFile)
	}
	return data, nil
}

// readPublicKey reads a PEM "PUBLIC KEY" (SubjectPublicKeyInfo) file.
func readPublicKey(path string) (crypto.PublicKey, error) {
	data, err := readClipFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%s: no PEM PUBLIC KEY block", path)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// verifyClipDir verifies the clip in dir, printing one line: "ok clip ..."
// or "FAILED clip ...". It returns the exit code: 0 verified, 1 failed, 2
// the directory or key could not be read.
func verifyClipDir(dir, keyFile string, stdout, stderr io.Writer) int {
	var want crypto.PublicKey
	if keyFile != "" {
		k, err := readPublicKey(keyFile)
		if err != nil {
			fmt.Fprintf(stderr, "keyframe-receiver verify: -key: %v\n", err)
			return 2
		}
		want = k
	}
	c, err := readClipDir(dir)
	if err != nil {
		fmt.Fprintf(stderr, "keyframe-receiver verify: %v\n", err)
		return 2
	}
	clip, err := provenance.VerifyClip(c.end, c.segments, want)
	if err != nil {
		msg := err.Error()
		var ce *provenance.ClipError
		if errors.As(err, &ce) && ce.Record >= 0 && ce.Record < len(c.names) {
			msg += " [" + c.names[ce.Record] + "]"
		}
		fmt.Fprintf(stdout, "FAILED clip %s: %s\n", dir, strings.TrimPrefix(msg, "provenance: clip: "))
		return 1
	}
	p := clip.Segments[0].Payload
	fmt.Fprintf(stdout, "ok clip %s: device %s event %s, %d segments, %d frames, %s to %s from the trigger%s\n",
		dir, p.Device, p.Event, len(clip.Segments), clip.Frames, fmtUs(clip.FirstUs), fmtUs(clip.LastUs), clipEnding(clip))
	return 0
}

func clipEnding(c *provenance.Clip) string {
	if c.End == nil {
		return "; no end record (an interrupted event): later segments may be missing"
	}
	return ""
}

// fmtUs writes microseconds as signed seconds with millisecond precision.
func fmtUs(us int64) string {
	sign, u := "+", uint64(us)
	if us < 0 {
		sign, u = "-", uint64(-(us+1))+1
	}
	return fmt.Sprintf("%s%d.%03ds", sign, u/1_000_000, u%1_000_000/1000)
}
