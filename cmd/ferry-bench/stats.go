package main

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The payload of every published message: the phase it belongs to, a sequence number
// (increasing across the run, per channel) and the send time in Unix nanoseconds, taken
// just before the publish request leaves, so that latency covers the publish API,
// fan-out, the transport and the client's parsing. "pad" brings it to the size asked
// for. With several channels (--channels) "c" is the channel's index, which the
// subscriber checks against its own: a message is known by (channel, phase, seq).
//
//	{"p":1,"seq":42,"ts":1700000000000000000,"pad":"xxxx"}
//	{"p":1,"c":7,"seq":42,"ts":1700000000000000000,"pad":"xxxx"}
func appendPayload(b []byte, phase int, seq uint64, ts int64, pad int) []byte {
	return appendChannelPayload(b, phase, -1, seq, ts, pad)
}

// appendChannelPayload is appendPayload with the channel index ch (none if negative).
func appendChannelPayload(b []byte, phase, ch int, seq uint64, ts int64, pad int) []byte {
	if ch >= 0 {
		b = fmt.Appendf(b, `{"p":%d,"c":%d,"seq":%d,"ts":%d,"pad":"`, phase, ch, seq, ts)
	} else {
		b = fmt.Appendf(b, `{"p":%d,"seq":%d,"ts":%d,"pad":"`, phase, seq, ts)
	}
	for range pad {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// payloadFields finds the fields of a payload anywhere in b (a frame or an event that
// carries it), without decoding the rest: the generator reads millions of messages a
// second on one core and can't afford a JSON decoder per message.
func payloadFields(b []byte) (phase int, seq uint64, ts int64, ok bool) {
	p, ok1 := intField(b, `"p":`)
	s, ok2 := intField(b, `"seq":`)
	t, ok3 := intField(b, `"ts":`)
	return int(p), uint64(s), t, ok1 && ok2 && ok3
}

// payloadChannel returns the channel index of a payload, 0 if it names none.
func payloadChannel(b []byte) int {
	c, _ := intField(b, `"c":`)
	return int(c)
}

func intField(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	var v int64
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		v = v*10 + int64(b[n]-'0')
		n++
	}
	return v, n > 0
}

// phase is one measured step of a run (steady rate, or burst): what was published and
// what arrived.
type phase struct {
	lat        hist
	delivered  atomic.Int64
	dups       atomic.Int64 // a sequence number the client had already received
	lastArrive atomic.Int64 // Unix nanoseconds of the latest delivery
	published  atomic.Int64
	pubErrors  atomic.Int64
	pubLat     hist // of the publish requests, sent to answered
}

func (p *phase) arrived(now time.Time, ts int64) {
	p.lat.Record(time.Duration(now.UnixNano() - ts))
	p.delivered.Add(1)
	for {
		last := p.lastArrive.Load()
		if now.UnixNano() <= last || p.lastArrive.CompareAndSwap(last, now.UnixNano()) {
			return
		}
	}
}

// Phase numbers carried in payloads.
const (
	phaseWarm    = 0 // not measured
	phaseRate    = 1
	phaseBurst   = 2
	phasePubTest = 3 // --publish-rate-test
	numPhases    = 4
)

// stats is what every client reports into.
type stats struct {
	phases [numPhases]phase
	// unknown counts messages whose payload could not be read.
	unknown atomic.Int64

	mu     sync.Mutex
	errors map[string]int
	sample map[string]string
}

func newStats() *stats {
	return &stats{errors: map[string]int{}, sample: map[string]string{}}
}

// seqState is what one client remembers to count duplicates: the sequence numbers it
// has seen, per phase, as bits from the phase's base. Publishes in flight together may
// arrive in any order, so "not above the last one" would count reordering as
// duplicates. A client is on one channel, ch, whose messages are numbered on their own.
type seqState struct {
	seen [numPhases][]uint64
	ch   int
}

// first marks seq of phase ph seen and reports whether it is new.
func (cs *seqState) first(ph int, seq uint64) bool {
	i := seq - seqBase(ph)
	if i >= maxPhaseMessages {
		return true // not ours to track
	}
	w := int(i / 64)
	if w >= len(cs.seen[ph]) {
		cs.seen[ph] = append(cs.seen[ph], make([]uint64, w+1-len(cs.seen[ph]))...)
	}
	bit := uint64(1) << (i % 64)
	if cs.seen[ph][w]&bit != 0 {
		return false
	}
	cs.seen[ph][w] |= bit
	return true
}

// seqBase is the sequence number before the first message of phase ph.
func seqBase(ph int) uint64 { return uint64(ph) << 40 }

// maxPhaseMessages bounds the messages of one phase (see --rate, --duration, --burst).
const maxPhaseMessages = 1 << 22

// deliver records one message payload received by a client at now.
func (s *stats) deliver(cs *seqState, b []byte, now time.Time) {
	ph, seq, ts, ok := payloadFields(b)
	if !ok || ph < 0 || ph >= numPhases {
		s.unknown.Add(1)
		return
	}
	if payloadChannel(b) != cs.ch {
		s.unknown.Add(1) // another channel's message
		return
	}
	p := &s.phases[ph]
	if !cs.first(ph, seq) {
		p.dups.Add(1)
		return
	}
	p.arrived(now, ts)
}

// fail counts an error under kind (a short fixed label) and keeps one example.
func (s *stats) fail(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errors[kind]++
	if _, ok := s.sample[kind]; !ok && err != nil {
		s.sample[kind] = err.Error()
	}
}

// errorCounts returns a copy of the error counts.
func (s *stats) errorCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.errors))
	for k, v := range s.errors {
		out[k] = v
	}
	return out
}

func (s *stats) errorSummary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.errors))
	for k := range s.errors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-22s %7d  e.g. %.160s\n", k, s.errors[k], s.sample[k])
	}
	return b.String()
}
