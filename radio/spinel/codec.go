package spinel

import (
	"errors"
	"fmt"
)

// Command identifiers, draft-rquattle-spinel-unified §4.
const (
	CmdNoop              uint32 = 0 // §4.1
	CmdReset             uint32 = 1 // §4.2
	CmdPropValueGet      uint32 = 2 // §4.3
	CmdPropValueSet      uint32 = 3 // §4.4
	CmdPropValueInsert   uint32 = 4 // §4.5
	CmdPropValueRemove   uint32 = 5 // §4.6
	CmdPropValueIs       uint32 = 6 // §4.7
	CmdPropValueInserted uint32 = 7 // §4.8
	CmdPropValueRemoved  uint32 = 8 // §4.9
)

// Property identifiers used by the RCP host, §5.
const (
	PropLastStatus          uint32 = 0   // §5.5.1, `i`
	PropProtocolVersion     uint32 = 1   // §5.5.2, `ii`
	PropNCPVersion          uint32 = 2   // §5.5.3, `U`
	PropInterfaceType       uint32 = 3   // §5.5.4, `i`
	PropCaps                uint32 = 5   // §5.5.6, `A(i)`
	PropHWAddr              uint32 = 8   // §5.5.9, `E`
	PropPHYEnabled          uint32 = 32  // §5.7.1, `b`
	PropPHYChan             uint32 = 33  // §5.7.2, `C`
	PropMACLAddr            uint32 = 52  // §5.8.5 PROP_MAC_15_4_LADDR, `E`
	PropMACSAddr            uint32 = 53  // §5.8.6 PROP_MAC_15_4_SADDR, `S`
	PropMACPANID            uint32 = 54  // §5.8.7 PROP_MAC_15_4_PANID, `S`
	PropMACRawStreamEnabled uint32 = 55  // §5.8.8, `b`
	PropStreamRaw           uint32 = 113 // §5.6.2, `dD`
	// PropRCPAPIVersion is SPINEL_PROP_RCP_API_VERSION (0xB0) from
	// OpenThread's spinel.h; the draft predates the RCP property range.
	PropRCPAPIVersion uint32 = 0xB0
)

// Capabilities (PROP_CAPS, §5.5.6).
const (
	CapWritableRawStream uint32 = 8
	// CapConfigRadio is SPINEL_CAP_CONFIG_RADIO from OpenThread's spinel.h:
	// the device is a radio co-processor, not a full NCP.
	CapConfigRadio uint32 = 34
	CapMACRaw      uint32 = 513
)

// ProtocolMajor is the Spinel major version this host speaks (§5.5.2.1).
const ProtocolMajor = 4

// MaxUint is the largest packed unsigned integer, 2^21-1 (§3.2).
const MaxUint = 1<<21 - 1

// Errors returned by the codec.
var (
	ErrTruncated = errors.New("spinel: truncated")
	ErrOverflow  = errors.New("spinel: packed integer over 21 bits")
	ErrNotSpinel = errors.New("spinel: header flag bits are not 10")
)

// AppendUint appends v as a packed unsigned integer (§3.2: EXI style,
// little-endian 7-bit groups, the high bit set on all but the last).
func AppendUint(dst []byte, v uint32) ([]byte, error) {
	if v > MaxUint {
		return dst, fmt.Errorf("spinel: packed integer %d: %w", v, ErrOverflow)
	}
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v)), nil
}

// ParseUint decodes a packed unsigned integer from the front of b and
// returns it with the number of bytes it took (§3.2). More than three bytes,
// or a value over 2^21-1, is ErrOverflow.
func ParseUint(b []byte) (v uint32, n int, err error) {
	for i := 0; i < 3; i++ {
		if i >= len(b) {
			return 0, 0, ErrTruncated
		}
		v |= uint32(b[i]&0x7F) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, ErrOverflow
}

// Header is the first byte of a Spinel frame (§2.1): FLG (always 0b10),
// the interface ID (NLI/IID, 0..3) and the transaction ID (0..15).
type Header byte

// MakeHeader returns the header for interface iid and transaction tid.
func MakeHeader(iid, tid uint8) Header { return Header(0x80 | (iid&3)<<4 | tid&0x0F) }

// IID returns the interface identifier (§2.1.2).
func (h Header) IID() uint8 { return uint8(h>>4) & 3 }

// TID returns the transaction identifier (§2.1.3); 0 marks unsolicited
// frames from the RCP and commands that want no correlated reply.
func (h Header) TID() uint8 { return uint8(h) & 0x0F }

// Frame is one Spinel frame (§2). For the property commands (GET, SET,
// INSERT, REMOVE, IS, INSERTED, REMOVED) Prop holds the property ID and
// Value the rest; for other commands Prop is 0 and Value is the payload.
type Frame struct {
	Header Header
	Cmd    uint32
	Prop   uint32
	Value  []byte // aliases the parsed buffer; copy before keeping it
}

// isPropCmd reports whether cmd carries a property ID first (§4.3–§4.9).
func isPropCmd(cmd uint32) bool { return cmd >= CmdPropValueGet && cmd <= CmdPropValueRemoved }

// Append appends the encoded frame (without HDLC framing) to dst.
func (f Frame) Append(dst []byte) ([]byte, error) {
	dst = append(dst, byte(f.Header))
	var err error
	if dst, err = AppendUint(dst, f.Cmd); err != nil {
		return dst, err
	}
	if isPropCmd(f.Cmd) {
		if dst, err = AppendUint(dst, f.Prop); err != nil {
			return dst, err
		}
	}
	return append(dst, f.Value...), nil
}

// ParseFrame decodes one Spinel frame. Value aliases b.
func ParseFrame(b []byte) (Frame, error) {
	var f Frame
	if len(b) < 2 {
		return f, fmt.Errorf("spinel: frame of %d bytes: %w", len(b), ErrTruncated)
	}
	f.Header = Header(b[0])
	if b[0]&0xC0 != 0x80 { // FLG must be 0b10 (§2.1.1)
		return f, ErrNotSpinel
	}
	cmd, n, err := ParseUint(b[1:])
	if err != nil {
		return f, fmt.Errorf("spinel: command id: %w", err)
	}
	f.Cmd = cmd
	rest := b[1+n:]
	if isPropCmd(cmd) {
		prop, n, err := ParseUint(rest)
		if err != nil {
			return f, fmt.Errorf("spinel: property id: %w", err)
		}
		f.Prop = prop
		rest = rest[n:]
	}
	f.Value = rest
	return f, nil
}

// Status is a Spinel status code, carried in PROP_LAST_STATUS (§6).
type Status uint32

// Status codes, §6.
const (
	StatusOK                 Status = 0
	StatusFailure            Status = 1
	StatusUnimplemented      Status = 2
	StatusInvalidArgument    Status = 3
	StatusInvalidState       Status = 4
	StatusInvalidCommand     Status = 5
	StatusInvalidInterface   Status = 6
	StatusInternalError      Status = 7
	StatusSecurityError      Status = 8
	StatusParseError         Status = 9
	StatusInProgress         Status = 10
	StatusNoMem              Status = 11
	StatusBusy               Status = 12
	StatusPropNotFound       Status = 13
	StatusPacketDropped      Status = 14
	StatusEmpty              Status = 15
	StatusCmdTooBig          Status = 16
	StatusNoAck              Status = 17
	StatusCCAFailure         Status = 18
	StatusAlready            Status = 19
	StatusItemNotFound       Status = 20
	StatusInvalidCommandProp Status = 21
	StatusResetPowerOn       Status = 112
	StatusResetExternal      Status = 113
	StatusResetSoftware      Status = 114
	StatusResetFault         Status = 115
	StatusResetCrash         Status = 116
	StatusResetAssert        Status = 117
	StatusResetOther         Status = 118
	StatusResetUnknown       Status = 119
	StatusResetWatchdog      Status = 120
	statusResetLast          Status = 127 // 121–127 are reserved reset causes
)

var statusNames = map[Status]string{
	StatusOK: "ok", StatusFailure: "failure", StatusUnimplemented: "unimplemented",
	StatusInvalidArgument: "invalid argument", StatusInvalidState: "invalid state",
	StatusInvalidCommand: "invalid command", StatusInvalidInterface: "invalid interface",
	StatusInternalError: "internal error", StatusSecurityError: "security error",
	StatusParseError: "parse error", StatusInProgress: "in progress", StatusNoMem: "no memory",
	StatusBusy: "busy", StatusPropNotFound: "property not found", StatusPacketDropped: "packet dropped",
	StatusEmpty: "empty", StatusCmdTooBig: "command too big", StatusNoAck: "no ack",
	StatusCCAFailure: "cca failure", StatusAlready: "already", StatusItemNotFound: "item not found",
	StatusInvalidCommandProp: "invalid command for property",
	StatusResetPowerOn:       "reset: power on", StatusResetExternal: "reset: external",
	StatusResetSoftware: "reset: software", StatusResetFault: "reset: fault",
	StatusResetCrash: "reset: crash", StatusResetAssert: "reset: assert",
	StatusResetOther: "reset: other", StatusResetUnknown: "reset: unknown",
	StatusResetWatchdog: "reset: watchdog",
}

func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status %d", uint32(s))
}

// Error makes a Status usable as an error; callers match with errors.As.
func (s Status) Error() string { return "spinel: " + s.String() }

// IsReset reports whether s is one of the reset causes 112–127 (§6), which
// the RCP emits unsolicited after it (re)starts.
func (s Status) IsReset() bool { return s >= StatusResetPowerOn && s <= statusResetLast }

// ParseStatus decodes a PROP_LAST_STATUS value (§5.5.1). Bytes after the
// status (the RCP's tx-done extras) are ignored.
func ParseStatus(v []byte) (Status, error) {
	s, _, err := ParseUint(v)
	if err != nil {
		return 0, fmt.Errorf("spinel: last status: %w", err)
	}
	return Status(s), nil
}

// ParseUints decodes a sequence of packed unsigned integers: the
// PROTOCOL_VERSION (`ii`, §5.5.2) and CAPS (`A(i)`, §5.5.6) values.
func ParseUints(v []byte) ([]uint32, error) {
	var out []uint32
	for len(v) > 0 {
		x, n, err := ParseUint(v)
		if err != nil {
			return out, err
		}
		out = append(out, x)
		v = v[n:]
	}
	return out, nil
}

// ParseUTF8 decodes a zero-terminated string (`U`, §3.1). A missing
// terminator is tolerated: the string runs to the end.
func ParseUTF8(v []byte) string {
	for i, b := range v {
		if b == 0 {
			return string(v[:i])
		}
	}
	return string(v)
}
