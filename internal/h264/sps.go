package h264

import (
	"errors"
	"fmt"
)

// SPS is what this package reads of a sequence parameter set (H.264
// 7.3.2.1.1): enough to describe the stream in a container.
type SPS struct {
	Profile        uint8 // profile_idc (66 baseline, 77 main, 100 high, ...)
	Constraints    uint8 // the constraint_set flags byte
	Level          uint8 // level_idc (31 for level 3.1)
	ID             uint32
	ChromaFormat   uint32 // chroma_format_idc: 1 (4:2:0) unless a high profile says otherwise
	BitDepthLuma   uint32 // bit_depth_luma_minus8 + 8
	BitDepthChroma uint32 // bit_depth_chroma_minus8 + 8
	FrameMbsOnly   bool
	// Width and Height are the picture's size in pixels after cropping.
	Width, Height int
}

// maxMbs bounds the picture's width and height in macroblocks (16 px):
// 8192 pixels, beyond any level's limit.
const maxMbs = 512

var errShort = errors.New("truncated")

// bitReader reads an RBSP bit by bit from a NAL unit's payload, skipping
// emulation prevention bytes (00 00 03) as it goes: nothing is copied.
type bitReader struct {
	b     []byte
	pos   int  // next byte of b to load
	cur   byte // the loaded byte
	left  int  // its bits not yet read
	zeros int  // zero bytes just before pos
}

func (r *bitReader) bit() (uint32, error) {
	if r.left == 0 {
		if r.pos >= len(r.b) {
			return 0, errShort
		}
		c := r.b[r.pos]
		r.pos++
		if r.zeros >= 2 && c == 3 {
			r.zeros = 0
			if r.pos >= len(r.b) {
				return 0, errShort
			}
			c = r.b[r.pos]
			r.pos++
		}
		if c == 0 {
			r.zeros++
		} else {
			r.zeros = 0
		}
		r.cur, r.left = c, 8
	}
	r.left--
	return uint32(r.cur>>r.left) & 1, nil
}

func (r *bitReader) bits(n int) (uint32, error) {
	var v uint32
	for range n {
		b, err := r.bit()
		if err != nil {
			return 0, err
		}
		v = v<<1 | b
	}
	return v, nil
}

func (r *bitReader) flag() (bool, error) {
	b, err := r.bit()
	return b == 1, err
}

// ue reads an unsigned exp-Golomb code (9.1), at most 32 bits of value.
func (r *bitReader) ue() (uint32, error) {
	zeros := 0
	for {
		b, err := r.bit()
		if err != nil {
			return 0, err
		}
		if b == 1 {
			break
		}
		zeros++
		if zeros > 31 {
			return 0, errors.New("exp-Golomb code longer than 32 bits")
		}
	}
	rest, err := r.bits(zeros)
	if err != nil {
		return 0, err
	}
	return uint32((uint64(1)<<zeros - 1) + uint64(rest)), nil
}

// se reads a signed exp-Golomb code (9.1.1).
func (r *bitReader) se() (int32, error) {
	v, err := r.ue()
	if err != nil {
		return 0, err
	}
	if v&1 == 1 {
		return int32((int64(v) + 1) / 2), nil
	}
	return int32(-(int64(v) / 2)), nil
}

// ueMax reads ue(v) and checks it is at most limit, naming the field.
func (r *bitReader) ueMax(field string, limit uint32) (uint32, error) {
	v, err := r.ue()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	if v > limit {
		return 0, fmt.Errorf("%s %d out of range (at most %d)", field, v, limit)
	}
	return v, nil
}

// highProfile reports whether an SPS of this profile_idc carries
// chroma_format_idc, bit depths and scaling matrices (7.3.2.1.1).
func highProfile(p uint8) bool {
	switch p {
	case 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135:
		return true
	}
	return false
}

// ParseSPS reads a sequence parameter set NAL unit (with its one-byte
// header, without a start code) up to its frame cropping: the fields of
// SPS. The VUI and what follows are not read.
func ParseSPS(nal []byte) (SPS, error) {
	s, err := parseSPS(nal)
	if err != nil {
		return SPS{}, fmt.Errorf("h264: SPS: %w", err)
	}
	return s, nil
}

func parseSPS(nal []byte) (SPS, error) {
	var s SPS
	if Type(nal) != NALSPS {
		return s, fmt.Errorf("NAL unit type %d, want %d", Type(nal), NALSPS)
	}
	if len(nal) > MaxParamSet {
		return s, fmt.Errorf("%d bytes, at most %d", len(nal), MaxParamSet)
	}
	r := &bitReader{b: nal[1:]}
	hdr, err := r.bits(24)
	if err != nil {
		return s, fmt.Errorf("profile and level: %w", err)
	}
	s.Profile, s.Constraints, s.Level = uint8(hdr>>16), uint8(hdr>>8), uint8(hdr)
	if s.ID, err = r.ueMax("seq_parameter_set_id", 31); err != nil {
		return s, err
	}
	s.ChromaFormat, s.BitDepthLuma, s.BitDepthChroma = 1, 8, 8
	separate := false
	if highProfile(s.Profile) {
		if s.ChromaFormat, err = r.ueMax("chroma_format_idc", 3); err != nil {
			return s, err
		}
		if s.ChromaFormat == 3 {
			if separate, err = r.flag(); err != nil {
				return s, fmt.Errorf("separate_colour_plane_flag: %w", err)
			}
		}
		d, err := r.ueMax("bit_depth_luma_minus8", 6)
		if err != nil {
			return s, err
		}
		s.BitDepthLuma = d + 8
		if d, err = r.ueMax("bit_depth_chroma_minus8", 6); err != nil {
			return s, err
		}
		s.BitDepthChroma = d + 8
		if _, err = r.flag(); err != nil { // qpprime_y_zero_transform_bypass_flag
			return s, fmt.Errorf("qpprime_y_zero_transform_bypass_flag: %w", err)
		}
		matrix, err := r.flag()
		if err != nil {
			return s, fmt.Errorf("seq_scaling_matrix_present_flag: %w", err)
		}
		if matrix {
			n := 8
			if s.ChromaFormat == 3 {
				n = 12
			}
			for i := range n {
				present, err := r.flag()
				if err != nil {
					return s, fmt.Errorf("seq_scaling_list_present_flag[%d]: %w", i, err)
				}
				if !present {
					continue
				}
				size := 16
				if i >= 6 {
					size = 64
				}
				if err := skipScalingList(r, size); err != nil {
					return s, fmt.Errorf("scaling list %d: %w", i, err)
				}
			}
		}
	}
	if _, err = r.ueMax("log2_max_frame_num_minus4", 12); err != nil {
		return s, err
	}
	pocType, err := r.ueMax("pic_order_cnt_type", 2)
	if err != nil {
		return s, err
	}
	switch pocType {
	case 0:
		if _, err = r.ueMax("log2_max_pic_order_cnt_lsb_minus4", 12); err != nil {
			return s, err
		}
	case 1:
		if _, err = r.flag(); err != nil {
			return s, fmt.Errorf("delta_pic_order_always_zero_flag: %w", err)
		}
		if _, err = r.se(); err != nil {
			return s, fmt.Errorf("offset_for_non_ref_pic: %w", err)
		}
		if _, err = r.se(); err != nil {
			return s, fmt.Errorf("offset_for_top_to_bottom_field: %w", err)
		}
		n, err := r.ueMax("num_ref_frames_in_pic_order_cnt_cycle", 255)
		if err != nil {
			return s, err
		}
		for i := range n {
			if _, err = r.se(); err != nil {
				return s, fmt.Errorf("offset_for_ref_frame[%d]: %w", i, err)
			}
		}
	}
	if _, err = r.ueMax("max_num_ref_frames", 32); err != nil {
		return s, err
	}
	if _, err = r.flag(); err != nil {
		return s, fmt.Errorf("gaps_in_frame_num_value_allowed_flag: %w", err)
	}
	wMbs, err := r.ueMax("pic_width_in_mbs_minus1", maxMbs-1)
	if err != nil {
		return s, err
	}
	hMap, err := r.ueMax("pic_height_in_map_units_minus1", maxMbs-1)
	if err != nil {
		return s, err
	}
	if s.FrameMbsOnly, err = r.flag(); err != nil {
		return s, fmt.Errorf("frame_mbs_only_flag: %w", err)
	}
	if !s.FrameMbsOnly {
		if _, err = r.flag(); err != nil {
			return s, fmt.Errorf("mb_adaptive_frame_field_flag: %w", err)
		}
	}
	if _, err = r.flag(); err != nil {
		return s, fmt.Errorf("direct_8x8_inference_flag: %w", err)
	}
	fieldMul := 1
	if !s.FrameMbsOnly {
		fieldMul = 2
	}
	w, h := int(wMbs+1)*16, fieldMul*int(hMap+1)*16
	crop, err := r.flag()
	if err != nil {
		return s, fmt.Errorf("frame_cropping_flag: %w", err)
	}
	if crop {
		var c [4]uint32 // left, right, top, bottom
		for i, name := range []string{"frame_crop_left_offset", "frame_crop_right_offset", "frame_crop_top_offset", "frame_crop_bottom_offset"} {
			if c[i], err = r.ueMax(name, 2*maxMbs*16); err != nil {
				return s, err
			}
		}
		// 7.4.2.1.1: crop units by ChromaArrayType.
		unitX, unitY := 1, fieldMul
		if !separate && s.ChromaFormat != 0 {
			subW, subH := 2, 2
			switch s.ChromaFormat {
			case 2:
				subH = 1
			case 3:
				subW, subH = 1, 1
			}
			unitX, unitY = subW, subH*fieldMul
		}
		w -= unitX * int(c[0]+c[1])
		h -= unitY * int(c[2]+c[3])
		if w <= 0 || h <= 0 {
			return s, fmt.Errorf("cropping (%d, %d, %d, %d) leaves no picture of %dx%d", c[0], c[1], c[2], c[3], int(wMbs+1)*16, fieldMul*int(hMap+1)*16)
		}
	}
	s.Width, s.Height = w, h
	return s, nil
}

// skipScalingList reads a scaling_list() of size entries (7.3.2.1.1.1).
func skipScalingList(r *bitReader, size int) error {
	last, next := int32(8), int32(8)
	for j := range size {
		if next != 0 {
			delta, err := r.se()
			if err != nil {
				return err
			}
			if delta < -128 || delta > 127 {
				return fmt.Errorf("delta_scale %d out of range", delta)
			}
			next = (last + delta + 256) % 256
			if j == 0 && next == 0 {
				return nil // useDefaultScalingMatrixFlag
			}
		}
		if next != 0 {
			last = next
		}
	}
	return nil
}
