package pubsub

import (
	"slices"
	"strings"
	"time"
)

// TopicInfo is one topic as an operator sees it. Name comes from whoever
// created the topic: whoever shows it must escape it.
type TopicInfo struct {
	Name          string // topic-name; "" if it has none
	Path          string // the topic resource
	DataPath      string // the topic-data resource
	ContentFormat int    // topic-content-format; -1 if it has none
	FullyCreated  bool   // has had a publication (draft §3.1)
	Subscriptions int    // observations of the topic-data the broker serves now
	LastPublished time.Time
	Expires       time.Time // zero: no expiration-date
}

// Topics lists up to max live topics, by name, then path.
func (b *Broker) Topics(max int) []TopicInfo {
	b.mu.Lock()
	now := b.clock.Now()
	out := make([]TopicInfo, 0, min(max, len(b.topics)))
	for _, t := range b.topics {
		if !b.liveLocked(t, now) {
			continue
		}
		ti := TopicInfo{Path: b.topicPath(t), DataPath: b.dataPath(t.dataSeg), ContentFormat: -1,
			FullyCreated: t.full, Subscriptions: len(t.subs), LastPublished: t.lastPub}
		if n := t.props.TopicName; n != nil {
			ti.Name = *n
		}
		if cf := t.props.TopicContentFormat; cf != nil {
			ti.ContentFormat = int(*cf)
		}
		if e, ok := expiry(&t.props); ok {
			ti.Expires = e
		}
		out = append(out, ti)
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(x, y TopicInfo) int {
		if c := strings.Compare(x.Name, y.Name); c != 0 {
			return c
		}
		return strings.Compare(x.Path, y.Path)
	})
	if len(out) > max {
		out = out[:max]
	}
	return out
}
