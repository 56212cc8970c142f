package radio_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/sim"
	"github.com/opaque-edge/gatewayd/radio/sixlowpan"
)

// pcapFrames reads the MPDUs (without FCS) of a LINKTYPE 195 capture.
func pcapFrames(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 24 {
		t.Fatalf("capture: %v, %d bytes", err, len(b))
	}
	var out [][]byte
	for b = b[24:]; len(b) >= 16; {
		n := int(binary.LittleEndian.Uint32(b[8:]))
		if len(b) < 16+n || n < mac.FCSLen {
			t.Fatalf("capture: truncated record")
		}
		out = append(out, b[16:16+n-mac.FCSLen])
		b = b[16+n:]
	}
	return out
}

// TestGroupRequestsGoOutAsBroadcastFramesWithMulticastIPHC sends group
// requests through a simulated radio (fake RCP, real spinel driver) to
// All CoAP Nodes of three scopes and to a group of some nodes: each goes
// out once, to the broadcast address 0xffff without an ACK request (RFC
// 4944 §3, IEEE 802.15.4 §6.7.4.1), its destination compressed as RFC
// 6282 §3.1.1 and §3.2.4 say, octet for octet; every member answers; and
// tshark, an independent decoder, reads the same frames the same way.
func TestGroupRequestsGoOutAsBroadcastFramesWithMulticastIPHC(t *testing.T) {
	pcapPath := filepath.Join(t.TempDir(), "group.pcap")
	hall := netip.MustParseAddr("ff05::1:3")
	cfg := radio.Config{Name: "sim0", Driver: "sim", Channel: 15, PANID: 0xFACE, PCAP: pcapPath,
		Options: sim.Config{Nodes: 3, Leisure: radio.Duration{Duration: 20 * time.Millisecond},
			Groups: []sim.GroupConfig{{Address: hall, Nodes: []int{2}}}}}
	r, err := radio.Open(ctxT(t, 10*time.Second), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.WaitUp(ctxT(t, 15*time.Second)); err != nil {
		t.Fatal(err)
	}
	ep := coap.NewEndpoint(r.Conn(), coap.EndpointConfig{Params: r.Params()})
	defer ep.Close()
	n, _ := sim.FromLink(r.Link())

	// The IPHC octets (RFC 6282 §3.1.1) of each request: 011, TF=11 (no
	// traffic class or flow label), NH=1 (NHC UDP), HLIM=10 (64); then
	// CID=0; SAC/SAM: a link-local source from the frame's MAC address is
	// SAC=0 SAM=11, a source of context 0 from it SAC=1 SAM=11; M=1 DAC=0
	// and DAM=11 for ff02::00XX (one octet in-line) or DAM=10 for
	// ffXX::00XX:XXXX (four). NHC UDP F0 with both ports in-line follows.
	cases := []struct {
		group   netip.Addr
		members int
		iphc    string
	}{
		{netip.MustParseAddr("ff02::fd"), 3, "7e3b" + "fd"},
		{netip.MustParseAddr("ff03::fd"), 3, "7e7a" + "030000fd"},
		{netip.MustParseAddr("ff05::fd"), 3, "7e7a" + "050000fd"},
		{hall, 1, "7e7a" + "05010003"},
	}
	for _, c := range cases {
		var mu sync.Mutex
		from := map[netip.Addr]bool{}
		all := make(chan struct{})
		g, err := ep.Group(netip.AddrPortFrom(c.group, 5683), request(coap.GET, "/sensors/temp", nil), func(a netip.AddrPort, m *coap.Message) {
			mu.Lock()
			defer mu.Unlock()
			from[a.Addr()] = true
			if len(from) == c.members {
				close(all)
			}
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-all:
		case <-time.After(20 * time.Second):
			t.Fatalf("%v: %d of %d members answered", c.group, len(from), c.members)
		}
		g.Stop()
	}
	if hallNode := n.SimNodes()[1]; hallNode.GroupRequests() != 4 || n.SimNodes()[0].GroupRequests() != 3 {
		t.Fatalf("group requests seen: %d and %d", hallNode.GroupRequests(), n.SimNodes()[0].GroupRequests())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	var sent [][]byte
	for _, b := range pcapFrames(t, pcapPath) {
		f, err := mac.Decode(b)
		if err == nil && f.Dst.IsBroadcast() && f.Type == mac.TypeData {
			sent = append(sent, b)
		}
	}
	if len(sent) != len(cases) {
		t.Fatalf("%d broadcast frames in the capture, want one per group request (%d)", len(sent), len(cases))
	}
	codec := sixlowpan.NewCodec(r.Prefix())
	for i, b := range sent {
		f, _ := mac.Decode(b)
		want, _ := hex.DecodeString(cases[i].iphc + "f0" + "16331633")
		if f.AckRequest || !bytes.HasPrefix(f.Payload, want) {
			t.Fatalf("%v: frame %x: ack request %v, 6LoWPAN % x, want it to start % x", cases[i].group, b, f.AckRequest, f.Payload, want)
		}
		hdr, used, err := codec.AppendDecompressed(nil, f.Payload, f.Src, f.Dst, 0)
		if err != nil {
			t.Fatal(err)
		}
		pkt := append(hdr, f.Payload[used:]...)
		u, err := sixlowpan.ParseUDP(pkt)
		if err != nil || u.Dst.Addr() != cases[i].group {
			t.Fatalf("%v: decompressed to %v, %v", cases[i].group, u.Dst, err)
		}
		// Encoding the decoded packet again gives the same octets.
		again, consumed, err := codec.AppendCompressed(nil, pkt, f.Src, f.Dst)
		if err != nil || !bytes.Equal(append(again, pkt[consumed:]...), f.Payload) {
			t.Fatalf("%v: re-encoded % x, sent % x (%v)", cases[i].group, again, f.Payload, err)
		}
	}

	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Fatal("tshark not installed (Debian package tshark); the capture cannot be checked")
	}
	cmd := exec.Command(tshark, "-r", pcapPath, "-d", "udp.port==5683,coap", "-o", "6lowpan.context0:"+r.Prefix().String(),
		"-Y", "wpan.dst16 == 0xffff", "-T", "fields", "-E", "separator=|",
		"-e", "wpan.ack_request", "-e", "6lowpan.iphc.m", "-e", "6lowpan.iphc.dam", "-e", "ipv6.dst", "-e", "coap.code", "-e", "coap.opt.uri_path")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	rows := strings.Split(strings.TrimSpace(string(out)), "\n")
	dam := map[string]string{"ff02::fd": "0x0003", "ff03::fd": "0x0002", "ff05::fd": "0x0002", "ff05::1:3": "0x0002"}
	if len(rows) != len(cases) {
		t.Fatalf("tshark reads %d broadcast frames:\n%s", len(rows), out)
	}
	for i, row := range rows {
		g := cases[i].group.String()
		// tshark prints booleans as True/1 depending on its version.
		f := strings.Split(row, "|")
		if len(f) != 6 || (f[0] != "False" && f[0] != "0") || (f[1] != "True" && f[1] != "1") || f[2] != dam[g] || f[3] != g || f[4] != "1" || f[5] != "sensors,temp" {
			t.Errorf("tshark reads %q, want no ack request, M=1, DAM %s, dst %s, GET sensors/temp", row, dam[g], g)
		}
	}
}
