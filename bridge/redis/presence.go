package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/bridge/presence"
)

// Presence in Redis. Per channel, a sorted set <prefix>:presence:{<channel>} holds the
// members (their JSON, e.g. {"session":"…","user":"ann"}) scored by expiry time in Unix
// milliseconds, by Redis's clock; a member is present while its score is in the future.
// Each change and its event (published with the broker's publish script on the presence
// channel) happen in one script on the channel's keys, which share its hash slot, so every
// join and leave is announced exactly once, whichever node makes the change or sweeps.
//
// A second sorted set, <prefix>:presence-due, scores "<channel> <member>" by the same
// expiry, so that sweepers on every node find expired members without scanning channels.
// It lives in a slot of its own, so it is kept outside the scripts: a join adds its entry
// before the script runs, a leave or an expiry removes it after. It is only an index:
// the sweeper checks each entry against the channel's set, which is the truth, and drops
// entries that name nobody.

// luaPresenceJoin: KEYS presence, meta, log of one channel. ARGV member, ttl ms, candidate
// epoch, size, history ttl, idle, join event, pub/sub channel, fan-out command. Returns {1, expiry} if the
// member joined, {0, expiry} if it was present already (its expiry renewed).
var luaPresenceJoin = goredis.NewScript(luaLib + `
local now = now_ms()
local exp = now + tonumber(ARGV[2])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], int(exp), ARGV[1])
if not old or tonumber(old) <= now then
  publish(KEYS[2], KEYS[3], ARGV[3], 'd', ARGV[7], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[8], now, ARGV[9])
  return {1, exp}
end
return {0, exp}
`)

// luaPresenceLeave: the keys and arguments of luaPresenceJoin (ttl unused), with a leave
// event. Returns 1 if the member left.
var luaPresenceLeave = goredis.NewScript(luaLib + `
local now = now_ms()
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  publish(KEYS[2], KEYS[3], ARGV[3], 'd', ARGV[7], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[8], now, ARGV[9])
  return 1
end
return 0
`)

// luaPresenceExpire removes one member if it has expired: the keys and arguments of
// luaPresenceLeave. Returns 1 if it left, 0 if it was not there, or its expiry if it is
// still present (refreshed since the index entry was written).
var luaPresenceExpire = goredis.NewScript(luaLib + `
local now = now_ms()
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s then
  return 0
end
if tonumber(s) > now then
  return tonumber(s)
end
redis.call('ZREM', KEYS[1], ARGV[1])
publish(KEYS[2], KEYS[3], ARGV[3], 'd', ARGV[7], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[8], now, ARGV[9])
return 1
`)

// luaPresenceList: KEYS presence. Returns the members not expired.
var luaPresenceList = goredis.NewScript(luaLib + `
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. int(now_ms()), '+inf')
`)

// sweepBatch bounds the expired members handled per step of a sweep.
const sweepBatch = 256

// Presence is Presence shared by every node through Redis; see Presence.
type Presence struct {
	b   *Broker
	cfg presence.Config

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewPresence returns presence stored in b's Redis, with events published through
// b, and starts its sweeper.
func NewPresence(b *Broker, cfg presence.Config) *Presence {
	p := &Presence{b: b, cfg: cfg.WithDefaults()}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Go(p.run)
	return p
}

// Close implements Presence.
func (p *Presence) Close() error {
	p.cancel()
	p.wg.Wait()
	return nil
}

func (p *Presence) run() {
	t := time.NewTicker(p.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		if _, err := p.Sweep(p.ctx); err != nil && p.ctx.Err() == nil {
			p.cfg.Logger.Warn("presence sweep failed", "err", err)
		}
	}
}

func encodeMember(m presence.Member) string {
	b, _ := json.Marshal(m)
	return string(b)
}

// decodeMember decodes a member of a presence set.
func decodeMember(s string) (presence.Member, error) {
	var m presence.Member
	if err := json.Unmarshal([]byte(s), &m); err != nil || m.Session == "" {
		return presence.Member{}, malformed("presence member %.80q", s)
	}
	return m, nil
}

// change runs luaPresenceJoin or luaPresenceLeave for m on channels, one channel at a
// time (each channel's keys are in its own hash slot), and keeps the due index in step.
func (p *Presence) change(ctx context.Context, script *goredis.Script, event string, m presence.Member, channels []string) error {
	if err := m.Check(); err != nil {
		return err
	}
	k := p.b.keys
	member := encodeMember(m)
	size, ttl, idle := p.b.historyArgs()
	for _, ch := range channels {
		if !validBrokerChannel(ch) {
			return fmt.Errorf("bridge: presence %s: bad channel name %.40q", event, ch)
		}
	}
	// Each step goes through the broker's pipelines (pipeline.go): the heartbeats of many
	// sessions refresh their presence at once.
	for _, ch := range channels {
		pc, due := presence.Channel(ch), ch+" "+member
		if event == presence.Join {
			// Indexed before the join, so that no member is ever present unindexed (and
			// so never swept). A provisional score; the script's expiry replaces it.
			exp := time.Now().Add(p.cfg.TTL).UnixMilli()
			if err := p.b.runCommand(ctx, "ZADD", k.presenceDue(), exp, due).Err(); err != nil {
				return fmt.Errorf("bridge: redis presence %s: %w", event, err)
			}
		}
		res, err := p.b.runScript(ctx, script, []string{k.presence(ch), k.meta(pc), k.log(pc)},
			member, p.cfg.TTL.Milliseconds(), broker.NewEpoch(), size, ttl, idle, string(presence.EventData(event, ch, m)), k.pubsub(pc), p.b.pubCmd()).Result()
		if err != nil {
			return fmt.Errorf("bridge: redis presence %s: %w", event, err)
		}
		if event == presence.Join {
			if r, ok := res.([]any); ok && len(r) == 2 {
				if exp, ok := r[1].(int64); ok {
					p.b.runCommand(ctx, "ZADD", k.presenceDue(), exp, due) // best effort: the provisional score stands
				}
			}
		} else if err := p.b.runCommand(ctx, "ZREM", k.presenceDue(), due).Err(); err != nil {
			// The entry stays; the sweeper drops it when it finds nobody.
			p.cfg.Logger.Debug("presence: unindexing a leave failed", "channel", ch, "err", err)
		}
	}
	return nil
}

// Join implements Presence.
func (p *Presence) Join(ctx context.Context, m presence.Member, channels ...string) error {
	return p.change(ctx, luaPresenceJoin, presence.Join, m, channels)
}

// Leave implements Presence. m must be the member that joined, identity included.
func (p *Presence) Leave(ctx context.Context, m presence.Member, channels ...string) error {
	return p.change(ctx, luaPresenceLeave, presence.Leave, m, channels)
}

// List implements Presence.
func (p *Presence) List(ctx context.Context, channel string) ([]presence.Member, error) {
	raw, err := luaPresenceList.Run(ctx, p.b.rdb, []string{p.b.keys.presence(channel)}).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("bridge: redis presence of %s: %w", channel, err)
	}
	out := make([]presence.Member, 0, len(raw))
	for _, s := range raw {
		m, err := decodeMember(s)
		if err != nil {
			p.cfg.Logger.Warn("presence: skipping a malformed member", "channel", channel, "err", err)
			continue
		}
		out = append(out, m)
	}
	presence.SortMembers(out)
	return out, nil
}

// Sweep removes the members whose TTL has passed, on every channel, and announces their
// leave. Every node's sweeper calls it every SweepInterval; it returns how many left.
func (p *Presence) Sweep(ctx context.Context) (int, error) {
	k := p.b.keys
	size, ttl, idle := p.b.historyArgs()
	left := 0
	for {
		now, err := p.b.rdb.Time(ctx).Result()
		if err != nil {
			return left, fmt.Errorf("bridge: presence sweep: %w", err)
		}
		due, err := p.b.rdb.ZRangeByScore(ctx, k.presenceDue(), &goredis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: sweepBatch,
		}).Result()
		if err != nil {
			return left, fmt.Errorf("bridge: presence sweep: %w", err)
		}
		for _, d := range due {
			ch, member, _ := strings.Cut(d, " ")
			m, err := decodeMember(member)
			if err != nil || !validBrokerChannel(ch) {
				p.cfg.Logger.Warn("presence sweep: dropping a malformed entry", "entry", d)
				if err := p.b.rdb.ZRem(ctx, k.presenceDue(), d).Err(); err != nil {
					return left, fmt.Errorf("bridge: presence sweep: %w", err)
				}
				continue
			}
			pc := presence.Channel(ch)
			n, err := luaPresenceExpire.Run(ctx, p.b.rdb, []string{k.presence(ch), k.meta(pc), k.log(pc)},
				member, 0, broker.NewEpoch(), size, ttl, idle, string(presence.EventData(presence.Leave, ch, m)), k.pubsub(pc), p.b.pubCmd()).Int64()
			if err != nil {
				return left, fmt.Errorf("bridge: presence sweep: %w", err)
			}
			if n > 1 {
				// Refreshed meanwhile: the index follows the member's expiry.
				err = p.b.rdb.ZAdd(ctx, k.presenceDue(), goredis.Z{Score: float64(n), Member: d}).Err()
			} else {
				left += int(n)
				err = p.b.rdb.ZRem(ctx, k.presenceDue(), d).Err()
			}
			if err != nil {
				return left, fmt.Errorf("bridge: presence sweep: %w", err)
			}
		}
		if len(due) < sweepBatch {
			return left, nil
		}
	}
}
