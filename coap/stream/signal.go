package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
)

// custodyPing is a Ping with Custody waiting for the requests before it
// (§5.4.1).
type custodyPing struct {
	token   []byte
	waiting int
}

// signal handles a signalling message (§5); false ends the reader.
func (c *Conn) signal(m *coap.Message) bool {
	switch m.Code {
	case CSM:
		for _, o := range m.Options {
			switch o.ID {
			case MaxMessageSize:
				if len(o.Value) > 4 {
					c.abort("bad Max-Message-Size", MaxMessageSize)
					return false
				}
				c.peerMax.Store(int64(coap.DecodeUint(o.Value)))
			case BlockWiseTransfer:
				c.peerBlock.Store(true)
			default:
				if o.ID.Critical() {
					// §5.2: an unknown critical signalling option aborts.
					c.abort(fmt.Sprintf("unknown critical CSM option %d", o.ID), o.ID)
					return false
				}
			}
		}
		c.csmOnce.Do(func() { close(c.csm) })
	case Ping:
		if id, ok := criticalUnknown(m.Options, Custody); ok {
			c.abort(fmt.Sprintf("unknown critical Ping option %d", id), 0)
			return false
		}
		c.st.pings.Add(1)
		tok := append([]byte(nil), m.Token...)
		if m.Options.Has(Custody) {
			c.mu.Lock()
			if c.inflight > 0 {
				// §5.4.1: the Pong waits for the requests before the Ping.
				c.custody = append(c.custody, &custodyPing{token: tok, waiting: c.inflight})
				c.mu.Unlock()
				return true
			}
			c.mu.Unlock()
			c.pong(tok, true)
			return true
		}
		c.pong(tok, false)
	case Pong:
		c.mu.Lock()
		c.pinged = false
		k := tokenKey(m.Token)
		if ch, ok := c.pings[k]; ok {
			delete(c.pings, k)
			close(ch)
		}
		c.mu.Unlock()
	case Release:
		if id, ok := criticalUnknown(m.Options, AlternativeAddress, HoldOff); ok {
			c.abort(fmt.Sprintf("unknown critical Release option %d", id), 0)
			return false
		}
		// §5.5: close once the requests received before it are answered.
		c.st.releases.Add(1)
		c.mu.Lock()
		c.release = true
		idle := c.inflight == 0
		c.mu.Unlock()
		if idle {
			c.closeAfterFlush(errors.New("stream: released by peer"))
			return false
		}
		// Read nothing more; the last request's end closes.
		<-c.ctx.Done()
		return false
	case Abort:
		c.st.abortsReceived.Add(1)
		c.log.Debug("peer aborted", "peer", c.peer, "diagnostic", string(m.Payload))
		c.closeWith(fmt.Errorf("%w: %s", ErrAborted, m.Payload))
		return false
	default:
		// An unknown signalling code: nothing it asks can be done.
		c.st.malformed.Add(1)
	}
	return true
}

// criticalUnknown is the first critical option of opts not in known.
func criticalUnknown(opts coap.Options, known ...coap.OptionID) (coap.OptionID, bool) {
	for _, o := range opts {
		if !o.ID.Critical() {
			continue
		}
		isKnown := false
		for _, k := range known {
			isKnown = isKnown || o.ID == k
		}
		if !isKnown {
			return o.ID, true
		}
	}
	return 0, false
}

func (c *Conn) pong(tok []byte, custody bool) {
	m := &coap.Message{Code: Pong, Token: tok}
	if custody {
		m.Options = m.Options.Insert(Custody, nil)
	}
	c.sendMsg(m, nil, false)
}

// closeAfterFlush closes once what is queued has been written.
func (c *Conn) closeAfterFlush(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if len(c.queue) == 0 && !c.writing {
		c.mu.Unlock()
		c.closeWith(err)
		return
	}
	c.queue = append(c.queue, out{done: func(error) { c.closeWith(err) }})
	c.mu.Unlock()
}

// keepalive pings a peer that has been quiet for Keepalive, and closes
// the connection if the Ping gets no answer within another Keepalive
// (§5.4). A peer that answers stays however long it is idle.
func (c *Conn) keepalive() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	quiet := time.Since(time.Unix(0, c.lastRead.Load()))
	if quiet < c.cfg.Keepalive {
		c.pinged = false
		c.keep.Reset(c.cfg.Keepalive - quiet)
		c.mu.Unlock()
		return
	}
	if c.pinged {
		c.mu.Unlock()
		c.st.keepaliveClosed.Add(1)
		c.closeWith(errors.New("stream: keepalive: no answer to Ping"))
		return
	}
	c.pinged = true
	c.keep.Reset(c.cfg.Keepalive)
	c.mu.Unlock()
	c.st.keepalivePings.Add(1)
	c.sendMsg(&coap.Message{Code: Ping}, nil, false)
}

// Ping sends a Ping and waits for its Pong (§5.4).
func (c *Conn) Ping(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.nextTok++
	tok := binary.BigEndian.AppendUint32(nil, uint32(c.nextTok))
	ch := make(chan struct{})
	if c.pings == nil {
		c.pings = map[uint64]chan struct{}{}
	}
	k := tokenKey(tok)
	c.pings[k] = ch
	c.mu.Unlock()
	if err := c.sendMsg(&coap.Message{Code: Ping, Token: tok}, nil, true); err != nil {
		return err
	}
	select {
	case <-ch:
		if err := c.Err(); err != nil {
			return err
		}
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pings, k)
		c.mu.Unlock()
		return ctx.Err()
	}
}

// Release asks the peer to close the connection (§5.5).
func (c *Conn) Release(diag string) error {
	return c.sendMsg(&coap.Message{Code: Release, Payload: []byte(diag)}, nil, true)
}
