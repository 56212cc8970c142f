package console

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server defaults.
const (
	DefaultPush       = 5 * time.Second // how often a stream sends
	DefaultMaxStreams = 8               // event streams open at once
	streamWriteLimit  = 10 * time.Second
)

// Config is what a Server serves.
type Config struct {
	// Snapshot returns the gateway's state now. Required.
	Snapshot func() Snapshot
	// History holds the plotted series. Required.
	History *History
	// Push is how often an event stream sends (DefaultPush if 0).
	Push time.Duration
	// MaxStreams bounds the event streams open at once
	// (DefaultMaxStreams if 0); one more is refused with 503.
	MaxStreams int
	// AddressHostOnly refuses requests whose Host header is a DNS name
	// other than localhost: what the endpoint needs when no token guards
	// it, so that a web page whose name a hostile DNS server rebinds to
	// the gateway's address cannot read it from a browser.
	AddressHostOnly bool
}

//go:embed static
var static embed.FS

var funcs = template.FuncMap{
	"ts": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"ago": func(t any, now time.Time) string {
		var tt time.Time
		switch v := t.(type) {
		case *time.Time:
			if v == nil {
				return "never"
			}
			tt = *v
		case time.Time:
			tt = v
		}
		if tt.IsZero() {
			return "never"
		}
		return durationText(max(now.Sub(tt), 0).Seconds()) + " ago"
	},
	"duration": durationText,
	"deref": func(v any) any {
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Pointer && !rv.IsNil() {
			return rv.Elem().Interface()
		}
		return v
	},
	"percent": func(f *float64) string {
		if f == nil {
			return ""
		}
		return fmt.Sprintf("%.1f%%", *f*100)
	},
}

var pageTemplate = template.Must(template.New("").Funcs(funcs).ParseFS(static, "static/page.html"))

// durationText is a duration in seconds for people: "3d4h", "2h5m",
// "4m10s", "7s".
func durationText(s float64) string {
	d := time.Duration(s * float64(time.Second)).Round(time.Second)
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%ds", d/time.Minute, d%time.Minute/time.Second)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// Server serves the console: the page, its event stream, and the JSON
// API under /api/v1/. Close ends the event streams and waits for them.
type Server struct {
	cfg     Config
	done    chan struct{}
	streams atomic.Int64
	// The streams share what they send: one render per push, however
	// many streams are open.
	mainCache, statusCache rendered

	mu     sync.Mutex
	closed bool           // guarded by mu
	wg     sync.WaitGroup // the streams' handlers; Add under mu while !closed
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	if cfg.Push <= 0 {
		cfg.Push = DefaultPush
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	return &Server{cfg: cfg, done: make(chan struct{})}
}

// Register adds the console's paths to mux: / (the page), /console.js,
// /console.css, /console/events, and /api/v1/{,status,history,events}.
func (s *Server) Register(mux *http.ServeMux) {
	mux.Handle("GET /{$}", s.guard(s.page))
	mux.Handle("GET /console.js", s.guard(s.asset("static/console.js", "text/javascript; charset=utf-8")))
	mux.Handle("GET /console.css", s.guard(s.asset("static/console.css", "text/css; charset=utf-8")))
	mux.Handle("GET /console/events", s.guard(func(w http.ResponseWriter, r *http.Request) {
		s.stream(w, r, "main", &s.mainCache, func(b *bytes.Buffer) error { return pageTemplate.ExecuteTemplate(b, "main", s.view()) })
	}))
	mux.Handle("GET /api/v1/{$}", s.guard(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"api_version": APIVersion,
			"paths": []string{"/api/v1/status", "/api/v1/history", "/api/v1/events"}})
	}))
	mux.Handle("GET /api/v1/status", s.guard(func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.cfg.Snapshot()) }))
	mux.Handle("GET /api/v1/history", s.guard(func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.cfg.History.Series()) }))
	mux.Handle("GET /api/v1/events", s.guard(func(w http.ResponseWriter, r *http.Request) {
		s.stream(w, r, "status", &s.statusCache, func(b *bytes.Buffer) error { return json.NewEncoder(b).Encode(s.cfg.Snapshot()) })
	}))
}

// Close ends the event streams and waits for their handlers. Idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Streams is how many event streams are open now.
func (s *Server) Streams() int { return int(s.streams.Load()) }

// csp lets the page load its own script, style and event stream and
// nothing else: no inline script runs, whatever a node managed to put in
// the page.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// guard sets the headers every console response carries and applies
// AddressHostOnly.
func (s *Server) guard(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.AddressHostOnly && !hostIsAddress(r.Host) {
			http.Error(w, "console: use the gateway's address, or configure a token_file to serve this name", http.StatusMisdirectedRequest)
			return
		}
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h(w, r)
	})
}

func (s *Server) asset(name, ctype string) http.HandlerFunc {
	b, err := static.ReadFile(name)
	if err != nil {
		panic("console: " + err.Error()) // embedded at build time
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ctype)
		w.Write(b)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v) // escapes <, > and & in strings too
}

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	if err := pageTemplate.ExecuteTemplate(&b, "page", s.view()); err != nil {
		http.Error(w, "console: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b.Bytes())
}

// stream sends event every Push, rendered by render, until the client
// goes, Close is called, or a write stalls for streamWriteLimit.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, event string, c *rendered, render func(*bytes.Buffer) error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "console: stopping", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	if s.streams.Add(1) > int64(s.cfg.MaxStreams) {
		s.streams.Add(-1)
		w.Header().Set("Retry-After", "30")
		http.Error(w, fmt.Sprintf("console: %d event streams are open already", s.cfg.MaxStreams), http.StatusServiceUnavailable)
		return
	}
	defer s.streams.Add(-1)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	t := time.NewTicker(s.cfg.Push)
	defer t.Stop()
	var msg bytes.Buffer
	retry := fmt.Sprintf("retry: %d\n", s.cfg.Push.Milliseconds())
	for {
		msg.Reset()
		body, err := c.get(s.cfg.Push/2, render)
		if err != nil {
			return
		}
		msg.WriteString(retry)
		writeEvent(&msg, event, body)
		rc.SetWriteDeadline(time.Now().Add(streamWriteLimit))
		if _, err := w.Write(msg.Bytes()); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case <-t.C:
		}
	}
}

// rendered is the last rendering of one kind of event, kept for the
// streams that ask within maxAge of it.
type rendered struct {
	mu   sync.Mutex
	at   time.Time // guarded by mu
	body string    // guarded by mu
}

func (c *rendered) get(maxAge time.Duration, render func(*bytes.Buffer) error) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < maxAge {
		return c.body, nil
	}
	var b bytes.Buffer
	if err := render(&b); err != nil {
		return "", err
	}
	c.at, c.body = time.Now(), b.String()
	return c.body, nil
}

// writeEvent writes one Server-Sent Event: each line of data as a
// "data:" field, since a line break ends a field (HTML Living Standard,
// 9.2 Server-sent events).
func writeEvent(w io.Writer, event, data string) {
	fmt.Fprintf(w, "event: %s\n", event)
	for line := range strings.Lines(data) {
		line = strings.TrimRight(line, "\r\n")
		io.WriteString(w, "data: ")
		io.WriteString(w, strings.ReplaceAll(line, "\r", ""))
		io.WriteString(w, "\n")
	}
	io.WriteString(w, "\n")
}

// nodeView is a node's row: its state and its plots.
type nodeView struct {
	Node
	RSSIPlot, LQIPlot, HeardPlot Plot
}

// view is what the page's template renders.
type view struct {
	Snap          Snapshot
	Nodes         []nodeView
	RequestPlot   Plot
	WindowSeconds float64
	Refresh       int // seconds, of the meta refresh without scripts
}

func (s *Server) view() view {
	snap := s.cfg.Snapshot()
	ser := s.cfg.History.Series()
	window := time.Duration(ser.WindowSeconds * float64(time.Second))
	v := view{Snap: snap, WindowSeconds: ser.WindowSeconds, Refresh: max(int(s.cfg.Push/time.Second), 1),
		RequestPlot: plotOf("requests per second", "/s", ser.RequestRate, snap.Now, window, 0, 0, plotW, plotH)}
	byKey := make(map[string]*NodeHistory, len(ser.Nodes))
	for i := range ser.Nodes {
		byKey[ser.Nodes[i].Key] = &ser.Nodes[i]
	}
	for _, n := range snap.Nodes {
		nv := nodeView{Node: n}
		var rssi, lqi, heard []Point
		if h := byKey[NodeKey(n.Radio, n.MAC)]; h != nil {
			rssi, lqi, heard = h.RSSI, h.LQI, h.HeardAge
		}
		// The lines run to now: the sampled history, then the value of
		// this snapshot.
		if n.RSSI != nil {
			rssi = append(rssi, Point{snap.Now, float64(*n.RSSI)})
		}
		if n.LQI != nil {
			lqi = append(lqi, Point{snap.Now, float64(*n.LQI)})
		}
		if n.LastHeard != nil {
			heard = append(heard, Point{snap.Now, max(snap.Now.Sub(*n.LastHeard).Seconds(), 0)})
		}
		// RSSI spans an 802.15.4 receiver's range; LQI is 0 to 255
		// (IEEE 802.15.4-2020 §10.2.6).
		nv.RSSIPlot = plotOf("RSSI of "+n.MAC, " dBm", rssi, snap.Now, window, -110, -10, sparkW, sparkH)
		nv.LQIPlot = plotOf("LQI of "+n.MAC, "", lqi, snap.Now, window, 0, 255, sparkW, sparkH)
		nv.HeardPlot = plotOf("seconds since last heard, "+n.MAC, " s", heard, snap.Now, window, 0, 0, sparkW, sparkH)
		v.Nodes = append(v.Nodes, nv)
	}
	return v
}
