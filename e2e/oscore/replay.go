package oscore

// maxWindow bounds Config.ReplayWindow; a larger window only costs memory,
// but nothing needs more than a few thousand.
const maxWindow = 1 << 16

// window is the sliding anti-replay window of §7.4 and §3.2.2, the scheme
// of RFC 6347 §4.1.2.6 over Partial IV values. It is not safe for concurrent
// use: Context guards it with its mutex.
type window struct {
	size uint64
	top  uint64   // highest accepted sequence number + 1; 0 before the first
	bits []uint64 // bit i (word i/64, bit i%64) set: top-1-i was accepted
}

func newWindow(size int) window {
	return window{size: uint64(size), bits: make([]uint64, (size+63)/64)}
}

// fresh reports whether seq may be accepted: not seen and not older than
// the window.
func (w *window) fresh(seq uint64) bool {
	if seq >= w.top {
		return true
	}
	i := w.top - 1 - seq
	if i >= w.size {
		return false
	}
	return w.bits[i/64]&(1<<(i%64)) == 0
}

// accept records seq, which must be fresh.
func (w *window) accept(seq uint64) {
	if seq >= w.top {
		w.shift(seq + 1 - w.top)
		w.top = seq + 1
		w.bits[0] |= 1
		return
	}
	i := w.top - 1 - seq
	w.bits[i/64] |= 1 << (i % 64)
}

// shift ages every entry by d positions, dropping those that fall out.
func (w *window) shift(d uint64) {
	if d >= w.size {
		clear(w.bits)
		return
	}
	words, off := int(d/64), d%64
	for i := len(w.bits) - 1; i >= 0; i-- {
		var v uint64
		if j := i - words; j >= 0 {
			v = w.bits[j] << off
			if off > 0 && j > 0 {
				v |= w.bits[j-1] >> (64 - off)
			}
		}
		w.bits[i] = v
	}
	// Keep bits past size clear so they never count as seen.
	if r := w.size % 64; r != 0 {
		w.bits[len(w.bits)-1] &= 1<<r - 1
	}
}
