package session

// DefaultDedupeWindow is how many recent upstream sequence numbers a dedupe key (a client
// identity, or a session without one: see DedupeKey) remembers. The JS client never has
// more frames than this unacknowledged.
const DefaultDedupeWindow = 1024

// Window remembers which of the last n sequence numbers of a dedupe key were seen, in n bits.
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

// inWindow reports whether seq is one the window still tells apart (not older than it).
func (w *Window) inWindow(seq uint64) bool {
	return seq != 0 && seq <= w.max && w.max-seq < w.size()
}

// seen reports whether seq is marked; it must be inWindow.
func (w *Window) seen(seq uint64) bool {
	i := seq % w.size()
	return w.bits[i/64]&(1<<(i%64)) != 0
}

// MaxUpstreamResult bounds what a Store records with an upstream mark (MarkUpstream,
// RecordUpstream): a position, or an error code with a short reason.
const MaxUpstreamResult = 256

// Ledger is a Window that also keeps a small result with each sequence number, for a
// duplicate to get the answer its first attempt got (Store.MarkUpstream). Only non-empty
// results take memory: at most twice the window's size of them, since results of
// sequence numbers that left the window are dropped once they are as many as the window.
// The zero value is not usable; see NewLedger. A Ledger is not safe for concurrent use.
type Ledger struct {
	w   *Window
	res map[uint64]string // non-empty results, some perhaps of seqs that left the window
}

// NewLedger returns a ledger of n sequence numbers (see NewWindow).
func NewLedger(n int) *Ledger { return &Ledger{w: NewWindow(n)} }

// Mark records seq with result and reports whether seq is new. For a duplicate it
// returns the result recorded for seq, "" when there is none or seq is older than the
// window. Sequence 0 is never valid and reports false.
func (l *Ledger) Mark(seq uint64, result string) (first bool, recorded string) {
	if l.w.Mark(seq) {
		l.set(seq, result)
		return true, ""
	}
	if !l.w.inWindow(seq) {
		return false, ""
	}
	return false, l.res[seq]
}

// Record replaces the result of seq, if seq is marked and still in the window.
func (l *Ledger) Record(seq uint64, result string) {
	if l.w.inWindow(seq) && l.w.seen(seq) {
		l.set(seq, result)
	}
}

func (l *Ledger) set(seq uint64, result string) {
	if result == "" {
		delete(l.res, seq)
		return
	}
	if l.res == nil {
		l.res = make(map[uint64]string)
	}
	l.res[seq] = result
	if uint64(len(l.res)) > 2*l.w.size() {
		for s := range l.res {
			if !l.w.inWindow(s) {
				delete(l.res, s)
			}
		}
	}
}

// LedgerState is the saved form of a Ledger.
type LedgerState struct {
	Max     uint64            `json:"max,omitempty"`
	Bits    []uint64          `json:"bits,omitempty"`
	Results map[uint64]string `json:"results,omitempty"`
}

// State returns l's state, to be saved.
func (l *Ledger) State() LedgerState {
	st := LedgerState{}
	st.Max, st.Bits = l.w.State()
	for s, r := range l.res {
		if l.w.inWindow(s) {
			if st.Results == nil {
				st.Results = make(map[uint64]string)
			}
			st.Results[s] = r
		}
	}
	return st
}

// SetState restores a state from State (see Window.SetState).
func (l *Ledger) SetState(st LedgerState) {
	l.w.SetState(st.Max, st.Bits)
	l.res = nil
	for s, r := range st.Results {
		if l.w.inWindow(s) && r != "" && len(r) <= MaxUpstreamResult {
			if l.res == nil {
				l.res = make(map[uint64]string)
			}
			l.res[s] = r
		}
	}
}
