package clip

// A minimal Annex B scan for the feeder and the exec encoder: NAL unit
// types and access-unit boundaries (ITU-T H.264 §7.4.1.2.3), nothing of the
// slice data. It is private to the package on purpose: the project's H.264
// parsing lives elsewhere, and this is only what a clip needs to split an
// encoder's byte stream and to tell key frames.

// NAL unit types used here.
const (
	nalSlice = 1  // coded slice of a non-IDR picture
	nalIDR   = 5  // coded slice of an IDR picture
	nalSEI   = 6  // supplemental enhancement information
	nalSPS   = 7  // sequence parameter set
	nalPPS   = 8  // picture parameter set
	nalAUD   = 9  // access unit delimiter
	nalEOSeq = 10 // end of sequence
)

// startCode returns the offset of the next start code prefix (00 00 01) in
// b at or after from, or -1.
func startCode(b []byte, from int) int {
	for i := from; i+2 < len(b); {
		switch {
		case b[i+2] > 1:
			i += 3
		case b[i+2] == 1 && b[i] == 0 && b[i+1] == 0:
			return i
		default:
			i++
		}
	}
	return -1
}

// auInfo is what scanAU found in one access unit.
type auInfo struct {
	idr, sps, pps, vcl bool
}

// scanAU reports the NAL unit types of an access unit in Annex B form.
func scanAU(b []byte) auInfo {
	var in auInfo
	for i := startCode(b, 0); i >= 0; i = startCode(b, i+3) {
		if i+3 >= len(b) {
			break
		}
		switch b[i+3] & 0x1f {
		case nalIDR:
			in.idr, in.vcl = true, true
		case nalSlice:
			in.vcl = true
		case nalSPS:
			in.sps = true
		case nalPPS:
			in.pps = true
		}
	}
	return in
}

// isKeyAU reports whether an access unit is an IDR picture carrying its
// SPS and PPS: one a decoder can start at.
func isKeyAU(b []byte) bool {
	in := scanAU(b)
	return in.idr && in.sps && in.pps
}

// auSplitter cuts an Annex B byte stream into access units: read into
// space, then take the complete units with next. An access unit is known to
// be complete only when the next one starts (or at the end of the stream,
// flush): one begins at an access unit delimiter, SPS, PPS, SEI or types
// 14–18 after a picture's slices, or at a slice whose first_mb_in_slice is
// 0 (its header's first bit set) after a picture's slices. The buffer grows
// to the largest access unit plus a read, and is reused.
type auSplitter struct {
	buf   []byte
	start int  // where the access unit being collected starts in buf
	scan  int  // where to look for the next start code
	began bool // buf[start:] begins with a start code
	vcl   bool // the access unit being collected has a slice
}

// space returns room for n more bytes of the stream at the end of the
// buffer, first dropping the bytes of units already returned; report what
// was written there with wrote.
func (s *auSplitter) space(n int) []byte {
	if s.start > 0 {
		m := copy(s.buf, s.buf[s.start:])
		s.buf = s.buf[:m]
		s.scan -= s.start
		s.start = 0
	}
	if cap(s.buf)-len(s.buf) < n {
		nb := make([]byte, len(s.buf), 2*cap(s.buf)+n)
		copy(nb, s.buf)
		s.buf = nb
	}
	return s.buf[len(s.buf) : len(s.buf)+n]
}

// wrote adds the n bytes written at the start of space's slice.
func (s *auSplitter) wrote(n int) { s.buf = s.buf[:len(s.buf)+n] }

// next returns the next complete access unit (valid until the next call of
// space or reset) and true, or false when more of the stream is needed.
// Bytes before the stream's first start code belong to no unit: they are
// dropped and counted in junk.
func (s *auSplitter) next() (au []byte, junk int, ok bool) {
	if !s.began {
		i := startCode(s.buf, s.start)
		if i < 0 {
			keep := min(3, len(s.buf)-s.start) // a start code may straddle reads
			junk = len(s.buf) - s.start - keep
			s.start = len(s.buf) - keep
			return nil, junk, false
		}
		if i > s.start && s.buf[i-1] == 0 {
			i-- // a four-byte start code
		}
		junk = i - s.start
		s.start, s.scan, s.began = i, i, true
	}
	for {
		i := startCode(s.buf, s.scan)
		if i < 0 {
			s.scan = max(s.scan, len(s.buf)-2)
			return nil, junk, false
		}
		if i+4 >= len(s.buf) { // the NAL header and one more byte decide
			s.scan = i
			return nil, junk, false
		}
		typ := s.buf[i+3] & 0x1f
		vcl := typ == nalSlice || typ == nalIDR
		begins := typ == nalAUD || typ == nalSPS || typ == nalPPS || typ == nalSEI || (typ >= 14 && typ <= 18) ||
			(vcl && s.buf[i+4]&0x80 != 0)
		if s.vcl && begins {
			// i starts the next access unit; a zero byte before its
			// start code (a four-byte start code) goes with it.
			end := i
			if end > s.start && s.buf[end-1] == 0 {
				end--
			}
			au = s.buf[s.start:end]
			s.start, s.scan, s.vcl = end, i+3, vcl
			return au, junk, true
		}
		s.vcl = s.vcl || vcl
		s.scan = i + 3
	}
}

// flush returns what is left of the stream as its last access unit when it
// holds a slice, and empties the splitter.
func (s *auSplitter) flush() ([]byte, bool) {
	au, ok := s.buf[s.start:], s.vcl && s.began
	s.reset()
	return au, ok
}

// pending is how many bytes of an unfinished unit the splitter holds.
func (s *auSplitter) pending() int { return len(s.buf) - s.start }

// reset empties the splitter, keeping its buffer.
func (s *auSplitter) reset() {
	s.buf, s.start, s.scan, s.began, s.vcl = s.buf[:0], 0, 0, false, false
}
