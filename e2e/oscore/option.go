package oscore

import "fmt"

// Flag bits of the first byte of the OSCORE option value (§6.1, §13.7).
const (
	flagPIVLen   = 0x07 // n: Partial IV length; 6 and 7 reserved
	flagKID      = 0x08 // k
	flagKIDCtx   = 0x10 // h
	flagReserved = 0xe0 // must be zero in this version
)

// maxOptionLen is the OSCORE option's maximum length (§2, Figure 3).
const maxOptionLen = 255

// maxPIVLen is the longest Partial IV: 5 bytes (§5.2, §12.6).
const maxPIVLen = 5

// OptionValue is the compressed COSE header carried in the OSCORE option
// (§6.1): Partial IV, 'kid context' and 'kid'.
type OptionValue struct {
	// PIV is the Partial IV, big-endian without leading zero bytes (0 is
	// 0x00); empty when absent.
	PIV []byte
	// HasKIDContext marks a 'kid context', which may be empty.
	HasKIDContext bool
	KIDContext    []byte
	// HasKID marks a 'kid', which may be empty (an empty Sender ID).
	HasKID bool
	KID    []byte
}

// ParseOptionValue decodes an OSCORE option value (§6.1). It rejects
// reserved flag bits and Partial IV lengths, truncation, a one-byte value
// of 0x00 (which must be sent empty, §2) and a Partial IV with leading zero
// bytes (§5), so every accepted value has exactly one encoding. The result
// aliases b.
func ParseOptionValue(b []byte) (OptionValue, error) {
	var v OptionValue
	if len(b) == 0 {
		return v, nil
	}
	if len(b) > maxOptionLen {
		return v, fmt.Errorf("%w: OSCORE option of %d bytes", ErrDecode, len(b))
	}
	f := b[0]
	switch {
	case f == 0:
		return v, fmt.Errorf("%w: OSCORE option 0x00 must be empty", ErrDecode)
	case f&flagReserved != 0:
		return v, fmt.Errorf("%w: reserved OSCORE flag bits %#02x", ErrDecode, f&flagReserved)
	case f&flagPIVLen > maxPIVLen:
		return v, fmt.Errorf("%w: reserved Partial IV length %d", ErrDecode, f&flagPIVLen)
	}
	b = b[1:]
	n := int(f & flagPIVLen)
	if len(b) < n {
		return v, fmt.Errorf("%w: Partial IV truncated", ErrDecode)
	}
	if n > 1 && b[0] == 0 {
		return v, fmt.Errorf("%w: Partial IV %x has a leading zero byte", ErrDecode, b[:n])
	}
	v.PIV, b = b[:n:n], b[n:]
	if f&flagKIDCtx != 0 {
		if len(b) < 1 {
			return v, fmt.Errorf("%w: kid context length missing", ErrDecode)
		}
		s := int(b[0])
		b = b[1:]
		if len(b) < s {
			return v, fmt.Errorf("%w: kid context truncated", ErrDecode)
		}
		v.HasKIDContext = true
		v.KIDContext, b = b[:s:s], b[s:]
	}
	if f&flagKID != 0 {
		v.HasKID = true
		v.KID = b
		b = nil
	}
	if len(b) > 0 {
		return v, fmt.Errorf("%w: %d trailing bytes in OSCORE option", ErrDecode, len(b))
	}
	return v, nil
}

// Len reports the encoded length of v.
func (v OptionValue) Len() int {
	n := len(v.PIV) + len(v.KID)
	if v.HasKIDContext {
		n += 1 + len(v.KIDContext)
	}
	if n > 0 || v.HasKID || v.HasKIDContext {
		n++ // flag byte
	}
	return n
}

// Append appends the encoding of v to buf (§6.1). All flags zero encode as
// the empty value (§2).
func (v OptionValue) Append(buf []byte) ([]byte, error) {
	switch {
	case len(v.PIV) > maxPIVLen:
		return buf, fmt.Errorf("oscore: Partial IV of %d bytes, at most %d", len(v.PIV), maxPIVLen)
	case len(v.PIV) > 1 && v.PIV[0] == 0:
		return buf, fmt.Errorf("oscore: Partial IV %x has a leading zero byte", v.PIV)
	case len(v.KIDContext) > 255:
		return buf, fmt.Errorf("oscore: kid context of %d bytes, at most 255", len(v.KIDContext))
	case len(v.KIDContext) > 0 && !v.HasKIDContext:
		return buf, fmt.Errorf("oscore: kid context set without HasKIDContext")
	case len(v.KID) > 0 && !v.HasKID:
		return buf, fmt.Errorf("oscore: kid set without HasKID")
	case v.Len() > maxOptionLen:
		return buf, fmt.Errorf("oscore: OSCORE option of %d bytes, at most %d", v.Len(), maxOptionLen)
	}
	f := byte(len(v.PIV))
	if v.HasKID {
		f |= flagKID
	}
	if v.HasKIDContext {
		f |= flagKIDCtx
	}
	if f == 0 {
		return buf, nil
	}
	buf = append(buf, f)
	buf = append(buf, v.PIV...)
	if v.HasKIDContext {
		buf = append(buf, byte(len(v.KIDContext)))
		buf = append(buf, v.KIDContext...)
	}
	return append(buf, v.KID...), nil
}
