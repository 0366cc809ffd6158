package h264

import (
	"errors"
	"fmt"
	"io"
)

// Splitter cuts an Annex B byte stream (ffmpeg -f h264, an encoder's
// output) into access units (H.264 7.4.1.2.3): a new one begins, after a
// NAL unit with a slice of a picture (VCL), at an access unit delimiter,
// an SPS, a PPS, an SEI (or another of types 14 to 18), or the first slice
// of a new primary picture (first_mb_in_slice 0). An encoder without B
// frames emits them in presentation order.
type Splitter struct {
	r      io.Reader
	buf    []byte // read, not yet cut: buf[off:]
	off    int
	eof    bool
	synced bool // buf[off:] begins at a start code
	// The access unit being gathered and the one last returned: Next
	// alternates between them.
	cur, prev []byte
	hasVCL    bool
	nals      int
}

// NewSplitter reads a byte stream from r.
func NewSplitter(r io.Reader) *Splitter { return &Splitter{r: r} }

// Next returns the next access unit, with its start codes (each NAL unit's
// trailing zero bytes dropped), or io.EOF after the last. The slice is
// valid until the next call. An access unit over MaxAccessUnit bytes or
// MaxNALs units, or a stream not beginning with a start code, is an error.
func (s *Splitter) Next() ([]byte, error) {
	for {
		nal, err := s.nextNAL()
		if errors.Is(err, io.EOF) {
			if len(s.cur) == 0 {
				return nil, io.EOF
			}
			return s.cut(nil), nil
		}
		if err != nil {
			return nil, err
		}
		body := nal[startLen(nal):]
		if body[0]&0x80 != 0 {
			return nil, errors.New("h264: a NAL unit in the stream has its forbidden_zero_bit set")
		}
		typ := Type(body)
		if s.hasVCL && beginsAU(typ, body) {
			return s.cut(nal), nil
		}
		if len(s.cur)+len(nal) > MaxAccessUnit {
			return nil, fmt.Errorf("h264: access unit over %d bytes", MaxAccessUnit)
		}
		if s.nals++; s.nals > MaxNALs {
			return nil, fmt.Errorf("h264: access unit of more than %d NAL units", MaxNALs)
		}
		s.cur = append(s.cur, nal...)
		s.hasVCL = s.hasVCL || IsVCL(typ)
	}
}

// cut ends the access unit being gathered and begins the next with nal
// (nil at the end of the stream).
func (s *Splitter) cut(nal []byte) []byte {
	out := s.cur
	s.cur = append(s.prev[:0], nal...)
	s.prev = out
	s.hasVCL, s.nals = false, 0
	if nal != nil {
		s.hasVCL, s.nals = IsVCL(Type(nal[startLen(nal):])), 1
	}
	return out
}

// beginsAU reports whether a NAL unit after a VCL one begins a new access
// unit.
func beginsAU(typ int, body []byte) bool {
	switch {
	case typ == NALAUD || typ == NALSPS || typ == NALPPS || typ == NALSEI:
		return true
	case typ >= 14 && typ <= 18:
		return true
	case typ == NALSlice || typ == NALIDR:
		// first_mb_in_slice, ue(v), is the slice header's first field:
		// 0 is the single bit 1.
		return len(body) > 1 && body[1]&0x80 != 0
	}
	return false
}

// startLen is the length of the start code nal begins with (3 or 4).
func startLen(nal []byte) int {
	if len(nal) >= 4 && nal[2] == 0 {
		return 4
	}
	return 3
}

// nextNAL returns the next NAL unit with its start code, its trailing
// zero bytes dropped; io.EOF at the end.
func (s *Splitter) nextNAL() ([]byte, error) {
	for !s.synced {
		// Skip leading zero bytes to the first start code.
		b := s.buf[s.off:]
		i := 0
		for i < len(b) && b[i] == 0 {
			i++
		}
		switch {
		case i < len(b) && b[i] == 1 && i >= 2:
			s.off += i - 2
			if i >= 3 {
				s.off-- // keep a 4-byte start code whole
			}
			s.synced = true
		case i < len(b):
			return nil, ErrNoStartCode
		case s.eof:
			return nil, io.EOF
		default:
			if err := s.fill(); err != nil {
				return nil, err
			}
		}
	}
	for {
		b := s.buf[s.off:]
		if len(b) == 0 && s.eof {
			return nil, io.EOF
		}
		from := startLen(b)
		if len(b) >= from {
			if next := startCode(b, from); next >= 0 {
				end, start := next, next
				if b[next-1] == 0 {
					start-- // the next one's 4-byte start code
				}
				for end > from && b[end-1] == 0 {
					end--
				}
				if end == from {
					return nil, errors.New("h264: empty NAL unit in the stream")
				}
				s.off += start
				return b[:end], nil
			}
		}
		if s.eof {
			end := len(b)
			for end > from && b[end-1] == 0 {
				end--
			}
			s.off += len(b)
			if end <= from {
				return nil, errors.New("h264: empty NAL unit at the end of the stream")
			}
			return b[:end], nil
		}
		if len(b) > MaxAccessUnit {
			return nil, fmt.Errorf("h264: NAL unit over %d bytes", MaxAccessUnit)
		}
		if err := s.fill(); err != nil {
			return nil, err
		}
	}
}

// fill reads more of the stream, moving what is left to the buffer's start.
func (s *Splitter) fill() error {
	if s.off > 0 {
		n := copy(s.buf, s.buf[s.off:])
		s.buf, s.off = s.buf[:n], 0
	}
	if cap(s.buf)-len(s.buf) < 32<<10 {
		nb := make([]byte, len(s.buf), 2*cap(s.buf)+64<<10)
		copy(nb, s.buf)
		s.buf = nb
	}
	n, err := s.r.Read(s.buf[len(s.buf):cap(s.buf)])
	s.buf = s.buf[:len(s.buf)+n]
	if errors.Is(err, io.EOF) {
		s.eof = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("h264: read: %w", err)
	}
	return nil
}

// SplitAccessUnits cuts a whole byte stream into access units (as
// Splitter), each a copy.
func SplitAccessUnits(stream []byte) ([][]byte, error) {
	sp := &Splitter{buf: stream, eof: true}
	var out [][]byte
	for {
		au, err := sp.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, append([]byte(nil), au...))
	}
}
