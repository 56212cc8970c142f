package mac

// FCS length in octets: the 16-bit frame check sequence that ends every PSDU.
const FCSLen = 2

// fcsTable holds the CRC for every octet value, so FCS costs one lookup per
// byte instead of eight shifts.
var fcsTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0x8408 // 0x1021 bit-reversed: the CRC runs LSB first, as the radio sends bits
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}()

// FCS returns the IEEE 802.15.4 frame check sequence of b: the ITU-T CRC-16
// (polynomial x^16+x^12+x^5+1) computed LSB first with a zero initial value
// and no final XOR, a variant catalogued as CRC-16/KERMIT. On air the value
// is sent low octet first (IEEE 802.15.4-2006 §7.2.1.9); AppendFCS does that.
func FCS(b []byte) uint16 {
	var c uint16
	for _, x := range b {
		c = c>>8 ^ fcsTable[byte(c)^x]
	}
	return c
}

// AppendFCS appends the FCS of mpdu to mpdu, low octet first, and returns
// the extended slice: the PSDU a radio transmits.
func AppendFCS(mpdu []byte) []byte {
	c := FCS(mpdu)
	return append(mpdu, byte(c), byte(c>>8))
}

// CheckFCS reports whether psdu ends with a correct FCS over the octets
// before it.
func CheckFCS(psdu []byte) bool {
	if len(psdu) < FCSLen {
		return false
	}
	n := len(psdu) - FCSLen
	c := FCS(psdu[:n])
	return psdu[n] == byte(c) && psdu[n+1] == byte(c>>8)
}
