package redis

import (
	"strings"
	"testing"
)

// Every key of a channel (and of a session, of a dedupe key) hashes to one slot, whatever
// the name holds; the pub/sub name gives the channel back.
func TestRedisKeysShareTheirNameSlot(t *testing.T) {
	if hashSlot("foo") != 12182 || hashSlot("{user1000}.following") != hashSlot("{user1000}.followers") {
		t.Fatal("hashSlot is not Redis's (CLUSTER KEYSLOT foo is 12182)")
	}
	k := keyspace{"ferry"}
	// A presence set goes with the channel of its events.
	for _, name := range []string{"room:1", "$presence:room:1", "$presence:}x{", "}x{", "a}b", "{a}", "%7D", "c:tab-1"} {
		keys := []string{k.meta(name), k.log(name), k.pubsub(name), k.pubID(name, "k:{x}")}
		if ch, ok := strings.CutPrefix(name, "$presence:"); ok {
			keys = append(keys, k.presence(ch))
		}
		want := hashSlot(keys[0])
		for _, key := range keys {
			if got := hashSlot(key); got != want {
				t.Errorf("%q: %s in slot %d, %s in %d", name, keys[0], want, key, got)
			}
		}
		if hashSlot(k.session(name)) != hashSlot(k.session(name)+"x") || hashSlot(k.dedupe(name)) != hashSlot(k.dedupe(name)+"x") {
			t.Errorf("%q: the session or dedupe key has no whole hash tag: %s %s", name, k.session(name), k.dedupe(name))
		}
		if ch, ok := k.channelOf(k.pubsub(name)); !ok || ch != name {
			t.Errorf("channelOf(%s) = %q %v, want %q", k.pubsub(name), ch, ok, name)
		}
	}
	if tag("a}b") == tag("a%7Db") {
		t.Error("two names share a tag")
	}
	if _, err := (Config{Prefix: "fe{rry"}).withDefaults(); err == nil {
		t.Error("a prefix with a brace was accepted")
	}
}

// hashSlot is Redis Cluster's key slot: CRC16 of the hash tag (the part between the first
// '{' and the first '}' after it, if not empty) or of the key, mod 16384.
func hashSlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}
