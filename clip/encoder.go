package clip

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
)

// Encoder is an H.264 encoder the [Feeder] drives for clips of codec
// [CodecH264]: it takes raw pictures in and gives access units out, in the
// same order, one for each picture it encoded. The feeder calls Encode from
// one goroutine and Next from another; Close from any.
//
// An encoder must not reorder pictures (no B-frames): the feeder matches
// each access unit to the picture it came from by the Time and Sequence
// the encoder carries over, and refuses (and counts) an access unit that
// matches no picture it is waiting for. Every key frame is an IDR access
// unit carrying its SPS and PPS.
type Encoder interface {
	// Encode gives the encoder one picture; key asks for it to be coded
	// as a key frame, which an encoder that cannot force one ignores
	// (ForcesKey). It may block while the encoder takes the picture in,
	// and does not keep p after it returns. An encoder with too many
	// pictures in flight refuses the picture with an error wrapping
	// [ErrEncoderBusy].
	Encode(ctx context.Context, p *Picture, key bool) error
	// Next returns the next access unit, waiting for one until ctx ends.
	// Its Data is valid until the next call of Next.
	Next(ctx context.Context) (AccessUnit, error)
	// ForcesKey reports whether Encode's key request is honoured.
	ForcesKey() bool
	// Close stops the encoder and ends a Next waiting.
	Close() error
}

// Picture is one raw picture for an [Encoder]: YU12 (I420), Width×Height
// luma bytes then two chroma planes of (Width/2)×(Height/2), no padding.
// Width and Height are even.
type Picture struct {
	Width, Height int
	// Time and Sequence are the capture frame's; the access unit made of
	// this picture carries them back.
	Time     time.Time
	Sequence uint64
	Data     []byte
}

// AccessUnit is one encoded picture: an H.264 access unit in Annex B form
// (capture.FormatH264).
type AccessUnit struct {
	// Time and Sequence are those of the picture it encodes.
	Time     time.Time
	Sequence uint64
	// Key is true for an IDR access unit with its SPS and PPS: a decoder
	// can start there.
	Key  bool
	Data []byte
}

// Errors of an [Encoder].
var (
	// ErrEncoderBusy: the encoder holds as many pictures in flight as it
	// takes; the picture was not taken.
	ErrEncoderBusy = errors.New("clip: encoder busy")
	// ErrEncoderClosed: the encoder was closed.
	ErrEncoderClosed = errors.New("clip: encoder closed")
	// ErrEncoderMisaligned: the encoder gave an access unit that matches
	// no picture given to it (more units than pictures, or a unit out of
	// order); the unit is refused.
	ErrEncoderMisaligned = errors.New("clip: encoder output does not match its input")
)

// toYU12 fills p.Data with r's image as YU12, reusing its buffer; r's
// geometry must have passed rawLayout, and its sides must be even.
func toYU12(p *Picture, r *raw) error {
	w, h, s := r.w, r.h, r.stride
	cw, ch := w/2, h/2
	p.Width, p.Height, p.Time, p.Sequence = w, h, r.time, r.sequence
	p.Data = grow(p.Data, w*h+2*cw*ch)
	y, cb, cr := p.Data[:w*h], p.Data[w*h:w*h+cw*ch], p.Data[w*h+cw*ch:]
	switch r.format {
	case capture.FormatYU12:
		cs := s / 2
		for j := range h {
			copy(y[j*w:j*w+w], r.data[j*s:])
		}
		u, v := r.data[s*h:], r.data[s*h+cs*((h+1)/2):]
		for j := range ch {
			copy(cb[j*cw:j*cw+cw], u[j*cs:])
			copy(cr[j*cw:j*cw+cw], v[j*cs:])
		}
	case capture.FormatNV12:
		for j := range h {
			copy(y[j*w:j*w+w], r.data[j*s:])
		}
		uv := r.data[s*h:]
		for j := range ch {
			row := uv[j*s : j*s+2*cw]
			b, c := cb[j*cw:j*cw+cw], cr[j*cw:j*cw+cw]
			for i := range b {
				b[i], c[i] = row[2*i], row[2*i+1]
			}
		}
	case capture.FormatYUYV:
		for j := range h {
			row := r.data[j*s : j*s+2*w]
			yo := y[j*w : j*w+w]
			for i := range yo {
				yo[i] = row[2*i]
			}
			if j%2 == 0 { // 4:2:2 to 4:2:0: the even lines' chroma
				b, c := cb[j/2*cw:j/2*cw+cw], cr[j/2*cw:j/2*cw+cw]
				for i := range b {
					b[i], c[i] = row[4*i+1], row[4*i+3]
				}
			}
		}
	case capture.FormatGrey:
		for j := range h {
			copy(y[j*w:j*w+w], r.data[j*s:])
		}
		for i := range cb {
			cb[i], cr[i] = 128, 128
		}
	case capture.FormatRGB24:
		for j := range h {
			row := r.data[j*s : j*s+3*w]
			for i := range w {
				R, G, B := int32(row[3*i]), int32(row[3*i+1]), int32(row[3*i+2])
				// BT.601 full range, as image/color's RGBToYCbCr.
				y[j*w+i] = clamp8((19595*R + 38470*G + 7471*B + 1<<15) >> 16)
				if j%2 == 0 && i%2 == 0 {
					k := j/2*cw + i/2
					cb[k] = clamp8((-11056*R - 21712*G + 32768*B + 257<<15) >> 16)
					cr[k] = clamp8((32768*R - 27440*G - 5328*B + 257<<15) >> 16)
				}
			}
		}
	default:
		return fmt.Errorf("clip: H.264: pixel format %v is not one the feeder encodes", r.format)
	}
	return nil
}

func clamp8(v int32) byte {
	switch {
	case v < 0:
		return 0
	case v > 255:
		return 255
	}
	return byte(v)
}
