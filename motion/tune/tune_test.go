package tune_test

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyframe-cam/keyframe/capture"
	"github.com/keyframe-cam/keyframe/capture/capturetest"
	"github.com/keyframe-cam/keyframe/motion"
	"github.com/keyframe-cam/keyframe/motion/tune"
)

// The generated sequence: 96x64 grey PNG frames (the data set's smallest
// size) of a still textured scene; a bright square crosses it left to right
// in the middle rows from frame objFirst on.
const (
	seqW, seqH = 96, 64
	seqFrames  = 30
	objFirst   = 12
	objSide    = 12
)

// objectRect is where the square is in frame i, in input pixels (empty
// before objFirst). It moves 4 px a frame.
func objectRect(i int) image.Rectangle {
	if i < objFirst {
		return image.Rectangle{}
	}
	x := 2 + 4*(i-objFirst)
	return image.Rect(x, 26, x+objSide, 26+objSide)
}

// background is the still scene: a fixed random texture in 60..179.
func background() []byte {
	rng := rand.New(rand.NewPCG(3, 5))
	bg := make([]byte, seqW*seqH)
	for i := range bg {
		bg[i] = byte(60 + rng.IntN(120))
	}
	return bg
}

// frameLuma is frame i's luma plane.
func frameLuma(i int) []byte {
	l := background()
	r := objectRect(i)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X && x < seqW; x++ {
			l[y*seqW+x] = 250
		}
	}
	return l
}

// writeSequence writes the sequence's frames as PNGs into dir (created).
func writeSequence(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range seqFrames {
		img := &image.Gray{Pix: frameLuma(i), Stride: seqW, Rect: image.Rect(0, 0, seqW, seqH)}
		fh, err := os.Create(filepath.Join(dir, fmt.Sprintf("in%04d.png", i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(fh, img); err != nil {
			t.Fatal(err)
		}
		if err := fh.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// sequenceDir writes the sequence once per test and returns its directory.
func sequenceDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "seq")
	writeSequence(t, dir)
	return dir
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// pngFrames lists the NNNNNN.png files in dir as frame numbers.
func pngFrames(t *testing.T, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		var n int
		if _, err := fmt.Sscanf(e.Name(), "%06d.png", &n); err == nil && e.Name() == fmt.Sprintf("%06d.png", n) {
			out = append(out, n)
		}
	}
	return out
}

func readPNG(t *testing.T, path string) image.Image {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	img, err := png.Decode(fh)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Colour classes, loose enough not to depend on the exact blend.
func rgb(c color.Color) (r, g, b int) {
	R, G, B, _ := c.RGBA()
	return int(R >> 8), int(G >> 8), int(B >> 8)
}
func isGrey(c color.Color) bool   { r, g, b := rgb(c); return r == g && g == b }
func isRed(c color.Color) bool    { r, g, b := rgb(c); return r > g+80 && r > b+80 && g-b < 30 }
func isOrange(c color.Color) bool { r, g, b := rgb(c); return r > g+30 && g > b+40 }
func isYellow(c color.Color) bool { r, g, b := rgb(c); return r > b+80 && g > b+80 && abs(r-g) < 40 }
func isBlue(c color.Color) bool   { r, g, b := rgb(c); return b > r+60 && b > g+40 }
func isGreen(c color.Color) bool  { r, g, b := rgb(c); return g > r+100 && g > b+100 }
func isViolet(c color.Color) bool { r, g, b := rgb(c); return r > g+40 && b > g+80 && b >= r }

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// inputPixel returns the rendered colour of input pixel (x, y): the centre
// of its upscaled block.
func inputPixel(img image.Image, x, y int) color.Color {
	s := tune.Scale(seqW)
	return img.At(x*s+s/2, y*s+s/2)
}

// TestRenderStates draws a hand-made View: each state's columns get its
// colour, still ones stay grey, masked ones are dimmed and hatched, and the
// blob box is outlined in green.
func TestRenderStates(t *testing.T) {
	const w, h, vs = 42, 16, 2 // analysed 21x8 at 1/2
	f := capturetest.GreyFrame(w, h, 100, 0, time.Time{})
	v := &motion.View{Width: w / vs, Height: h / vs, Scale: vs, State: make([]uint8, (w/vs)*(h/vs)),
		Threshold: 12, Result: motion.Result{Motion: true, AreaPPM: 1234}}
	states := []uint8{motion.StateStill, motion.StateMasked, motion.StateFlicker, motion.StateShadow, motion.StateNoise, motion.StateSmall, motion.StateMotion}
	stateAt := func(x int) uint8 { return states[x/vs/3] } // 3 analysed columns per state
	for y := range v.Height {
		for x := range v.Width {
			v.State[y*v.Width+x] = stateAt(x * vs)
		}
	}
	box := image.Rect(36, 2, 42, 14) // input pixels
	v.Blobs = []image.Rectangle{box}
	dst := image.NewRGBA(tune.Bounds(w, h))
	if err := tune.Render(dst, &f, v, tune.Info{Frame: 7, Event: "EVENT 1 START"}); err != nil {
		t.Fatal(err)
	}
	s := tune.Scale(w)
	if s < 2 || dst.Bounds().Dx() != w*s || dst.Bounds().Dy() <= h*s {
		t.Fatalf("scale %d, bounds %v for a %dx%d frame", s, dst.Bounds(), w, h)
	}
	check := map[uint8]func(color.Color) bool{
		motion.StateStill: func(c color.Color) bool { r, _, _ := rgb(c); return isGrey(c) && r == 100 },
		// dimmed below the frame's 100, or a hatch line; grey either way
		motion.StateMasked:  isGrey,
		motion.StateFlicker: isBlue, motion.StateShadow: isViolet, motion.StateNoise: isYellow,
		motion.StateSmall: isOrange, motion.StateMotion: isRed,
	}
	var dim, hatch int
	for y := range h {
		for x := range w {
			if image.Pt(x, y).In(box) {
				continue // the box outline is drawn inside it
			}
			for dy := range s {
				for dx := range s {
					c := dst.At(x*s+dx, y*s+dy)
					st := stateAt(x)
					if !check[st](c) {
						t.Fatalf("input pixel (%d,%d) in state %d drawn %v", x, y, st, c)
					}
					if st == motion.StateMasked {
						if r, _, _ := rgb(c); r < 100 {
							dim++
						} else {
							hatch++
						}
					}
				}
			}
		}
	}
	if dim == 0 || hatch == 0 || hatch > dim {
		t.Errorf("masked area: %d dimmed and %d hatch pixels, want mostly dimmed with some hatching", dim, hatch)
	}
	// The box outline: its top-left corner and the middle of its left side
	// are green, its inside is not.
	for _, p := range []image.Point{box.Min.Mul(s), {box.Min.X * s, (box.Min.Y + box.Max.Y) / 2 * s}, {box.Max.X*s - 1, box.Max.Y*s - 1}} {
		if c := dst.At(p.X, p.Y); !isGreen(c) {
			t.Errorf("box outline at %v is %v, want green", p, c)
		}
	}
	if c := dst.At((box.Min.X+box.Max.X)/2*s, (box.Min.Y+box.Max.Y)/2*s); isGreen(c) {
		t.Errorf("inside of the box is green")
	}
	// The text band has text in it.
	if n := bandPixels(dst, h*s, func(c color.Color) bool { r, _, _ := rgb(c); return r > 120 }); n == 0 {
		t.Error("text band is empty")
	}
}

// bandPixels counts the pixels of the band (rows from top) that match.
func bandPixels(img *image.RGBA, top int, match func(color.Color) bool) int {
	n := 0
	b := img.Bounds()
	for y := top; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if match(img.At(x, y)) {
				n++
			}
		}
	}
	return n
}

// TestRenderTextFollowsResult: the band's text changes with the result and
// the info (a WARMING frame and a MOTION frame are not drawn alike).
func TestRenderTextFollowsResult(t *testing.T) {
	f := capturetest.GreyFrame(seqW, seqH, 80, 0, time.Time{})
	v := &motion.View{Width: seqW, Height: seqH, Scale: 1, State: make([]uint8, seqW*seqH)}
	render := func(r motion.Result, info tune.Info) *image.RGBA {
		v.Result = r
		dst := image.NewRGBA(tune.Bounds(seqW, seqH))
		if err := tune.Render(dst, &f, v, info); err != nil {
			t.Fatal(err)
		}
		return dst
	}
	a := render(motion.Result{Warming: true}, tune.Info{Frame: 1})
	b := render(motion.Result{Motion: true, AreaPPM: 5000}, tune.Info{Frame: 1})
	c := render(motion.Result{Motion: true, AreaPPM: 5000}, tune.Info{Frame: 1, Event: "EVENT 1 START"})
	if slices.Equal(a.Pix, b.Pix) || slices.Equal(b.Pix, c.Pix) {
		t.Error("the text band does not follow the result and the event")
	}
	if !slices.Equal(a.Pix[:a.Stride*seqH*tune.Scale(seqW)], b.Pix[:b.Stride*seqH*tune.Scale(seqW)]) {
		t.Error("the image area changed with the text alone")
	}
}

func TestRenderWithoutAnalysis(t *testing.T) {
	f := capturetest.GreyFrame(seqW, seqH, 90, 0, time.Time{})
	// A View of a rejected frame: its states are not drawn.
	bad := &motion.View{Width: seqW, Height: seqH, Scale: 1, State: slices.Repeat([]uint8{motion.StateMotion}, seqW*seqH),
		Blobs: []image.Rectangle{image.Rect(10, 10, 50, 50)}, Result: motion.Result{Err: motion.ErrBadFrame}}
	for name, v := range map[string]*motion.View{"nil view": nil, "bad frame": bad} {
		dst := image.NewRGBA(tune.Bounds(seqW, seqH))
		if err := tune.Render(dst, &f, v, tune.Info{}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		area := tune.ImageArea(seqW, seqH)
		for y := range area.Dy() {
			for x := range area.Dx() {
				if c := dst.At(x, y); !isGrey(c) {
					t.Fatalf("%s: pixel (%d,%d) is %v, want the frame's grey", name, x, y, c)
				}
			}
		}
	}
}

func TestRenderErrors(t *testing.T) {
	good := capturetest.GreyFrame(seqW, seqH, 90, 0, time.Time{})
	short := good
	short.Luma, short.Data = short.Luma[:10], short.Data[:10]
	canvas := image.NewRGBA(tune.Bounds(seqW, seqH))
	fits := &motion.View{Width: seqW / 2, Height: seqH / 2, Scale: 2, State: make([]uint8, seqW*seqH/4)}
	tooBig := &motion.View{Width: seqW, Height: seqH, Scale: 2, State: make([]uint8, seqW*seqH)}
	fewStates := &motion.View{Width: seqW, Height: seqH, Scale: 1, State: make([]uint8, 10)}
	for _, c := range []struct {
		name   string
		dst    *image.RGBA
		f      capture.Frame
		v      *motion.View
		errHas string
	}{
		{"short luma", canvas, short, fits, "luma"},
		{"no size", canvas, capture.Frame{}, fits, "frame size"},
		{"wrong canvas", image.NewRGBA(image.Rect(0, 0, seqW, seqH)), good, fits, "canvas"},
		{"nil canvas", nil, good, fits, "canvas"},
		{"view too big", canvas, good, tooBig, "does not fit"},
		{"view short", canvas, good, fewStates, "does not fit"},
	} {
		err := tune.Render(c.dst, &c.f, c.v, tune.Info{})
		if err == nil || !strings.Contains(err.Error(), c.errHas) || !strings.HasPrefix(err.Error(), "tune: ") {
			t.Errorf("%s: err %v, want one about %q", c.name, err, c.errHas)
		}
	}
	if err := tune.Render(canvas, &good, fits, tune.Info{}); err != nil {
		t.Errorf("a fitting view: %v", err)
	}
}

// motionFrames runs the detector itself over the sequence: the frames with
// motion.
func motionFrames(t *testing.T, cfg motion.Config) []int {
	t.Helper()
	det, err := motion.NewDetector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for i := range seqFrames {
		if det.Step(frameLuma(i), seqW, seqH).Motion {
			out = append(out, i)
		}
	}
	return out
}

func run(t *testing.T, opts tune.Options) tune.Report {
	t.Helper()
	if opts.Config.AnalysisWidth == 0 {
		opts.Config = motion.DefaultConfig()
	}
	if opts.Logger == nil {
		opts.Logger = quiet()
	}
	rep, err := tune.Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

func seq(from, to, step int) []int {
	var out []int
	for i := from; i <= to; i += step {
		out = append(out, i)
	}
	return out
}

func TestRunWritesFrames(t *testing.T) {
	dir := sequenceDir(t)
	for _, c := range []struct {
		name    string
		opts    tune.Options
		want    []int
		stopped string
		played  int
	}{
		{"all", tune.Options{}, seq(0, seqFrames-1, 1), tune.StopEnd, seqFrames},
		{"every 4", tune.Options{Every: 4}, seq(0, seqFrames-1, 4), tune.StopEnd, seqFrames},
		{"range", tune.Options{From: 10, To: 19}, seq(10, 19, 1), tune.StopRange, 20},
		{"range every 3", tune.Options{From: 5, To: 17, Every: 3}, seq(5, 17, 3), tune.StopRange, 18},
		{"max", tune.Options{Max: 5}, seq(0, 4, 1), tune.StopMax, 5},
		{"max with range", tune.Options{From: 20, Max: 3}, seq(20, 22, 1), tune.StopMax, 23},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			opts.Dir, opts.Out = dir, filepath.Join(t.TempDir(), "out", "nested")
			rep := run(t, opts)
			got := pngFrames(t, opts.Out)
			if !slices.Equal(got, c.want) {
				t.Errorf("frames written %v, want %v", got, c.want)
			}
			if rep.Written != len(c.want) || rep.Played != c.played || rep.Stopped != c.stopped || rep.Out != opts.Out {
				t.Errorf("report %+v, want %d written, %d played, stopped %q", rep, len(c.want), c.played, c.stopped)
			}
		})
	}
}

// TestRunMotionColour: on a motion frame the square is drawn in the motion
// colour, where it is in that very frame, and the rows it never crosses
// stay grey.
func TestRunMotionColour(t *testing.T) {
	dir := sequenceDir(t)
	moving := motionFrames(t, motion.DefaultConfig())
	if len(moving) < 8 {
		t.Fatalf("the detector found motion in %v only: the test sequence is wrong", moving)
	}
	out := filepath.Join(t.TempDir(), "out")
	rep := run(t, tune.Options{Dir: dir, Out: out})
	if rep.Motion != len(moving) {
		t.Errorf("report says %d motion frames, the detector %d", rep.Motion, len(moving))
	}
	if rep.Events != 1 {
		t.Errorf("%d events, want 1", rep.Events)
	}
	for _, i := range moving {
		img := readPNG(t, filepath.Join(out, fmt.Sprintf("%06d.png", i)))
		r := objectRect(i).Intersect(image.Rect(0, 0, seqW, seqH))
		c := image.Pt((r.Min.X+r.Max.X)/2, (r.Min.Y+r.Max.Y)/2)
		if col := inputPixel(img, c.X, c.Y); !isRed(col) {
			t.Errorf("frame %d: the square's centre %v is drawn %v, want the motion colour", i, c, col)
		}
		for y := range 16 { // the top rows: still background, no box
			for x := range seqW {
				if col := inputPixel(img, x, y); !isGrey(col) {
					t.Fatalf("frame %d: still pixel (%d,%d) drawn %v", i, x, y, col)
				}
			}
		}
	}
	// Before the square, nothing is coloured.
	img := readPNG(t, filepath.Join(out, fmt.Sprintf("%06d.png", objFirst-1)))
	for y := range seqH {
		for x := range seqW {
			if col := inputPixel(img, x, y); !isGrey(col) {
				t.Fatalf("frame %d (still): pixel (%d,%d) drawn %v", objFirst-1, x, y, col)
			}
		}
	}
}

// TestRunMotionOnly writes the motion frames and the frames where the status
// changed, not the still frames in between.
func TestRunMotionOnly(t *testing.T) {
	dir := sequenceDir(t)
	moving := motionFrames(t, motion.DefaultConfig())
	out := filepath.Join(t.TempDir(), "out")
	rep := run(t, tune.Options{Dir: dir, Out: out, MotionOnly: true})
	got := pngFrames(t, out)
	for _, i := range moving {
		if !slices.Contains(got, i) {
			t.Errorf("motion frame %d not written (wrote %v)", i, got)
		}
	}
	// Frame 0 (first status, WARMING) and the first still frame after the
	// warm-up are changes; the still frames after it are not.
	if !slices.Contains(got, 0) {
		t.Errorf("frame 0 (warming starts) not written: %v", got)
	}
	firstStill := slices.IndexFunc(got, func(i int) bool { return i > 0 && i < objFirst })
	if firstStill < 0 {
		t.Fatalf("no change from warming to still written: %v", got)
	}
	for i := got[firstStill] + 1; i < objFirst; i++ {
		if slices.Contains(got, i) {
			t.Errorf("still frame %d written", i)
		}
	}
	if rep.Written != len(got) || len(got) >= seqFrames {
		t.Errorf("wrote %d of %d frames (report %d)", len(got), seqFrames, rep.Written)
	}

	// With Every 2, every other motion frame (and the changes: the first
	// motion frame, the event's start at the third).
	out2 := filepath.Join(t.TempDir(), "out")
	run(t, tune.Options{Dir: dir, Out: out2, MotionOnly: true, Every: 2})
	got2 := pngFrames(t, out2)
	if len(moving) < 5 || !slices.Equal(moving[:5], seq(moving[0], moving[0]+4, 1)) {
		t.Fatalf("the test wants 5 consecutive motion frames: %v", moving)
	}
	for k, want := range []bool{true, false, true, false, true} {
		if slices.Contains(got2, moving[k]) != want {
			t.Errorf("every 2: motion frame %d written %v, want %v (wrote %v)", moving[k], !want, want, got2)
		}
	}
	if len(got2) >= len(got) {
		t.Errorf("every 2 wrote %d frames, every frame %d", len(got2), len(got))
	}
}

// TestRunMask: with the left half masked, the masked area is drawn dimmed
// and grey on every frame, and the square raises no motion while it is
// inside it.
func TestRunMask(t *testing.T) {
	dir := sequenceDir(t)
	cfg := motion.DefaultConfig()
	cfg.Mask = []motion.Polygon{{{X: 0, Y: 0}, {X: 0.5, Y: 0}, {X: 0.5, Y: 1}, {X: 0, Y: 1}}}
	out := filepath.Join(t.TempDir(), "out")
	rep := run(t, tune.Options{Dir: dir, Out: out, Config: cfg})
	if rep.Written != seqFrames {
		t.Fatalf("wrote %d", rep.Written)
	}
	bg := background()
	for i := range seqFrames {
		img := readPNG(t, filepath.Join(out, fmt.Sprintf("%06d.png", i)))
		luma := frameLuma(i)
		// Every output pixel of the masked half is grey; on average much
		// darker than the frame (dimmed, with a lighter hatching).
		s := tune.Scale(seqW)
		var drawn, src int
		for y := range seqH * s {
			for x := range 40 * s { // well inside the masked half
				col := img.At(x, y)
				if !isGrey(col) {
					t.Fatalf("frame %d: masked output pixel (%d,%d) drawn %v", i, x, y, col)
				}
				r, _, _ := rgb(col)
				drawn += r
				src += int(luma[y/s*seqW+x/s])
			}
		}
		if drawn*10 > src*6 {
			t.Fatalf("frame %d: masked area not dimmed (mean %d, frame %d)", i, drawn, src)
		}
		// The unmasked half far from the square is drawn as is.
		if col := inputPixel(img, 90, 2); !isGrey(col) || func() bool { r, _, _ := rgb(col); return r != int(bg[2*seqW+90]) }() {
			t.Fatalf("frame %d: unmasked still pixel drawn %v, want grey %d", i, col, bg[2*seqW+90])
		}
	}
	if moving := motionFrames(t, cfg); len(moving) == 0 || objectRect(moving[0]).Max.X <= 40 {
		t.Errorf("masked: motion in %v, want none while the square is in the masked half", moving)
	}
}

func TestRunOutputNotEmpty(t *testing.T) {
	dir := sequenceDir(t)
	out := t.TempDir()
	keep := filepath.Join(out, "notes.txt")
	if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := tune.Run(context.Background(), tune.Options{Dir: dir, Out: out, Config: motion.DefaultConfig(), Logger: quiet()})
	if !errors.Is(err, tune.ErrOutputNotEmpty) || !strings.Contains(err.Error(), out) {
		t.Fatalf("non-empty output: %v", err)
	}
	if got := pngFrames(t, out); len(got) != 0 {
		t.Fatalf("wrote %v into a refused directory", got)
	}
	rep := run(t, tune.Options{Dir: dir, Out: out, Force: true, Max: 3})
	if rep.Written != 3 || len(pngFrames(t, out)) != 3 {
		t.Fatalf("forced: %+v", rep)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "mine" {
		t.Fatalf("forced run touched another file: %q %v", b, err)
	}
	// An output path that is a file is refused even with Force.
	_, err = tune.Run(context.Background(), tune.Options{Dir: dir, Out: keep, Force: true, Config: motion.DefaultConfig(), Logger: quiet()})
	if err == nil {
		t.Fatal("output path is a file: no error")
	}
}

func TestRunMissingInput(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	out := filepath.Join(t.TempDir(), "out")
	_, err := tune.Run(context.Background(), tune.Options{Dir: missing, Out: out, Config: motion.DefaultConfig()})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing input: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("output directory created for a missing input: %v", err)
	}
	// A directory without images.
	empty := t.TempDir()
	_, err = tune.Run(context.Background(), tune.Options{Dir: empty, Out: out, Config: motion.DefaultConfig()})
	if err == nil || !strings.Contains(err.Error(), empty) {
		t.Fatalf("empty input: %v", err)
	}
}

// TestRunDataSetLayout: a directory with input/ (the data set's layout)
// plays input/, and the file names are in the text band's info (checked
// through the file count and a skipped corrupt file).
func TestRunDataSetLayout(t *testing.T) {
	root := filepath.Join(t.TempDir(), "wallflower_like")
	writeSequence(t, filepath.Join(root, "input"))
	if err := os.WriteFile(filepath.Join(root, "input", "in0005.png"), []byte("not a png"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	rep := run(t, tune.Options{Dir: root, Out: out})
	if rep.Played != seqFrames-1 || rep.SkippedFiles != 1 || rep.Written != seqFrames-1 {
		t.Fatalf("report %+v, want %d played and written, 1 skipped", rep, seqFrames-1)
	}
}

func TestRunSheet(t *testing.T) {
	dir := sequenceDir(t)
	out := filepath.Join(t.TempDir(), "out")
	rep := run(t, tune.Options{Dir: dir, Out: out, Sheet: true})
	if rep.Sheet != filepath.Join(out, tune.SheetName) {
		t.Fatalf("sheet %q", rep.Sheet)
	}
	img := readPNG(t, rep.Sheet)
	one := readPNG(t, filepath.Join(out, "000000.png"))
	b := img.Bounds()
	// 30 cells, 8 a row: 4 rows of cells narrower than the overlays.
	if b.Dx() <= 4*one.Bounds().Dx()/2 || b.Dy() >= 4*one.Bounds().Dy() || b.Dy() < 4*40 {
		t.Errorf("sheet %v for 30 overlays of %v", b, one.Bounds())
	}
	// Some cell shows motion red.
	red := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if isRed(img.At(x, y)) {
				red++
			}
		}
	}
	if red == 0 {
		t.Error("no motion shown on the sheet")
	}
	// Without Sheet, none.
	out2 := filepath.Join(t.TempDir(), "out")
	if rep := run(t, tune.Options{Dir: dir, Out: out2, Max: 2}); rep.Sheet != "" {
		t.Errorf("sheet %q without Sheet", rep.Sheet)
	}
	if _, err := os.Stat(filepath.Join(out2, tune.SheetName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("sheet written without Sheet: %v", err)
	}
}

// TestRunSource plays a capture.Source: a frame without a usable luma plane
// is counted and not written; a source error stops the run and is
// returned with what was written.
func TestRunSource(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var frames []capture.Frame
	for i := range 6 {
		frames = append(frames, capturetest.GreyFrame(64, 48, 100, uint64(i), t0.Add(time.Duration(i)*100*time.Millisecond)))
	}
	frames[3].Luma, frames[3].Data = frames[3].Luma[:100], frames[3].Data[:100]
	boom := errors.New("camera on fire")
	src := &capturetest.Source{Frames: frames, Err: boom}
	out := filepath.Join(t.TempDir(), "out")
	rep, err := tune.Run(context.Background(), tune.Options{Source: src, Out: out, Config: motion.DefaultConfig(), Logger: quiet()})
	if !errors.Is(err, boom) {
		t.Fatalf("source error: %v", err)
	}
	if got := pngFrames(t, out); !slices.Equal(got, []int{0, 1, 2, 4, 5}) {
		t.Errorf("written %v, want all but the bad frame 3", got)
	}
	if rep.Played != 6 || rep.BadFrames != 1 || rep.Written != 5 || rep.Stopped != tune.StopError {
		t.Errorf("report %+v", rep)
	}
	if src.Closed() != 0 {
		t.Error("Run closed the caller's source")
	}
}

// cancelSource cancels the run's context after n frames, like a Ctrl-C.
type cancelSource struct {
	capturetest.Source
	n      int
	cancel context.CancelFunc
}

func (s *cancelSource) Next(ctx context.Context, f *capture.Frame) error {
	if s.Served() == s.n {
		s.cancel()
	}
	return s.Source.Next(ctx, f)
}

func TestRunInterrupted(t *testing.T) {
	var frames []capture.Frame
	for i := range 20 {
		frames = append(frames, capturetest.GreyFrame(64, 48, 100, uint64(i), time.Unix(int64(i), 0)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &cancelSource{Source: capturetest.Source{Frames: frames}, n: 7, cancel: cancel}
	out := filepath.Join(t.TempDir(), "out")
	rep, err := tune.Run(ctx, tune.Options{Source: src, Out: out, Config: motion.DefaultConfig(), Sheet: true})
	if err != nil || rep.Stopped != tune.StopInterrupted || rep.Written != 7 || rep.Sheet == "" {
		t.Fatalf("interrupted: %+v %v", rep, err)
	}
}

func TestRunBadOptions(t *testing.T) {
	dir := sequenceDir(t)
	out := filepath.Join(t.TempDir(), "out")
	good := tune.Options{Dir: dir, Out: out, Config: motion.DefaultConfig()}
	for name, mod := range map[string]func(*tune.Options){
		"no input":     func(o *tune.Options) { o.Dir = "" },
		"two inputs":   func(o *tune.Options) { o.Source = &capturetest.Source{} },
		"no output":    func(o *tune.Options) { o.Out = "" },
		"every":        func(o *tune.Options) { o.Every = -1 },
		"from":         func(o *tune.Options) { o.From = -1 },
		"range":        func(o *tune.Options) { o.From, o.To = 9, 3 },
		"max":          func(o *tune.Options) { o.Max = tune.HardMax + 1 },
		"negative max": func(o *tune.Options) { o.Max = -1 },
		"bad config":   func(o *tune.Options) { o.Config.MinArea = 2 },
		"zero config":  func(o *tune.Options) { o.Config = motion.Config{} },
	} {
		o := good
		mod(&o)
		if _, err := tune.Run(context.Background(), o); err == nil || !strings.HasPrefix(err.Error(), "tune: ") {
			t.Errorf("%s: err %v", name, err)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("bad options created the output directory: %v", err)
	}
}

func TestScale(t *testing.T) {
	for _, c := range []struct{ w, want int }{{96, 4}, {160, 3}, {192, 2}, {384, 1}, {1920, 1}, {8, 8}, {0, 1}} {
		if got := tune.Scale(c.w); got != c.want {
			t.Errorf("Scale(%d) = %d, want %d", c.w, got, c.want)
		}
	}
	if b := tune.Bounds(96, 64); b.Dx() != 384 || b.Dy() <= 256 {
		t.Errorf("Bounds(96, 64) = %v", b)
	}
}
