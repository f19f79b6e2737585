package session

import (
	"context"
	"sync"
	"time"
)

// Source is what an attachment needs from the channel layer; bridge.Hub implements it.
type Source interface {
	// Subscribe starts delivering the live messages of channel to d, in offset order, until
	// the returned function is called. Deliver may be called before Subscribe returns.
	// Subscribe returns once every message published afterwards is sure to reach d (the
	// broker confirmed the channel's subscription), or with an error when that could not
	// be made sure before ctx ended; d stays registered either way, and unsubscribe must
	// be called. It must not hold up other channels while it waits.
	Subscribe(ctx context.Context, channel string, d Deliverer) (unsubscribe func(), err error)
	// Since returns up to limit messages after pos, in order, and the channel's latest
	// position. ok is false when history no longer covers everything after pos (or pos is
	// of another epoch); a zero pos asks only for the latest position.
	Since(ctx context.Context, channel string, pos Position, limit int) (msgs []*Message, top Position, ok bool, err error)
}

// Deliverer receives live messages. Deliver must not block.
type Deliverer interface {
	Deliver(m *Message)
}

// StreamConfig bounds one attachment. The zero value is not useful; Manager fills it.
type StreamConfig struct {
	QueueMessages int           // frames waiting for the writer, beyond which the client is a slow consumer
	QueueBytes    int           // bytes waiting for the writer, likewise
	BatchMessages int           // frames Next returns at most at once
	BatchBytes    int           // bytes Next returns at most at once (at least one frame)
	Heartbeat     time.Duration // ping frame interval; 0 sends none
	PageSize      int           // history page read per recovery step
	// StoreTimeout bounds each history read; one that takes longer closes the attachment
	// with 4000 (reconnect), as a failed one does. 0: only the caller's context bounds it.
	StoreTimeout time.Duration
}

// Stream is what one attachment of a session on this node delivers: the subscriptions
// with their positions, the bounded queue of frames for the transport that carries it,
// and its heartbeat. It is not a connection: the transport owns that, and takes frames
// from the Stream with Next or TryNext (next.go); history recovery is in recovery.go.
//
// Subscribe, Unsubscribe, Enqueue, Close and the delivery to its subscriptions (the
// Deliverer each registers with the Source) are safe for concurrent use. Next must
// be called by one goroutine at a time (the transport's writer); it also runs history
// recovery, so a slow history read delays only this attachment.
type Stream struct {
	src Source
	cfg StreamConfig

	// OnHeartbeat, if set, runs in the writer's goroutine each time a ping is sent.
	OnHeartbeat func()
	// OnReset, if set, runs (under the Stream's lock: keep it trivial) for every reset.
	OnReset func()
	// OnClose, if set, runs once when the attachment closes, in the goroutine that closed
	// it (possibly the channel layer's fan-out), so it must not block. Transports use it to
	// cut a write that is stuck on a client that stopped reading.
	OnClose func(*Error)
	// OnWake, if set, runs when there is something for a writer that is idle (under the
	// Stream's lock: it must not block or call the Stream). A transport that keeps no
	// goroutine waiting in Next starts a writer from it, which drains with TryNext until
	// TryNext returns nothing; that makes the writer idle again, so OnWake runs once per
	// idle period, never while a writer is draining.
	OnWake func()

	notify chan struct{} // capacity 1: something to do for Next

	mu         sync.Mutex
	subs       map[string]*subscription
	queue      []Outgoing
	qbytes     int
	recover    []*subscription // subscriptions with history to read, in order
	release    []*subscription // closed subscriptions still to unsubscribe from src
	closeErr   *Error
	closeSent  bool
	closeFired bool
	busy       bool // a writer woken by OnWake hasn't yet found TryNext empty
	waits      bool // Next has been called: wakes go to notify too
	pingSeq    uint64
	nextPing   time.Time // owned by the writer (Next): when the next heartbeat is due
}

type subscription struct {
	ch      string
	pos     Position // last position delivered (or the base to resume after)
	confirm bool     // send a sub frame once recovered
	started bool     // the first recovery step ran
	queued  bool     // in Stream.recover
	// While recovering, live messages wait in pending; past its bound they are dropped and
	// read again from history (overflow), which always has them.
	recovering bool
	pending    []*Message
	overflow   bool
	unsub      func()
	gone       bool
}

// maxPending bounds live messages held while a subscription catches up from history.
const maxPending = 256

// NewStream returns an attachment reading channels from src.
func NewStream(src Source, cfg StreamConfig) *Stream {
	return &Stream{
		src:    src,
		cfg:    cfg,
		notify: make(chan struct{}, 1),
		subs:   make(map[string]*subscription),
	}
}

// wake tells the writer there is something to do: through notify if it ever waited in
// Next, through OnWake if it is idle. A writer started by OnWake that never calls Next
// (a pooled one) leaves notify alone: a send there, even one that finds it full, reads
// a cache line of each attachment's channel on every fan-out, 12 % of a burst's profile.
func (c *Stream) wake() {
	if c.waits {
		select {
		case c.notify <- struct{}{}:
		default:
		}
	}
	if c.OnWake != nil && !c.busy {
		c.busy = true
		c.OnWake()
	}
}

// SetOnWake replaces OnWake, under the Stream's lock, for a transport whose writer changes
// over the attachment's life: a long-poll attachment is carried by another request, and
// possibly another connection, at every poll. It leaves the writer busy, so fn runs only
// once the caller's next TryNext has found nothing.
func (c *Stream) SetOnWake(fn func()) {
	c.mu.Lock()
	c.OnWake = fn
	c.busy = true
	c.mu.Unlock()
}

// Subscribe adds channel, resuming after pos (zero: from now). confirm asks for a sub frame
// once the subscription is live. Subscribing twice to one channel is a no-op. It waits
// for the Source to confirm the channel as long as the Source's own bound allows; see
// SubscribeContext.
func (c *Stream) Subscribe(channel string, pos Position, confirm bool) {
	c.SubscribeContext(context.Background(), channel, pos, confirm)
}

// SubscribeContext is Subscribe bounded by ctx. A subscription the Source could not
// confirm before ctx ended might miss messages published before it takes effect, which
// history would not repair until the next message: the attachment is closed with 4000,
// and the client resumes from its positions.
func (c *Stream) SubscribeContext(ctx context.Context, channel string, pos Position, confirm bool) {
	c.mu.Lock()
	if c.closeErr != nil || c.subs[channel] != nil {
		c.mu.Unlock()
		return
	}
	s := &subscription{ch: channel, pos: pos, confirm: confirm || pos.IsZero(), recovering: true}
	c.subs[channel] = s
	c.scheduleLocked(s)
	c.mu.Unlock()
	// Subscribe before reading history: a message published in between is then either in
	// the history read or in pending, never in neither.
	unsub, err := c.src.Subscribe(ctx, channel, subDeliverer{c, s})
	c.mu.Lock()
	if s.gone || c.closeErr != nil {
		c.mu.Unlock()
		unsub()
		return
	}
	s.unsub = unsub
	c.mu.Unlock()
	if err != nil {
		c.Close(Errorf(CodeReconnect, "subscription to %q not confirmed in time: retry", channel))
	}
}

// Unsubscribe removes channel; frames of it already queued are still sent.
func (c *Stream) Unsubscribe(channel string) {
	c.mu.Lock()
	s := c.subs[channel]
	if s == nil {
		c.mu.Unlock()
		return
	}
	delete(c.subs, channel)
	s.gone = true
	unsub := s.unsub
	c.mu.Unlock()
	if unsub != nil {
		unsub()
	}
}

// Channels returns the channels and positions of c.
func (c *Stream) Channels() Cursor {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := make(Cursor, 0, len(c.subs))
	for _, s := range c.subs {
		cur = append(cur, CursorEntry{Channel: s.ch, Position: s.pos})
	}
	return cur
}

// Len returns the number of subscriptions.
func (c *Stream) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.subs)
}

func (c *Stream) scheduleLocked(s *subscription) {
	if !s.queued {
		s.queued = true
		c.recover = append(c.recover, s)
	}
	c.wake()
}

// subDeliverer is what a subscription registers with the Source: it knows its
// subscription, so a fan-out to many attachments needs no lookup by channel name. Its
// Deliver never blocks: a full queue closes the attachment as a slow consumer, and the
// client resumes from history.
type subDeliverer struct {
	c *Stream
	s *subscription
}

func (d subDeliverer) Deliver(m *Message) {
	c, s := d.c, d.s
	c.mu.Lock()
	switch {
	case s.gone || c.closeErr != nil:
		// Unsubscribed or closed; the Source learns it when unsub runs.
	case s.recovering:
		if len(s.pending) < maxPending {
			s.pending = append(s.pending, m)
		} else {
			s.overflow = true
		}
	default:
		c.acceptLocked(s, m)
	}
	c.unlock()
}

// unlock releases c.mu and runs OnClose if c has just been closed.
func (c *Stream) unlock() {
	fire := c.closeErr != nil && !c.closeFired
	c.closeFired = c.closeErr != nil
	e := c.closeErr
	c.mu.Unlock()
	if fire && c.OnClose != nil {
		c.OnClose(e)
	}
}

// acceptLocked delivers m if it is the next message of s, and starts a recovery if it
// shows a gap or a new epoch.
func (c *Stream) acceptLocked(s *subscription, m *Message) {
	switch {
	case m.Pos.Epoch != s.pos.Epoch || m.Pos.Offset > s.pos.Offset+1:
		// A gap (a broker lost a fan-out message) or a new epoch (history was lost):
		// history decides what is missing, or tells us to reset.
		s.recovering = true
		s.pending = append(s.pending[:0], m)
		c.scheduleLocked(s)
	case m.Pos.Offset <= s.pos.Offset:
		// Already delivered from history.
	default:
		s.pos = m.Pos
		c.pushLocked(MessageFrame(m))
	}
}

// Enqueue adds a control frame (an ack, a sub refusal) to the queue.
func (c *Stream) Enqueue(o Outgoing) {
	c.mu.Lock()
	if c.closeErr == nil {
		c.pushLocked(o)
	}
	c.unlock()
}

func (c *Stream) pushLocked(o Outgoing) {
	if c.queueLocked(o) {
		c.wake()
	}
}

// queueLocked adds o to the queue without waking a writer, or closes c as a slow consumer
// when the queue is full; it reports whether o was queued.
func (c *Stream) queueLocked(o Outgoing) bool {
	if len(c.queue) >= c.cfg.QueueMessages || c.qbytes+len(o.JSON) > c.cfg.QueueBytes {
		c.closeLocked(ErrSlowConsumer)
		return false
	}
	c.queue = append(c.queue, o)
	c.qbytes += len(o.JSON)
	return true
}

// Close ends the attachment with reason e. Queued frames are dropped (the client resumes
// from its positions); the next call to Next returns the close frame, the one after it e.
func (c *Stream) Close(e *Error) {
	c.mu.Lock()
	c.closeLocked(e)
	c.unlock()
	c.releaseSubs()
}

// closeLocked marks c closed. Its subscriptions move to c.release, to be unsubscribed
// without holding c.mu: by Close, or by Done when the close came from Deliver (a slow
// consumer). Deliver ignores a closed Stream meanwhile.
func (c *Stream) closeLocked(e *Error) {
	if c.closeErr != nil {
		return
	}
	c.closeErr = e
	c.queue, c.qbytes, c.recover = nil, 0, nil
	for ch, s := range c.subs {
		s.gone = true
		s.pending = nil
		c.release = append(c.release, s)
		delete(c.subs, ch)
	}
	c.wake()
}

func (c *Stream) releaseSubs() {
	c.mu.Lock()
	subs := c.release
	c.release = nil
	c.mu.Unlock()
	for _, s := range subs {
		if s.unsub != nil {
			s.unsub()
		}
	}
}

// Err returns the close reason, or nil while c is open.
func (c *Stream) Err() *Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// Done releases every subscription. The transport calls it when its writer exits.
func (c *Stream) Done() {
	c.Close(ErrNormal)
}

// Queued returns the number of frames waiting for the writer.
func (c *Stream) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}
