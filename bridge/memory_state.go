package bridge

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/ferryrt/ferry/session"
)

// memoryState is the saved form of a MemoryBroker: what a single node needs to come back
// from a restart with its channels' positions and history, and its sessions' liveness and
// dedupe windows, so that clients resume instead of being reset.
type memoryState struct {
	Version  int                     `json:"version"`
	Channels map[string]channelState `json:"channels"`
	Sessions map[string]sessionState `json:"sessions"`
}

type channelState struct {
	Epoch    string         `json:"epoch"`
	Top      uint64         `json:"top"`
	Messages []messageState `json:"messages,omitempty"`
}

type messageState struct {
	Offset uint64          `json:"off"`
	Time   int64           `json:"ts"`
	Data   json.RawMessage `json:"d,omitempty"`
	Bin    []byte          `json:"b,omitempty"`
}

type sessionState struct {
	Expires int64    `json:"expires"` // Unix ms
	Max     uint64   `json:"max,omitempty"`
	Bits    []uint64 `json:"bits,omitempty"`
}

// Save writes the broker's channels and sessions to w. Call it when nothing publishes any
// more (after Server.Shutdown); messages published during Save may or may not be in it.
func (b *MemoryBroker) Save(w io.Writer) error {
	st := memoryState{Version: 1, Channels: map[string]channelState{}, Sessions: map[string]sessionState{}}
	b.mu.Lock()
	chans := make(map[string]*memChannel, len(b.channels))
	for name, ch := range b.channels {
		chans[name] = ch
	}
	// A tombstone is saved as a channel without history, which Load restores as such and
	// the next sweep turns back into a tombstone: its clients resume across the restart.
	for e := b.tombList.Front(); e != nil; e = e.Next() {
		t := e.Value.(*memTomb)
		st.Channels[t.name] = channelState{Epoch: t.epoch, Top: t.top}
	}
	b.mu.Unlock()
	for name, ch := range chans {
		ch.mu.Lock()
		cs := channelState{Epoch: ch.epoch, Top: ch.top, Messages: make([]messageState, len(ch.ring))}
		for i, m := range ch.ring {
			cs.Messages[i] = messageState{Offset: m.Pos.Offset, Time: m.Time, Data: m.Data, Bin: m.Bin}
		}
		ch.mu.Unlock()
		st.Channels[name] = cs
	}
	b.smu.Lock()
	for sid, s := range b.sessions {
		ss := sessionState{Expires: s.expires.UnixMilli()}
		if s.window != nil {
			ss.Max, ss.Bits = s.window.State()
		}
		st.Sessions[sid] = ss
	}
	b.smu.Unlock()
	return json.NewEncoder(w).Encode(st)
}

// Load replaces the broker's channels and sessions with a state written by Save. Expired
// sessions and history are dropped as usual, by the sweeper or on first use.
func (b *MemoryBroker) Load(r io.Reader) error {
	var st memoryState
	if err := json.NewDecoder(r).Decode(&st); err != nil {
		return fmt.Errorf("bridge: load memory state: %w", err)
	}
	if st.Version != 1 {
		return fmt.Errorf("bridge: load memory state: unknown version %d", st.Version)
	}
	chans := make(map[string]*memChannel, len(st.Channels))
	for name, cs := range st.Channels {
		if !session.ValidChannel(name) || !session.ValidEpoch(cs.Epoch) {
			return fmt.Errorf("bridge: load memory state: bad channel %q or epoch %q", name, cs.Epoch)
		}
		ch := &memChannel{epoch: cs.Epoch, top: cs.Top}
		for i, m := range cs.Messages {
			// The ring must hold consecutive offsets ending at top.
			if m.Offset != cs.Top-uint64(len(cs.Messages)-1-i) {
				return fmt.Errorf("bridge: load memory state: channel %q: offsets not consecutive", name)
			}
			ch.ring = append(ch.ring, &session.Message{Channel: name, Pos: session.Position{Epoch: cs.Epoch, Offset: m.Offset},
				Data: m.Data, Bin: m.Bin, Time: m.Time})
		}
		chans[name] = ch
	}
	sessions := make(map[string]*memSession, len(st.Sessions))
	for sid, ss := range st.Sessions {
		s := &memSession{expires: time.UnixMilli(ss.Expires)}
		if ss.Bits != nil {
			s.window = session.NewWindow(b.cfg.DedupeWindow)
			s.window.SetState(ss.Max, ss.Bits)
		}
		sessions[sid] = s
	}
	b.mu.Lock()
	for _, ch := range b.channels {
		// A Publish holding a replaced channel must not append to it.
		ch.mu.Lock()
		ch.dropped = true
		ch.mu.Unlock()
	}
	b.channels = chans
	clear(b.tombs)
	b.tombList.Init()
	// The positions of channels the state does not hold are forgotten: those channels
	// must begin new epochs.
	rand.Read(b.gen[:])
	b.mu.Unlock()
	b.smu.Lock()
	b.sessions = sessions
	b.smu.Unlock()
	return nil
}
