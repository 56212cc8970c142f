package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/opaque-edge/gatewayd/console"
)

// runStatus prints gatewayd's state at a glance from its admin endpoint
// ([metrics] listen; loopback by default).
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", "127.0.0.1:9683", "gatewayd's admin endpoint (`host:port`, [metrics] listen)")
	raw := fs.Bool("json", false, "print the raw JSON")
	tokenFile := fs.String("token-file", "", "`file` with the admin endpoint's bearer token ([metrics] token_file)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("status takes no arguments")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*admin+"/status", nil)
	if err != nil {
		return usageErr("-admin %q: %v", *admin, err)
	}
	if *tokenFile != "" {
		tok, err := console.ReadToken(*tokenFile)
		if err != nil {
			return usageErr("-token-file: %v", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return withCode(exitNetwork, fmt.Errorf("status: is gatewayd running with [metrics] listen = %q? %w", *admin, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusUnauthorized {
		return withCode(exitNetwork, fmt.Errorf("status: %s: the admin endpoint wants its token (-token-file)", resp.Status))
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		return withCode(exitNetwork, fmt.Errorf("status: %s %v", resp.Status, err))
	}
	if *raw {
		_, err := stdout.Write(body)
		return err
	}
	var st adminStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return withCode(exitNetwork, fmt.Errorf("status: bad answer: %w", err))
	}
	printStatus(stdout, &st, time.Now())
	return nil
}

// adminStatus is what gatewayd's /status serves (bridge.Status), decoded
// without linking the proxy into this tool.
type adminStatus struct {
	Version       string  `json:"version"`
	GoVersion     string  `json:"goversion"`
	Uptime        string  `json:"uptime"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Listeners     []struct {
		Listen string `json:"listen"`
		Addr   string `json:"addr"`
	} `json:"listeners"`
	Routes []struct {
		Name   string `json:"name"`
		Target string `json:"target"`
	} `json:"routes"`
	Radios []struct {
		Name     string         `json:"name"`
		Driver   string         `json:"driver"`
		Device   string         `json:"device"`
		Prefix   string         `json:"prefix"`
		Up       bool           `json:"up"`
		Counters map[string]any `json:"counters"`
	} `json:"radios"`
	Plugins []struct {
		Name      string    `json:"name"`
		Path      string    `json:"path"`
		Up        bool      `json:"up"`
		PID       int       `json:"pid"`
		Starts    uint64    `json:"starts"`
		Restarts  uint64    `json:"restarts"`
		Failures  uint64    `json:"start_failures"`
		LastError string    `json:"last_error"`
		RetryAt   time.Time `json:"retry_at"`
	} `json:"plugins"`
	Cache     map[string]any            `json:"cache"`
	Observe   map[string]any            `json:"observe"`
	PubSub    map[string]any            `json:"pubsub"`
	Endpoints map[string]map[string]any `json:"endpoints"`
}

// printStatus writes st for an operator: one line per listener, route,
// radio and plugin, then the counters that matter at a glance.
func printStatus(w io.Writer, st *adminStatus, now time.Time) {
	fmt.Fprintf(w, "gatewayd %s (%s), up %s\n", st.Version, st.GoVersion, st.Uptime)
	for _, l := range st.Listeners {
		e := st.Endpoints[l.Listen]
		fmt.Fprintf(w, "listen   %s on %s: received %v, sent %v, malformed %v, refused %v\n",
			l.Listen, l.Addr, e["Received"], e["Sent"], e["Malformed"], e["Refused"])
	}
	for _, r := range st.Routes {
		fmt.Fprintf(w, "route    /%s → %s\n", r.Name, r.Target)
	}
	for _, r := range st.Radios {
		state := "DOWN"
		if r.Up {
			state = "up"
		}
		conn, _ := r.Counters["Conn"].(map[string]any)
		link, _ := r.Counters["Link"].(map[string]any)
		where := r.Driver
		if r.Device != "" {
			where += " " + r.Device
		}
		fmt.Fprintf(w, "radio    %s (%s, %s): %s; frames tx %v rx %v; reconnects %v\n",
			r.Name, where, r.Prefix, state, conn["FramesTx"], conn["FramesRx"], link["Reconnects"])
	}
	for _, p := range st.Plugins {
		if p.Up {
			fmt.Fprintf(w, "plugin   %s (%s): up, pid %d; starts %d, restarts %d\n", p.Name, p.Path, p.PID, p.Starts, p.Restarts)
			continue
		}
		next := "due"
		if d := p.RetryAt.Sub(now); d > 0 {
			next = "in " + d.Round(100*time.Millisecond).String()
		}
		fmt.Fprintf(w, "plugin   %s (%s): DOWN, next start %s; %d failed starts; %s\n", p.Name, p.Path, next, p.Failures, p.LastError)
	}
	fmt.Fprintf(w, "cache    %v entries, %v bytes; hits %v, misses %v, evictions %v\n",
		st.Cache["Entries"], st.Cache["Bytes"], st.Cache["Hits"], st.Cache["Misses"], st.Cache["Evictions"])
	fmt.Fprintf(w, "observe  %v observers, %v upstream observations; notifications in %v, out %v\n",
		st.Observe["Observers"], st.Observe["Upstreams"], st.Observe["NotificationsIn"], st.Observe["NotificationsOut"])
	if st.PubSub != nil {
		fmt.Fprintf(w, "pubsub   %v topics, %v subscriptions; publications %v\n",
			st.PubSub["Topics"], st.PubSub["Subscriptions"], st.PubSub["Publications"])
	}
}
