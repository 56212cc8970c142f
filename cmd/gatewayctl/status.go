package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"
)

// runStatus prints gatewayd's state at a glance from its admin endpoint
// ([metrics] listen; loopback by default).
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", "127.0.0.1:9683", "gatewayd's admin endpoint (`host:port`, [metrics] listen)")
	raw := fs.Bool("json", false, "print the raw JSON")
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
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return withCode(exitNetwork, fmt.Errorf("status: is gatewayd running with [metrics] listen = %q? %w", *admin, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return withCode(exitNetwork, fmt.Errorf("status: %s %v", resp.Status, err))
	}
	if *raw {
		_, err := stdout.Write(body)
		return err
	}
	var st struct {
		Listen    []string                  `json:"listen"`
		Uptime    string                    `json:"uptime"`
		Cache     map[string]any            `json:"cache"`
		Observe   map[string]any            `json:"observe"`
		Radios    map[string]map[string]any `json:"radios"`
		Endpoints map[string]map[string]any `json:"endpoints"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return withCode(exitNetwork, fmt.Errorf("status: bad answer: %w", err))
	}
	fmt.Fprintf(stdout, "gatewayd up %s, listening on %v\n", st.Uptime, st.Listen)
	for _, name := range sortedKeys(st.Endpoints) {
		e := st.Endpoints[name]
		fmt.Fprintf(stdout, "  %-28s received %v, sent %v, malformed %v, refused %v\n", name, e["Received"], e["Sent"], e["Malformed"], e["Refused"])
	}
	fmt.Fprintf(stdout, "cache    %v entries, %v bytes; hits %v, misses %v, evictions %v\n",
		st.Cache["Entries"], st.Cache["Bytes"], st.Cache["Hits"], st.Cache["Misses"], st.Cache["Evictions"])
	fmt.Fprintf(stdout, "observe  %v observers, %v upstream observations; notifications in %v, out %v\n",
		st.Observe["Observers"], st.Observe["Upstreams"], st.Observe["NotificationsIn"], st.Observe["NotificationsOut"])
	for _, name := range sortedKeys(st.Radios) {
		r := st.Radios[name]
		state := "DOWN"
		if up, _ := r["Up"].(bool); up {
			state = "up"
		}
		conn, _ := r["Conn"].(map[string]any)
		link, _ := r["Link"].(map[string]any)
		fmt.Fprintf(stdout, "radio    %s %s; frames tx %v rx %v; reconnects %v\n", name, state, conn["FramesTx"], conn["FramesRx"], link["Reconnects"])
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
