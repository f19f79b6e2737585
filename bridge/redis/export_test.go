package redis

import goredis "github.com/redis/go-redis/v9"

// The names of a broker's keys, for the tests of package redis_test, which look at Redis
// directly.

func MetaKey(b *Broker, ch string) string { return b.keys.meta(ch) }
func LogKey(b *Broker, ch string) string  { return b.keys.log(ch) }
func ControlKey(b *Broker) string         { return b.keys.control() }
func PresenceDueKey(b *Broker) string     { return b.keys.presenceDue() }
func PublishStreamKey(b *Broker) string   { return b.keys.publishStream() }

// RetryIDTTL is how long the broker remembers the id of a publish without a key.
const RetryIDTTL = retryIDTTL

// PubSub returns b's pub/sub connection and whether it is up.
func PubSub(b *Broker) (*goredis.PubSub, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ps, b.up
}
