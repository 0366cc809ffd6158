// Package capturetest provides a scripted [capture.Source] for the tests of
// capture's consumers.
package capturetest

import (
	"context"
	"sync"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
)

// Source plays back Frames in order, each copied into the caller's frame
// (so the caller may keep or modify it), then returns Err, or
// capture.ErrEndOfStream when Err is nil. Set the exported fields before the
// first Next. It is safe for concurrent use.
type Source struct {
	Frames []capture.Frame
	Err    error // returned after the last frame; nil means capture.ErrEndOfStream

	mu     sync.Mutex
	next   int
	closed int
}

// Next copies the next frame into f. It returns ctx.Err() when ctx is done
// and capture.ErrClosed after Close.
func (s *Source) Next(ctx context.Context, f *capture.Frame) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed > 0 {
		return capture.ErrClosed
	}
	if s.next >= len(s.Frames) {
		if s.Err != nil {
			return s.Err
		}
		return capture.ErrEndOfStream
	}
	s.Frames[s.next].CopyTo(f)
	s.next++
	return nil
}

// Close marks the source closed.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed++
	return nil
}

// Served is the number of frames delivered so far.
func (s *Source) Served() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// Closed is the number of times Close was called.
func (s *Source) Closed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

var _ capture.Source = (*Source)(nil)

// GreyFrame returns a GREY frame of the given size filled with level, with
// sequence number seq and time t, for building scripts.
func GreyFrame(width, height int, level byte, seq uint64, t time.Time) capture.Frame {
	pix := make([]byte, width*height)
	for i := range pix {
		pix[i] = level
	}
	luma := make([]byte, len(pix))
	copy(luma, pix)
	return capture.Frame{
		Width: width, Height: height,
		Luma: luma, Format: capture.FormatGrey, Data: pix, Stride: width,
		Sequence: seq, Time: t,
	}
}
