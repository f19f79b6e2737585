package redis

import (
	"errors"

	goredis "github.com/redis/go-redis/v9"
)

// The names of a broker's keys, for the tests of package redis_test, which look at Redis
// directly.

func MetaKey(b *Broker, ch string) string     { return b.keys.meta(ch) }
func LogKey(b *Broker, ch string) string      { return b.keys.log(ch) }
func ControlKey(b *Broker) string             { return b.keys.control() }
func PresenceDueKey(b *Broker) string         { return b.keys.presenceDue() }
func PublishStreamKey(b *Broker) string       { return b.keys.publishStream() }
func SessionKey(b *Broker, sid string) string { return b.keys.session(sid) }

// RetryIDTTL is how long the broker remembers the id of a publish without a key.
const RetryIDTTL = retryIDTTL

// PubSub returns b's pub/sub connection and whether it is up.
func PubSub(b *Broker) (*goredis.PubSub, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.main == nil {
		return nil, b.up
	}
	return b.main.ps, b.up
}

// PubSubName is the pub/sub channel of ch.
func PubSubName(b *Broker, ch string) string { return b.keys.pubsub(ch) }

// ShardConnections returns the masters of b's shard connections (none on a single Redis).
func ShardConnections(b *Broker) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for addr := range b.shards {
		out = append(out, addr)
	}
	return out
}

// Reconnect ends b's generation of pub/sub connections, as a failure would: b subscribes
// again and catches up.
func Reconnect(b *Broker) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failGen != nil {
		b.failGen(errors.New("reconnect asked by a test"))
	}
}
