package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/internal/cli"
	"github.com/keyframe-cam/keyframe/motion/tune"
)

const tuneUsage = `usage: keyframe tune [-config FILE] [-out DIR] [-every N] [-motion-only] [-from N] [-to N]
                     [-max N] [-sheet] [-force] (DIR | -device /dev/video0)

Plays an image sequence (DIR, or DIR/input/ when it has one) or a live camera
through the motion detector and writes, per frame, an image of what the
detector saw: the frame in grey, motion red, blobs below min_area orange,
despeckled noise yellow, flicker-suppressed pixels blue, the mask dimmed and
hatched, motion boxes green, and a text line (frame, status, area, threshold,
event). Images are named by frame number, NNNNNN.png. See docs/tune.md.

A camera run stops after -max images or frame -to (default 3000 frames
read), or at Ctrl-C.

`

// tuneLiveFrames is the default last frame of a camera run (-to), so that a
// -motion-only run on a quiet scene also ends by itself.
const tuneLiveFrames = 3000

// cmdTune writes the detector's view of a sequence or a camera as images.
// It exits 0 on success (also when interrupted), 1 when the run fails (a
// missing directory, a camera that cannot be opened, an output directory
// that is not empty), and 2 on a usage or configuration error.
func cmdTune(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyframe tune", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file whose motion.* settings (and capture.* for -device) are used (see keyframe config); KEYFRAME_* variables override it")
	out := fs.String("out", "keyframe-tune", "output directory (created; refused when not empty unless -force)")
	every := fs.Int("every", 1, "write every Nth frame (with -motion-only: every Nth motion frame)")
	motionOnly := fs.Bool("motion-only", false, "write only frames with motion and frames where the status changes or an event starts or ends")
	from := fs.Int("from", 0, "first frame number written (earlier frames are still played: they seed the background)")
	to := fs.Int("to", 0, "last frame number played; 0 means the end of the sequence (a camera: "+fmt.Sprint(tuneLiveFrames-1)+" after -from)")
	maxImages := fs.Int("max", tune.DefaultMax, fmt.Sprintf("most images written, 1..%d", tune.HardMax))
	sheet := fs.Bool("sheet", false, "also write "+tune.SheetName+": a grid of up to 48 downsized images spread over the run")
	force := fs.Bool("force", false, "write into a non-empty output directory (files of the same names are replaced)")
	device := fs.String("device", "", "V4L2 camera to read instead of a directory, e.g. /dev/video0")
	if code, ok := cli.Parse(fs, args, tuneUsage, stdout, stderr); !ok {
		return code
	}
	switch {
	case fs.NArg() == 0 && *device == "":
		fmt.Fprint(stderr, "keyframe tune: give a directory or -device\n\n"+tuneUsage)
		return 2
	case fs.NArg() > 0 && *device != "":
		fmt.Fprintf(stderr, "keyframe tune: give a directory or -device, not both (got %q)\n", fs.Args())
		return 2
	case fs.NArg() > 1:
		fmt.Fprintf(stderr, "keyframe tune: one directory at a time (got %q)\n", fs.Args())
		return 2
	case *every < 1:
		fmt.Fprintf(stderr, "keyframe tune: -every %d: want 1 or more\n", *every)
		return 2
	case *from < 0 || *to < 0 || (*to > 0 && *to < *from):
		fmt.Fprintf(stderr, "keyframe tune: -from %d -to %d: want 0 <= from <= to (to 0: no end)\n", *from, *to)
		return 2
	case *maxImages < 1 || *maxImages > tune.HardMax:
		fmt.Fprintf(stderr, "keyframe tune: -max %d: want 1..%d\n", *maxImages, tune.HardMax)
		return 2
	}
	c, ok := cli.LoadConfig("keyframe", *cfgPath, stderr)
	if !ok {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := tune.Options{
		Config: c.Motion, Out: *out, Force: *force, Every: *every, MotionOnly: *motionOnly,
		From: *from, To: *to, Max: *maxImages, Sheet: *sheet, Logger: log,
	}
	if *device == "" {
		opts.Dir = fs.Arg(0)
	} else {
		format, err := capture.ParsePixelFormat(c.Format)
		if err != nil {
			fmt.Fprintf(stderr, "keyframe tune: capture.format: %v\n", err)
			return 2
		}
		controls, err := capture.ParseControls(c.Controls)
		if err != nil {
			fmt.Fprintf(stderr, "keyframe tune: capture.controls: %v\n", err)
			return 2
		}
		cam, err := capture.OpenV4L2(capture.V4L2Config{Device: *device, Width: c.Width, Height: c.Height, FPS: c.FPS,
			Buffers: c.Buffers, Stall: c.Stall, Format: format, Controls: controls, Logger: log}, nil)
		if err != nil {
			fmt.Fprintf(stderr, "keyframe tune: %v\n", err)
			return 1
		}
		defer cam.Close()
		g := cam.Geometry()
		fmt.Fprintf(stdout, "%s: %s %dx%d at %g fps\n", *device, g.Format, g.Width, g.Height, g.FPS)
		opts.Source = cam
		if opts.To == 0 {
			opts.To = opts.From + tuneLiveFrames - 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := tune.Run(ctx, opts)
	if rep.Written > 0 || err == nil {
		fmt.Fprintf(stdout, "wrote %d images to %s (%d frames played, %d with motion, %d events", rep.Written, rep.Out, rep.Played, rep.Motion, rep.Events)
		if rep.BadFrames > 0 || rep.SkippedFiles > 0 {
			fmt.Fprintf(stdout, ", %d bad frames, %d files skipped", rep.BadFrames, rep.SkippedFiles)
		}
		fmt.Fprintf(stdout, "; stopped: %s)\n", rep.Stopped)
		if rep.Sheet != "" {
			fmt.Fprintf(stdout, "contact sheet: %s\n", rep.Sheet)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "keyframe: %v\n", err)
		if errors.Is(err, tune.ErrOutputNotEmpty) {
			fmt.Fprintln(stderr, "keyframe tune: pass -force to write into it anyway, or choose another -out")
		}
		return 1
	}
	return 0
}
