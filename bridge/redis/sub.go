package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/session"
)

// The pub/sub side of Broker: one connection per node, owned by runSubscriber,
// which replaces it whenever it fails. Fields in Broker under mu.

// Reconnection backoff of the subscriber and the publish stream reader.
const (
	retryMin = 50 * time.Millisecond
	retryMax = 2 * time.Second
	// subscribeBatch bounds the channels of one SUBSCRIBE command.
	subscribeBatch = 500
	// catchUpBatch bounds the channels of one catch-up script.
	catchUpBatch = 100
	// connectTimeout bounds a new pub/sub connection's way to being up.
	connectTimeout = 10 * time.Second
)

// Subscribe implements broker.Broker. It returns once Redis has confirmed the subscription, so
// that a message published afterwards reaches this node, or with an error if ctx ends
// first (the channel stays wanted: the SUBSCRIBE may yet take effect, and a new
// connection subscribes it). Called again for a wanted channel, it confirms the earlier
// SUBSCRIBE. While the connection is down it only records the channel: the next
// connection subscribes it and catches up.
func (b *Broker) Subscribe(ctx context.Context, channel string) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return broker.ErrBrokerClosed
	}
	_, wanted := b.want[channel]
	b.want[channel] = struct{}{}
	ps := b.ps
	if ps == nil {
		b.mu.Unlock()
		return nil
	}
	// Under mu, so that a new connection either sees channel in want or gets this
	// SUBSCRIBE after its own. It is a write: no answer is awaited under mu.
	if !wanted {
		if err := ps.Subscribe(ctx, b.keys.pubsub(channel)); err != nil {
			b.mu.Unlock()
			// The connection is broken; runSubscriber replaces it, with channel.
			b.log.Debug("redis subscribe failed; resubscribing with the next connection", "channel", channel, "err", err)
			return nil
		}
	}
	token, done := b.waiterLocked()
	b.mu.Unlock()
	defer b.dropWaiter(token)
	// Redis answers in order: the answer to this ping means the SUBSCRIBE is in effect.
	// A connection lost meanwhile releases the waiter: its successor subscribes channel
	// and catches up.
	if err := ps.Ping(ctx, token); err != nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bridge: redis subscribe %s: not confirmed: %w", channel, ctx.Err())
	}
}

// Unsubscribe implements broker.Broker.
func (b *Broker) Unsubscribe(ctx context.Context, channel string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.want[channel]; !ok {
		return nil
	}
	delete(b.want, channel)
	delete(b.last, channel)
	if b.ps != nil {
		// An error means a broken connection, which is replaced without channel.
		b.ps.Unsubscribe(ctx, b.keys.pubsub(channel))
	}
	return nil
}

// Subscribing reports whether this node wants channel (it is subscribed, or will be on
// the next connection), and how many Subscribe calls wait for Redis to confirm a
// SUBSCRIBE: what a paused Redis holds up. For monitoring and tests.
func (b *Broker) Subscribing(channel string) (wanted bool, waiting int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, wanted = b.want[channel]
	return wanted, len(b.waiters)
}

func (b *Broker) waiterLocked() (string, chan struct{}) {
	b.tokenSeq++
	token := "sub:" + strconv.FormatUint(b.tokenSeq, 10)
	done := make(chan struct{})
	b.waiters[token] = done
	return token, done
}

func (b *Broker) dropWaiter(token string) {
	b.mu.Lock()
	delete(b.waiters, token)
	b.mu.Unlock()
}

// releaseWaitersLocked lets every waiting Subscribe return: their channels are in want,
// which the next connection subscribes.
func (b *Broker) releaseWaitersLocked() {
	for token, done := range b.waiters {
		close(done)
		delete(b.waiters, token)
	}
}

// runSubscriber keeps a subscribed pub/sub connection until Close.
func (b *Broker) runSubscriber() {
	wait, failures := retryMin, 0
	for {
		wasUp, err := b.subscribeOnce()
		if b.ctx.Err() != nil {
			return
		}
		b.markDown(err)
		if wasUp {
			wait, failures = retryMin, 0
		}
		failures++
		level := slog.LevelWarn
		if failures > 1 {
			level = slog.LevelDebug // said once per outage
		}
		b.log.Log(b.ctx, level, "redis subscription down; reconnecting", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-b.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, retryMax)
	}
}

// subscribeOnce runs one pub/sub connection: it subscribes the control channel and every
// wanted channel, catches up once Redis has confirmed them, and delivers until the
// connection fails. wasUp reports whether it got that far.
func (b *Broker) subscribeOnce() (wasUp bool, err error) {
	ps := b.rdb.Subscribe(b.ctx)
	defer ps.Close()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return false, broker.ErrBrokerClosed
	}
	b.ps, b.lastSeen, b.unanswered = ps, time.Now(), 0
	names := make([]string, 0, len(b.want)+1)
	names = append(names, b.keys.control())
	for ch := range b.want {
		names = append(names, b.keys.pubsub(ch))
	}
	for len(names) > 0 && err == nil {
		n := min(len(names), subscribeBatch)
		err = ps.Subscribe(b.ctx, names[:n]...)
		names = names[n:]
	}
	b.tokenSeq++
	sync := "sync:" + strconv.FormatUint(b.tokenSeq, 10)
	b.mu.Unlock()
	if err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	if err := ps.Ping(b.ctx, sync); err != nil {
		return false, fmt.Errorf("ping: %w", err)
	}
	for {
		msg, err := ps.Receive(b.ctx)
		if err != nil {
			return wasUp, err
		}
		b.mu.Lock()
		b.lastSeen, b.unanswered = time.Now(), 0
		b.mu.Unlock()
		switch m := msg.(type) {
		case *goredis.Message:
			b.handle(m)
		case *goredis.Pong:
			if m.Payload == sync {
				// Every SUBSCRIBE sent before the ping is in effect: what was published
				// before them, this node may have missed.
				if err := b.catchUp(); err != nil {
					return false, fmt.Errorf("catch up: %w", err)
				}
				b.markUp()
				wasUp = true
				continue
			}
			b.mu.Lock()
			if done := b.waiters[m.Payload]; done != nil {
				close(done)
				delete(b.waiters, m.Payload)
			}
			b.mu.Unlock()
		}
	}
}

func (b *Broker) markUp() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.up {
		b.log.Info("redis subscription up", "channels", len(b.want))
	}
	b.up, b.downErr = true, nil
}

func (b *Broker) markDown(err error) {
	if err == nil {
		err = errors.New("connection closed")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.up, b.downErr, b.ps = false, err, nil
	b.releaseWaitersLocked()
}

// runHealth pings the pub/sub connection, and closes it when Redis stops answering, so
// that a connection that died silently (no reset, no error) is noticed and replaced.
//
// Silent means three health pings in a row without any reply and three intervals
// without one, counted in pings this loop sent, not only in time since the last reply:
// a process that the machine stalls (a busy CPU, GOMAXPROCS=1) reads a pong late and
// would otherwise take a stall of three intervals for a dead connection, while a ping
// whose pong is waiting to be read is answered as soon as the process runs.
func (b *Broker) runHealth() {
	every := b.cfg.HealthInterval
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		b.mu.Lock()
		ps, seen, up, unanswered := b.ps, b.lastSeen, b.up, b.unanswered
		b.mu.Unlock()
		if ps == nil {
			continue
		}
		silent := time.Since(seen)
		if up && unanswered >= 3 && silent > 3*every || silent > max(3*every, connectTimeout) {
			// Not up: dialing, subscribing, catching up, bounded by connectTimeout.
			b.log.Warn("redis pub/sub connection silent; replacing it", "silent_for", silent.Round(time.Millisecond), "pings_unanswered", unanswered)
			ps.Close()
			continue
		}
		b.mu.Lock()
		if b.ps == ps {
			b.unanswered++
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(b.ctx, every)
		if err := ps.Ping(ctx, "health"); err != nil {
			ps.Close()
		}
		cancel()
	}
}

// handle decodes a pub/sub message and passes it on.
func (b *Broker) handle(m *goredis.Message) {
	if m.Channel == b.keys.control() {
		node, sid, attachID, err := decodeNotice(m.Payload)
		if err != nil {
			b.log.Warn("dropping a malformed control message", "err", err)
			return
		}
		b.mu.Lock()
		supersede := b.supersede
		b.mu.Unlock()
		if node != b.cfg.NodeID && supersede != nil {
			supersede(sid, attachID)
		}
		return
	}
	channel, ok := b.keys.channelOf(m.Channel)
	if !ok {
		return
	}
	msg, err := decodeWire(channel, m.Payload)
	if err != nil {
		b.log.Warn("dropping a malformed pub/sub message", "err", err)
		return
	}
	b.pass(msg)
}

// pass delivers m unless it is not newer than what this node delivered on its channel
// (catch-up and pub/sub can both bring it).
func (b *Broker) pass(m *session.Message) {
	b.mu.Lock()
	if _, ok := b.want[m.Channel]; !ok {
		b.mu.Unlock()
		return
	}
	if last := b.last[m.Channel]; last.Epoch == m.Pos.Epoch && m.Pos.Offset <= last.Offset {
		b.mu.Unlock()
		return
	}
	b.last[m.Channel] = m.Pos
	deliver := b.deliver
	b.mu.Unlock()
	if deliver != nil {
		deliver(m)
	}
}

// catchUp delivers the latest message of every wanted channel that this node has not
// delivered. An attachment behind it sees a gap and reads the rest from history; that is
// how messages published while the node had no subscription reach its sessions, even
// when nothing else is published on their channels afterwards.
func (b *Broker) catchUp() error {
	b.mu.Lock()
	chans := make([]string, 0, len(b.want))
	for ch := range b.want {
		chans = append(chans, ch)
	}
	b.mu.Unlock()
	for len(chans) > 0 {
		batch := chans[:min(len(chans), catchUpBatch)]
		chans = chans[len(batch):]
		// One script per channel, pipelined: each names one channel's keys, in its slot.
		ctx, cancel := context.WithTimeout(b.ctx, connectTimeout)
		if err := luaCatchUp.Load(ctx, b.rdb).Err(); err != nil {
			cancel()
			return err
		}
		cmds, err := b.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, ch := range batch {
				p.EvalSha(ctx, luaCatchUp.Hash(), []string{b.keys.meta(ch), b.keys.log(ch)})
			}
			return nil
		})
		cancel()
		if err != nil {
			return err
		}
		res := make([]any, len(cmds))
		for i, c := range cmds {
			res[i] = c.(*goredis.Cmd).Val()
		}
		for i, ch := range batch {
			r, ok := res[i].([]any)
			if !ok || len(r) != 3 {
				return malformed("catch-up answer for %s", ch)
			}
			ep, _ := r[0].(string)
			if ep == "" || r[2] == nil {
				continue // no epoch, or no history: nothing to deliver
			}
			m, err := decodeEntry(ch, ep, r[2])
			if err != nil {
				b.log.Warn("catch-up: skipping a malformed log entry", "channel", ch, "err", err)
				continue
			}
			b.pass(m)
		}
		b.mu.Lock()
		b.lastSeen = time.Now() // a long catch-up is not a silent connection
		b.mu.Unlock()
	}
	return nil
}
