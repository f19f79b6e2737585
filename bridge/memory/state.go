package memory

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/session"
)

// memoryState is the saved form of a Broker: what a single node needs to come back
// from a restart with its channels' positions and history, its sessions' liveness and
// its dedupe windows, so that clients resume instead of being reset.
type memoryState struct {
	Version  int                     `json:"version"`
	Channels map[string]channelState `json:"channels"`
	Sessions map[string]sessionState `json:"sessions"`
	Dedupe   map[string]dedupeState  `json:"dedupe,omitempty"`
	// Idempotency holds the idempotency keys of publishes still in their window, so that
	// a backend's retry across a graceful restart lands once.
	Idempotency []idempotencyState `json:"idempotency,omitempty"`
}

// idempotencyState is one idempotency key and the answer of its first publish.
type idempotencyState struct {
	Channel string `json:"ch"`
	Key     string `json:"key"`
	Expires int64  `json:"expires"` // Unix ms
	Digest  string `json:"digest"`
	Epoch   string `json:"ep"`
	messageState
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
	Expires int64 `json:"expires"` // Unix ms
	// Max and Bits are a session's dedupe window in states saved before dedupe windows
	// had keys of their own: Load turns them into the window of session.DedupeKey.
	Max  uint64   `json:"max,omitempty"`
	Bits []uint64 `json:"bits,omitempty"`
}

type dedupeState struct {
	Expires int64 `json:"expires"` // Unix ms
	session.LedgerState
}

// Save writes the broker's channels, sessions, dedupe windows and idempotency keys to w. Call it when nothing publishes any
// more (after Server.Shutdown); messages published during Save may or may not be in it.
func (b *Broker) Save(w io.Writer) error {
	st := memoryState{Version: 1, Channels: map[string]channelState{}, Sessions: map[string]sessionState{},
		Dedupe: map[string]dedupeState{}}
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
		st.Sessions[sid] = sessionState{Expires: s.expires.UnixMilli()}
	}
	for key, e := range b.dedupe {
		d := e.Value.(*memDedupe)
		st.Dedupe[key] = dedupeState{Expires: d.expires.UnixMilli(), LedgerState: d.ledger.State()}
	}
	b.smu.Unlock()
	for _, r := range b.idem.Records(b.cfg.Now()) {
		m := r.Message
		st.Idempotency = append(st.Idempotency, idempotencyState{Channel: r.Channel, Key: r.Key, Expires: r.Expires.UnixMilli(),
			Digest: r.Digest, Epoch: m.Pos.Epoch, messageState: messageState{Offset: m.Pos.Offset, Time: m.Time, Data: m.Data, Bin: m.Bin}})
	}
	return json.NewEncoder(w).Encode(st)
}

// Load replaces the broker's channels, sessions, dedupe windows and idempotency keys with
// a state written by Save. Expired
// sessions and history are dropped as usual, by the sweeper or on first use.
func (b *Broker) Load(r io.Reader) error {
	var st memoryState
	if err := json.NewDecoder(r).Decode(&st); err != nil {
		return fmt.Errorf("memory: load state: %w", err)
	}
	if st.Version != 1 {
		return fmt.Errorf("memory: load state: unknown version %d", st.Version)
	}
	chans := make(map[string]*memChannel, len(st.Channels))
	for name, cs := range st.Channels {
		if !session.ValidChannel(name) || !session.ValidEpoch(cs.Epoch) {
			return fmt.Errorf("memory: load state: bad channel %q or epoch %q", name, cs.Epoch)
		}
		ch := &memChannel{epoch: cs.Epoch, top: cs.Top}
		for i, m := range cs.Messages {
			// The ring must hold consecutive offsets ending at top.
			if m.Offset != cs.Top-uint64(len(cs.Messages)-1-i) {
				return fmt.Errorf("memory: load state: channel %q: offsets not consecutive", name)
			}
			ch.ring = append(ch.ring, &session.Message{Channel: name, Pos: session.Position{Epoch: cs.Epoch, Offset: m.Offset},
				Data: m.Data, Bin: m.Bin, Time: m.Time})
		}
		chans[name] = ch
	}
	sessions := make(map[string]*memSession, len(st.Sessions))
	var windows []*memDedupe
	for sid, ss := range st.Sessions {
		sessions[sid] = &memSession{expires: time.UnixMilli(ss.Expires)}
		if ss.Bits != nil {
			l := session.NewLedger(b.cfg.DedupeWindow)
			l.SetState(session.LedgerState{Max: ss.Max, Bits: ss.Bits})
			windows = append(windows, &memDedupe{key: session.DedupeKey(session.Claims{SID: sid}),
				expires: time.UnixMilli(ss.Expires), ledger: l})
		}
	}
	for key, ds := range st.Dedupe {
		l := session.NewLedger(b.cfg.DedupeWindow)
		l.SetState(ds.LedgerState)
		windows = append(windows, &memDedupe{key: key, expires: time.UnixMilli(ds.Expires), ledger: l})
	}
	recs := make([]broker.KeyRecord, 0, len(st.Idempotency))
	for _, is := range st.Idempotency {
		if !session.ValidChannel(is.Channel) || !session.ValidEpoch(is.Epoch) || broker.CheckIdempotencyKey(is.Key) != nil {
			return fmt.Errorf("memory: load state: bad idempotency key %.140q of channel %.140q", is.Key, is.Channel)
		}
		recs = append(recs, broker.KeyRecord{Channel: is.Channel, Key: is.Key, Expires: time.UnixMilli(is.Expires), Digest: is.Digest,
			Message: &session.Message{Channel: is.Channel, Pos: session.Position{Epoch: is.Epoch, Offset: is.Offset},
				Data: is.Data, Bin: is.Bin, Time: is.Time}})
	}
	// The LRU list is in expiry order, as MarkUpstream keeps it; beyond MaxDedupeKeys the
	// windows that expire first are left out.
	slices.SortFunc(windows, func(x, y *memDedupe) int { return x.expires.Compare(y.expires) })
	windows = windows[max(0, len(windows)-b.cfg.MaxDedupeKeys):]
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
	b.gen = uuid.New()
	b.mu.Unlock()
	b.smu.Lock()
	b.sessions = sessions
	clear(b.dedupe)
	b.dedupeLRU.Init()
	for _, d := range windows {
		b.dedupe[d.key] = b.dedupeLRU.PushBack(d)
	}
	b.smu.Unlock()
	b.idem.Restore(recs, b.cfg.Now())
	return nil
}
