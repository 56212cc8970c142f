package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/coap/stream"
)

// loadStream is load over CoAP over TCP or WebSockets (RFC 8323): c
// closed-loop clients, each on a connection of its own, sending GETs with
// Proxy-Uri to the proxy at addr.
func loadStream(ctx context.Context, over, addr, target string, clients int, dur, timeout time.Duration) error {
	cl := stream.NewClient(stream.Config{})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	req := &coap.Message{Code: coap.GET, Options: coap.Options(nil).Insert(coap.ProxyURI, []byte(target))}
	return report(clients, func() ([]time.Duration, int) {
		c, err := dialStream(context.Background(), cl, over, addr)
		if err != nil {
			return nil, 1
		}
		defer c.Close()
		var my []time.Duration
		e := 0
		for ctx.Err() == nil {
			t0 := time.Now()
			rctx, rcancel := context.WithTimeout(context.Background(), timeout)
			resp, err := c.Do(rctx, req)
			rcancel()
			if err != nil || resp.Code != coap.Content {
				e++
				continue
			}
			my = append(my, time.Since(t0))
		}
		return my, e
	})
}

func dialStream(ctx context.Context, cl *stream.Client, over, addr string) (*stream.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if over == "ws" {
		return cl.DialWS(ctx, "ws://"+addr+"/.well-known/coap", nil)
	}
	return cl.Dial(ctx, addr, nil)
}

// idle opens n connections to addr, each past its CSM exchange with one
// request answered, prints "ready" and holds them until interrupted: the
// server's memory per idle connection is then measured from outside.
func idle(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("idle", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:5683", "proxy TCP address")
	over := fs.String("over", "tcp", "tcp or ws")
	n := fs.Int("n", 1000, "connections")
	target := fs.String("target", "", "Proxy-Uri of the request each connection makes; default: the proxy's /.well-known/core")
	fs.Parse(args)
	cl := stream.NewClient(stream.Config{})
	defer cl.Close()
	wk := &coap.Message{Code: coap.GET, Options: coap.Options(nil).Insert(coap.URIPath, []byte(".well-known")).Insert(coap.URIPath, []byte("core"))}
	if *target != "" {
		wk = &coap.Message{Code: coap.GET, Options: coap.Options(nil).Insert(coap.ProxyURI, []byte(*target))}
	}
	for i := range *n {
		c, err := dialStream(ctx, cl, *over, *addr)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = c.Do(rctx, wk)
		cancel()
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
	}
	fmt.Println("ready")
	<-ctx.Done()
	return nil
}
