// Package redis is the Redis broker: channels, history, sessions and dedupe windows kept
// in a Redis (or a Redis Cluster) shared by every node of a Ferry cluster, with presence
// (Presence), the backend publish stream, and upstream messages to a Redis stream
// (UpstreamToStream). It is the only package of Ferry that links go-redis, imported here
// as goredis; the bridge itself does not import it.
//
// Node ids are random UUIDs (github.com/google/uuid), as are the ids of publishes without
// an idempotency key (broker.RetryID).
package redis

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/broker"
	"github.com/ferryrt/ferry/session"
)

// Config configures a Broker. Only one of URL and Client is needed.
type Config struct {
	// URL is redis://[user:password@]host:port/db (or rediss:// for TLS), or
	// redis+cluster://host1:port1,host2:port2,... for a Redis Cluster (ParseURL), used
	// when Client is nil.
	URL string
	// Client is a client to use instead of URL: a *goredis.Client (also a Sentinel failover
	// client, goredis.NewFailoverClient) or a *goredis.ClusterClient. The broker does not
	// close it. Give it ContextTimeoutEnabled: without it go-redis ignores the deadlines of
	// contexts (the Server's StoreTimeout) and waits its own ReadTimeout, with retries.
	Client goredis.UniversalClient
	// Prefix starts every key and pub/sub channel; default "ferry". Nodes of one cluster
	// share it, and separate clusters can share a Redis with different prefixes. No '{' or
	// '}': the keys carry hash tags after it.
	Prefix string
	// NodeID names this node in Redis (its consumer name on the publish stream) and in
	// logs; default a random UUID. Letters, digits, '-', '_' and '.' only.
	NodeID string

	History broker.HistoryConfig
	// ChannelTTL is how long a channel's epoch and offset survive without any publish or
	// history read; default 24 hours (and at least twice History.TTL). A client that
	// comes back to a channel idle for longer gets a reset, although it missed nothing.
	// A channel never published to (only subscribed) lasts twice History.TTL.
	ChannelTTL time.Duration
	// DedupeWindow is the number of upstream sequence numbers remembered per dedupe key
	// (a client identity, or a session without one; see session.DedupeKey); default
	// session.DefaultDedupeWindow. Each key is a hash of n/8 bytes of bits plus the
	// recorded positions and errors of its frames, expiring session.Config.DedupeTTL after
	// its latest frame.
	DedupeWindow int
	// MaxMessageBytes bounds payloads taken from the publish stream; default
	// session.DefaultMaxMessageBytes. Give it the server's MaxMessageBytes.
	MaxMessageBytes int

	// NoPublishStream turns off the consumption of the backend publish stream
	// (<prefix>:publish) by this node.
	NoPublishStream bool
	// PublishLease is how long the node that reads the publish stream holds that role
	// without renewing it (it renews every third of it). One node reads at a time, so
	// that entries are published in stream order; when it dies, another takes over
	// within PublishLease, with the entries it had read and not published. Default 10 s.
	PublishLease time.Duration
	// IdempotencyTTL is how long an idempotency key (WithIdempotencyKey, the
	// Idempotency-Key header of POST /api/publish, the id field of a publish stream entry)
	// is remembered after its publish, as one small key per publish in the channel's hash
	// slot; default broker.DefaultIdempotencyTTL.
	IdempotencyTTL time.Duration
	// HealthInterval is how often the node pings its pub/sub connection; three
	// intervals without an answer count as a lost connection. Default 1 s.
	HealthInterval time.Duration

	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultPrefix         = "ferry"
	DefaultChannelTTL     = 24 * time.Hour
	DefaultPublishLease   = 10 * time.Second
	DefaultHealthInterval = time.Second
	// PublishGroup is the consumer group of the nodes on the publish stream.
	PublishGroup = "ferry"
	// retryIDTTL is how long the broker remembers the id it gives a publish without a
	// key (broker.RetryID): twice what go-redis takes at most, with its defaults, to retry
	// a command (4 attempts, each bounded by ReadTimeout, 3 s, and the backoffs between
	// them), which is all that id is for. Its cost is one key of about 100 bytes per
	// publish for that long.
	retryIDTTL = 30 * time.Second
)

func (c Config) withDefaults() (Config, error) {
	c.Prefix = cmp.Or(c.Prefix, DefaultPrefix)
	c.History = c.History.WithDefaults()
	c.ChannelTTL = max(cmp.Or(c.ChannelTTL, DefaultChannelTTL), 2*c.History.TTL)
	c.DedupeWindow = cmp.Or(c.DedupeWindow, session.DefaultDedupeWindow)
	c.MaxMessageBytes = cmp.Or(c.MaxMessageBytes, session.DefaultMaxMessageBytes)
	c.PublishLease = cmp.Or(c.PublishLease, DefaultPublishLease)
	c.HealthInterval = cmp.Or(c.HealthInterval, DefaultHealthInterval)
	c.IdempotencyTTL = cmp.Or(c.IdempotencyTTL, broker.DefaultIdempotencyTTL)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.NodeID == "" {
		c.NodeID = uuid.NewString()
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		return c, fmt.Errorf("bridge: bad Prefix %.70q: braces would break the keys' hash tags", c.Prefix)
	}
	for _, r := range c.NodeID {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.') || len(c.NodeID) > 64 {
			return c, fmt.Errorf("bridge: bad NodeID %.70q: want at most 64 letters, digits, '-', '_', '.'", c.NodeID)
		}
	}
	return c, nil
}

// Broker shares channels, history and sessions between the nodes of a cluster
// through Redis. It is safe for concurrent use.
//
// Publish runs one Lua script that assigns the position, appends to the channel's log (a
// stream bounded by count and age) and PUBLISHes to the nodes (SPUBLISH on a Redis
// Cluster, in the channel's own slot), all atomically. Each node holds one pub/sub
// connection, subscribed to the channels its sessions need and to a control channel for
// attachment notices; on a cluster the channels go on one more connection per master,
// each subscribed (SSUBSCRIBE) to the channels of its slots. When that connection is lost, Ready fails
// until a new one is subscribed; the node then delivers the latest message of every
// channel it serves, so that attachments notice what they missed and read it from
// history. Before that it checks, per channel, that Redis still holds the last message
// the node delivered, and gives a channel whose history was lost with a failed master a
// new epoch (lost.go). Errors talking to Redis are returned to the caller: nothing is
// "accepted and lost".
type Broker struct {
	cfg     Config
	rdb     goredis.UniversalClient
	ownsRdb bool
	// blk serves the blocking reads of the publish stream; it is the broker's own so that
	// Close can interrupt them by closing it.
	blk  goredis.UniversalClient
	keys keyspace
	log  *slog.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	calls  chan *pipelineCall // calls waiting for a pipeline (pipeline.go)

	mu        sync.Mutex
	deliver   func(*session.Message)
	supersede func(sid, attachID string)
	started   bool
	closed    bool
	// The current generation of pub/sub connections (sub.go); all nil while there is
	// none. main carries the control channel, and every channel on a single Redis;
	// on a Redis Cluster (sharded) each master has a shard connection of its own for
	// the channels of its slots (SSUBSCRIBE).
	sharded   bool
	main      *subConn
	shards    map[string]*subConn     // per master address
	shardOf   map[string]*subConn     // per wanted channel subscribed on a shard connection
	unsubbing map[string]int          // SUNSUBSCRIBEs sent and not answered yet, per pub/sub name
	failGen   context.CancelCauseFunc // ends the generation, with why
	syncing   int                     // connections of the generation not confirmed yet
	up        bool                    // the generation is subscribed to everything in want
	downErr   error                   // why the subscription is not up
	// passMu orders deliveries: channels arrive on several connections at once on a
	// cluster, and catch-up runs beside them.
	passMu   sync.Mutex
	want     map[string]struct{}
	seen     map[string]*delivered    // what this node delivered last, per channel in want (lost.go)
	sumSeed  maphash.Seed             // of the digests in seen
	waiters  map[string]chan struct{} // pub/sub ping token → subscriber waiting for it
	tokenSeq uint64
	// The outcome of the latest publish that reached Redis: a Redis that answers PING
	// can still refuse writes (out of memory, a read-only replica after a failover).
	pubErr   error
	pubErrAt time.Time
}

// publishFailureWindow is how long a failed publish keeps the node not ready, unless a
// publish succeeds meanwhile.
const publishFailureWindow = 5 * time.Second

// New connects to Redis and returns a broker; it fails if Redis does not
// answer within ctx. Start begins delivery.
func New(ctx context.Context, cfg Config) (*Broker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Broker{
		cfg:     cfg,
		rdb:     cfg.Client,
		keys:    keyspace{cfg.Prefix},
		log:     cfg.Logger.With("node", cfg.NodeID),
		want:    make(map[string]struct{}),
		seen:    make(map[string]*delivered),
		sumSeed: maphash.MakeSeed(),
		waiters: make(map[string]chan struct{}),
		downErr: errors.New("not started"),
	}
	if b.rdb == nil {
		if cfg.URL == "" {
			return nil, errors.New("bridge: redis broker: no URL and no Client")
		}
		if b.rdb, err = ParseURL(cfg.URL); err != nil {
			return nil, err
		}
		b.ownsRdb = true
	}
	if b.blk = blockingTwin(b.rdb); b.blk == nil {
		return nil, fmt.Errorf("bridge: redis broker: a %T is not supported: want a *goredis.Client or a *goredis.ClusterClient", b.rdb)
	}
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		b.closeClients()
		return nil, fmt.Errorf("bridge: redis at %s: %w", redisAddr(b.rdb), err)
	}
	for _, c := range []goredis.UniversalClient{b.rdb, b.blk} {
		if cc, ok := c.(*goredis.ClusterClient); ok {
			if err := followFailovers(ctx, cc); err != nil {
				b.closeClients()
				return nil, fmt.Errorf("bridge: redis at %s: %w", redisAddr(b.rdb), err)
			}
		}
	}
	_, b.sharded = b.rdb.(*goredis.ClusterClient)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.calls = make(chan *pipelineCall)
	for range pipeliners {
		b.wg.Go(b.pipeliner)
	}
	return b, nil
}

func (b *Broker) closeClients() {
	b.blk.Close()
	if b.ownsRdb {
		b.rdb.Close()
	}
}

// Client returns the broker's Redis client, for UpstreamToStream and backends in the same
// process.
func (b *Broker) Client() goredis.UniversalClient { return b.rdb }

// NodeID returns the name of this node.
func (b *Broker) NodeID() string { return b.cfg.NodeID }

// Start implements broker.Broker.
func (b *Broker) Start(deliver func(*session.Message), supersede func(sid, attachID string)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return broker.ErrBrokerClosed
	}
	if b.started {
		return errors.New("bridge: redis broker already started")
	}
	b.started, b.deliver, b.supersede = true, deliver, supersede
	b.downErr = errors.New("connecting")
	b.wg.Go(b.runSubscriber)
	b.wg.Go(b.runHealth)
	if !b.cfg.NoPublishStream {
		b.wg.Go(b.runPublishStream)
	}
	return nil
}

// Close implements broker.Broker: it stops every goroutine of the broker and waits for them.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.releaseWaitersLocked()
	b.mu.Unlock()
	b.cancel()    // ends the generation of pub/sub connections, which closes them
	b.blk.Close() // interrupts a blocking read of the publish stream
	b.wg.Wait()
	b.forgetConsumer()
	if b.ownsRdb {
		b.rdb.Close()
	}
	return nil
}

// Ready implements broker.Broker: it fails while the pub/sub subscription is down, when Redis
// does not answer, and for a few seconds after a publish Redis refused.
func (b *Broker) Ready(ctx context.Context) error {
	b.mu.Lock()
	closed, up, downErr := b.closed, b.up, b.downErr
	b.mu.Unlock()
	if closed {
		return broker.ErrBrokerClosed
	}
	if !up {
		return fmt.Errorf("bridge: redis subscription down: %w", downErr)
	}
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("bridge: redis unreachable: %w", err)
	}
	b.mu.Lock()
	pubErr, at := b.pubErr, b.pubErrAt
	b.mu.Unlock()
	if pubErr != nil && time.Since(at) < publishFailureWindow {
		return fmt.Errorf("bridge: redis refuses publishes: %w", pubErr)
	}
	return nil
}

// notePublish records the outcome of a publish for Ready. Failures of the caller's own
// context say nothing about Redis.
func (b *Broker) notePublish(ctx context.Context, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	b.mu.Lock()
	b.pubErr, b.pubErrAt = err, time.Now()
	b.mu.Unlock()
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// historyArgs are the arguments of luaPublish after the payload: size, ttl, idle.
func (b *Broker) historyArgs() (size, ttl, idle int64) {
	return int64(b.cfg.History.Size), b.cfg.History.TTL.Milliseconds(), b.cfg.ChannelTTL.Milliseconds()
}

// Publish implements broker.Broker. Every publish carries an id, checked by the publish script
// in the same step as the append: the idempotency key of ctx (WithIdempotencyKey), kept
// IdempotencyTTL, or else a random one, kept long enough for go-redis's retries. So a
// publish sent twice (go-redis retries a command whose answer did not come within
// ReadTimeout, and the first attempt may still be queued in a stalled Redis) lands once,
// and either attempt's answer is the first one's position. Publishes in flight at once go
// to Redis in one pipeline, a round trip for all of them (pipeline.go).
func (b *Broker) Publish(ctx context.Context, channel string, data json.RawMessage, bin []byte) (*session.Message, error) {
	if b.isClosed() {
		return nil, broker.ErrBrokerClosed
	}
	if !validBrokerChannel(channel) {
		return nil, session.CheckChannel(channel)
	}
	key, err := broker.IdempotencyKey(ctx)
	if err != nil {
		return nil, err
	}
	id, ttl := b.publishID(key)
	digest := ""
	if key != "" {
		digest = broker.PayloadDigest(data, bin)
	}
	kind, p := kindJSON, string(data)
	if data == nil {
		kind, p = kindBinary, string(bin)
	}
	size, hist, idle := b.historyArgs()
	res, err := b.runScript(ctx, luaPublish, []string{b.keys.meta(channel), b.keys.log(channel), b.keys.pubID(channel, id)},
		broker.NewEpoch(), kind, p, size, hist, idle, b.keys.pubsub(channel), ttl.Milliseconds(), digest, b.pubCmd()).Slice()
	b.notePublish(ctx, err)
	if err != nil {
		return nil, fmt.Errorf("bridge: redis publish to %s: %w", channel, err)
	}
	pos, ms, err := decodePublished(res, digest)
	if err != nil {
		return nil, fmt.Errorf("bridge: redis publish to %s: %w", channel, err)
	}
	return &session.Message{Channel: channel, Pos: pos, Data: data, Bin: bin, Time: ms}, nil
}

// pubCmd is the command of the publishing scripts' fan-out: SPUBLISH on a cluster, which
// carries a message only through the shard of its channel (the pub/sub name carries the
// channel's hash tag, so it is in the script's own slot), PUBLISH elsewhere (Redis
// before 7 has no SPUBLISH).
func (b *Broker) pubCmd() string {
	if b.sharded {
		return "SPUBLISH"
	}
	return "PUBLISH"
}

// publishID returns the id of a publish with idempotency key key ("" for none) and how
// long Redis keeps it. The prefixes keep keys and generated ids apart.
func (b *Broker) publishID(key string) (string, time.Duration) {
	if key != "" {
		return "k:" + key, b.cfg.IdempotencyTTL
	}
	return "r:" + broker.RetryID(), retryIDTTL
}

// decodePublished reads the answer of a publishing script: {epoch, offset, time} for a
// new message, or {"<epoch>:<offset>:<time>:<digest>"} for an id already used, whose
// digest must be digest (empty for a generated id, which no other payload shares).
func decodePublished(res []any, digest string) (session.Position, int64, error) {
	if len(res) == 1 {
		rec, ok := res[0].(string)
		f := strings.SplitN(rec, ":", 4)
		if !ok || len(f) != 4 || !session.ValidEpoch(f[0]) {
			return session.Position{}, 0, malformed("publish record %.100v", res)
		}
		off, err1 := strconv.ParseUint(f[1], 10, 64)
		ms, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || off < 1 {
			return session.Position{}, 0, malformed("publish record %.100q", rec)
		}
		if f[3] != digest {
			return session.Position{}, 0, broker.ErrIdempotencyConflict
		}
		return session.Position{Epoch: f[0], Offset: off}, ms, nil
	}
	if len(res) != 3 {
		return session.Position{}, 0, malformed("publish answer of %d values", len(res))
	}
	ep, ok1 := res[0].(string)
	off, ok2 := res[1].(int64)
	ms, ok3 := res[2].(int64)
	if !ok1 || !ok2 || !ok3 || !session.ValidEpoch(ep) || off < 1 {
		return session.Position{}, 0, malformed("publish answer %v", res)
	}
	return session.Position{Epoch: ep, Offset: uint64(off)}, ms, nil
}

// Since implements broker.Broker.
func (b *Broker) Since(ctx context.Context, channel string, pos session.Position, limit int) ([]*session.Message, session.Position, bool, error) {
	if !validBrokerChannel(channel) {
		return nil, session.Position{}, false, session.CheckChannel(channel)
	}
	_, ttl, idle := b.historyArgs()
	// Lua numbers are doubles; no channel gets near 2^53 messages, so a larger offset
	// only has to stay larger than the top.
	off := min(pos.Offset, 1<<53)
	res, err := luaSince.Run(ctx, b.rdb, []string{b.keys.meta(channel), b.keys.log(channel)},
		broker.NewEpoch(), ttl, idle, pos.Epoch, strconv.FormatUint(off, 10), max(limit, 1), 2*ttl).Slice()
	if err != nil {
		return nil, session.Position{}, false, fmt.Errorf("bridge: redis history of %s: %w", channel, err)
	}
	msgs, top, ok, err := decodeSince(channel, res)
	if err != nil {
		return nil, session.Position{}, false, fmt.Errorf("bridge: redis history of %s: %w", channel, err)
	}
	if ok && len(msgs) > 0 && msgs[0].Pos.Offset != pos.Offset+1 {
		return nil, top, false, nil
	}
	return msgs, top, ok, nil
}

// decodeSince reads the {epoch, top, ok, entries} answer of luaSince. Entries must be
// consecutive: a gap would otherwise pass for history.
func decodeSince(channel string, res []any) ([]*session.Message, session.Position, bool, error) {
	if len(res) < 3 || len(res) > 4 {
		return nil, session.Position{}, false, malformed("history answer of %d values", len(res))
	}
	ep, ok1 := res[0].(string)
	top, ok2 := res[1].(int64)
	flag, ok3 := res[2].(int64)
	if !ok1 || !ok2 || !ok3 || !session.ValidEpoch(ep) || top < 0 {
		return nil, session.Position{}, false, malformed("history answer %.200v", res)
	}
	pos := session.Position{Epoch: ep, Offset: uint64(top)}
	if flag != 1 || len(res) == 3 {
		return nil, pos, flag == 1, nil
	}
	raw, ok := res[3].([]any)
	if !ok {
		return nil, session.Position{}, false, malformed("history entries of %s", channel)
	}
	msgs := make([]*session.Message, 0, len(raw))
	for _, r := range raw {
		m, err := decodeEntry(channel, ep, r)
		if err != nil {
			return nil, session.Position{}, false, err
		}
		if n := len(msgs); (n > 0 && m.Pos.Offset != msgs[n-1].Pos.Offset+1) || m.Pos.Offset > pos.Offset {
			return nil, session.Position{}, false, malformed("history of %s: entry %d out of sequence", channel, m.Pos.Offset)
		}
		msgs = append(msgs, m)
	}
	return msgs, pos, true, nil
}
