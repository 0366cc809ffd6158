package motiontest

import (
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteSquareFrames: n frames, the square (250) in view exactly from
// SquareFirst to SquareLast.
func TestWriteSquareFrames(t *testing.T) {
	dir := t.TempDir()
	const n = 30
	WriteSquareFrames(t, dir, n)
	for i := range n {
		f, err := os.Open(filepath.Join(dir, fmt.Sprintf("f%03d.png", i)))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		g, ok := img.(*image.Gray)
		if !ok || g.Rect.Dx() != 64 || g.Rect.Dy() != 48 {
			t.Fatalf("frame %d: %T %v, want 64x48 grey", i, img, img.Bounds())
		}
		square := false
		for _, p := range g.Pix {
			square = square || p == 250
		}
		if want := i >= SquareFirst && i <= SquareLast; square != want {
			t.Errorf("frame %d: square in view %v, want %v", i, square, want)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != n {
		t.Errorf("%d files, want %d", len(m), n)
	}
}
