package mqtt

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/opaque-edge/gatewayd/coap"
)

// Config is the plugin's config table.
type Config struct {
	// Broker is the broker URL: mqtt://host:1883 (or tcp://), mqtts://
	// host:8883 (or ssl://, tls://) for TLS with the system roots.
	Broker string `toml:"broker" json:"broker"`
	// ClientID must be unique per gateway on the broker (a cluster too):
	// a second connection with the same ID takes the first one over.
	ClientID string `toml:"client_id" json:"client_id"`
	Username string `toml:"username" json:"username"`
	Password string `toml:"password" json:"password"`
	// KeepAlive in seconds; default 30.
	KeepAlive uint16 `toml:"keep_alive" json:"keep_alive"`
	// SessionExpiry in seconds keeps the broker-side session (the
	// subscriptions and the QoS 1 messages for them) across reconnects;
	// default 3600. 0 makes every connection start clean.
	SessionExpiry *uint32 `toml:"session_expiry" json:"session_expiry"`
	// QueueSize bounds the representations waiting for a PUBACK; when
	// full the oldest is dropped (Stats.Dropped). Default 1024.
	QueueSize int `toml:"queue_size" json:"queue_size"`
	// PutTimeout bounds one CoAP PUT of the down direction, in seconds;
	// default 30.
	PutTimeout int    `toml:"put_timeout" json:"put_timeout"`
	Up         []Up   `toml:"up" json:"up"`
	Down       []Down `toml:"down" json:"down"`
}

// Up maps a CoAP resource to an MQTT topic.
type Up struct {
	// Observe is the CoAP URI observed, e.g. coap://[fd00::1]/sensors/temp
	// or a pub-sub topic-data URI.
	Observe string `toml:"observe" json:"observe"`
	// Topic is the MQTT topic each representation is published to; no
	// wildcards.
	Topic string `toml:"topic" json:"topic"`
	// Retain publishes with the retain flag, so a new subscriber gets the
	// latest representation at once.
	Retain bool `toml:"retain" json:"retain"`
}

// Down maps an MQTT topic filter to a CoAP URI.
type Down struct {
	// Topic is the MQTT topic filter subscribed to (wildcards allowed).
	Topic string `toml:"topic" json:"topic"`
	// Put is the CoAP URI each message's payload is PUT to.
	Put string `toml:"put" json:"put"`
	// ContentFormat is used when a message has neither a content type
	// property nor a coap-cf user property; nil sends no Content-Format.
	ContentFormat *uint16 `toml:"content_format" json:"content_format"`
}

// Defaults for Config.
const (
	DefaultKeepAlive     = 30
	DefaultSessionExpiry = 3600
	DefaultQueueSize     = 1024
	DefaultPutTimeout    = 30 // seconds
	maxQueueSize         = 1 << 20
)

func (c Config) withDefaults() Config {
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.SessionExpiry == nil {
		v := uint32(DefaultSessionExpiry)
		c.SessionExpiry = &v
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.PutTimeout <= 0 {
		c.PutTimeout = DefaultPutTimeout
	}
	return c
}

// Validate reports a configuration the Bridge cannot use.
func (c Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.Broker)
	switch {
	case c.Broker == "":
		errs = append(errs, errors.New("mqtt: broker is required"))
	case err != nil:
		errs = append(errs, fmt.Errorf("mqtt: broker: %w", err))
	case !knownScheme(u.Scheme) || u.Host == "":
		errs = append(errs, fmt.Errorf("mqtt: broker %q: want mqtt://host:port or mqtts://host:port", c.Broker))
	}
	if c.ClientID == "" || len(c.ClientID) > 65535 {
		errs = append(errs, errors.New("mqtt: client_id is required"))
	}
	if c.QueueSize > maxQueueSize {
		errs = append(errs, fmt.Errorf("mqtt: queue_size %d over %d", c.QueueSize, maxQueueSize))
	}
	if len(c.Up) == 0 && len(c.Down) == 0 {
		errs = append(errs, errors.New("mqtt: no up or down mappings"))
	}
	for i, m := range c.Up {
		if err := checkCoAPURI(m.Observe); err != nil {
			errs = append(errs, fmt.Errorf("mqtt: up[%d].observe: %w", i, err))
		}
		if m.Topic == "" || strings.ContainsAny(m.Topic, "+#\x00") {
			errs = append(errs, fmt.Errorf("mqtt: up[%d].topic %q: want a topic name without wildcards", i, m.Topic))
		}
	}
	for i, m := range c.Down {
		if err := checkCoAPURI(m.Put); err != nil {
			errs = append(errs, fmt.Errorf("mqtt: down[%d].put: %w", i, err))
		}
		if !validFilter(m.Topic) {
			errs = append(errs, fmt.Errorf("mqtt: down[%d].topic %q: not a topic filter", i, m.Topic))
		}
	}
	return errors.Join(errs...)
}

func knownScheme(s string) bool {
	switch s {
	case "mqtt", "tcp", "mqtts", "ssl", "tls":
		return true
	}
	return false
}

func checkCoAPURI(s string) error {
	u, err := coap.ParseURI(s)
	if err != nil {
		return err
	}
	if u.Scheme != "coap" && u.Scheme != "coaps" {
		return fmt.Errorf("%q is not a coap or coaps URI", s)
	}
	return nil
}

// validFilter checks an MQTT topic filter (MQTT v5 §4.7): "#" only last
// and alone in its level, "+" alone in its level.
func validFilter(f string) bool {
	if f == "" || strings.ContainsRune(f, 0) {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}

// match reports whether topic matches filter (MQTT v5 §4.7).
func match(filter, topic string) bool {
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	if strings.HasPrefix(topic, "$") && (fl[0] == "+" || fl[0] == "#") {
		return false // §4.7.2: wildcards at the first level skip $-topics
	}
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(tl) || (f != "+" && f != tl[i]) {
			return false
		}
	}
	return len(fl) == len(tl)
}
