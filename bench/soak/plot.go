package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strings"
)

// The plot is drawn with the standard library alone: lines, rectangles
// and a 5×7 pixel font for the labels, so that the soak needs no plotting
// tool and no service.

var (
	colBackground = color.RGBA{255, 255, 255, 255}
	colWarmup     = color.RGBA{236, 236, 236, 255}
	colGrid       = color.RGBA{215, 215, 215, 255}
	colAxis       = color.RGBA{40, 40, 40, 255}
	colSeries     = color.RGBA{31, 90, 180, 255}
	colFirst      = color.RGBA{40, 150, 60, 255}
	colLast       = color.RGBA{230, 120, 20, 255}
	colLimit      = color.RGBA{200, 30, 30, 255}
)

// panel is one chart: a series and its verdict.
type panel struct {
	title string
	unit  float64 // the series is divided by it for display
	ts    []float64
	vs    []float64
	v     verdict
}

const (
	plotW      = 960
	panelH     = 250
	marginL    = 90
	marginR    = 20
	marginTop  = 40
	marginBot  = 44
	fontScale  = 2
	glyphW     = 5
	glyphH     = 7
	glyphSpace = 1
)

// writePlot draws the panels one above the other, with a heading.
func writePlot(path, heading string, ps []panel) error {
	h := 30 + len(ps)*panelH
	img := image.NewRGBA(image.Rect(0, 0, plotW, h))
	fill(img, img.Bounds(), colBackground)
	text(img, titleX, 8, strings.ToUpper(heading), colAxis)
	for i, p := range ps {
		drawPanel(img, image.Rect(0, 30+i*panelH, plotW, 30+(i+1)*panelH), p)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func drawPanel(img *image.RGBA, r image.Rectangle, p panel) {
	area := image.Rect(r.Min.X+marginL, r.Min.Y+marginTop, r.Max.X-marginR, r.Max.Y-marginBot)
	duration := p.v.Duration
	if duration <= 0 && len(p.ts) > 0 {
		duration = p.ts[len(p.ts)-1]
	}
	if duration <= 0 {
		duration = 1
	}
	top := 0.0
	for _, v := range p.vs {
		top = max(top, v/p.unit)
	}
	top = max(top, p.v.Limit/p.unit)
	yStep := niceStep(top*1.15, 5)
	yMax := math.Ceil(top*1.15/yStep) * yStep
	if yMax <= 0 {
		yMax, yStep = 1, 0.2
	}
	x := func(t float64) int { return area.Min.X + int(t/duration*float64(area.Dx()-1)) }
	y := func(v float64) int { return area.Max.Y - 1 - int(v/p.unit/yMax*float64(area.Dy()-1)) }

	// Warm-up, grid, axes.
	fill(img, image.Rect(area.Min.X, area.Min.Y, x(p.v.Warmup), area.Max.Y), colWarmup)
	for v := 0.0; v <= yMax+yStep/2; v += yStep {
		yy := area.Max.Y - 1 - int(v/yMax*float64(area.Dy()-1))
		hline(img, area.Min.X, area.Max.X, yy, colGrid, false)
		label := trimFloat(v)
		text(img, area.Min.X-8-textWidth(label), yy-glyphH*fontScale/2, label, colAxis)
	}
	minutes := duration >= 300
	span := duration
	if minutes {
		span = duration / 60
	}
	xStep := niceStep(span, 8)
	for v := 0.0; v <= span+xStep/2; v += xStep {
		t := v
		if minutes {
			t = v * 60
		}
		if t > duration {
			break
		}
		xx := x(t)
		vline(img, xx, area.Min.Y, area.Max.Y, colGrid)
		label := trimFloat(v)
		text(img, xx-textWidth(label)/2, area.Max.Y+6, label, colAxis)
	}
	unit := "SECONDS"
	if minutes {
		unit = "MINUTES"
	}
	text(img, area.Max.X-textWidth(unit), area.Max.Y+6+glyphH*fontScale+4, unit, colAxis)
	hline(img, area.Min.X, area.Max.X, area.Max.Y-1, colAxis, false)
	vline(img, area.Min.X, area.Min.Y, area.Max.Y, colAxis)

	// The medians the criterion compares, and the limit.
	if p.v.Samples > 0 {
		third := (duration - p.v.Warmup) / 3
		hline(img, x(p.v.Warmup), x(p.v.Warmup+third), y(p.v.First), colFirst, false)
		hline(img, x(duration-third), area.Max.X-1, y(p.v.Last), colLast, false)
		hline(img, x(p.v.Warmup), area.Max.X-1, y(p.v.Limit), colLimit, true)
	}
	for i := 1; i < len(p.ts); i++ {
		line(img, x(p.ts[i-1]), y(p.vs[i-1]), x(p.ts[i]), y(p.vs[i]), colSeries)
	}

	for i, l := range panelTitle(p) {
		text(img, titleX, r.Min.Y+6+i*(glyphH*fontScale+3), l, colAxis)
	}
}

// titleX is where the heading and the panels' titles start.
const titleX = 10

// panelTitle is the panel's title and verdict on one line, or on two when
// one would run past the image's right edge (a long "NOT FLAT" reason).
func panelTitle(p panel) []string {
	verdict := "FLAT"
	if !p.v.OK {
		verdict = "NOT FLAT: " + p.v.Why
	}
	head := fmt.Sprintf("%s: MEDIANS %s (FIRST THIRD), %s (LAST THIRD), LIMIT %s", p.title,
		trimFloat(p.v.First/p.unit), trimFloat(p.v.Last/p.unit), trimFloat(p.v.Limit/p.unit))
	one := strings.ToUpper(head + ": " + verdict)
	if titleX+textWidth(one) <= plotW {
		return []string{one}
	}
	second := strings.ToUpper(verdict)
	if room := (plotW - titleX) / textWidth("M"); len(second) > room {
		second = second[:room-3] + "..."
	}
	return []string{strings.ToUpper(head), second}
}

// niceStep is a step of 1, 2 or 5 times a power of ten giving about n
// intervals over span.
func niceStep(span float64, n int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	if v == math.Trunc(v) || math.Abs(v) >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.1f", v), "0"), ".")
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA, dashed bool) {
	for x := x0; x < x1; x++ {
		if dashed && (x/6)%2 == 1 {
			continue
		}
		img.SetRGBA(x, y, c)
		if c != colGrid {
			img.SetRGBA(x, y+1, c)
		}
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y < y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

// line draws a two-pixel-thick segment (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	err := dx + dy
	for {
		img.SetRGBA(x0, y0, c)
		img.SetRGBA(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * err
		if e2 >= dy {
			err += dy
			x0 += sx
		}
		if e2 <= dx {
			err += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func textWidth(s string) int { return len(s) * (glyphW + glyphSpace) * fontScale }

// text draws s with its top-left corner at x, y; characters without a
// glyph are drawn as blanks.
func text(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for _, r := range s {
		if g, ok := glyphs[r]; ok {
			for row, bits := range g {
				for col := 0; col < glyphW; col++ {
					if bits[col] != '#' {
						continue
					}
					fill(img, image.Rect(x+col*fontScale, y+row*fontScale, x+(col+1)*fontScale, y+(row+1)*fontScale), c)
				}
			}
		}
		x += (glyphW + glyphSpace) * fontScale
	}
}

// glyphs is a 5×7 pixel font of the characters the labels use.
var glyphs = map[rune][glyphH]string{
	'0': {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."},
	'1': {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'2': {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"},
	'3': {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."},
	'4': {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."},
	'5': {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."},
	'6': {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."},
	'7': {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
	'8': {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."},
	'9': {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."},
	'A': {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'B': {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."},
	'C': {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."},
	'D': {"####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."},
	'E': {"#####", "#....", "#....", "####.", "#....", "#....", "#####"},
	'F': {"#####", "#....", "#....", "####.", "#....", "#....", "#...."},
	'G': {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"},
	'H': {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'I': {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'J': {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."},
	'K': {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"},
	'L': {"#....", "#....", "#....", "#....", "#....", "#....", "#####"},
	'M': {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"},
	'N': {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"},
	'O': {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'P': {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."},
	'Q': {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"},
	'R': {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"},
	'S': {".####", "#....", "#....", ".###.", "....#", "....#", "####."},
	'T': {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."},
	'U': {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'V': {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."},
	'W': {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."},
	'X': {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"},
	'Y': {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."},
	'Z': {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"},
	'.': {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."},
	':': {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."},
	'-': {".....", ".....", ".....", "#####", ".....", ".....", "....."},
	'%': {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"},
	'/': {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."},
	'(': {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."},
	')': {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."},
	',': {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."},
	'=': {".....", ".....", "#####", ".....", "#####", ".....", "....."},
	'+': {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."},
	'<': {"...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."},
	'>': {".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."},
	' ': {".....", ".....", ".....", ".....", ".....", ".....", "....."},
}
