package radio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/radio/mac"
	"github.com/opaque-edge/gatewayd/radio/sixlowpan"
)

// Conn defaults.
const (
	DefaultPort     = 5683 // CoAP (RFC 7252 §6.1)
	DefaultQueueLen = 64
)

// recvBackoff is how long the reader waits after a Link error other than
// close, so a radio that is down does not spin the reader.
const recvBackoff = 100 * time.Millisecond

var linkLocalPrefix = netip.MustParsePrefix("fe80::/64")

// ConnConfig configures a Conn.
type ConnConfig struct {
	// Prefix is the radio network's /64. It is 6LoWPAN context 0, and the
	// gateway's global addresses are Prefix plus the IIDs of its MAC
	// addresses.
	Prefix netip.Prefix
	PANID  uint16
	// ExtAddr is the gateway radio's extended address (required).
	ExtAddr mac.Addr
	// ShortAddr is the gateway's short address; the zero mac.Addr means
	// none. When set, frames are sent from it (shorter headers) and the
	// gateway's source IPv6 address derives from it.
	ShortAddr mac.Addr
	// Port is the local UDP port; 0 means DefaultPort. Datagrams to other
	// ports are dropped and counted.
	Port uint16
	// Neighbors are static IPv6-to-MAC bindings, for nodes whose addresses
	// do not derive from their MAC addresses and that may not speak first.
	Neighbors []Neighbor
	// MaxNeighbors bounds the learned neighbour entries; 0 means
	// DefaultMaxNeighbors.
	MaxNeighbors int
	// MaxNodes bounds the nodes NodeStats keeps; 0 means
	// DefaultMaxNodes. When full, a new node replaces the one heard
	// from least recently.
	MaxNodes int
	// Reassembly bounds fragment reassembly (sixlowpan defaults when zero).
	Reassembly sixlowpan.ReassemblyConfig
	// QueueLen bounds received datagrams not yet read; 0 means
	// DefaultQueueLen. When full, new datagrams are dropped and counted.
	QueueLen int
	// HopLimit of sent packets; 0 means 64, which compresses away.
	HopLimit uint8
	// FrameRetries is how many more times a frame is handed to the Link
	// after ErrChannelBusy or ErrNoAck. The Link already runs CSMA/CA and
	// MAC retransmissions, so the default 0 adds none.
	FrameRetries int
	// FrameVersion is the IEEE 802.15.4 frame version the Conn sends:
	// mac.Version2003 (0, the default, which every 6LoWPAN node reads),
	// mac.Version2006 or mac.Version2015. Received frames of all three
	// are read whatever it is.
	FrameVersion uint8
	// SuppressSeq and IEs shape sent version 2 frames: no sequence number
	// (802.15.4-2015 §7.2.1.6), and these Information Elements, exactly
	// as on air and terminated so that a payload may follow (see
	// mac.Frame.IEs), in every frame. Simulated nodes use them to send
	// what 802.15.4-2015 stacks send.
	SuppressSeq bool
	IEs         []byte
	// Groups are the multicast addresses a node's Conn has joined
	// (draft-ietf-core-groupcomm-bis §2.1): when set, datagrams to other
	// multicast addresses are dropped (not-local). Nil takes every
	// multicast datagram, as the gateway does.
	Groups []netip.Addr
	// Logger gets a debug line for every received frame or datagram the
	// Conn drops, with the reason, rate-limited (a burst of 10, then one
	// a second, with a count of the lines left out). nil: discard.
	Logger *slog.Logger
	// Now is the clock of the drop log and of NodeStats; nil means
	// time.Now.
	Now func() time.Time
}

// ConnCounters is a snapshot of what a Conn did.
type ConnCounters struct {
	FramesTx, FramesRx       uint64 // MAC frames sent and received
	BytesTx, BytesRx         uint64 // octets on air, PSDU with FCS
	DatagramsTx, DatagramsRx uint64 // UDP datagrams sent, and queued for ReadFrom
	DecodeErrors             uint64 // frames, 6LoWPAN payloads or UDP packets that did not decode or verify
	FramesIgnored            uint64 // well-formed frames not for this Conn: other PAN, address or frame type
	PortDrops                uint64 // packets that were not UDP to this Conn's address and port
	ReassemblyDrops          uint64 // reassemblies dropped: timeout, cap, overlap or oversize
	QueueDrops               uint64 // datagrams dropped because the receive queue was full
	SendErrors               uint64 // WriteTo calls that failed at the Link
	RecvErrors               uint64 // Link.Recv errors other than close
	Neighbors                int    // learned neighbour entries now
	Nodes                    int    // nodes NodeStats keeps now
	NodesEvicted             uint64 // nodes NodeStats forgot to make room for another
	Reassembly               sixlowpan.Counters
	// Drops counts received frames and datagrams dropped, by
	// DropReason.String(); every reason is present, zero or not.
	Drops map[string]uint64
}

type datagram struct {
	from netip.AddrPort
	to   netip.Addr // the destination: this Conn's address or a group's
	data []byte
}

// Conn carries UDP datagrams between the gateway and nodes over 6LoWPAN
// (RFC 4944, RFC 6282) on any Link. It implements coap.Transport. One
// reader goroutine, started by NewConn and stopped by Close, receives
// frames; WriteTo compresses, fragments and sends.
//
// Close does not close the Link: whoever opened the Link closes it.
type Conn struct {
	link     Link
	cfg      ConnConfig
	codec    *sixlowpan.Codec
	reasm    *sixlowpan.Reassembler
	nbr      *neighbors
	nodes    *nodeTable
	now      func() time.Time
	srcMAC   mac.Addr            // the address frames are sent from
	local    map[netip.Addr]bool // the gateway's unicast addresses; read-only
	groups   map[netip.Addr]bool // joined groups, nil for all; read-only
	queue    chan datagram
	done     chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	once     sync.Once
	seq      atomic.Uint32 // MAC sequence numbers (low 8 bits)
	tag      atomic.Uint32 // datagram_tag (low 16 bits)
	sendMu   sync.Mutex    // keeps one datagram's fragments together on air
	dropLog  *dropLog      // the reader goroutine's
	counters struct {
		framesTx, framesRx, bytesTx, bytesRx, datagramsTx, datagramsRx atomic.Uint64
		sendErrors, recvErrors                                         atomic.Uint64
		drops                                                          [numDropReasons]atomic.Uint64
	}
}

var _ coap.Transport = (*Conn)(nil)

// NewConn checks cfg, starts the reader goroutine on link and returns the
// Conn. Call Close to stop it.
func NewConn(link Link, cfg ConnConfig) (*Conn, error) {
	if !cfg.Prefix.IsValid() || !cfg.Prefix.Addr().Is6() || cfg.Prefix.Addr().Is4In6() || cfg.Prefix.Bits() != 64 {
		return nil, fmt.Errorf("radio: conn: prefix %v: want an IPv6 /64", cfg.Prefix)
	}
	cfg.Prefix = cfg.Prefix.Masked()
	if cfg.ExtAddr.Mode() != mac.AddrExtended {
		return nil, fmt.Errorf("radio: conn: extended address %v: want a 64-bit address", cfg.ExtAddr)
	}
	if m := cfg.ShortAddr.Mode(); m != mac.AddrNone {
		s, ok := cfg.ShortAddr.Short()
		if !ok || s == mac.BroadcastShort || s == mac.NoShort {
			return nil, fmt.Errorf("radio: conn: short address %v: want a unicast short address", cfg.ShortAddr)
		}
	}
	for _, n := range cfg.Neighbors {
		if !n.IP.Is6() || n.IP.Is4In6() || !n.MAC.IsValid() {
			return nil, fmt.Errorf("radio: conn: neighbour %v at %v: want an IPv6 and a MAC address", n.IP, n.MAC)
		}
	}
	if cfg.FrameVersion > mac.Version2015 {
		return nil, fmt.Errorf("radio: conn: frame version %d: want 0, 1 or 2", cfg.FrameVersion)
	}
	cfg.IEs = slices.Clone(cfg.IEs)
	probe := mac.Frame{Type: mac.TypeData, Version: cfg.FrameVersion, SeqSuppressed: cfg.SuppressSeq, IEs: cfg.IEs,
		PANIDCompression: true, Dst: mac.Broadcast, Src: cfg.ExtAddr, Payload: []byte{0}}
	if _, err := probe.AppendEncode(nil); err != nil {
		return nil, fmt.Errorf("radio: conn: frames to send: %w", err)
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	c := &Conn{
		link:  link,
		cfg:   cfg,
		codec: sixlowpan.NewCodec(cfg.Prefix),
		nbr:   newNeighbors(cfg.Neighbors, cfg.MaxNeighbors),
		nodes: newNodeTable(cfg.MaxNodes),
		now:   cfg.Now,
		local: make(map[netip.Addr]bool),
		queue: make(chan datagram, cfg.QueueLen),
		done:  make(chan struct{}),
	}
	for _, g := range cfg.Groups {
		if !g.Is6() || !g.IsMulticast() {
			return nil, fmt.Errorf("radio: conn: group %v: want an IPv6 multicast address", g)
		}
		if c.groups == nil {
			c.groups = make(map[netip.Addr]bool, len(cfg.Groups))
		}
		c.groups[g.WithZone("")] = true
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.dropLog = newDropLog(cfg.Logger, cfg.Now)
	c.reasm = sixlowpan.NewReassembler(c.codec, cfg.Reassembly)
	c.srcMAC = cfg.ExtAddr
	if cfg.ShortAddr.IsValid() {
		c.srcMAC = cfg.ShortAddr
	}
	for _, m := range []mac.Addr{cfg.ExtAddr, cfg.ShortAddr} {
		if m.IsValid() {
			c.local[withIID(cfg.Prefix, m)] = true
			c.local[withIID(linkLocalPrefix, m)] = true
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go c.run(ctx)
	return c, nil
}

// LocalAddr returns the address datagrams to nodes on the prefix are sent
// from: the prefix plus the IID of the MAC address frames are sent from.
func (c *Conn) LocalAddr() netip.AddrPort {
	return netip.AddrPortFrom(withIID(c.cfg.Prefix, c.srcMAC), c.cfg.Port)
}

// ReadFrom implements coap.Transport: it returns the next datagram for the
// local port, truncated to len(b), or ErrConnClosed after Close.
func (c *Conn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	n, from, _, err := c.ReadMsg(b)
	return n, from, err
}

// ReadMsg is ReadFrom that also tells the datagram's destination
// address: this Conn's own or a multicast group's. A node needs it to
// know a group request (RFC 7252 §8.2) from a unicast one.
func (c *Conn) ReadMsg(b []byte) (int, netip.AddrPort, netip.Addr, error) {
	select {
	case <-c.done:
		return 0, netip.AddrPort{}, netip.Addr{}, ErrConnClosed
	default:
	}
	select {
	case <-c.done:
		return 0, netip.AddrPort{}, netip.Addr{}, ErrConnClosed
	case d := <-c.queue:
		return copy(b, d.data), d.from, d.to, nil
	}
}

// WriteTo implements coap.Transport: it sends b as one UDP datagram from
// the local port to a node, compressed and fragmented into as many frames
// as it takes, handed to the Link in order. Link errors come back wrapped
// (errors.Is finds ErrNoAck, ErrDown, ...); ErrNoRoute means no MAC address
// is known for to.
func (c *Conn) WriteTo(ctx context.Context, b []byte, to netip.AddrPort) error {
	select {
	case <-c.done:
		return ErrConnClosed
	default:
	}
	dst := to.Addr()
	if !dst.Is6() || dst.Is4In6() {
		return fmt.Errorf("radio: conn: write to %v: %w", to, sixlowpan.ErrNotIPv6)
	}
	dstMAC, err := c.resolve(dst)
	if err != nil {
		return err
	}
	src := withIID(c.cfg.Prefix, c.srcMAC)
	if dst.IsLinkLocalUnicast() || dst.IsLinkLocalMulticast() || dst.IsInterfaceLocalMulticast() {
		src = withIID(linkLocalPrefix, c.srcMAC)
	}
	pkt, err := sixlowpan.AppendUDP(nil, netip.AddrPortFrom(src, c.cfg.Port), to, c.cfg.HopLimit, b)
	if err != nil {
		return fmt.Errorf("radio: conn: write to %v: %w", to, err)
	}
	f := mac.Frame{
		Type:             mac.TypeData,
		AckRequest:       !dstMAC.IsBroadcast(),
		PANIDCompression: true,
		Version:          c.cfg.FrameVersion,
		SeqSuppressed:    c.cfg.SuppressSeq,
		DstPAN:           c.cfg.PANID,
		Dst:              dstMAC,
		SrcPAN:           c.cfg.PANID,
		Src:              c.srcMAC,
		IEs:              c.cfg.IEs,
	}
	frames, err := c.codec.Fragment(nil, nil, pkt, c.srcMAC, dstMAC, f.MaxPayload(), uint16(c.tag.Add(1)))
	if err != nil {
		return fmt.Errorf("radio: conn: write to %v: %w", to, err)
	}
	buf := make([]byte, 0, mac.MaxMPDU)
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	for i, p := range frames {
		f.Payload = p
		f.Seq = uint8(c.seq.Add(1))
		mpdu, err := f.AppendEncode(buf[:0])
		if err != nil {
			return fmt.Errorf("radio: conn: write to %v: %w", to, err)
		}
		if err := c.send(ctx, mpdu); err != nil {
			c.counters.sendErrors.Add(1)
			return fmt.Errorf("radio: conn: write to %v (%v), frame %d of %d: %w", to, dstMAC, i+1, len(frames), err)
		}
		c.counters.framesTx.Add(1)
		c.counters.bytesTx.Add(uint64(len(mpdu) + mac.FCSLen))
	}
	c.counters.datagramsTx.Add(1)
	if !dstMAC.IsBroadcast() {
		c.nodes.sent(dstMAC, len(frames))
		c.nodes.addr(dstMAC, dst)
	}
	return nil
}

func (c *Conn) send(ctx context.Context, mpdu []byte) error {
	for attempt := 0; ; attempt++ {
		err := c.link.Send(ctx, mpdu)
		if err == nil {
			return nil
		}
		retry := errors.Is(err, ErrChannelBusy) || errors.Is(err, ErrNoAck)
		if !retry || attempt >= c.cfg.FrameRetries || ctx.Err() != nil {
			return err
		}
	}
}

// resolve finds the MAC address for a destination: broadcast for
// multicast, then static and learned neighbours, then the MAC address the
// IID derives from (RFC 6282 §3.2.2) for addresses on the prefix or link.
func (c *Conn) resolve(dst netip.Addr) (mac.Addr, error) {
	if dst.IsMulticast() {
		return mac.Broadcast, nil
	}
	if m, ok := c.nbr.lookup(dst); ok {
		return m, nil
	}
	if c.cfg.Prefix.Contains(dst) || linkLocalPrefix.Contains(dst) {
		return mac.AddrFromIID(iidOf(dst)), nil
	}
	return mac.Addr{}, fmt.Errorf("radio: conn: write to %v: %w", dst, ErrNoRoute)
}

// Close stops the reader and waits for it. ReadFrom and WriteTo then
// return ErrConnClosed. Close is idempotent; it does not close the Link.
func (c *Conn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.cancel()
	})
	c.wg.Wait()
	return nil
}

// Counters returns a snapshot of the counters.
func (c *Conn) Counters() ConnCounters {
	r := c.reasm.Counters()
	k := &c.counters
	cc := ConnCounters{
		FramesTx:        k.framesTx.Load(),
		FramesRx:        k.framesRx.Load(),
		BytesTx:         k.bytesTx.Load(),
		BytesRx:         k.bytesRx.Load(),
		DatagramsTx:     k.datagramsTx.Load(),
		DatagramsRx:     k.datagramsRx.Load(),
		ReassemblyDrops: r.Timeouts + r.Evicted + r.Rejected + r.Overlaps,
		SendErrors:      k.sendErrors.Load(),
		RecvErrors:      k.recvErrors.Load(),
		Neighbors:       c.nbr.len(),
		Nodes:           c.nodes.len(),
		NodesEvicted:    c.nodes.evicted.Load(),
		Reassembly:      r,
		Drops:           make(map[string]uint64, numDropReasons),
	}
	for i := range k.drops {
		r := DropReason(i)
		v := k.drops[i].Load()
		cc.Drops[r.String()] = v
		switch r {
		case DropMACTruncated, DropMACMalformed, DropMACSecured, DropMACUnsupported, DropMACTooLong,
			DropLowpanTruncated, DropLowpanMalformed, DropLowpanUnsupported, DropLowpanContext,
			DropUDPMalformed, DropUDPChecksum:
			cc.DecodeErrors += v
		case DropNotData, DropNoSource, DropOtherPAN, DropOtherDst:
			cc.FramesIgnored += v
		case DropNotUDP, DropNotLocal:
			cc.PortDrops += v
		case DropQueueFull:
			cc.QueueDrops += v
		}
	}
	return cc
}

// drop counts a received frame or datagram dropped for r and logs it
// (rate-limited). src is the frame's source, if known. Only the reader
// goroutine calls it.
func (c *Conn) drop(r DropReason, err error, src mac.Addr, octets int) {
	c.counters.drops[r].Add(1)
	c.dropLog.drop(r, err, src, octets)
}

func (c *Conn) run(ctx context.Context) {
	defer c.wg.Done()
	for {
		f, err := c.link.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrClosed) {
				return
			}
			c.counters.recvErrors.Add(1)
			t := time.NewTimer(recvBackoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		c.receive(f)
	}
}

// NodeStats returns what the Conn saw of each node it received frames
// from or sent frames to (at most ConnConfig.MaxNodes), ordered by
// address.
func (c *Conn) NodeStats() []NodeStats { return c.nodes.snapshot() }

// notForUs says why a well-formed frame is not one for this Conn, or
// returns false.
func (c *Conn) notForUs(f *mac.Frame) (DropReason, bool) {
	switch {
	case f.Type != mac.TypeData:
		return DropNotData, true
	case !f.Src.IsValid():
		return DropNoSource, true
	case f.HasDstPAN() && f.DstPAN != c.cfg.PANID && f.DstPAN != mac.BroadcastShort:
		// A version 2 frame without a destination PAN ID is for the
		// receiver's own PAN (802.15.4-2015 §7.2.1.5, Table 7-2).
		return DropOtherPAN, true
	case !f.Dst.IsBroadcast() && f.Dst != c.cfg.ExtAddr && !(c.cfg.ShortAddr.IsValid() && f.Dst == c.cfg.ShortAddr):
		return DropOtherDst, true
	}
	return 0, false
}

func (c *Conn) receive(fr Frame) {
	b := fr.Data
	c.counters.framesRx.Add(1)
	c.counters.bytesRx.Add(uint64(len(b) + mac.FCSLen))
	f, err := mac.Decode(b)
	if err != nil {
		c.drop(macDropReason(err), err, f.Src, len(b))
		return
	}
	if r, ok := c.notForUs(&f); ok {
		c.drop(r, nil, f.Src, len(b))
		return
	}
	// A frame for us from a node: how well it is heard, whatever its
	// payload turns out to be.
	c.nodes.heard(f.Src, c.now(), fr.RSSI, fr.LQI)
	pkt, err := c.reasm.Input(f.Payload, f.Src, f.Dst)
	if err != nil {
		c.drop(lowpanDropReason(err), err, f.Src, len(b))
		return
	}
	if pkt == nil {
		return // a fragment; more to come
	}
	u, err := sixlowpan.ParseUDP(pkt)
	switch {
	case errors.Is(err, sixlowpan.ErrNotUDP):
		c.drop(DropNotUDP, err, f.Src, len(b))
		return
	case errors.Is(err, sixlowpan.ErrChecksum):
		c.drop(DropUDPChecksum, err, f.Src, len(b))
		return
	case err != nil:
		c.drop(DropUDPMalformed, err, f.Src, len(b))
		return
	}
	dst := u.Dst.Addr()
	if u.Dst.Port() != c.cfg.Port || !dst.IsMulticast() && !c.local[dst] ||
		dst.IsMulticast() && c.groups != nil && !c.groups[dst] {
		c.drop(DropNotLocal, nil, f.Src, len(b))
		return
	}
	// Remember how to reach a node whose address we could not derive.
	if src := u.Src.Addr(); !src.IsMulticast() && !src.IsUnspecified() {
		c.nodes.addr(f.Src, src)
		if derived, _ := f.Src.IID(); derived != iidOf(src) {
			c.nbr.learn(src, f.Src)
		} else {
			c.nbr.forget(src)
		}
	}
	d := datagram{from: u.Src, to: dst, data: append([]byte(nil), u.Payload...)}
	select {
	case c.queue <- d:
		c.counters.datagramsRx.Add(1)
	default:
		c.drop(DropQueueFull, nil, f.Src, len(b))
	}
}
