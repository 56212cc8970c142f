package radio_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/radio"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/sim"
)

// TestNodeSending2015FramesIsAnswered puts a node that sends IEEE
// 802.15.4-2015 frames (frame version 2, no sequence numbers, a CSL header
// IE, HT1, a vendor payload IE and PT before every payload) on the
// simulated air, behind the fake RCP and the real spinel driver on a pty.
// The gateway answers the node's CoAP request, gets the node's answers
// to its own, fragmented ones too, and drops none of the node's frames;
// tshark reads the capture as version 2 frames carrying that CoAP.
func TestNodeSending2015FramesIsAnswered(t *testing.T) {
	pcapPath := filepath.Join(t.TempDir(), "v2.pcap")
	cfg := radio.Config{Name: "sim0", Driver: "sim", Channel: 15, PANID: 0xFACE, PCAP: pcapPath,
		AckTimeout: radio.Duration{Duration: time.Second}}
	r, err := radio.Open(ctxT(t, 10*time.Second), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.WaitUp(ctxT(t, 15*time.Second)); err != nil {
		t.Fatal(err)
	}
	gwServed := make(chan string, 4)
	ep := coap.NewEndpoint(r.Conn(), coap.EndpointConfig{Params: r.Params(),
		Handler: coap.HandlerFunc(func(_ context.Context, w coap.ResponseWriter, req *coap.Request) error {
			var path []string
			for v := range req.Msg.Options.All(coap.URIPath) {
				path = append(path, string(v))
			}
			gwServed <- strings.Join(path, "/")
			return w.WriteResponse(&coap.Message{Code: coap.Content, Payload: []byte("hello node")})
		})})
	defer ep.Close()
	n, _ := sim.FromLink(r.Link())

	ies, _ := mac.AppendHeaderIE(nil, 0x1a, []byte{0x10, 0x00, 0x64, 0x00}) // CSL IE
	ies, _ = mac.AppendHeaderIE(ies, mac.IEHT1, nil)
	ies, _ = mac.AppendPayloadIE(ies, 2, []byte{0x00, 0x12, 0x4b}) // vendor specific
	ies, _ = mac.AppendPayloadIE(ies, mac.IEPT, nil)
	node, err := sim.NewNode(n.Air(), sim.NodeConfig{
		ExtAddr: mac.ExtendedAddrUint64(0x0200_0000_0000_0042), PANID: cfg.PANID, Prefix: r.Prefix(),
		Params: r.Params(), FrameVersion: mac.Version2015, SuppressSeq: true, IEs: ies,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()

	// The node asks the gateway.
	resp, err := node.Endpoint().Do(ctxT(t, 30*time.Second), r.Conn().LocalAddr(), request(coap.GET, "/hello", nil))
	if err != nil {
		t.Fatalf("the node's request: %v (gateway counters %+v)", err, r.Counters().Conn)
	}
	if resp.Code != coap.Content || string(resp.Payload) != "hello node" || <-gwServed != "hello" {
		t.Fatalf("the node got %v %q", resp.Code, resp.Payload)
	}
	// The gateway asks the node; the answers come in version 2 frames,
	// the echo in fragments of them.
	if resp := do(t, ep, node.Addr(), request(coap.GET, "/sensors/temp", nil)); resp.Code != coap.Content {
		t.Fatalf("GET temp: %v", resp.Code)
	}
	big := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz!"), 11)[:400]
	if resp := do(t, ep, node.Addr(), request(coap.POST, "/echo", big)); resp.Code != coap.Changed || !bytes.Equal(resp.Payload, big) {
		t.Fatalf("echo: %v, %d octets back", resp.Code, len(resp.Payload))
	}
	c := r.Counters().Conn
	if c.DecodeErrors != 0 || c.Reassembly.Reassembled == 0 {
		t.Errorf("gateway counters %+v: want no decode errors and a reassembled datagram", c)
	}
	for reason, v := range c.Drops {
		if strings.HasPrefix(reason, "mac_") && v != 0 {
			t.Errorf("%d frames dropped as %s", v, reason)
		}
	}
	ep.Close()
	node.Close()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// The node's frames were version 2 with its IEs, and carried the CoAP
	// messages, as an independent decoder sees them.
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Fatal("tshark not installed (Debian package tshark); the capture cannot be checked")
	}
	run := func(args ...string) string {
		t.Helper()
		args = append([]string{"-r", pcapPath, "-d", "udp.port==5683,coap", "-o", "6lowpan.context0:" + r.Prefix().String()}, args...)
		cmd := exec.Command(tshark, args...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tshark %v: %v\n%s", args, err, stderr.Bytes())
		}
		return string(out)
	}
	if bad := strings.TrimSpace(run("-Y", `_ws.malformed || _ws.expert.severity >= "error" || wpan.fcs.bad`)); bad != "" {
		t.Errorf("tshark finds errors:\n%s", bad)
	}
	rows := strings.Split(strings.TrimSpace(run("-Y", "wpan.version == 2 && coap", "-T", "fields", "-E", "separator=|",
		"-e", "coap.code", "-e", "wpan.seqno_suppression", "-e", "wpan.header_ie.id", "-e", "wpan.payload_ie.id")), "\n")
	t.Logf("version 2 frames with CoAP, as tshark reads them (code|seq suppressed|header IEs|payload IEs):\n%s", strings.Join(rows, "\n"))
	for _, code := range []coap.Code{coap.GET, coap.Content, coap.Changed} {
		want := strconv.Itoa(int(code)) + "|1|0x001a,0x007e|0x0002,0x000f"
		if !slices.Contains(rows, want) {
			t.Errorf("no version 2 frame %q", want)
		}
	}
}
