package main

import (
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// series samples f every second for duration seconds, with noise of
// ±noise (deterministic).
func series(duration int, noise float64, f func(t float64) float64) (ts, vs []float64) {
	r := rand.New(rand.NewPCG(1, 2))
	for t := 0; t <= duration; t++ {
		ts = append(ts, float64(t))
		vs = append(vs, f(float64(t))+noise*(2*r.Float64()-1))
	}
	return ts, vs
}

func TestJudge(t *testing.T) {
	a := allowance{Rel: 0.10, Abs: 0}
	for _, tc := range []struct {
		name string
		f    func(t float64) float64
		ok   bool
		why  string
	}{
		{"warm-up ramp then flat", func(t float64) float64 { return 100 + 100*min(1, t/100) }, true, "flat"},
		// 200 → 225 across the window: the medians of its thirds are
		// about 17 apart, within the allowance of 20; the trend is not.
		{"slow leak", func(t float64) float64 { return 200 + 25*max(0, t-100)/300 }, false, "rises by"},
		{"late jump", func(t float64) float64 {
			if t > 290 {
				return 260
			}
			return 200
		}, false, "median of the last third"},
		{"falling", func(t float64) float64 { return 300 - t/4 }, true, "flat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, vs := series(400, 3, tc.f)
			v := judge("x", ts, vs, 100, 400, a)
			if v.OK != tc.ok || !strings.HasPrefix(v.Why, tc.why) {
				t.Fatalf("verdict %+v, want ok=%v %q", v, tc.ok, tc.why)
			}
		})
	}
}

// A leak the noise hides from the medians is still caught by the trend,
// and noise alone is not a leak.
func TestJudgeTrendAndNoise(t *testing.T) {
	a := allowance{Rel: 0, Abs: 10}
	ts, vs := series(400, 30, func(t float64) float64 { return 100 + 14*max(0, t-100)/300 })
	if v := judge("leak", ts, vs, 100, 400, a); v.OK || v.Rise <= v.Allowed {
		t.Fatalf("a rise of 14 in noise of ±30 passed: %+v", v)
	}
	ts, vs = series(400, 30, func(float64) float64 { return 100 })
	if v := judge("noise", ts, vs, 100, 400, a); !v.OK {
		t.Fatalf("flat noise failed: %+v", v)
	}
}

func TestJudgeWantsSamplesInBothThirds(t *testing.T) {
	ts, vs := series(10, 0, func(float64) float64 { return 1 })
	if v := judge("short", ts, vs, 100, 400, allowance{Abs: 1}); v.OK || !strings.Contains(v.Why, "too few samples") {
		t.Fatalf("verdict %+v", v)
	}
}

func TestMetricFindsUnlabelledSample(t *testing.T) {
	text := "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines_extra 1\ngo_goroutines 42\n"
	if v, err := metric(strings.NewReader(text), "go_goroutines"); err != nil || v != 42 {
		t.Fatalf("got %v, %v", v, err)
	}
	if _, err := metric(strings.NewReader("go_threads 3\n"), "go_goroutines"); err == nil {
		t.Fatal("a missing metric read as a value")
	}
}

// The plot is a PNG with one panel per series, the series drawn in its
// colour and the limit in its own.
func TestPlotDrawsEverySeries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.png")
	ts, vs := series(120, 2, func(t float64) float64 { return 50 + 10*math.Sin(t/10) })
	v := judge("x", ts, vs, 30, 120, allowance{Rel: 0.1, Abs: 1})
	if err := writePlot(path, "test plot", []panel{{title: "A", unit: 1, ts: ts, vs: vs, v: v}, {title: "B", unit: 1, ts: ts, vs: vs, v: v}}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != plotW || b.Dy() != 30+2*panelH {
		t.Fatalf("size %v", b)
	}
	count := func(r image.Rectangle, c [4]uint32) int {
		n := 0
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				cr, cg, cb, ca := img.At(x, y).RGBA()
				if [4]uint32{cr >> 8, cg >> 8, cb >> 8, ca >> 8} == c {
					n++
				}
			}
		}
		return n
	}
	rgba := func(c interface{ RGBA() (r, g, b, a uint32) }) [4]uint32 {
		r, g, b, a := c.RGBA()
		return [4]uint32{r >> 8, g >> 8, b >> 8, a >> 8}
	}
	for i := range 2 {
		p := image.Rect(0, 30+i*panelH, plotW, 30+(i+1)*panelH)
		// 120 segments across ~850 pixels, two pixels thick.
		if n := count(p, rgba(colSeries)); n < 1500 {
			t.Errorf("panel %d: %d pixels of the series", i, n)
		}
		if n := count(p, rgba(colLimit)); n < 300 {
			t.Errorf("panel %d: %d pixels of the limit", i, n)
		}
		if n := count(p, rgba(colAxis)); n < 500 {
			t.Errorf("panel %d: %d pixels of axes and text", i, n)
		}
	}
}

// Every title line fits in the image: the verdict moves to a line of its
// own when it would not, and a long reason is cut with an ellipsis.
func TestPanelTitlesFit(t *testing.T) {
	ok := verdict{OK: true, Why: "flat", First: 47258, Last: 48854, Limit: 58443}
	bad := ok
	bad.OK, bad.Why = false, "median of the last third 123456789 over 58443 (first third's 47258 + 11185), and then some more words"
	for _, tc := range []struct {
		v     verdict
		lines int
	}{{ok, 1}, {bad, 2}} {
		ls := panelTitle(panel{title: "RSS MIB", unit: 1024, v: tc.v})
		if len(ls) != tc.lines {
			t.Errorf("%q: %d lines, want %d", ls, len(ls), tc.lines)
		}
		for _, l := range ls {
			if w := titleX + textWidth(l); w > plotW {
				t.Errorf("%q is %d pixels wide, the image %d", l, w, plotW)
			}
		}
		if !strings.Contains(strings.Join(ls, " "), "MEDIANS 46.2 (FIRST THIRD), 47.7 (LAST THIRD), LIMIT 57.1") {
			t.Errorf("%q lacks the medians and the limit", ls)
		}
	}
}

// -replot reads back what a run wrote.
func TestSamplesCSVRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "samples.csv")
	want := []sample{{T: 0, RSSKiB: 19344, Goroutines: 53, FDs: 27, Requests: 9}, {T: 5.1, RSSKiB: 25088, Goroutines: 73, FDs: 28, Requests: 1200, Failed: 2, Observers: 30}}
	if err := writeCSV(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := readCSV(path)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("read %+v, %v; wrote %+v", got, err, want)
	}
	os.WriteFile(path, []byte("a,b\n1,2\n"), 0o644)
	if _, err := readCSV(path); err == nil || !strings.Contains(err.Error(), "not a samples file") {
		t.Fatalf("a foreign CSV read as samples: %v", err)
	}
}
