package pubsub

import (
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

// Clock is the broker's source of time: rate limits, expiration dates and
// Max-Age. Tests inject a fake one.
type Clock = clock.Clock

// Timer is a pending AfterFunc call.
type Timer = clock.Timer

// Option configures a Broker.
type Option func(*Broker)

// WithClock replaces the system clock.
func WithClock(c Clock) Option { return func(b *Broker) { b.clock = c } }

// WithLogger sets the broker's logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(b *Broker) { b.log = l } }

// WithRadioPrefixes names the gateway's radio networks: what the "radio"
// entry of the access lists stands for, and where each address is a
// client of its own for max_topics_per_client (acl.Client.Key).
func WithRadioPrefixes(ps []netip.Prefix) Option {
	return func(b *Broker) { b.radio = append([]netip.Prefix(nil), ps...) }
}

// WithClient replaces acl.Of as the way to tell who sent a request: the
// proxy names requests it forwarded to itself as an unknown client,
// whatever address they came back from.
func WithClient(f func(*coap.Request) acl.Client) Option {
	return func(b *Broker) { b.clientOf = f }
}

// withStore replaces the state directory (tests, benchmarks).
func withStore(s filestore.Store) Option { return func(b *Broker) { b.st = s } }

// Stats are the broker's counters.
type Stats struct {
	Topics        int // topics now, half and fully created
	Subscriptions int // observations the broker is the origin of now: one per hub registration
	// Publications counts accepted publications (2.01 and 2.04).
	Publications uint64
	// SubscribersInformed counts notifications handed to the hub
	// (coap.Observer.Notify), final 4.04s included; the hub fans each out.
	SubscribersInformed uint64
	// Rejected counts requests the broker answered with 4.xx or 5.xx.
	Rejected uint64
	// Expired counts topics removed because their expiration-date passed.
	Expired uint64
	// BadStateFiles counts state files skipped at start.
	BadStateFiles uint64
}

// Broker is the pub-sub broker: the topic collection, its topics and
// their topic-data resources.
type Broker struct {
	cfg    Config
	clock  Clock
	log    *slog.Logger
	st     filestore.Store
	segs   []string // cfg.Path split at "/"
	prefix string   // "/" + cfg.Path

	radio    []netip.Prefix
	clientOf func(*coap.Request) acl.Client
	admins   acl.List
	pubs     *acl.List // nil: everyone
	subs     *acl.List // nil: everyone

	publications, informed, rejected, expired, badFiles atomic.Uint64
	lastLog                                             atomic.Int64 // unix nanos of the last peer-triggered warning

	wg sync.WaitGroup // expiration runs; Close waits for them

	mu      sync.Mutex
	closed  bool              // guarded by mu
	topics  map[string]*topic // guarded by mu: by topic id
	byName  map[string]*topic // guarded by mu: by topic-name
	byData  map[string]*topic // guarded by mu: by topic-data segment
	nextSub uint64            // guarded by mu
	created map[string]int    // guarded by mu: topics by creator (acl.Client.Key), for max_topics_per_client
	timer   Timer             // guarded by mu: fires at the earliest expiration-date
}

// topic is one topic and its topic-data resource.
type topic struct {
	id      string // the topic resource is <prefix>/<id>
	dataSeg string // the topic-data resource is <prefix>/data/<dataSeg>
	creator string // acl.Client.Key of who created it; "" for an admin's of an older state file, charged to no one

	// op serializes the changes of one topic: it is held while a change
	// is written to disk and while its notifications go out, so that
	// subscribers see changes in the order they were acknowledged. It is
	// taken before Broker.mu, never after.
	op sync.Mutex

	gone    bool                     // guarded by Broker.mu: deleted or expired
	props   Properties               // guarded by Broker.mu
	full    bool                     // guarded by Broker.mu: FULLY CREATED (draft §3.1)
	hasCF   bool                     // guarded by Broker.mu: the publication had a Content-Format
	cf      uint16                   // guarded by Broker.mu
	payload []byte                   // guarded by Broker.mu: never modified, only replaced
	seq     uint32                   // guarded by Broker.mu: Observe number of the last publication
	lastPub time.Time                // guarded by Broker.mu
	subs    map[uint64]coap.Observer // guarded by Broker.mu: observations by subscription id
}

// New returns a broker serving cfg.Path, with the topics found in
// cfg.StateDir. State files that cannot be used are logged, counted in
// Stats.BadStateFiles and skipped.
func New(cfg Config, opts ...Option) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Broker{
		cfg:      cfg,
		clock:    clock.System,
		log:      slog.New(slog.DiscardHandler),
		segs:     strings.Split(cfg.Path, "/"),
		prefix:   "/" + cfg.Path,
		topics:   make(map[string]*topic),
		byName:   make(map[string]*topic),
		byData:   make(map[string]*topic),
		created:  make(map[string]int),
		clientOf: acl.Of,
	}
	for _, o := range opts {
		o(b)
	}
	var err error
	if b.admins, err = acl.Parse(cfg.Admins, b.radio); err != nil {
		return nil, fmt.Errorf("%w: admins: %w", ErrConfig, err)
	}
	if b.pubs, err = optionalList(cfg.Publishers, b.radio); err != nil {
		return nil, fmt.Errorf("%w: publishers: %w", ErrConfig, err)
	}
	if b.subs, err = optionalList(cfg.Subscribers, b.radio); err != nil {
		return nil, fmt.Errorf("%w: subscribers: %w", ErrConfig, err)
	}
	if b.st == nil {
		fs, err := filestore.Open(cfg.StateDir, stateFiles, int64(maxConfigBytes+cfg.MaxPayload+1024))
		if err != nil {
			return nil, err
		}
		b.st = fs
	}
	b.restore()
	b.mu.Lock()
	b.rearmLocked()
	b.mu.Unlock()
	return b, nil
}

// Close stops the expiration timer and waits for an expiration in
// progress. Requests after Close get 5.03. It is idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	for _, t := range b.topics {
		clear(t.subs)
	}
	b.mu.Unlock()
	b.wg.Wait()
	return nil
}

// Stats returns a snapshot of the counters.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	n, subs := len(b.topics), 0
	for _, t := range b.topics {
		subs += len(t.subs)
	}
	b.mu.Unlock()
	return Stats{
		Topics:              n,
		Subscriptions:       subs,
		Publications:        b.publications.Load(),
		SubscribersInformed: b.informed.Load(),
		Rejected:            b.rejected.Load(),
		Expired:             b.expired.Load(),
		BadStateFiles:       b.badFiles.Load(),
	}
}

// restore loads the state directory.
func (b *Broker) restore() {
	recs, bad := b.st.Load()
	for _, err := range bad {
		b.reportBad("", err)
	}
	now := b.clock.Now()
	for _, raw := range recs {
		t, err := b.topicFromRecord(raw.Data)
		if err != nil {
			b.reportBad(raw.Name, err)
			continue
		}
		if exp, ok := expiry(&t.props); ok && !exp.After(now) {
			if err := b.st.Remove(t.id); err != nil {
				b.log.Warn("pubsub: cannot remove expired topic", "topic", t.id, "err", err)
			}
			b.expired.Add(1)
			continue
		}
		switch {
		case len(b.topics) >= b.cfg.MaxTopics:
			err = fmt.Errorf("pubsub: state file of topic %s: over max_topics %d", t.id, b.cfg.MaxTopics)
		case b.topics[t.id] != nil:
			err = fmt.Errorf("pubsub: state file of topic %s: duplicate id", t.id)
		case b.byName[*t.props.TopicName] != nil:
			err = fmt.Errorf("pubsub: state file of topic %s: topic-name %q in use", t.id, *t.props.TopicName)
		case b.byData[t.dataSeg] != nil:
			err = fmt.Errorf("pubsub: state file of topic %s: topic-data %q in use", t.id, *t.props.TopicData)
		}
		if err != nil {
			b.reportBad(raw.Name, err)
			continue
		}
		b.topics[t.id], b.byName[*t.props.TopicName], b.byData[t.dataSeg] = t, t, t
		if t.creator != "" {
			b.created[t.creator]++
		}
	}
}

// optionalList parses a list that allows everyone when it is empty.
func optionalList(entries []string, radio []netip.Prefix) (*acl.List, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	l, err := acl.Parse(entries, radio)
	return &l, err
}

// reportBad counts and logs a state file skipped at start; file is its
// name when err does not say it.
func (b *Broker) reportBad(file string, err error) {
	b.badFiles.Add(1)
	if file == "" {
		b.log.Warn("pubsub: skipping state file", "err", err)
		return
	}
	b.log.Warn("pubsub: skipping state file", "file", file, "err", err)
}

func (b *Broker) topicFromRecord(raw []byte) (*topic, error) {
	r, err := decodeRecord(raw)
	if err != nil {
		return nil, err
	}
	if !validSegment(r.ID) || r.ID == dataSeg {
		return nil, fmt.Errorf("pubsub: state file: bad topic id %q", r.ID)
	}
	p, err := DecodeProperties(r.Config)
	if err != nil {
		return nil, fmt.Errorf("pubsub: state file of topic %s: %w", r.ID, err)
	}
	if p.TopicName == nil || p.ResourceType == nil || p.TopicData == nil {
		return nil, fmt.Errorf("pubsub: state file of topic %s: required property missing", r.ID)
	}
	if !validResourceType(*p.ResourceType) {
		return nil, fmt.Errorf("pubsub: state file of topic %s: resource-type %q cannot be listed as link-format", r.ID, *p.ResourceType)
	}
	seg, ok := b.dataSegment(*p.TopicData)
	if !ok {
		return nil, fmt.Errorf("pubsub: state file of topic %s: topic-data %q is not under %s", r.ID, *p.TopicData, b.prefix)
	}
	if len(r.Payload) > b.cfg.MaxPayload {
		return nil, fmt.Errorf("pubsub: state file of topic %s: publication of %d bytes, over max_payload", r.ID, len(r.Payload))
	}
	t := &topic{id: r.ID, dataSeg: seg, creator: r.Creator, props: p, full: r.Full, seq: r.Seq & 0xffffff, subs: make(map[uint64]coap.Observer)}
	if r.Full {
		t.payload, t.hasCF, t.cf = r.Payload, r.HasCF, r.CF
		if t.payload == nil {
			t.payload = []byte{}
		}
	}
	return t, nil
}

// recordLocked encodes t, with the given data state, for the store.
// persistUnlock encodes the topic's record under b.mu, releases b.mu and
// writes the record to state_dir (atomically, synced): callers answer only
// after it returned nil.
func (b *Broker) persistUnlock(t *topic, p *Properties, full, hasCF bool, cf uint16, payload []byte, seq uint32) error {
	rec, err := b.recordLocked(t, p, full, hasCF, cf, payload, seq)
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return b.st.Save(t.id, rec)
}

func (b *Broker) recordLocked(t *topic, p *Properties, full, hasCF bool, cf uint16, payload []byte, seq uint32) ([]byte, error) {
	conf, err := p.Encode()
	if err != nil {
		return nil, err
	}
	r := &record{Version: recordVersion, ID: t.id, Config: conf, Full: full, Seq: seq, Creator: t.creator}
	if full {
		r.HasCF, r.CF, r.Payload = hasCF, cf, payload
	}
	return encodeRecord(r)
}

// dataSeg is the path segment under the collection that holds topic-data
// resources; no topic id is ever "data".
const dataSeg = "data"

// dataSegment parses a topic-data URI this broker can host:
// <prefix>/data/<segment>.
func (b *Broker) dataSegment(uri string) (string, bool) {
	rest, ok := strings.CutPrefix(uri, b.prefix+"/"+dataSeg+"/")
	if !ok || !validSegment(rest) {
		return "", false
	}
	return rest, true
}

func (b *Broker) topicPath(t *topic) string { return b.prefix + "/" + t.id }
func (b *Broker) dataPath(seg string) string {
	return b.prefix + "/" + dataSeg + "/" + seg
}

// newIDLocked returns a fresh random path segment not in use in m.
func newIDLocked(m map[string]*topic) string {
	var buf [4]byte
	for {
		v := rand.Uint32()
		buf[0], buf[1], buf[2], buf[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		id := hex.EncodeToString(buf[:])
		if m[id] == nil {
			return id
		}
	}
}

// expiry returns the topic's expiration time, if it has one.
func expiry(p *Properties) (time.Time, bool) {
	if p.ExpirationDate == nil {
		return time.Time{}, false
	}
	v := *p.ExpirationDate
	sec := int64(v)
	return time.Unix(sec, int64((v-float64(sec))*1e9)), true
}

// liveLocked reports a topic that exists and has not reached its
// expiration-date (the timer may not have run yet).
func (b *Broker) liveLocked(t *topic, now time.Time) bool {
	if t.gone {
		return false
	}
	exp, ok := expiry(&t.props)
	return !ok || exp.After(now)
}

// rearmLocked sets the timer to the earliest expiration-date.
func (b *Broker) rearmLocked() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if b.closed {
		return
	}
	var first time.Time
	for _, t := range b.topics {
		if exp, ok := expiry(&t.props); ok && (first.IsZero() || exp.Before(first)) {
			first = exp
		}
	}
	if first.IsZero() {
		return
	}
	d := first.Sub(b.clock.Now())
	if d < 0 {
		d = 0
	}
	b.timer = b.clock.AfterFunc(d, b.expireDue)
}

// expireDue deletes every topic whose expiration-date has come, as a
// DELETE of the topic would (draft §2.2.1, §2.5.5).
func (b *Broker) expireDue() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.wg.Add(1)
	defer b.wg.Done()
	now := b.clock.Now()
	var due []*topic
	for _, t := range b.topics {
		if exp, ok := expiry(&t.props); ok && !exp.After(now) {
			due = append(due, t)
		}
	}
	b.mu.Unlock()
	for _, t := range due {
		if err := b.deleteTopic(t, true); err == nil {
			b.expired.Add(1)
		} else if err != errGone {
			b.warn("pubsub: cannot expire topic", "topic", t.id, "err", err)
		}
	}
	b.mu.Lock()
	b.rearmLocked()
	b.mu.Unlock()
}

// warn logs at most one peer-triggered warning a second.
func (b *Broker) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := b.lastLog.Load()
	if now-last < int64(time.Second) || !b.lastLog.CompareAndSwap(last, now) {
		return
	}
	b.log.Warn(msg, args...)
}

// Links returns the CoRE Link Format entries (RFC 6690) the gateway's
// /.well-known/core should list for the broker (draft §2.3): the
// collection (rt="core.ps core.ps.coll"), each topic (rt="core.ps.conf")
// and each topic-data resource (rt="core.ps.data").
func (b *Broker) Links() []string {
	ls := b.links(true)
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.String()
	}
	return out
}

func (b *Broker) links(withCollection bool) []link {
	b.mu.Lock()
	ts := make([]*topic, 0, len(b.topics))
	for _, t := range b.topics {
		ts = append(ts, t)
	}
	now := b.clock.Now()
	var out []link
	if withCollection {
		out = append(out, link{href: b.prefix, rt: RTBroker + " " + RTCollection, ct: "40"})
	}
	slices.SortFunc(ts, func(x, y *topic) int { return strings.Compare(x.id, y.id) })
	for _, t := range ts {
		if !b.liveLocked(t, now) {
			continue
		}
		out = append(out, link{href: b.topicPath(t), rt: RTTopic, ct: fmt.Sprint(b.cfg.ContentFormat)})
	}
	for _, t := range ts {
		if !b.liveLocked(t, now) {
			continue
		}
		l := link{href: b.dataPath(t.dataSeg), rt: RTData, obs: true}
		if rt := t.props.ResourceType; rt != nil && *rt != RTData {
			l.rt = *rt
		}
		if cf := t.props.TopicContentFormat; cf != nil {
			l.ct = fmt.Sprint(*cf)
		}
		out = append(out, l)
	}
	b.mu.Unlock()
	return out
}

// Stage returns the broker's link in the chain: requests for the
// collection's path are the broker's, everything else goes to next.
func (b *Broker) Stage(next coap.Handler) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		rest, ok := b.match(r.Msg)
		if !ok {
			return next.ServeCoAP(ctx, w, r)
		}
		return b.serve(ctx, w, r, rest)
	})
}

// match reports whether m targets the broker: a request for this gateway
// (no Proxy-Uri, no Proxy-Scheme) whose path starts with the collection's.
// rest is the path below the collection.
func (b *Broker) match(m *coap.Message) (rest []string, ok bool) {
	if m == nil || !m.Code.IsRequest() || m.Options.Has(coap.ProxyURI) || m.Options.Has(coap.ProxyScheme) {
		return nil, false
	}
	i := 0
	for v := range m.Options.All(coap.URIPath) {
		if i < len(b.segs) {
			if string(v) != b.segs[i] {
				return nil, false
			}
		} else {
			if len(rest) >= 4 {
				// Deeper than any resource of the broker: still ours, 4.04.
				return rest, true
			}
			rest = append(rest, string(v))
		}
		i++
	}
	return rest, i >= len(b.segs)
}

// Gate is the broker's access lists as a stage of their own, for the
// chain to put before the Observe hub: the hub lets a subscriber join an
// observation it already holds without asking the broker, so the lists
// are applied before it. A request the lists refuse gets 4.03; anything
// else goes to next. Stage applies the same lists again, for a broker
// used without Gate.
func (b *Broker) Gate(next coap.Handler) coap.Handler {
	return coap.HandlerFunc(func(ctx context.Context, w coap.ResponseWriter, r *coap.Request) error {
		if rest, ok := b.match(r.Msg); ok {
			if diag := b.deny(r, rest); diag != "" {
				return b.fail(w, coap.Forbidden, diag)
			}
		}
		return next.ServeCoAP(ctx, w, r)
	})
}

// Owns reports whether a request is for the broker's resources; the
// proxy's local stage passes such requests on instead of answering 4.04.
func (b *Broker) Owns(m *coap.Message) bool {
	_, ok := b.match(m)
	return ok
}
