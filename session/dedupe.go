package session

// DefaultDedupeWindow is how many recent upstream sequence numbers a session remembers.
const DefaultDedupeWindow = 1024

// Window remembers which of the last n sequence numbers of a session were seen, in n bits.
// A sequence number older than the window counts as seen: the client resends only what it
// has not had acknowledged, and it never has more than n frames in flight. The zero value
// is not usable; see NewWindow. A Window is not safe for concurrent use.
type Window struct {
	max  uint64 // highest sequence number seen
	bits []uint64
}

// NewWindow returns a window of n sequence numbers, rounded up to a multiple of 64.
func NewWindow(n int) *Window {
	return &Window{bits: make([]uint64, max(1, (n+63)/64))}
}

func (w *Window) size() uint64 { return uint64(len(w.bits)) * 64 }

// Mark records seq and reports whether it is seen for the first time. Sequence 0 is
// never valid and reports false.
func (w *Window) Mark(seq uint64) bool {
	if seq == 0 {
		return false
	}
	n := w.size()
	if seq > w.max {
		// Clear the slots the window slides past; all of them if it jumps a full window.
		if seq-w.max >= n {
			clear(w.bits)
		} else {
			for s := w.max + 1; s < seq; s++ {
				w.clear(s % n)
			}
		}
		w.max = seq
		w.set(seq % n)
		return true
	}
	if w.max-seq >= n {
		return false
	}
	i := seq % n
	if w.bits[i/64]&(1<<(i%64)) != 0 {
		return false
	}
	w.set(i)
	return true
}

func (w *Window) set(i uint64)   { w.bits[i/64] |= 1 << (i % 64) }
func (w *Window) clear(i uint64) { w.bits[i/64] &^= 1 << (i % 64) }

// State returns the window's highest sequence number and its bits, to be saved.
func (w *Window) State() (maxSeq uint64, bits []uint64) {
	return w.max, append([]uint64(nil), w.bits...)
}

// SetState restores a state from State. Bits of another window size are ignored, which
// only makes older sequence numbers count as seen.
func (w *Window) SetState(maxSeq uint64, bits []uint64) {
	w.max = maxSeq
	if len(bits) == len(w.bits) {
		copy(w.bits, bits)
	} else {
		for i := range w.bits {
			w.bits[i] = ^uint64(0)
		}
	}
}
