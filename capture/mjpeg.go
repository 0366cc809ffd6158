package capture

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
)

// Motion-JPEG. Many UVC cameras send each frame as a JPEG without Huffman
// tables (no DHT segment): the MJPEG/AVI1 convention is that the decoder uses
// the standard tables of ITU-T T.81 Annex K.3, which image/jpeg does not do.
// [jpegWithHuffman] inserts a DHT segment with those tables before the first
// SOS when the frame has none, so every MJPEG frame this package delivers is
// a complete JPEG any decoder reads.

// The standard Huffman tables of ITU-T T.81 Annex K.3, as the bytes of a DHT
// segment: the 16 code counts of each code length, then the symbols.
const (
	// K.3.1, Table K.3: luminance DC: 16 code counts, then the symbols.
	huffDCLumaBits = "\x00\x01\x05\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00"
	huffDCLumaVals = "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b"
	// K.3.2, Table K.5: luminance AC: 16 code counts, then the symbols.
	huffACLumaBits = "\x00\x02\x01\x03\x03\x02\x04\x03\x05\x05\x04\x04\x00\x00\x01\x7d"
	huffACLumaVals = "\x01\x02\x03\x00\x04\x11\x05\x12\x21\x31\x41\x06\x13\x51\x61\x07" +
		"\x22\x71\x14\x32\x81\x91\xa1\x08\x23\x42\xb1\xc1\x15\x52\xd1\xf0" +
		"\x24\x33\x62\x72\x82\x09\x0a\x16\x17\x18\x19\x1a\x25\x26\x27\x28" +
		"\x29\x2a\x34\x35\x36\x37\x38\x39\x3a\x43\x44\x45\x46\x47\x48\x49" +
		"\x4a\x53\x54\x55\x56\x57\x58\x59\x5a\x63\x64\x65\x66\x67\x68\x69" +
		"\x6a\x73\x74\x75\x76\x77\x78\x79\x7a\x83\x84\x85\x86\x87\x88\x89" +
		"\x8a\x92\x93\x94\x95\x96\x97\x98\x99\x9a\xa2\xa3\xa4\xa5\xa6\xa7" +
		"\xa8\xa9\xaa\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xc2\xc3\xc4\xc5" +
		"\xc6\xc7\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda\xe1\xe2" +
		"\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8" +
		"\xf9\xfa"
	// K.3.1, Table K.4: chrominance DC: 16 code counts, then the symbols.
	huffDCChromaBits = "\x00\x03\x01\x01\x01\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00"
	huffDCChromaVals = "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b"
	// K.3.2, Table K.6: chrominance AC: 16 code counts, then the symbols.
	huffACChromaBits = "\x00\x02\x01\x02\x04\x04\x03\x04\x07\x05\x04\x04\x00\x01\x02\x77"
	huffACChromaVals = "\x00\x01\x02\x03\x11\x04\x05\x21\x31\x06\x12\x41\x51\x07\x61\x71" +
		"\x13\x22\x32\x81\x08\x14\x42\x91\xa1\xb1\xc1\x09\x23\x33\x52\xf0" +
		"\x15\x62\x72\xd1\x0a\x16\x24\x34\xe1\x25\xf1\x17\x18\x19\x1a\x26" +
		"\x27\x28\x29\x2a\x35\x36\x37\x38\x39\x3a\x43\x44\x45\x46\x47\x48" +
		"\x49\x4a\x53\x54\x55\x56\x57\x58\x59\x5a\x63\x64\x65\x66\x67\x68" +
		"\x69\x6a\x73\x74\x75\x76\x77\x78\x79\x7a\x82\x83\x84\x85\x86\x87" +
		"\x88\x89\x8a\x92\x93\x94\x95\x96\x97\x98\x99\x9a\xa2\xa3\xa4\xa5" +
		"\xa6\xa7\xa8\xa9\xaa\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xc2\xc3" +
		"\xc4\xc5\xc6\xc7\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda" +
		"\xe2\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xf2\xf3\xf4\xf5\xf6\xf7\xf8" +
		"\xf9\xfa"

	// stdDHT is one DHT segment with all four tables: marker, length
	// (2+4*17+12+162+12+162 = 418), then for each table its class and
	// destination (0x00 DC 0, 0x10 AC 0, 0x01 DC 1, 0x11 AC 1), counts and
	// symbols.
	stdDHT = "\xff\xc4\x01\xa2" +
		"\x00" + huffDCLumaBits + huffDCLumaVals +
		"\x10" + huffACLumaBits + huffACLumaVals +
		"\x01" + huffDCChromaBits + huffDCChromaVals +
		"\x11" + huffACChromaBits + huffACChromaVals
)

// errBadJPEG marks a frame that is not a well-formed JPEG.
var errBadJPEG = errors.New("capture: bad MJPEG frame")

// jpegInfo is what scanJPEG learns from the segments before the first SOS.
type jpegInfo struct {
	sos           int  // offset of the first SOS marker
	hasDHT        bool // a DHT segment comes before it
	width, height int  // from the SOF segment
}

// scanJPEG walks the marker segments of a JPEG up to its first SOS. It checks
// their structure only; the entropy-coded data is left to the decoder.
func scanJPEG(b []byte) (jpegInfo, error) {
	var info jpegInfo
	if len(b) < 4 || b[0] != 0xff || b[1] != 0xd8 {
		return info, fmt.Errorf("%w: no SOI marker", errBadJPEG)
	}
	sof := false
	for i := 2; ; {
		if i >= len(b) {
			return info, fmt.Errorf("%w: no SOS marker in %d bytes", errBadJPEG, len(b))
		}
		if b[i] != 0xff {
			return info, fmt.Errorf("%w: byte %#02x at offset %d where a marker should be", errBadJPEG, b[i], i)
		}
		for i+1 < len(b) && b[i+1] == 0xff { // fill bytes
			i++
		}
		if i+1 >= len(b) {
			return info, fmt.Errorf("%w: truncated at offset %d", errBadJPEG, i)
		}
		m := b[i+1]
		switch {
		case m == 0xd8 || m == 0x01 || (m >= 0xd0 && m <= 0xd7): // SOI, TEM, RSTn: no length
			i += 2
			continue
		case m == 0xd9 || m == 0x00:
			return info, fmt.Errorf("%w: marker %#02x before SOS", errBadJPEG, m)
		case m == 0xda:
			if !sof {
				return info, fmt.Errorf("%w: SOS before SOF", errBadJPEG)
			}
			info.sos = i
			return info, nil
		}
		if i+4 > len(b) {
			return info, fmt.Errorf("%w: truncated at offset %d", errBadJPEG, i)
		}
		n := int(b[i+2])<<8 | int(b[i+3])
		if n < 2 || i+2+n > len(b) {
			return info, fmt.Errorf("%w: segment %#02x at offset %d has length %d", errBadJPEG, m, i, n)
		}
		switch {
		case m == 0xc4:
			info.hasDHT = true
		case m >= 0xc0 && m <= 0xcf && m != 0xc8 && m != 0xcc: // SOFn
			if n < 7 {
				return info, fmt.Errorf("%w: short SOF segment", errBadJPEG)
			}
			info.height = int(b[i+5])<<8 | int(b[i+6])
			info.width = int(b[i+7])<<8 | int(b[i+8])
			sof = true
		}
		i += 2 + n
	}
}

// jpegWithHuffman appends the JPEG in src to dst, with the standard Huffman
// tables inserted before the first SOS when src has no DHT segment of its
// own, and returns it with the frame size from the SOF segment. Once dst has
// grown it allocates nothing unless src is malformed.
func jpegWithHuffman(dst, src []byte) (out []byte, width, height int, err error) {
	info, err := scanJPEG(src)
	if err != nil {
		return dst, 0, 0, err
	}
	if info.hasDHT {
		return append(dst, src...), info.width, info.height, nil
	}
	dst = append(dst, src[:info.sos]...)
	dst = append(dst, stdDHT...)
	dst = append(dst, src[info.sos:]...)
	return dst, info.width, info.height, nil
}

// decodeJPEG decodes one JPEG into a YCbCr or Gray image.
func decodeJPEG(b []byte) (image.Image, error) {
	b, w, h, err := jpegWithHuffman(nil, b)
	if err != nil {
		return nil, err
	}
	if w < 1 || h < 1 || w > maxFrameSide || h > maxFrameSide {
		return nil, fmt.Errorf("%w: size %dx%d", errBadJPEG, w, h)
	}
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadJPEG, err)
	}
	switch img.(type) {
	case *image.YCbCr, *image.Gray:
		return img, nil
	}
	return nil, fmt.Errorf("%w: colour model %T, want YCbCr or grey", errBadJPEG, img)
}

// fillFromJPEG decodes a complete JPEG (as jpegWithHuffman returns it) of the
// expected size into f: Data is the JPEG, Luma its Y plane. A JPEG that does
// not decode, or has another size, leaves f unchanged. The decoder allocates
// the image: MJPEG capture is not allocation-free.
func fillFromJPEG(f *Frame, jpg []byte, w, h int) error {
	info, err := scanJPEG(jpg)
	if err != nil {
		return err
	}
	if info.width != w || info.height != h {
		// Checked before decoding: a corrupt header must not make the
		// decoder allocate a huge image.
		return fmt.Errorf("%w: JPEG is %dx%d, driver set %dx%d", errBadJPEG, info.width, info.height, w, h)
	}
	img, err := jpeg.Decode(bytes.NewReader(jpg))
	if err != nil {
		return fmt.Errorf("%w: %w", errBadJPEG, err)
	}
	var plane []byte
	var stride int
	switch m := img.(type) {
	case *image.YCbCr:
		plane, stride = m.Y[m.YOffset(m.Rect.Min.X, m.Rect.Min.Y):], m.YStride
	case *image.Gray:
		plane, stride = m.Pix[m.PixOffset(m.Rect.Min.X, m.Rect.Min.Y):], m.Stride
	default:
		return fmt.Errorf("%w: colour model %T, want YCbCr or grey", errBadJPEG, img)
	}
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		return fmt.Errorf("%w: decoded %dx%d, want %dx%d", errBadJPEG, b.Dx(), b.Dy(), w, h)
	}
	f.Width, f.Height = w, h
	f.Format, f.Stride = FormatMJPEG, 0
	f.Data = append(f.Data[:0], jpg...)
	f.Luma = grow(f.Luma, w*h)
	lumaFromGrey(f.Luma, plane, w, h, stride)
	return nil
}
