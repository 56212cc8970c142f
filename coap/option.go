package coap

import (
	"bytes"
	"encoding/binary"
	"slices"
)

// OptionID is a CoAP option number (§5.4, §12.2).
type OptionID uint16

// Option numbers gatewayd knows (RFC 7252 §5.10, RFC 7641, RFC 7959, RFC 8613,
// RFC 8768, RFC 9175, RFC 7967, RFC 9177, RFC 9668 and
// draft-ietf-core-cacheable-oscore).
const (
	IfMatch       OptionID = 1
	URIHost       OptionID = 3
	ETag          OptionID = 4
	IfNoneMatch   OptionID = 5
	Observe       OptionID = 6
	URIPort       OptionID = 7
	LocationPath  OptionID = 8
	OSCORE        OptionID = 9
	URIPath       OptionID = 11
	ContentFormat OptionID = 12
	MaxAge        OptionID = 14
	URIQuery      OptionID = 15
	HopLimit      OptionID = 16
	Accept        OptionID = 17
	QBlock1       OptionID = 19
	LocationQuery OptionID = 20
	EDHOC         OptionID = 21
	Block2        OptionID = 23
	Block1        OptionID = 27
	Size2         OptionID = 28
	QBlock2       OptionID = 31
	ProxyURI      OptionID = 35
	ProxyScheme   OptionID = 39
	Size1         OptionID = 60
	Echo          OptionID = 252
	NoResponse    OptionID = 258
	RequestTag    OptionID = 292
	// RequestHash is the number draft-ietf-core-cacheable-oscore §3.3
	// suggests to IANA (TBD548); no number is assigned yet.
	RequestHash OptionID = 548
)

// Critical reports whether an unrecognized option with this number must
// make the message fail (§5.4.1: odd numbers).
func (id OptionID) Critical() bool { return id&1 == 1 }

// Unsafe reports whether a proxy that does not understand the option must
// not forward it (§5.4.2: bit 1).
func (id OptionID) Unsafe() bool { return id&2 == 2 }

// NoCacheKey reports whether a safe-to-forward option is excluded from the
// cache key (§5.4.6: bits 2–4 all set).
func (id OptionID) NoCacheKey() bool { return id&0x1e == 0x1c }

// OptionDef describes a known option (§5.4.4, §5.10).
type OptionDef struct {
	Name       string
	MinLen     int
	MaxLen     int
	Repeatable bool
	// OSCORE is the option's class under RFC 8613 §4.1: 'E' (encrypted
	// only), 'U' (outer only) or 'B' (both: an inner and an outer value,
	// e.g. Observe, Max-Age).
	OSCORE byte
}

// Known options. An option not in this table is unknown to the proxy.
var optionDefs = map[OptionID]OptionDef{
	IfMatch:       {"If-Match", 0, 8, true, 'E'},
	URIHost:       {"Uri-Host", 1, 255, false, 'U'},
	ETag:          {"ETag", 1, 8, true, 'E'},
	IfNoneMatch:   {"If-None-Match", 0, 0, false, 'E'},
	Observe:       {"Observe", 0, 3, false, 'B'},
	URIPort:       {"Uri-Port", 0, 2, false, 'U'},
	LocationPath:  {"Location-Path", 0, 255, true, 'E'},
	OSCORE:        {"OSCORE", 0, 255, false, 'U'},
	URIPath:       {"Uri-Path", 0, 255, true, 'E'},
	ContentFormat: {"Content-Format", 0, 2, false, 'E'},
	MaxAge:        {"Max-Age", 0, 4, false, 'B'},
	URIQuery:      {"Uri-Query", 0, 255, true, 'E'},
	HopLimit:      {"Hop-Limit", 1, 1, false, 'U'},
	Accept:        {"Accept", 0, 2, false, 'E'},
	QBlock1:       {"Q-Block1", 0, 3, false, 'B'},
	LocationQuery: {"Location-Query", 0, 255, true, 'E'},
	EDHOC:         {"EDHOC", 0, 0, false, 'U'},
	Block2:        {"Block2", 0, 3, false, 'B'},
	Block1:        {"Block1", 0, 3, false, 'B'},
	Size2:         {"Size2", 0, 4, false, 'B'},
	QBlock2:       {"Q-Block2", 0, 3, false, 'B'},
	ProxyURI:      {"Proxy-Uri", 1, 1034, false, 'U'},
	ProxyScheme:   {"Proxy-Scheme", 1, 255, false, 'U'},
	Size1:         {"Size1", 0, 4, false, 'B'},
	Echo:          {"Echo", 1, 40, false, 'E'},
	NoResponse:    {"No-Response", 0, 1, false, 'B'},
	RequestTag:    {"Request-Tag", 0, 8, true, 'E'},
	RequestHash:   {"Request-Hash", 0, 1034, false, 'U'},
}

// Def returns the definition of a known option.
func (id OptionID) Def() (OptionDef, bool) {
	d, ok := optionDefs[id]
	return d, ok
}

// Known reports whether gatewayd understands the option.
func (id OptionID) Known() bool {
	if int(id) < len(knownLow)*64 {
		return knownLow[id/64]&(1<<(id%64)) != 0
	}
	_, ok := optionDefs[id]
	return ok
}

// knownLow is optionDefs as a bit set for the numbers below 512, where
// every option of the RFCs gatewayd knows lies: Known runs for each
// option of each forwarded request.
var knownLow = func() (b [8]uint64) {
	for id := range optionDefs {
		if int(id) < len(b)*64 {
			b[id/64] |= 1 << (id % 64)
		}
	}
	return b
}()

func (id OptionID) String() string {
	if d, ok := optionDefs[id]; ok {
		return d.Name
	}
	return "Option(" + itoa(uint32(id)) + ")"
}

func itoa(v uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// Option is one option instance; Value is the raw option value.
type Option struct {
	ID    OptionID
	Value []byte
}

// Options is a message's options in non-decreasing number order.
type Options []Option

// Get returns the first value of id.
func (o Options) Get(id OptionID) ([]byte, bool) {
	for _, opt := range o {
		if opt.ID == id {
			return opt.Value, true
		}
		if opt.ID > id {
			break
		}
	}
	return nil, false
}

// Has reports whether id is present.
func (o Options) Has(id OptionID) bool {
	_, ok := o.Get(id)
	return ok
}

// Uint returns the first value of id as an unsigned integer (§3.2 uint).
func (o Options) Uint(id OptionID) (uint32, bool) {
	v, ok := o.Get(id)
	if !ok || len(v) > 4 {
		return 0, false
	}
	return DecodeUint(v), true
}

// All calls yield for each value of id, in order.
func (o Options) All(id OptionID) func(yield func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for _, opt := range o {
			if opt.ID == id && !yield(opt.Value) {
				return
			}
		}
	}
}

// Insert adds an option after any others with the same number, keeping the
// slice sorted.
func (o Options) Insert(id OptionID, v []byte) Options {
	i := len(o)
	for i > 0 && o[i-1].ID > id {
		i--
	}
	return slices.Insert(o, i, Option{ID: id, Value: v})
}

// Set replaces every value of id by one value.
func (o Options) Set(id OptionID, v []byte) Options {
	return o.Remove(id).Insert(id, v)
}

// SetUint replaces every value of id by the minimal uint encoding of v.
func (o Options) SetUint(id OptionID, v uint32) Options {
	return o.Set(id, EncodeUint(v))
}

// Remove deletes every value of id.
func (o Options) Remove(id OptionID) Options {
	return slices.DeleteFunc(o, func(opt Option) bool { return opt.ID == id })
}

// UnrecognizedCritical returns the first critical option of o whose number
// is not among known: RFC 7252 §5.4.1 has a server reject a request that
// carries one with 4.02 Bad Option. Elective options are never reported.
func (o Options) UnrecognizedCritical(known ...OptionID) (OptionID, bool) {
	for _, opt := range o {
		if opt.ID.Critical() && !slices.Contains(known, opt.ID) {
			return opt.ID, true
		}
	}
	return 0, false
}

// Equal reports whether two option lists are identical, order included.
func (o Options) Equal(p Options) bool {
	return slices.EqualFunc(o, p, func(a, b Option) bool {
		return a.ID == b.ID && bytes.Equal(a.Value, b.Value)
	})
}

// EncodeUint returns the shortest big-endian encoding of v (§3.2: leading
// zero bytes are omitted, zero is the empty string).
func EncodeUint(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	i := 0
	for i < 4 && b[i] == 0 {
		i++
	}
	return append([]byte(nil), b[i:]...)
}

// DecodeUint reads a uint option value of up to 4 bytes.
func DecodeUint(b []byte) uint32 {
	var v uint32
	for _, c := range b {
		v = v<<8 | uint32(c)
	}
	return v
}
