//go:build !linux

package m2m

import (
	"context"

	"github.com/keyframe-cam/keyframe/capture"
)

// Encoder is a V4L2 encoder; on this platform Open always fails.
type Encoder struct{}

// Open returns ErrUnsupported: V4L2 exists on Linux only.
func Open(cfg Config) (*Encoder, error) {
	if _, err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	return nil, ErrUnsupported
}

// Encode returns ErrUnsupported.
func (e *Encoder) Encode(context.Context, *capture.Frame, bool) error { return ErrUnsupported }

// Receive returns ErrUnsupported.
func (e *Encoder) Receive(context.Context, []byte) (Packet, error) { return Packet{}, ErrUnsupported }

// Drain returns ErrUnsupported.
func (e *Encoder) Drain() error { return ErrUnsupported }

// Close does nothing.
func (e *Encoder) Close() error { return nil }

// Info returns nothing.
func (e *Encoder) Info() Info { return Info{} }

// Stats returns nothing.
func (e *Encoder) Stats() Stats { return Stats{} }

// Probe returns ErrUnsupported.
func Probe(string) ([]Node, error) { return nil, ErrUnsupported }

// Find returns ErrUnsupported.
func Find(string, capture.PixelFormat, ...capture.PixelFormat) (Node, capture.PixelFormat, error) {
	return Node{}, 0, ErrUnsupported
}
