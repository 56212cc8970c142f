// Command fanout measures gatewayd's Observe fan-out and its pub-sub broker
// from a process of its own, so that the daemon's memory and CPU are read
// apart from those of the test clients (from /proc/<pid> of the daemon).
//
//	fanout origin  -listen 127.0.0.1:5899
//	fanout observe -gw 127.0.0.1:5897 -origin 127.0.0.1:5899 -pid PID -n 10000
//	fanout pubsub  -gw 127.0.0.1:5897 -pid PID -subs 1000 -pubs 4 -d 10s
//
// origin serves /obs, an observable resource that sends a notification
// (NON, payload "seq unix-nanoseconds") each time /push is POSTed to.
//
// observe opens n observations of coap://origin/obs through the proxy gw,
// spread over -sockets client sockets on 127.0.1.x, reads the daemon's
// VmRSS before and after, then triggers -rounds notifications and times
// each from the origin's send to its arrival at every observer.
//
// pubsub creates a topic on the broker at gw, subscribes -subs observers
// to its topic data, runs -pubs closed-loop publishers for -d and counts
// publications acknowledged and notifications delivered.
//
// Each command prints one JSON object on stdout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fanout origin|observe|pubsub [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "origin":
		err = origin(ctx, os.Args[2:])
	case "observe":
		err = observeBench(ctx, os.Args[2:])
	case "pubsub":
		err = pubsubBench(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "fanout:", err)
		os.Exit(1)
	}
}

// stamp is the payload of a notification or publication: a sequence
// number and the sender's wall clock, which the receiver on the same
// machine subtracts from its own.
func stamp(seq uint64) []byte {
	return fmt.Appendf(nil, "%d %d", seq, time.Now().UnixNano())
}

func parseStamp(b []byte) (seq uint64, sent time.Time, ok bool) {
	s, t, found := strings.Cut(string(b), " ")
	if !found {
		return 0, time.Time{}, false
	}
	seq, err1 := strconv.ParseUint(s, 10, 64)
	ns, err2 := strconv.ParseInt(t, 10, 64)
	return seq, time.Unix(0, ns), err1 == nil && err2 == nil
}

func pathOptions(path string) coap.Options {
	var o coap.Options
	for _, seg := range strings.Split(strings.Trim(path, "/"), "/") {
		o = o.Insert(coap.URIPath, []byte(seg))
	}
	return o
}

// origin is the upstream server of the observe benchmark.
func origin(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("origin", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:5899", "UDP address")
	fs.Parse(args)
	t, err := coap.ListenUDP(ctx, *listen)
	if err != nil {
		return err
	}
	var (
		mu        sync.Mutex
		observers []coap.NotifyWriter // guarded by mu
		seq       uint64              // guarded by mu: the last notification's number
	)
	rep := func(seq uint64) *coap.Message {
		m := &coap.Message{Code: coap.Content, Payload: stamp(seq)}
		m.Options = m.Options.SetUint(coap.Observe, uint32(seq)&0xffffff).
			SetUint(coap.ContentFormat, 0).SetUint(coap.MaxAge, 3600)
		return m
	}
	h := coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		var path string
		for v := range r.Msg.Options.All(coap.URIPath) {
			path += "/" + string(v)
		}
		switch {
		case path == "/obs" && r.Msg.Code == coap.GET:
			mu.Lock()
			defer mu.Unlock()
			resp := rep(seq)
			nw, ok := w.(coap.NotifyWriter)
			if obs, has := r.Msg.Options.Uint(coap.Observe); !has || obs != 0 || !ok {
				resp.Options = resp.Options.Remove(coap.Observe)
			} else {
				observers = append(observers, nw)
			}
			return w.WriteResponse(resp)
		case path == "/push" && r.Msg.Code == coap.POST:
			mu.Lock()
			seq++
			n := seq
			obs := slices.Clone(observers)
			mu.Unlock()
			for _, o := range obs {
				o.Notify(rep(n), false, nil)
			}
			return w.WriteResponse(&coap.Message{Code: coap.Changed, Payload: strconv.AppendUint(nil, n, 10)})
		}
		return coap.Errorf(coap.NotFound, "")
	})
	ep := coap.NewEndpoint(t, coap.EndpointConfig{Handler: h})
	<-ctx.Done()
	return ep.Close()
}

// proc is what /proc says about the daemon.
type proc struct {
	RSSKiB  int64   `json:"rss_kib"`
	CPUSecs float64 `json:"cpu_s"` // user + system since it started
}

func readProc(pid int) (proc, error) {
	var p proc
	if pid <= 0 {
		return p, nil
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, err
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			p.RSSKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, err
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(f) < 13 {
		return p, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	p.CPUSecs = (ut + st) / 100 // USER_HZ is 100 on Linux
	return p, nil
}

func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// clients opens n CoAP endpoints, each on its own socket bound to
// 127.0.1.(i+1), so that they are n peers with n client addresses.
func clients(ctx context.Context, n int) ([]*coap.Endpoint, error) {
	if n < 1 || n > 254 {
		return nil, fmt.Errorf("sockets %d: want 1 to 254", n)
	}
	eps := make([]*coap.Endpoint, 0, n)
	for i := range n {
		t, err := coap.ListenUDP(ctx, fmt.Sprintf("127.0.1.%d:0", i+1))
		if err != nil {
			closeAll(eps)
			return nil, err
		}
		eps = append(eps, coap.NewEndpoint(t, coap.EndpointConfig{}))
	}
	return eps, nil
}

func closeAll(eps []*coap.Endpoint) {
	for _, e := range eps {
		e.Close()
	}
}

// register opens n observations of req at to, spread over eps, at most
// par at a time.
func register(ctx context.Context, eps []*coap.Endpoint, to netip.AddrPort, req func() *coap.Message, n, par int, notify func(i int) func(*coap.Message)) error {
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
		first  atomic.Value
	)
	sem := make(chan struct{}, par)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			e := i % len(eps)
			resp, o, err := eps[e].Observe(c, to, req(), notify(e))
			if err == nil && o == nil {
				err = fmt.Errorf("not registered: %v %s", resp.Code, resp.Payload)
			}
			if err != nil {
				failed.Add(1)
				first.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d registrations failed, first: %v", n, first.Load())
	}
	return nil
}

func pct(s []time.Duration, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	return float64(s[int(float64(len(s)-1)*p)].Microseconds()) / 1000
}

type round struct {
	Delivered int     `json:"delivered"`
	LastMs    float64 `json:"last_ms"` // origin's send to the last observer's receipt
	P50Ms     float64 `json:"p50_ms"`  // median over the observers
	CPUms     float64 `json:"gw_cpu_ms"`
}

type observeResult struct {
	Observers      int     `json:"observers"`
	Sockets        int     `json:"sockets"`
	Before         proc    `json:"gw_before"`
	Registered     proc    `json:"gw_registered"`
	After          proc    `json:"gw_after"`
	BytesPerObs    float64 `json:"gw_rss_bytes_per_observer"`
	RegisterSecs   float64 `json:"register_s"`
	RegisterCPU    float64 `json:"gw_register_cpu_s"`
	Rounds         []round `json:"rounds"`
	LastP50Ms      float64 `json:"last_p50_ms"` // median over rounds of the time to the last observer
	LastMaxMs      float64 `json:"last_max_ms"`
	CPUPerRoundMs  float64 `json:"gw_cpu_ms_per_notification"`
	ClientCPUSecs  float64 `json:"client_cpu_s"`
	ClientMaxRSSMB float64 `json:"client_rss_mib"`
}

func observeBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("observe", flag.ExitOnError)
	gw := fs.String("gw", "127.0.0.1:5897", "gatewayd's UDP address")
	originAddr := fs.String("origin", "127.0.0.1:5899", "the origin's UDP address")
	pid := fs.Int("pid", 0, "gatewayd's process ID, for VmRSS and CPU time")
	n := fs.Int("n", 10000, "observers")
	nsock := fs.Int("sockets", 100, "client sockets (each on its own 127.0.1.x address)")
	par := fs.Int("par", 128, "registrations in flight")
	rounds := fs.Int("rounds", 10, "notifications to time")
	gap := fs.Duration("gap", 500*time.Millisecond, "pause after each round")
	wait := fs.Duration("timeout", 10*time.Second, "longest wait for one round")
	settle := fs.Duration("settle", 2*time.Second, "pause before each RSS reading")
	fs.Parse(args)

	proxy, err := netip.ParseAddrPort(*gw)
	if err != nil {
		return err
	}
	orig, err := netip.ParseAddrPort(*originAddr)
	if err != nil {
		return err
	}
	eps, err := clients(ctx, *nsock)
	if err != nil {
		return err
	}
	defer closeAll(eps)
	trig := eps[0]

	// Each round's receipts, written by the sockets' reader goroutines.
	var (
		mu      sync.Mutex
		want    uint64          // guarded by mu: the round's sequence number
		lats    []time.Duration // guarded by mu
		allDone = make(chan struct{}, 1)
	)
	notify := func(int) func(*coap.Message) {
		return func(m *coap.Message) {
			now := time.Now()
			seq, sent, ok := parseStamp(m.Payload)
			if !ok {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seq != want {
				return
			}
			lats = append(lats, now.Sub(sent))
			if len(lats) == *n {
				allDone <- struct{}{}
			}
		}
	}
	target := "coap://" + orig.String() + "/obs"
	req := func() *coap.Message {
		m := &coap.Message{Code: coap.GET}
		m.Options = m.Options.Insert(coap.ProxyURI, []byte(target))
		return m
	}
	res := observeResult{Observers: *n, Sockets: *nsock}

	// The first observer makes the hub register upstream; the baseline is
	// read with it in place, so only the per-observer state is counted.
	if err := register(ctx, eps[:1], proxy, req, 1, 1, notify); err != nil {
		return err
	}
	time.Sleep(*settle)
	if res.Before, err = readProc(*pid); err != nil {
		return err
	}
	t0 := time.Now()
	if err := register(ctx, eps, proxy, req, *n-1, *par, notify); err != nil {
		return err
	}
	res.RegisterSecs = time.Since(t0).Seconds()
	time.Sleep(*settle)
	if res.Registered, err = readProc(*pid); err != nil {
		return err
	}
	res.RegisterCPU = res.Registered.CPUSecs - res.Before.CPUSecs
	res.BytesPerObs = float64(res.Registered.RSSKiB-res.Before.RSSKiB) * 1024 / float64(*n-1)

	// The origin numbers its notifications; the next one is the current
	// representation's number plus one.
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	cur, err := trig.Do(c, orig, &coap.Message{Code: coap.GET, Options: pathOptions("obs")})
	cancel()
	if err != nil {
		return fmt.Errorf("origin: %w", err)
	}
	next, _, ok := parseStamp(cur.Payload)
	if !ok {
		return fmt.Errorf("origin: payload %q", cur.Payload)
	}
	next++
	var worst []time.Duration
	for r := range *rounds {
		mu.Lock()
		lats = lats[:0]
		mu.Unlock()
		mu.Lock()
		want = next
		mu.Unlock()
		cpu0, _ := readProc(*pid)
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := trig.Do(c, orig, &coap.Message{Code: coap.POST, Options: pathOptions("push")})
		cancel()
		if err != nil || resp.Code != coap.Changed || string(resp.Payload) != strconv.FormatUint(next, 10) {
			return fmt.Errorf("round %d: push %d: %v %v", r, next, resp, err)
		}
		next++
		select {
		case <-allDone:
		case <-time.After(*wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		time.Sleep(*gap)
		cpu1, _ := readProc(*pid)
		mu.Lock()
		s := slices.Clone(lats)
		mu.Unlock()
		slices.Sort(s)
		rd := round{Delivered: len(s), P50Ms: pct(s, 0.5), CPUms: 1000 * (cpu1.CPUSecs - cpu0.CPUSecs)}
		if len(s) > 0 {
			rd.LastMs = float64(s[len(s)-1].Microseconds()) / 1000
		}
		if len(s) == *n {
			worst = append(worst, s[len(s)-1])
		}
		res.Rounds = append(res.Rounds, rd)
		res.CPUPerRoundMs += rd.CPUms / float64(*rounds)
	}
	slices.Sort(worst)
	res.LastP50Ms, res.LastMaxMs = pct(worst, 0.5), pct(worst, 1)
	time.Sleep(*settle)
	if res.After, err = readProc(*pid); err != nil {
		return err
	}
	res.ClientCPUSecs = selfCPU()
	me, _ := readProc(os.Getpid())
	res.ClientMaxRSSMB = float64(me.RSSKiB) / 1024
	return json.NewEncoder(os.Stdout).Encode(res)
}
