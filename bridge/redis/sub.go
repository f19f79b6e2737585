package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
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
// connection subscribes it and catches up. On a cluster the channel goes on the shard
// connection of the master of its slot (SSUBSCRIBE); a master the current connections
// do not know (the cluster changed) makes them all be replaced, with the channel.
func (b *Broker) Subscribe(ctx context.Context, channel string) error {
	name := b.keys.pubsub(channel)
	master := ""
	if cc, ok := b.rdb.(*goredis.ClusterClient); ok && !b.isClosed() {
		m, err := cc.MasterForKey(ctx, name)
		if err != nil {
			b.mu.Lock()
			b.want[channel] = struct{}{}
			b.mu.Unlock()
			return fmt.Errorf("bridge: redis subscribe %s: the master of its slot: %w", channel, err)
		}
		master = m.Options().Addr
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return broker.ErrBrokerClosed
	}
	_, wanted := b.want[channel]
	b.want[channel] = struct{}{}
	c := b.main
	if c == nil {
		b.mu.Unlock()
		return nil
	}
	// Under mu, so that a new connection either sees channel in want or gets this
	// SUBSCRIBE after its own. It is a write: no answer is awaited under mu.
	var err error
	switch {
	case b.sharded && b.shardOf[channel] != nil:
		c = b.shardOf[channel]
	case b.sharded:
		if c = b.shards[master]; c == nil {
			b.failGen(fmt.Errorf("the master %s of channel %s is new to this node: the cluster changed", master, channel))
			b.mu.Unlock()
			return nil
		}
		if err = c.ps.SSubscribe(ctx, name); err == nil {
			b.shardOf[channel] = c
		}
	case !wanted:
		err = c.ps.Subscribe(ctx, name)
	}
	if err != nil {
		b.mu.Unlock()
		// The connection is broken; runSubscriber replaces it, with channel.
		b.log.Debug("redis subscribe failed; resubscribing with the next connection", "channel", channel, "err", err)
		return nil
	}
	token, done := b.waiterLocked()
	b.mu.Unlock()
	defer b.dropWaiter(token)
	// Redis answers in order: the answer to this ping means the SUBSCRIBE is in effect.
	// A connection lost meanwhile releases the waiter: its successor subscribes channel
	// and catches up.
	if err := c.ps.Ping(ctx, token); err != nil {
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
	delete(b.seen, channel)
	name := b.keys.pubsub(channel)
	// An error means a broken connection, which is replaced without channel.
	if c := b.shardOf[channel]; c != nil {
		delete(b.shardOf, channel)
		b.unsubbing[name]++
		c.ps.SUnsubscribe(ctx, name)
	} else if b.main != nil && !b.sharded {
		b.main.ps.Unsubscribe(ctx, name)
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

// runSubscriber keeps a subscribed generation of pub/sub connections until Close.
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

// subConn is one pub/sub connection of a generation. Its fields are under Broker.mu.
type subConn struct {
	ps         *goredis.PubSub
	addr       string // the master of a shard connection; "" for the main one
	sync       string // token of the ping that confirms the generation's first subscriptions on it
	lastSeen   time.Time
	unanswered int // health pings sent since its last reply
}

// subscribeOnce runs one generation of pub/sub connections: the main one, subscribed to
// the control channel (and on a single Redis to every wanted channel), and on a cluster
// one per master, subscribed to the wanted channels of its slots. Once Redis has
// confirmed them all it catches up and delivers, until any of them fails (or a slot of
// a wanted channel moves); then it closes them all. wasUp reports whether it got that
// far. Replacing every connection when one fails costs each channel one catch-up
// script, and keeps one rule for every failure: what a node may have missed, it reads.
func (b *Broker) subscribeOnce() (wasUp bool, err error) {
	gctx, fail := context.WithCancelCause(b.ctx)
	defer fail(nil)
	var masters map[string]*goredis.Client
	if cc, ok := b.rdb.(*goredis.ClusterClient); ok {
		if masters, err = clusterMasters(gctx, cc); err != nil {
			return false, fmt.Errorf("cluster masters: %w", err)
		}
	}
	conns, err := b.openGeneration(gctx, fail, masters)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { b.receive(gctx, c, fail) })
	}
	if err != nil {
		fail(err)
	}
	for _, c := range conns {
		if gctx.Err() != nil {
			break
		}
		if err := c.ps.Ping(gctx, c.sync); err != nil {
			fail(fmt.Errorf("ping %s: %w", cmp.Or(c.addr, "main connection"), err))
		}
	}
	<-gctx.Done()
	for _, c := range conns {
		c.ps.Close()
	}
	wg.Wait()
	b.mu.Lock()
	wasUp = b.up
	b.mu.Unlock()
	return wasUp, context.Cause(gctx)
}

// clusterMasters returns a client of every master of the cluster, by address, from a
// fresh slot map.
func clusterMasters(ctx context.Context, cc *goredis.ClusterClient) (map[string]*goredis.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	var mu sync.Mutex
	masters := map[string]*goredis.Client{}
	err := cc.ForEachMaster(ctx, func(_ context.Context, c *goredis.Client) error {
		mu.Lock()
		masters[c.Options().Addr] = c
		mu.Unlock()
		return nil
	})
	return masters, err
}

// openGeneration makes the connections of a generation and sends their subscriptions.
// The connections it returns are the generation's even with an error.
func (b *Broker) openGeneration(gctx context.Context, fail context.CancelCauseFunc, masters map[string]*goredis.Client) ([]*subConn, error) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, broker.ErrBrokerClosed
	}
	main := &subConn{ps: b.rdb.Subscribe(gctx), lastSeen: now}
	conns := []*subConn{main}
	b.main, b.failGen, b.up = main, fail, false
	b.shards, b.shardOf, b.unsubbing = map[string]*subConn{}, map[string]*subConn{}, map[string]int{}
	for addr, m := range masters {
		c := &subConn{ps: m.SSubscribe(gctx), addr: addr, lastSeen: now}
		b.shards[addr] = c
		conns = append(conns, c)
	}
	for _, c := range conns {
		b.tokenSeq++
		c.sync = "sync:" + strconv.FormatUint(b.tokenSeq, 10)
	}
	b.syncing = len(conns)
	for _, d := range b.seen {
		// What this node delivered may have been lost with a master meanwhile: the
		// generation's catch-up checks it (verify) before the channel's live messages
		// pass again.
		d.checked, d.held = false, nil
	}
	names := make([]string, 0, len(b.want)+1)
	names = append(names, b.keys.control())
	for ch := range b.want {
		name := b.keys.pubsub(ch)
		if !b.sharded {
			names = append(names, name)
			continue
		}
		// The slot map was loaded by clusterMasters: no round trip under mu.
		m, err := b.rdb.(*goredis.ClusterClient).MasterForKey(gctx, name)
		if err != nil {
			return conns, fmt.Errorf("the master of %s: %w", ch, err)
		}
		c := b.shards[m.Options().Addr]
		if c == nil {
			return conns, fmt.Errorf("the master %s of %s is not among the masters: the cluster changed", m.Options().Addr, ch)
		}
		// One channel a command: the channels of one SSUBSCRIBE must share a slot.
		if err := c.ps.SSubscribe(gctx, name); err != nil {
			return conns, fmt.Errorf("ssubscribe on %s: %w", c.addr, err)
		}
		b.shardOf[ch] = c
	}
	for len(names) > 0 {
		n := min(len(names), subscribeBatch)
		if err := main.ps.Subscribe(gctx, names[:n]...); err != nil {
			return conns, fmt.Errorf("subscribe: %w", err)
		}
		names = names[n:]
	}
	return conns, nil
}

// receive reads connection c of a generation until it fails, and then fails the
// generation.
func (b *Broker) receive(gctx context.Context, c *subConn, fail context.CancelCauseFunc) {
	for {
		msg, err := c.ps.Receive(gctx)
		if err != nil {
			fail(fmt.Errorf("%s: %w", cmp.Or(c.addr, "main connection"), err))
			return
		}
		b.mu.Lock()
		c.lastSeen, c.unanswered = time.Now(), 0
		b.mu.Unlock()
		switch m := msg.(type) {
		case *goredis.Message:
			b.handle(m)
		case *goredis.Subscription:
			if m.Kind == "sunsubscribe" && b.lostShardChannel(c, m.Channel) {
				// Redis unsubscribes a shard channel whose slot its node no longer
				// serves (a slot migration, a failover): the generation is replaced,
				// subscribing the channel where it lives now and catching up.
				fail(fmt.Errorf("%s no longer serves %s: its slot moved", c.addr, m.Channel))
				return
			}
		case *goredis.Pong:
			if m.Payload == c.sync {
				if !b.syncedLast() {
					continue
				}
				// Every SUBSCRIBE of the generation is in effect: what was published
				// before them, this node may have missed.
				if err := b.catchUp(gctx, c); err != nil {
					fail(fmt.Errorf("catch up: %w", err))
					return
				}
				b.markUp()
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

// syncedLast counts one more connection of the generation confirmed, and reports
// whether it was the last one.
func (b *Broker) syncedLast() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.syncing--
	return b.syncing == 0
}

// lostShardChannel reports whether a SUNSUBSCRIBE of name that came on c was Redis's
// own (the slot moved away), not the answer to one that Unsubscribe sent.
func (b *Broker) lostShardChannel(c *subConn, name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := b.unsubbing[name]; n > 0 {
		if n == 1 {
			delete(b.unsubbing, name)
		} else {
			b.unsubbing[name] = n - 1
		}
		return false
	}
	ch, ok := b.keys.channelOf(name)
	return ok && b.shardOf[ch] == c
}

func (b *Broker) markUp() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.up {
		b.log.Info("redis subscription up", "channels", len(b.want), "shard_connections", len(b.shards))
	}
	b.up, b.downErr = true, nil
}

func (b *Broker) markDown(err error) {
	if err == nil {
		err = errors.New("connection closed")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.up, b.downErr, b.main, b.failGen = false, err, nil, nil
	b.shards, b.shardOf, b.unsubbing = nil, nil, nil
	b.releaseWaitersLocked()
}

// connsLocked returns the connections of the current generation.
func (b *Broker) connsLocked() []*subConn {
	if b.main == nil {
		return nil
	}
	conns := []*subConn{b.main}
	for _, c := range b.shards {
		conns = append(conns, c)
	}
	return conns
}

// runHealth pings the pub/sub connections, and closes one when Redis stops answering on
// it, so that a connection that died silently (no reset, no error) is noticed and its
// generation replaced.
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
	type check struct {
		c          *subConn
		seen       time.Time
		unanswered int
	}
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		b.mu.Lock()
		up := b.up
		var checks []check
		for _, c := range b.connsLocked() {
			checks = append(checks, check{c, c.lastSeen, c.unanswered})
		}
		b.mu.Unlock()
		for _, k := range checks {
			silent := time.Since(k.seen)
			if up && k.unanswered >= 3 && silent > 3*every || silent > max(3*every, connectTimeout) {
				// Not up: dialing, subscribing, catching up, bounded by connectTimeout.
				b.log.Warn("redis pub/sub connection silent; replacing it", "conn", cmp.Or(k.c.addr, "main"),
					"silent_for", silent.Round(time.Millisecond), "pings_unanswered", k.unanswered)
				k.c.ps.Close()
				continue
			}
			b.mu.Lock()
			k.c.unanswered++
			b.mu.Unlock()
			ctx, cancel := context.WithTimeout(b.ctx, every)
			if err := k.c.ps.Ping(ctx, "health"); err != nil {
				k.c.ps.Close()
			}
			cancel()
		}
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
	b.pass(msg, true)
}

// catchUp delivers the latest message of every wanted channel that this node has not
// delivered. An attachment behind it sees a gap and reads the rest from history; that is
// how messages published while the node had no subscription reach its sessions, even
// when nothing else is published on their channels afterwards. It also checks that the
// message the node delivered last on each channel is still in Redis at its position
// (verify), and starts a new epoch for a channel whose history was lost.
func (b *Broker) catchUp(gctx context.Context, c *subConn) error {
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
		ctx, cancel := context.WithTimeout(gctx, connectTimeout)
		if err := luaCatchUp.Load(ctx, b.rdb).Err(); err != nil {
			cancel()
			return err
		}
		cmds, err := b.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, ch := range batch {
				pos := b.lastDelivered(ch)
				p.EvalSha(ctx, luaCatchUp.Hash(), []string{b.keys.meta(ch), b.keys.log(ch)},
					pos.Epoch, strconv.FormatUint(min(pos.Offset, 1<<53), 10))
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
			if !ok || len(r) != 4 {
				return malformed("catch-up answer for %s", ch)
			}
			ep, _ := r[0].(string)
			top, _ := r[1].(int64)
			latest, at := b.entry(ch, ep, r[2]), b.entry(ch, ep, r[3])
			broken, held := b.verify(ch, ep, uint64(max(top, 0)), at)
			if broken != "" {
				if latest, err = b.rebase(gctx, ch, broken); err != nil {
					return err
				}
			}
			if latest != nil {
				b.pass(latest, false)
			}
			if held != nil {
				b.pass(held, false)
			}
		}
		b.mu.Lock()
		c.lastSeen = time.Now() // a long catch-up is not a silent connection
		b.mu.Unlock()
	}
	return nil
}

// entry decodes a log entry of channel ch in epoch ep that a script returned: nil for
// none (no epoch, no entry), and for a malformed one, which is logged.
func (b *Broker) entry(ch, ep string, raw any) *session.Message {
	if ep == "" || raw == nil {
		return nil
	}
	m, err := decodeEntry(ch, ep, raw)
	if err != nil {
		b.log.Warn("catch-up: skipping a malformed log entry", "channel", ch, "err", err)
		return nil
	}
	return m
}
