// Package radio is the gateway's view of IEEE 802.15.4 radios: a Link moves
// MAC frames to and from a radio (the Spinel driver, the simulator, a radio
// plugin), and Conn carries UDP datagrams to nodes over 6LoWPAN on any Link.
//
// radio knows nothing of the proxy: the bridge uses a Conn as a
// coap.Transport.
package radio

import "context"

// Frame is one received IEEE 802.15.4 MAC frame.
type Frame struct {
	// Data is the MPDU without its FCS: MAC header and payload.
	Data []byte
	RSSI int8  // dBm, as reported by the radio; 127 when unknown
	LQI  uint8 // link quality indicator; 0 when unknown
}

// Link moves MAC frames to and from one radio.
//
// Send transmits one MPDU (without FCS; the radio appends it) and returns
// once the radio reports the transmission done, or with an error such as
// ErrNoAck or ErrChannelBusy. Recv blocks until a frame arrives, ctx is
// done, or the link is closed. Close is idempotent and waits for the link's
// goroutines to end.
type Link interface {
	Send(ctx context.Context, mpdu []byte) error
	Recv(ctx context.Context) (Frame, error)
	Close() error
}
