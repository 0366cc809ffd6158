// Package motiontest writes image sequences for the tests of the commands
// that play them to the motion detector (keyframe tune, keyframe-receiver
// eval).
package motiontest

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// The frames of WriteSquareFrames with the square in view.
const (
	SquareFirst = 10
	SquareLast  = 25
)

// WriteSquareFrames writes n small grey PNG frames (64x48, f000.png,
// f001.png, ...) into dir: a gradient, and from frame SquareFirst a
// 10x12 square crossing it from left to right, out of view after
// SquareLast.
func WriteSquareFrames(t testing.TB, dir string, n int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		img := image.NewGray(image.Rect(0, 0, 64, 48))
		for y := range 48 {
			for x := range 64 {
				img.Pix[y*img.Stride+x] = byte(60 + x + y)
			}
		}
		for y := 18; y < 30 && i >= SquareFirst; y++ {
			for x := 4 * (i - SquareFirst); x < 4*(i-SquareFirst)+10 && x < 64; x++ {
				img.Pix[y*img.Stride+x] = 250
			}
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.png", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
