package console

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// History bounds: an hour of samples, for at most MaxPlotNodes nodes.
const (
	DefaultWindow   = time.Hour
	DefaultInterval = 15 * time.Second
	MaxPlotNodes    = 64
)

// Sample is what the sampler read at one moment: the request count since
// the start and each node's link state.
type Sample struct {
	Time     time.Time
	Requests uint64
	Nodes    []NodeSample
}

// NodeSample is one node's link state in a Sample.
type NodeSample struct {
	Key       string    // radio and MAC: what names the node across samples
	LastHeard time.Time // zero: never heard
	RSSI, LQI *int
}

// Point is one plotted value at one moment.
type Point struct {
	Time  time.Time `json:"t"`
	Value float64   `json:"v"`
}

// NodeHistory is one node's series over the window.
type NodeHistory struct {
	Key  string  `json:"key"`
	RSSI []Point `json:"rssi"` // dBm
	LQI  []Point `json:"lqi"`
	// HeardAge is how long before each sample the node was last heard,
	// in seconds.
	HeardAge []Point `json:"heard_age"`
}

// Series are the plotted series over the window.
type Series struct {
	IntervalSeconds float64       `json:"interval_seconds"`
	WindowSeconds   float64       `json:"window_seconds"`
	RequestRate     []Point       `json:"request_rate"` // per second
	Nodes           []NodeHistory `json:"nodes"`
}

// History keeps the samples of the last window, at most window/interval
// of them (one more for the first rate), and the series of at most
// MaxPlotNodes nodes: its memory does not grow with time, with requests,
// or with nodes a forged frame invents.
type History struct {
	window, interval time.Duration
	cap              int // samples kept

	mu    sync.Mutex
	rate  []Point                 // guarded by mu: oldest first, at most cap
	last  *Sample                 // guarded by mu: the previous sample, for the rate
	nodes map[string]*NodeHistory // guarded by mu
	seen  map[string]time.Time    // guarded by mu: a node's last sample
}

// NewHistory keeps window of samples taken every interval (the defaults
// when zero).
func NewHistory(window, interval time.Duration) *History {
	if window <= 0 {
		window = DefaultWindow
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	n := int(window/interval) + 1
	return &History{window: window, interval: interval, cap: n,
		nodes: make(map[string]*NodeHistory), seen: make(map[string]time.Time)}
}

// Interval is how often the sampler should Add.
func (h *History) Interval() time.Duration { return h.interval }

// Add records s. Samples older than the window fall out.
func (h *History) Add(s Sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.last != nil && s.Time.After(h.last.Time) {
		d := s.Time.Sub(h.last.Time).Seconds()
		var rate float64
		if s.Requests >= h.last.Requests { // a restart of the count is no negative rate
			rate = float64(s.Requests-h.last.Requests) / d
		}
		h.rate = push(h.rate, Point{s.Time, rate}, h.cap)
	}
	h.last = &Sample{Time: s.Time, Requests: s.Requests}
	for _, n := range s.Nodes {
		nh := h.nodes[n.Key]
		if nh == nil {
			if len(h.nodes) >= MaxPlotNodes {
				h.evictLocked()
			}
			nh = &NodeHistory{Key: n.Key}
			h.nodes[n.Key] = nh
		}
		h.seen[n.Key] = s.Time
		if n.RSSI != nil {
			nh.RSSI = push(nh.RSSI, Point{s.Time, float64(*n.RSSI)}, h.cap)
		}
		if n.LQI != nil {
			nh.LQI = push(nh.LQI, Point{s.Time, float64(*n.LQI)}, h.cap)
		}
		if !n.LastHeard.IsZero() {
			nh.HeardAge = push(nh.HeardAge, Point{s.Time, max(s.Time.Sub(n.LastHeard).Seconds(), 0)}, h.cap)
		}
	}
	cut := s.Time.Add(-h.window)
	h.rate = trim(h.rate, cut)
	for k, nh := range h.nodes {
		nh.RSSI, nh.LQI, nh.HeardAge = trim(nh.RSSI, cut), trim(nh.LQI, cut), trim(nh.HeardAge, cut)
		if h.seen[k].Before(cut) {
			delete(h.nodes, k)
			delete(h.seen, k)
		}
	}
}

// evictLocked forgets the node sampled least recently.
func (h *History) evictLocked() {
	var oldest string
	var t time.Time
	for k, s := range h.seen {
		if oldest == "" || s.Before(t) {
			oldest, t = k, s
		}
	}
	delete(h.nodes, oldest)
	delete(h.seen, oldest)
}

// Series returns copies of the series, nodes ordered by key.
func (h *History) Series() Series {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Series{IntervalSeconds: h.interval.Seconds(), WindowSeconds: h.window.Seconds(),
		RequestRate: slices.Clone(h.rate), Nodes: make([]NodeHistory, 0, len(h.nodes))}
	if s.RequestRate == nil {
		s.RequestRate = []Point{}
	}
	for _, nh := range h.nodes {
		s.Nodes = append(s.Nodes, NodeHistory{Key: nh.Key, RSSI: clone(nh.RSSI), LQI: clone(nh.LQI), HeardAge: clone(nh.HeardAge)})
	}
	slices.SortFunc(s.Nodes, func(a, b NodeHistory) int { return cmp.Compare(a.Key, b.Key) })
	return s
}

// Rate is the last request rate, per second; 0 before two samples.
func (h *History) Rate() float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.rate) == 0 {
		return 0
	}
	return h.rate[len(h.rate)-1].Value
}

func clone(p []Point) []Point {
	if p == nil {
		return []Point{}
	}
	return slices.Clone(p)
}

// push appends p, dropping the oldest points beyond n. The slice is
// reused in place so that a full series allocates nothing.
func push(s []Point, p Point, n int) []Point {
	if len(s) >= n {
		copy(s, s[len(s)-n+1:])
		s = s[:n-1]
	}
	return append(s, p)
}

// trim drops the points before cut.
func trim(s []Point, cut time.Time) []Point {
	i := 0
	for i < len(s) && s[i].Time.Before(cut) {
		i++
	}
	if i == 0 {
		return s
	}
	return append(s[:0], s[i:]...)
}

// NodeKey names a node across samples.
func NodeKey(radio, mac string) string { return radio + "/" + mac }
