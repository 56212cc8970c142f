package console

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// BenchmarkRenderFullPage renders the page of a gateway with
// MaxPlotNodes nodes and an hour of history each: the cost of one page
// view or one live fragment.
func BenchmarkRenderFullPage(b *testing.B) {
	now := time.Now()
	h := NewHistory(0, 0)
	snap := fixture(now)
	snap.Nodes = nil
	for i := range MaxPlotNodes {
		rssi, lqi := -60-i%30, 100+i
		heard := now
		snap.Nodes = append(snap.Nodes, Node{Radio: "sim", MAC: fmt.Sprintf("02:00:00:00:00:00:00:%02x", i), Addrs: []string{"fd00::1"}, LastHeard: &heard, RSSI: &rssi, LQI: &lqi})
	}
	for s := 240; s >= 0; s-- {
		at := now.Add(-time.Duration(s) * DefaultInterval)
		sample := Sample{Time: at, Requests: uint64(1000 * (240 - s))}
		for _, n := range snap.Nodes {
			sample.Nodes = append(sample.Nodes, NodeSample{Key: NodeKey(n.Radio, n.MAC), LastHeard: at, RSSI: n.RSSI, LQI: n.LQI})
		}
		h.Add(sample)
	}
	s := New(Config{Snapshot: func() Snapshot { return snap }, History: h})
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := pageTemplate.ExecuteTemplate(&buf, "page", s.view()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(buf.Len()), "bytes/page")
}
