package redis

import (
	"context"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/session"
)

// The session store of a Broker (session.Store): liveness, dedupe windows and
// attachment notices, each a small script on keys of their own hash slot.

// CreateSession implements session.Store. The session is a hash (with the fields hi and
// lo of earlier versions, whose nodes may share the Redis during a rolling upgrade).
func (b *Broker) CreateSession(ctx context.Context, sid string, ttl time.Duration) error {
	_, err := b.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.HSet(ctx, b.keys.session(sid), "hi", 0, "lo", 0)
		p.PExpire(ctx, b.keys.session(sid), ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("bridge: redis create session: %w", err)
	}
	return nil
}

// TouchSession implements session.Store. Touches run in pipelines with the other script
// calls in flight (pipeline.go): the heartbeats of sessions that connected together fall
// due together.
func (b *Broker) TouchSession(ctx context.Context, sid string, ttl time.Duration) (bool, error) {
	n, err := b.runScript(ctx, luaTouch, []string{b.keys.session(sid)}, ttl.Milliseconds()).Int64()
	if err != nil {
		return false, fmt.Errorf("bridge: redis touch session: %w", err)
	}
	return n == 1, nil
}

// dedupeArgs are the arguments of the dedupe scripts, for a window of DedupeWindow
// sequence numbers (a multiple of 64, like session.Window) shared by every node.
func (b *Broker) dedupeArgs(seq uint64, result string, ttl time.Duration) []any {
	n := uint64((b.cfg.DedupeWindow + 63) / 64 * 64)
	return []any{seq >> 32, seq & 0xffffffff, seq % n, n, strconv.FormatUint(seq, 10), result, max(ttl.Milliseconds(), 1)}
}

// MarkUpstream implements session.Store with one script on one key, the hash
// <prefix>:up:<key>; see luaDedupeLib.
func (b *Broker) MarkUpstream(ctx context.Context, key string, seq uint64, result string, ttl time.Duration) (bool, string, error) {
	if seq == 0 {
		return false, "", nil
	}
	res, err := luaMarkUpstream.Run(ctx, b.rdb, []string{b.keys.dedupe(key)}, b.dedupeArgs(seq, result, ttl)...).Slice()
	if err != nil {
		return false, "", fmt.Errorf("bridge: redis dedupe: %w", err)
	}
	flag, ok := res[0].(int64)
	if !ok || (flag == 0) != (len(res) == 2) {
		return false, "", malformed("dedupe answer %v", res)
	}
	if flag == 1 {
		return true, "", nil
	}
	recorded, ok := res[1].(string)
	if !ok || len(recorded) > session.MaxUpstreamResult {
		return false, "", malformed("dedupe answer %v", res)
	}
	return false, recorded, nil
}

// RecordUpstream implements session.Store.
func (b *Broker) RecordUpstream(ctx context.Context, key string, seq uint64, result string, ttl time.Duration) error {
	if seq == 0 {
		return nil
	}
	if err := luaRecordUpstream.Run(ctx, b.rdb, []string{b.keys.dedupe(key)}, b.dedupeArgs(seq, result, ttl)...).Err(); err != nil {
		return fmt.Errorf("bridge: redis dedupe record: %w", err)
	}
	return nil
}

// Announce implements session.Store: every node hears it on the control channel.
func (b *Broker) Announce(ctx context.Context, sid, attachID string) error {
	if err := b.rdb.Publish(ctx, b.keys.control(), encodeNotice(b.cfg.NodeID, sid, attachID)).Err(); err != nil {
		return fmt.Errorf("bridge: redis announce: %w", err)
	}
	return nil
}
