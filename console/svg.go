package console

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Plot is one small line chart, drawn as inline SVG by the page's
// template: only numbers the server computed reach its coordinates, and
// its labels go through html/template like any text.
type Plot struct {
	Title  string
	W, H   int
	Points string // the polyline's "x,y x,y …"; "" when there is nothing to draw
	Dots   int    // how many points
	// LastX, LastY place a dot on the newest point, so that an hour's
	// plot of a gateway up for a minute still shows where it is.
	LastX, LastY string
	Lo, Hi       string // the y axis's ends, labelled
	Last         string // the newest value, labelled
}

// Plot sizes, in SVG user units.
const (
	plotW, plotH         = 240, 48
	sparkW, sparkH       = 120, 24
	plotPadX, plotPadTop = 1, 2
)

// plotOf draws pts over [end-window, end]. With lo < hi the y axis is
// fixed to that range (RSSI, LQI); otherwise it runs from 0 to the
// largest value, so that a flat rate is a line at the bottom, not in the
// middle.
func plotOf(title, unit string, pts []Point, end time.Time, window time.Duration, lo, hi float64, w, h int) Plot {
	p := Plot{Title: title, W: w, H: h}
	if !(lo < hi) {
		lo, hi = 0, 0
		for _, pt := range pts {
			hi = max(hi, pt.Value)
		}
		if hi == 0 {
			hi = 1
		}
		hi = niceCeil(hi)
	}
	p.Lo, p.Hi = num(lo)+unit, num(hi)+unit
	if len(pts) > 0 {
		p.Last = num(pts[len(pts)-1].Value) + unit
	}
	start := end.Add(-window)
	var b strings.Builder
	for _, pt := range pts {
		if pt.Time.Before(start) || pt.Time.After(end) || math.IsNaN(pt.Value) || math.IsInf(pt.Value, 0) {
			continue
		}
		x := plotPadX + float64(w-2*plotPadX)*pt.Time.Sub(start).Seconds()/window.Seconds()
		v := min(max(pt.Value, lo), hi)
		y := plotPadTop + float64(h-plotPadTop-1)*(1-(v-lo)/(hi-lo))
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		p.LastX, p.LastY = strconv.FormatFloat(x, 'f', 1, 64), strconv.FormatFloat(y, 'f', 1, 64)
		b.WriteString(p.LastX)
		b.WriteByte(',')
		b.WriteString(p.LastY)
		p.Dots++
	}
	p.Points = b.String()
	return p
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

func num(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e9 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
