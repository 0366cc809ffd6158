// Package mp4 writes fragmented MP4 (ISO/IEC 14496-12, the ISO base media
// file format) of one H.264 video track (ISO/IEC 14496-15, AVC file
// format): an initialization segment (ftyp, moov with the track's avcC and
// no samples, mvex) and then fragments (moof, mdat), each written as it
// comes, so a clip of any length streams with one fragment in memory.
// Browsers play the result in a <video> element and ffmpeg reads it.
//
// Samples are access units in AVCC form: each NAL unit preceded by its
// length in four bytes (Sample makes one from Annex B, leaving out the
// parameter sets and access unit delimiters, which the avcC holds).
package mp4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/keyframe-cam/keyframe/internal/h264"
)

// Timescale is the track's time units a second (the MPEG 90 kHz clock).
const Timescale = 90000

// movieTimescale is the movie header's time units a second.
const movieTimescale = 1000

// Limits of what the writer takes.
const (
	// MaxFragmentSamples bounds one fragment's samples.
	MaxFragmentSamples = 4096
	// MaxFragmentBytes bounds one fragment's sample data.
	MaxFragmentBytes = 64 << 20
)

// trackID is the one track's ID.
const trackID = 1

// Track describes the video track.
type Track struct {
	SPS, PPS []byte // the parameter sets (NAL units without start codes)
	// Duration is the whole track's length in Timescale units if known
	// (written as the fragments' total, mehd); 0 if not.
	Duration uint64
}

// Sample is one access unit of a fragment.
type Sample struct {
	Duration uint32 // in Timescale units
	Key      bool   // a sync sample (an IDR picture)
	Data     []byte // AVCC: NAL units each after a 4-byte length
}

// Writer writes a fragmented MP4 file.
type Writer struct {
	w    io.Writer
	seq  uint32
	next uint64 // the decode time after the last fragment's samples
	buf  []byte
}

// NewWriter writes the initialization segment for track t to w.
func NewWriter(w io.Writer, t Track) (*Writer, error) {
	b, err := Init(t)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(b); err != nil {
		return nil, fmt.Errorf("mp4: write: %w", err)
	}
	return &Writer{w: w}, nil
}

// NewFragmentWriter writes fragments to w after an initialization segment
// written already (Init).
func NewFragmentWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Init returns the initialization segment (ftyp and moov) for t.
func Init(t Track) ([]byte, error) {
	if h264.Type(t.SPS) != h264.NALSPS || h264.Type(t.PPS) != h264.NALPPS {
		return nil, errors.New("mp4: track needs an SPS and a PPS")
	}
	if len(t.SPS) > h264.MaxParamSet || len(t.PPS) > h264.MaxParamSet {
		return nil, fmt.Errorf("mp4: parameter sets of %d and %d bytes, at most %d", len(t.SPS), len(t.PPS), h264.MaxParamSet)
	}
	sps, err := h264.ParseSPS(t.SPS)
	if err != nil {
		return nil, fmt.Errorf("mp4: %w", err)
	}
	b := &boxes{}
	b.open("ftyp")
	b.str("iso5")
	b.u32(512)
	for _, br := range []string{"iso5", "iso6", "avc1", "mp41"} {
		b.str(br)
	}
	b.close()

	b.open("moov")
	b.full("mvhd", 0, 0)
	b.u32(0) // creation_time
	b.u32(0) // modification_time
	b.u32(movieTimescale)
	b.u32(0) // duration: the fragments say (mehd)
	b.u32(0x00010000)
	b.u16(0x0100)
	b.zeros(2 + 8)
	b.matrix()
	b.zeros(24) // pre_defined
	b.u32(trackID + 1)
	b.close()

	b.open("trak")
	b.full("tkhd", 0, 3) // track_enabled | track_in_movie
	b.u32(0)
	b.u32(0)
	b.u32(trackID)
	b.u32(0) // reserved
	b.u32(0) // duration
	b.zeros(8)
	b.u16(0) // layer
	b.u16(0) // alternate_group
	b.u16(0) // volume: not audio
	b.u16(0)
	b.matrix()
	b.u32(uint32(sps.Width) << 16)
	b.u32(uint32(sps.Height) << 16)
	b.close()

	b.open("mdia")
	b.full("mdhd", 0, 0)
	b.u32(0)
	b.u32(0)
	b.u32(Timescale)
	b.u32(0)
	b.u16(0x55c4) // "und", packed ISO-639-2/T
	b.u16(0)
	b.close()
	b.full("hdlr", 0, 0)
	b.u32(0)
	b.str("vide")
	b.zeros(12)
	b.raw([]byte("VideoHandler\x00"))
	b.close()

	b.open("minf")
	b.full("vmhd", 0, 1)
	b.zeros(8) // graphicsmode, opcolor
	b.close()
	b.open("dinf")
	b.full("dref", 0, 0)
	b.u32(1)
	b.full("url ", 0, 1) // the media is in this file
	b.close()
	b.close()
	b.close()

	b.open("stbl")
	b.full("stsd", 0, 0)
	b.u32(1)
	b.open("avc1")
	b.zeros(6)
	b.u16(1) // data_reference_index
	b.zeros(16)
	b.u16(uint16(sps.Width))
	b.u16(uint16(sps.Height))
	b.u32(0x00480000) // 72 dpi
	b.u32(0x00480000)
	b.u32(0)
	b.u16(1) // frame_count
	b.zeros(32)
	b.u16(0x0018) // depth
	b.u16(0xffff) // pre_defined -1
	b.avcC(t.SPS, t.PPS, sps)
	b.close()
	b.close()
	for _, name := range []string{"stts", "stsc", "stco"} {
		b.full(name, 0, 0)
		b.u32(0)
		b.close()
	}
	b.full("stsz", 0, 0)
	b.u32(0)
	b.u32(0)
	b.close()
	b.close() // stbl
	b.close() // minf
	b.close() // mdia
	b.close() // trak

	b.open("mvex")
	if t.Duration > 0 {
		b.full("mehd", 1, 0)
		b.u64(t.Duration * movieTimescale / Timescale)
		b.close()
	}
	b.full("trex", 0, 0)
	b.u32(trackID)
	b.u32(1) // default_sample_description_index
	b.u32(0)
	b.u32(0)
	b.u32(0)
	b.close()
	b.close() // mvex
	b.close() // moov
	return b.b, nil
}

// Sample flags (ISO/IEC 14496-12 8.8.3.1): a sync sample depends on no
// other (sample_depends_on 2); any other depends on others (1) and is not
// a sync sample.
const (
	flagsSync    = 0x02000000
	flagsNonSync = 0x01010000
)

// WriteFragment writes one fragment of samples starting at decode time
// base (Timescale units from the track's start; it must not go back before
// the end of the fragment before): a moof and an mdat.
func (w *Writer) WriteFragment(base uint64, samples []Sample) error {
	if len(samples) == 0 || len(samples) > MaxFragmentSamples {
		return fmt.Errorf("mp4: fragment of %d samples, want 1 to %d", len(samples), MaxFragmentSamples)
	}
	if base < w.next {
		return fmt.Errorf("mp4: fragment at %d, before the end of the one before (%d)", base, w.next)
	}
	data := 0
	end := base
	for i, s := range samples {
		if len(s.Data) == 0 {
			return fmt.Errorf("mp4: fragment %d: sample %d is empty", w.seq+1, i)
		}
		data += len(s.Data)
		end += uint64(s.Duration)
	}
	if data > MaxFragmentBytes {
		return fmt.Errorf("mp4: fragment of %d bytes, at most %d", data, MaxFragmentBytes)
	}
	w.seq++
	b := &boxes{b: w.buf[:0]}
	b.open("moof")
	b.full("mfhd", 0, 0)
	b.u32(w.seq)
	b.close()
	b.open("traf")
	b.full("tfhd", 0, 0x020000) // default-base-is-moof
	b.u32(trackID)
	b.close()
	b.full("tfdt", 1, 0)
	b.u64(base)
	b.close()
	// data-offset, sample-duration, -size and -flags present.
	b.full("trun", 0, 0x000701)
	b.u32(uint32(len(samples)))
	offsetAt := len(b.b)
	b.u32(0) // data_offset, set below
	for _, s := range samples {
		b.u32(s.Duration)
		b.u32(uint32(len(s.Data)))
		if s.Key {
			b.u32(flagsSync)
		} else {
			b.u32(flagsNonSync)
		}
	}
	b.close()
	b.close() // traf
	b.close() // moof
	// The samples begin after the moof and the mdat's header; the offset
	// counts from the moof's first byte.
	binary.BigEndian.PutUint32(b.b[offsetAt:], uint32(len(b.b)+8))
	b.b = binary.BigEndian.AppendUint32(b.b, uint32(8+data))
	b.b = append(b.b, "mdat"...)
	w.buf = b.b
	if _, err := w.w.Write(b.b); err != nil {
		return fmt.Errorf("mp4: write: %w", err)
	}
	for _, s := range samples {
		if _, err := w.w.Write(s.Data); err != nil {
			return fmt.Errorf("mp4: write: %w", err)
		}
	}
	w.next = end
	return nil
}

// AppendSample converts an access unit (Annex B) to AVCC, appended to dst: each
// NAL unit after its length in four bytes, leaving out parameter sets,
// access unit delimiters and end-of-sequence, end-of-stream and filler
// units. key reports an IDR picture; sps and pps are the access unit's
// first parameter sets (slices of au, nil if none). An access unit without
// a slice is an error.
func AppendSample(dst, au []byte) (out []byte, key bool, sps, pps []byte, err error) {
	slices := 0
	err = h264.NALs(au, func(nal []byte) error {
		switch typ := h264.Type(nal); typ {
		case h264.NALSPS:
			if sps == nil {
				sps = nal
			}
			return nil
		case h264.NALPPS:
			if pps == nil {
				pps = nal
			}
			return nil
		case h264.NALAUD, h264.NALEndSeq, h264.NALEndStrm, h264.NALFiller:
			return nil
		case h264.NALIDR:
			key = true
			fallthrough
		default:
			if h264.IsVCL(typ) {
				slices++
			}
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(nal)))
		dst = append(dst, nal...)
		return nil
	})
	if err != nil {
		return dst, false, nil, nil, fmt.Errorf("mp4: access unit: %w", err)
	}
	if slices == 0 {
		return dst, false, nil, nil, errors.New("mp4: access unit without a coded slice")
	}
	return dst, key, sps, pps, nil
}

// boxes builds boxes in a byte slice: open writes a header whose size
// close fills in.
type boxes struct {
	b      []byte
	starts []int
}

func (b *boxes) open(typ string) {
	b.starts = append(b.starts, len(b.b))
	b.b = append(b.b, 0, 0, 0, 0)
	b.b = append(b.b, typ...)
}

// full opens a full box: its version and flags after the header.
func (b *boxes) full(typ string, version uint8, flags uint32) {
	b.open(typ)
	b.u32(uint32(version)<<24 | flags&0xffffff)
}

func (b *boxes) close() {
	at := b.starts[len(b.starts)-1]
	b.starts = b.starts[:len(b.starts)-1]
	binary.BigEndian.PutUint32(b.b[at:], uint32(len(b.b)-at))
}

func (b *boxes) u16(v uint16) { b.b = binary.BigEndian.AppendUint16(b.b, v) }
func (b *boxes) u32(v uint32) { b.b = binary.BigEndian.AppendUint32(b.b, v) }
func (b *boxes) u64(v uint64) { b.b = binary.BigEndian.AppendUint64(b.b, v) }
func (b *boxes) str(s string) { b.b = append(b.b, s...) }
func (b *boxes) raw(p []byte) { b.b = append(b.b, p...) }
func (b *boxes) zeros(n int)  { b.b = append(b.b, make([]byte, n)...) }

// matrix writes the identity transformation matrix (mvhd, tkhd).
func (b *boxes) matrix() {
	for _, v := range []uint32{0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000} {
		b.u32(v)
	}
}

// avcC writes the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1)
// of one SPS and one PPS, with 4-byte NAL unit lengths.
func (b *boxes) avcC(sps, pps []byte, s h264.SPS) {
	b.open("avcC")
	b.raw([]byte{1, sps[1], sps[2], sps[3], 0xfc | 3, 0xe0 | 1})
	b.u16(uint16(len(sps)))
	b.raw(sps)
	b.raw([]byte{1})
	b.u16(uint16(len(pps)))
	b.raw(pps)
	switch s.Profile {
	case 100, 110, 122, 144:
		b.raw([]byte{0xfc | byte(s.ChromaFormat), 0xf8 | byte(s.BitDepthLuma-8), 0xf8 | byte(s.BitDepthChroma-8), 0})
	}
	b.close()
}
