package pcap

import (
	"context"
	"time"

	"github.com/opaque-edge/gatewayd/radio"
)

// Tap wraps a radio.Link and records every frame sent (once the radio
// accepted it) and received into w. Capture errors do not disturb the
// link; they stay in w and come back from w.Flush or w.Close.
type Tap struct {
	radio.Link
	W   *Writer
	Now func() time.Time // nil means time.Now
}

var _ radio.Link = (*Tap)(nil)

func (t *Tap) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// Send sends through the wrapped link and records the frame if it went out.
func (t *Tap) Send(ctx context.Context, mpdu []byte) error {
	err := t.Link.Send(ctx, mpdu)
	if err == nil {
		_ = t.W.WriteMPDU(t.now(), mpdu) // sticky in W
	}
	return err
}

// Recv receives from the wrapped link and records the frame.
func (t *Tap) Recv(ctx context.Context) (radio.Frame, error) {
	f, err := t.Link.Recv(ctx)
	if err == nil {
		_ = t.W.WriteMPDU(t.now(), f.Data) // sticky in W
	}
	return f, err
}
