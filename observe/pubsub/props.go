package pubsub

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// CBOR keys of the topic properties (draft §4, Table 1).
const (
	KeyTopicName          = 0
	KeyTopicData          = 1
	KeyResourceType       = 2
	KeyTopicContentFormat = 3
	KeyTopicType          = 4
	KeyExpirationDate     = 5
	KeyMaxSubscribers     = 6
	KeyObserverCheck      = 7
	KeyInitialize         = 8
)

// Resource types of draft §6.3.
const (
	RTBroker     = "core.ps"
	RTCollection = "core.ps.coll"
	RTTopic      = "core.ps.conf"
	RTData       = "core.ps.data"
)

// DefaultObserverCheck is the "observer-check" of a topic that sets none:
// the 24 hours of RFC 7641 §4.5 (draft §2.2.1).
const DefaultObserverCheck = 86400

// Limits of the topic property decoder. They are far above what a sane
// configuration needs and far below what could hurt the gateway.
const (
	maxConfigBytes  = 4096 + maxPayloadLimit // a whole configuration, "initialize" included
	maxTextLen      = 255                    // topic-name, topic-data, resource-type, topic-type
	maxKeyList      = 16                     // elements of a FETCH key list
	maxEpoch        = 1 << 40                // expiration-date, seconds: year ~36800
	maxObserveCheck = 1 << 32
)

// ErrProperties is wrapped by every error decoding topic properties.
var ErrProperties = errors.New("pubsub: bad topic properties")

// Properties is a topic configuration (draft §2.2.1): a nil pointer (or
// nil Initialize) is an absent property.
type Properties struct {
	TopicName          *string
	TopicData          *string
	ResourceType       *string
	TopicContentFormat *uint16
	TopicType          *string
	// ExpirationDate is seconds since 1970-01-01T00:00Z (CBOR tag 1).
	ExpirationDate *float64
	MaxSubscribers *uint64
	ObserverCheck  *uint64
	// Initialize is the initial topic-data representation; it is opaque.
	Initialize []byte
}

// decMode decodes untrusted CBOR with tight limits: no indefinite
// lengths, no duplicate keys, valid UTF-8 only, shallow nesting.
var decMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsAllowed,
		MaxNestedLevels:  4,
		MaxArrayElements: maxKeyList,
		MaxMapPairs:      32,
		UTF8:             cbor.UTF8RejectInvalid,
		NaN:              cbor.NaNDecodeForbidden,
		Inf:              cbor.InfDecodeForbidden,
	}.DecMode()
	if err != nil {
		panic(err) // static options: a failure is a programming error
	}
	return dm
}()

// encMode encodes deterministically (RFC 8949 §4.2.1): sorted keys,
// shortest forms.
var encMode = func() cbor.EncMode {
	em, err := cbor.EncOptions{Sort: cbor.SortCoreDeterministic, ShortestFloat: cbor.ShortestFloat16}.EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// DecodeProperties parses an application/core-pubsub+cbor map. Keys are
// the integers of draft §4; a text key, an unknown key, a value of the
// wrong type or out of bounds is an error (draft §2.4.3: "invalid,
// unrecognized").
func DecodeProperties(b []byte) (Properties, error) {
	var p Properties
	if len(b) > maxConfigBytes {
		return p, fmt.Errorf("%w: %d bytes, over %d", ErrProperties, len(b), maxConfigBytes)
	}
	var m map[int64]cbor.RawMessage
	if err := decMode.Unmarshal(b, &m); err != nil {
		return p, fmt.Errorf("%w: %w", ErrProperties, err)
	}
	if m == nil {
		return p, fmt.Errorf("%w: not a map", ErrProperties)
	}
	for k, raw := range m {
		if err := p.set(k, raw); err != nil {
			return Properties{}, err
		}
	}
	return p, nil
}

func (p *Properties) set(k int64, raw cbor.RawMessage) error {
	switch k {
	case KeyTopicName:
		return decodeText(k, raw, &p.TopicName)
	case KeyTopicData:
		return decodeText(k, raw, &p.TopicData)
	case KeyResourceType:
		return decodeText(k, raw, &p.ResourceType)
	case KeyTopicType:
		return decodeText(k, raw, &p.TopicType)
	case KeyTopicContentFormat:
		v, err := decodeUint(k, raw, math.MaxUint16)
		if err != nil {
			return err
		}
		cf := uint16(v)
		p.TopicContentFormat = &cf
	case KeyMaxSubscribers:
		v, err := decodeUint(k, raw, maxSubscribersLimit)
		if err != nil {
			return err
		}
		p.MaxSubscribers = &v
	case KeyObserverCheck:
		v, err := decodeUint(k, raw, maxObserveCheck)
		if err != nil {
			return err
		}
		if v == 0 {
			return fmt.Errorf("%w: observer-check must be greater than 0", ErrProperties)
		}
		p.ObserverCheck = &v
	case KeyExpirationDate:
		v, err := decodeEpoch(raw)
		if err != nil {
			return err
		}
		p.ExpirationDate = &v
	case KeyInitialize:
		if len(raw) == 0 || raw[0]>>5 != 2 {
			return fmt.Errorf("%w: initialize must be a byte string", ErrProperties)
		}
		var v []byte
		if err := decMode.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("%w: initialize: %w", ErrProperties, err)
		}
		if v == nil {
			v = []byte{}
		}
		p.Initialize = v
	default:
		return fmt.Errorf("%w: unknown property %d", ErrProperties, k)
	}
	return nil
}

func decodeText(k int64, raw cbor.RawMessage, dst **string) error {
	// Major type 3 only: a byte string must not pass as text.
	if len(raw) == 0 || raw[0]>>5 != 3 {
		return fmt.Errorf("%w: property %d must be a text string", ErrProperties, k)
	}
	var s string
	if err := decMode.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("%w: property %d: %w", ErrProperties, k, err)
	}
	if len(s) > maxTextLen || !utf8.ValidString(s) {
		return fmt.Errorf("%w: property %d longer than %d bytes", ErrProperties, k, maxTextLen)
	}
	*dst = &s
	return nil
}

func decodeUint(k int64, raw cbor.RawMessage, max uint64) (uint64, error) {
	if len(raw) == 0 || raw[0]>>5 != 0 {
		return 0, fmt.Errorf("%w: property %d must be an unsigned integer", ErrProperties, k)
	}
	var v uint64
	if err := decMode.Unmarshal(raw, &v); err != nil {
		return 0, fmt.Errorf("%w: property %d: %w", ErrProperties, k, err)
	}
	if v > max {
		return 0, fmt.Errorf("%w: property %d is %d, over %d", ErrProperties, k, v, max)
	}
	return v, nil
}

// decodeEpoch reads #6.1(number): an integer or a float number of seconds.
func decodeEpoch(raw cbor.RawMessage) (float64, error) {
	var tag cbor.RawTag
	if err := decMode.Unmarshal(raw, &tag); err != nil || tag.Number != 1 {
		return 0, fmt.Errorf("%w: expiration-date must be tag 1 (epoch date/time)", ErrProperties)
	}
	c := tag.Content
	if len(c) == 0 {
		return 0, fmt.Errorf("%w: expiration-date without content", ErrProperties)
	}
	var v float64
	switch c[0] >> 5 {
	case 0:
		var u uint64
		if err := decMode.Unmarshal(c, &u); err != nil {
			return 0, fmt.Errorf("%w: expiration-date: %w", ErrProperties, err)
		}
		if u > maxEpoch {
			return 0, fmt.Errorf("%w: expiration-date out of range", ErrProperties)
		}
		v = float64(u)
	case 7:
		if err := decMode.Unmarshal(c, &v); err != nil {
			return 0, fmt.Errorf("%w: expiration-date: %w", ErrProperties, err)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > maxEpoch {
			return 0, fmt.Errorf("%w: expiration-date out of range", ErrProperties)
		}
	default:
		// Negative dates are before 1970: no topic expires then.
		return 0, fmt.Errorf("%w: expiration-date must be a non-negative number", ErrProperties)
	}
	return v, nil
}

// Encode returns p as a deterministic CBOR map with the keys of draft §4.
func (p *Properties) Encode() ([]byte, error) {
	return p.encodeKeys(nil)
}

// encodeKeys encodes the properties whose keys are listed, or all of them
// when keys is nil.
func (p *Properties) encodeKeys(keys []int64) ([]byte, error) {
	want := func(k int64) bool { return keys == nil || slices.Contains(keys, k) }
	m := make(map[int64]any, 9)
	if p.TopicName != nil && want(KeyTopicName) {
		m[KeyTopicName] = *p.TopicName
	}
	if p.TopicData != nil && want(KeyTopicData) {
		m[KeyTopicData] = *p.TopicData
	}
	if p.ResourceType != nil && want(KeyResourceType) {
		m[KeyResourceType] = *p.ResourceType
	}
	if p.TopicContentFormat != nil && want(KeyTopicContentFormat) {
		m[KeyTopicContentFormat] = uint64(*p.TopicContentFormat)
	}
	if p.TopicType != nil && want(KeyTopicType) {
		m[KeyTopicType] = *p.TopicType
	}
	if p.ExpirationDate != nil && want(KeyExpirationDate) {
		v := *p.ExpirationDate
		var content any = v
		if v == math.Trunc(v) && v >= 0 && v <= maxEpoch {
			content = uint64(v)
		}
		m[KeyExpirationDate] = cbor.Tag{Number: 1, Content: content}
	}
	if p.MaxSubscribers != nil && want(KeyMaxSubscribers) {
		m[KeyMaxSubscribers] = *p.MaxSubscribers
	}
	if p.ObserverCheck != nil && want(KeyObserverCheck) {
		m[KeyObserverCheck] = *p.ObserverCheck
	}
	if p.Initialize != nil && want(KeyInitialize) {
		m[KeyInitialize] = p.Initialize
	}
	b, err := encMode.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("pubsub: encode topic properties: %w", err)
	}
	return b, nil
}

// DecodeKeyList parses the payload of a FETCH on a topic (draft §2.5.2):
// a CBOR array of property keys. Keys the broker does not know are kept;
// they select nothing.
func DecodeKeyList(b []byte) ([]int64, error) {
	if len(b) > 256 {
		return nil, fmt.Errorf("%w: key list of %d bytes", ErrProperties, len(b))
	}
	if len(b) == 0 || b[0]>>5 != 4 {
		return nil, fmt.Errorf("%w: FETCH filter must be an array of keys", ErrProperties)
	}
	var keys []int64
	if err := decMode.Unmarshal(b, &keys); err != nil {
		return nil, fmt.Errorf("%w: FETCH filter: %w", ErrProperties, err)
	}
	if keys == nil {
		keys = []int64{}
	}
	return keys, nil
}

// clone returns a deep copy.
func (p Properties) clone() Properties {
	c := p
	cp := func(s *string) *string {
		if s == nil {
			return nil
		}
		v := *s
		return &v
	}
	c.TopicName, c.TopicData, c.ResourceType, c.TopicType = cp(p.TopicName), cp(p.TopicData), cp(p.ResourceType), cp(p.TopicType)
	if p.TopicContentFormat != nil {
		v := *p.TopicContentFormat
		c.TopicContentFormat = &v
	}
	if p.ExpirationDate != nil {
		v := *p.ExpirationDate
		c.ExpirationDate = &v
	}
	if p.MaxSubscribers != nil {
		v := *p.MaxSubscribers
		c.MaxSubscribers = &v
	}
	if p.ObserverCheck != nil {
		v := *p.ObserverCheck
		c.ObserverCheck = &v
	}
	if p.Initialize != nil {
		c.Initialize = append([]byte{}, p.Initialize...)
	}
	return c
}

// matches reports whether every property present in f is present in p
// with the same value (draft §2.4.2).
func (p *Properties) matches(f *Properties) bool {
	eqS := func(a, b *string) bool { return b == nil || (a != nil && *a == *b) }
	eqU := func(a, b *uint64) bool { return b == nil || (a != nil && *a == *b) }
	switch {
	case !eqS(p.TopicName, f.TopicName), !eqS(p.TopicData, f.TopicData),
		!eqS(p.ResourceType, f.ResourceType), !eqS(p.TopicType, f.TopicType),
		!eqU(p.MaxSubscribers, f.MaxSubscribers), !eqU(p.ObserverCheck, f.ObserverCheck):
		return false
	case f.TopicContentFormat != nil && (p.TopicContentFormat == nil || *p.TopicContentFormat != *f.TopicContentFormat):
		return false
	case f.ExpirationDate != nil && (p.ExpirationDate == nil || *p.ExpirationDate != *f.ExpirationDate):
		return false
	case f.Initialize != nil && (p.Initialize == nil || string(p.Initialize) != string(f.Initialize)):
		return false
	}
	return true
}
