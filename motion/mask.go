package motion

import (
	"fmt"
	"strconv"
	"strings"
)

// Point is a position in the frame as fractions of its width and height:
// (0, 0) is the top-left corner, (1, 1) the bottom-right one.
type Point struct{ X, Y float64 }

// Polygon is a closed polygon; its last point joins its first.
type Polygon []Point

// Contains reports whether p is inside the polygon (even-odd rule).
func (poly Polygon) Contains(p Point) bool {
	in := false
	for i, j := 0, len(poly)-1; i < len(poly); j, i = i, i+1 {
		a, b := poly[i], poly[j]
		if (a.Y > p.Y) != (b.Y > p.Y) && p.X < (b.X-a.X)*(p.Y-a.Y)/(b.Y-a.Y)+a.X {
			in = !in
		}
	}
	return in
}

// ParsePolygons reads polygons written as "x,y x,y x,y; x,y x,y x,y ..." with
// coordinates as fractions of the frame (e.g. "0,0 0.3,0 0.3,0.1 0,0.1" is a
// band along the top-left). An empty string is no polygon.
func ParsePolygons(s string) ([]Polygon, error) {
	var out []Polygon
	for i, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		var poly Polygon
		for _, pair := range strings.Fields(part) {
			xs, ys, ok := strings.Cut(pair, ",")
			x, errX := strconv.ParseFloat(xs, 64)
			y, errY := strconv.ParseFloat(ys, 64)
			if !ok || errX != nil || errY != nil {
				return nil, fmt.Errorf("motion: polygon %d: point %q is not x,y", i+1, pair)
			}
			if !(x >= 0 && x <= 1 && y >= 0 && y <= 1) {
				return nil, fmt.Errorf("motion: polygon %d: point %q outside the frame (coordinates are fractions in [0, 1])", i+1, pair)
			}
			poly = append(poly, Point{x, y})
		}
		if len(poly) < 3 {
			return nil, fmt.Errorf("motion: polygon %d: %d points, want at least 3", i+1, len(poly))
		}
		out = append(out, poly)
	}
	return out, nil
}

// FormatPolygons writes polygons in the form ParsePolygons reads.
func FormatPolygons(polys []Polygon) string {
	var b strings.Builder
	for i, poly := range polys {
		if i > 0 {
			b.WriteString("; ")
		}
		for j, p := range poly {
			if j > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.FormatFloat(p.X, 'g', -1, 64))
			b.WriteByte(',')
			b.WriteString(strconv.FormatFloat(p.Y, 'g', -1, 64))
		}
	}
	return b.String()
}

// rasterMask sets keep[i] to 0 for analysed pixels whose centre lies inside
// any polygon and 1 elsewhere.
func rasterMask(keep []uint8, sw, sh int, polys []Polygon) {
	for y := range sh {
		for x := range sw {
			p := Point{(float64(x) + 0.5) / float64(sw), (float64(y) + 0.5) / float64(sh)}
			k := uint8(1)
			for _, poly := range polys {
				if poly.Contains(p) {
					k = 0
					break
				}
			}
			keep[y*sw+x] = k
		}
	}
}
