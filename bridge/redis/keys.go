package redis

import (
	"net/url"
	"strings"

	"github.com/ferryrt/ferry/bridge/presence"
)

// keyspace names the keys and pub/sub channels of one prefix. Every key of one channel
// (and its pub/sub channel, for SPUBLISH in the publish script), of one session and of
// one dedupe key carries that name as a Redis Cluster hash tag, "{name}", so that the
// scripts on them touch one hash slot: the same on a single Redis and on a cluster.
// Channel names hold no braces (session.ValidChannel), so a channel's tag is its name as
// it is; other names have '%', '{' and '}' escaped (tag), which keeps the tag whole and
// distinct names apart. The prefix holds no braces (Config.Prefix). A channel's
// presence set is tagged with the channel of its events, presence.Channel(ch), so that a
// change and its event are one script.
type keyspace struct{ prefix string }

func (k keyspace) meta(ch string) string      { return k.prefix + ":ch:" + tag(ch) }
func (k keyspace) log(ch string) string       { return k.prefix + ":log:" + tag(ch) }
func (k keyspace) pubsub(ch string) string    { return k.prefix + ":msg:" + tag(ch) }
func (k keyspace) pubID(ch, id string) string { return k.prefix + ":pid:" + tag(ch) + ":" + id }
func (k keyspace) presence(ch string) string {
	return k.prefix + ":presence:" + tag(presence.Channel(ch))
}
func (k keyspace) session(sid string) string { return k.prefix + ":sess:" + tag(sid) }
func (k keyspace) dedupe(key string) string  { return k.prefix + ":up:" + tag(key) }
func (k keyspace) control() string           { return k.prefix + ":ctl" }
func (k keyspace) publishStream() string     { return k.prefix + ":publish" }
func (k keyspace) publishLease() string      { return k.prefix + ":publish-lease" }
func (k keyspace) presenceDue() string       { return k.prefix + ":presence-due" }

// channelOf returns the channel of a pub/sub channel name made by pubsub.
func (k keyspace) channelOf(pubsub string) (string, bool) {
	s, ok := strings.CutPrefix(pubsub, k.prefix+":msg:{")
	if !ok {
		return "", false
	}
	s, ok = strings.CutSuffix(s, "}")
	if !ok || strings.ContainsAny(s, "{}") {
		return "", false
	}
	return untag(s)
}

// tagEscaper escapes what would end a hash tag early or make two names one.
var tagEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

// tag returns name as a hash tag, "{name}", escaped.
func tag(name string) string {
	if strings.ContainsAny(name, "%{}") {
		name = tagEscaper.Replace(name)
	}
	return "{" + name + "}"
}

// untag reverses the escaping of tag.
func untag(s string) (string, bool) {
	if !strings.Contains(s, "%") {
		return s, true
	}
	out, err := url.PathUnescape(s)
	return out, err == nil
}
