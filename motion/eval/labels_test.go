package eval

import (
	"bytes"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/image/bmp"

	"github.com/keyframe-cam/keyframe/motion"
)

// writeMasks writes groundtruth/gt%06d.png for the given frame numbers,
// each 64x48 mask drawn by draw (pixel values 0, 85, 170, 255).
func writeMasks(t *testing.T, dir string, nums []int, draw func(n int, m *image.Gray)) {
	t.Helper()
	gt := filepath.Join(dir, "groundtruth")
	if err := os.MkdirAll(gt, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range nums {
		m := image.NewGray(image.Rect(0, 0, seqW, seqH))
		draw(n, m)
		writePNG(t, filepath.Join(gt, fmt.Sprintf("gt%06d.png", n)), m)
	}
}

func fill(m *image.Gray, r image.Rectangle, v uint8) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			m.Pix[y*m.Stride+x] = v
		}
	}
}

func TestDeriveLabelsRule(t *testing.T) {
	dir := t.TempDir()
	files := make([]string, 9)
	nums := make([]int, 9)
	for i := range files {
		nums[i] = i + 1
		files[i] = fmt.Sprintf("in%06d.jpg", i+1)
	}
	// The ROI is the left half (1536 px): 0.1 % of it is 1.536 px, so 2
	// motion pixels make a positive and 2 unknown ones a don't care.
	roi := image.NewGray(image.Rect(0, 0, seqW, seqH))
	fill(roi, image.Rect(0, 0, seqW/2, seqH), 255)
	var b bytes.Buffer
	if err := bmp.Encode(&b, roi); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "ROI.bmp"), b.String())
	// CDnet numbers the frames in temporalROI.txt as in the file names.
	writeFile(t, filepath.Join(dir, "temporalROI.txt"), "2 8\n")
	in := image.Rect(4, 4, 6, 5)     // 2 px inside the ROI
	out := image.Rect(40, 4, 60, 40) // outside the ROI
	one := image.Rect(4, 4, 5, 5)    // 1 px inside
	draw := func(n int, m *image.Gray) {
		switch n {
		case 1: // outside the temporal ROI, whatever its mask
			fill(m, in, maskMotion)
		case 2: // empty
		case 3:
			fill(m, out, maskMotion)
		case 4:
			fill(m, one, maskMotion)
		case 5:
			fill(m, in, maskMotion)
		case 6:
			fill(m, one, maskUnknown)
		case 7:
			fill(m, in, maskUnknown)
		case 8:
			fill(m, m.Rect, 85) // CDnet's "outside ROI" and shadow are not motion
			fill(m, one, 50)
		case 9: // outside the temporal ROI
		}
	}
	writeMasks(t, dir, nums, draw)
	want := []Label{DontCare, Negative, Negative, DontCare, Positive, Negative, DontCare, Negative, DontCare}
	got, err := DeriveLabels(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("labels %v, want %v", got, want)
	}

	// A partial ground truth is matched by frame number; a frame without
	// a mask is don't care.
	if err := os.Remove(filepath.Join(dir, "groundtruth", "gt000005.png")); err != nil {
		t.Fatal(err)
	}
	want[4] = DontCare
	if got, err = DeriveLabels(dir, files); err != nil {
		t.Fatal(err)
	} else if !reflect.DeepEqual(got, want) {
		t.Errorf("partial ground truth: labels %v, want %v", got, want)
	}
}

func TestDeriveLabelsPositions(t *testing.T) {
	// Unnumbered file names: temporalROI.txt counts 0-based positions, and
	// masks match by sorted order. No ROI.bmp: the whole frame counts
	// (3072 px, so 4 px are needed for a positive).
	dir := t.TempDir()
	files := []string{"a.png", "b.png", "c.png", "d.png"}
	writeFile(t, filepath.Join(dir, "temporalROI.txt"), "1 3")
	writeMasks(t, dir, []int{10, 20, 30, 40}, func(n int, m *image.Gray) {
		switch n {
		case 10, 20:
			fill(m, image.Rect(0, 0, 4, 1), maskMotion)
		case 30:
			fill(m, image.Rect(0, 0, 3, 1), maskMotion)
		}
	})
	got, err := DeriveLabels(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Label{DontCare, Positive, DontCare, Negative}; !reflect.DeepEqual(got, want) {
		t.Errorf("labels %v, want %v", got, want)
	}
}

func TestDeriveLabelsErrors(t *testing.T) {
	files := []string{"in000001.png", "in000002.png"}
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"bad temporal ROI", func(t *testing.T, dir string) {
			writeMasks(t, dir, []int{1, 2}, func(int, *image.Gray) {})
			writeFile(t, filepath.Join(dir, "temporalROI.txt"), "5")
		}, `want two frame numbers "first last"`},
		{"ROI of another size", func(t *testing.T, dir string) {
			writeMasks(t, dir, []int{1, 2}, func(int, *image.Gray) {})
			var b bytes.Buffer
			if err := bmp.Encode(&b, image.NewGray(image.Rect(0, 0, 8, 8))); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "ROI.bmp"), b.String())
		}, "ROI.bmp"},
		{"corrupt mask", func(t *testing.T, dir string) {
			writeMasks(t, dir, []int{1, 2}, func(int, *image.Gray) {})
			writeFile(t, filepath.Join(dir, "groundtruth", "gt000002.png"), "garbage")
		}, "gt000002.png"},
		{"unmatched masks", func(t *testing.T, dir string) {
			writeMasks(t, dir, []int{1, 2}, func(int, *image.Gray) {})
			writeFile(t, filepath.Join(dir, "groundtruth", "extra.png"), "") // 3 masks for 2 frames
		}, "no frame number"},
		{"no masks", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "groundtruth"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, "no masks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			if _, err := DeriveLabels(dir, files); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestRunSequenceDerivedLabels(t *testing.T) {
	// Without frame_labels.csv, the labels come from the masks; masks drawn
	// where the object is give the labels the CSV would have had (with the
	// warm-up left out by temporalROI.txt).
	root := t.TempDir()
	writeSequence(t, root, "csv", true, true)
	derived, _ := writeSequence(t, root, "masks", true, false)
	nums := make([]int, seqFrames)
	for i := range nums {
		nums[i] = i + 1
	}
	writeMasks(t, derived, nums, func(n int, m *image.Gray) { fill(m, objectRect(n-1), maskMotion) })
	writeFile(t, filepath.Join(derived, "temporalROI.txt"), fmt.Sprintf("%d %d", warmupFrames+1, seqFrames))

	rep, err := Run([]string{root}, motion.DefaultConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := rep.Sequences["csv"], rep.Sequences["masks"]
	if a.Labels != LabelsFromCSV || b.Labels != LabelsFromMasks {
		t.Errorf("labels from %q and %q, want %q and %q", a.Labels, b.Labels, LabelsFromCSV, LabelsFromMasks)
	}
	a.Labels, b.Labels = "", ""
	a.MsPerFrame, b.MsPerFrame = 0, 0
	if !reflect.DeepEqual(a, b) {
		t.Errorf("derived labels score\n%+v\nwant the CSV's\n%+v", b, a)
	}
}
