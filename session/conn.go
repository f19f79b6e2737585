package session

import (
	"context"
	"errors"
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

// ConnConfig bounds one attachment. The zero value is not useful; Manager fills it.
type ConnConfig struct {
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

// Conn is one attachment of a session on this node: the subscriptions with their
// positions, and the bounded queue of frames for the transport that carries it.
//
// Subscribe, Unsubscribe, Enqueue, Close and the delivery to its subscriptions (the
// Deliverer each registers with the Source) are safe for concurrent use. Next must
// be called by one goroutine at a time (the transport's writer); it also runs history
// recovery, so a slow history read delays only this attachment.
type Conn struct {
	src Source
	cfg ConnConfig

	// OnHeartbeat, if set, runs in the writer's goroutine each time a ping is sent.
	OnHeartbeat func()
	// OnReset, if set, runs (under the Conn's lock: keep it trivial) for every reset.
	OnReset func()
	// OnClose, if set, runs once when the attachment closes, in the goroutine that closed
	// it (possibly the channel layer's fan-out), so it must not block. Transports use it to
	// cut a write that is stuck on a client that stopped reading.
	OnClose func(*Error)
	// OnWake, if set, runs when there is something for a writer that is idle (under the
	// Conn's lock: it must not block or call the Conn). A transport that keeps no
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
	pingSeq    uint64
	nextPing   time.Time // owned by the writer (Next): when the next heartbeat is due
}

type subscription struct {
	ch      string
	pos     Position // last position delivered (or the base to resume after)
	confirm bool     // send a sub frame once recovered
	started bool     // the first recovery step ran
	queued  bool     // in Conn.recover
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

// NewConn returns an attachment reading channels from src.
func NewConn(src Source, cfg ConnConfig) *Conn {
	return &Conn{
		src:    src,
		cfg:    cfg,
		notify: make(chan struct{}, 1),
		subs:   make(map[string]*subscription),
	}
}

func (c *Conn) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
	if c.OnWake != nil && !c.busy {
		c.busy = true
		c.OnWake()
	}
}

// SetOnWake replaces OnWake, under the Conn's lock, for a transport whose writer changes
// over the attachment's life: a long-poll attachment is carried by another request, and
// possibly another connection, at every poll. It leaves the writer busy, so fn runs only
// once the caller's next TryNext has found nothing.
func (c *Conn) SetOnWake(fn func()) {
	c.mu.Lock()
	c.OnWake = fn
	c.busy = true
	c.mu.Unlock()
}

// Subscribe adds channel, resuming after pos (zero: from now). confirm asks for a sub frame
// once the subscription is live. Subscribing twice to one channel is a no-op. It waits
// for the Source to confirm the channel as long as the Source's own bound allows; see
// SubscribeContext.
func (c *Conn) Subscribe(channel string, pos Position, confirm bool) {
	c.SubscribeContext(context.Background(), channel, pos, confirm)
}

// SubscribeContext is Subscribe bounded by ctx. A subscription the Source could not
// confirm before ctx ended might miss messages published before it takes effect, which
// history would not repair until the next message: the attachment is closed with 4000,
// and the client resumes from its positions.
func (c *Conn) SubscribeContext(ctx context.Context, channel string, pos Position, confirm bool) {
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
func (c *Conn) Unsubscribe(channel string) {
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
func (c *Conn) Channels() Cursor {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := make(Cursor, 0, len(c.subs))
	for _, s := range c.subs {
		cur = append(cur, CursorEntry{Channel: s.ch, Position: s.pos})
	}
	return cur
}

// Len returns the number of subscriptions.
func (c *Conn) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.subs)
}

func (c *Conn) scheduleLocked(s *subscription) {
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
	c *Conn
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
func (c *Conn) unlock() {
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
func (c *Conn) acceptLocked(s *subscription, m *Message) {
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
func (c *Conn) Enqueue(o Outgoing) {
	c.mu.Lock()
	if c.closeErr == nil {
		c.pushLocked(o)
	}
	c.unlock()
}

func (c *Conn) pushLocked(o Outgoing) {
	if len(c.queue) >= c.cfg.QueueMessages || c.qbytes+len(o.JSON) > c.cfg.QueueBytes {
		c.closeLocked(ErrSlowConsumer)
		return
	}
	c.queue = append(c.queue, o)
	c.qbytes += len(o.JSON)
	c.wake()
}

// Close ends the attachment with reason e. Queued frames are dropped (the client resumes
// from its positions); the next call to Next returns the close frame, the one after it e.
func (c *Conn) Close(e *Error) {
	c.mu.Lock()
	c.closeLocked(e)
	c.unlock()
	c.releaseSubs()
}

// closeLocked marks c closed. Its subscriptions move to c.release, to be unsubscribed
// without holding c.mu: by Close, or by Done when the close came from Deliver (a slow
// consumer). Deliver ignores a closed Conn meanwhile.
func (c *Conn) closeLocked(e *Error) {
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

func (c *Conn) releaseSubs() {
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
func (c *Conn) Err() *Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// Done releases every subscription. The transport calls it when its writer exits.
func (c *Conn) Done() {
	c.Close(ErrNormal)
}

// TryNext is Next without waiting and without heartbeats: it returns the frames that are
// ready, running history recovery first, or none (nil, nil), which makes the writer idle
// (see OnWake). The close frame and the close reason come as from Next. A transport that
// keeps no goroutine waiting in Next drains with it and sends heartbeats with Ping.
func (c *Conn) TryNext(ctx context.Context) ([]Outgoing, error) { return c.ready(ctx, true, false) }

// ErrNeedsSource is returned by TryNextLocal when history must be read first.
var ErrNeedsSource = errors.New("session: history to read from the source")

// TryNextLocal is TryNext for a writer that must never wait on the network, such as a
// task of a worker pool: when a history read is due (a new subscription, a gap), it
// reads nothing and returns ErrNeedsSource, leaving the writer busy; the caller then
// continues with TryNext on a goroutine of its own, where the read may take up to
// ConnConfig.StoreTimeout.
func (c *Conn) TryNextLocal() ([]Outgoing, error) {
	return c.ready(context.Background(), true, true)
}

// ready returns what Next would return without waiting, or nil, nil; idle marks the
// writer idle when there is nothing, in the same critical section that found nothing, so
// a frame pushed right after wakes it. local returns ErrNeedsSource rather than read
// history.
func (c *Conn) ready(ctx context.Context, idle, local bool) ([]Outgoing, error) {
	c.mu.Lock()
	for {
		if len(c.recover) > 0 && c.closeErr == nil {
			if local {
				c.mu.Unlock()
				return nil, ErrNeedsSource
			}
			c.mu.Unlock()
			if err := c.runRecovery(ctx); err != nil {
				return nil, err
			}
			c.mu.Lock()
		}
		if c.closeErr != nil {
			e, sent := c.closeErr, c.closeSent
			c.closeSent = true
			c.mu.Unlock()
			// A close from Deliver (slow consumer) left its subscriptions to release here.
			c.releaseSubs()
			if sent {
				return nil, e
			}
			return []Outgoing{closeFrame(e)}, nil
		}
		if len(c.queue) > 0 {
			out := c.takeLocked()
			c.mu.Unlock()
			return out, nil
		}
		if len(c.recover) == 0 {
			if idle {
				c.busy = false
			}
			c.mu.Unlock()
			return nil, nil
		}
	}
}

// Ready reports whether TryNext has something to return (frames, recovery or the close).
func (c *Conn) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue) > 0 || len(c.recover) > 0 || (c.closeErr != nil && !c.closeSent)
}

// Ping queues a ping frame now, for a transport that keeps the heartbeat itself (see
// TryNext), and runs OnHeartbeat.
func (c *Conn) Ping() { c.ping(time.Now()) }

// Next blocks until frames are ready and returns them, at most a batch. holdUntil, if not
// zero, makes Next return a ping frame at that time if nothing else came (long-polling).
// After the attachment is closed, Next returns the close frame once and then the close
// reason as the error. A cancelled ctx returns ctx.Err().
func (c *Conn) Next(ctx context.Context, holdUntil time.Time) ([]Outgoing, error) {
	var hb, hold *time.Timer
	defer func() {
		if hb != nil {
			hb.Stop()
		}
		if hold != nil {
			hold.Stop()
		}
	}()
	for {
		// Heartbeats are due by the clock, not by silence: a busy stream carries them too,
		// so the client can time them and the session stays touched.
		if c.cfg.Heartbeat > 0 {
			now := time.Now()
			if c.nextPing.IsZero() {
				c.nextPing = now.Add(c.cfg.Heartbeat)
			} else if !now.Before(c.nextPing) {
				c.ping(now)
			}
		}
		if out, err := c.ready(ctx, false, false); out != nil || err != nil {
			return out, err
		}

		var hbC, holdC <-chan time.Time
		if c.cfg.Heartbeat > 0 {
			if hb == nil {
				hb = time.NewTimer(time.Until(c.nextPing))
			}
			hbC = hb.C
		}
		if !holdUntil.IsZero() {
			if hold == nil {
				hold = time.NewTimer(time.Until(holdUntil))
			}
			holdC = hold.C
		}
		select {
		case <-c.notify:
		case <-hbC:
			hb = nil // the loop sends the ping that is now due
		case <-holdC:
			hold = nil
			holdUntil = time.Time{}
			c.ping(time.Now())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Conn) ping(now time.Time) {
	c.mu.Lock()
	c.pingSeq++
	if c.cfg.Heartbeat > 0 {
		c.nextPing = now.Add(c.cfg.Heartbeat)
	}
	f := ServerFrame{T: FramePing, Seq: c.pingSeq, TS: now.UnixMilli()}
	c.pushLocked(f.Encode())
	c.unlock()
	if c.OnHeartbeat != nil {
		c.OnHeartbeat()
	}
}

func (c *Conn) takeLocked() []Outgoing {
	n, size := 0, 0
	for n < len(c.queue) && n < c.cfg.BatchMessages {
		size += len(c.queue[n].JSON)
		if n > 0 && size > c.cfg.BatchBytes {
			break
		}
		n++
	}
	out := make([]Outgoing, n)
	copy(out, c.queue)
	clear(c.queue[:n])
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = nil // let the backing array go
	}
	for _, o := range out {
		c.qbytes -= len(o.JSON)
	}
	return out
}

// runRecovery performs one history step for each subscription waiting for one, as far as
// the queue has room: a page never pushes the client over its queue bound, and the rest
// follows once the writer has taken what is queued. History is read without holding c.mu,
// so Deliver never waits on the broker.
func (c *Conn) runRecovery(ctx context.Context) error {
	c.mu.Lock()
	steps := len(c.recover)
	c.mu.Unlock()
	for range steps {
		c.mu.Lock()
		// Leave room for the live frames that arrive while the writer drains the page.
		room := min(c.cfg.PageSize, c.cfg.QueueMessages/2-len(c.queue))
		if len(c.recover) == 0 || c.closeErr != nil || room < 1 {
			c.mu.Unlock()
			return nil
		}
		s := c.recover[0]
		c.recover = c.recover[1:]
		s.queued = false
		base := s.pos
		c.mu.Unlock()

		sctx, cancel := ctx, context.CancelFunc(func() {})
		if c.cfg.StoreTimeout > 0 {
			sctx, cancel = context.WithTimeout(ctx, c.cfg.StoreTimeout)
		}
		msgs, top, ok, err := c.src.Since(sctx, s.ch, base, room)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.Close(Errorf(CodeReconnect, "history of %q unavailable", s.ch))
			return nil
		}
		if top.IsZero() {
			c.Close(Errorf(CodeInternal, "channel %q has no epoch", s.ch))
			return nil
		}
		c.mu.Lock()
		if !s.gone && c.closeErr == nil {
			c.recoveredLocked(s, base, msgs, top, ok)
		}
		c.unlock()
	}
	return nil
}

func (c *Conn) recoveredLocked(s *subscription, base Position, msgs []*Message, top Position, ok bool) {
	first := !s.started
	s.started = true
	switch {
	case base.IsZero():
		// "From now" means from the subscription, not from this history read: what was
		// published in between is already in pending, and must be delivered.
		s.pos = top
		if len(s.pending) > 0 && s.pending[0].Pos.Epoch == top.Epoch && s.pending[0].Pos.Offset <= top.Offset {
			s.pos.Offset = s.pending[0].Pos.Offset - 1
		}
		c.pushLocked(posFrame(FrameSub, s.ch, s.pos))
	case !ok:
		s.pos = top
		f := ServerFrame{T: FrameReset, Ch: s.ch, Ep: top.Epoch, Off: &top.Offset, Reason: "history does not cover the position"}
		c.pushLocked(f.Encode())
		if c.OnReset != nil {
			c.OnReset()
		}
	default:
		if first && s.confirm {
			c.pushLocked(posFrame(FrameSub, s.ch, base))
		}
		for _, m := range msgs {
			if m.Pos.Epoch == s.pos.Epoch && m.Pos.Offset == s.pos.Offset+1 {
				s.pos = m.Pos
				c.pushLocked(MessageFrame(m))
			}
		}
		if s.pos.Offset < top.Offset && len(msgs) > 0 {
			// More history than one page: continue once the writer has taken this one.
			c.scheduleLocked(s)
			return
		}
	}
	if c.closeErr != nil {
		return
	}
	// Caught up with history; what arrived live meanwhile follows.
	pending, overflow := s.pending, s.overflow
	s.pending, s.overflow, s.recovering = nil, false, false
	if overflow {
		s.recovering = true
		c.scheduleLocked(s)
		return
	}
	for i, m := range pending {
		c.acceptLocked(s, m)
		if s.recovering {
			// A gap after history: keep the rest for the next step.
			s.pending = append(s.pending, pending[i+1:]...)
			return
		}
	}
}

// Queued returns the number of frames waiting for the writer.
func (c *Conn) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}
