package spinel

import (
	"encoding/binary"
	"fmt"
)

// PROP_STREAM_RAW values (§5.6.2): `dD`, the PSDU with a 16-bit
// little-endian length, then metadata. The draft leaves the metadata to the
// PHY (§5.6.2.1); the layouts below are the ones OpenThread's RCP firmware
// uses, so a stock RCP understands them.

// MaxPSDU is the largest IEEE 802.15.4 PSDU (aMaxPHYPacketSize), FCS included.
const MaxPSDU = 127

// TxRequest is the value of a host PROP_VALUE_SET STREAM_RAW: a frame to
// transmit. Metadata after Channel is optional on the wire; the RCP uses its
// defaults for whatever is missing.
type TxRequest struct {
	PSDU            []byte // MPDU plus 2 FCS bytes (the radio fills in the FCS)
	Channel         uint8  // `C`, required
	MaxCSMABackoffs uint8  // `C`
	MaxRetries      uint8  // `C`, MAC frame retries when an ack is requested
	CSMA            bool   // `b`, CSMA-CA before transmitting
}

// Append appends the encoded value to dst.
func (r TxRequest) Append(dst []byte) ([]byte, error) {
	if len(r.PSDU) > MaxPSDU {
		return dst, fmt.Errorf("spinel: psdu of %d bytes exceeds %d", len(r.PSDU), MaxPSDU)
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(r.PSDU)))
	dst = append(dst, r.PSDU...)
	return append(dst, r.Channel, r.MaxCSMABackoffs, r.MaxRetries, boolByte(r.CSMA)), nil
}

// ParseTxRequest decodes a STREAM_RAW transmit value. Missing optional
// metadata takes OpenThread's defaults (4 backoffs, 3 retries, CSMA on);
// trailing fields this host does not know are ignored. PSDU aliases v.
func ParseTxRequest(v []byte) (TxRequest, error) {
	r := TxRequest{MaxCSMABackoffs: 4, MaxRetries: 3, CSMA: true}
	psdu, rest, err := parseDataWLen(v)
	if err != nil {
		return r, fmt.Errorf("spinel: stream raw tx: %w", err)
	}
	r.PSDU = psdu
	if len(rest) < 1 {
		return r, fmt.Errorf("spinel: stream raw tx: channel: %w", ErrTruncated)
	}
	r.Channel, rest = rest[0], rest[1:]
	if len(rest) > 0 {
		r.MaxCSMABackoffs, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		r.MaxRetries, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		r.CSMA = rest[0] != 0
	}
	return r, nil
}

// RxFrame is the value of an unsolicited PROP_VALUE_IS STREAM_RAW: a frame
// the radio received. Metadata (§5.6.2.1): MD_RSSI `c`, MD_NOISE `c`, MD_FLAG
// `S`, then MD_PHY as OpenThread fills it, `t(CCX)`: channel, LQI and a
// microsecond timestamp; then the vendor struct `t(i)`: the receive error.
type RxFrame struct {
	PSDU      []byte // as received, FCS included
	RSSI      int8   // dBm; -128 when the RCP sent no metadata
	Noise     int8   // dBm
	Flags     uint16
	Channel   uint8
	LQI       uint8
	Timestamp uint64 // µs, RCP clock
	Error     Status // receive error; StatusOK for a good frame
}

// Append appends the encoded value to dst.
func (f RxFrame) Append(dst []byte) ([]byte, error) {
	if len(f.PSDU) > MaxPSDU {
		return dst, fmt.Errorf("spinel: psdu of %d bytes exceeds %d", len(f.PSDU), MaxPSDU)
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(f.PSDU)))
	dst = append(dst, f.PSDU...)
	dst = append(dst, byte(f.RSSI), byte(f.Noise))
	dst = binary.LittleEndian.AppendUint16(dst, f.Flags)
	dst = binary.LittleEndian.AppendUint16(dst, 10) // t(CCX) length
	dst = append(dst, f.Channel, f.LQI)
	dst = binary.LittleEndian.AppendUint64(dst, f.Timestamp)
	var st []byte
	st, err := AppendUint(st, uint32(f.Error))
	if err != nil {
		return dst, err
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(st)))
	return append(dst, st...), nil
}

// ParseRxFrame decodes a received STREAM_RAW value. The metadata is
// optional and may be partial (§5.6.2.1); what is missing keeps its default
// (RSSI and noise -128, LQI 0). Structs may be longer than this host knows
// (§3.4): extra bytes are skipped. PSDU aliases v.
func ParseRxFrame(v []byte) (RxFrame, error) {
	f := RxFrame{RSSI: -128, Noise: -128}
	psdu, rest, err := parseDataWLen(v)
	if err != nil {
		return f, fmt.Errorf("spinel: stream raw rx: %w", err)
	}
	f.PSDU = psdu
	if len(rest) < 1 {
		return f, nil
	}
	f.RSSI, rest = int8(rest[0]), rest[1:]
	if len(rest) < 1 {
		return f, nil
	}
	f.Noise, rest = int8(rest[0]), rest[1:]
	if len(rest) < 2 {
		return f, nil
	}
	f.Flags, rest = binary.LittleEndian.Uint16(rest), rest[2:]
	if len(rest) == 0 {
		return f, nil
	}
	phy, rest, err := parseDataWLen(rest)
	if err != nil {
		return f, fmt.Errorf("spinel: stream raw rx: phy metadata: %w", err)
	}
	if len(phy) >= 1 {
		f.Channel = phy[0]
	}
	if len(phy) >= 2 {
		f.LQI = phy[1]
	}
	if len(phy) >= 10 {
		f.Timestamp = binary.LittleEndian.Uint64(phy[2:])
	}
	if len(rest) == 0 {
		return f, nil
	}
	vend, _, err := parseDataWLen(rest)
	if err != nil {
		return f, fmt.Errorf("spinel: stream raw rx: vendor metadata: %w", err)
	}
	if len(vend) > 0 {
		e, _, err := ParseUint(vend)
		if err != nil {
			return f, fmt.Errorf("spinel: stream raw rx: receive error: %w", err)
		}
		f.Error = Status(e)
	}
	return f, nil
}

// parseDataWLen splits a `d` blob (§3.3: 16-bit little-endian length, then
// the bytes) off the front of v.
func parseDataWLen(v []byte) (data, rest []byte, err error) {
	if len(v) < 2 {
		return nil, v, ErrTruncated
	}
	n := int(binary.LittleEndian.Uint16(v))
	if len(v)-2 < n {
		return nil, v, ErrTruncated
	}
	return v[2 : 2+n], v[2+n:], nil
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}
