// Command soak runs the real gatewayd binary, with the simulated radio and
// the pub-sub broker, under mixed load for a while, and checks that its
// resident memory, goroutines and open files stay flat.
//
//	go run ./bench/soak -duration 30m -out soak-results -png docs/soak.png
//
// The load, all at once for -duration: forwarded GETs to an origin (by
// Proxy-Uri and by reverse route, Max-Age 0 so every one is forwarded),
// cache hits (16 resources with Max-Age 5), GETs and PUTs to a simulated
// node over the simulated radio, 30 observers churning on observable
// resources of the origin and on topic data (each lives 2-8 s, then
// cancels, forgets and answers the next notification with RST, or is
// killed: its socket closed), one publisher per topic, a topic created,
// published to and deleted every 2 s, and a SIGHUP reload every -reload
// (each adds or removes a route, and the log must say it reloaded).
//
// Every -interval it samples VmRSS (/proc/<pid>/status), open files
// (/proc/<pid>/fd) and go_goroutines (the daemon's /metrics). The criterion
// is judge's (sample.go): after a warm-up (-warmup, by default the first
// quarter), the median of the rest's last third stays within an allowance
// of its first third's (with the default warm-up: the last quarter's
// against the second quarter's), and the least-squares trend over the
// rest rises by less than the allowance.
//
// Then the publishers stop; every topic's data must be its last
// acknowledged publication, also after gatewayd is stopped and started
// again on its state directory.
//
// It writes samples.csv, summary.md, gatewayd.log and soak.png (or -png)
// into -out, prints the summary, and exits 1 if a series is not flat, an
// operation failed more often than -max-fail, or an acknowledged
// publication was lost.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

type options struct {
	duration, interval, reload time.Duration
	warmup                     time.Duration
	out, png, gatewayd         string
	stateTmp                   string
	rate, maxFail              float64
	topics                     int
	note                       string
	replot                     string
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 30*time.Minute, "how long the load runs")
	flag.DurationVar(&o.warmup, "warmup", 0, "the start left out of the criterion; 0: a quarter of -duration")
	flag.DurationVar(&o.interval, "interval", 0, "sampling interval; 0: duration/360, at least 1 s")
	flag.DurationVar(&o.reload, "reload", 0, "SIGHUP interval; 0: duration/60, between 2 s and 30 s")
	flag.StringVar(&o.out, "out", "soak-results", "`directory` for samples.csv, summary.md, gatewayd.log and the plot")
	flag.StringVar(&o.png, "png", "", "the plot's `file`; default soak.png in -out")
	flag.StringVar(&o.gatewayd, "gatewayd", "", "the gatewayd binary; default: built from this module")
	flag.StringVar(&o.stateTmp, "state-tmp", "/var/tmp", "where the broker's state directory is made (a disk, for real fsyncs)")
	flag.Float64Var(&o.rate, "rate", 1, "multiplies the pace of every load worker")
	flag.Float64Var(&o.maxFail, "max-fail", 0.01, "largest fraction of failed operations of any kind")
	flag.IntVar(&o.topics, "topics", 3, "pub-sub topics, one publisher each")
	flag.StringVar(&o.note, "note", "", "a line for the summary, such as what else ran on the machine")
	flag.StringVar(&o.replot, "replot", "", "draw -png again from a run's samples.csv `file` (with that run's -duration and -warmup), run nothing")
	flag.Parse()
	if o.replot != "" {
		if err := replot(o); err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (err error) {
	if o.interval <= 0 {
		o.interval = max(time.Second, o.duration/360)
	}
	if o.reload <= 0 {
		o.reload = min(max(2*time.Second, o.duration/60), 30*time.Second)
	}
	if o.warmup <= 0 {
		o.warmup = o.duration / 4
	}
	if o.rate <= 0 {
		return errors.New("-rate must be positive")
	}
	if o.warmup >= o.duration {
		return errors.New("-warmup must be shorter than -duration")
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if o.png == "" {
		o.png = filepath.Join(o.out, "soak.png")
	}
	scratch, err := os.MkdirTemp("", "gatewayd-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	bin := o.gatewayd
	if bin == "" {
		if bin, err = buildGatewayd(ctx, scratch); err != nil {
			return err
		}
	}
	stateDir, err := os.MkdirTemp(o.stateTmp, "gatewayd-soak-state-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stateDir)

	org, err := startOrigin(ctx)
	if err != nil {
		return err
	}
	defer org.close()
	cfgPath := filepath.Join(scratch, "gatewayd.toml")
	if err := writeConfig(cfgPath, org.addr, stateDir, false); err != nil {
		return err
	}
	logPath := filepath.Join(o.out, "gatewayd.log")
	os.Remove(logPath)
	d, err := startDaemon(bin, cfgPath, logPath)
	if err != nil {
		return err
	}
	defer func() {
		if d != nil {
			if serr := d.stop(); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	gw, admin, err := d.addrs(ctx)
	if err != nil {
		return err
	}
	l := &load{origin: org, rate: o.rate}
	l.gw.Store(&gw)

	var eps []*coap.Endpoint
	for i := range 4 {
		ep, err := newClient(ctx, fmt.Sprintf("127.0.0.%d:0", i+2))
		if err != nil {
			return err
		}
		defer ep.Close()
		eps = append(eps, ep)
	}
	// The radio comes up asynchronously: wait for the first answer over it.
	if err := waitFor(ctx, 60*time.Second, func() error {
		_, err := l.do(ctx, eps[0], &coap.Message{Type: coap.Confirmable, Code: coap.GET, Options: pathOpts("/node1/sensors/temp")}, coap.Content, "")
		return err
	}); err != nil {
		return fmt.Errorf("the simulated node never answered: %w", err)
	}
	if err := l.setup(ctx, eps[1], o.topics); err != nil {
		return err
	}

	fmt.Printf("soak: gatewayd pid %d on %v (admin %s), origin %v, state %s; %v of load, a sample every %v, a reload every %v\n",
		d.pid(), gw, admin, org.addr, stateDir, o.duration, o.interval, o.reload)
	start := time.Now()
	loadCtx, stopLoad := context.WithTimeout(ctx, o.duration)
	defer stopLoad()
	var wg sync.WaitGroup
	l.run(loadCtx, &wg, eps)
	extra := false
	l.every(loadCtx, &wg, o.reload, func(int) {
		extra = !extra
		err := writeConfig(cfgPath, org.addr, stateDir, extra)
		if err == nil {
			err = d.reload(loadCtx)
		}
		l.reload.done(ctxErr(loadCtx, err))
	})
	hc := &http.Client{Timeout: 5 * time.Second}
	s := &sampler{pid: d.pid, admin: func() string { return admin }, load: l, interval: o.interval, start: start, hc: hc}
	s.run(loadCtx)
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	elapsed := time.Since(start)

	// Nothing acknowledged is lost: a last publication to each topic,
	// read back, then again after a restart on the same state directory.
	var durability []string
	for _, t := range l.topics {
		if err := l.publishTo(ctx, eps[1], t, fmt.Appendf(nil, "%s final", t.name)); err != nil {
			durability = append(durability, err.Error())
		}
	}
	if err := l.checkTopics(ctx, eps[1]); err != nil {
		durability = append(durability, "before the restart: "+err.Error())
	}
	reloads, logErrors, logWarnings := d.counts()
	if err := d.stop(); err != nil {
		durability = append(durability, "stop: "+err.Error())
	}
	d = nil
	if d2, err := startDaemon(bin, cfgPath, logPath); err != nil {
		durability = append(durability, "restart: "+err.Error())
	} else {
		d = d2
		if gw2, _, err := d.addrs(ctx); err != nil {
			durability = append(durability, "restart: "+err.Error())
		} else {
			l.gw.Store(&gw2)
			if err := l.checkTopics(ctx, eps[1]); err != nil {
				durability = append(durability, "after the restart: "+err.Error())
			}
		}
	}

	heading := fmt.Sprintf("gatewayd soak: %s of mixed load, %d samples", trimDuration(elapsed), len(s.samples))
	if err := writeCSV(filepath.Join(o.out, "samples.csv"), s.samples); err != nil {
		return err
	}
	verdicts, err := plotRun(o.png, heading, s.samples, o.duration, o.warmup)
	if err != nil {
		return err
	}

	kinds := []struct {
		name string
		c    *counter
	}{
		{"forwarded GET (origin)", &l.fwd}, {"cache-hit GET (origin)", &l.cached}, {"GET/PUT over the simulated radio", &l.radio},
		{"Observe registration", &l.register}, {"publication", &l.publish}, {"topic create/publish/delete", &l.topicChurn},
		{"SIGHUP reload", &l.reload},
	}
	var problems []string
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Soak %s\n\n", start.UTC().Format(time.RFC3339))
	fmt.Fprintf(&sb, "%s of load (asked: %v), a sample every %v, %d samples (%d failed readings); %d cores, %s, GOMAXPROCS of the load %d.\n",
		trimDuration(elapsed), o.duration, o.interval, len(s.samples), s.errs, runtime.NumCPU(), runtime.Version(), runtime.GOMAXPROCS(0))
	if o.note != "" {
		fmt.Fprintf(&sb, "Beside it: %s.\n", o.note)
	}
	fmt.Fprintf(&sb, "Judged after a warm-up of %v: the median of the window's last third against its first third's plus the allowance, and the least-squares trend across the window.\n", o.warmup)
	fmt.Fprintf(&sb, "\n| series | first-third median | last-third median | max in the window | limit | trend across the window | verdict |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, v := range verdicts {
		fmt.Fprintf(&sb, "| %s | %.0f | %.0f | %.0f | %.0f | %+.0f (allowed %.0f) | %s |\n", v.Name, v.First, v.Last, v.Max, v.Limit, v.Rise, v.Allowed, v.Why)
		if !v.OK {
			problems = append(problems, v.Name+": "+v.Why)
		}
	}
	fmt.Fprintf(&sb, "\n| operation | ok | failed | per second |\n| --- | --- | --- | --- |\n")
	for _, k := range kinds {
		ok, fail := k.c.ok.Load(), k.c.fail.Load()
		fmt.Fprintf(&sb, "| %s | %d | %d | %.1f |\n", k.name, ok, fail, float64(ok)/elapsed.Seconds())
		if ok == 0 || float64(fail) > o.maxFail*float64(ok+fail) {
			problems = append(problems, fmt.Sprintf("%s: %d ok, %d failed (first: %q)", k.name, ok, fail, k.c.failures()))
		}
	}
	fwdOrigin, cachedOrigin := org.fwd.Load(), org.cached.Load()
	fmt.Fprintf(&sb, "\nThe origin served %d forwarded GETs and %d of the %d cache-hit GETs (%.1f %% answered from the cache).\n",
		fwdOrigin, cachedOrigin, l.cached.ok.Load(), 100*(1-float64(cachedOrigin)/float64(max(1, l.cached.ok.Load()))))
	fmt.Fprintf(&sb, "Observations: %d notifications received; ended %d by cancellation, %d by RST after forgetting, %d killed; %d of those living ≥ 2 s got no notification; %d still registered at the origin at the end.\n",
		l.notifications.Load(), l.cancelled.Load(), l.forgotten.Load(), l.killed.Load(), l.silent.Load(), org.observers())
	fmt.Fprintf(&sb, "Log: %d reloads, %d ERROR lines, %d WARN lines.\n", reloads, logErrors, logWarnings)
	if l.notifications.Load() == 0 || l.silent.Load() > (l.cancelled.Load()+l.forgotten.Load()+l.killed.Load())/10 {
		problems = append(problems, fmt.Sprintf("observers went without notifications (%d silent)", l.silent.Load()))
	}
	if len(durability) == 0 {
		fmt.Fprintf(&sb, "Durability: every topic held its last acknowledged publication, before and after a restart.\n")
	} else {
		fmt.Fprintf(&sb, "Durability: %s\n", strings.Join(durability, "; "))
		problems = append(problems, durability...)
	}
	if len(problems) == 0 {
		fmt.Fprintf(&sb, "\nResult: PASS\n")
	} else {
		fmt.Fprintf(&sb, "\nResult: FAIL\n\n- %s\n", strings.Join(problems, "\n- "))
	}
	if err := os.WriteFile(filepath.Join(o.out, "summary.md"), []byte(sb.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(sb.String())
	fmt.Printf("soak: wrote %s, %s\n", filepath.Join(o.out, "samples.csv"), o.png)
	if len(problems) > 0 {
		return fmt.Errorf("%d problems", len(problems))
	}
	return nil
}

// plotRun judges the three series of a run's samples and draws them to
// path.
func plotRun(path, heading string, ss []sample, duration, warmup time.Duration) ([]verdict, error) {
	dur, warm := duration.Seconds(), warmup.Seconds()
	ts := make([]float64, len(ss))
	rss, gor, fds := make([]float64, len(ts)), make([]float64, len(ts)), make([]float64, len(ts))
	for i, x := range ss {
		ts[i], rss[i], gor[i], fds[i] = x.T, x.RSSKiB, x.Goroutines, x.FDs
	}
	verdicts := []verdict{
		judge("RSS (KiB)", ts, rss, warm, dur, allowRSS),
		judge("goroutines", ts, gor, warm, dur, allowGoroutines),
		judge("open fds", ts, fds, warm, dur, allowFDs),
	}
	return verdicts, writePlot(path, heading, []panel{
		{title: "RSS MIB", unit: 1024, ts: ts, vs: rss, v: verdicts[0]},
		{title: "GOROUTINES", unit: 1, ts: ts, vs: gor, v: verdicts[1]},
		{title: "OPEN FDS", unit: 1, ts: ts, vs: fds, v: verdicts[2]},
	})
}

// replot draws the plot of an earlier run again from its samples.csv.
func replot(o options) error {
	if o.png == "" {
		return errors.New("-replot needs -png")
	}
	if o.warmup <= 0 {
		o.warmup = o.duration / 4
	}
	ss, err := readCSV(o.replot)
	if err != nil {
		return err
	}
	heading := fmt.Sprintf("gatewayd soak: %s of mixed load, %d samples", trimDuration(o.duration), len(ss))
	_, err = plotRun(o.png, heading, ss, o.duration, o.warmup)
	return err
}

func waitFor(ctx context.Context, d time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func trimDuration(d time.Duration) string { return d.Round(time.Second).String() }
