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

// Zone is a named area of the frame. With zones configured, only motion
// with pixels in a zone counts, and results say which zones it touched.
type Zone struct {
	Name string
	Area Polygon
}

// MaxZones bounds Config.Zones (a bit each in Result.Zones).
const MaxZones = 32

// ParseZones reads zones written as "name: x,y x,y x,y; name: ..." (a
// name, a colon, a polygon as ParsePolygons reads it). Names are 1 to 32
// characters of a-z, 0-9, '_' and '-', each used once. An empty string is no
// zone.
func ParseZones(s string) ([]Zone, error) {
	var out []Zone
	for i, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, pts, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("motion: zone %d: %q has no \"name:\" before its points", i+1, part)
		}
		name = strings.TrimSpace(name)
		polys, err := ParsePolygons(pts)
		if err != nil {
			return nil, fmt.Errorf("motion: zone %q: %w", name, err)
		}
		if len(polys) != 1 {
			return nil, fmt.Errorf("motion: zone %q: no points", name)
		}
		out = append(out, Zone{Name: name, Area: polys[0]})
	}
	if err := checkZones(out); err != nil {
		return nil, err
	}
	return out, nil
}

// FormatZones writes zones in the form ParseZones reads.
func FormatZones(zones []Zone) string {
	var b strings.Builder
	for i, z := range zones {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(z.Name)
		b.WriteString(": ")
		b.WriteString(FormatPolygons([]Polygon{z.Area}))
	}
	return b.String()
}

// ZoneNames returns the names of the zones whose bits are set in mask, in
// the order of zones.
func ZoneNames(zones []Zone, mask uint32) []string {
	var out []string
	for i, z := range zones {
		if i < MaxZones && mask&(1<<i) != 0 {
			out = append(out, z.Name)
		}
	}
	return out
}

func checkZones(zones []Zone) error {
	if len(zones) > MaxZones {
		return fmt.Errorf("motion: Zones: %d zones, at most %d", len(zones), MaxZones)
	}
	seen := make(map[string]bool, len(zones))
	for i, z := range zones {
		if !validZoneName(z.Name) {
			return fmt.Errorf("motion: Zones[%d]: name %q, want 1 to 32 of a-z 0-9 _ -", i, z.Name)
		}
		if seen[z.Name] {
			return fmt.Errorf("motion: Zones[%d]: name %q used twice", i, z.Name)
		}
		seen[z.Name] = true
		if err := checkPolygon(fmt.Sprintf("Zones[%d] %q", i, z.Name), z.Area); err != nil {
			return err
		}
	}
	return nil
}

func validZoneName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func checkPolygon(what string, poly Polygon) error {
	if len(poly) < 3 {
		return fmt.Errorf("motion: %s: %d points, want at least 3", what, len(poly))
	}
	for _, pt := range poly {
		if !(pt.X >= 0 && pt.X <= 1 && pt.Y >= 0 && pt.Y <= 1) {
			return fmt.Errorf("motion: %s: point (%g, %g) outside the frame [0, 1]", what, pt.X, pt.Y)
		}
	}
	return nil
}

// rasterZones sets zone[i] to the bits of the zones containing the centre
// of analysed pixel i.
func rasterZones(zone []uint32, sw, sh int, zones []Zone) {
	for y := range sh {
		for x := range sw {
			p := Point{(float64(x) + 0.5) / float64(sw), (float64(y) + 0.5) / float64(sh)}
			var bits uint32
			for i, z := range zones {
				if z.Area.Contains(p) {
					bits |= 1 << i
				}
			}
			zone[y*sw+x] = bits
		}
	}
}
