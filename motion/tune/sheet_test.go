package tune

import (
	"image"
	"image/color"
	"strconv"
	"testing"
)

// TestSheetSpreads: however many frames are offered, the sheet keeps at most
// sheetCells of them, evenly spaced from the first, covering most of the run.
func TestSheetSpreads(t *testing.T) {
	overlay := image.NewRGBA(image.Rect(0, 0, 40, 30))
	for _, n := range []int{1, 5, sheetCells, sheetCells + 1, 200, 1000} {
		var s sheet
		for i := range n {
			s.add(overlay, overlay.Bounds(), strconv.Itoa(i))
		}
		if len(s.cells) == 0 || len(s.cells) > sheetCells {
			t.Fatalf("%d offered: %d cells", n, len(s.cells))
		}
		step := 1
		if len(s.cells) > 1 {
			step, _ = strconv.Atoi(s.cells[1].label)
		}
		for k, c := range s.cells {
			if c.label != strconv.Itoa(k*step) {
				t.Fatalf("%d offered: cell %d is frame %s, want %d", n, k, c.label, k*step)
			}
		}
		if last, _ := strconv.Atoi(s.cells[len(s.cells)-1].label); n > 1 && 2*(last+step) < n {
			t.Errorf("%d offered: the sheet stops at %d", n, last)
		}
		if want := min(n, sheetCells); n <= sheetCells && len(s.cells) != want {
			t.Errorf("%d offered: %d cells, want all", n, len(s.cells))
		}
		img := s.render()
		cols := min(sheetCols, len(s.cells))
		rows := (len(s.cells) + cols - 1) / cols
		if b := img.Bounds(); b.Dx() < cols*cellWidth || b.Dy() < rows*s.h {
			t.Errorf("%d cells in a %v sheet", len(s.cells), b)
		}
	}
}

// TestShrinkAverages: each pixel of a shrunk image is the mean of the
// source pixels it covers, taken from the given area only.
func TestShrinkAverages(t *testing.T) {
	src := image.NewRGBA(image.Rect(0, 0, 12, 4))
	for y := range 4 {
		for x := range 12 {
			v := uint8(0)
			if x >= 8 { // the area's right half white, outside the area grey
				v = 255
			}
			if x < 4 {
				v = 100
			}
			src.SetRGBA(x, y, color.RGBA{v, v / 2, 7, 255})
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, 2, 1))
	shrink(dst, src, image.Rect(4, 0, 12, 4))
	if got, want := dst.RGBAAt(0, 0), (color.RGBA{0, 0, 7, 255}); got != want {
		t.Errorf("left cell %v, want %v", got, want)
	}
	if got, want := dst.RGBAAt(1, 0), (color.RGBA{255, 127, 7, 255}); got != want {
		t.Errorf("right cell %v, want %v", got, want)
	}
	mixed := image.NewRGBA(image.Rect(0, 0, 1, 1))
	shrink(mixed, src, image.Rect(6, 0, 10, 4)) // half black, half white
	if got := mixed.RGBAAt(0, 0); got.R != 127 || got.A != 255 {
		t.Errorf("a cell over black and white: %v, want R 127", got)
	}
}
