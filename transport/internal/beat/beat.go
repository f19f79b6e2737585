// Package beat runs the heartbeats of many connections from one timer, in groups.
//
// A timer per connection fires each at its own moment: ten thousand connections with a
// 15 s heartbeat wake an idle process some 670 times a second, and each wake-up is a
// thread switch in the kernel, which on the server measured costs as much as the
// heartbeat's own work. A Wheel puts every connection in one of a few slots and, on each
// tick, runs the beats of one slot together: the process wakes once per tick, and the
// pings of a slot can go out with the data that comes right after (see Beat's phases).
package beat

import (
	"sync"
	"time"
)

// Slots is the number of groups a Wheel's period is divided into: a tick is period/Slots.
const Slots = 16

// Wheel calls each of its beats every period, the beats of one slot on the same tick. The
// zero value is not usable; use New.
type Wheel struct {
	tick time.Duration

	mu      sync.Mutex
	slots   [Slots][]*Beat
	cur     int         // the slot the next tick is due for
	n       int         // beats registered
	timer   *time.Timer // runs tick while n > 0
	running bool        // the timer is armed or its callback runs
}

// New returns a Wheel whose beats come every period.
func New(period time.Duration) *Wheel {
	w := &Wheel{tick: max(period/Slots, time.Millisecond)}
	w.timer = time.AfterFunc(time.Hour, w.run)
	w.timer.Stop()
	return w
}

// Beat is one registered connection's heartbeat.
type Beat struct {
	w    *Wheel
	fn   func(due bool)
	slot int
	idx  int  // in w.slots[slot]; -1 once stopped
	due  bool // has been due: there is a tick-later call to make (under w.mu)
}

// Add registers fn. Every period fn(true) runs on a goroutine of its own (it may wait, on
// a session store for one), the first time between period less a tick and period from
// now; one tick after each, fn(false) runs on the wheel's goroutine, where it must not
// wait: a beat that queued a ping without waking its writer, to go out with the data of
// that tick if any comes, sends it then at the latest.
func (w *Wheel) Add(fn func(due bool)) *Beat {
	w.mu.Lock()
	defer w.mu.Unlock()
	// The slot just handled comes round again last: a whole period from now, less the
	// part of a tick already gone.
	slot := (w.cur + Slots - 1) % Slots
	b := &Beat{w: w, fn: fn, slot: slot, idx: len(w.slots[slot])}
	w.slots[slot] = append(w.slots[slot], b)
	w.n++
	if !w.running {
		w.running = true
		w.timer.Reset(w.tick)
	}
	return b
}

// Stop unregisters b. A call of its fn that has begun may still finish after Stop
// returns, and one already due may still start: fn must tolerate running once after its
// connection is gone.
func (b *Beat) Stop() {
	w := b.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if b.idx < 0 {
		return
	}
	s := w.slots[b.slot]
	last := len(s) - 1
	s[b.idx] = s[last]
	s[b.idx].idx = b.idx
	s[last] = nil
	w.slots[b.slot] = s[:last]
	b.idx = -1
	w.n--
}

// run is one tick: the beats of the current slot are due, those of the slot before get
// their second call. The timer stops while nothing is registered, so that an idle
// process (or a test) has no goroutine of the wheel's.
func (w *Wheel) run() {
	w.mu.Lock()
	due := w.slots[w.cur]
	prev := w.slots[(w.cur+Slots-1)%Slots]
	w.cur = (w.cur + 1) % Slots
	calls := append([]*Beat(nil), due...) // called outside mu; one slice a tick
	ndue := len(due)
	for _, b := range due {
		b.due = true
	}
	for _, b := range prev {
		if b.due { // not one added since the slot's last tick
			calls = append(calls, b)
		}
	}
	if w.n == 0 {
		w.running = false
	} else {
		w.timer.Reset(w.tick)
	}
	w.mu.Unlock()

	for i, b := range calls {
		if i < ndue {
			go b.fn(true)
		} else {
			b.fn(false)
		}
	}
}
