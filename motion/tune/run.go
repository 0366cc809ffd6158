package tune

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/motion"
)

// DefaultMax is the number of images Run writes when Options.Max is 0, and
// HardMax the most it accepts, so that a live camera cannot fill the disk.
const (
	DefaultMax = 500
	HardMax    = 100000
)

// Why Run stopped, in Report.Stopped.
const (
	StopEnd         = "end of stream" // the source had no more frames
	StopRange       = "end of range"  // frame Options.To was played
	StopMax         = "max images"    // Options.Max images were written
	StopInterrupted = "interrupted"   // the context ended
	StopError       = "source error"  // the source failed (Run returns the error)
)

// ErrOutputNotEmpty is returned (wrapped) when the output directory holds
// files and Options.Force is not set.
var ErrOutputNotEmpty = errors.New("tune: output directory is not empty")

// SheetName is the contact sheet's file name in the output directory.
const SheetName = "sheet.png"

// Options configure Run.
type Options struct {
	// Dir is an image-sequence directory, played in name order through
	// capture.OpenDir as fast as possible (frame times on its 10 fps
	// timeline). A directory with an input/ subdirectory (the data set's
	// layout) plays input/. Dir or Source must be set.
	Dir string
	// Source is played when Dir is empty. Run does not close it.
	Source capture.Source
	// Config is the detector's and lifecycle's configuration; start from
	// motion.DefaultConfig (or the agent's motion.* settings).
	Config motion.Config
	// Out is the output directory, created if missing. Images are named by
	// frame number, NNNNNN.png.
	Out string
	// Force writes into an Out that already holds files, replacing those of
	// the same names (others are left alone). Without it such an Out is
	// refused with ErrOutputNotEmpty.
	Force bool
	// Every writes every Every-th frame (counted from From); 0 or 1 writes
	// every frame. With MotionOnly it counts motion frames instead.
	Every int
	// MotionOnly writes only the frames with motion (every Every-th of
	// them) and, always, the frames where something changed: the status
	// (WARMING, GLOBAL, MOTION, still, BAD FRAME) differs from the previous
	// frame's, or an event starts or ends.
	MotionOnly bool
	// From and To are the first and last frame numbers (from 0, inclusive)
	// that may be written; To 0 means no end. Frames before From are still
	// played (they seed the background); playing stops after To.
	From, To int
	// Max is the most images written, 1..HardMax; 0 means DefaultMax.
	// Playing stops when it is reached.
	Max int
	// Sheet also writes SheetName: a grid of downsized overlays of up to 48
	// of the written frames, spread evenly over the run.
	Sheet bool
	// Logger receives the files Dir skips; nil means slog.Default().
	Logger *slog.Logger
}

// Report says what Run did.
type Report struct {
	Out     string // the output directory
	Played  int    // frames played through the detector
	Written int    // images written
	Motion  int    // played frames with motion
	Events  int    // events started
	// BadFrames counts frames the detector rejected or Render could not
	// draw (a frame without a usable luma plane is not written).
	BadFrames int
	// SkippedFiles counts the files of Dir that could not be decoded or had
	// another size (each is logged).
	SkippedFiles int
	// Sheet is the contact sheet's path, empty without one.
	Sheet string
	// Stopped says why playing stopped: StopEnd, StopRange, StopMax,
	// StopInterrupted or StopError.
	Stopped string
}

// Run plays the source through a motion.Detector and a motion.Lifecycle
// made from opts.Config and writes the selected frames, drawn by Render, as
// PNGs into opts.Out. A context that ends is a normal stop (StopInterrupted):
// the report and the sheet are still made. A missing Dir is an error wrapping
// fs.ErrNotExist; a source error other than the end of the stream stops the
// run and is returned with the report so far.
func Run(ctx context.Context, opts Options) (Report, error) {
	rep := Report{Out: opts.Out}
	every, maxImages, err := opts.check()
	if err != nil {
		return rep, err
	}
	det, err := motion.NewDetector(opts.Config)
	if err != nil {
		return rep, fmt.Errorf("tune: %w", err)
	}
	life := motion.NewLifecycle(opts.Config)

	src := opts.Source
	var dir *capture.Dir
	var files []string
	if opts.Dir != "" {
		in, err := inputDir(opts.Dir)
		if err != nil {
			return rep, err
		}
		dir, err = capture.OpenDir(capture.DirConfig{Dir: in, Logger: opts.logger()}, nil)
		if err != nil {
			return rep, fmt.Errorf("tune: %w", err)
		}
		defer dir.Close()
		src, files = dir, dir.Files()
	}
	if err := prepareOut(opts.Out, opts.Force); err != nil {
		return rep, err
	}

	var (
		f          capture.Frame
		v          motion.View
		canvas     *image.RGBA
		sh         sheet
		prevStatus string
		open       bool // an event is open
		motionSeen int  // motion frames from From on, for Every
		runErr     error
	)
	for i := 0; ; i++ {
		if opts.To > 0 && i > opts.To {
			rep.Stopped = StopRange
			break
		}
		err := src.Next(ctx, &f)
		if dir != nil {
			rep.SkippedFiles = int(dir.Stats().Skipped)
		}
		if errors.Is(err, capture.ErrEndOfStream) {
			rep.Stopped = StopEnd
			break
		}
		if err != nil && ctx.Err() != nil {
			rep.Stopped = StopInterrupted
			break
		}
		if err != nil {
			rep.Stopped = StopError
			runErr = fmt.Errorf("tune: frame %d: %w", i, err)
			break
		}
		rep.Played++
		pix, stride, step := f.LumaPlane()
		res := det.StepPlane(pix, f.Width, f.Height, stride, step)
		dec := life.Observe(f.Time, res)
		status := Status(res)
		if res.Motion {
			rep.Motion++
		}
		if res.Err != nil {
			rep.BadFrames++
		}
		var event string
		switch {
		case dec.End && open:
			event = fmt.Sprintf("EVENT %d END (%s)", rep.Events, dec.Summary.Reason)
			open = false
		case dec.Start:
			rep.Events++
			open = true
			event = fmt.Sprintf("EVENT %d START", rep.Events)
		case open:
			event = fmt.Sprintf("in event %d", rep.Events)
		}
		changed := status != prevStatus || dec.Start || dec.End
		prevStatus = status
		if i < opts.From {
			continue
		}
		var write bool
		if opts.MotionOnly {
			if res.Motion {
				write = motionSeen%every == 0
				motionSeen++
			}
			write = write || changed
		} else {
			write = (i-opts.From)%every == 0
		}
		if !write {
			continue
		}

		if b := Bounds(f.Width, f.Height); canvas == nil || canvas.Bounds() != b {
			if f.Width <= 0 || f.Height <= 0 || f.Width > maxSide || f.Height > maxSide {
				if res.Err == nil { // else counted above
					rep.BadFrames++
				}
				opts.logger().Warn("tune: frame not drawn", "frame", i, "width", f.Width, "height", f.Height)
				continue
			}
			canvas = image.NewRGBA(b)
		}
		det.View(&v)
		info := Info{Frame: i, Event: event}
		if dir != nil {
			// Dir plays files in order and skips the ones it cannot use:
			// this frame is the file after the delivered and skipped ones.
			if k := int(dir.Stats().Frames) - 1 + rep.SkippedFiles; k >= 0 && k < len(files) {
				info.File = files[k]
			}
		}
		if err := Render(canvas, &f, &v, info); err != nil {
			if res.Err == nil {
				rep.BadFrames++
			}
			opts.logger().Warn("tune: frame not drawn", "frame", i, "err", err)
			continue
		}
		if err := writePNG(filepath.Join(opts.Out, fmt.Sprintf("%06d.png", i)), canvas); err != nil {
			return rep, err
		}
		rep.Written++
		if opts.Sheet {
			sh.add(canvas, ImageArea(f.Width, f.Height), "#"+pad6(i)+" "+status)
		}
		if rep.Written >= maxImages {
			rep.Stopped = StopMax
			break
		}
	}
	if opts.Sheet && len(sh.cells) > 0 {
		path := filepath.Join(opts.Out, SheetName)
		if err := writePNG(path, sh.render()); err != nil {
			return rep, errors.Join(runErr, err)
		}
		rep.Sheet = path
	}
	return rep, runErr
}

// check validates the options and returns the effective Every and Max.
func (o Options) check() (every, maxImages int, err error) {
	switch {
	case o.Dir == "" && o.Source == nil:
		return 0, 0, errors.New("tune: no input: set Dir or Source")
	case o.Dir != "" && o.Source != nil:
		return 0, 0, errors.New("tune: both Dir and Source are set")
	case o.Out == "":
		return 0, 0, errors.New("tune: no output directory")
	case o.Every < 0:
		return 0, 0, fmt.Errorf("tune: Every %d: want 0 or more", o.Every)
	case o.From < 0 || o.To < 0:
		return 0, 0, fmt.Errorf("tune: frame range %d..%d: want frame numbers from 0", o.From, o.To)
	case o.To > 0 && o.To < o.From:
		return 0, 0, fmt.Errorf("tune: frame range %d..%d ends before it starts", o.From, o.To)
	case o.Max < 0 || o.Max > HardMax:
		return 0, 0, fmt.Errorf("tune: Max %d out of range [1, %d] (0 means %d)", o.Max, HardMax, DefaultMax)
	}
	every, maxImages = max(1, o.Every), o.Max
	if maxImages == 0 {
		maxImages = DefaultMax
	}
	return every, maxImages, nil
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.Default()
	}
	return o.Logger
}

// inputDir returns the directory of frames dir stands for: dir/input when it
// exists (the data set's layout), else dir.
func inputDir(dir string) (string, error) {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("tune: input directory %s does not exist: %w", dir, err)
	}
	if err != nil {
		return "", fmt.Errorf("tune: input directory: %w", err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("tune: input %s is not a directory", dir)
	}
	in := filepath.Join(dir, "input")
	if st, err := os.Stat(in); err == nil && st.IsDir() {
		return in, nil
	}
	return dir, nil
}

// prepareOut creates dir, or checks that it is empty unless force.
func prepareOut(dir string, force bool) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("tune: output directory: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("tune: output directory: %w", err)
	case len(entries) > 0 && !force:
		return fmt.Errorf("%w: %s holds %d entries (choose another directory, or force writing into it)", ErrOutputNotEmpty, dir, len(entries))
	}
	return nil
}

// writePNG writes img to path (fast compression: these are debug images).
func writePNG(path string, img image.Image) error {
	fh, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("tune: %w", err)
	}
	bw := bufio.NewWriter(fh)
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	err = enc.Encode(bw, img)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("tune: write %s: %w", path, err)
	}
	return nil
}
