// Command coapbench is gatewayd's load generator and benchmark origin.
//
//	coapbench origin -listen 127.0.0.1:5799
//	coapbench load -proxy 127.0.0.1:5683 -target coap://127.0.0.1:5799/bench -c 16 -d 10s
//
// The origin answers every request with a small 2.05 straight from its
// read loop, so that it is never the bottleneck. The load generator runs
// c closed-loop clients, each with its own socket, sending CON GETs with
// Proxy-Uri (or plain GETs when -proxy is empty) and measuring latency.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"slices"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: coapbench origin|echo|load|idle [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	switch os.Args[1] {
	case "origin":
		err = origin(ctx, os.Args[2:], false)
	case "echo":
		err = origin(ctx, os.Args[2:], true)
	case "load":
		err = load(ctx, os.Args[2:])
	case "idle":
		err = idle(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "coapbench:", err)
		os.Exit(1)
	}
}

// origin answers each CoAP request with a piggybacked 2.05 carrying an
// ETag, Content-Format and Max-Age (-max-age); with echo it returns every
// datagram unchanged (the machine's limit for a one-goroutine UDP server).
func origin(ctx context.Context, args []string, echo bool) error {
	fs := flag.NewFlagSet("origin", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:5799", "UDP address")
	maxAge := fs.Uint("max-age", 0, "Max-Age of the answers: 0 makes them uncacheable, so a proxy forwards every request")
	fs.Parse(args)
	c, err := net.ListenPacket("udp", *listen)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); c.Close() }()
	uc := c.(*net.UDPConn)
	buf := make([]byte, 2048)
	out := make([]byte, 0, 256)
	var m coap.Message
	payload := []byte("21.5")
	answered := 0
	for {
		n, peer, err := uc.ReadFromUDPAddrPort(buf)
		if err != nil {
			// What reached the origin: a proxy that answered from a
			// cache, or merged requests, shows here.
			fmt.Fprintf(os.Stderr, "origin: answered %d requests\n", answered)
			return nil
		}
		if echo {
			uc.WriteToUDPAddrPort(buf[:n], peer)
			continue
		}
		if m.Decode(buf[:n]) != nil || !m.Code.IsRequest() {
			continue
		}
		resp := coap.Message{Type: coap.Acknowledgement, Code: coap.Content, MID: m.MID, Token: m.Token, Payload: payload}
		if m.Type == coap.NonConfirmable {
			resp.Type = coap.NonConfirmable
		}
		resp.Options = append(resp.Options[:0],
			coap.Option{ID: coap.ETag, Value: []byte{0x21}},
			coap.Option{ID: coap.ContentFormat, Value: nil},
			coap.Option{ID: coap.MaxAge, Value: coap.EncodeUint(uint32(*maxAge))})
		out, _ = resp.AppendMarshal(out[:0])
		uc.WriteToUDPAddrPort(out, peer)
		answered++
	}
}

type result struct {
	Clients  int     `json:"clients"`
	Seconds  float64 `json:"seconds"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	RPS      float64 `json:"rps"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
}

func load(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	proxy := fs.String("proxy", "", "proxy UDP address; empty sends to the target directly")
	target := fs.String("target", "coap://127.0.0.1:5799/bench", "request URI")
	clients := fs.Int("c", 16, "concurrent closed-loop clients")
	dur := fs.Duration("d", 10*time.Second, "duration")
	timeout := fs.Duration("timeout", 2*time.Second, "per-request timeout (counted as an error)")
	anyCode := fs.Bool("any", false, "count any answer with the right token (for the echo server)")
	over := fs.String("over", "udp", "how to reach the proxy: udp, tcp or ws (RFC 8323)")
	fs.Parse(args)
	if *over != "udp" {
		return loadStream(ctx, *over, *proxy, *target, *clients, *dur, *timeout)
	}

	u, err := coap.ParseURI(*target)
	if err != nil {
		return err
	}
	to := *proxy
	var opts coap.Options
	if to == "" {
		to = net.JoinHostPort(u.Host, fmt.Sprint(u.Port))
		opts = u.SetOptions(nil, u.Port)
	} else {
		opts = opts.Insert(coap.ProxyURI, []byte(*target))
	}
	dst, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *dur)
	defer cancel()
	return report(*clients, func() ([]time.Duration, int) {
		return runClient(ctx, dst, opts, *timeout, *anyCode)
	})
}

// report runs n closed-loop clients at once, each one call of client
// returning its latencies and errors, and prints what they did together.
func report(n int, client func() ([]time.Duration, int)) error {
	var (
		mu   sync.Mutex
		lats []time.Duration
		errs int
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			my, e := client()
			mu.Lock()
			lats = append(lats, my...)
			errs += e
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	slices.Sort(lats)
	pct := func(p float64) float64 {
		if len(lats) == 0 {
			return 0
		}
		return float64(lats[int(float64(len(lats)-1)*p)].Microseconds())
	}
	r := result{Clients: n, Seconds: elapsed, Requests: len(lats), Errors: errs,
		RPS: float64(len(lats)) / elapsed, P50us: pct(0.50), P99us: pct(0.99)}
	return json.NewEncoder(os.Stdout).Encode(r)
}

func runClient(ctx context.Context, dst *net.UDPAddr, opts coap.Options, timeout time.Duration, anyCode bool) (lats []time.Duration, errs int) {
	c, err := net.DialUDP("udp", nil, dst)
	if err != nil {
		return nil, 1
	}
	defer c.Close()
	go func() { <-ctx.Done(); c.SetReadDeadline(time.Now()) }()
	mid := uint16(rand.Uint32())
	var tok [8]byte
	req := coap.Message{Type: coap.Confirmable, Code: coap.GET, Options: opts}
	out := make([]byte, 0, 512)
	buf := make([]byte, 2048)
	var resp coap.Message
	for ctx.Err() == nil {
		mid++
		binary.BigEndian.PutUint64(tok[:], rand.Uint64())
		req.MID, req.Token = mid, tok[:]
		out, _ = req.AppendMarshal(out[:0])
		t0 := time.Now()
		if _, err := c.Write(out); err != nil {
			errs++
			continue
		}
		c.SetReadDeadline(t0.Add(timeout))
		for {
			n, err := c.Read(buf)
			if err != nil {
				if ctx.Err() == nil {
					errs++
				}
				break
			}
			if resp.Decode(buf[:n]) != nil || string(resp.Token) != string(tok[:]) {
				continue // a late answer to an earlier request
			}
			if resp.Type == coap.Acknowledgement && resp.Code == coap.Empty && !anyCode {
				continue // separate response follows
			}
			if resp.Type == coap.Confirmable {
				ack := coap.Message{Type: coap.Acknowledgement, MID: resp.MID}
				b, _ := ack.Marshal()
				c.Write(b)
			}
			if resp.Code == coap.Content || anyCode {
				lats = append(lats, time.Since(t0))
			} else {
				errs++
			}
			break
		}
	}
	return lats, errs
}
