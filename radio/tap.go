package radio

import (
	"context"
	"time"
)

// Recorder records MPDUs (without FCS) as a Link carries them;
// *pcap.Writer is one.
type Recorder interface {
	WriteMPDU(ts time.Time, mpdu []byte) error
}

// Tap wraps a Link and records every frame sent and every frame received
// into W, in the order they pass. A frame is recorded as it is handed to
// the link, not after the link's tx-done: the answer to it can arrive
// before the tx-done does, and a capture must show the request first. So
// a frame that then fails (no ack, busy channel) is in the capture, as a
// sniffer would have seen it; one handed to a link that reports itself
// down (UpReporter) is not. Recording errors do not disturb the link; a
// pcap.Writer keeps them and returns them from Flush or Close.
type Tap struct {
	Link
	W   Recorder
	Now func() time.Time // nil means time.Now
}

var _ Link = (*Tap)(nil)

func (t *Tap) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// Send records the frame, unless the link is down, and sends it through
// the wrapped link.
func (t *Tap) Send(ctx context.Context, mpdu []byte) error {
	if u, ok := t.Link.(UpReporter); !ok || u.Up() {
		_ = t.W.WriteMPDU(t.now(), mpdu) // sticky in W
	}
	return t.Link.Send(ctx, mpdu)
}

// Recv receives from the wrapped link and records the frame.
func (t *Tap) Recv(ctx context.Context) (Frame, error) {
	f, err := t.Link.Recv(ctx)
	if err == nil {
		_ = t.W.WriteMPDU(t.now(), f.Data) // sticky in W
	}
	return f, err
}
