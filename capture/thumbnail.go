package capture

import (
	"fmt"
	"image"
	"image/jpeg"
	"io"
)

// EncodeThumbnail writes f as a JPEG of the given quality (1..100), scaled
// down with an area (box) filter from the native data so that its longest
// side is maxSide. A frame already within maxSide is encoded at its own size,
// never scaled up. A GREY frame gives a greyscale JPEG.
func EncodeThumbnail(w io.Writer, f *Frame, maxSide, quality int) error {
	return EncodeThumbnailRect(w, f, image.Rect(0, 0, f.Width, f.Height), maxSide, quality)
}

// EncodeThumbnailRect is EncodeThumbnail of the part r of the frame (in
// frame pixels; clipped to the frame, and an empty r is an error).
func EncodeThumbnailRect(w io.Writer, f *Frame, r image.Rectangle, maxSide, quality int) error {
	if maxSide <= 0 {
		return fmt.Errorf("capture: thumbnail: max side %d, want > 0", maxSide)
	}
	if quality < 1 || quality > 100 {
		return fmt.Errorf("capture: thumbnail: quality %d, want 1..100", quality)
	}
	if err := f.validate(); err != nil {
		return fmt.Errorf("capture: thumbnail: %w", err)
	}
	r = r.Intersect(image.Rect(0, 0, f.Width, f.Height))
	if r.Empty() {
		return fmt.Errorf("capture: thumbnail: region %v outside the %dx%d frame", r, f.Width, f.Height)
	}
	tw, th := thumbSize(r.Dx(), r.Dy(), maxSide)
	var img image.Image
	switch f.Format {
	case FormatGrey, FormatRGB24, FormatYUYV:
		img = scaleBox(f, r, tw, th)
	default: // planar and compressed formats: through their image
		src, err := f.image()
		if err != nil {
			return fmt.Errorf("capture: thumbnail: %w", err)
		}
		if r != src.Bounds() {
			src = src.(interface {
				SubImage(image.Rectangle) image.Image
			}).SubImage(r)
		}
		img = scaleImage(src, tw, th)
	}
	if err := jpeg.Encode(w, img, &jpeg.Options{Quality: quality}); err != nil {
		return fmt.Errorf("capture: thumbnail: %w", err)
	}
	return nil
}

// ThumbnailCrop is the part of a w×h frame that a cropped thumbnail of
// motion in box shows: box grown by half its longer side on every side, then
// to at least a quarter of the frame's shorter side each way (about its
// centre), shifted inside the frame and clipped to it. An empty box gives
// the whole frame. Viewers can compute it again from a record's motion box
// and frame size.
func ThumbnailCrop(box image.Rectangle, w, h int) image.Rectangle {
	frame := image.Rect(0, 0, w, h)
	box = box.Intersect(frame)
	if box.Empty() {
		return frame
	}
	m := max(box.Dx(), box.Dy()) / 2
	r := box.Inset(-m)
	minSide := max(1, min(w, h)/4)
	if d := minSide - r.Dx(); d > 0 {
		r.Min.X, r.Max.X = r.Min.X-d/2, r.Max.X+d-d/2
	}
	if d := minSide - r.Dy(); d > 0 {
		r.Min.Y, r.Max.Y = r.Min.Y-d/2, r.Max.Y+d-d/2
	}
	shift := image.Point{}
	if r.Min.X < 0 {
		shift.X = -r.Min.X
	} else if r.Max.X > w {
		shift.X = w - r.Max.X
	}
	if r.Min.Y < 0 {
		shift.Y = -r.Min.Y
	} else if r.Max.Y > h {
		shift.Y = h - r.Max.Y
	}
	return r.Add(shift).Intersect(frame)
}

// thumbSize is the size of a w x h image scaled so its longest side is
// maxSide, or w x h when it already fits.
func thumbSize(w, h, maxSide int) (int, int) {
	if w <= maxSide && h <= maxSide {
		return w, h
	}
	if w >= h {
		return maxSide, max(1, (h*maxSide+w/2)/w)
	}
	return max(1, (w*maxSide+h/2)/h), maxSide
}

// scaleBox averages the frame's native data in r over the source area of
// each destination pixel. f must be valid, r inside it, and tw <= r.Dx(),
// th <= r.Dy().
func scaleBox(f *Frame, r image.Rectangle, tw, th int) image.Image {
	sw, sh := r.Dx(), r.Dy()
	ox := r.Min.X
	nch := 3
	if f.Format == FormatGrey {
		nch = 1
	}
	// col[sx] is the destination column of source column sx; cw[dx] its width.
	col := make([]int, sw)
	cw := make([]int, tw)
	for dx := range tw {
		x0, x1 := dx*sw/tw, (dx+1)*sw/tw
		for sx := x0; sx < x1; sx++ {
			col[sx] = dx
		}
		cw[dx] = x1 - x0
	}
	sum := make([]int, tw*nch)
	out := make([]byte, tw*th*nch)
	for dy := range th {
		clear(sum)
		y0, y1 := dy*sh/th, (dy+1)*sh/th
		for sy := y0; sy < y1; sy++ {
			row := f.Data[(r.Min.Y+sy)*f.Stride:]
			switch f.Format {
			case FormatGrey:
				for sx := range sw {
					sum[col[sx]] += int(row[ox+sx])
				}
			case FormatRGB24:
				for sx := range sw {
					s := sum[3*col[sx]:]
					x := 3 * (ox + sx)
					s[0] += int(row[x])
					s[1] += int(row[x+1])
					s[2] += int(row[x+2])
				}
			case FormatYUYV:
				for sx := range sw {
					s := sum[3*col[sx]:]
					x := ox + sx
					s[0] += int(row[2*x])
					s[1] += int(row[4*(x/2)+1])
					s[2] += int(row[4*(x/2)+3])
				}
			}
		}
		o := out[dy*tw*nch:]
		for dx := range tw {
			n := cw[dx] * (y1 - y0)
			for c := range nch {
				o[dx*nch+c] = uint8((sum[dx*nch+c] + n/2) / n)
			}
		}
	}
	dst := image.Rect(0, 0, tw, th)
	switch f.Format {
	case FormatGrey:
		return &image.Gray{Pix: out, Stride: tw, Rect: dst}
	case FormatRGB24:
		img := image.NewRGBA(dst)
		for i := range tw * th {
			copy(img.Pix[4*i:4*i+3], out[3*i:3*i+3])
			img.Pix[4*i+3] = 0xff
		}
		return img
	default: // FormatYUYV
		img := image.NewYCbCr(dst, image.YCbCrSubsampleRatio444)
		for i := range tw * th {
			img.Y[i], img.Cb[i], img.Cr[i] = out[3*i], out[3*i+1], out[3*i+2]
		}
		return img
	}
}

// scaleImage is scaleBox for a YCbCr or Gray image (what Frame.image gives
// for NV12, YU12 and MJPEG frames): a YCbCr image gives YCbCr 4:4:4, a Gray
// one Gray. tw and th must not exceed the image's size.
func scaleImage(src image.Image, tw, th int) image.Image {
	b := src.Bounds()
	sw, sh := b.Dx(), b.Dy()
	ycc, isYCC := src.(*image.YCbCr)
	gray, _ := src.(*image.Gray)
	nch := 1
	if isYCC {
		nch = 3
	}
	sum := make([]int, tw*nch)
	out := make([]byte, tw*th*nch)
	for dy := range th {
		clear(sum)
		y0, y1 := dy*sh/th, (dy+1)*sh/th
		for sy := y0; sy < y1; sy++ {
			for dx := range tw {
				x0, x1 := dx*sw/tw, (dx+1)*sw/tw
				s := sum[dx*nch : dx*nch+nch]
				for sx := x0; sx < x1; sx++ {
					x, y := b.Min.X+sx, b.Min.Y+sy
					if isYCC {
						s[0] += int(ycc.Y[ycc.YOffset(x, y)])
						c := ycc.COffset(x, y)
						s[1] += int(ycc.Cb[c])
						s[2] += int(ycc.Cr[c])
					} else {
						s[0] += int(gray.Pix[gray.PixOffset(x, y)])
					}
				}
			}
		}
		o := out[dy*tw*nch:]
		for dx := range tw {
			n := ((dx+1)*sw/tw - dx*sw/tw) * (y1 - y0)
			for c := range nch {
				o[dx*nch+c] = uint8((sum[dx*nch+c] + n/2) / n)
			}
		}
	}
	r := image.Rect(0, 0, tw, th)
	if !isYCC {
		return &image.Gray{Pix: out, Stride: tw, Rect: r}
	}
	img := image.NewYCbCr(r, image.YCbCrSubsampleRatio444)
	for i := range tw * th {
		img.Y[i], img.Cb[i], img.Cr[i] = out[3*i], out[3*i+1], out[3*i+2]
	}
	return img
}
