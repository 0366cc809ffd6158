package tune

import (
	"image"
	"image/color"
	"image/draw"
)

// Contact sheet layout.
const (
	sheetCells = 48  // most cells kept
	sheetCols  = 8   // cells per row
	cellWidth  = 160 // width of a cell's image
	cellLabel  = 16  // height of a cell's label row
	cellGap    = 2
)

// sheet keeps downsized overlays of the written frames, spread over the
// run: once it holds more than sheetCells, every other cell is dropped and
// only every stride-th written frame is kept from then on.
type sheet struct {
	cells  []cell
	stride int // keep written frames whose index is a multiple of stride
	n      int // written frames offered
	h      int // cell image height, fixed by the first cell
}

type cell struct {
	img   *image.RGBA
	label string
}

// add offers a written overlay; area is the part of it showing the frame.
func (s *sheet) add(overlay *image.RGBA, area image.Rectangle, label string) {
	if s.stride == 0 {
		s.stride = 1
	}
	k := s.n
	s.n++
	if k%s.stride != 0 || area.Empty() {
		return
	}
	if s.h == 0 {
		s.h = max(1, cellWidth*area.Dy()/area.Dx())
	}
	img := image.NewRGBA(image.Rect(0, 0, cellWidth, s.h))
	shrink(img, overlay, area)
	s.cells = append(s.cells, cell{img, label})
	if len(s.cells) > sheetCells {
		j := 0
		for i := 0; i < len(s.cells); i += 2 {
			s.cells[j] = s.cells[i]
			j++
		}
		clear(s.cells[j:])
		s.cells = s.cells[:j]
		s.stride *= 2
	}
}

// render draws the cells in a grid, each with its label below it.
func (s *sheet) render() *image.RGBA {
	cols := min(sheetCols, len(s.cells))
	rows := (len(s.cells) + cols - 1) / cols
	cw, ch := cellWidth+cellGap, s.h+cellLabel+cellGap
	img := image.NewRGBA(image.Rect(0, 0, cols*cw+cellGap, rows*ch+cellGap))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.RGBA{0, 0, 0, 255}), image.Point{}, draw.Src)
	for i, c := range s.cells {
		x, y := cellGap+(i%cols)*cw, cellGap+(i/cols)*ch
		draw.Draw(img, image.Rect(x, y, x+cellWidth, y+s.h), c.img, image.Point{}, draw.Src)
		draw.Draw(img, image.Rect(x, y+s.h, x+cellWidth, y+s.h+cellLabel), image.NewUniform(colBand), image.Point{}, draw.Src)
		l := textLine{dst: img, x: x + 2, y: y + s.h + 12}
		l.text(c.label, colText)
	}
	return img
}

// shrink scales the area of src down (or up) to fill dst, each pixel of dst
// the mean of the pixels of src it covers (a box filter: a sheet cell is a
// few times smaller than a frame).
func shrink(dst, src *image.RGBA, area image.Rectangle) {
	area = area.Intersect(src.Rect)
	dw, dh := dst.Rect.Dx(), dst.Rect.Dy()
	if area.Empty() || dw == 0 || dh == 0 {
		return
	}
	sw, sh := area.Dx(), area.Dy()
	for y := range dh {
		y0 := area.Min.Y + y*sh/dh
		y1 := max(y0+1, area.Min.Y+(y+1)*sh/dh)
		for x := range dw {
			x0 := area.Min.X + x*sw/dw
			x1 := max(x0+1, area.Min.X+(x+1)*sw/dw)
			var r, g, b, a, n uint32
			for sy := y0; sy < y1; sy++ {
				row := src.Pix[src.PixOffset(x0, sy):src.PixOffset(x1, sy)]
				for i := 0; i+3 < len(row); i += 4 {
					r += uint32(row[i])
					g += uint32(row[i+1])
					b += uint32(row[i+2])
					a += uint32(row[i+3])
					n++
				}
			}
			o := dst.PixOffset(dst.Rect.Min.X+x, dst.Rect.Min.Y+y)
			dst.Pix[o], dst.Pix[o+1], dst.Pix[o+2], dst.Pix[o+3] = uint8(r/n), uint8(g/n), uint8(b/n), uint8(a/n)
		}
	}
}
