package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sample is one reading of the daemon, with the load's counters then.
type sample struct {
	T          float64 // seconds since the load started
	RSSKiB     float64 // VmRSS from /proc/<pid>/status
	Goroutines float64 // go_goroutines from /metrics
	FDs        float64 // entries of /proc/<pid>/fd
	Requests   int64   // operations done so far, all kinds
	Failed     int64
	Observers  int64 // observations open at the proxy's clients
}

func readRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		}
	}
	return 0, fmt.Errorf("soak: no VmRSS in /proc/%d/status", pid)
}

func countFDs(pid int) (float64, error) {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return float64(len(es)), err
}

// goroutines reads go_goroutines from the daemon's Prometheus endpoint.
func goroutines(ctx context.Context, hc *http.Client, admin string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return metric(resp.Body, "go_goroutines")
}

// metric finds an unlabelled sample in the Prometheus text format.
func metric(r io.Reader, name string) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("soak: no %s in /metrics", name)
}

func writeCSV(path string, ss []sample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write(strings.Split(csvHeader, ","))
	for _, s := range ss {
		w.Write([]string{strconv.FormatFloat(s.T, 'f', 1, 64), strconv.FormatFloat(s.RSSKiB, 'f', 0, 64),
			strconv.FormatFloat(s.Goroutines, 'f', 0, 64), strconv.FormatFloat(s.FDs, 'f', 0, 64),
			strconv.FormatInt(s.Requests, 10), strconv.FormatInt(s.Failed, 10), strconv.FormatInt(s.Observers, 10)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readCSV reads what writeCSV wrote.
func readCSV(path string) ([]sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("soak: %s: %w", path, err)
	}
	if len(rows) == 0 || strings.Join(rows[0], ",") != csvHeader {
		return nil, fmt.Errorf("soak: %s: not a samples file (want the header %s)", path, csvHeader)
	}
	ss := make([]sample, 0, len(rows)-1)
	for i, r := range rows[1:] {
		var s sample
		var errs [7]error
		s.T, errs[0] = strconv.ParseFloat(r[0], 64)
		s.RSSKiB, errs[1] = strconv.ParseFloat(r[1], 64)
		s.Goroutines, errs[2] = strconv.ParseFloat(r[2], 64)
		s.FDs, errs[3] = strconv.ParseFloat(r[3], 64)
		s.Requests, errs[4] = strconv.ParseInt(r[4], 10, 64)
		s.Failed, errs[5] = strconv.ParseInt(r[5], 10, 64)
		s.Observers, errs[6] = strconv.ParseInt(r[6], 10, 64)
		if err := errors.Join(errs[:]...); err != nil {
			return nil, fmt.Errorf("soak: %s line %d: %w", path, i+2, err)
		}
		ss = append(ss, s)
	}
	return ss, nil
}

const csvHeader = "t_s,rss_kib,goroutines,fds,requests,failed,observers"

// allowance is how far a series may rise after the warm-up: Rel of the
// second quarter's median plus Abs.
type allowance struct {
	Rel, Abs float64
}

// The allowances of the three series. RSS: the Go heap settles in steps
// as the collector resizes it, so 15 % plus 4 MiB. Goroutines: observers
// come and go at random, so 10 % plus 10. Open files: nothing in the load
// opens files or sockets in the daemon (one UDP socket serves every
// client), so 4 (the admin endpoint's keep-alive connections).
var (
	allowRSS        = allowance{Rel: 0.15, Abs: 4096}
	allowGoroutines = allowance{Rel: 0.10, Abs: 10}
	allowFDs        = allowance{Rel: 0, Abs: 4}
)

// verdict is the flatness judgement of one series.
type verdict struct {
	Name     string
	First    float64 // median of the first third of the judged window
	Last     float64 // median of its last third
	Max      float64 // the largest sample in the window
	Limit    float64 // First plus the allowance
	Rise     float64 // the least-squares trend over the window, times its length
	Allowed  float64 // the allowance itself
	Samples  int
	OK       bool
	Why      string
	Warmup   float64 // seconds left out at the start
	Duration float64
}

// judge applies the flatness criterion to a series sampled at ts over a
// run of duration seconds. The judged window is what follows the warm-up;
// with the default warm-up (a quarter of the run) its first third is the
// run's second quarter and its last third the last quarter. The series is
// flat when (1) the median of the window's last third is at most the
// median of its first third plus the allowance, and (2) the least-squares
// line through every sample of the window rises by at most the allowance
// across it: a slow leak fails (2) even when noise hides it from (1), and
// a late jump fails (1) even when the trend is mild.
func judge(name string, ts, vs []float64, warmup, duration float64, a allowance) verdict {
	v := verdict{Name: name, Duration: duration, Warmup: warmup}
	third := (duration - warmup) / 3
	var first, last, xs, ys []float64
	for i, t := range ts {
		if t < warmup {
			continue
		}
		switch {
		case t < warmup+third:
			first = append(first, vs[i])
		case t >= duration-third:
			last = append(last, vs[i])
		}
		xs, ys = append(xs, t), append(ys, vs[i])
		v.Max = max(v.Max, vs[i])
	}
	v.Samples = len(xs)
	if third <= 0 || len(first) < 3 || len(last) < 3 {
		v.Why = fmt.Sprintf("too few samples after the warm-up (%d in the window's first third, %d in its last)", len(first), len(last))
		return v
	}
	v.First, v.Last = median(first), median(last)
	v.Allowed = v.First*a.Rel + a.Abs
	v.Limit = v.First + v.Allowed
	v.Rise = slope(xs, ys) * (xs[len(xs)-1] - xs[0])
	switch {
	case v.Last > v.Limit:
		v.Why = fmt.Sprintf("median of the last third %.0f over %.0f (first third's %.0f + %.0f)", v.Last, v.Limit, v.First, v.Allowed)
	case v.Rise > v.Allowed:
		v.Why = fmt.Sprintf("rises by %.0f across the judged window, over the allowance %.0f", v.Rise, v.Allowed)
	default:
		v.OK = true
		v.Why = "flat"
	}
	return v
}

func median(s []float64) float64 {
	c := slices.Clone(s)
	slices.Sort(c)
	n := len(c)
	if n%2 == 1 {
		return c[n/2]
	}
	return (c[n/2-1] + c[n/2]) / 2
}

// slope is the least-squares slope of ys over xs.
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 || math.IsNaN(d) {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// sampler reads the daemon every interval until ctx is done.
type sampler struct {
	pid      func() int
	admin    func() string
	load     *load
	interval time.Duration
	start    time.Time
	hc       *http.Client
	samples  []sample
	errs     int
}

func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.take(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sampler) take(ctx context.Context) {
	pid := s.pid()
	rss, err1 := readRSS(pid)
	fds, err2 := countFDs(pid)
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	g, err3 := goroutines(c, s.hc, s.admin())
	cancel()
	if err1 != nil || err2 != nil || err3 != nil {
		if ctx.Err() == nil {
			s.errs++
		}
		return
	}
	l := s.load
	var ok, failed int64
	for _, c := range []*counter{&l.fwd, &l.cached, &l.radio, &l.register, &l.publish, &l.topicChurn, &l.reload} {
		ok += c.ok.Load()
		failed += c.fail.Load()
	}
	s.samples = append(s.samples, sample{T: time.Since(s.start).Seconds(), RSSKiB: rss, Goroutines: g, FDs: fds,
		Requests: ok + failed, Failed: failed, Observers: l.live.Load()})
}
