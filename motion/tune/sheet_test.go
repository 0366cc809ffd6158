package tune

import (
	"image"
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
