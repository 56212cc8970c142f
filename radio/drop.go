package radio

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/sixlowpan"
)

// DropReason says why a Conn dropped a received frame or datagram. Each
// has a counter (ConnCounters.Drops, by String) and a debug log line.
type DropReason uint8

// Drop reasons. The MAC, 6LoWPAN and UDP ones add up to
// ConnCounters.DecodeErrors; not_data, no_source, other_pan and other_dst
// to FramesIgnored; not_udp and not_local to PortDrops; queue_full is
// QueueDrops. lowpan_too_large is also counted by the reassembler
// (Reassembly.Rejected, in ReassemblyDrops).
const (
	DropMACTruncated      DropReason = iota // mac_truncated: shorter than its header says
	DropMACMalformed                        // mac_malformed: an impossible header or IE list
	DropMACSecured                          // mac_secured: MAC security on; the gateway holds no MAC keys
	DropMACUnsupported                      // mac_unsupported: reserved frame type or frame version
	DropMACTooLong                          // mac_too_long: longer than an MPDU can be
	DropNotData                             // not_data: beacon, acknowledgment or MAC command
	DropNoSource                            // no_source: a data frame without a source address
	DropOtherPAN                            // other_pan: for another PAN
	DropOtherDst                            // other_dst: for another node
	DropLowpanTruncated                     // lowpan_truncated: 6LoWPAN header or fragment cut short
	DropLowpanMalformed                     // lowpan_malformed: 6LoWPAN header or fragment that cannot be
	DropLowpanUnsupported                   // lowpan_unsupported: a dispatch or encoding the gateway does not decode
	DropLowpanContext                       // lowpan_context: an IPHC context the gateway does not know
	DropLowpanTooLarge                      // lowpan_too_large: a datagram bigger than reassembly allows
	DropUDPMalformed                        // udp_malformed: IPv6 or UDP lengths that do not add up
	DropUDPChecksum                         // udp_checksum: bad UDP checksum
	DropNotUDP                              // not_udp: an IPv6 packet that is not UDP
	DropNotLocal                            // not_local: UDP to another address or port
	DropQueueFull                           // queue_full: the receive queue was full
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"mac_truncated", "mac_malformed", "mac_secured", "mac_unsupported", "mac_too_long",
	"not_data", "no_source", "other_pan", "other_dst",
	"lowpan_truncated", "lowpan_malformed", "lowpan_unsupported", "lowpan_context", "lowpan_too_large",
	"udp_malformed", "udp_checksum", "not_udp", "not_local", "queue_full",
}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// DropReasons lists every reason, in order.
func DropReasons() []DropReason {
	rs := make([]DropReason, numDropReasons)
	for i := range rs {
		rs[i] = DropReason(i)
	}
	return rs
}

func macDropReason(err error) DropReason {
	switch {
	case errors.Is(err, mac.ErrSecured):
		return DropMACSecured
	case errors.Is(err, mac.ErrUnsupported):
		return DropMACUnsupported
	case errors.Is(err, mac.ErrTruncated):
		return DropMACTruncated
	case errors.Is(err, mac.ErrTooLong):
		return DropMACTooLong
	}
	return DropMACMalformed
}

func lowpanDropReason(err error) DropReason {
	switch {
	case errors.Is(err, sixlowpan.ErrTooLarge):
		return DropLowpanTooLarge
	case errors.Is(err, sixlowpan.ErrTruncated):
		return DropLowpanTruncated
	case errors.Is(err, sixlowpan.ErrUnsupported):
		return DropLowpanUnsupported
	case errors.Is(err, sixlowpan.ErrContext):
		return DropLowpanContext
	}
	return DropLowpanMalformed
}

// Drop log rate: a burst of dropLogBurst lines, then one per
// dropLogEvery. A peer can send frames as fast as the air carries them;
// the log must not grow with them. Lines left out are counted in the next
// one ("suppressed").
const (
	dropLogBurst = 10
	dropLogEvery = time.Second
)

// dropLog writes the debug line of each dropped frame within a token
// bucket. Only the Conn's reader goroutine uses it.
type dropLog struct {
	log        *slog.Logger
	now        func() time.Time
	tokens     float64
	last       time.Time
	suppressed uint64
}

func newDropLog(log *slog.Logger, now func() time.Time) *dropLog {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &dropLog{log: log, now: now, tokens: dropLogBurst}
}

func (d *dropLog) drop(r DropReason, err error, src mac.Addr, octets int) {
	if !d.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	now := d.now()
	if now.After(d.last) {
		if !d.last.IsZero() {
			d.tokens = min(dropLogBurst, d.tokens+float64(now.Sub(d.last))/float64(dropLogEvery))
		}
		d.last = now
	}
	if d.tokens < 1 {
		d.suppressed++
		return
	}
	d.tokens--
	attrs := []any{"reason", r.String(), "octets", octets}
	if src.IsValid() {
		attrs = append(attrs, "src", src.String())
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	if d.suppressed > 0 {
		attrs = append(attrs, "suppressed", d.suppressed)
		d.suppressed = 0
	}
	d.log.Debug("radio frame dropped", attrs...)
}
