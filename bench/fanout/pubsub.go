package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/observe/pubsub"
)

type pubsubResult struct {
	Subscribers     int     `json:"subscribers"`
	Publishers      int     `json:"publishers"`
	Seconds         float64 `json:"seconds"`
	Accepted        int64   `json:"accepted"` // 2.01 and 2.04
	TooFast         int64   `json:"rejected_429"`
	Failed          int64   `json:"failed"` // other codes and timeouts
	PubPerSec       float64 `json:"publications_per_s"`
	PubAckP50Ms     float64 `json:"publish_ack_p50_ms"`
	PubAckP99Ms     float64 `json:"publish_ack_p99_ms"`
	Delivered       int64   `json:"notifications_in_window"`
	DeliveredPerSec float64 `json:"notifications_per_s"`
	Total           int64   `json:"notifications_total"` // including the drain after the window
	SeenFraction    float64 `json:"seen_fraction"`       // total / (accepted × subscribers)
	LatP50Ms        float64 `json:"publish_to_subscriber_p50_ms"`
	LatP99Ms        float64 `json:"publish_to_subscriber_p99_ms"`
	LatMaxMs        float64 `json:"publish_to_subscriber_max_ms"`
	Before          proc    `json:"gw_before"`
	Subscribed      proc    `json:"gw_subscribed"`
	After           proc    `json:"gw_after"`
	GwCPUSecs       float64 `json:"gw_cpu_s_in_window"`
	ClientCPUSecs   float64 `json:"client_cpu_s"`
}

func pubsubBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("pubsub", flag.ExitOnError)
	gw := fs.String("gw", "127.0.0.1:5897", "gatewayd's UDP address")
	pid := fs.Int("pid", 0, "gatewayd's process ID, for VmRSS and CPU time")
	subs := fs.Int("subs", 1000, "subscribers")
	nsock := fs.Int("sockets", 20, "subscriber sockets (each on its own 127.0.1.x address)")
	pubs := fs.Int("pubs", 4, "closed-loop publishers, each on its own socket")
	dur := fs.Duration("d", 10*time.Second, "publishing time")
	drain := fs.Duration("drain", 2*time.Second, "wait for notifications after publishing")
	cf := fs.Uint("cf", 65001, "the broker's content_format for application/core-pubsub+cbor")
	fs.Parse(args)

	proxy, err := netip.ParseAddrPort(*gw)
	if err != nil {
		return err
	}
	eps, err := clients(ctx, *nsock+*pubs)
	if err != nil {
		return err
	}
	defer closeAll(eps)
	subEPs, pubEPs := eps[:*nsock], eps[*nsock:]
	res := pubsubResult{Subscribers: *subs, Publishers: *pubs}
	if res.Before, err = readProc(*pid); err != nil {
		return err
	}

	// Create the topic and make it fully created with a first publication.
	name, rt, tcf := fmt.Sprintf("bench-%d", time.Now().UnixNano()), pubsub.RTData, uint16(0)
	props := pubsub.Properties{TopicName: &name, ResourceType: &rt, TopicContentFormat: &tcf}
	body, err := props.Encode()
	if err != nil {
		return err
	}
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := pubEPs[0].Do(c, proxy, &coap.Message{Code: coap.POST,
		Options: pathOptions("ps").SetUint(coap.ContentFormat, uint32(*cf)), Payload: body})
	cancel()
	if err != nil || resp.Code != coap.Created {
		return fmt.Errorf("create topic: %v %v", resp, err)
	}
	got, err := pubsub.DecodeProperties(resp.Payload)
	if err != nil || got.TopicData == nil {
		return fmt.Errorf("created topic has no topic-data: %v", err)
	}
	data := pathOptions(*got.TopicData)
	publish := func(ctx context.Context, ep *coap.Endpoint, seq uint64) (coap.Code, error) {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := ep.Do(c, proxy, &coap.Message{Code: coap.PUT,
			Options: append(coap.Options(nil), data...).SetUint(coap.ContentFormat, uint32(tcf)), Payload: stamp(seq)})
		if err != nil {
			return 0, err
		}
		return resp.Code, nil
	}
	if code, err := publish(ctx, pubEPs[0], 0); err != nil || code != coap.Created {
		return fmt.Errorf("first publication: %v %v", code, err)
	}

	// Subscribers: each socket's receipts are written by its reader
	// goroutine only, so each has its own slice.
	var (
		window   atomic.Int64 // end of the publishing window, unix ns; 0 while open-ended
		inWindow atomic.Int64
		total    atomic.Int64
		started  atomic.Bool
	)
	lats := make([][]time.Duration, len(subEPs))
	notify := func(e int) func(*coap.Message) {
		return func(m *coap.Message) {
			now := time.Now()
			seq, sent, ok := parseStamp(m.Payload)
			if !ok || seq == 0 || !started.Load() {
				return
			}
			total.Add(1)
			if w := window.Load(); w == 0 || now.UnixNano() <= w {
				inWindow.Add(1)
			}
			lats[e] = append(lats[e], now.Sub(sent))
		}
	}
	req := func() *coap.Message {
		return &coap.Message{Code: coap.GET, Options: append(coap.Options(nil), data...)}
	}
	if err := register(ctx, subEPs, proxy, req, *subs, 64, notify); err != nil {
		return err
	}
	time.Sleep(time.Second)
	if res.Subscribed, err = readProc(*pid); err != nil {
		return err
	}

	// Publishers: closed loop, each waits for its ack before the next.
	var (
		seq      atomic.Uint64
		mu       sync.Mutex
		ackLats  []time.Duration // guarded by mu
		accepted atomic.Int64
		tooFast  atomic.Int64
		failed   atomic.Int64
		wg       sync.WaitGroup
	)
	pctx, pcancel := context.WithTimeout(ctx, *dur)
	defer pcancel()
	started.Store(true)
	cpu0, _ := readProc(*pid)
	t0 := time.Now()
	for _, ep := range pubEPs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var my []time.Duration
			for pctx.Err() == nil {
				s := time.Now()
				code, err := publish(ctx, ep, seq.Add(1))
				switch {
				case err != nil:
					failed.Add(1)
				case code == coap.Created || code == coap.Changed:
					accepted.Add(1)
					my = append(my, time.Since(s))
				case code == coap.TooManyRequests:
					tooFast.Add(1)
				default:
					failed.Add(1)
				}
			}
			mu.Lock()
			ackLats = append(ackLats, my...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	window.Store(time.Now().UnixNano())
	cpu1, _ := readProc(*pid)
	time.Sleep(*drain)

	res.Seconds = elapsed.Seconds()
	res.Accepted, res.TooFast, res.Failed = accepted.Load(), tooFast.Load(), failed.Load()
	res.PubPerSec = float64(res.Accepted) / res.Seconds
	slices.Sort(ackLats)
	res.PubAckP50Ms, res.PubAckP99Ms = pct(ackLats, 0.5), pct(ackLats, 0.99)
	res.Delivered, res.Total = inWindow.Load(), total.Load()
	res.DeliveredPerSec = float64(res.Delivered) / res.Seconds
	if res.Accepted > 0 {
		res.SeenFraction = float64(res.Total) / float64(res.Accepted*int64(*subs))
	}
	// The readers are idle after the drain; closing the sockets first
	// makes that certain before the slices are read.
	closeAll(eps)
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	res.LatP50Ms, res.LatP99Ms, res.LatMaxMs = pct(all, 0.5), pct(all, 0.99), pct(all, 1)
	res.GwCPUSecs = cpu1.CPUSecs - cpu0.CPUSecs
	if res.After, err = readProc(*pid); err != nil {
		return err
	}
	res.ClientCPUSecs = selfCPU()
	return json.NewEncoder(os.Stdout).Encode(res)
}
