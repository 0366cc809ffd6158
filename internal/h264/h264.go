// Package h264 reads the parts of an H.264 (ITU-T H.264, ISO/IEC 14496-10)
// stream that a camera agent and its receiver need without decoding it:
// the NAL units of an Annex B byte stream (3- and 4-byte start codes), their
// types, whether an access unit is a key frame (holds an IDR picture), its
// parameter sets, the sequence parameter set's profile, level and picture
// size (with cropping), and a splitter that cuts a byte stream (ffmpeg -f
// h264, an encoder's output) into access units.
//
// Everything here is bounded: a NAL unit or access unit over its limit, a
// truncated or malformed field is an error, never a panic, and parsing an
// SPS allocates nothing.
package h264

import (
	"bytes"
	"errors"
	"fmt"
)

// NAL unit types (H.264 Table 7-1) this package names.
const (
	NALSlice    = 1  // coded slice of a non-IDR picture
	NALSliceA   = 2  // coded slice data partition A
	NALIDR      = 5  // coded slice of an IDR picture
	NALSEI      = 6  // supplemental enhancement information
	NALSPS      = 7  // sequence parameter set
	NALPPS      = 8  // picture parameter set
	NALAUD      = 9  // access unit delimiter
	NALEndSeq   = 10 // end of sequence
	NALEndStrm  = 11 // end of stream
	NALFiller   = 12 // filler data
	NALSPSExt   = 13 // sequence parameter set extension
	NALPrefix   = 14 // prefix NAL unit
	NALSubsetSP = 15 // subset sequence parameter set
)

// Limits.
const (
	// MaxAccessUnit bounds one access unit (a coded picture with its
	// parameter sets) in bytes.
	MaxAccessUnit = 8 << 20
	// MaxNALs bounds the NAL units of one access unit.
	MaxNALs = 1024
	// MaxParamSet bounds an SPS or PPS in bytes (avcC stores 16-bit lengths).
	MaxParamSet = 4096
)

// ErrNoStartCode is returned for a byte stream that does not begin with a
// start code (00 00 01 or 00 00 00 01).
var ErrNoStartCode = errors.New("h264: no start code at the beginning")

// Type is a NAL unit's nal_unit_type (its header byte's low five bits).
func Type(nal []byte) int {
	if len(nal) == 0 {
		return -1
	}
	return int(nal[0] & 0x1f)
}

// IsVCL reports whether a NAL unit type carries coded picture data
// (slices, types 1 to 5).
func IsVCL(typ int) bool { return typ >= NALSlice && typ <= NALIDR }

// startCode finds the next 00 00 01 in b at or after from: its index, or -1.
func startCode(b []byte, from int) int {
	if from+3 > len(b) {
		return -1
	}
	i := bytes.Index(b[from:], []byte{0, 0, 1})
	if i < 0 {
		return -1
	}
	return from + i
}

// NALs calls fn with every NAL unit of an Annex B byte stream b (without
// its start code and trailing zero bytes) in order, stopping at the first
// error fn returns. b must begin with a start code (leading zero bytes are
// allowed); an empty NAL unit (two start codes in a row) is an error, as
// are more than MaxNALs units.
func NALs(b []byte, fn func(nal []byte) error) error {
	i := 0
	for i < len(b) && b[i] == 0 {
		i++
	}
	if i < 2 || i >= len(b) || b[i] != 1 {
		return ErrNoStartCode
	}
	pos := i + 1
	for n := 0; ; n++ {
		if n == MaxNALs {
			return fmt.Errorf("h264: more than %d NAL units", MaxNALs)
		}
		next := startCode(b, pos)
		end, after := len(b), len(b)
		if next >= 0 {
			end, after = next, next+3
		}
		nal := b[pos:end]
		for len(nal) > 0 && nal[len(nal)-1] == 0 {
			nal = nal[:len(nal)-1]
		}
		if len(nal) == 0 {
			return fmt.Errorf("h264: empty NAL unit at byte %d", pos)
		}
		if nal[0]&0x80 != 0 {
			return fmt.Errorf("h264: NAL unit at byte %d: forbidden_zero_bit set", pos)
		}
		if err := fn(nal); err != nil {
			return err
		}
		if next < 0 {
			return nil
		}
		pos = after
	}
}

// IsKey reports whether an access unit (Annex B) holds an IDR picture, the
// point where a decoder can start. A malformed one is not a key frame.
func IsKey(au []byte) bool {
	key := false
	_ = NALs(au, func(nal []byte) error {
		if Type(nal) == NALIDR {
			key = true
		}
		return nil
	})
	return key
}

// ParamSets returns the first SPS and the first PPS of an access unit
// (Annex B), as NAL units without start codes (slices of au); nil where
// the access unit carries none.
func ParamSets(au []byte) (sps, pps []byte, err error) {
	err = NALs(au, func(nal []byte) error {
		switch Type(nal) {
		case NALSPS:
			if sps == nil {
				sps = nal
			}
		case NALPPS:
			if pps == nil {
				pps = nal
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(sps) > MaxParamSet || len(pps) > MaxParamSet {
		return nil, nil, fmt.Errorf("h264: parameter set of %d and %d bytes, at most %d", len(sps), len(pps), MaxParamSet)
	}
	return sps, pps, nil
}
