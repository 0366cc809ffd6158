// Command m2mprobe captures frames from a V4L2 camera with keyframe's
// capture package and encodes them with its memory-to-memory encoder
// (capture/m2m), then reports what came out:
//
//	m2mprobe -in /dev/video0 -frames 60 [-encoder auto|/dev/videoX] [-format YU12|NV12|YUYV] [-width 640 -height 480]
//
// keyframe's board test runs it in the emulated arm64 board, with vivid as
// the camera and vicodec as the encoder. It captures the frames first (so
// the figures are the encoder's alone, not the camera's frame rate), then
// encodes them all, asking for a key frame midway, drains the encoder and
// prints:
//
//	M2M: encoder=/dev/video3 driver=vicodec api=single in=YU12 out=FWHT 640x480
//	M2M: frames_in=60 frames_out=60 keyframes=6 bytes=123456 fps=211.5 cpu_user_ms=40 cpu_sys_ms=250
//	M2M: drain ok
//	M2M: PASS
//
// or "M2M: FAIL <reason>" and exit status 1. fps is frames encoded per wall
// second of the encode loop (first frame queued to drain complete), the cpu
// figures are the process's (getrusage) over the same loop. -encoder auto
// takes the first memory-to-memory encoder node offering H.264, else FWHT.
// Linux only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/capture/m2m"
)

func main() { os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)) }

// maxHeld bounds the memory the captured frames may take.
const maxHeld = 256 << 20

// probe is one run's settings.
type probe struct {
	in, encoder, devDir string
	frames              int
	format              capture.PixelFormat
	width, height       int
	gop                 int
	timeout             time.Duration
	log                 *slog.Logger
	stdout              io.Writer
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("m2mprobe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	p := probe{stdout: stdout}
	fs.StringVar(&p.in, "in", "/dev/video0", "the camera's capture node")
	fs.IntVar(&p.frames, "frames", 60, "frames to capture and encode")
	fs.StringVar(&p.encoder, "encoder", "auto", "the encoder's node, or auto: the first M2M encoder offering H264, else FWHT")
	format := fs.String("format", "YU12", "raw pixel format: YU12, NV12 or YUYV")
	fs.IntVar(&p.width, "width", 640, "frame width")
	fs.IntVar(&p.height, "height", 480, "frame height")
	fs.IntVar(&p.gop, "gop", 10, "key frame distance asked of the encoder (0: the driver's)")
	fs.StringVar(&p.devDir, "dev-dir", "/dev", "where -encoder auto looks for videoN nodes")
	fs.DurationVar(&p.timeout, "timeout", 60*time.Second, "the longest the whole run may take")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: m2mprobe -in /dev/video0 -frames N [-encoder auto|/dev/videoX] [-format YU12|NV12|YUYV] [-width 640 -height 480]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || p.frames < 2 || p.width < 1 || p.height < 1 || p.timeout <= 0 {
		fmt.Fprintln(stderr, "m2mprobe: -frames must be at least 2, -width, -height and -timeout positive, and no arguments")
		fs.Usage()
		return 2
	}
	var err error
	if p.format, err = capture.ParsePixelFormat(*format); err != nil || (p.format != capture.FormatYU12 && p.format != capture.FormatNV12 && p.format != capture.FormatYUYV) {
		fmt.Fprintf(stderr, "m2mprobe: -format %q: want YU12, NV12 or YUYV\n", *format)
		return 2
	}
	p.log = slog.New(slog.NewTextHandler(stderr, nil))
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if err := p.run(ctx); err != nil {
		fmt.Fprintf(stdout, "M2M: FAIL %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "M2M: PASS")
	return 0
}

func (p *probe) run(ctx context.Context) error {
	frames, err := p.capture(ctx)
	if err != nil {
		return err
	}
	w, h := frames[0].Width, frames[0].Height
	dev, codec, err := p.pickEncoder()
	if err != nil {
		return err
	}
	enc, err := m2m.Open(m2m.Config{Device: dev, Width: w, Height: h, Input: p.format, Codec: codec, GOP: p.gop, Logger: p.log})
	if err != nil {
		return err
	}
	defer func() {
		if err := enc.Close(); err != nil {
			p.log.Warn("m2mprobe: close encoder", "err", err)
		}
	}()
	info := enc.Info()
	fmt.Fprintf(p.stdout, "M2M: encoder=%s driver=%s api=%s in=%v out=%v %dx%d\n", info.Path, info.Driver, info.API(), info.Input, info.Codec, w, h)
	return p.encode(ctx, enc, frames)
}

// capture opens the camera and copies p.frames frames out of it.
func (p *probe) capture(ctx context.Context) ([]capture.Frame, error) {
	src, err := capture.OpenV4L2(capture.V4L2Config{Device: p.in, Width: p.width, Height: p.height, Format: p.format, Logger: p.log}, nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := src.Close(); err != nil {
			p.log.Warn("m2mprobe: close camera", "err", err)
		}
	}()
	g := src.Geometry()
	if g.Format != p.format {
		return nil, fmt.Errorf("camera %s: asked for %v, it set %v", p.in, p.format, g.Format)
	}
	if g.SizeImage > 0 && int64(g.SizeImage)*int64(p.frames) > maxHeld {
		return nil, fmt.Errorf("-frames %d of %d bytes would hold more than %d MiB; ask for fewer", p.frames, g.SizeImage, maxHeld>>20)
	}
	frames := make([]capture.Frame, p.frames)
	var fr capture.Frame
	for i := range frames {
		if err := src.Next(ctx, &fr); err != nil {
			return nil, fmt.Errorf("capture frame %d of %d: %w", i+1, p.frames, err)
		}
		fr.CopyTo(&frames[i])
	}
	return frames, nil
}

// pickEncoder finds the encoder node and the codec it offers (H.264
// preferred, else FWHT).
func (p *probe) pickEncoder() (string, capture.PixelFormat, error) {
	dir := p.devDir
	if p.encoder != "auto" {
		dir = filepath.Dir(p.encoder)
	}
	nodes, err := m2m.Probe(dir)
	if err != nil {
		return "", 0, err
	}
	if p.encoder != "auto" {
		var only []m2m.Node
		for _, n := range nodes {
			if n.Path == p.encoder {
				only = append(only, n)
			}
		}
		if len(only) == 0 {
			return "", 0, fmt.Errorf("-encoder %s: not a memory-to-memory node", p.encoder)
		}
		if only[0].Err != nil {
			return "", 0, only[0].Err
		}
		nodes = only
	}
	for _, codec := range []capture.PixelFormat{capture.FormatH264, m2m.FormatFWHT} {
		for _, n := range nodes {
			if n.Offers(codec, p.format) {
				return n.Path, codec, nil
			}
		}
	}
	for _, n := range nodes {
		p.log.Info("m2mprobe: memory-to-memory node", "path", n.Path, "driver", n.Driver, "coded", fmt.Sprint(n.Coded), "raw", fmt.Sprint(n.Raw), "err", n.Err)
	}
	return "", 0, fmt.Errorf("%w under %s for %v (H264 or FWHT); %d memory-to-memory nodes", m2m.ErrNoEncoder, dir, p.format, len(nodes))
}

// result is what the receiving goroutine saw.
type result struct {
	packets, keys, bytes int
	midKey               bool // the frame asked to be a key frame was one
	drained              bool
	err                  error
}

// encode queues every frame (a key frame asked for midway), drains, and
// checks and prints what came out.
func (p *probe) encode(ctx context.Context, enc *m2m.Encoder, frames []capture.Frame) error {
	mid := len(frames) / 2
	done := make(chan result, 1)
	go func() { done <- receive(ctx, enc, frames, mid) }()

	var ru0, ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0) // cannot fail with valid arguments
	start := time.Now()
	var encErr error
	for i := range frames {
		if encErr = enc.Encode(ctx, &frames[i], i == mid); encErr != nil {
			encErr = fmt.Errorf("encode frame %d: %w", i, encErr)
			break
		}
	}
	if encErr == nil {
		if encErr = enc.Drain(); encErr != nil {
			encErr = fmt.Errorf("drain: %w", encErr)
		}
	}
	if encErr != nil {
		_ = enc.Close() // ends the receiver
	}
	r := <-done
	elapsed := time.Since(start)
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	if encErr != nil {
		return encErr
	}
	fps := float64(r.packets) / elapsed.Seconds()
	user := (ru1.Utime.Nano() - ru0.Utime.Nano()) / 1e6
	sys := (ru1.Stime.Nano() - ru0.Stime.Nano()) / 1e6
	fmt.Fprintf(p.stdout, "M2M: frames_in=%d frames_out=%d keyframes=%d bytes=%d fps=%.1f cpu_user_ms=%d cpu_sys_ms=%d\n",
		len(frames), r.packets, r.keys, r.bytes, fps, user, sys)
	if r.err != nil {
		return r.err
	}
	if r.drained {
		fmt.Fprintln(p.stdout, "M2M: drain ok")
	}
	s, info := enc.Stats(), enc.Info()
	switch {
	case r.packets != len(frames):
		return fmt.Errorf("%d frames in, %d packets out", len(frames), r.packets)
	case r.keys == 0:
		return errors.New("no key frame")
	case s.Errors > 0:
		return fmt.Errorf("the driver flagged %d buffers as errors", s.Errors)
	case info.ForceKey && !r.midKey:
		return fmt.Errorf("frame %d was asked to be a key frame and is not", mid)
	}
	if !info.ForceKey {
		p.log.Info("m2mprobe: the driver takes no key-frame requests; key frames come from its GOP", "driver", info.Driver, "ignored", s.KeyIgnored)
	}
	return nil
}

// receive takes the packets until the drain completes, checking that each
// maps back to its frame, in order, and that the first is a key frame.
func receive(ctx context.Context, enc *m2m.Encoder, frames []capture.Frame, mid int) result {
	var r result
	buf := make([]byte, 0, 1<<20)
	for {
		pk, err := enc.Receive(ctx, buf)
		if errors.Is(err, m2m.ErrEndOfStream) {
			r.drained = true
			return r
		}
		if err != nil {
			r.err = fmt.Errorf("receive packet %d: %w", r.packets, err)
			return r
		}
		buf = pk.Data[:0]
		i := r.packets
		switch {
		case i >= len(frames):
			r.err = fmt.Errorf("packet %d for %d frames", i, len(frames))
			return r
		case !pk.Mapped || pk.Sequence != frames[i].Sequence || !pk.Time.Equal(frames[i].Time):
			r.err = fmt.Errorf("packet %d: sequence %d time %v (mapped %v), want frame %d's %d %v", i, pk.Sequence, pk.Time, pk.Mapped, i, frames[i].Sequence, frames[i].Time)
			return r
		case i == 0 && !pk.Key:
			r.err = errors.New("the first packet is no key frame")
			return r
		}
		if i == mid && pk.Key {
			r.midKey = true
		}
		r.packets++
		r.bytes += len(pk.Data)
		if pk.Key {
			r.keys++
		}
	}
}
