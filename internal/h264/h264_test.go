package h264

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/keyframe-cam/keyframe/internal/h264/h264test"
)

func TestNALs(t *testing.T) {
	b := []byte{0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 4, 5, 0}
	var got []string
	if err := NALs(b, func(n []byte) error { got = append(got, strconv.Itoa(Type(n))+":"+strconv.Itoa(len(n))); return nil }); err != nil {
		t.Fatal(err)
	}
	if s := strings.Join(got, " "); s != "7:3 8:2 5:3" {
		t.Errorf("NALs: %s, want 7:3 8:2 5:3 (types and lengths, trailing zeros dropped)", s)
	}
	for name, bad := range map[string][]byte{
		"empty":          nil,
		"no start code":  {0x65, 1, 2},
		"one zero":       {0, 1, 0x65},
		"empty NAL":      {0, 0, 1, 0, 0, 1, 0x65},
		"forbidden bit":  {0, 0, 1, 0xe5, 1},
		"only zeros":     {0, 0, 0, 0},
		"start code end": {0, 0, 1},
	} {
		if err := NALs(bad, func([]byte) error { return nil }); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	stop := errors.New("stop")
	n := 0
	if err := NALs(b, func([]byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("fn's error: %v after %d units", err, n)
	}
}

func TestIsKeyParamSets(t *testing.T) {
	idr := []byte{0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x64, 0, 0x1f, 0xac, 0, 0, 1, 0x68, 0xee, 0x3c, 0x80, 0, 0, 1, 0x65, 0x88, 0x84}
	p := []byte{0, 0, 0, 1, 0x41, 0x9a, 0x02}
	if !IsKey(idr) || IsKey(p) || IsKey([]byte{1, 2, 3}) {
		t.Error("IsKey: want true for the IDR access unit only")
	}
	sps, pps, err := ParamSets(idr)
	if err != nil || !bytes.Equal(sps, []byte{0x67, 0x64, 0, 0x1f, 0xac}) || !bytes.Equal(pps, []byte{0x68, 0xee, 0x3c, 0x80}) {
		t.Errorf("ParamSets: %x %x %v", sps, pps, err)
	}
	if sps, pps, err := ParamSets(p); err != nil || sps != nil || pps != nil {
		t.Errorf("ParamSets of a P frame: %x %x %v", sps, pps, err)
	}
}

// TestParseSPSHandMade: a baseline SPS written bit by bit (176×144 minus
// cropping), with an emulation prevention byte inside it.
func TestParseSPSHandMade(t *testing.T) {
	// profile 66, constraints 0xc0, level 30; id 0 (1); log2_max_frame_num_minus4 0 (1);
	// poc type 2 (011); max_num_ref_frames 1 (010); gaps 0; width_mbs_minus1 10 (0001011);
	// height_map_minus1 8 (0001001); frame_mbs_only 1; direct8x8 1; cropping 1;
	// left 0 (1) right 4 (00101) top 0 (1) bottom 2 (011); vui 0; stop bit.
	bits := "1" + "1" + "011" + "010" + "0" + "0001011" + "0001001" + "1" + "1" + "1" + "1" + "00101" + "1" + "011" + "0" + "1"
	for len(bits)%8 != 0 {
		bits += "0"
	}
	nal := []byte{0x67, 66, 0xc0, 30}
	for i := 0; i < len(bits); i += 8 {
		v, _ := strconv.ParseUint(bits[i:i+8], 2, 8)
		nal = append(nal, byte(v))
	}
	s, err := ParseSPS(nal)
	if err != nil {
		t.Fatal(err)
	}
	if s.Profile != 66 || s.Level != 30 || s.Constraints != 0xc0 || s.Width != 176-8 || s.Height != 144-4 || !s.FrameMbsOnly || s.ChromaFormat != 1 {
		t.Errorf("ParseSPS: %+v, want baseline 3.0 168x140", s)
	}
	// The same with level and constraints 0 and an emulation prevention
	// byte after them: a decoder drops every 03 that follows 00 00 in a
	// NAL unit (7.4.1), so the fields after it read the same.
	esc := append([]byte{0x67, 66, 0, 0, 3}, nal[4:]...)
	if s, err = ParseSPS(esc); err != nil || s.Level != 0 || s.Width != 168 {
		t.Errorf("with an emulation prevention byte: %+v, %v", s, err)
	}
	for name, bad := range map[string][]byte{
		"not an SPS": {0x68, 66, 0, 30, 0xff},
		"truncated":  nal[:6],
		"too long":   append([]byte{0x67}, make([]byte, MaxParamSet)...),
		"huge width": {0x67, 66, 0, 30, 0xf8, 0, 0, 0, 0, 1},
	} {
		if _, err := ParseSPS(bad); err == nil || !strings.HasPrefix(err.Error(), "h264: SPS: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestStreamFromFFmpeg: libx264 streams at several settings (baseline,
// high with a scaling matrix, 4:2:2 and 4:4:4, sizes that need cropping)
// split into as many access units as ffmpeg wrote frames, a key frame
// where the GOP begins, and the SPS's size is the one ffprobe reads.
func TestStreamFromFFmpeg(t *testing.T) {
	cases := []struct {
		name  string
		w, h  int
		extra []string
		prof  uint8
	}{
		{"high", 320, 240, nil, 100},
		{"baseline", 320, 240, []string{"-profile:v", "baseline"}, 66},
		{"cropped", 322, 242, nil, 100},
		{"scaling matrix", 320, 240, []string{"-x264-params", "cqm=jvt"}, 100},
		{"4:2:2 cropped", 318, 246, []string{"-pix_fmt", "yuv422p"}, 122},
		{"4:4:4 matrix", 322, 238, []string{"-pix_fmt", "yuv444p", "-x264-params", "cqm=jvt"}, 244},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			const n, gop = 45, 15
			stream := h264test.Encode(t, c.w, c.h, 15, n, gop, c.extra...)
			aus, err := SplitAccessUnits(stream)
			if err != nil {
				t.Fatal(err)
			}
			if len(aus) != n {
				t.Fatalf("%d access units, want %d", len(aus), n)
			}
			// The streaming splitter, fed a byte at a time, cuts the same.
			sp := NewSplitter(iotest.OneByteReader(bytes.NewReader(stream)))
			for i := 0; ; i++ {
				au, err := sp.Next()
				if errors.Is(err, io.EOF) {
					if i != n {
						t.Errorf("streaming: %d access units", i)
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if i >= n || !bytes.Equal(au, aus[i]) {
					t.Fatalf("streaming: access unit %d differs", i)
				}
			}
			for i, au := range aus {
				if IsKey(au) != (i%gop == 0) {
					t.Errorf("access unit %d: key %v", i, IsKey(au))
				}
				vcl := 0
				if err := NALs(au, func(nal []byte) error {
					if IsVCL(Type(nal)) {
						vcl++
					}
					return nil
				}); err != nil || vcl == 0 {
					t.Errorf("access unit %d: %d slices, %v", i, vcl, err)
				}
			}
			sps, pps, err := ParamSets(aus[0])
			if err != nil || sps == nil || pps == nil {
				t.Fatalf("first access unit's parameter sets: %v", err)
			}
			s, err := ParseSPS(sps)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "s.h264")
			if err := os.WriteFile(file, stream, 0o600); err != nil {
				t.Fatal(err)
			}
			out, _ := h264test.Probe(t, file, "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0")
			if want := strconv.Itoa(s.Width) + "," + strconv.Itoa(s.Height); strings.TrimSpace(out) != want || s.Width != c.w || s.Height != c.h {
				t.Errorf("SPS says %s, ffprobe %q, encoded %dx%d", want, strings.TrimSpace(out), c.w, c.h)
			}
			if s.Profile != c.prof {
				t.Errorf("profile %d, want %d", s.Profile, c.prof)
			}
		})
	}
}

func FuzzParseSPS(f *testing.F) {
	f.Add([]byte{0x67, 0x64, 0, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x6a})
	f.Add([]byte{0x67, 66, 0xc0, 30, 0xd9, 0x42, 0x86})
	f.Add([]byte{0x67, 0xf4, 0, 0x1f, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0, 0, 3, 0, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSPS(b)
		if err == nil && (s.Width <= 0 || s.Height <= 0 || s.Width > maxMbs*16 || s.Height > 2*maxMbs*16) {
			t.Errorf("size %dx%d accepted", s.Width, s.Height)
		}
	})
}

func FuzzSplit(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 0x88, 0, 0, 1, 0x41, 0x9a, 0, 0, 1, 0x41, 0x80})
	f.Add([]byte{0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x41, 0x80, 0, 0, 1, 0x09, 0xf0})
	f.Fuzz(func(t *testing.T, b []byte) {
		aus, err := SplitAccessUnits(b)
		if err != nil {
			return
		}
		total := 0
		for _, au := range aus {
			total += len(au)
			if err := NALs(au, func([]byte) error { return nil }); err != nil {
				t.Errorf("an access unit the splitter cut does not parse: %v", err)
			}
			IsKey(au)
			_, _, _ = ParamSets(au)
		}
		if total > len(b) {
			t.Errorf("%d bytes of access units from %d", total, len(b))
		}
	})
}

// TestParseSPSAllocates: reading an SPS (libx264's 4:4:4 with scaling
// matrices), scaling lists and all, allocates nothing (the bit reader skips emulation prevention bytes in place).
func TestParseSPSAllocates(t *testing.T) {
	stream := h264test.Encode(t, 322, 238, 15, 1, 15, "-pix_fmt", "yuv444p", "-x264-params", "cqm=jvt")
	sps, _, err := ParamSets(stream)
	if err != nil || sps == nil {
		t.Fatalf("no SPS: %v", err)
	}
	if s, err := ParseSPS(sps); err != nil || s.Width != 322 {
		t.Fatalf("ParseSPS: %+v %v", s, err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseSPS(sps) }); n != 0 {
		t.Errorf("ParseSPS allocates %.0f times", n)
	}
	au := append(append([]byte{0, 0, 0, 1}, sps...), 0, 0, 1, 0x65, 0x88)
	if n := testing.AllocsPerRun(100, func() { IsKey(au) }); n != 0 {
		t.Errorf("IsKey allocates %.0f times", n)
	}
}
