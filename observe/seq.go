package observe

import "time"

// seqMask keeps the 24 bits the Observe option carries (RFC 7641 §3.4).
const seqMask = 1<<24 - 1

// reorderWindow is the 128 seconds of RFC 7641 §3.4 after which any
// notification counts as newer.
const reorderWindow = 128 * time.Second

// fresher reports whether a notification numbered v2 that arrived at t2
// was sent after the freshest so far, numbered v1 and arrived at t1:
//
//	(V1 < V2 and V2 - V1 < 2^23) or
//	(V1 > V2 and V1 - V2 > 2^23) or
//	(T2 > T1 + 128 seconds)
//
// as RFC 7641 §3.4 has it, in 24-bit serial number arithmetic.
func fresher(v1 uint32, t1 time.Time, v2 uint32, t2 time.Time) bool {
	v1, v2 = v1&seqMask, v2&seqMask
	const half = 1 << 23
	return (v1 < v2 && v2-v1 < half) || (v1 > v2 && v1-v2 > half) || t2.After(t1.Add(reorderWindow))
}
