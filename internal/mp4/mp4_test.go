package mp4

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keyframe-cam/keyframe/internal/h264"
	"github.com/keyframe-cam/keyframe/internal/h264/h264test"
)

// tinySPS is a baseline SPS (level 3.0) of 168×140 (176×144 cropped) and
// tinyPPS a PPS: enough for the boxes, no decoder reads them.
var (
	tinySPS = []byte{0x67, 0x42, 0xc0, 0x1e, 0xda, 0x0b, 0x13, 0xe5, 0xb4}
	tinyPPS = []byte{0x68, 0xce, 0x38, 0x80}
)

// box is one box of a parsed file.
type box struct {
	path    string // "moov/trak/tkhd"
	payload []byte // after the 8-byte header
}

// parse walks the boxes of b (containers descended into) in order.
func parse(t *testing.T, b []byte, prefix string) []box {
	t.Helper()
	containers := map[string]int{"moov": 0, "trak": 0, "mdia": 0, "minf": 0, "dinf": 0, "stbl": 0, "mvex": 0, "moof": 0, "traf": 0,
		"dref": 8, "stsd": 8, "avc1": 78}
	var out []box
	for len(b) > 0 {
		if len(b) < 8 {
			t.Fatalf("%s: %d bytes left, not a box header", prefix, len(b))
		}
		size := int(binary.BigEndian.Uint32(b))
		typ := string(b[4:8])
		if size < 8 || size > len(b) {
			t.Fatalf("%s%s: size %d of %d bytes left", prefix, typ, size, len(b))
		}
		out = append(out, box{prefix + typ, b[8:size]})
		if skip, ok := containers[typ]; ok {
			out = append(out, parse(t, b[8+skip:size], prefix+typ+"/")...)
		}
		b = b[size:]
	}
	return out
}

func find(t *testing.T, bs []box, path string) []byte {
	t.Helper()
	for _, b := range bs {
		if b.path == path {
			return b.payload
		}
	}
	t.Fatalf("no box %s", path)
	return nil
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "\n", "", "\t", "").Replace(s))
	if err != nil {
		panic(err)
	}
	return b
}

// TestTinyClipLayout writes a clip of three samples in two fragments and
// checks the boxes against ISO/IEC 14496-12 and -15 field by field.
func TestTinyClipLayout(t *testing.T) {
	var out bytes.Buffer
	w, err := NewWriter(&out, Track{SPS: tinySPS, PPS: tinyPPS, Duration: 3 * 6000})
	if err != nil {
		t.Fatal(err)
	}
	initLen := out.Len()
	key := []byte{0, 0, 0, 3, 0x65, 0x88, 0x84}
	p := []byte{0, 0, 0, 2, 0x41, 0x9a}
	if err := w.WriteFragment(0, []Sample{{Duration: 6000, Key: true, Data: key}, {Duration: 6000, Data: p}}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFragment(12000, []Sample{{Duration: 6000, Data: p}}); err != nil {
		t.Fatal(err)
	}
	bs := parse(t, out.Bytes(), "")
	var paths []string
	for _, b := range bs {
		paths = append(paths, b.path)
	}
	want := "ftyp moov moov/mvhd moov/trak moov/trak/tkhd moov/trak/mdia moov/trak/mdia/mdhd moov/trak/mdia/hdlr moov/trak/mdia/minf " +
		"moov/trak/mdia/minf/vmhd moov/trak/mdia/minf/dinf moov/trak/mdia/minf/dinf/dref moov/trak/mdia/minf/dinf/dref/url  " +
		"moov/trak/mdia/minf/stbl moov/trak/mdia/minf/stbl/stsd moov/trak/mdia/minf/stbl/stsd/avc1 moov/trak/mdia/minf/stbl/stsd/avc1/avcC " +
		"moov/trak/mdia/minf/stbl/stts moov/trak/mdia/minf/stbl/stsc moov/trak/mdia/minf/stbl/stco moov/trak/mdia/minf/stbl/stsz " +
		"moov/mvex moov/mvex/mehd moov/mvex/trex moof moof/mfhd moof/traf moof/traf/tfhd moof/traf/tfdt moof/traf/trun mdat " +
		"moof moof/mfhd moof/traf moof/traf/tfhd moof/traf/tfdt moof/traf/trun mdat"
	if got := strings.Join(paths, " "); got != want {
		t.Fatalf("boxes:\n%s\nwant\n%s", got, want)
	}
	check := func(path string, n int, wantHex string) {
		t.Helper()
		var got []byte
		k := 0
		for _, b := range bs {
			if b.path == path {
				if k == n {
					got = b.payload
				}
				k++
			}
		}
		if w := unhex(wantHex); !bytes.Equal(got, w) {
			t.Errorf("%s #%d:\n got %x\nwant %x", path, n, got, w)
		}
	}
	// 4.3 ftyp: major brand, minor version, compatible brands.
	check("ftyp", 0, "69736f35 00000200 69736f35 69736f36 61766331 6d703431")
	// 8.2.2 mvhd v0: times, timescale 1000, duration 0, rate 1.0, volume
	// 1.0, reserved, unity matrix, pre_defined, next_track_ID 2.
	check("moov/mvhd", 0, "00000000 00000000 00000000 000003e8 00000000 00010000 0100 0000 00000000 00000000"+
		"00010000 00000000 00000000 00000000 00010000 00000000 00000000 00000000 40000000"+
		"000000000000000000000000000000000000000000000000 00000002")
	// 8.3.2 tkhd v0, flags enabled|in_movie: track 1, layer, group,
	// volume 0, matrix, width and height 16.16 (168 and 140).
	check("moov/trak/tkhd", 0, "00000003 00000000 00000000 00000001 00000000 00000000 00000000 00000000 0000 0000 0000 0000"+
		"00010000 00000000 00000000 00000000 00010000 00000000 00000000 00000000 40000000 00a80000 008c0000")
	// 8.4.2 mdhd v0: timescale 90000, duration 0, language "und".
	check("moov/trak/mdia/mdhd", 0, "00000000 00000000 00000000 00015f90 00000000 55c4 0000")
	// 8.4.3 hdlr: handler "vide", a name.
	check("moov/trak/mdia/hdlr", 0, "00000000 00000000 76696465 000000000000000000000000 566964656f48616e646c657200")
	// 12.1.2 vmhd, flags 1.
	check("moov/trak/mdia/minf/vmhd", 0, "00000001 0000 000000000000")
	// 8.7.2 dref: one self-contained url entry (flags 1).
	check("moov/trak/mdia/minf/dinf/dref", 0, "00000000 00000001 0000000c 75726c20 00000001")
	// 8.5.2 stsd: one avc1 visual sample entry (12.1.3): reserved,
	// data_reference_index 1, 168x140, 72 dpi, frame_count 1, no
	// compressor name, depth 24, pre_defined -1, then avcC.
	avc1 := find(t, bs, "moov/trak/mdia/minf/stbl/stsd/avc1")
	if w := unhex("000000000000 0001 0000 0000 000000000000000000000000 00a8 008c 00480000 00480000 00000000 0001" +
		"0000000000000000000000000000000000000000000000000000000000000000 0018 ffff"); !bytes.Equal(avc1[:78], w) {
		t.Errorf("avc1:\n got %x\nwant %x", avc1[:78], w)
	}
	// 14496-15 5.3.3.1 avcC: version 1, profile, compatibility, level from
	// the SPS, 4-byte lengths (0xff), one SPS, one PPS (baseline: no
	// chroma extension).
	check("moov/trak/mdia/minf/stbl/stsd/avc1/avcC", 0, "01 42 c0 1e ff e1 0009"+hex.EncodeToString(tinySPS)+"01 0004"+hex.EncodeToString(tinyPPS))
	check("moov/trak/mdia/minf/stbl/stts", 0, "00000000 00000000")
	check("moov/trak/mdia/minf/stbl/stsz", 0, "00000000 00000000 00000000")
	// 8.8.2 mehd v1: the fragments' duration in the movie timescale (0.2 s).
	check("moov/mvex/mehd", 0, "01000000 00000000000000c8")
	// 8.8.3 trex: track 1, sample description 1, no defaults.
	check("moov/mvex/trex", 0, "00000000 00000001 00000001 00000000 00000000 00000000")
	// 8.8.5 mfhd: sequence numbers from 1.
	check("moof/mfhd", 0, "00000000 00000001")
	check("moof/mfhd", 1, "00000000 00000002")
	// 8.8.7 tfhd: default-base-is-moof, track 1.
	check("moof/traf/tfhd", 0, "00020000 00000001")
	// 8.8.12 tfdt v1: the fragments' decode times.
	check("moof/traf/tfdt", 0, "01000000 0000000000000000")
	check("moof/traf/tfdt", 1, "01000000 0000000000002ee0")
	// 8.8.8 trun: data offset, duration, size, flags present (0x701);
	// the offset from the moof's start to its samples (moof 0x70 bytes +
	// mdat header); sync sample: depends on none; the other: depends,
	// non-sync.
	check("moof/traf/trun", 0, "00000701 00000002 00000078 00001770 00000007 02000000 00001770 00000006 01010000")
	check("moof/traf/trun", 1, "00000701 00000001 0000006c 00001770 00000006 01010000")
	check("mdat", 0, hex.EncodeToString(key)+hex.EncodeToString(p))
	check("mdat", 1, hex.EncodeToString(p))
	// The offset points at the samples: moof's start plus data_offset.
	moof := out.Bytes()[initLen:]
	if off := int(binary.BigEndian.Uint32(moof[8+16+8+16+20+16:])); !bytes.Equal(moof[off:off+len(key)], key) {
		t.Errorf("data_offset %d does not point at the first sample", off)
	}
}

func TestWriterErrors(t *testing.T) {
	if _, err := Init(Track{SPS: tinyPPS, PPS: tinyPPS}); err == nil {
		t.Error("a PPS for an SPS: no error")
	}
	if _, err := Init(Track{SPS: []byte{0x67, 66, 0, 30, 0xff}, PPS: tinyPPS}); err == nil || !strings.Contains(err.Error(), "SPS") {
		t.Errorf("a malformed SPS: %v", err)
	}
	w, err := NewWriter(&bytes.Buffer{}, Track{SPS: tinySPS, PPS: tinyPPS})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFragment(0, nil); err == nil {
		t.Error("an empty fragment: no error")
	}
	if err := w.WriteFragment(0, []Sample{{Duration: 1}}); err == nil {
		t.Error("an empty sample: no error")
	}
	if err := w.WriteFragment(10, []Sample{{Duration: 5, Data: []byte{0, 0, 0, 1, 0x41}}}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFragment(14, []Sample{{Duration: 5, Data: []byte{0, 0, 0, 1, 0x41}}}); err == nil {
		t.Error("a fragment before the end of the one before: no error")
	}
	for name, au := range map[string][]byte{
		"not Annex B": {0x65, 1},
		"no slice":    {0, 0, 1, 0x67, 66, 0, 30, 0, 0, 1, 0x68, 1},
	} {
		if _, _, _, _, err := AppendSample(nil, au); err == nil {
			t.Errorf("AppendSample %s: no error", name)
		}
	}
	au := []byte{0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x06, 5, 0, 0, 1, 0x65, 0x88, 0x80}
	got, key, sps, pps, err := AppendSample([]byte{9}, au)
	if err != nil || !key || !bytes.Equal(sps, []byte{0x67, 1, 2}) || !bytes.Equal(pps, []byte{0x68, 3}) ||
		!bytes.Equal(got, []byte{9, 0, 0, 0, 2, 0x06, 5, 0, 0, 0, 3, 0x65, 0x88, 0x80}) {
		t.Errorf("AppendSample: %x key %v sps %x pps %x %v (want the SEI and the slice, AUD and parameter sets left out)", got, key, sps, pps, err)
	}
}

// TestFFprobeReads: a libx264 stream written as fragmented MP4, one
// fragment a GOP, reads in ffprobe without a word on stderr, every frame
// counted, at its size, key frames where the GOPs begin and each frame at
// its time.
func TestFFprobeReads(t *testing.T) {
	const n, gop, rate = 45, 15, 15
	stream := h264test.Encode(t, 320, 240, rate, n, gop)
	aus, err := h264.SplitAccessUnits(stream)
	if err != nil {
		t.Fatal(err)
	}
	sps, pps, err := h264.ParamSets(aus[0])
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w, err := NewWriter(&out, Track{SPS: sps, PPS: pps, Duration: n * Timescale / rate})
	if err != nil {
		t.Fatal(err)
	}
	for f := 0; f < n; f += gop {
		var samples []Sample
		for i := f; i < f+gop; i++ {
			d, key, _, _, err := AppendSample(nil, aus[i])
			if err != nil {
				t.Fatal(err)
			}
			samples = append(samples, Sample{Duration: Timescale / rate, Key: key, Data: d})
		}
		if err := w.WriteFragment(uint64(f*Timescale/rate), samples); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(t.TempDir(), "clip.mp4")
	if err := os.WriteFile(file, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	info, stderr := h264test.Probe(t, file, "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0")
	if stderr != "" {
		t.Errorf("ffprobe wrote to stderr: %s", stderr)
	}
	if got := strings.TrimSpace(info); got != "h264,320,240,"+strconv.Itoa(n) {
		t.Errorf("ffprobe: %q, want h264,320,240,%d", got, n)
	}
	pk, stderr := h264test.Probe(t, file, "-select_streams", "v:0", "-show_entries", "packet=pts,flags", "-of", "csv=p=0")
	if stderr != "" {
		t.Errorf("ffprobe packets: stderr %s", stderr)
	}
	lines := strings.Fields(pk)
	if len(lines) != n {
		t.Fatalf("%d packets, want %d", len(lines), n)
	}
	for i, l := range lines {
		want := strconv.Itoa(i*Timescale/rate) + ","
		if i%gop == 0 {
			want += "K"
		}
		if !strings.HasPrefix(l, want) || (i%gop != 0 && strings.Contains(l, "K")) {
			t.Errorf("packet %d: %s, want pts %s", i, l, want)
		}
	}
}

// FuzzInitSample: any parameter sets and access unit: an error or a track
// and a sample, never a panic; a sample holds no parameter set.
func FuzzInitSample(f *testing.F) {
	f.Add(tinySPS, tinyPPS, []byte{0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x65, 0x88, 0x80})
	f.Add([]byte{0x67, 0x64, 0, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x6a}, tinyPPS, []byte{0, 0, 1, 0x41, 0x9a})
	f.Fuzz(func(t *testing.T, sps, pps, au []byte) {
		if b, err := Init(Track{SPS: sps, PPS: pps, Duration: 90000}); err == nil && !bytes.Contains(b, sps) {
			t.Error("the init segment lacks the SPS")
		}
		out, _, _, _, err := AppendSample(nil, au)
		if err != nil {
			return
		}
		for len(out) > 0 {
			if len(out) < 5 {
				t.Fatalf("sample ends in %d stray bytes", len(out))
			}
			n := int(binary.BigEndian.Uint32(out))
			if n < 1 || n > len(out)-4 {
				t.Fatalf("NAL length %d of %d bytes left", n, len(out)-4)
			}
			if typ := h264.Type(out[4:]); typ == h264.NALSPS || typ == h264.NALPPS || typ == h264.NALAUD {
				t.Errorf("a sample holds a NAL unit of type %d", typ)
			}
			out = out[4+n:]
		}
	})
}
