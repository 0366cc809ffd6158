//go:build linux

package m2m

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/keyframe-cam/keyframe/capture"
)

// TestKernelABI pins the structure sizes and request codes the kernel
// expects, on 64-bit and 32-bit targets (GOARCH=arm go test -c checks the
// latter under qemu-user; the board test with vicodec checks them for real).
func TestKernelABI(t *testing.T) {
	is64 := unsafe.Sizeof(uintptr(0)) == 8
	pick := func(a, b uintptr) uintptr {
		if is64 {
			return a
		}
		return b
	}
	sizes := []struct {
		name      string
		got, want uintptr
	}{
		{"v4l2_capability", unsafe.Sizeof(v4l2Capability{}), 104},
		{"v4l2_fmtdesc", unsafe.Sizeof(v4l2FmtDesc{}), 64},
		{"v4l2_format", unsafe.Sizeof(v4l2Format{}), pick(208, 204)},
		{"v4l2_requestbuffers", unsafe.Sizeof(v4l2RequestBuffers{}), 20},
		{"v4l2_buffer", unsafe.Sizeof(v4l2Buffer{}), pick(88, 68)},
		{"v4l2_plane", unsafe.Sizeof(v4l2Plane{}), pick(64, 60)},
		{"v4l2_streamparm", unsafe.Sizeof(v4l2StreamParm{}), 204},
		{"v4l2_queryctrl", unsafe.Sizeof(v4l2QueryCtrl{}), 68},
		{"v4l2_control", unsafe.Sizeof(v4l2Control{}), 8},
		{"v4l2_encoder_cmd", unsafe.Sizeof(v4l2EncoderCmd{}), 40},
		{"v4l2_selection", unsafe.Sizeof(v4l2Selection{}), 64},
	}
	for _, s := range sizes {
		if s.got != s.want {
			t.Errorf("sizeof(struct %s) = %d, want %d", s.name, s.got, s.want)
		}
	}
	codes := []struct {
		name      string
		got, want uintptr
	}{
		{"VIDIOC_QUERYCAP", vidiocQuerycap, 0x80685600},
		{"VIDIOC_S_FMT", vidiocSFmt, pick(0xc0d05605, 0xc0cc5605)},
		{"VIDIOC_QBUF", vidiocQbuf, pick(0xc058560f, 0xc044560f)},
		{"VIDIOC_DQBUF", vidiocDqbuf, pick(0xc0585611, 0xc0445611)},
		{"VIDIOC_STREAMON", vidiocStreamon, 0x40045612},
		{"VIDIOC_S_PARM", vidiocSParm, 0xc0cc5616},
		{"VIDIOC_S_CTRL", vidiocSCtrl, 0xc008561c},
		{"VIDIOC_ENCODER_CMD", vidiocEncoderCmd, 0xc028564d},
		{"VIDIOC_S_SELECTION", vidiocSSelection, 0xc040565f},
	}
	for _, c := range codes {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testConfig(in capture.PixelFormat) Config {
	return Config{Device: "/dev/fake", Width: 64, Height: 48, Input: in, FPS: 30, Bitrate: 1_000_000, GOP: 30, Logger: quiet()}
}

func openFake(t testing.TB, f *fakeEncoder, cfg Config) *Encoder {
	t.Helper()
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	e, err := open(f, cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// testFrame is a frame of the given format whose bytes follow a pattern
// that depends on n, with stride pad bytes after each line.
func testFrame(p capture.PixelFormat, w, h, pad, n int) *capture.Frame {
	stride := w + pad
	size := stride*h + stride*((h+1)/2)
	if p == capture.FormatYUYV {
		stride = 2*w + pad
		size = stride * h
	}
	fr := &capture.Frame{Width: w, Height: h, Format: p, Stride: stride, Data: make([]byte, size)}
	for i := range fr.Data {
		fr.Data[i] = byte(i*7 + n*13)
	}
	fr.Time = time.Date(2026, 1, 2, 3, 4, 5, n*1000, time.UTC)
	fr.Sequence = uint64(1000 + n)
	return fr
}

func receive(t *testing.T, e *Encoder) Packet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := e.Receive(ctx, nil)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return p
}

func encode(t *testing.T, e *Encoder, fr *capture.Frame, key bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Encode(ctx, fr, key); err != nil {
		t.Fatalf("encode: %v", err)
	}
}

// The whole sequence on both APIs: formats (coded first), rate, controls,
// buffers, and packets that map back to their frames.
func TestEncodeReceive(t *testing.T) {
	for _, mplane := range []bool{false, true} {
		t.Run(map[bool]string{false: "single", true: "multi"}[mplane], func(t *testing.T) {
			f := newFake(mplane)
			e := openFake(t, f, testConfig(capture.FormatNV12))
			info := e.Info()
			if info.MPlane != mplane || info.Driver != "fakecodec" || info.Codec != capture.FormatH264 || !info.ForceKey {
				t.Errorf("info = %+v", info)
			}
			if info.Width != 64 || info.Height != 48 || info.Stride != 64 || info.InBuffers != 4 || info.OutBuffers != 4 {
				t.Errorf("info geometry = %+v", info)
			}
			if f.rateSet != [2]uint32{1, 30} || info.FPS != 30 {
				t.Errorf("frame interval set %v, info.FPS %v; want 1/30", f.rateSet, info.FPS)
			}
			want := map[uint32]int32{cidBitrate: 1_000_000, cidGOPSize: 30, cidH264IPeriod: 30, cidRepeatSeqHeader: 1}
			for id, v := range want {
				if f.ctrlValues[id] != v {
					t.Errorf("control %#x = %d, want %d", id, f.ctrlValues[id], v)
				}
			}
			const n = 10
			for i := range n {
				fr := testFrame(capture.FormatNV12, 64, 48, 0, i)
				encode(t, e, fr, false)
				p := receive(t, e)
				if !p.Mapped || !p.Time.Equal(fr.Time) || p.Sequence != fr.Sequence {
					t.Errorf("packet %d: time %v seq %d mapped %v, want %v %d", i, p.Time, p.Sequence, p.Mapped, fr.Time, fr.Sequence)
				}
				if !bytes.HasPrefix(p.Data, []byte{0, 0, 0, 1}) {
					t.Errorf("packet %d is not Annex B: % x", i, p.Data)
				}
				if p.Key != (i == 0) {
					t.Errorf("packet %d key = %v", i, p.Key)
				}
				if got := p.Data[len(p.Data)-1]; got != byte(i) {
					t.Errorf("packet %d encodes frame %d", i, got)
				}
			}
			s := e.Stats()
			if s.FramesIn != n || s.PacketsOut != n || s.KeyFrames != 1 || s.Unmapped != 0 {
				t.Errorf("stats = %+v", s)
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			if !f.closed || f.unmapped != 8 || f.streaming != [2]bool{} {
				t.Errorf("after Close: closed %v, unmapped %d, streaming %v", f.closed, f.unmapped, f.streaming)
			}
			if err := e.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if err := e.Encode(context.Background(), testFrame(capture.FormatNV12, 64, 48, 0, 0), false); !errors.Is(err, ErrClosed) {
				t.Errorf("Encode after Close = %v, want ErrClosed", err)
			}
		})
	}
}

// Frames whose stride differs from the driver's, and a driver that pads the
// height: each plane lands where the driver's layout puts it.
func TestStrideConversion(t *testing.T) {
	for _, p := range []capture.PixelFormat{capture.FormatNV12, capture.FormatYU12, capture.FormatYUYV} {
		t.Run(p.String(), func(t *testing.T) {
			f := newFake(true)
			f.padStride, f.padHeight, f.keepRaw = 32, 16, true
			e := openFake(t, f, testConfig(p))
			fr := testFrame(p, 64, 48, 8, 1)
			encode(t, e, fr, false)
			receive(t, e)
			got := f.raw[0]
			src, err := rawLayout(p, 64, 48, fr.Stride, 48)
			if err != nil {
				t.Fatal(err)
			}
			info := e.Info()
			dst, err := rawLayout(p, 64, 48, info.Stride, info.Height)
			if err != nil {
				t.Fatal(err)
			}
			if info.Height != 64 || len(got) != info.SizeImage {
				t.Fatalf("driver height %d, payload %d bytes, sizeimage %d", info.Height, len(got), info.SizeImage)
			}
			if f.crop != [2]uint32{64, 48} {
				t.Errorf("crop rectangle %v, want the visible 64x48", f.crop)
			}
			for i := range dst.n {
				d, s := dst.planes[i], src.planes[i]
				for y := range d.rows {
					a := got[d.off+y*d.stride : d.off+y*d.stride+d.width]
					b := fr.Data[s.off+y*s.stride : s.off+y*s.stride+s.width]
					if !bytes.Equal(a, b) {
						t.Fatalf("plane %d line %d differs", i, y)
					}
				}
			}
		})
	}
}

func TestForcedKeyFrame(t *testing.T) {
	f := newFake(false)
	e := openFake(t, f, testConfig(capture.FormatYU12))
	for i := range 6 {
		encode(t, e, testFrame(capture.FormatYU12, 64, 48, 0, i), i == 3)
		if p := receive(t, e); p.Key != (i == 0 || i == 3) {
			t.Errorf("frame %d: key %v", i, p.Key)
		}
	}
	if s := e.Stats(); s.KeyForced != 1 || s.KeyIgnored != 0 || s.KeyFrames != 2 {
		t.Errorf("stats = %+v", s)
	}
}

// A driver without FORCE_KEY_FRAME (vicodec): reported, not fatal, and the
// requests are counted as ignored.
func TestForcedKeyFrameUnsupported(t *testing.T) {
	f := newFake(false)
	delete(f.ctrls, cidForceKeyFrame)
	delete(f.ctrls, cidBitrate)
	f.rateRefused = true
	e := openFake(t, f, testConfig(capture.FormatYU12))
	info := e.Info()
	u := strings.Join(info.Unsupported, "; ")
	if info.ForceKey || !strings.Contains(u, "force_key_frame") || !strings.Contains(u, "bitrate=1000000") || !strings.Contains(u, "frame rate 30") {
		t.Errorf("ForceKey %v, unsupported %q", info.ForceKey, u)
	}
	encode(t, e, testFrame(capture.FormatYU12, 64, 48, 0, 0), false)
	encode(t, e, testFrame(capture.FormatYU12, 64, 48, 0, 1), true)
	receive(t, e)
	if p := receive(t, e); p.Key {
		t.Error("a driver that cannot force key frames made one")
	}
	if s := e.Stats(); s.KeyIgnored != 1 || s.KeyForced != 0 {
		t.Errorf("stats = %+v", s)
	}
}

// Drain: the stop command, the remaining packets, the LAST flag, then
// end of stream (EPIPE from the driver) for Receive and Encode.
func TestDrain(t *testing.T) {
	for _, mplane := range []bool{false, true} {
		f := newFake(mplane)
		cfg := testConfig(capture.FormatNV12)
		cfg.OutBuffers = 1 // frames 1 and 2 are still queued when the stop command comes
		e := openFake(t, f, cfg)
		for i := range 3 {
			encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, i), false)
		}
		if err := e.Drain(); err != nil {
			t.Fatal(err)
		}
		if f.encoderCmds != 1 {
			t.Errorf("%d encoder commands", f.encoderCmds)
		}
		for i := range 3 {
			p := receive(t, e)
			if p.Last != (i == 2) || p.Sequence != uint64(1000+i) {
				t.Errorf("packet %d: last %v seq %d", i, p.Last, p.Sequence)
			}
		}
		for range 2 {
			if _, err := e.Receive(context.Background(), nil); !errors.Is(err, ErrEndOfStream) {
				t.Errorf("Receive after LAST = %v, want ErrEndOfStream", err)
			}
		}
		if err := e.Encode(context.Background(), testFrame(capture.FormatNV12, 64, 48, 0, 9), false); !errors.Is(err, ErrEndOfStream) {
			t.Errorf("Encode after Drain = %v, want ErrEndOfStream", err)
		}
	}
}

// Draining an idle encoder: the driver returns an empty buffer flagged LAST.
func TestDrainIdle(t *testing.T) {
	f := newFake(false)
	e := openFake(t, f, testConfig(capture.FormatNV12))
	encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, 0), false)
	receive(t, e)
	if err := e.Drain(); err != nil {
		t.Fatal(err)
	}
	if p, err := e.Receive(context.Background(), nil); !errors.Is(err, ErrEndOfStream) {
		t.Errorf("Receive = %+v, %v, want ErrEndOfStream", p, err)
	}
	if !f.lastDequeued {
		t.Error("the LAST buffer was not dequeued")
	}
}

// A buffer flagged ERROR is skipped and counted, and the next frame is made
// a key frame so the stream recovers.
func TestErrorFlag(t *testing.T) {
	f := newFake(false)
	f.errorAt = map[int]bool{2: true}
	e := openFake(t, f, testConfig(capture.FormatNV12))
	var seqs []uint64
	for i := range 3 {
		encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, i), false)
	}
	for range 2 {
		seqs = append(seqs, receive(t, e).Sequence)
	}
	// The third Receive skips frame 2's buffer, then waits for frame 3,
	// which is encoded once the error has been seen.
	got := make(chan Packet)
	go func() {
		p, err := e.Receive(context.Background(), nil)
		if err != nil {
			t.Error(err)
		}
		got <- p
	}()
	for e.Stats().Errors == 0 {
		runtime.Gosched()
	}
	encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, 3), false)
	p := <-got
	seqs = append(seqs, p.Sequence)
	if want := []uint64{1000, 1001, 1003}; !equal(seqs, want) {
		t.Errorf("sequences %v, want %v", seqs, want)
	}
	if !p.Key {
		t.Error("the frame after an error is no key frame")
	}
	if s := e.Stats(); s.Errors != 1 || s.KeyForced != 1 || s.PacketsOut != 3 {
		t.Errorf("stats = %+v", s)
	}
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A device that disappears: ErrNoDevice naming the device, from then on,
// and Close still releases what it can.
func TestLostDevice(t *testing.T) {
	f := newFake(true)
	f.goneAt = 2
	e := openFake(t, f, testConfig(capture.FormatNV12))
	encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, 0), false)
	receive(t, e)
	encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, 1), false) // the device goes while encoding it
	_, err := e.Receive(context.Background(), nil)
	if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), "/dev/fake") {
		t.Fatalf("Receive = %v, want ErrNoDevice naming the device", err)
	}
	if err := e.Encode(context.Background(), testFrame(capture.FormatNV12, 64, 48, 0, 2), false); !errors.Is(err, ErrNoDevice) {
		t.Errorf("Encode after the loss = %v, want ErrNoDevice", err)
	}
	if err := e.Drain(); !errors.Is(err, ErrNoDevice) {
		t.Errorf("Drain after the loss = %v, want ErrNoDevice", err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("Close after the loss = %v", err)
	}
}

// A device unplugged while Encode waits for a buffer.
func TestLostDeviceWhileWaiting(t *testing.T) {
	f := newFake(false)
	cfg := testConfig(capture.FormatNV12)
	cfg.InBuffers, cfg.OutBuffers = 1, 1
	e := openFake(t, f, cfg)
	encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, 0), false) // takes the CAPTURE buffer
	encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, 1), false) // the OUTPUT buffer came back: queued, waits
	done := make(chan error)
	go func() { done <- e.Encode(context.Background(), testFrame(capture.FormatNV12, 64, 48, 0, 2), false) }()
	f.unplug()
	if err := <-done; !errors.Is(err, ErrNoDevice) {
		t.Errorf("Encode = %v, want ErrNoDevice", err)
	}
}

// A driver that does not copy the timestamp: the packet says it is not
// mapped to a frame, and the count says so too.
func TestUnmappedTimestamp(t *testing.T) {
	f := newFake(false)
	f.badStamp = true
	e := openFake(t, f, testConfig(capture.FormatNV12))
	encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, 0), false)
	if p := receive(t, e); p.Mapped || !p.Time.IsZero() || p.Sequence != 0 {
		t.Errorf("packet mapped %v time %v seq %d, want unmapped", p.Mapped, p.Time, p.Sequence)
	}
	if s := e.Stats(); s.Unmapped != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestOpenErrors(t *testing.T) {
	cases := []struct {
		name  string
		setup func(f *fakeEncoder, c *Config)
		is    error
		say   string
	}{
		{"codec not offered", func(f *fakeEncoder, c *Config) { c.Codec = FormatFWHT }, capture.ErrUnsupportedFormat, "codec FWHT not offered (CAPTURE offers H264)"},
		{"raw not offered", func(f *fakeEncoder, c *Config) { f.raws = f.raws[:1]; c.Input = capture.FormatYUYV }, capture.ErrUnsupportedFormat, "input format YUYV not offered"},
		{"not m2m", func(f *fakeEncoder, c *Config) { f.notM2M = true }, ErrNoDevice, "not a memory-to-memory device"},
		{"not v4l2", func(f *fakeEncoder, c *Config) { f.noQueryCap = true }, ErrNoDevice, "not a V4L2 device"},
		{"gone", func(f *fakeEncoder, c *Config) { f.gone = true }, ErrNoDevice, "query capabilities"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFake(false)
			cfg := testConfig(capture.FormatNV12)
			c.setup(f, &cfg)
			cfg, err := cfg.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			_, err = open(f, cfg)
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.say) || !strings.Contains(err.Error(), "/dev/fake") {
				t.Errorf("open = %v, want %v saying %q", err, c.is, c.say)
			}
			if !f.closed {
				t.Error("a failed open left the device open")
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		cfg Config
		say string
	}{
		{Config{Width: 64, Height: 48, Input: capture.FormatNV12}, "Device is empty"},
		{Config{Device: "/dev/x", Width: 0, Height: 48, Input: capture.FormatNV12}, "size 0x48"},
		{Config{Device: "/dev/x", Width: 64, Height: 48, Input: capture.FormatMJPEG}, "Input MJPG"},
		{Config{Device: "/dev/x", Width: 64, Height: 48, Input: capture.FormatNV12, Codec: capture.FormatMJPEG}, "Codec MJPG"},
		{Config{Device: "/dev/x", Width: 63, Height: 48, Input: capture.FormatYUYV}, "YUYV width 63 is odd"},
		{Config{Device: "/dev/x", Width: 64, Height: 48, Input: capture.FormatNV12, GOP: -1}, "GOP -1"},
		{Config{Device: "/dev/x", Width: 64, Height: 48, Input: capture.FormatNV12, InBuffers: 99}, "buffer count 99"},
	}
	for _, c := range cases {
		if _, err := Open(c.cfg); err == nil || !strings.Contains(err.Error(), c.say) || !strings.HasPrefix(err.Error(), "m2m: ") {
			t.Errorf("Open(%+v) = %v, want an m2m error saying %q", c.cfg, err, c.say)
		}
	}
	if _, err := Open(Config{Device: "/nonexistent/video9", Width: 64, Height: 48, Input: capture.FormatNV12}); !errors.Is(err, ErrNoDevice) {
		t.Errorf("Open of a missing node = %v, want ErrNoDevice", err)
	}
}

func TestBadFrames(t *testing.T) {
	e := openFake(t, newFake(false), testConfig(capture.FormatNV12))
	short := testFrame(capture.FormatNV12, 64, 48, 0, 0)
	short.Data = short.Data[:100]
	cases := []struct {
		fr  *capture.Frame
		say string
	}{
		{nil, "frame: nil"},
		{testFrame(capture.FormatYUYV, 64, 48, 0, 0), "frame format YUYV, the encoder takes NV12"},
		{testFrame(capture.FormatNV12, 32, 48, 0, 0), "frame size 32x48, the encoder takes 64x48"},
		{short, "frame data: 100 bytes"},
	}
	for _, c := range cases {
		if err := e.Encode(context.Background(), c.fr, false); err == nil || !strings.Contains(err.Error(), c.say) {
			t.Errorf("Encode = %v, want %q", err, c.say)
		}
	}
	if s := e.Stats(); s.FramesIn != 0 {
		t.Errorf("bad frames were queued: %+v", s)
	}
}

// Parameter sets a driver returns in a buffer of their own are put in front
// of the next picture: one packet per access unit.
func TestSeparateParameterSets(t *testing.T) {
	f := newFake(true)
	f.separatePS, f.keyFlag = true, false
	f.gop = 3
	e := openFake(t, f, testConfig(capture.FormatNV12))
	for i := range 7 {
		encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, i), false)
		p := receive(t, e)
		key := i%3 == 0
		if p.Key != key || bytes.HasPrefix(p.Data, fakeSPSPPS) != key || p.Sequence != uint64(1000+i) {
			t.Errorf("packet %d: key %v, starts with SPS %v, seq %d: % x", i, p.Key, bytes.HasPrefix(p.Data, fakeSPSPPS), p.Sequence, p.Data)
		}
		if key && !bytes.Contains(p.Data, fakeIDR) {
			t.Errorf("packet %d has parameter sets but no IDR picture", i)
		}
	}
}

// vicodec: FWHT, key frames read from the FWHT header.
func TestFWHT(t *testing.T) {
	f := newFake(false)
	f.coded = []capture.PixelFormat{FormatFWHT}
	f.gop = 4
	cfg := testConfig(capture.FormatYU12)
	cfg.Codec = FormatFWHT
	e := openFake(t, f, cfg)
	if _, ok := f.ctrlValues[cidRepeatSeqHeader]; ok {
		t.Error("repeat_sequence_header set for FWHT")
	}
	for i := range 9 {
		encode(t, e, testFrame(capture.FormatYU12, 64, 48, 0, i), false)
		if p := receive(t, e); p.Key != (i%4 == 0) {
			t.Errorf("frame %d: key %v", i, p.Key)
		}
	}
}

// Encode waits for an OUTPUT buffer until its context ends; Receive frees
// the encoder to take one.
func TestEncodeWaits(t *testing.T) {
	f := newFake(false)
	cfg := testConfig(capture.FormatNV12)
	cfg.InBuffers, cfg.OutBuffers = 1, 1
	e := openFake(t, f, cfg)
	encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, 0), false)
	encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, 1), false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Encode(ctx, testFrame(capture.FormatNV12, 64, 48, 0, 2), false); !errors.Is(err, context.Canceled) {
		t.Fatalf("Encode with no free buffer = %v, want context.Canceled", err)
	}
	receive(t, e)
	encode(t, e, testFrame(capture.FormatNV12, 64, 48, 0, 2), false)
	if p := receive(t, e); p.Sequence != 1001 {
		t.Errorf("second packet seq %d", p.Sequence)
	}
}

// Close and a context's end never leave Receive waiting.
func TestReceiveUnblocks(t *testing.T) {
	e := openFake(t, newFake(false), testConfig(capture.FormatNV12))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := e.Receive(ctx, nil); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Receive after cancel = %v", err)
	}
	go func() { _, err := e.Receive(context.Background(), nil); done <- err }()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("Receive after Close = %v, want ErrClosed", err)
	}
}

// Encode and Receive on two goroutines, as a feeder runs them.
func TestConcurrent(t *testing.T) {
	e := openFake(t, newFake(true), testConfig(capture.FormatNV12))
	const n = 200
	var wg sync.WaitGroup
	wg.Add(1)
	errc := make(chan error, 1)
	go func() {
		defer wg.Done()
		for i := range n {
			if err := e.Encode(context.Background(), testFrame(capture.FormatNV12, 64, 48, 0, i), i%50 == 0); err != nil {
				errc <- err
				return
			}
		}
		errc <- e.Drain()
	}()
	var got int
	buf := make([]byte, 0, 256)
	for {
		p, err := e.Receive(context.Background(), buf)
		if errors.Is(err, ErrEndOfStream) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Sequence != uint64(1000+got) {
			t.Fatalf("packet %d has seq %d", got, p.Sequence)
		}
		got++
	}
	wg.Wait()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Errorf("%d packets for %d frames", got, n)
	}
}

func TestProbePick(t *testing.T) {
	f := newFake(true)
	n, ok := probeNode(f, "/dev/video11")
	if !ok || !n.Encoder() || !n.MPlane || n.Driver != "fakecodec" || !n.Offers(capture.FormatH264, capture.FormatYU12) {
		t.Fatalf("probe = %+v, %v", n, ok)
	}
	f2 := newFake(false)
	f2.notM2M = true
	if _, ok := probeNode(f2, "/dev/video0"); ok {
		t.Error("a capture node was listed")
	}
	dec := Node{Path: "/dev/video10", Raw: []capture.PixelFormat{capture.FormatNV12}} // a decoder: nothing compressed on CAPTURE
	vic := Node{Path: "/dev/video3", Coded: []capture.PixelFormat{FormatFWHT}, Raw: []capture.PixelFormat{capture.FormatYU12}}
	nodes := []Node{dec, vic, n}
	got, codec, err := pick(nodes, capture.FormatYU12, capture.FormatH264, FormatFWHT)
	if err != nil || got.Path != "/dev/video11" || codec != capture.FormatH264 {
		t.Errorf("pick = %v %v %v, want the H.264 encoder", got.Path, codec, err)
	}
	got, codec, err = pick(nodes[:2], capture.FormatYU12, capture.FormatH264, FormatFWHT)
	if err != nil || got.Path != "/dev/video3" || codec != FormatFWHT {
		t.Errorf("pick = %v %v %v, want vicodec", got.Path, codec, err)
	}
	if _, _, err = pick(nodes[:1], 0, capture.FormatH264); !errors.Is(err, ErrNoEncoder) {
		t.Errorf("pick without encoders = %v, want ErrNoEncoder", err)
	}
	if got := videoNodes([]string{"video10", "video2", "videox", "media0", "video0"}); strings.Join(got, ",") != "video0,video2,video10" {
		t.Errorf("videoNodes = %v", got)
	}
}

func TestH264Info(t *testing.T) {
	cases := []struct {
		b            []byte
		idr, picture bool
	}{
		{append(append([]byte{}, fakeSPSPPS...), fakeIDR...), true, true},
		{fakeSPSPPS, false, false},
		{fakeP, false, true},
		{[]byte{0, 0, 1, 0x65}, true, true}, // three-byte start code
		{[]byte{0x65, 0, 0}, false, false},
		{nil, false, false},
	}
	for _, c := range cases {
		if idr, pic := h264Info(c.b); idr != c.idr || pic != c.picture {
			t.Errorf("h264Info(% x) = %v %v, want %v %v", c.b, idr, pic, c.idr, c.picture)
		}
	}
}

// Steady state allocates nothing: Encode and Receive into a reused buffer.
func TestZeroAllocs(t *testing.T) {
	for _, mplane := range []bool{false, true} {
		e := openFake(t, newFake(mplane), testConfig(capture.FormatYU12))
		fr := testFrame(capture.FormatYU12, 64, 48, 16, 0)
		buf := make([]byte, 0, 4096)
		ctx := context.Background()
		i := 0
		step := func() {
			fr.Sequence++
			if err := e.Encode(ctx, fr, i%10 == 0); err != nil {
				t.Fatal(err)
			}
			p, err := e.Receive(ctx, buf)
			if err != nil {
				t.Fatal(err)
			}
			buf = p.Data[:0]
			i++
		}
		for range 10 {
			step()
		}
		if n := testing.AllocsPerRun(200, step); n != 0 {
			t.Errorf("mplane=%v: %v allocations per frame, want 0", mplane, n)
		}
	}
}

// BenchmarkEncodeFake is the encoder's own cost per frame (copying a
// 640x480 YU12 frame in with stride conversion, queueing, dequeueing and
// copying the packet out) against the fake driver, which "encodes" in
// constant time.
func BenchmarkEncodeFake(b *testing.B) {
	f := newFake(true)
	f.noSum = true
	cfg := testConfig(capture.FormatYU12)
	cfg.Width, cfg.Height = 640, 480
	f.padStride = 64
	e := openFake(b, f, cfg)
	fr := testFrame(capture.FormatYU12, 640, 480, 0, 0)
	buf := make([]byte, 0, 4096)
	ctx := context.Background()
	b.SetBytes(int64(len(fr.Data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Encode(ctx, fr, false); err != nil {
			b.Fatal(err)
		}
		p, err := e.Receive(ctx, buf)
		if err != nil {
			b.Fatal(err)
		}
		buf = p.Data[:0]
	}
}
