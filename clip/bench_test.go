package clip

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/motion"
)

// BenchmarkPush copies 50 KB frames (a 640x480 MJPEG frame) into a ring at
// the default caps, evicting as it goes.
func BenchmarkPush(b *testing.B) {
	r, err := NewRing(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	data := patterned(nil, 1, 50<<10)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	i := 0
	for b.Loop() {
		i++
		if err := r.Push(Frame{Time: t0.Add(time.Duration(i) * time.Millisecond), Sequence: uint64(i), Origin: Camera, Data: data}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCursorNext copies 50 KB frames out of a ring through a cursor.
func BenchmarkCursorNext(b *testing.B) {
	r, err := NewRing(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	c := r.Cursor(time.Time{})
	defer c.Close()
	data := patterned(nil, 1, 50<<10)
	buf := make([]byte, 0, len(data))
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := r.Push(Frame{Time: t0, Data: data}); err != nil {
			b.Fatal(err)
		}
		if _, _, ok := c.TryNext(buf); !ok {
			b.Fatal("no frame")
		}
	}
}

// BenchmarkOffer times Offer on the caller's frame path at 640x480, next to
// a plain copy of the YUYV frame (memmove): yuyv hands every frame to the
// encoder (a copy of its bytes; the encoder's side is not run), mjpeg
// pushes a 50 KB frame into the ring, skipped is a frame within the rate's
// interval, dropped one that finds the encoder busy.
func BenchmarkOffer(b *testing.B) {
	const w, h = 640, 480
	src := syntheticFrames(b, w, h, 1)[0]
	cfg := DefaultConfig()
	setup := func(b *testing.B) *Feeder {
		_, f := newTestFeeder(b, cfg)
		b.ReportAllocs()
		return f
	}
	i := 0
	next := func() *capture.Frame {
		i++
		src.Time, src.Sequence = t0.Add(time.Duration(i)*cfg.interval()), uint64(i)
		return &src
	}
	b.Run("640x480-yuyv", func(b *testing.B) {
		f := setup(b)
		b.SetBytes(int64(len(src.Data)))
		for b.Loop() {
			if err := f.Offer(next()); err != nil {
				b.Fatal(err)
			}
			f.spare <- <-f.slot
		}
	})
	b.Run("640x480-memmove", func(b *testing.B) {
		dst := make([]byte, len(src.Data))
		b.ReportAllocs()
		b.SetBytes(int64(len(src.Data)))
		for b.Loop() {
			copy(dst, src.Data)
		}
	})
	b.Run("640x480-mjpeg-50KB", func(b *testing.B) {
		f := setup(b)
		m := mjpegFrame(patterned(nil, 1, 50<<10), 0, t0)
		m.Data[0], m.Data[1] = 0xff, 0xd8
		b.SetBytes(int64(len(m.Data)))
		for b.Loop() {
			fr := next()
			m.Time, m.Sequence = fr.Time, fr.Sequence
			if err := f.Offer(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("640x480-skipped", func(b *testing.B) {
		f := setup(b)
		if err := f.Offer(next()); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := f.Offer(&src); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("640x480-dropped", func(b *testing.B) {
		f := setup(b)
		if err := f.Offer(next()); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := f.Offer(next()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEncode times the encoder's work per frame (rearranging the planes
// and image/jpeg at the default quality) at 640x480, and reports the JPEG's
// size.
func BenchmarkEncode(b *testing.B) {
	yuyv := syntheticFrames(b, 640, 480, 1)[0]
	formats := map[string]capture.Frame{"yuyv": yuyv}
	for _, p := range []capture.PixelFormat{capture.FormatNV12, capture.FormatGrey} {
		fr, _ := rgbFrame(p, 640, 480, 0)
		// Carry the synthetic scene's luma, so the JPEG has its texture.
		for y := range 480 {
			for x := range 640 {
				fr.Data[y*fr.Stride+x] = yuyv.Data[y*yuyv.Stride+2*x]
			}
		}
		formats[p.String()] = fr
	}
	for _, name := range []string{"yuyv", "NV12", "GREY"} {
		fr := formats[name]
		b.Run("640x480-"+name, func(b *testing.B) {
			n, err := rawLayout(fr.Format, fr.Width, fr.Height, fr.Stride)
			if err != nil {
				b.Fatal(err)
			}
			var r raw
			r.fill(&fr, n)
			e := newEncoder(DefaultConfig().Quality)
			var size int
			b.ReportAllocs()
			for b.Loop() {
				jpg, err := e.encode(&r)
				if err != nil {
					b.Fatal(err)
				}
				size = len(jpg)
			}
			b.ReportMetric(float64(size), "jpeg-bytes")
		})
	}
}

// BenchmarkFramePath times the agent's frame path, the motion detector's
// step on a 640x480 YUYV frame (as motion's BenchmarkStep does it), alone
// and followed by Offer with the encoder running on another goroutine at
// the default rate (10 frames/s of a 30 fps timeline: every third frame
// copied for the encoder, the others skipped), and with every frame offered
// (rate 30). ns/op is the frame loop's cost per frame; encoded/frame and
// dropped/frame say what the encoder kept up with.
func BenchmarkFramePath(b *testing.B) {
	const w, h = 640, 480
	src := syntheticFrames(b, w, h, 16)
	step := func(b *testing.B) func(f *capture.Frame) {
		d, err := motion.NewDetector(motion.DefaultConfig())
		if err != nil {
			b.Fatal(err)
		}
		return func(f *capture.Frame) {
			pix, stride, st := f.LumaPlane()
			d.StepPlane(pix, w, h, stride, st)
		}
	}
	b.Run("step", func(b *testing.B) {
		s := step(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			s(&src[i%len(src)])
			i++
		}
	})
	for _, rate := range []float64{10, 30} {
		b.Run(fmt.Sprintf("step+offer-rate%v", rate), func(b *testing.B) {
			s := step(b)
			cfg := DefaultConfig()
			cfg.Rate = rate
			_, f := newTestFeeder(b, cfg)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = f.Run(ctx); close(done) }()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				fr := &src[i%len(src)]
				fr.Time, fr.Sequence = t0.Add(time.Duration(i)*time.Second/30), uint64(i)
				s(fr)
				if err := f.Offer(fr); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.StopTimer()
			cancel()
			<-done
			st := f.Stats()
			b.ReportMetric(float64(st.Encoded)/float64(i), "encoded/frame")
			b.ReportMetric(float64(st.Dropped)/float64(i), "dropped/frame")
		})
	}
}

// BenchmarkDetectorRate measures whether the detector keeps its frame rate
// with clips on, on one core (GOMAXPROCS 1, as on a Pi Zero), at the agent's
// defaults: a camera paced in real time at 10 fps delivers 640x480 YUYV
// frames, and the frame loop runs the detector's step and then (clips on)
// Offer, with the encoder goroutine at rate 10 and the default EncodeShare
// (0.5); slow-encoder encodes each frame eight times, so that it wants more
// than the whole core as a Pi Zero's would, with the default share and
// with share 1 (no rest). An op is one frame. late-ms is how far behind its
// due time the loop took up a frame, at worst; lost/frame is the share of
// frames taken up more than two intervals late, which a V4L2 driver with
// three buffers would have dropped. The figures are wall-clock: on a
// machine shared with other work they include its scheduling. Run it for
// several seconds: -benchtime=100x.
func BenchmarkDetectorRate(b *testing.B) {
	const w, h, fps = 640, 480, 10
	src := syntheticFrames(b, w, h, 16)
	for _, mode := range []struct {
		name  string
		clips bool
		slow  bool
		share float64
	}{
		{"clips-off", false, false, 0.5},
		{"clips-on", true, false, 0.5},
		{"slow-encoder", true, true, 0.5},
		{"slow-encoder-no-rest", true, true, 1},
	} {
		b.Run(mode.name, func(b *testing.B) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			d, err := motion.NewDetector(motion.DefaultConfig())
			if err != nil {
				b.Fatal(err)
			}
			cfg := DefaultConfig()
			cfg.Rate, cfg.EncodeShare = fps, mode.share
			_, f := newTestFeeder(b, cfg)
			if mode.slow {
				e := newEncoder(cfg.Quality)
				f.encode = func(r *raw) (jpg []byte, err error) {
					for range 8 {
						jpg, err = e.encode(r)
					}
					return jpg, err
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = f.Run(ctx); close(done) }()
			interval := time.Second / fps
			var late time.Duration
			lost, i := 0, 0
			start := time.Now()
			for b.Loop() {
				due := start.Add(time.Duration(i) * interval)
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				lag := time.Since(due)
				late = max(late, lag)
				if lag > 2*interval {
					lost++
				}
				fr := &src[i%len(src)]
				fr.Time, fr.Sequence = t0.Add(time.Duration(i)*interval), uint64(i)
				pix, stride, st := fr.LumaPlane()
				d.StepPlane(pix, w, h, stride, st)
				if mode.clips {
					if err := f.Offer(fr); err != nil {
						b.Fatal(err)
					}
				}
				i++
			}
			elapsed := time.Since(start)
			cancel()
			<-done
			st := f.Stats()
			b.ReportMetric(float64(late)/1e6, "late-ms")
			b.ReportMetric(float64(lost)/float64(i), "lost/frame")
			b.ReportMetric(float64(st.Encoded)/elapsed.Seconds(), "encoded/s")
			b.ReportMetric(float64(st.Dropped)/float64(i), "dropped/frame")
		})
	}
}
