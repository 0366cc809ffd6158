package eval

import (
	"encoding/csv"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // ground-truth masks may be JPEG
	_ "image/png"  // or PNG
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	_ "golang.org/x/image/bmp" // or BMP, as ROI.bmp is
)

// File and directory names of the CDnet-style layout.
const (
	inputDir       = "input"
	labelsFile     = "frame_labels.csv"
	truthDir       = "groundtruth"
	roiFile        = "ROI.bmp"
	temporalROI    = "temporalROI.txt"
	maxMaskSide    = 8192    // a hostile header cannot make a mask allocate gigabytes
	maxLabelsBytes = 8 << 20 // about 200,000 rows of frame_labels.csv
)

// Values of a ground-truth mask (CDnet).
const (
	maskMotion  = 255
	maskUnknown = 170
)

// MinForegroundFraction is the data set's rule: a frame is positive when
// motion pixels inside the ROI reach this fraction of the ROI's area.
const MinForegroundFraction = 0.001

// Label sources, in SequenceResult.Labels.
const (
	LabelsFromCSV   = "frame_labels.csv"
	LabelsFromMasks = "groundtruth"
)

// imageName reports whether name is a frame file (as capture.OpenDir plays).
func imageName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jpg", ".jpeg", ".png", ".bmp":
		return true
	}
	return false
}

// listImages returns the image files of dir in name order.
func listImages(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && imageName(e.Name()) {
			files = append(files, e.Name())
		}
	}
	slices.Sort(files)
	return files, nil
}

// loadLabels returns one label per input file (files in name order) and
// where they came from: frame_labels.csv if the sequence has one, else
// labels derived from its groundtruth/ masks.
func loadLabels(seq string, files []string) ([]Label, string, error) {
	path := filepath.Join(seq, labelsFile)
	labels, err := readLabelsFile(path, files)
	if err == nil {
		return labels, LabelsFromCSV, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	if !isDir(filepath.Join(seq, truthDir)) {
		return nil, "", fmt.Errorf("eval: %s: no %s and no %s/ to derive labels from", seq, labelsFile, truthDir)
	}
	labels, err = DeriveLabels(seq, files)
	if err != nil {
		return nil, "", err
	}
	return labels, LabelsFromMasks, nil
}

// readLabelsFile reads frame_labels.csv (columns file and label, by header
// name; others ignored) and orders the labels as files. Every file needs
// exactly one row and every row a file. A missing file is returned wrapping
// fs.ErrNotExist.
func readLabelsFile(path string, files []string) ([]Label, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	} else if st.Size() > maxLabelsBytes {
		return nil, fmt.Errorf("eval: %s: %d bytes, more than the %d a label file may have", path, st.Size(), maxLabelsBytes)
	}
	r := csv.NewReader(io.LimitReader(f, maxLabelsBytes))
	r.ReuseRecord = true
	head, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("eval: %s: header: %w", path, err)
	}
	for i, h := range head {
		head[i] = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")) // a BOM, spaces
	}
	fileCol, labelCol := slices.Index(head, "file"), slices.Index(head, "label")
	if fileCol < 0 || labelCol < 0 {
		return nil, fmt.Errorf("eval: %s: want columns file and label, have %q", path, head)
	}
	byFile := make(map[string]Label, len(files))
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("eval: %s: %w", path, err)
		}
		line, _ := r.FieldPos(0)
		name, val := rec[fileCol], strings.TrimSpace(rec[labelCol])
		n, err := strconv.Atoi(val)
		if err != nil || n < -1 || n > 1 {
			return nil, fmt.Errorf("eval: %s:%d: label %q is not 1, 0 or -1", path, line, val)
		}
		if _, dup := byFile[name]; dup {
			return nil, fmt.Errorf("eval: %s:%d: %s labelled twice", path, line, name)
		}
		byFile[name] = Label(n)
	}
	labels := make([]Label, len(files))
	var missing []string
	for i, name := range files {
		l, ok := byFile[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		labels[i] = l
		delete(byFile, name)
	}
	if len(missing) > 0 || len(byFile) > 0 {
		extra := slices.Sorted(maps.Keys(byFile))
		return nil, fmt.Errorf("eval: %s: labels do not match %s/: %d frames without a label%s, %d labels without a frame%s",
			path, inputDir, len(missing), first(missing), len(extra), first(extra))
	}
	return labels, nil
}

func first(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return " (first " + names[0] + ")"
}

// DeriveLabels computes the labels of a sequence without frame_labels.csv
// from its masks, with the data set's rule, one per input file (files, in
// name order):
//
//   - groundtruth/ holds a mask per frame, matched to input by sorted order
//     when both have as many files, else by the number in the file names
//     (gt000123.png for in000123.jpg); a frame without a mask is DontCare.
//   - ROI.bmp, if present, marks the region scored (non-zero pixels; the
//     whole frame without it). Motion pixels (255) and unknown pixels (170)
//     are counted inside it.
//   - Positive when motion pixels reach MinForegroundFraction of the ROI's
//     area; Negative when there are none and unknown pixels stay below that
//     same count; DontCare otherwise.
//   - temporalROI.txt, if present, holds "first last": frames outside are
//     DontCare. The numbers are those in the input file names (CDnet
//     numbers its frames from 1: "470 1700" with in000001.jpg first) when
//     every name has one, else 0-based positions.
func DeriveLabels(seq string, files []string) ([]Label, error) {
	gtDir := filepath.Join(seq, truthDir)
	masks, err := listImages(gtDir)
	if err != nil {
		return nil, err
	}
	if len(masks) == 0 {
		return nil, fmt.Errorf("eval: %s: no masks (.png, .jpg, .bmp)", gtDir)
	}
	maskOf, err := matchMasks(files, masks)
	if err != nil {
		return nil, fmt.Errorf("eval: %s: %w", gtDir, err)
	}
	inTime, err := readTemporalROI(filepath.Join(seq, temporalROI), files)
	if err != nil {
		return nil, err
	}
	var roi *image.Gray // nil: the whole frame
	if p := filepath.Join(seq, roiFile); fileExists(p) {
		if roi, err = readGray(p); err != nil {
			return nil, err
		}
	}
	labels := make([]Label, len(files))
	for i := range files {
		labels[i] = DontCare
		if !inTime[i] || maskOf[i] == "" {
			continue
		}
		p := filepath.Join(gtDir, maskOf[i])
		m, err := readGray(p)
		if err != nil {
			return nil, err
		}
		if roi != nil && roi.Rect.Size() != m.Rect.Size() {
			return nil, fmt.Errorf("eval: %s: mask %v, %s %v", p, m.Rect.Size(), roiFile, roi.Rect.Size())
		}
		labels[i] = maskLabel(m, roi)
	}
	return labels, nil
}

// maskLabel applies the data set's rule to one mask.
func maskLabel(m, roi *image.Gray) Label {
	var area, fg, unk int
	w, h := m.Rect.Dx(), m.Rect.Dy()
	for y := range h {
		row := m.Pix[y*m.Stride:][:w]
		for x, v := range row {
			if roi != nil && roi.Pix[y*roi.Stride+x] == 0 {
				continue
			}
			area++
			switch v {
			case maskMotion:
				fg++
			case maskUnknown:
				unk++
			}
		}
	}
	least := MinForegroundFraction * float64(area)
	switch {
	case area == 0:
		return DontCare
	case float64(fg) >= least:
		return Positive
	case fg == 0 && float64(unk) < least:
		return Negative
	}
	return DontCare
}

// matchMasks returns, per input file, its mask's name ("" if none).
func matchMasks(files, masks []string) ([]string, error) {
	out := make([]string, len(files))
	if len(files) == len(masks) {
		copy(out, masks)
		return out, nil
	}
	byNum := make(map[int]string, len(masks))
	for _, m := range masks {
		n, ok := frameNumber(m)
		if !ok {
			return nil, fmt.Errorf("%d masks for %d frames, and mask %s has no frame number to match by", len(masks), len(files), m)
		}
		if prev, dup := byNum[n]; dup {
			return nil, fmt.Errorf("masks %s and %s have the same frame number %d", prev, m, n)
		}
		byNum[n] = m
	}
	for i, f := range files {
		n, ok := frameNumber(f)
		if !ok {
			return nil, fmt.Errorf("%d masks for %d frames, and frame %s has no number to match by", len(masks), len(files), f)
		}
		out[i] = byNum[n]
	}
	return out, nil
}

// frameNumber is the last run of digits in a file name without extension
// ("in000470.jpg" is 470).
func frameNumber(name string) (int, bool) {
	base := strings.TrimSuffix(name, filepath.Ext(name))
	end := len(base)
	for end > 0 && (base[end-1] < '0' || base[end-1] > '9') {
		end--
	}
	start := end
	for start > 0 && base[start-1] >= '0' && base[start-1] <= '9' {
		start--
	}
	if start == end || end-start > 9 {
		return 0, false
	}
	n, err := strconv.Atoi(base[start:end])
	return n, err == nil
}

// readTemporalROI returns, per file, whether it lies in the temporal ROI
// (all true when the file does not exist).
func readTemporalROI(path string, files []string) ([]bool, error) {
	in := make([]bool, len(files))
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		for i := range in {
			in[i] = true
		}
		return in, nil
	}
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	fields := strings.Fields(string(b))
	var lo, hi int
	if len(fields) == 2 {
		lo, err = strconv.Atoi(fields[0])
		if err == nil {
			hi, err = strconv.Atoi(fields[1])
		}
	}
	if len(fields) != 2 || err != nil || lo > hi {
		return nil, fmt.Errorf("eval: %s: want two frame numbers \"first last\", have %q", path, strings.TrimSpace(string(b)))
	}
	nums := make([]int, len(files))
	numbered := true
	for i, f := range files {
		n, ok := frameNumber(f)
		numbered = numbered && ok
		nums[i] = n
	}
	for i := range files {
		n := i
		if numbered {
			n = nums[i]
		}
		in[i] = n >= lo && n <= hi
	}
	return in, nil
}

// readGray decodes an image file into 8-bit grey (a grey PNG as is; a
// colour or paletted one through its luma).
func readGray(path string) (*image.Gray, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer f.Close()
	cfg, _, err := image.DecodeConfig(f)
	if err != nil {
		return nil, fmt.Errorf("eval: decode %s: %w", path, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > maxMaskSide || cfg.Height > maxMaskSide {
		return nil, fmt.Errorf("eval: decode %s: size %dx%d outside 1..%d", path, cfg.Width, cfg.Height, maxMaskSide)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("eval: decode %s: %w", path, err)
	}
	if g, ok := img.(*image.Gray); ok {
		return g, nil
	}
	b := img.Bounds()
	g := image.NewGray(image.Rect(0, 0, b.Dx(), b.Dy()))
	for y := range b.Dy() {
		for x := range b.Dx() {
			g.Pix[y*g.Stride+x] = color.GrayModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.Gray).Y
		}
	}
	return g, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
