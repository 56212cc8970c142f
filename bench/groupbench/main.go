// Command groupbench compares one group GET through gatewayd with the same
// GETs sent by unicast, on a simulated radio: time to the first and the
// last response, responses lost, frames and octets on the air. It runs
// gatewayd's proxy in-process with a "sim" radio (the fake RCP on a pty
// behind the real Spinel driver) and writes JSON and an SVG plot of the
// responses' arrival.
//
//	go run ./bench/groupbench -nodes 50 -rounds 5 -json out.json -svg plot.svg
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opaque-edge/gatewayd/bridge"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// run is one round of one way: the arrival times of the responses.
type run struct {
	Way      string    `json:"way"` // "group" or "unicast"
	Round    int       `json:"round"`
	Arrivals []float64 `json:"arrivals_ms"` // since the request(s) left, sorted
	Lost     int       `json:"lost"`        // nodes whose answer never came
	Frames   uint64    `json:"frames"`      // frames transmitted on the air
	Bytes    uint64    `json:"bytes"`       // MPDU octets on the air
}

func (r run) first() float64 { return r.Arrivals[0] }
func (r run) last() float64  { return r.Arrivals[len(r.Arrivals)-1] }

type result struct {
	Nodes   int           `json:"nodes"`
	Leisure time.Duration `json:"leisure_ns"`
	Delay   time.Duration `json:"air_delay_ns"`
	Loss    float64       `json:"loss"`
	Go      string        `json:"go"`
	CPUs    int           `json:"cpus"`
	Date    string        `json:"date"`
	Runs    []run         `json:"runs"`
}

func main() {
	nodes := flag.Int("nodes", 50, "simulated nodes on the radio")
	rounds := flag.Int("rounds", 5, "rounds of each way, alternating")
	leisure := flag.Duration("leisure", 5*time.Second, "the nodes' Leisure (RFC 7252 §8.2 DEFAULT_LEISURE is 5 s)")
	delay := flag.Duration("delay", 4*time.Millisecond, "air time of a frame (a full 127-octet frame at 250 kbit/s: 4 ms)")
	loss := flag.Float64("loss", 0, "probability a reception is lost")
	jsonOut := flag.String("json", "", "write the runs as JSON here")
	svgOut := flag.String("svg", "", "write the arrival plot here")
	from := flag.String("from", "", "draw -svg from this -json file of an earlier run instead of running")
	flag.Parse()
	if *from != "" {
		if err := replot(*from, *svgOut); err != nil {
			fmt.Fprintln(os.Stderr, "groupbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := bench(*nodes, *rounds, *leisure, *delay, *loss, *jsonOut, *svgOut); err != nil {
		fmt.Fprintln(os.Stderr, "groupbench:", err)
		os.Exit(1)
	}
}

func bench(nodes, rounds int, leisure, delay time.Duration, loss float64, jsonOut, svgOut string) error {
	ctx := context.Background()
	cfg := bridge.Defaults()
	cfg.Proxy.Listen = []string{"udp://127.0.0.1:0"}
	cfg.Proxy.Timeout = bridge.Duration{Duration: 30 * time.Second}
	cfg.Proxy.MaxInflightPerClient = 4096
	cfg.Metrics.Listen = ""
	cfg.GroupComm.Clients = []string{"127.0.0.0/8"}
	cfg.GroupComm.Burst = 1000
	cfg.Radio = []radio.Config{{Name: "wpan0", Driver: "sim", Options: sim.Config{
		Nodes: nodes, Leisure: radio.Duration{Duration: leisure}, Delay: radio.Duration{Duration: delay}, Loss: loss,
	}}}
	if err := cfg.Validate(); err != nil {
		return err
	}
	p, err := bridge.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer p.Close()
	r := p.Radios()[0]
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.WaitUp(wctx); err != nil {
		return err
	}
	n, _ := sim.FromLink(r.Link())
	res := result{Nodes: nodes, Leisure: leisure, Delay: delay, Loss: loss, Go: runtime.Version(), CPUs: runtime.NumCPU(), Date: time.Now().UTC().Format(time.DateOnly)}
	u, err := coap.ListenUDP(ctx, "127.0.0.1:0")
	if err != nil {
		return err
	}
	client := coap.NewEndpoint(u, coap.EndpointConfig{})
	defer client.Close()
	wait := leisure + 10*time.Second
	for i := range rounds {
		g, err := groupRound(p.Addrs()[0], n, wait)
		if err != nil {
			return err
		}
		g.Round = i + 1
		res.Runs = append(res.Runs, g)
		uc := unicastRound(client, p.Addrs()[0], n, i, wait)
		uc.Round = i + 1
		res.Runs = append(res.Runs, uc)
		fmt.Fprintf(os.Stderr, "round %d: group first %.0f last %.0f ms, lost %d, %d frames; unicast first %.0f last %.0f ms, lost %d, %d frames\n",
			i+1, first(g), last(g), g.Lost, g.Frames, first(uc), last(uc), uc.Lost, uc.Frames)
		// Late or retransmitted frames of this round settle before the next.
		time.Sleep(time.Second)
	}
	table(os.Stdout, res)
	if jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	if svgOut != "" {
		if err := os.WriteFile(svgOut, []byte(plot(res)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// replot draws the plot of an earlier run's JSON.
func replot(from, svgOut string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	var res result
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", from, err)
	}
	table(os.Stdout, res)
	return os.WriteFile(svgOut, []byte(plot(res)), 0o644)
}

func first(r run) float64 {
	if len(r.Arrivals) == 0 {
		return -1
	}
	return r.first()
}

func last(r run) float64 {
	if len(r.Arrivals) == 0 {
		return -1
	}
	return r.last()
}

// groupRound sends one group GET to All CoAP Nodes through the proxy and
// takes responses, keeping its token (a raw socket: the message layer's
// client ends an exchange at its first response), until every node has
// answered or wait has passed.
func groupRound(proxy netip.AddrPort, n *sim.Network, wait time.Duration) (run, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(proxy))
	if err != nil {
		return run{}, err
	}
	defer conn.Close()
	req := &coap.Message{Type: coap.Confirmable, Code: coap.GET, Token: make([]byte, 8), MID: 1}
	rand.Read(req.Token)
	req.Options = req.Options.Insert(coap.ProxyURI, []byte("coap://[ff03::fd]/sensors/temp")).
		Insert(bridge.DefaultMulticastTimeoutOption, coap.EncodeUint(uint32(wait/time.Second)))
	b, _ := req.Marshal()
	before := n.Air().Stats()
	start := time.Now()
	if _, err := conn.Write(b); err != nil {
		return run{}, err
	}
	seen := map[string]bool{}
	out := run{Way: "group"}
	buf := make([]byte, 2048)
	conn.SetReadDeadline(start.Add(wait))
	for len(seen) < len(n.Nodes()) {
		k, err := conn.Read(buf)
		if err != nil {
			break
		}
		var m coap.Message
		if m.Decode(buf[:k]) != nil {
			continue
		}
		if m.Type == coap.Confirmable {
			ack := coap.Message{Type: coap.Acknowledgement, MID: m.MID}
			a, _ := ack.Marshal()
			conn.Write(a)
		}
		rf, ok := m.Options.Get(bridge.DefaultReplyFromOption)
		if m.Code != coap.Content || !ok || string(m.Token) != string(req.Token) || seen[string(rf)] {
			continue
		}
		seen[string(rf)] = true
		out.Arrivals = append(out.Arrivals, ms(time.Since(start)))
	}
	after := n.Air().Stats()
	out.Lost = len(n.Nodes()) - len(seen)
	out.Frames, out.Bytes = after.Frames-before.Frames, after.Bytes-before.Bytes
	return out, nil
}

// unicastRound sends the same GET to every node at once through the
// proxy, by unicast (Proxy-Uri per node, a query per round so that the
// cache answers none).
func unicastRound(c *coap.Endpoint, proxy netip.AddrPort, n *sim.Network, round int, wait time.Duration) run {
	before := n.Air().Stats()
	start := time.Now()
	var mu sync.Mutex
	out := run{Way: "unicast"}
	var wg sync.WaitGroup
	for _, a := range n.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			req := &coap.Message{Code: coap.GET, Options: coap.Options(nil).Insert(coap.ProxyURI,
				fmt.Appendf(nil, "coap://[%v]/sensors/temp?r=%d", a, round))}
			resp, err := c.Do(ctx, proxy, req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || resp.Code != coap.Content {
				out.Lost++
				return
			}
			out.Arrivals = append(out.Arrivals, ms(time.Since(start)))
		}()
	}
	wg.Wait()
	after := n.Air().Stats()
	slices.Sort(out.Arrivals)
	out.Frames, out.Bytes = after.Frames-before.Frames, after.Bytes-before.Bytes
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return -1
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// table prints the medians over the rounds, a Markdown table.
func table(w *os.File, res result) {
	fmt.Fprintf(w, "%d nodes, Leisure %v, air time %v per frame, loss %v; %s, %d CPUs, %s\n\n",
		res.Nodes, res.Leisure, res.Delay, res.Loss, res.Go, res.CPUs, res.Date)
	fmt.Fprintln(w, "| way | first response (median) | last response (median) | responses lost (all rounds) | frames on air per round | octets on air per round |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: |")
	for _, way := range []string{"group", "unicast"} {
		var f, l, fr, by []float64
		lost, rounds := 0, 0
		for _, r := range res.Runs {
			if r.Way != way {
				continue
			}
			rounds++
			f, l = append(f, first(r)), append(l, last(r))
			fr, by = append(fr, float64(r.Frames)), append(by, float64(r.Bytes))
			lost += r.Lost
		}
		fmt.Fprintf(w, "| %s | %.0f ms | %.0f ms | %d of %d | %.0f | %.0f |\n", way, median(f), median(l), lost, rounds*res.Nodes, median(fr), median(by))
	}
}

// plot draws the responses received over time, one step line per way,
// for the round whose last response is the median of its way's.
func plot(res result) string {
	pick := func(way string) run {
		var rs []run
		for _, r := range res.Runs {
			if r.Way == way && len(r.Arrivals) > 0 {
				rs = append(rs, r)
			}
		}
		if len(rs) == 0 {
			return run{Way: way}
		}
		slices.SortFunc(rs, func(a, b run) int { return int(a.last() - b.last()) })
		return rs[len(rs)/2]
	}
	runs := []run{pick("group"), pick("unicast")}
	colors := []string{"#1f77b4", "#d62728"}
	const W, H, L, B, T, R = 640, 300, 50, 40, 20, 210
	maxX := 1.0
	for _, r := range runs {
		if len(r.Arrivals) > 0 {
			maxX = max(maxX, r.last())
		}
	}
	maxX *= 1.05
	x := func(v float64) float64 { return L + v/maxX*(W-L-R) }
	y := func(v float64) float64 { return H - B - v/float64(res.Nodes)*(H-B-T) }
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", W, H)
	fmt.Fprintf(&sb, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", L, H-B, W-R, H-B)
	fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", L, T, L, H-B)
	for i := 0; i <= 4; i++ {
		v := maxX * float64(i) / 4
		fmt.Fprintf(&sb, `<text x="%.1f" y="%d" text-anchor="middle">%.0f</text>`+"\n", x(v), H-B+14, v)
		c := float64(res.Nodes) * float64(i) / 4
		fmt.Fprintf(&sb, `<text x="%d" y="%.1f" text-anchor="end">%.0f</text>`+"\n", L-4, y(c)+4, c)
	}
	fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="middle">ms since the request(s) left</text>`+"\n", (L+W-R)/2, H-6)
	fmt.Fprintf(&sb, `<text x="12" y="%d" transform="rotate(-90 12 %d)" text-anchor="middle">responses received</text>`+"\n", (T+H-B)/2, (T+H-B)/2)
	for i, r := range runs {
		pts := fmt.Sprintf("%.1f,%.1f", x(0), y(0))
		for k, a := range r.Arrivals {
			pts += fmt.Sprintf(" %.1f,%.1f %.1f,%.1f", x(a), y(float64(k)), x(a), y(float64(k+1)))
		}
		fmt.Fprintf(&sb, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colors[i], pts)
		label := fmt.Sprintf("%s: %d frames, %d lost", r.Way, r.Frames, r.Lost)
		fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/><text x="%d" y="%d">%s</text>`+"\n",
			W-R+8, T+10+18*i, W-R+24, T+10+18*i, colors[i], W-R+28, T+14+18*i, label)
	}
	fmt.Fprintf(&sb, `<text x="%d" y="%d">%d sim nodes, Leisure %v, air %v/frame</text>`+"\n", L+6, T+4, res.Nodes, res.Leisure, res.Delay)
	sb.WriteString("</svg>\n")
	return sb.String()
}
