package coaptest

import (
	"context"
	"errors"
	"sync"

	"github.com/opaque-edge/gatewayd/coap"
)

// Observer stands for an Observe hub's registration in a stage's test
// (Request.Observer): it keeps the notifications the stage hands it and
// the cancel function of the observation the stage started. It is safe
// for concurrent use.
type Observer struct {
	mu     sync.Mutex
	notes  []*coap.Message
	cancel func(context.Context) error
	starts int
}

var _ coap.Observer = (*Observer)(nil)

// Notify keeps a copy of n.
func (o *Observer) Notify(n *coap.Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.notes = append(o.notes, n.Clone())
}

// Started counts the start and keeps cancel.
func (o *Observer) Started(cancel func(ctx context.Context) error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cancel = cancel
	o.starts++
}

// Notifications are the notifications so far, oldest first.
func (o *Observer) Notifications() []*coap.Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*coap.Message(nil), o.notes...)
}

// Starts is how many times the stage called Started.
func (o *Observer) Starts() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.starts
}

// Cancel calls the cancel function of the last start, as the hub does
// when the last observer leaves.
func (o *Observer) Cancel(ctx context.Context) error {
	o.mu.Lock()
	cancel := o.cancel
	o.mu.Unlock()
	if cancel == nil {
		return errors.New("coaptest: Cancel of an observation never started")
	}
	return cancel(ctx)
}
