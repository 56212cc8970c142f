// Package console is gatewayd's operator console: a read-only web page
// and the same data as JSON under /api/v1/, served on the admin endpoint
// beside /metrics. The page is plain HTML rendered on the server with
// html/template (every string from a node, a client or a configuration
// file is escaped, SVG included), refreshes itself with a meta refresh and
// runs no script. The plots are inline SVG drawn from a History that a
// ticker fills, so showing the page costs the proxy's request path
// nothing.
//
// The package knows nothing of the proxy: bridge fills a Snapshot and the
// History; console renders and serves them.
package console

import (
	"time"
)

// APIVersion is the version of the JSON under /api/v1/: fields may be
// added to it, none renamed or removed.
const APIVersion = 1

// Snapshot is the gateway's state at one moment: what /api/v1/status
// serves and the page shows. Strings in it may come from nodes, clients
// and configuration files; whoever renders them escapes them.
type Snapshot struct {
	APIVersion    int        `json:"api_version"`
	Version       string     `json:"version"`
	GoVersion     string     `json:"goversion"`
	Started       time.Time  `json:"started"`
	Now           time.Time  `json:"now"`
	UptimeSeconds float64    `json:"uptime_seconds"`
	Listeners     []Listener `json:"listeners"`
	Radios        []Radio    `json:"radios"`
	Nodes         []Node     `json:"nodes"`
	Routes        []Route    `json:"routes"`
	Observe       Observe    `json:"observe"`
	Cache         Cache      `json:"cache"`
	PubSub        *PubSub    `json:"pubsub,omitempty"` // nil unless the broker runs
	Plugins       []Plugin   `json:"plugins"`
	// Requests is the count of requests answered since the start, and
	// RequestRate the rate over the last sampling interval (per second).
	Requests    uint64  `json:"requests"`
	RequestRate float64 `json:"request_rate"`
	// Errors are the last warnings and errors logged, newest first.
	Errors []LogEntry `json:"errors"`
}

// Listener is one CoAP listener and its message-layer counters.
type Listener struct {
	Listen    string `json:"listen"` // the configuration entry, or systemd:coap/N
	Addr      string `json:"addr"`
	Received  uint64 `json:"received"`
	Sent      uint64 `json:"sent"`
	Malformed uint64 `json:"malformed"`
	Refused   uint64 `json:"refused"`
}

// Radio is one [[radio]] and its state.
type Radio struct {
	Name         string `json:"name"`
	Driver       string `json:"driver"`
	Device       string `json:"device,omitempty"`
	State        string `json:"state"` // "up" or "down"
	Channel      int    `json:"channel"`
	PANID        int    `json:"pan_id"`
	Prefix       string `json:"prefix"`
	RCPVersion   string `json:"rcp_version,omitempty"` // the firmware, when the driver tells it
	FramesTx     uint64 `json:"frames_tx"`
	FramesRx     uint64 `json:"frames_rx"`
	TxErrors     uint64 `json:"tx_errors"`
	DecodeErrors uint64 `json:"decode_errors"`
	Dropped      uint64 `json:"dropped"` // received frames and datagrams dropped, for any reason
	Reconnects   uint64 `json:"reconnects"`
	LastError    string `json:"last_error,omitempty"`
}

// Node is one node a radio heard or sent to.
type Node struct {
	Radio string   `json:"radio"`
	MAC   string   `json:"mac"`
	Addrs []string `json:"addrs"`
	// Name is the node's endpoint name in the Resource Directory, when
	// one names it.
	Name      string     `json:"name,omitempty"`
	LastHeard *time.Time `json:"last_heard,omitempty"` // nil: never heard
	RSSI      *int       `json:"rssi,omitempty"`       // dBm of its last frame; nil: unknown
	LQI       *int       `json:"lqi,omitempty"`
	FramesRx  uint64     `json:"frames_rx"`
	FramesTx  uint64     `json:"frames_tx"`
}

// Route is one [[route]].
type Route struct {
	Name   string `json:"name"`
	Target string `json:"target"`
}

// Observe is the Observe hub: its counters and the resources it
// observes.
type Observe struct {
	Observers        int        `json:"observers"`
	Upstreams        int        `json:"upstreams"`
	NotificationsIn  uint64     `json:"notifications_in"`
	NotificationsOut uint64     `json:"notifications_out"`
	Resources        []Observed `json:"resources"` // most observers first, bounded
}

// Observed is one resource observed upstream.
type Observed struct {
	Resource  string `json:"resource"`
	Observers int    `json:"observers"`
	Protected bool   `json:"protected"` // OSCORE: named by its outer options only
}

// Cache is the response cache.
type Cache struct {
	Entries   int      `json:"entries"`
	Bytes     int64    `json:"bytes"`
	Hits      uint64   `json:"hits"`
	Misses    uint64   `json:"misses"`
	Evictions uint64   `json:"evictions"`
	HitRate   *float64 `json:"hit_rate,omitempty"` // hits/(hits+misses); nil before either
}

// PubSub is the broker.
type PubSub struct {
	Topics        int     `json:"topics"`
	Subscriptions int     `json:"subscriptions"`
	Publications  uint64  `json:"publications"`
	TopicList     []Topic `json:"topic_list"` // bounded
}

// Topic is one broker topic.
type Topic struct {
	Name          string     `json:"name"` // as its creator sent it
	Path          string     `json:"path"`
	DataPath      string     `json:"data_path"`
	ContentFormat *int       `json:"content_format,omitempty"`
	FullyCreated  bool       `json:"fully_created"`
	Subscriptions int        `json:"subscriptions"`
	LastPublished *time.Time `json:"last_published,omitempty"`
}

// Plugin is one [[plugin]] and its state.
type Plugin struct {
	Name      string     `json:"name"`
	Path      string     `json:"path"`
	State     string     `json:"state"` // "up" or "down"
	PID       int        `json:"pid,omitempty"`
	Starts    uint64     `json:"starts"`
	Restarts  uint64     `json:"restarts"`
	Failures  uint64     `json:"start_failures"`
	LastError string     `json:"last_error,omitempty"`
	RetryAt   *time.Time `json:"retry_at,omitempty"` // while down: the next start
}

// LogEntry is one warning or error logged.
type LogEntry struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
	Attrs   string    `json:"attrs,omitempty"` // key=value pairs
}

// state names an up flag for people and the API.
func State(up bool) string {
	if up {
		return "up"
	}
	return "down"
}
