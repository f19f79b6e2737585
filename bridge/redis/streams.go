package redis

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/session"
)

// Backends in the loop through Redis streams, without a socket or an HTTP call:
//
//   - <prefix>:publish carries messages for channels. The nodes read it as the consumer
//     group "ferry", one node at a time (the holder of the lease <prefix>:publish-lease),
//     so that entries are published in stream order. Each entry is published exactly
//     once: it is published under an id (its id field, else its stream id) that the
//     publish script checks, then acknowledged and deleted. When the reading node dies,
//     another takes the lease over once it expires and claims the entries left pending;
//     those it publishes again land nothing new.
//   - <prefix>:upstream (UpstreamToStream) carries what clients send, for backends that read
//     it with their own consumer groups.

// publishBatch bounds the entries read from the publish stream at once.
const publishBatch = 100

// luaRenewLease: KEYS lease; ARGV node, ttl ms. Returns 1 if the node still holds it.
var luaRenewLease = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
`)

// luaReleaseLease: KEYS lease; ARGV node.
var luaReleaseLease = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// publishReader is the state of runPublishStream.
type publishReader struct {
	leader  bool
	renewed time.Time // when the lease was last taken or renewed
	claim   bool      // take over the entries other consumers left pending
	pending bool      // read this node's own unacknowledged entries
	grouped bool      // the group exists
}

// runPublishStream publishes the entries of the publish stream until Close, whenever
// this node holds the lease.
func (b *Broker) runPublishStream() {
	var r publishReader
	wait, failures := retryMin, 0
	for b.ctx.Err() == nil {
		idle, err := b.publishStep(&r)
		if b.ctx.Err() != nil {
			break
		}
		if err != nil {
			if goredis.HasErrorPrefix(err, "NOGROUP") {
				r.grouped = false // the stream or the group vanished (a flush)
			}
			r.pending = true
			failures++
			level := slog.LevelWarn
			if failures > 1 {
				level = slog.LevelDebug // said once per outage
			}
			b.log.Log(b.ctx, level, "redis publish stream: step failed; retrying", "err", err, "retry_in", wait)
			idle, wait = wait, min(2*wait, retryMax)
		} else {
			wait, failures = retryMin, 0
		}
		if idle > 0 {
			t := time.NewTimer(idle)
			select {
			case <-b.ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
	}
	if r.leader {
		// Hand the role over at once rather than after the lease.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		luaReleaseLease.Run(ctx, b.rdb, []string{b.keys.publishLease()}, b.cfg.NodeID)
		cancel()
	}
}

// publishStep takes or renews the lease and, holding it, publishes one batch. It
// returns how long to wait before the next step.
func (b *Broker) publishStep(r *publishReader) (time.Duration, error) {
	ctx, stream, lease := b.ctx, b.keys.publishStream(), b.cfg.PublishLease
	if !r.leader {
		ok, err := b.rdb.SetNX(ctx, b.keys.publishLease(), b.cfg.NodeID, lease).Result()
		if err != nil {
			return 0, fmt.Errorf("take the lease: %w", err)
		}
		if !ok {
			return lease / 3, nil
		}
		b.log.Info("redis publish stream: this node reads it now")
		*r = publishReader{leader: true, renewed: time.Now(), claim: true, pending: true, grouped: r.grouped}
	} else if time.Since(r.renewed) >= lease/3 {
		n, err := luaRenewLease.Run(ctx, b.rdb, []string{b.keys.publishLease()}, b.cfg.NodeID, lease.Milliseconds()).Int()
		if err != nil {
			return 0, fmt.Errorf("renew the lease: %w", err)
		}
		if n == 0 {
			b.log.Warn("redis publish stream: lease lost to another node")
			r.leader = false
			return 0, nil
		}
		r.renewed = time.Now()
	}
	if !r.grouped {
		// "0": entries written before any node ran are published too.
		err := b.rdb.XGroupCreateMkStream(ctx, stream, PublishGroup, "0").Err()
		if err != nil && !goredis.HasErrorPrefix(err, "BUSYGROUP") {
			return 0, fmt.Errorf("create group: %w", err)
		}
		r.grouped = true
	}
	if r.claim {
		// Whatever the previous reader took and did not publish comes first, in order.
		msgs, next, err := b.rdb.XAutoClaim(ctx, &goredis.XAutoClaimArgs{
			Stream: stream, Group: PublishGroup, Consumer: b.cfg.NodeID,
			MinIdle: 0, Start: "0-0", Count: publishBatch,
		}).Result()
		if err != nil {
			return 0, fmt.Errorf("claim: %w", err)
		}
		if err := b.publishEntries(msgs); err != nil {
			return 0, err
		}
		r.claim = next != "0-0"
		if !r.claim {
			r.pending = true // what was claimed is now this node's own pending
		}
		return 0, nil
	}
	start, block := ">", min(2*time.Second, lease/4)
	if r.pending {
		start, block = "0", -1 // no BLOCK for this node's own pending entries
	}
	res, err := b.blk.XReadGroup(ctx, &goredis.XReadGroupArgs{
		Group: PublishGroup, Consumer: b.cfg.NodeID, Streams: []string{stream, start},
		Count: publishBatch, Block: block,
	}).Result()
	if errors.Is(err, goredis.Nil) {
		return 0, nil // nothing new within block
	}
	if err != nil {
		return 0, fmt.Errorf("read: %w", err)
	}
	n := 0
	for _, s := range res {
		n += len(s.Messages)
		if err := b.publishEntries(s.Messages); err != nil {
			return 0, err
		}
	}
	if r.pending && n == 0 {
		r.pending = false
	}
	return 0, nil
}

// publishEntries publishes entries of the publish stream in order, in one pipeline, then
// acknowledges and deletes them in another. The stream and the channels live in different
// hash slots (on a cluster, on different shards), so the two steps can't be one script:
// each entry's publish carries an id instead (its id field, else its stream id), and an
// entry published and not acknowledged (the node died between the two) is published again
// by the next reader under the same id, which lands nothing new. A malformed entry is
// logged and dropped (acknowledged and deleted) so that it can't block the stream.
func (b *Broker) publishEntries(msgs []goredis.XMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	var cmds []goredis.Cmder
	var done []string // entries published or dropped
	for attempt := 0; ; attempt++ {
		var queued []string
		var err error
		cmds, err = b.rdb.Pipelined(b.ctx, func(p goredis.Pipeliner) error {
			queued, done = b.queueEntries(p, msgs, attempt == 0)
			return nil
		})
		if err == nil {
			done = append(done, queued...)
			break
		}
		noScript := false
		for i, c := range cmds {
			noScript = noScript || goredis.HasErrorPrefix(c.Err(), "NOSCRIPT")
			if c.Err() == nil {
				done = append(done, queued[i])
			}
		}
		if !noScript || attempt > 0 {
			b.ackEntries(done)
			return fmt.Errorf("publish entries: %w", err)
		}
		// Redis lost its script cache (a restart): load the script and send again.
		if err := luaPublish.Load(b.ctx, b.rdb).Err(); err != nil {
			return fmt.Errorf("load publish script: %w", err)
		}
	}
	for i, c := range cmds {
		if r, err := c.(*goredis.Cmd).Slice(); err == nil {
			if _, _, err := decodePublished(r, ""); errors.Is(err, broker.ErrIdempotencyConflict) {
				b.log.Warn("redis publish stream: an entry's id was used for another payload; not published", "entry", i)
			}
		}
	}
	return b.ackEntries(done)
}

// ackEntries acknowledges and deletes entries of the publish stream.
func (b *Broker) ackEntries(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	stream := b.keys.publishStream()
	_, err := b.rdb.TxPipelined(b.ctx, func(p goredis.Pipeliner) error {
		p.XAck(b.ctx, stream, PublishGroup, ids...)
		p.XDel(b.ctx, stream, ids...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("acknowledge entries: %w", err)
	}
	return nil
}

// queueEntries queues the publish of every well-formed entry of msgs on p, and returns
// their ids in the order queued, and the ids of the malformed ones.
func (b *Broker) queueEntries(p goredis.Pipeliner, msgs []goredis.XMessage, logDrops bool) (queued, dropped []string) {
	ctx := b.ctx
	size, hist, idle := b.historyArgs()
	for _, e := range msgs {
		if e.Values == nil {
			continue // deleted meanwhile
		}
		channel, data, bin, err := decodePublishEntry(e.Values, b.cfg.MaxMessageBytes)
		if err != nil {
			if logDrops {
				b.log.Warn("redis publish stream: dropping a malformed entry", "id", e.ID, "err", err)
			}
			dropped = append(dropped, e.ID)
			continue
		}
		// The entry's id field is an idempotency key, the same as the HTTP API's
		// Idempotency-Key: a backend that adds an entry twice (its XADD retried) gets it
		// published once. Without one, the entry's stream id serves, which makes the
		// publish once only for this stream.
		id, ttl, digest := "s:"+e.ID, b.cfg.IdempotencyTTL, ""
		if key, ok := field(e.Values, "id"); ok {
			if err := broker.CheckIdempotencyKey(key); err != nil {
				if logDrops {
					b.log.Warn("redis publish stream: dropping an entry with a bad id", "id", e.ID, "err", err)
				}
				dropped = append(dropped, e.ID)
				continue
			}
			id, digest = "k:"+key, broker.PayloadDigest(data, bin)
		}
		kind, pl := kindJSON, string(data)
		if data == nil {
			kind, pl = kindBinary, string(bin)
		}
		p.EvalSha(ctx, luaPublish.Hash(), []string{b.keys.meta(channel), b.keys.log(channel), b.keys.pubID(channel, id)},
			broker.NewEpoch(), kind, pl, size, hist, idle, b.keys.pubsub(channel), ttl.Milliseconds(), digest, b.pubCmd())
		queued = append(queued, e.ID)
	}
	return queued, dropped
}

// forgetConsumer removes this node from the publish group when it has nothing pending, so
// that restarts don't pile up consumers. With entries pending it stays: another node
// claims them.
func (b *Broker) forgetConsumer() {
	if b.cfg.NoPublishStream {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stream := b.keys.publishStream()
	p, err := b.rdb.XPendingExt(ctx, &goredis.XPendingExtArgs{
		Stream: stream, Group: PublishGroup, Consumer: b.cfg.NodeID, Start: "-", End: "+", Count: 1,
	}).Result()
	if err != nil || len(p) > 0 {
		return
	}
	b.rdb.XGroupDelConsumer(ctx, stream, PublishGroup, b.cfg.NodeID)
}

// UpstreamConfig configures UpstreamToStream.
type UpstreamConfig struct {
	// Stream receives the messages; default "ferry:upstream".
	Stream string
	// MaxLen bounds the stream, approximately: older entries are dropped, read or not.
	// Default 100,000.
	MaxLen int64
}

// UpstreamToStream returns an upstream handler (for Config.OnMessage) that appends every
// message clients send to a Redis stream, for backends to read with consumer groups.
// Entries have the fields session, user, seq, cid (only when the client negotiated with
// a client identity), and data (JSON) or bin (bytes); see DecodeUpstream. The gateway
// hands each (cid, seq) over once, or each (session, seq) for an entry without cid (a
// client with a cid keeps its seq across sessions); a backend that wants exactly-once
// processing on its side deduplicates by the same pair, since consumer groups redeliver
// what was not acknowledged. An error (Redis unreachable) is reported to
// the client in the ack of the frame.
func UpstreamToStream(rdb goredis.Cmdable, cfg UpstreamConfig) func(context.Context, broker.Upstream) error {
	stream := cmp.Or(cfg.Stream, DefaultPrefix+":upstream")
	maxLen := cmp.Or(cfg.MaxLen, 100_000)
	return func(ctx context.Context, u broker.Upstream) error {
		values := []any{"session", u.Session, "user", u.User, "seq", strconv.FormatUint(u.Seq, 10)}
		if u.Client != "" {
			values = append(values, "cid", u.Client)
		}
		if u.Data != nil {
			values = append(values, "data", string(u.Data))
		} else {
			values = append(values, "bin", u.Binary)
		}
		err := rdb.XAdd(ctx, &goredis.XAddArgs{Stream: stream, MaxLen: maxLen, Approx: true, Values: values}).Err()
		if err != nil {
			return fmt.Errorf("bridge: upstream to redis stream %s: %w", stream, err)
		}
		return nil
	}
}

// DecodeUpstream decodes an entry written by UpstreamToStream, for backends in Go.
func DecodeUpstream(m goredis.XMessage) (broker.Upstream, error) {
	var u broker.Upstream
	var ok bool
	if u.Session, ok = field(m.Values, "session"); !ok || u.Session == "" {
		return broker.Upstream{}, malformed("upstream entry %s: no session", m.ID)
	}
	u.User, _ = field(m.Values, "user")
	if cid, ok := field(m.Values, "cid"); ok {
		if err := session.CheckClientID(cid); err != nil {
			return broker.Upstream{}, malformed("upstream entry %s: %v", m.ID, err)
		}
		u.Client = cid
	}
	seq, _ := field(m.Values, "seq")
	var err error
	if u.Seq, err = strconv.ParseUint(seq, 10, 64); err != nil || u.Seq == 0 {
		return broker.Upstream{}, malformed("upstream entry %s: seq %.24q", m.ID, seq)
	}
	d, hasData := field(m.Values, "data")
	bin, hasBin := field(m.Values, "bin")
	switch {
	case hasData && !hasBin:
		if !json.Valid([]byte(d)) {
			return broker.Upstream{}, malformed("upstream entry %s: data is not JSON", m.ID)
		}
		u.Data = json.RawMessage(d)
	case hasBin && !hasData:
		u.Binary = []byte(bin)
	default:
		return broker.Upstream{}, malformed("upstream entry %s: want exactly one of data or bin", m.ID)
	}
	return u, nil
}
