// Package mkv writes Matroska files of Motion-JPEG frames (codec V_MJPEG),
// the download format of a clip: every frame keeps its own capture time (a
// millisecond timestamp, where AVI would force one frame rate), and ffmpeg,
// VLC and mpv open the result.
//
// Write streams the file: the frame sizes are given up front, so every
// element's size is known before its bytes are written and nothing is
// buffered beyond one frame. Only what playback needs is written: the EBML
// header, the segment's info and one video track, and clusters of simple
// blocks (no cues: a clip of a few minutes is small enough to scan).
package mkv

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// Element IDs (Matroska specification, RFC 9559), with their marker bits.
const (
	idEBML               = 0x1A45DFA3
	idEBMLVersion        = 0x4286
	idEBMLReadVersion    = 0x42F7
	idEBMLMaxIDLength    = 0x42F2
	idEBMLMaxSizeLength  = 0x42F3
	idDocType            = 0x4282
	idDocTypeVersion     = 0x4287
	idDocTypeReadVersion = 0x4285
	idSegment            = 0x18538067
	idInfo               = 0x1549A966
	idTimestampScale     = 0x2AD7B1
	idDuration           = 0x4489
	idMuxingApp          = 0x4D80
	idWritingApp         = 0x5741
	idTitle              = 0x7BA9
	idTracks             = 0x1654AE6B
	idTrackEntry         = 0xAE
	idTrackNumber        = 0xD7
	idTrackUID           = 0x73C5
	idTrackType          = 0x83
	idFlagLacing         = 0x9C
	idCodecID            = 0x86
	idVideo              = 0xE0
	idPixelWidth         = 0xB0
	idPixelHeight        = 0xBA
	idCluster            = 0x1F43B675
	idTimestamp          = 0xE7
	idSimpleBlock        = 0xA3
)

// Limits of what Write accepts.
const (
	// MaxFrames bounds a file's frames (an hour at 30 fps).
	MaxFrames = 108_000
	// MaxFrameBytes bounds one frame.
	MaxFrameBytes = 16 << 20
	// clusterSpan is the longest time one cluster covers; a simple block's
	// time is a signed 16-bit offset in milliseconds from its cluster's.
	clusterSpan = 5 * time.Second
)

// Frame is one frame to write: its time from the clip's start and its
// size in bytes; Write asks for its bytes when it gets to it.
type Frame struct {
	At   time.Duration
	Size int
}

// Video describes the track.
type Video struct {
	Width, Height int
	Title         string // the file's title (e.g. the event ID); may be empty
}

// Write writes a Matroska file of frames to w. data(i, w) must write
// exactly frames[i].Size bytes of frame i's JPEG. Frame times must not go
// backwards and are rounded to milliseconds; the file's duration runs to
// the last frame plus the interval before it (one frame's display time).
func Write(w io.Writer, v Video, frames []Frame, data func(i int, w io.Writer) error) error {
	if v.Width <= 0 || v.Height <= 0 || v.Width > 1<<16 || v.Height > 1<<16 {
		return fmt.Errorf("mkv: frame size %dx%d out of range", v.Width, v.Height)
	}
	if len(frames) == 0 {
		return errors.New("mkv: no frames")
	}
	if len(frames) > MaxFrames {
		return fmt.Errorf("mkv: %d frames, at most %d", len(frames), MaxFrames)
	}
	for i, f := range frames {
		if f.Size <= 0 || f.Size > MaxFrameBytes {
			return fmt.Errorf("mkv: frame %d: %d bytes, want 1 to %d", i, f.Size, MaxFrameBytes)
		}
		if f.At < 0 || (i > 0 && f.At < frames[i-1].At) {
			return fmt.Errorf("mkv: frame %d at %v: times must start at 0 or later and not go backwards", i, f.At)
		}
	}
	bw := bufio.NewWriter(w)
	e := &enc{w: bw}

	// EBML header.
	var hdr []byte
	hdr = appendUint(hdr, idEBMLVersion, 1)
	hdr = appendUint(hdr, idEBMLReadVersion, 1)
	hdr = appendUint(hdr, idEBMLMaxIDLength, 4)
	hdr = appendUint(hdr, idEBMLMaxSizeLength, 8)
	hdr = appendString(hdr, idDocType, "matroska")
	hdr = appendUint(hdr, idDocTypeVersion, 4)
	hdr = appendUint(hdr, idDocTypeReadVersion, 2)
	e.master(idEBML, len(hdr))
	e.raw(hdr)

	// The segment's head: info and tracks.
	last := frames[len(frames)-1].At
	step := time.Duration(0)
	if n := len(frames); n > 1 {
		step = frames[n-1].At - frames[n-2].At
	}
	var info []byte
	info = appendUint(info, idTimestampScale, uint64(time.Millisecond))
	info = appendFloat(info, idDuration, float64((last + step).Milliseconds()))
	info = appendString(info, idMuxingApp, "keyframe")
	info = appendString(info, idWritingApp, "keyframe")
	if v.Title != "" {
		info = appendString(info, idTitle, v.Title)
	}
	var video []byte
	video = appendUint(video, idPixelWidth, uint64(v.Width))
	video = appendUint(video, idPixelHeight, uint64(v.Height))
	var track []byte
	track = appendUint(track, idTrackNumber, 1)
	track = appendUint(track, idTrackUID, 1)
	track = appendUint(track, idTrackType, 1) // video
	track = appendUint(track, idFlagLacing, 0)
	track = appendString(track, idCodecID, "V_MJPEG")
	track = appendMaster(track, idVideo, video)
	var tracks []byte
	tracks = appendMaster(tracks, idTrackEntry, track)
	head := appendMaster(nil, idInfo, info)
	head = appendMaster(head, idTracks, tracks)

	// Clusters: a new one when a frame is clusterSpan past its cluster's
	// start. Their sizes are known from the frame sizes.
	type cluster struct{ first, end, size int }
	var clusters []cluster
	segSize := len(head)
	for i := 0; i < len(frames); {
		c := cluster{first: i}
		start := frames[i].At.Milliseconds()
		body := len(appendUint(nil, idTimestamp, uint64(start)))
		for ; i < len(frames) && frames[i].At.Milliseconds()-start < clusterSpan.Milliseconds(); i++ {
			n := 4 + frames[i].Size // track number, 16-bit time, flags
			body += 1 + sizeLen(n) + n
		}
		c.end, c.size = i, body
		clusters = append(clusters, c)
		segSize += 4 + sizeLen(body) + body
	}
	e.master(idSegment, segSize)
	e.raw(head)
	for _, c := range clusters {
		start := frames[c.first].At.Milliseconds()
		e.master(idCluster, c.size)
		e.raw(appendUint(nil, idTimestamp, uint64(start)))
		for i := c.first; i < c.end; i++ {
			n := 4 + frames[i].Size
			e.raw(appendID(nil, idSimpleBlock))
			e.raw(appendSize(nil, n))
			rel := frames[i].At.Milliseconds() - start
			e.raw([]byte{0x81, byte(rel >> 8), byte(rel), 0x80}) // track 1, time, key frame
			if e.err != nil {
				return e.err
			}
			cw := &countWriter{w: bw}
			if err := data(i, cw); err != nil {
				return fmt.Errorf("mkv: frame %d: %w", i, err)
			}
			if cw.n != int64(frames[i].Size) {
				return fmt.Errorf("mkv: frame %d: %d bytes written, %d announced", i, cw.n, frames[i].Size)
			}
		}
	}
	if e.err != nil {
		return e.err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("mkv: %w", err)
	}
	return nil
}

// enc writes elements and keeps the first error.
type enc struct {
	w   io.Writer
	err error
}

func (e *enc) raw(b []byte) {
	if e.err != nil {
		return
	}
	if _, err := e.w.Write(b); err != nil {
		e.err = fmt.Errorf("mkv: %w", err)
	}
}

func (e *enc) master(id uint32, size int) {
	e.raw(appendSize(appendID(nil, id), size))
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// appendID appends an element ID: its bytes as given, marker included.
func appendID(b []byte, id uint32) []byte {
	switch {
	case id >= 1<<24:
		return append(b, byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
	case id >= 1<<16:
		return append(b, byte(id>>16), byte(id>>8), byte(id))
	case id >= 1<<8:
		return append(b, byte(id>>8), byte(id))
	}
	return append(b, byte(id))
}

// sizeLen is the length of the shortest size vint for n (the all-ones
// value of each length is reserved for "unknown").
func sizeLen(n int) int {
	l := 1
	for uint64(n) >= 1<<(7*l)-1 {
		l++
	}
	return l
}

func appendSize(b []byte, n int) []byte {
	l := sizeLen(n)
	v := uint64(n) | 1<<(7*l)
	for i := l - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

func appendUint(b []byte, id uint32, v uint64) []byte {
	n := 1
	for n < 8 && v>>(8*n) != 0 {
		n++
	}
	b = appendSize(appendID(b, id), n)
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

func appendFloat(b []byte, id uint32, f float64) []byte {
	b = appendSize(appendID(b, id), 8)
	return binary.BigEndian.AppendUint64(b, math.Float64bits(f))
}

func appendString(b []byte, id uint32, s string) []byte {
	return append(appendSize(appendID(b, id), len(s)), s...)
}

func appendMaster(b []byte, id uint32, body []byte) []byte {
	return append(appendSize(appendID(b, id), len(body)), body...)
}
