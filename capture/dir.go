package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // decoder for image.Decode
	_ "image/png"  // decoder for image.Decode
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	_ "golang.org/x/image/bmp" // decoder for image.Decode

	"github.com/keyframe-cam/keyframe/internal/clock"
)

// dirMaxSide bounds the size of an image a [Dir] will decode, so a hostile
// header cannot make it allocate gigabytes.
const dirMaxSide = 8192

// DirConfig configures [OpenDir].
type DirConfig struct {
	// Dir holds the images: files ending in .jpg, .jpeg, .png or .bmp (any
	// case), played in name order. Other files are ignored.
	Dir string
	// FPS paces the frames with the clock; 0 produces them as fast as
	// possible on a [NominalFPS] timeline.
	FPS float64
	// Loop starts again from the first file after the last one instead of
	// returning [ErrEndOfStream].
	Loop bool
	// Logger receives a warning for each skipped file; nil means
	// slog.Default(). Skipped files are also counted in [Dir.Stats].
	Logger *slog.Logger
}

// DirStats counts what a [Dir] did.
type DirStats struct {
	Frames  uint64 // frames delivered
	Skipped uint64 // files that could not be read or decoded, or did not match the first image's size
	// LastSkip is the error of the most recent skipped file, naming it.
	LastSkip error
}

// Dir is a [Source] playing an image sequence from a directory as
// FormatRGB24 frames. The file list is read once at open. Every frame has the
// size of the first decodable image; a file that cannot be read or decoded,
// or has another size, is skipped, logged and counted ([Dir.Stats]), never
// fatal. Frame Time is the open time plus Sequence/FPS.
//
// Next decodes a file per frame and so allocates: Dir is for replay and
// tests, not for the camera hot path.
type Dir struct {
	dir    string
	files  []string
	loop   bool
	log    *slog.Logger
	tl     timeline
	next   int    // index into files
	seq    uint64 // sequence of the next frame
	w, h   int    // frame size, fixed by the first decodable image
	passOK bool   // a frame was delivered in the current pass over files
	buf    bytes.Buffer
	stats  DirStats
	closed bool
}

// OpenDir lists cfg.Dir. A missing directory, or one without any JPEG, PNG
// or BMP file, is an error naming the path. A nil clk means the system clock;
// the timeline starts at clk.Now().
func OpenDir(cfg DirConfig, clk clock.Clock) (*Dir, error) {
	if cfg.Dir == "" {
		return nil, errors.New("capture: image directory not set")
	}
	if err := checkFPS(cfg.FPS); err != nil {
		return nil, fmt.Errorf("capture: dir %s: %w", cfg.Dir, err)
	}
	entries, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("capture: image directory: %w", err)
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() || !isImageName(e.Name()) {
			continue
		}
		files = append(files, e.Name())
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("capture: image directory %s: no .jpg, .jpeg, .png or .bmp files", cfg.Dir)
	}
	slices.Sort(files)
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Dir{
		dir:   cfg.Dir,
		files: files,
		loop:  cfg.Loop,
		log:   log,
		tl:    newTimeline(clk, cfg.FPS),
	}, nil
}

func isImageName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jpg", ".jpeg", ".png", ".bmp":
		return true
	}
	return false
}

// Files is the image file names in play order.
func (d *Dir) Files() []string { return slices.Clone(d.files) }

// Stats returns the counters.
func (d *Dir) Stats() DirStats { return d.stats }

// Next fills f with the next decodable image. After the last file it returns
// [ErrEndOfStream], or starts again when looping. A whole pass over the files
// without one decodable image is an error.
func (d *Dir) Next(ctx context.Context, f *Frame) error {
	if d.closed {
		return ErrClosed
	}
	if err := d.tl.wait(ctx, d.seq); err != nil {
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.next == len(d.files) {
			if !d.passOK {
				return fmt.Errorf("capture: image directory %s: none of %d files could be used (last: %w)", d.dir, len(d.files), d.stats.LastSkip)
			}
			if !d.loop {
				return ErrEndOfStream
			}
			d.next, d.passOK = 0, false
		}
		name := d.files[d.next]
		d.next++
		if err := d.load(filepath.Join(d.dir, name), f); err != nil {
			d.stats.Skipped++
			d.stats.LastSkip = err
			d.log.Warn("capture: image skipped", "file", filepath.Join(d.dir, name), "err", err)
			continue
		}
		d.passOK = true
		f.Time = d.tl.start.Add(d.tl.offset(d.seq))
		f.Sequence = d.seq
		d.seq++
		d.stats.Frames++
		return nil
	}
}

// load decodes path into f as RGB24. On error f may hold a partial frame.
func (d *Dir) load(path string, f *Frame) error {
	d.buf.Reset()
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	_, err = d.buf.ReadFrom(io.LimitReader(fh, 256<<20))
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("capture: read %s: %w", path, err)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(d.buf.Bytes()))
	if err != nil {
		return fmt.Errorf("capture: decode %s: %w", path, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > dirMaxSide || cfg.Height > dirMaxSide {
		return fmt.Errorf("capture: decode %s: size %dx%d outside 1..%d", path, cfg.Width, cfg.Height, dirMaxSide)
	}
	if d.w != 0 && (cfg.Width != d.w || cfg.Height != d.h) {
		return fmt.Errorf("capture: %s: size %dx%d differs from the sequence's %dx%d", path, cfg.Width, cfg.Height, d.w, d.h)
	}
	img, _, err := image.Decode(bytes.NewReader(d.buf.Bytes()))
	if err != nil {
		return fmt.Errorf("capture: decode %s: %w", path, err)
	}
	b := img.Bounds()
	if b.Dx() != cfg.Width || b.Dy() != cfg.Height {
		return fmt.Errorf("capture: decode %s: image is %dx%d, header said %dx%d", path, b.Dx(), b.Dy(), cfg.Width, cfg.Height)
	}
	d.w, d.h = cfg.Width, cfg.Height
	toRGB24(f, img)
	return nil
}

// toRGB24 converts img into f as an RGB24 frame with its luma plane.
func toRGB24(f *Frame, img image.Image) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	f.Width, f.Height = w, h
	f.Format = FormatRGB24
	f.Stride = 3 * w
	f.Data = grow(f.Data, 3*w*h)
	for y := range h {
		row := f.Data[y*f.Stride : y*f.Stride+3*w]
		sy := b.Min.Y + y
		switch m := img.(type) {
		case *image.YCbCr:
			for x := range w {
				yi := m.YOffset(b.Min.X+x, sy)
				ci := m.COffset(b.Min.X+x, sy)
				row[3*x], row[3*x+1], row[3*x+2] = color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
			}
		case *image.Gray:
			src := m.Pix[m.PixOffset(b.Min.X, sy):]
			for x := range w {
				row[3*x], row[3*x+1], row[3*x+2] = src[x], src[x], src[x]
			}
		case *image.RGBA: // premultiplied: the colour over black
			src := m.Pix[m.PixOffset(b.Min.X, sy):]
			for x := range w {
				copy(row[3*x:3*x+3], src[4*x:4*x+3])
			}
		case *image.NRGBA: // alpha ignored: still frames are opaque
			src := m.Pix[m.PixOffset(b.Min.X, sy):]
			for x := range w {
				copy(row[3*x:3*x+3], src[4*x:4*x+3])
			}
		default:
			for x := range w {
				r, g, bl, _ := img.At(b.Min.X+x, sy).RGBA()
				row[3*x], row[3*x+1], row[3*x+2] = uint8(r>>8), uint8(g>>8), uint8(bl>>8)
			}
		}
	}
	fillLuma(f)
}

// Close ends the source; Next then returns [ErrClosed].
func (d *Dir) Close() error {
	d.closed = true
	return nil
}
