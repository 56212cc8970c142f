package rd

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opaque-edge/gatewayd/acl"
	"github.com/opaque-edge/gatewayd/coap"
	"github.com/opaque-edge/gatewayd/internal/clock"
	"github.com/opaque-edge/gatewayd/internal/filestore"
)

// Clock is the directory's source of time: lifetimes and the expiry
// timer. Tests inject a fake one.
type Clock = clock.Clock

// FetchFunc sends one request to target and returns its response: how
// simple registration GETs a node's /.well-known/core, over the same
// upstream the proxy uses for that address (radio or IP).
type FetchFunc func(ctx context.Context, target netip.AddrPort, req *coap.Message) (*coap.Message, error)

// Option configures a Directory.
type Option func(*Directory)

// WithClock replaces the system clock.
func WithClock(c Clock) Option { return func(d *Directory) { d.clock = c } }

// WithLogger sets the directory's logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(d *Directory) { d.log = l } }

// WithRadioPrefixes names the gateway's radio networks: what the "radio"
// entry of registrants and lookups stands for.
func WithRadioPrefixes(ps []netip.Prefix) Option {
	return func(d *Directory) { d.radio = append([]netip.Prefix(nil), ps...) }
}

// WithClient replaces acl.Of as the way to tell who sent a request.
func WithClient(f func(*coap.Request) acl.Client) Option {
	return func(d *Directory) { d.clientOf = f }
}

// WithFetch sets how simple registration reaches a registrant. Without
// it simple registration gets 5.03.
func WithFetch(f FetchFunc) Option { return func(d *Directory) { d.fetch = f } }

// WithReserved names the first path segments that are not the
// directory's to route (the configuration's [[route]] names, the
// gateway's own resources): a registration that would become a route
// by such a name gets 4.03.
func WithReserved(f func(name string) bool) Option {
	return func(d *Directory) { d.reserved = f }
}

// withStore replaces the state directory (tests).
func withStore(s filestore.Store) Option { return func(d *Directory) { d.st = s } }

// Stats are the directory's counters.
type Stats struct {
	Registrations int // registrations now
	Links         int // links of all registrations now
	Observations  int // lookups observed now: one per hub registration
	// Registered counts registrations made, simple ones included.
	Registered uint64
	// Refreshed counts registrations renewed: updates, and registrations
	// of an (ep, d) already registered.
	Refreshed uint64
	// Removed counts registrations deleted by their registrant.
	Removed uint64
	// Expired counts registrations removed at the end of their lifetime.
	Expired uint64
	// NameConflicts counts registrations refused because another client
	// holds the endpoint name (4.03).
	NameConflicts uint64
	// ClientLimited counts registrations refused because their client
	// holds max_registrations_per_client already (4.03).
	ClientLimited uint64
	// SimpleFailures counts simple registrations whose GET of the
	// registrant's /.well-known/core failed or gave no usable document.
	SimpleFailures uint64
	// Lookups counts lookups answered, observed ones' first answer
	// included.
	Lookups uint64
	// Notifications counts lookup notifications handed to the Observe hub.
	Notifications uint64
	// Rejected counts requests answered with 4.xx or 5.xx.
	Rejected uint64
	// BadStateFiles counts state files skipped at start.
	BadStateFiles uint64
}

// Directory is a resource directory (RFC 9176): the registration
// interface, simple registration, endpoint and resource lookup, and the
// reverse routes its registrations make.
type Directory struct {
	cfg         Config
	clock       Clock
	log         *slog.Logger
	st          filestore.Store
	radio       []netip.Prefix
	clientOf    func(*coap.Request) acl.Client
	registrants acl.List
	lookups     *acl.List // nil: everyone
	fetch       FetchFunc
	reserved    func(string) bool
	fetching    chan struct{} // a slot per simple registration fetching

	registered, refreshed, removed, expired, conflicts, clientLimited, simpleFailures, lookupsServed, notified, rejected, badFiles atomic.Uint64
	lastLog                                                                                                                        atomic.Int64 // unix nanos of the last peer-triggered warning

	routes atomic.Pointer[routeTable] // swapped whole after every change

	wg sync.WaitGroup // expiry runs; Close waits for them

	// op serializes the changes: it is held while a change is written to
	// disk and its notifications go out, so that the state files, the
	// routes and the observers see changes in the order they were
	// acknowledged. It is taken before mu, never after.
	op sync.Mutex

	mu      sync.Mutex
	closed  bool                     // guarded by mu
	regs    map[string]*registration // guarded by mu: by id
	byName  map[string]*registration // guarded by mu: by nameKey(ep)
	held    map[string]int           // guarded by mu: registrations by quotaOf(owner), for max_registrations_per_client
	order   []*registration          // guarded by mu: by ep, then d: the order of lookups
	subs    map[uint64]*subscription // guarded by mu: observed lookups
	nextSub uint64                   // guarded by mu
	seq     uint32                   // guarded by mu: Observe number of the last notification round
	timer   clock.Timer              // guarded by mu: fires at the earliest expiry
}

// registration is one registration resource (RFC 9176 §5) and what is
// derived from it.
type registration struct {
	id      string
	ep, d   string
	base    string         // the base parameter; "" when taken from from
	from    netip.AddrPort // where it registered or last updated from
	secure  bool           // over DTLS: the implicit base is coaps
	owner   string         // ownerOf the registrant
	lt      uint32
	expires time.Time
	updated time.Time
	simple  bool
	proxy   bool    // the registrant asked for proxy=yes
	attrs   []Param // further endpoint attributes, in order
	doc     string  // the link-format document as registered
	links   []Link
	fresh   time.Time // simple registration: the fetched document is fresh until then (§5.1)

	// derived by derive
	effBase  string
	resolved []Link
	route    *coap.URI // nil: not routed
}

// routeTable is the reverse routes of the registrations, replaced whole.
type routeTable struct {
	byName map[string]*coap.URI // by ep, as the first Uri-Path
	byHost map[string]*coap.URI // by "<ep>.<domain>", lower case
}

// New returns a directory with the registrations found in cfg.StateDir.
// State files that cannot be used are logged, counted in
// Stats.BadStateFiles and skipped; expired ones are removed.
func New(cfg Config, opts ...Option) (*Directory, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Directory{
		cfg:      cfg,
		clock:    clock.System,
		log:      slog.New(slog.DiscardHandler),
		clientOf: acl.Of,
		reserved: func(string) bool { return false },
		fetching: make(chan struct{}, maxFetches),
		regs:     map[string]*registration{},
		byName:   map[string]*registration{},
		held:     map[string]int{},
		subs:     map[uint64]*subscription{},
	}
	for _, o := range opts {
		o(d)
	}
	var err error
	if d.registrants, err = acl.Parse(cfg.Registrants, d.radio); err != nil {
		return nil, fmt.Errorf("%w: registrants: %w", ErrConfig, err)
	}
	if len(cfg.Lookups) > 0 {
		l, err := acl.Parse(cfg.Lookups, d.radio)
		if err != nil {
			return nil, fmt.Errorf("%w: lookups: %w", ErrConfig, err)
		}
		d.lookups = &l
	}
	if d.st == nil {
		fs, err := filestore.Open(cfg.StateDir, stateFiles, int64(2*cfg.MaxBytes+4096))
		if err != nil {
			return nil, err
		}
		d.st = fs
	}
	d.restore()
	d.mu.Lock()
	d.changedLocked()
	d.mu.Unlock()
	return d, nil
}

// maxFetches bounds the simple registrations fetching at once; more get
// 5.03 with a short Max-Age.
const maxFetches = 8

// Close stops the expiry timer, ends the observations of lookups and
// waits for an expiry in progress. Requests after Close get 5.03. It is
// idempotent.
func (d *Directory) Close() error {
	d.mu.Lock()
	d.closed = true
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	clear(d.subs)
	d.mu.Unlock()
	d.wg.Wait()
	return nil
}

// Stats returns a snapshot of the counters.
func (d *Directory) Stats() Stats {
	d.mu.Lock()
	n, links, subs := len(d.regs), 0, len(d.subs)
	for _, r := range d.regs {
		links += len(r.links)
	}
	d.mu.Unlock()
	return Stats{
		Registrations: n, Links: links, Observations: subs,
		Registered: d.registered.Load(), Refreshed: d.refreshed.Load(), Removed: d.removed.Load(),
		Expired: d.expired.Load(), NameConflicts: d.conflicts.Load(), ClientLimited: d.clientLimited.Load(), SimpleFailures: d.simpleFailures.Load(),
		Lookups: d.lookupsServed.Load(), Notifications: d.notified.Load(), Rejected: d.rejected.Load(),
		BadStateFiles: d.badFiles.Load(),
	}
}

// nameKey is what makes two endpoint names the same name here: equal
// apart from case, so that one name has one route by path and by host.
func nameKey(ep string) string { return strings.ToLower(ep) }

// ownerOf names who may change a registration: the DTLS identity when the
// client has one, else its address (not its port, which a node that
// restarts may change). RFC 9176 §7.5's First-Come-First-Remembered.
func ownerOf(c acl.Client) string {
	if c.Identity != "" {
		return c.Identity
	}
	if c.Addr.IsValid() {
		return c.Addr.WithZone("").String()
	}
	return ""
}

// quotaOf is the key a registration of owner counts under for
// max_registrations_per_client: acl.Client.Key, so that a host that picks
// addresses at will in its /64 counts once, while each radio node counts
// alone.
func (d *Directory) quotaOf(owner string) string {
	if a, err := netip.ParseAddr(owner); err == nil {
		return acl.Client{Addr: a}.Key(d.radio)
	}
	return acl.Client{Identity: owner}.Key(d.radio)
}

// implicitBase is the base of a registration that gave none: the scheme
// and the source address and port (RFC 9176 §5), the port left out when
// it is the scheme's default.
func implicitBase(from netip.AddrPort, secure bool) string {
	scheme := "coap"
	if secure {
		scheme = "coaps"
	}
	a := from.Addr().Unmap().WithZone("")
	host := a.String()
	if a.Is6() {
		host = "[" + host + "]"
	}
	if from.Port() != coap.DefaultPort(scheme) {
		host += fmt.Sprintf(":%d", from.Port())
	}
	return scheme + "://" + host
}

// derive computes what follows from r's parameters and links: the
// effective base, the links resolved against it (RFC 9176 §6.1) and the
// reverse route.
func (d *Directory) derive(r *registration) {
	r.effBase = r.base
	if r.effBase == "" {
		r.effBase = implicitBase(r.from, r.secure)
	}
	r.resolved = make([]Link, len(r.links))
	for i, l := range r.links {
		out := Link{Target: resolve(r.effBase, l.Target), Params: slices.Clone(l.Params)}
		for j, p := range out.Params {
			if p.Name == "anchor" && p.HasValue {
				out.Params[j].Value = resolve(r.effBase, p.Value)
			}
		}
		r.resolved[i] = out
	}
	r.route = d.routeOf(r)
}

// routed reports whether a registration with these settings becomes a
// reverse route.
func (d *Directory) routed(proxy bool) bool {
	return d.cfg.Routes == RoutesAll || d.cfg.Routes == RoutesAsk && proxy
}

// routeOf is r's reverse route target: its base, when it is a coap URI
// and routes apply to r.
func (d *Directory) routeOf(r *registration) *coap.URI {
	if !d.routed(r.proxy) {
		return nil
	}
	u, err := coap.ParseURI(r.effBase)
	if err != nil || u.Scheme != "coap" {
		return nil
	}
	return u
}

// changedLocked rebuilds what follows from the set of registrations: the
// lookup order, the route table, the expiry timer.
func (d *Directory) changedLocked() {
	d.order = d.order[:0]
	rt := &routeTable{byName: map[string]*coap.URI{}, byHost: map[string]*coap.URI{}}
	for _, r := range d.regs {
		d.order = append(d.order, r)
		if r.route == nil {
			continue
		}
		rt.byName[r.ep] = r.route
		if l := strings.ToLower(r.ep); d.cfg.Domain != "" && dnsLabel(l) {
			rt.byHost[l+"."+d.cfg.Domain] = r.route
		}
	}
	slices.SortFunc(d.order, func(a, b *registration) int {
		return cmp.Or(strings.Compare(a.ep, b.ep), strings.Compare(a.d, b.d))
	})
	d.routes.Store(rt)
	d.rearmLocked()
}

// Route returns the reverse route target of the endpoint a request's
// first Uri-Path names, for the proxy's route stage: /<ep>/rest goes to
// <base>/rest. The URI is shared: callers copy before changing it.
func (d *Directory) Route(name string) (*coap.URI, bool) {
	u, ok := d.routes.Load().byName[name]
	return u, ok
}

// HostRoute returns the target of the endpoint a Uri-Host
// "<ep>.<domain>" names (host as URIFromOptions gives it: lower case).
// Such a request goes to the base with its Uri-* options as they are.
func (d *Directory) HostRoute(host string) (*coap.URI, bool) {
	if d.cfg.Domain == "" {
		return nil, false
	}
	u, ok := d.routes.Load().byHost[host]
	return u, ok
}

// Domain is the configured domain of host routes, "" when off.
func (d *Directory) Domain() string { return d.cfg.Domain }

// size is what r counts against max_bytes.
func (r *registration) size() int {
	n := len(r.doc) + len(r.ep) + len(r.d) + len(r.base)
	for _, a := range r.attrs {
		n += len(a.Name) + len(a.Value)
	}
	return n
}

// newIDLocked returns a fresh registration id: 8 random hex digits. The
// location is visible to every lookup client (RFC 9176 §8.2), so it says
// nothing of the registration's order or name.
func (d *Directory) newIDLocked() string {
	var buf [4]byte
	for {
		v := rand.Uint32()
		buf[0], buf[1], buf[2], buf[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		id := hex.EncodeToString(buf[:])
		if d.regs[id] == nil {
			return id
		}
	}
}

// rearmLocked sets the timer to the earliest expiry.
func (d *Directory) rearmLocked() {
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.closed || len(d.regs) == 0 {
		return
	}
	var first time.Time
	for _, r := range d.regs {
		if first.IsZero() || r.expires.Before(first) {
			first = r.expires
		}
	}
	d.timer = d.clock.AfterFunc(max(first.Sub(d.clock.Now()), 0), d.expireDue)
}

// expireDue removes every registration whose lifetime is over, and with
// it its route (RFC 9176 §5.3: the RD SHOULD NOT answer lookups for it;
// it MAY remove the registration resource, which it does).
func (d *Directory) expireDue() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.wg.Add(1)
	d.mu.Unlock()
	defer d.wg.Done()
	d.op.Lock()
	defer d.op.Unlock()
	d.mu.Lock()
	now := d.clock.Now()
	var due []*registration
	for _, r := range d.regs {
		if !r.expires.After(now) {
			due = append(due, r)
		}
	}
	d.mu.Unlock()
	if len(due) == 0 {
		d.mu.Lock()
		d.rearmLocked()
		d.mu.Unlock()
		return
	}
	for _, r := range due {
		if err := d.st.Remove(r.id); err != nil {
			// Gone from memory all the same: a restart finds the file
			// expired and removes it then.
			d.warn("rd: cannot remove expired registration", "id", r.id, "err", err)
		}
		d.log.Info("rd: registration expired", "ep", r.ep, "d", r.d, "location", "/rd/"+r.id)
	}
	d.mu.Lock()
	for _, r := range due {
		d.dropLocked(r)
	}
	d.expired.Add(uint64(len(due)))
	d.changedLocked()
	d.mu.Unlock()
	d.notifyChanged()
}

// addLocked puts r in the tables; dropLocked takes it out.
func (d *Directory) addLocked(r *registration) {
	d.regs[r.id], d.byName[nameKey(r.ep)] = r, r
	d.held[d.quotaOf(r.owner)]++
}

func (d *Directory) dropLocked(r *registration) {
	if d.regs[r.id] == r {
		delete(d.regs, r.id)
		q := d.quotaOf(r.owner)
		if d.held[q]--; d.held[q] <= 0 {
			delete(d.held, q)
		}
	}
	if d.byName[nameKey(r.ep)] == r {
		delete(d.byName, nameKey(r.ep))
	}
}

// warn logs at most one peer-triggered warning a second.
func (d *Directory) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := d.lastLog.Load()
	if now-last < int64(time.Second) || !d.lastLog.CompareAndSwap(last, now) {
		return
	}
	d.log.Warn(msg, args...)
}

// Links returns the CoRE Link Format entries the gateway's
// /.well-known/core lists for the directory (RFC 9176 §4.3): the
// registration interface and the two lookup interfaces, observable.
func (d *Directory) Links() []string {
	return []string{
		`</rd>;rt="core.rd";ct=40`,
		`</rd-lookup/ep>;rt="core.rd-lookup-ep";ct=40;obs`,
		`</rd-lookup/res>;rt="core.rd-lookup-res";ct=40;obs`,
	}
}

// Endpoint is one registration as the operator sees it (Endpoints).
type Endpoint struct {
	Name     string `json:"name"`             // ep
	Sector   string `json:"sector,omitempty"` // d
	Location string `json:"location"`         // the registration resource, /rd/<id>
	// Base is the base URI the links resolve against: the base
	// parameter, or the scheme, address and port it registered from.
	Base string `json:"base"`
	// Addr is the base's host when it is an IP address: the node's
	// address, by which the radio knows it.
	Addr netip.Addr `json:"addr,omitzero"`
	// From is the address and port of the last registration or update.
	From     netip.AddrPort `json:"from"`
	Simple   bool           `json:"simple"`   // made by simple registration (§5.1)
	Lifetime uint32         `json:"lifetime"` // lt, seconds
	Expires  time.Time      `json:"expires"`
	// Left is the lifetime left when the snapshot was made.
	Left        time.Duration `json:"-"`
	LeftSeconds float64       `json:"left_seconds"`
	Updated     time.Time     `json:"updated"` // last registration or update
	// Route is the proxy path it is reachable by, "/<ep>", and Host the
	// Uri-Host, "<ep>.<domain>"; empty when it has none.
	Route string  `json:"route,omitempty"`
	Host  string  `json:"host,omitempty"`
	Attrs []Param `json:"attrs,omitempty"` // further endpoint attributes (et, ...)
	// Links are its links, resolved against Base, in link format, as a
	// resource lookup shows them. They are the registrant's words:
	// whoever shows them escapes them.
	Links []string `json:"links"`
}

// Endpoints returns the registrations, ordered by name and sector, for
// the operator's console and /status.
func (d *Directory) Endpoints() []Endpoint {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.clock.Now()
	out := make([]Endpoint, 0, len(d.order))
	for _, r := range d.order {
		e := Endpoint{
			Name: r.ep, Sector: r.d, Location: "/rd/" + r.id, Base: r.effBase, From: r.from, Simple: r.simple,
			Lifetime: r.lt, Expires: r.expires, Left: max(r.expires.Sub(now), 0), Updated: r.updated,
			Attrs: slices.Clone(r.attrs), Links: make([]string, len(r.resolved)),
		}
		e.LeftSeconds = e.Left.Seconds()
		if u, err := coap.ParseURI(r.effBase); err == nil {
			if a, err := netip.ParseAddr(u.Host); err == nil {
				e.Addr = a
			}
		}
		if r.route != nil {
			e.Route = "/" + r.ep
			if l := strings.ToLower(r.ep); d.cfg.Domain != "" && dnsLabel(l) {
				e.Host = l + "." + d.cfg.Domain
			}
		}
		for i, l := range r.resolved {
			e.Links[i] = l.String()
		}
		out = append(out, e)
	}
	return out
}

// subscription is one observed lookup: the hub's registration, which the
// directory is the origin of.
type subscription struct {
	q    lookupQuery
	last string // the payload last sent
	u    coap.Observer
}
