package bridge

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/opaque-edge/gatewayd/coap"
)

// Group requests through the proxy (draft-ietf-core-groupcomm-proxy §5,
// §6). A client sends one unicast request whose target host is a group:
// an IPv6 multicast address of a scope a radio network spans (ff02 to
// ff05: link-, realm-, admin- and site-local; All CoAP Nodes is ff0X::fd,
// RFC 7252 §12.8), or the name of a [[group]]. With a Multicast-Timeout
// option (§2) saying for how long it takes responses, the request goes
// once, as a NON, to the group on the radio (a broadcast frame, RFC 7252
// §8.1), and every member's response goes back to the client as it comes,
// with the client's token and a Reply-From option (§3) naming the member,
// until the timeout. Later responses are dropped and counted.
//
// Group responses are not cached: the stage answers before the cache and
// the Observe hub, and a group request never reaches them. Observe on a
// group (groupcomm-bis §3.7, groupcomm-proxy §5.2.2, §5.4.2) is relayed
// by the stage itself: every member's notifications go to the client,
// past Multicast-Timeout, until the client deregisters or rejects one.
//
// A group request is an amplifier (one request, one response per
// member): only [groupcomm] clients may send one (else 4.01, §5.2.1 step
// 2), each at most at its rate, and only from an address the proxy has
// verified (amp.go): an unverified client gets the Echo challenge first
// (RFC 9175 §2.4), whatever the request's size.

// Defaults of [groupcomm]. The option numbers are from the experimental
// range (RFC 7252 §12.2) until IANA assigns the draft's (TBD2, TBD248);
// their low bits give the classes the draft asks for: Multicast-Timeout
// elective and unsafe (65002 = ...10 in binary), Reply-From elective and
// safe to forward (65004 = ...00).
const (
	DefaultMulticastTimeoutOption = 65002
	DefaultReplyFromOption        = 65004
	DefaultGroupRate              = 1
	DefaultGroupBurst             = 3
	DefaultGroupMaxTimeout        = time.Minute
	// groupQueue bounds the responses waiting to be relayed to one
	// client; more are dropped and counted.
	groupQueue = 256
)

// GroupCommConfig is the [groupcomm] section: who may send group
// requests and how they are told apart.
type GroupCommConfig struct {
	// Clients are the CIDR prefixes of the clients that may send group
	// requests; by default none may. They must also be [proxy] clients.
	Clients []string `toml:"clients"`
	// Rate and Burst are each client's token bucket for group requests:
	// requests per second and bucket size.
	Rate  float64 `toml:"rate"`
	Burst int     `toml:"burst"`
	// MaxTimeout caps Multicast-Timeout: the proxy relays responses for
	// at most this long, whatever the client asked.
	MaxTimeout Duration `toml:"max_timeout"`
	// MulticastTimeoutOption and ReplyFromOption are the option numbers
	// of Multicast-Timeout and Reply-From.
	MulticastTimeoutOption uint16 `toml:"multicast_timeout_option"`
	ReplyFromOption        uint16 `toml:"reply_from_option"`
}

// GroupConfig is a [[group]] table: a name clients may use as the host of
// a group URI, for a multicast address on one radio.
type GroupConfig struct {
	Name    string     `toml:"name" json:"name"`
	Radio   string     `toml:"radio" json:"radio"`
	Address netip.Addr `toml:"address" json:"address"`
}

func defaultGroupComm() GroupCommConfig {
	return GroupCommConfig{
		Rate: DefaultGroupRate, Burst: DefaultGroupBurst, MaxTimeout: Duration{DefaultGroupMaxTimeout},
		MulticastTimeoutOption: DefaultMulticastTimeoutOption, ReplyFromOption: DefaultReplyFromOption,
	}
}

// validate checks [groupcomm] and the [[group]] tables against the radios.
func validateGroups(gc GroupCommConfig, groups []GroupConfig, radios map[string]bool) error {
	if _, err := parsePrefixes(gc.Clients); err != nil {
		return fmt.Errorf("groupcomm: clients: %w", err)
	}
	if !(gc.Rate > 0) {
		return fmt.Errorf("groupcomm: rate = %v: want more than 0", gc.Rate)
	}
	if gc.Burst < 1 {
		return fmt.Errorf("groupcomm: burst = %d: want at least 1", gc.Burst)
	}
	if d := gc.MaxTimeout.Duration; d < time.Second || d > time.Hour {
		return fmt.Errorf("groupcomm: max_timeout = %v: want 1s to 1h", d)
	}
	for _, o := range []struct {
		key    string
		n      uint16
		unsafe bool
	}{
		{"multicast_timeout_option", gc.MulticastTimeoutOption, true},
		{"reply_from_option", gc.ReplyFromOption, false},
	} {
		id := coap.OptionID(o.n)
		switch {
		case o.n == 0 || id.Known():
			return fmt.Errorf("groupcomm: %s = %d: want a number no other option has", o.key, o.n)
		case id.Critical():
			return fmt.Errorf("groupcomm: %s = %d: an odd number is critical; the option is elective (RFC 7252 §5.4.6)", o.key, o.n)
		case id.Unsafe() != o.unsafe:
			return fmt.Errorf("groupcomm: %s = %d: bit 1 must be %v: the option is %s", o.key, o.n, map[bool]int{true: 1, false: 0}[o.unsafe],
				map[bool]string{true: "unsafe to forward (draft-ietf-core-groupcomm-proxy §2)", false: "safe to forward (§3)"}[o.unsafe])
		}
	}
	if gc.MulticastTimeoutOption == gc.ReplyFromOption {
		return fmt.Errorf("groupcomm: multicast_timeout_option and reply_from_option are both %d", gc.ReplyFromOption)
	}
	names := map[string]bool{}
	for i, g := range groups {
		switch {
		case g.Name == "" || strings.ContainsAny(g.Name, "/?#[]@: ") || isIPLiteral(g.Name):
			return fmt.Errorf("group[%d]: name %q: want a host name", i, g.Name)
		case names[strings.ToLower(g.Name)]:
			return fmt.Errorf("group[%d]: duplicate name %q", i, g.Name)
		case !radios[g.Radio]:
			return fmt.Errorf("group[%d] %q: radio %q: no [[radio]] of that name", i, g.Name, g.Radio)
		case !g.Address.Is6() || !g.Address.IsMulticast():
			return fmt.Errorf("group[%d] %q: address %v: want an IPv6 multicast address", i, g.Name, g.Address)
		case !radioScope(g.Address):
			return fmt.Errorf("group[%d] %q: address %v: want a scope a radio network spans (ff02 to ff05)", i, g.Name, g.Address)
		}
		names[strings.ToLower(g.Name)] = true
	}
	return nil
}

func isIPLiteral(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// radioScope reports a multicast address of a scope no wider than a site
// (RFC 4291 §2.7: 2 link-local, 3 realm-local (RFC 7346: the 6LoWPAN
// mesh), 4 admin-local, 5 site-local). Wider groups are not the
// gateway's to reach.
func radioScope(a netip.Addr) bool {
	b := a.As16()
	s := b[1] & 0x0f
	return a.IsMulticast() && s >= 2 && s <= 5
}

// groupState is what outlives a chain: the counters of what the group
// stage did, and the group observations in progress.
type groupState struct {
	requests  *prometheus.CounterVec // by result
	responses *prometheus.CounterVec // by result

	mu  sync.Mutex
	obs map[obsKey]*groupObs // guarded by mu
}

func (s *groupState) put(k obsKey, o *groupObs) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.obs[k]; old != nil {
		// A re-registration with the same token replaces the
		// observation (RFC 7641 §4.1).
		old.once.Do(func() { close(old.takeover) })
		stopAll(old.sent)
	}
	s.obs[k] = o
}

// take removes and returns the observation k names, if any.
func (s *groupState) take(k obsKey) *groupObs {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.obs[k]
	delete(s.obs, k)
	return o
}

func (s *groupState) remove(k obsKey, o *groupObs) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.obs[k] == o {
		delete(s.obs, k)
	}
}

// Results of group requests and responses, the metrics' labels.
const (
	groupSent         = "sent"
	groupUnauthorized = "unauthorized"
	groupNoTimeout    = "no_timeout"
	groupRateLimited  = "rate_limited"
	groupChallenged   = "challenged"
	groupFailed       = "failed"

	groupRelayed = "relayed"
	groupLate    = "late"
	groupDropped = "dropped"
)

func newGroupState(reg prometheus.Registerer) *groupState {
	m := &groupState{obs: map[obsKey]*groupObs{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatewayd_group_requests_total",
			Help: "Group requests by result: sent to the radios, or refused (unauthorized, no_timeout, rate_limited, challenged, failed).",
		}, []string{"result"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatewayd_group_responses_total",
			Help: "Responses of group members by result: relayed to the client, late (after Multicast-Timeout) or dropped (client gone, queue full).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.requests, m.responses)
	for _, r := range []string{groupSent, groupUnauthorized, groupNoTimeout, groupRateLimited, groupChallenged, groupFailed} {
		m.requests.WithLabelValues(r)
	}
	for _, r := range []string{groupRelayed, groupLate, groupDropped} {
		m.responses.WithLabelValues(r)
	}
	return m
}

// groupStage is the chain's group stage, built with the chain.
type groupStage struct {
	router  *router
	radios  []*radioUpstream
	clients []netip.Prefix
	byName  map[string]GroupConfig // lower-case name
	byAddr  map[netip.Addr]string  // address of a [[group]] → its radio
	limit   *limiter
	max     time.Duration
	mt, rf  coap.OptionID
	s       *groupState
}

func newGroupStage(cfg Config, r *router, radios []*radioUpstream, st *groupState) (*groupStage, error) {
	gc := cfg.GroupComm
	clients, err := parsePrefixes(gc.Clients)
	if err != nil {
		return nil, fmt.Errorf("bridge: groupcomm: %w", err)
	}
	g := &groupStage{
		router: r, radios: radios, clients: clients,
		byName: map[string]GroupConfig{}, byAddr: map[netip.Addr]string{},
		limit: &limiter{rate: gc.Rate, burst: float64(gc.Burst), now: time.Now, buckets: map[netip.Addr]*bucket{}},
		max:   gc.MaxTimeout.Duration,
		mt:    coap.OptionID(gc.MulticastTimeoutOption), rf: coap.OptionID(gc.ReplyFromOption),
		s: st,
	}
	for _, gr := range cfg.Group {
		g.byName[strings.ToLower(gr.Name)] = gr
		g.byAddr[gr.Address] = gr.Radio
	}
	return g, nil
}

// groupTarget is where a group request goes.
type groupTarget struct {
	addr   netip.AddrPort
	radios []*radioUpstream
}

// target reports whether m's target is a group, and where and as what it
// goes there: the request as route would forward it (PR1.1, PR1.2: the
// Proxy-Uri split into Uri-* options, Proxy-Scheme dropped) without
// Multicast-Timeout (§5.2.1 step 4).
func (g *groupStage) target(m *coap.Message) (groupTarget, *coap.Message, bool, error) {
	var u *coap.URI
	out := *m
	if ru := g.router.configuredRoute(m); ru != nil {
		rest := coap.URIFromOptions(m.Options, "", "", 0)
		t := *ru
		t.Path = append(append([]string(nil), ru.Path...), rest.Path[1:]...)
		t.Query = append(append([]string(nil), ru.Query...), rest.Query...)
		u = &t
		out.Options = t.SetOptions(append(coap.Options(nil), m.Options...), t.Port)
	} else if pu, ok := m.Options.Get(coap.ProxyURI); ok {
		parsed, err := g.router.uris.parse(pu)
		if err != nil {
			return groupTarget{}, nil, false, nil // route's 4.02
		}
		u = parsed.u
		out.Options = withURI(m.Options, parsed.opts)
	} else if scheme, ok := m.Options.Get(coap.ProxyScheme); ok {
		host, ok := m.Options.Get(coap.URIHost)
		if !ok {
			return groupTarget{}, nil, false, nil
		}
		u = coap.URIFromOptions(m.Options, string(scheme), string(host), coap.DefaultPort(string(scheme)))
		out.Options = append(coap.Options(nil), m.Options...).Remove(coap.ProxyScheme)
	} else {
		return groupTarget{}, nil, false, nil
	}
	if u.Scheme != "coap" {
		// Group communication is CoAP over UDP (groupcomm-bis §3.9).
		return groupTarget{}, nil, false, nil
	}
	var t groupTarget
	radio := ""
	if gr, ok := g.byName[strings.ToLower(u.Host)]; ok {
		t.addr, radio = netip.AddrPortFrom(gr.Address, u.Port), gr.Radio
	} else if a, err := netip.ParseAddr(u.Host); err == nil && a.Is6() && a.IsMulticast() {
		if !radioScope(a) {
			return t, nil, true, coap.Errorf(coap.ProxyingNotSupported, "group %v: beyond the radio networks' scope", a)
		}
		t.addr, radio = netip.AddrPortFrom(a.WithZone(""), u.Port), g.byAddr[a.WithZone("")]
	} else {
		return t, nil, false, nil
	}
	for _, r := range g.radios {
		if radio == "" || r.r.Name() == radio {
			t.radios = append(t.radios, r)
		}
	}
	if len(t.radios) == 0 {
		return t, nil, true, coap.Errorf(coap.ProxyingNotSupported, "group %v: no radio", t.addr.Addr())
	}
	out.Options = out.Options.Remove(g.mt)
	return t, &out, true, nil
}

// owns reports a request the stage serves: one whose target host is a
// group name or an IPv6 multicast address (one of a scope beyond the
// radios' it refuses). It runs for every forwarded request on the
// endpoints' readers (Proxy.inline), so it only looks at the host.
func (g *groupStage) owns(m *coap.Message) bool {
	var host string
	if ru := g.router.configuredRoute(m); ru != nil {
		host = ru.Host
	} else if pu, ok := m.Options.Get(coap.ProxyURI); ok {
		parsed, err := g.router.uris.parse(pu)
		if err != nil {
			return false
		}
		host = parsed.u.Host
	} else if h, ok := m.Options.Get(coap.URIHost); ok && m.Options.Has(coap.ProxyScheme) {
		host = string(h)
	} else {
		return false
	}
	if len(g.byName) > 0 {
		if _, ok := g.byName[strings.ToLower(host)]; ok {
			return true
		}
	}
	// An IPv6 multicast address starts with ff (RFC 4291 §2.7).
	if len(host) < 2 || host[0]|0x20 != 'f' || host[1]|0x20 != 'f' {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Is6() && a.IsMulticast()
}

func (g *groupStage) stage(next coap.Handler) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		if !g.owns(r.Msg) {
			return next.ServeCoAP(ctx, w, r)
		}
		t, out, ok, err := g.target(r.Msg)
		if !ok {
			return next.ServeCoAP(ctx, w, r)
		}
		if err != nil {
			g.s.requests.WithLabelValues(groupFailed).Inc()
			return err
		}
		return g.serve(ctx, w, r, t, out)
	})
}

func (g *groupStage) serve(ctx context.Context, w coap.ResponseWriter, r *coap.Request, t groupTarget, out *coap.Message) error {
	count := func(result string) { g.s.requests.WithLabelValues(result).Inc() }
	// §5.2.1 step 2: only clients allowed group requests.
	if !contains(g.clients, r.Peer.Addr()) {
		count(groupUnauthorized)
		return &coap.Error{Code: coap.Unauthorized, Diagnostic: "group requests not allowed", MaxAge: -1}
	}
	// Step 3: without Multicast-Timeout, 4.00 with an empty one, which
	// tells a client unaware of the proxy that it is one (§6.1).
	v, ok := r.Msg.Options.Get(g.mt)
	if !ok || len(v) > 4 {
		count(groupNoTimeout)
		resp := &coap.Message{Code: coap.BadRequest, Payload: []byte("group request needs Multicast-Timeout")}
		resp.Options = resp.Options.Insert(g.mt, nil)
		return w.WriteResponse(resp)
	}
	if l, unverified := coap.WrapperOf[*limitWriter](w); unverified {
		// One response per member: no size of request bounds that.
		count(groupChallenged)
		return l.challenge()
	}
	if ok, retry := g.limit.allow(r.Peer.Addr()); !ok {
		count(groupRateLimited)
		e := coap.Errorf(coap.TooManyRequests, "group request rate")
		e.MaxAge = int(retry/time.Second) + 1
		return e
	}
	if r.Sealed != nil {
		// Multicast-Timeout is an outer option (class U, §2): removing
		// it is the one change beyond PR1.1/PR1.2.
		in := *r.Sealed
		in.Options = append(coap.Options(nil), r.Sealed.Options...).Remove(g.mt)
		if err := Verify(&in, out); err != nil {
			count(groupFailed)
			return &coap.Error{Code: coap.InternalServerError, MaxAge: -1, Err: err}
		}
	}
	timeout := min(time.Duration(coap.DecodeUint(v))*time.Second, g.max)
	out.Type = coap.NonConfirmable
	return g.relay(ctx, w, r, t, out, timeout)
}

// member is one member's response, as the radio endpoint delivered it.
type member struct {
	from netip.AddrPort
	resp *coap.Message
}

// obsKey names a client's group observation: its address and token
// (RFC 7641 §3.6, §4.1).
type obsKey struct {
	peer netip.AddrPort
	tok  string
}

// groupObs is a group observation in progress (groupcomm-bis §3.7,
// groupcomm-proxy §5.2.2): the group requests that registered it, and
// the members' notifications on their way to the client.
type groupObs struct {
	in       chan member
	sent     []*coap.GroupRequest
	takeover chan struct{} // closed when the client's deregistration takes the relay over
	once     sync.Once
}

// relay ends: why the relay loop returned.
type relayEnd int

const (
	endTimeout  relayEnd = iota // Multicast-Timeout, and no observation to go on with
	endGone                     // the client rejected a response, or left a CON unacknowledged
	endDone                     // the request's context ended (the proxy stops)
	endTakeover                 // a deregistration took the observation over
)

// relay sends the group request on the radios and writes every response
// that comes within timeout back to the client: the first as the answer,
// the others as further responses with the same token, each with
// Reply-From (§5.4.1). An RST from the client to one of them ends it
// (§5.2.3). A registration (Observe 0) goes on past the timeout as long
// as a member registered it (§5.4.2); when it ends, the members are told
// (a deregistration with No-Response 26: nothing comes back). A
// deregistration (Observe 1) with the token of an observation goes to the
// members with the observation's token, and their answers come back.
func (g *groupStage) relay(ctx context.Context, w coap.ResponseWriter, r *coap.Request, t groupTarget, out *coap.Message, timeout time.Duration) error {
	key := obsKey{r.Peer, string(r.Msg.Token)}
	obs, isObs := out.Options.Uint(coap.Observe)
	if isObs && obs == 1 {
		if o := g.s.take(key); o != nil {
			o.once.Do(func() { close(o.takeover) })
			for _, gr := range o.sent {
				gr.Resend(out)
			}
			defer stopAll(o.sent)
			g.s.requests.WithLabelValues(groupSent).Inc()
			g.loop(ctx, w, o.in, timeout, false, nil)
			return nil
		}
	}
	in := make(chan member, groupQueue)
	deliver := func(from netip.AddrPort, resp *coap.Message) {
		select {
		case in <- member{from, resp}:
		default:
			g.s.responses.WithLabelValues(groupDropped).Inc()
		}
	}
	late := func(netip.AddrPort) { g.s.responses.WithLabelValues(groupLate).Inc() }
	var sent []*coap.GroupRequest
	var errs []error
	for _, u := range t.radios {
		if !u.r.Up() {
			errs = append(errs, u.down())
			continue
		}
		gr, err := u.e.Group(t.addr, out, deliver, late)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sent = append(sent, gr)
	}
	if len(sent) == 0 {
		g.s.requests.WithLabelValues(groupFailed).Inc()
		if len(errs) > 0 {
			return upstreamError(errs[0])
		}
		return coap.Errorf(coap.BadGateway, "no radio")
	}
	g.s.requests.WithLabelValues(groupSent).Inc()
	if !isObs || obs != 0 {
		defer stopAll(sent)
		if timeout > 0 {
			// T' = 0: the client wants no responses (§5.2.1 step 6).
			g.loop(ctx, w, in, timeout, false, nil)
		}
		return nil
	}
	o := &groupObs{in: in, sent: sent, takeover: make(chan struct{})}
	g.s.put(key, o)
	end := g.loop(ctx, w, in, timeout, true, o.takeover)
	g.s.remove(key, o)
	if end == endTakeover {
		return nil // the deregistration stops the requests
	}
	// The members forget the observation (RFC 7641 §3.6), and send
	// nothing back (RFC 7967: No-Response 26).
	dereg := *out
	dereg.Options = append(coap.Options(nil), out.Options...).SetUint(coap.Observe, 1).SetUint(coap.NoResponse, 26)
	for _, gr := range sent {
		gr.Resend(&dereg)
	}
	stopAll(sent)
	return nil
}

func stopAll(sent []*coap.GroupRequest) {
	for _, gr := range sent {
		gr.Stop()
	}
}

// conEvery makes every so many notifications relayed after the timeout a
// CON, so that a client that went away is noticed (RFC 7641 §4.5).
const conEvery = 10

// loop writes the responses from in to the client until timeout; with
// observe, past it too, as long as a member's 2.xx with Observe came.
func (g *groupStage) loop(ctx context.Context, w coap.ResponseWriter, in <-chan member, timeout time.Duration, observe bool, takeover <-chan struct{}) relayEnd {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	expired := timer.C
	gone := make(chan struct{})
	var once sync.Once
	first, observing, after := true, false, 0
	nw, _ := w.(coap.NotifyWriter)
	for {
		select {
		case <-expired:
			if !observe || !observing {
				return endTimeout
			}
			expired = nil
		case <-ctx.Done():
			return endDone
		case <-gone:
			return endGone
		case <-takeover:
			return endTakeover
		case mr := <-in:
			resp := mr.resp
			if resp.Code.Class() == 2 && resp.Options.Has(coap.Observe) {
				observing = true
			}
			resp.Options = resp.Options.Set(g.rf, replyFrom(mr.from))
			if first {
				first = false
				if err := coap.WriteOwned(w, resp); err != nil {
					g.s.responses.WithLabelValues(groupDropped).Inc()
					return endGone
				}
				g.s.responses.WithLabelValues(groupRelayed).Inc()
				continue
			}
			if nw == nil {
				// A front end that takes one response (a plugin's).
				g.s.responses.WithLabelValues(groupDropped).Inc()
				continue
			}
			con := false
			if expired == nil {
				after++
				con = after%conEvery == 0
			}
			err := nw.Notify(resp, con, func(err error) {
				if err != nil {
					once.Do(func() { close(gone) })
				}
			})
			if err != nil {
				g.s.responses.WithLabelValues(groupDropped).Inc()
				continue
			}
			g.s.responses.WithLabelValues(groupRelayed).Inc()
		}
	}
}

// replyFrom is the value of Reply-From naming a member (§3): a CBOR
// sequence of one CRI (draft-ietf-core-href), [scheme, [host, port]],
// with scheme coap (scheme-id -1), the host the member's IP address as a
// byte string (host-ip) and its UDP port. The zone of a link-local
// address is the gateway's and is left out.
func replyFrom(from netip.AddrPort) []byte {
	a := from.Addr().Unmap().WithZone("")
	ip := a.AsSlice()
	b := make([]byte, 0, 8+len(ip))
	b = append(b, 0x82, 0x20, 0x82, 0x40|byte(len(ip)))
	b = append(b, ip...)
	switch p := from.Port(); {
	case p < 24:
		b = append(b, byte(p))
	case p < 256:
		b = append(b, 0x18, byte(p))
	default:
		b = append(b, 0x19, byte(p>>8), byte(p))
	}
	return b
}
