package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/opaque-edge/gatewayd/coap"
)

const groupUsage = `Usage: gatewayctl group [flags] URI

Sends one request to a group of nodes through a gatewayd proxy
(draft-ietf-core-groupcomm-proxy) and prints every node's response as it
comes, until -t: URI's host is an IPv6 multicast address (All CoAP Nodes
is [ff03::fd], [ff05::fd]) or a [[group]] name. Each line: the time since
the request, the responding node (its Reply-From), the code, the payload.

Flags:
`

// runGroup is "gatewayctl group". Unlike a plain request it keeps its
// token after the first response (§5.1.1 step 2): every node's answer
// comes with it.
func runGroup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gatewayctl group", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), groupUsage)
		fs.PrintDefaults()
	}
	proxy := fs.String("proxy", "coap://127.0.0.1:5683", "the gatewayd proxy, `URI` coap://host:port")
	method := fs.String("m", "get", "the `method`: get, put, post or delete")
	payload := fs.String("e", "", "request `payload`")
	wait := fs.Uint("t", 5, "Multicast-Timeout: `seconds` to take responses for")
	mtOpt := fs.Uint("mt-option", 65002, "the Multicast-Timeout option `number` ([groupcomm] multicast_timeout_option)")
	rfOpt := fs.Uint("rf-option", 65004, "the Reply-From option `number` ([groupcomm] reply_from_option)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageErr("group: want exactly one URI, got %d arguments", fs.NArg())
	}
	code, ok := methods[strings.ToLower(*method)]
	if !ok || *method == "observe" {
		return usageErr("group: -m %q: want get, put, post or delete", *method)
	}
	if *mtOpt == 0 || *mtOpt > 0xffff || *rfOpt == 0 || *rfOpt > 0xffff || *wait > 3600 {
		return usageErr("group: option numbers 1 to 65535 and -t up to 3600 s, please")
	}
	if _, err := coap.ParseURI(fs.Arg(0)); err != nil {
		return usageErr("group: %v", err)
	}
	pu, err := coap.ParseURI(*proxy)
	if err != nil || pu.Scheme != "coap" {
		return usageErr("group: -proxy %q: want coap://host:port", *proxy)
	}
	paddr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(pu.Host, fmt.Sprint(pu.Port)))
	if err != nil {
		return withCode(exitNetwork, fmt.Errorf("group: %w", err))
	}
	conn, err := net.DialUDP("udp", nil, paddr)
	if err != nil {
		return withCode(exitNetwork, fmt.Errorf("group: %w", err))
	}
	defer conn.Close()
	req := &coap.Message{Type: coap.Confirmable, Code: code, Token: make([]byte, 8), MID: uint16(os.Getpid())}
	rand.Read(req.Token)
	req.Options = req.Options.Insert(coap.ProxyURI, []byte(fs.Arg(0))).
		Insert(coap.OptionID(*mtOpt), coap.EncodeUint(uint32(*wait)))
	if *payload != "" {
		req.Payload = []byte(*payload)
		req.Options = req.Options.SetUint(coap.ContentFormat, 0)
	}
	b, err := req.Marshal()
	if err != nil {
		return usageErr("group: %v", err)
	}
	start := time.Now()
	// A little past -t: the last response may be on its way.
	deadline := start.Add(time.Duration(*wait)*time.Second + time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	if _, err := conn.Write(b); err != nil {
		return withCode(exitNetwork, fmt.Errorf("group: %w", err))
	}
	acked := false
	n := 0
	buf := make([]byte, 2048)
	for {
		conn.SetReadDeadline(deadline)
		k, err := conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || ctx.Err() != nil {
				break
			}
			return withCode(exitNetwork, fmt.Errorf("group: %w", err))
		}
		var m coap.Message
		if m.Decode(buf[:k]) != nil {
			continue
		}
		if m.Type == coap.Confirmable {
			ack := coap.Message{Type: coap.Acknowledgement, MID: m.MID}
			if a, err := ack.Marshal(); err == nil {
				conn.Write(a)
			}
		}
		if m.Type == coap.Acknowledgement && m.MID == req.MID {
			acked = true
		}
		if m.Code == coap.Empty || string(m.Token) != string(req.Token) {
			continue
		}
		v, ok := m.Options.Get(coap.OptionID(*rfOpt))
		if !ok {
			// The proxy's own answer: a refusal (4.00, 4.01, 4.29, 5.05).
			return withCode(exitResponse, fmt.Errorf("group: the proxy answered %d.%02d %s", m.Code>>5, m.Code&0x1f, m.Payload))
		}
		n++
		from, err := replyFromString(v)
		if err != nil {
			fmt.Fprintf(stderr, "gatewayctl: group: Reply-From %x: %v\n", v, err)
		}
		fmt.Fprintf(stdout, "+%dms %s %d.%02d ", time.Since(start).Milliseconds(), from, m.Code>>5, m.Code&0x1f)
		if len(m.Payload) == 0 {
			fmt.Fprintln(stdout)
		}
		writePayload(stdout, m.Payload)
	}
	fmt.Fprintf(stderr, "%d responses in %v\n", n, time.Since(start).Round(time.Millisecond))
	if n == 0 && !acked {
		return withCode(exitNetwork, errors.New("group: no answer from the proxy"))
	}
	return nil
}

// replyFromString reads a Reply-From value: a CBOR sequence whose first
// item is a CRI [scheme, [host, ?port]] (draft-ietf-core-href), as a URI.
func replyFromString(v []byte) (string, error) {
	var cri []any
	if _, err := cbor.UnmarshalFirst(v, &cri); err != nil {
		return "?", err
	}
	if len(cri) < 2 {
		return "?", fmt.Errorf("a CRI of %d elements", len(cri))
	}
	scheme := "coap"
	if s, ok := cri[0].(int64); ok && s != -1 {
		scheme = fmt.Sprintf("scheme%d", -1-s)
	}
	auth, ok := cri[1].([]any)
	if !ok || len(auth) == 0 {
		return "?", errors.New("no authority")
	}
	host, _ := auth[0].([]byte)
	a, ok := netip.AddrFromSlice(host)
	if !ok {
		return "?", errors.New("no IP host")
	}
	port := uint64(coap.DefaultPort(scheme))
	if len(auth) > 1 {
		if p, ok := auth[len(auth)-1].(uint64); ok {
			port = p
		}
	}
	return fmt.Sprintf("%s://%v", scheme, netip.AddrPortFrom(a, uint16(port))), nil
}
