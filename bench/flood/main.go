// Command flood measures what a flood leaves behind in gatewayd's memory.
//
//	flood -gatewayd ./gatewayd [-flood 10s] [-settle 60s]
//
// It starts gatewayd (loopback, a 3 s upstream timeout, the admin port with
// pprof), then runs two floods, each followed by a quiet period:
//
//   - malformed: datagrams that are not CoAP, from many source ports and
//     addresses; a share of them look like a CON header, so each earns an
//     RST, and a share are large (up to 60 KiB);
//   - junk: requests that decode but ask for nothing there is (random
//     methods, paths and tokens, CON and NON), from as many ports: the
//     proxy answers them itself, 4.04, 4.05 or 4.02;
//   - spoofed: CON GETs with Proxy-Uri to a silent origin (a socket that
//     reads and never answers), from -spoof-addrs addresses times
//     -spoof-ports ports, none of which reads an answer: the exchanges hold
//     their slots for the whole timeout, and the proxy answers 5.04 (or
//     5.03 past the in-flight bounds) to nobody.
//
// Every second it samples gatewayd's VmRSS and RssAnon from /proc/<pid>/status
// and prints one line per sample; every -scrape it adds the Go heap from
// the admin port's /metrics (in use, free but not yet returned, and what
// else the runtime maps). A scrape allocates a few hundred KiB in the
// daemon, which moves what is measured: not too often. At the end, a JSON
// summary: the idle baseline, the peak of each flood, and where each
// quiet period ended. With -profiles DIR it saves a heap profile
// (/debug/pprof/heap) at the end of each phase.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(1)
	}
}

type sample struct {
	Phase   string  `json:"phase"`
	T       float64 `json:"t"`
	RSSMiB  float64 `json:"rss_mib"`
	AnonMiB float64 `json:"anon_mib"`
	HeapMiB float64 `json:"heap_inuse_mib"`
	// FreeMiB is heap the runtime holds free and has not returned yet
	// (idle minus released); OtherMiB what else it maps: stacks, span
	// and GC metadata, buffers of its own (sys minus heap).
	FreeMiB   float64 `json:"heap_free_mib"`
	OtherMiB  float64 `json:"runtime_other_mib"`
	Goroutine float64 `json:"goroutines"`
}

func run() error {
	bin := flag.String("gatewayd", "", "the gatewayd binary")
	flood := flag.Duration("flood", 10*time.Second, "how long each flood lasts")
	settle := flag.Duration("settle", 60*time.Second, "the quiet period after each flood")
	spoofAddrs := flag.Int("spoof-addrs", 64, "source addresses of the spoofed CON GETs (127.0.1.x...)")
	spoofPorts := flag.Int("spoof-ports", 64, "source ports per address")
	malAddrs := flag.Int("malformed-addrs", 16, "source addresses of the malformed datagrams (127.0.2.x...)")
	malPorts := flag.Int("malformed-ports", 64, "source ports per address")
	rate := flag.Int("rate", 20000, "datagrams per second of each flood")
	extra := flag.String("toml", "", "lines appended to gatewayd's [proxy] section")
	profiles := flag.String("profiles", "", "a folder for heap profiles at the end of each phase")
	floods := flag.String("floods", "malformed,junk,spoofed", "which floods to run, in order")
	scrapeEvery := flag.Duration("scrape", 10*time.Second, "how often to read the Go heap from /metrics; 0: never")
	gcAfter := flag.Duration("gc-after", 0, "experiment: ask for a collection (pprof heap?gc=1) this long into each quiet period")
	flag.Parse()
	if *bin == "" {
		return fmt.Errorf("-gatewayd is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	dir, err := os.MkdirTemp("", "flood")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer silent.Close()
	go func() { // reads, never answers
		buf := make([]byte, 2048)
		for {
			if _, _, err := silent.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	gw, admin := freePort(), freePort()
	cfg := fmt.Sprintf(`[proxy]
listen = ["udp://%s"]
allow = ["127.0.0.0/8"]
clients = ["127.0.0.0/8"]
timeout = "3s"
%s
[metrics]
listen = "%s"
pprof = true
`, gw, *extra, admin)
	cfgPath := filepath.Join(dir, "gw.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, *bin, "-config", cfgPath, "-log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	if err := waitUp(ctx, admin); err != nil {
		return err
	}
	target := netip.MustParseAddrPort(gw)
	fmt.Printf("== flood: gatewayd pid %d on %s, %v floods at %d datagrams/s, %v quiet after each, %s\n",
		pid, gw, *flood, *rate, *settle, time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("%-16s %6s %8s %8s %8s %8s %8s %6s\n", "phase", "t", "VmRSS", "RssAnon", "heap", "free", "other", "gorout")

	var samples []sample
	var lastScrape time.Time
	start := time.Now()
	phase := func(name string, d time.Duration, load func(context.Context)) {
		pctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		var wg sync.WaitGroup
		if load != nil {
			wg.Go(func() { load(pctx) })
		}
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for done := false; !done; {
			select {
			case <-pctx.Done():
				done = true
			case <-t.C:
			}
			scrape := *scrapeEvery > 0 && time.Since(lastScrape) >= *scrapeEvery
			if scrape {
				lastScrape = time.Now()
			}
			s := measure(pid, admin, scrape)
			s.Phase, s.T = name, time.Since(start).Seconds()
			samples = append(samples, s)
			if s.Goroutine == 0 {
				fmt.Printf("%-16s %6.0f %7.1fM %7.1fM\n", s.Phase, s.T, s.RSSMiB, s.AnonMiB)
			} else {
				fmt.Printf("%-16s %6.0f %7.1fM %7.1fM %7.1fM %7.1fM %7.1fM %6.0f\n", s.Phase, s.T, s.RSSMiB, s.AnonMiB, s.HeapMiB, s.FreeMiB, s.OtherMiB, s.Goroutine)
			}
		}
		wg.Wait()
		if *profiles != "" {
			saveProfile(admin, filepath.Join(*profiles, name+".heap.pb.gz"))
		}
	}
	phase("idle", 5*time.Second, nil)
	runs := map[string]func(context.Context){}
	runs["malformed"] = func(ctx context.Context) {
		socks := sockets(ctx, 2, *malAddrs, *malPorts)
		defer closeAll(socks)
		send(ctx, socks, target, *rate, malformed)
	}
	runs["junk"] = func(ctx context.Context) {
		socks := sockets(ctx, 3, *malAddrs, *malPorts)
		defer closeAll(socks)
		send(ctx, socks, target, *rate, junk)
	}
	runs["spoofed"] = func(ctx context.Context) {
		socks := sockets(ctx, 1, *spoofAddrs, *spoofPorts)
		// The spoofed peers stay open until the flood's answers are
		// out: closed ports would send ICMP back and end the exchanges
		// early, which a spoofed victim's host may or may not do.
		defer closeAll(socks)
		proxyURI := fmt.Sprintf("coap://%v/x", silent.LocalAddr())
		send(ctx, socks, target, *rate, func(b []byte, r *rand.Rand) []byte {
			m := coap.Message{Type: coap.Confirmable, Code: coap.GET, MID: uint16(r.Uint32())}
			var tok [8]byte
			binary.BigEndian.PutUint64(tok[:], r.Uint64())
			m.Token = tok[:]
			m.Options = m.Options.Insert(coap.ProxyURI, []byte(proxyURI))
			out, _ := m.AppendMarshal(b[:0])
			return out
		})
		// Hold the sockets through the exchanges' timeout.
		select {
		case <-ctx.Done():
		case <-time.After(4 * time.Second):
		}
	}
	for name := range strings.SplitSeq(*floods, ",") {
		load, ok := runs[name]
		if !ok {
			return fmt.Errorf("unknown flood %q", name)
		}
		phase(name, *flood, load)
		var quiet func(context.Context)
		if *gcAfter > 0 {
			quiet = func(ctx context.Context) {
				select {
				case <-ctx.Done():
					return
				case <-time.After(*gcAfter):
				}
				if resp, err := client.Get("http://" + admin + "/debug/pprof/heap?gc=1"); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}
		phase("after-"+name, *settle, quiet)
	}
	return summary(samples)
}

// summary prints the baseline, each flood's peak and each quiet period's
// end, as JSON.
func summary(samples []sample) error {
	out := map[string]any{}
	peak := map[string]float64{}
	last := map[string]sample{}
	for _, s := range samples {
		peak[s.Phase] = max(peak[s.Phase], s.RSSMiB)
		last[s.Phase] = s
	}
	out["idle_rss_mib"] = last["idle"].RSSMiB
	for _, s := range samples {
		if name, ok := strings.CutPrefix(s.Phase, "after-"); ok {
			out[name+"_peak_rss_mib"] = peak[name]
			out["after_"+name+"_rss_mib"] = last[s.Phase].RSSMiB
		}
	}
	out["samples"] = samples
	return json.NewEncoder(os.Stdout).Encode(out)
}

func malformed(b []byte, r *rand.Rand) []byte {
	n := 20 + r.IntN(280)
	if r.IntN(10) == 0 {
		n = 1400 + r.IntN(60<<10)
	}
	b = b[:n]
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	switch r.IntN(3) {
	case 0: // a CON header with a token length over 8: RST (§4.2, §3)
		b[0] = 0x4f
	case 1: // version 0: dropped silently
		b[0] &= 0x3f
	}
	return b
}

var methods = []coap.Code{coap.GET, coap.POST, coap.PUT, coap.DELETE, coap.FETCH, coap.PATCH, coap.IPATCH}

func junk(b []byte, r *rand.Rand) []byte {
	m := coap.Message{Type: coap.Confirmable, Code: methods[r.IntN(len(methods))], MID: uint16(r.Uint32())}
	if r.IntN(2) == 0 {
		m.Type = coap.NonConfirmable
	}
	tok := make([]byte, r.IntN(9))
	for i := range tok {
		tok[i] = byte(r.Uint32())
	}
	m.Token = tok
	for range 1 + r.IntN(3) {
		seg := make([]byte, 1+r.IntN(12))
		for i := range seg {
			seg[i] = 'a' + byte(r.IntN(26))
		}
		m.Options = m.Options.Insert(coap.URIPath, seg)
	}
	if r.IntN(4) == 0 {
		m.Payload = make([]byte, r.IntN(200))
	}
	out, _ := m.AppendMarshal(b[:0])
	return out
}

// send spreads datagrams from make over socks at rate per second until
// ctx ends.
func send(ctx context.Context, socks []*net.UDPConn, to netip.AddrPort, rate int, mk func([]byte, *rand.Rand) []byte) {
	const workers = 2
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			buf := make([]byte, 64<<10)
			per := time.Second / time.Duration(max(rate/workers, 1))
			next := time.Now()
			for i := w; ctx.Err() == nil; i += workers {
				s := socks[i%len(socks)]
				s.WriteToUDPAddrPort(mk(buf, r), to)
				next = next.Add(per)
				if d := time.Until(next); d > time.Millisecond {
					time.Sleep(d)
				}
			}
		})
	}
	wg.Wait()
}

// sockets opens addrs×ports UDP sockets on 127.0.<third>.1..addrs.
func sockets(ctx context.Context, third, addrs, ports int) []*net.UDPConn {
	var out []*net.UDPConn
	for a := 1; a <= addrs && ctx.Err() == nil; a++ {
		ip := net.IPv4(127, 0, byte(third), byte(a))
		for range ports {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
			if err != nil {
				fmt.Fprintln(os.Stderr, "flood: socket:", err)
				return out
			}
			c.SetReadBuffer(4096)
			out = append(out, c)
		}
	}
	return out
}

func closeAll(cs []*net.UDPConn) {
	for _, c := range cs {
		c.Close()
	}
}

func measure(pid int, admin string, scrape bool) sample {
	var s sample
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			kib, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			switch k {
			case "VmRSS":
				s.RSSMiB = kib / 1024
			case "RssAnon":
				s.AnonMiB = kib / 1024
			}
		}
		f.Close()
	}
	if !scrape {
		return s
	}
	resp, err := client.Get("http://" + admin + "/metrics")
	if err != nil {
		return s
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var idle, released, sys, heapSys float64
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		f, _ := strconv.ParseFloat(v, 64)
		switch name {
		case "go_memstats_heap_inuse_bytes":
			s.HeapMiB = f / (1 << 20)
		case "go_memstats_heap_idle_bytes":
			idle = f
		case "go_memstats_heap_released_bytes":
			released = f
		case "go_memstats_heap_sys_bytes":
			heapSys = f
		case "go_memstats_sys_bytes":
			sys = f
		case "go_goroutines":
			s.Goroutine = f
		}
	}
	s.FreeMiB = (idle - released) / (1 << 20)
	s.OtherMiB = (sys - heapSys) / (1 << 20)
	return s
}

func saveProfile(admin, path string) {
	resp, err := client.Get("http://" + admin + "/debug/pprof/heap")
	if err != nil {
		fmt.Fprintln(os.Stderr, "flood: profile:", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flood: profile:", err)
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body)
}

// client asks for uncompressed answers: a gzip writer per scrape would
// be most of what the daemon allocates while idle, and the sampling would
// move what it measures.
var client = &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 5 * time.Second}

func waitUp(ctx context.Context, admin string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := client.Get("http://" + admin + "/metrics"); err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("gatewayd's admin port %s did not answer within 10 s", admin)
}

// freePort is a loopback address with a port free a moment ago.
func freePort() string {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	l, err := net.Listen("tcp4", c.LocalAddr().String())
	if err != nil {
		// The TCP side is taken; try another.
		return freePort()
	}
	l.Close()
	return c.LocalAddr().String()
}
