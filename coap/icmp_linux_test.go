//go:build linux

package coap

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/opaque-edge/gatewayd/internal/testutil"
	"golang.org/x/sys/unix"
)

// closedPort is an address where a UDP socket was bound and closed: a
// datagram sent there is answered with ICMP port unreachable.
func closedPort(t *testing.T, network, addr string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// waitErrQueued waits until the kernel has queued an ICMP report on u's
// socket (poll reports POLLERR), so that a test reads it knowing it is
// there.
func waitErrQueued(t *testing.T, u *UDP) {
	t.Helper()
	rc, err := u.c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var perr error
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd)}}
		n, perr = unix.Poll(fds, 10_000)
	})
	if n != 1 || perr != nil {
		t.Fatalf("no ICMP report queued: poll %d %v", n, perr)
	}
}

// errQueueEmpty reports whether u's error queue has nothing left.
func errQueueEmpty(t *testing.T, u *UDP) bool {
	t.Helper()
	rc, err := u.c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var e syscall.Errno
	rc.Control(func(fd uintptr) {
		var buf [64]byte
		iov := unix.Iovec{Base: &buf[0]}
		iov.SetLen(len(buf))
		h := unix.Msghdr{Iov: &iov}
		h.SetIovlen(1)
		_, _, e = unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&h)), unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
	})
	return e == unix.EAGAIN
}

// A datagram sent to a closed port comes back as an ICMP report on the
// next read, for a socket of each family and for the IPv4 peers of a
// dual-stack socket: destination (IPv4, not IPv4-mapped), error, and the
// datagram quoted. The report is taken off the error queue, and
// datagrams are read as before.
func TestReadReturnsICMPReportOfClosedPort(t *testing.T) {
	for _, tc := range []struct{ name, network, listen, peer string }{
		{"ipv4", "udp4", "127.0.0.1:0", "127.0.0.1:0"},
		{"ipv6", "udp6", "[::1]:0", "[::1]:0"},
		{"dual-stack to ipv4", "udp", "[::]:0", "127.0.0.1:0"},
		{"dual-stack to ipv6", "udp", "[::]:0", "[::1]:0"},
	} {
		for _, batch := range []bool{true, false} {
			name := tc.name + "/recvmmsg"
			if !batch {
				name = tc.name + "/ReadFrom"
			}
			t.Run(name, func(t *testing.T) {
				u, err := ListenUDPNetwork(context.Background(), tc.network, tc.listen)
				if err != nil {
					t.Fatal(err)
				}
				defer u.Close()
				read := func(buf []byte) (int, netip.AddrPort, error) { return u.ReadFrom(buf) }
				if batch {
					b, err := u.NewBatch(4)
					if err != nil {
						t.Fatal(err)
					}
					read = func(buf []byte) (int, netip.AddrPort, error) {
						n, err := b.Read()
						if err != nil || n == 0 {
							return 0, netip.AddrPort{}, err
						}
						d, from, _ := b.Datagram(0)
						return copy(buf, d), from, nil
					}
				}
				dead := closedPort(t, "udp", tc.peer)
				sent := []byte{0x58, 0x01, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 0xb3, 'a', 'b', 'c'}
				if err := u.WriteTo(context.Background(), sent, dead); err != nil {
					t.Fatal(err)
				}
				waitErrQueued(t, u)
				_, _, err = read(make([]byte, 64))
				var ie *ICMPError
				if !errors.As(err, &ie) {
					t.Fatalf("read: %v, want an *ICMPError", err)
				}
				if len(ie.Reports) != 1 {
					t.Fatalf("%d reports, want 1", len(ie.Reports))
				}
				r := ie.Reports[0]
				if r.To != dead || !errors.Is(r.Err, syscall.ECONNREFUSED) || string(r.Quote) != string(sent) {
					t.Fatalf("report to %v (%v) quoting % x; want to %v, connection refused, quoting % x", r.To, r.Err, r.Quote, dead, sent)
				}
				if !errQueueEmpty(t, u) {
					t.Fatal("error queue not drained")
				}
				peer := rawPeer(t)
				if tc.peer == "[::1]:0" {
					peer, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
					if err != nil {
						t.Fatal(err)
					}
					defer peer.Close()
				}
				to := u.LocalAddr()
				if strings.HasPrefix(tc.peer, "127.") {
					to = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), to.Port())
				} else {
					to = netip.AddrPortFrom(netip.IPv6Loopback(), to.Port())
				}
				if _, err := peer.WriteToUDPAddrPort([]byte("after"), to); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64)
				n, _, err := read(buf)
				if err != nil || string(buf[:n]) != "after" {
					t.Fatalf("next read: %q %v", buf[:n], err)
				}
			})
		}
	}
}

// refusingConn is a RawConn whose Read fails as the runtime's does after
// an event that was an error alone: without calling f.
type refusingConn struct {
	syscall.RawConn
	refuse int
}

func (r *refusingConn) Read(f func(uintptr) bool) error {
	if r.refuse > 0 {
		r.refuse--
		return errors.New("not pollable")
	}
	return r.RawConn.Read(f)
}

// When the runtime refuses to read the socket (after an EPOLLERR-only
// event), the batch reader reads the error queue aside: the report
// comes out, and the socket's error with it.
func TestBatchReadsErrorQueueWhenTheRuntimeRefuses(t *testing.T) {
	u := listen(t)
	defer u.Close()
	b, err := u.NewBatch(4)
	if err != nil {
		t.Fatal(err)
	}
	mb := b.(*mmsgBatch)
	mb.rc = &refusingConn{RawConn: mb.rc, refuse: 1}
	dead := closedPort(t, "udp4", "127.0.0.1:0")
	sent := []byte{0x50, 0x01, 0, 7}
	if err := u.WriteTo(context.Background(), sent, dead); err != nil {
		t.Fatal(err)
	}
	waitErrQueued(t, u)
	_, err = b.Read()
	var ie *ICMPError
	if !errors.As(err, &ie) || len(ie.Reports) != 1 || ie.Reports[0].To != dead {
		t.Fatalf("read: %v, want the report of %v", err, dead)
	}
	if !errQueueEmpty(t, u) {
		t.Fatal("error queue not drained")
	}
	// The socket's pending error went with the report: the next read
	// waits for a datagram.
	c := rawPeer(t)
	c.WriteToUDPAddrPort([]byte("x"), u.LocalAddr())
	if n, err := b.Read(); n != 1 || err != nil {
		t.Fatalf("next read: %d %v", n, err)
	}
}

// logRecorder keeps the messages of the log records it handles.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) has(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if m == msg {
			return true
		}
	}
	return false
}

// A request to a closed port fails at once with ErrUnreachable, not at
// its timeout (30 s of ACK_TIMEOUT here, so a timeout could not pass for
// it): Do and Go, CON and NON, over IPv4, IPv6 and a dual-stack socket.
// The reader takes the report in its stride, without the pause of a
// failing read.
func TestExchangeWithClosedPortFailsUnreachable(t *testing.T) {
	for _, tc := range []struct{ name, network, listen, peer string }{
		{"ipv4", "udp4", "127.0.0.1:0", "127.0.0.1:0"},
		{"ipv6", "udp6", "[::1]:0", "[::1]:0"},
		{"dual-stack to ipv4", "udp", "[::]:0", "127.0.0.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := ListenUDPNetwork(context.Background(), tc.network, tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			logs := &logRecorder{}
			e := NewEndpoint(u, EndpointConfig{Params: Params{AckTimeout: 30 * time.Second}, Logger: slog.New(logs)})
			defer e.Close()
			dead := closedPort(t, "udp", tc.peer)
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, ErrUnreachable) || !errors.Is(err, syscall.ECONNREFUSED) {
					t.Fatalf("%s: %v, want ErrUnreachable (connection refused)", what, err)
				}
			}
			// Well short of the first retransmission.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err = e.Do(ctx, dead, &Message{Code: GET})
			check("Do CON", err)
			_, err = e.Do(ctx, dead, &Message{Type: NonConfirmable, Code: GET})
			check("Do NON", err)
			for _, typ := range []Type{Confirmable, NonConfirmable} {
				done := make(chan error, 1)
				e.Go(dead, &Message{Type: typ, Code: GET}, 20*time.Second, func(_ *Message, err error) { done <- err })
				check("Go "+typ.String(), <-done)
			}
			s := e.Stats()
			if s.ICMP != 4 || s.Unreachable != 4 || s.Timeouts != 0 || s.Retransmissions != 0 {
				t.Fatalf("stats %+v: want 4 ICMP reports, 4 exchanges ended by them, no timeouts", s)
			}
			if logs.has("read failed") {
				t.Fatal("the reader paused as for a failing read")
			}
		})
	}
}

// A report is trusted only if it quotes what the endpoint sent (RFC 7252
// §4.2): one that names the peer and Message ID of a pending CON but
// quotes another token ends nothing, nor does one too short to show the
// token. A vetted report then ends every exchange with that peer,
// those whose own reports the network never sent too.
func TestICMPReportIsVettedThenEndsEverythingWithThePeer(t *testing.T) {
	u := listen(t)
	e := NewEndpoint(u, EndpointConfig{Params: Params{AckTimeout: 30 * time.Second}})
	defer e.Close()
	// A silent server takes two requests, then goes away: its port is
	// closed, and nothing the endpoint sent there has been reported.
	srv := rawPeer(t)
	to := srv.LocalAddr().(*net.UDPAddr).AddrPort()
	// Well short of the first retransmission.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	results := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := e.Do(ctx, to, &Message{Code: GET})
			results <- err
		}()
	}
	var first Message
	for i := range 2 {
		m := readMsg(t, srv)
		if i == 0 {
			first = *m
		}
	}
	srv.Close()
	// Forged: the first request's Message ID with another token.
	forged := first
	forged.Token = []byte("forgery!")
	b, _ := forged.Marshal()
	if err := u.WriteTo(ctx, b, to); err != nil {
		t.Fatal(err)
	}
	// Too short: a header that announces an 8-byte token and has none.
	short := []byte{0x48, byte(GET), b[2], b[3]}
	if err := u.WriteTo(ctx, short, to); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "both ICMP reports read", func() bool { return e.Stats().ICMP >= 2 })
	select {
	case err := <-results:
		t.Fatalf("an unvetted report ended an exchange: %v", err)
	default:
	}
	if s := e.Stats(); s.Unreachable != 0 {
		t.Fatalf("stats %+v: unvetted reports counted as vetted", s)
	}
	// A third request gets its own report, which ends the other two.
	_, err := e.Do(ctx, to, &Message{Code: GET})
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("third request: %v", err)
	}
	for range 2 {
		if err := <-results; !errors.Is(err, ErrUnreachable) {
			t.Fatalf("request without a report of its own: %v", err)
		}
	}
	if s := e.Stats(); s.ICMP != 3 || s.Unreachable != 1 {
		t.Fatalf("stats %+v: want 3 reports read, 1 vetted", s)
	}
}

// Notifications to an observer whose port closed end with ErrUnreachable:
// a NON's RST callback learns it, and a CON's outcome is that, not a
// timeout.
func TestNotificationToClosedPortIsUnreachable(t *testing.T) {
	var mu sync.Mutex
	var w NotifyWriter
	e, addr := serve(t, EndpointConfig{Params: Params{AckTimeout: 30 * time.Second}, Handler: HandlerFunc(func(ctx context.Context, rw ResponseWriter, r *Request) error {
		nw, ok := rw.(NotifyWriter)
		if !ok {
			return Errorf(InternalServerError, "the writer cannot notify")
		}
		mu.Lock()
		w = nw
		mu.Unlock()
		return rw.WriteResponse(&Message{Code: Content})
	})})
	for _, con := range []bool{false, true} {
		c := rawPeer(t)
		req, _ := (&Message{Type: Confirmable, Code: GET, MID: 1, Token: []byte("obs")}).Marshal()
		exchange(t, c, addr, req)
		c.Close()
		mu.Lock()
		nw := w
		mu.Unlock()
		done := make(chan error, 1)
		if err := nw.Notify(&Message{Code: Content, Payload: []byte("n")}, con, func(err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("con %v: %v, want ErrUnreachable", con, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("con %v: no outcome", con)
		}
	}
	if s := e.Stats(); s.Unreachable != 2 || s.Timeouts != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// A report's pending error goes to whatever comes first on the socket,
// and a send to any peer, which the kernel then fails unsent, may come
// before the reader. The datagram is sent all the same, one by one or in
// a batch (where the kernel stops at the failing message and reports
// nothing), and the reader is woken to read the report.
func TestSendAfterICMPReportIsSentAndTheReportRead(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(u *UDP, dead, live netip.AddrPort) error
	}{
		{"sendto after the report", func(u *UDP, dead, live netip.AddrPort) error {
			u.WriteTo(context.Background(), []byte{0x50, 1, 0, 1}, dead)
			waitErrQueued(t, u)
			return u.WriteTo(context.Background(), []byte("live"), live)
		}},
		{"sendmmsg after the report", func(u *UDP, dead, live netip.AddrPort) error {
			u.WriteTo(context.Background(), []byte{0x50, 1, 0, 1}, dead)
			waitErrQueued(t, u)
			n, err := u.WriteBatch(context.Background(), []Datagram{{B: []byte("live"), To: live}})
			if n != 1 && err == nil {
				err = errors.New("sent short")
			}
			return err
		}},
		{"sendmmsg with the dead peer first", func(u *UDP, dead, live netip.AddrPort) error {
			n, err := u.WriteBatch(context.Background(), []Datagram{{B: []byte{0x50, 1, 0, 1}, To: dead}, {B: []byte("live"), To: live}})
			if n != 2 && err == nil {
				err = errors.New("sent short")
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := listen(t)
			defer u.Close()
			b, err := u.NewBatch(4)
			if err != nil {
				t.Fatal(err)
			}
			peer := rawPeer(t)
			live := peer.LocalAddr().(*net.UDPAddr).AddrPort()
			dead := closedPort(t, "udp4", "127.0.0.1:0")
			if err := tc.send(u, dead, live); err != nil {
				t.Fatalf("send to the live peer: %v", err)
			}
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 16)
			if n, _, err := peer.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "live" {
				t.Fatalf("live peer got %q %v", buf[:n], err)
			}
			var ie *ICMPError
			for len(ie.reports()) == 0 {
				// A sendmmsg wakes the reader before the report may be
				// there: that wake-up reads nothing, and the kernel's
				// own signal brings the reader back.
				done := make(chan error, 1)
				go func() { _, err := b.Read(); done <- err }()
				select {
				case err = <-done:
				case <-time.After(10 * time.Second):
					t.Fatal("the reader was not woken to read the report")
				}
				if !errors.As(err, &ie) {
					t.Fatalf("read: %v, want an *ICMPError", err)
				}
			}
			if r := ie.Reports[0]; r.To != dead {
				t.Fatalf("report for %v, want %v", r.To, dead)
			}
			if !errQueueEmpty(t, u) {
				t.Fatal("error queue not drained")
			}
		})
	}
}

func (e *ICMPError) reports() []ICMPReport {
	if e == nil {
		return nil
	}
	return e.Reports
}

// A report that quotes a remembered NON's Message ID with another token
// ends nothing (RFC 7252 §4.2); the NON's own report does.
func TestNONReportMustQuoteTheToken(t *testing.T) {
	var mu sync.Mutex
	var w NotifyWriter
	e, addr := serve(t, EndpointConfig{Handler: HandlerFunc(func(ctx context.Context, rw ResponseWriter, r *Request) error {
		nw, ok := rw.(NotifyWriter)
		if !ok {
			return Errorf(InternalServerError, "the writer cannot notify")
		}
		mu.Lock()
		w = nw
		mu.Unlock()
		return rw.WriteResponse(&Message{Code: Content})
	})})
	c := rawPeer(t)
	req, _ := (&Message{Type: Confirmable, Code: GET, MID: 1, Token: []byte("obs")}).Marshal()
	exchange(t, c, addr, req)
	mu.Lock()
	nw := w
	mu.Unlock()
	done := make(chan error, 2)
	n := &Message{Code: Content, Payload: []byte("n")}
	if err := nw.Notify(n, false, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	got := readMsg(t, c)
	c.Close()
	forged := *got
	forged.Token = []byte("xyz")
	b, _ := forged.Marshal()
	if err := e.t.WriteTo(context.Background(), b, nw.Peer()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the ICMP report read", func() bool { return e.Stats().ICMP >= 1 })
	select {
	case err := <-done:
		t.Fatalf("a report with another token ended the NON: %v", err)
	default:
	}
	if err := nw.Notify(n, false, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnreachable) {
			t.Fatalf("NON to the closed port: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the NON's own report ended nothing")
	}
	if s := e.Stats(); s.ICMP != 2 || s.Unreachable != 1 {
		t.Fatalf("stats %+v", s)
	}
}
