package mac

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrAddrSyntax is wrapped by ParseAddr's errors.
var ErrAddrSyntax = errors.New("mac: bad address syntax")

// ParseAddr parses the forms String prints: "0x1234" (short) and
// "00:11:22:33:44:55:66:77" (extended, big-endian); "-" may stand for ":"
// and a 16-digit hex number is taken as an extended address.
func ParseAddr(s string) (Addr, error) {
	bad := func() (Addr, error) { return Addr{}, fmt.Errorf("%w: %q", ErrAddrSyntax, s) }
	switch {
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		h := s[2:]
		if len(h) == 0 || len(h) > 4 {
			return bad()
		}
		v, err := strconv.ParseUint(h, 16, 16)
		if err != nil {
			return bad()
		}
		return ShortAddr(uint16(v)), nil
	case len(s) == 16:
		v, err := strconv.ParseUint(s, 16, 64)
		if err != nil {
			return bad()
		}
		return ExtendedAddrUint64(v), nil
	case len(s) == 23:
		var e [8]byte
		for i := range e {
			if i > 0 && s[3*i-1] != ':' && s[3*i-1] != '-' {
				return bad()
			}
			v, err := strconv.ParseUint(s[3*i:3*i+2], 16, 8)
			if err != nil {
				return bad()
			}
			e[i] = byte(v)
		}
		return ExtendedAddr(e), nil
	}
	return bad()
}

// MarshalText implements encoding.TextMarshaler with String's format; no
// address is the empty string.
func (a Addr) MarshalText() ([]byte, error) {
	if !a.IsValid() {
		return []byte{}, nil
	}
	return []byte(a.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseAddr; the
// empty string is no address.
func (a *Addr) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*a = Addr{}
		return nil
	}
	v, err := ParseAddr(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}
