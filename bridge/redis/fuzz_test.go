package redis

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ferryrt/ferry/bridge/presence"
	"github.com/ferryrt/ferry/session"
)

// Everything the Redis broker reads from Redis can have been written by anyone with
// access to it. These targets check that the decoders never panic, and that whatever
// they accept makes a well-formed frame.

func checkMessage(t *testing.T, m *session.Message) {
	t.Helper()
	if !validBrokerChannel(m.Channel) || !session.ValidEpoch(m.Pos.Epoch) || m.Pos.Offset == 0 {
		t.Fatalf("accepted %q at %v", m.Channel, m.Pos)
	}
	if (m.Data == nil) == (m.Bin == nil) {
		t.Fatalf("data %q and bin %q", m.Data, m.Bin)
	}
	if !json.Valid(m.Frame()) {
		t.Fatalf("frame is not JSON: %q", m.Frame())
	}
}

func FuzzRedisDecodeWire(f *testing.F) {
	f.Add("room:a", `k3x9a1:42:1700000000000:d:{"a":1}`)
	f.Add("room:a", "k3x9a1:1:0:b:\x00\xff:")
	f.Add("$presence:room", `ab:1:1:d:{"event":"join"}`)
	f.Add("room:a", "k3x9a1:0:1:d:1")
	f.Add("room:a", "k3x9a1:1:1:d:{\n}")
	f.Add("bad name", "e:1:1:d:1")
	f.Add("", ":::")
	f.Fuzz(func(t *testing.T, channel, wire string) {
		m, err := decodeWire(channel, wire)
		if err != nil {
			return
		}
		checkMessage(t, m)
	})
}

func FuzzRedisDecodeEntry(f *testing.F) {
	f.Add("7-0", "t", "1700000000000", "d", `{"a": 1}`, "x", "y")
	f.Add("1-0", "t", "1", "b", "\x00", "", "")
	f.Add("1-1", "t", "1", "d", "1", "", "")
	f.Add("1-0", "d", "1", "b", "2", "t", "x")
	f.Add("18446744073709551616-0", "d", "1", "", "", "", "")
	f.Fuzz(func(t *testing.T, id, k1, v1, k2, v2, k3, v3 string) {
		m, err := decodeEntry("room:a", "k3x9a1", []any{id, []any{k1, v1, k2, v2, k3, v3}})
		if err != nil {
			return
		}
		checkMessage(t, m)
		if m.Pos.Offset > math.MaxInt64 {
			return // Redis integers are signed
		}
		// And in a history answer whose top covers it.
		msgs, _, ok, err := decodeSince("room:a", []any{"k3x9a1", int64(m.Pos.Offset), int64(1), []any{[]any{id, []any{k1, v1, k2, v2, k3, v3}}}})
		if err != nil || !ok || len(msgs) != 1 {
			t.Fatalf("history of one valid entry: %v %v %v", msgs, ok, err)
		}
	})
}

func FuzzRedisDecodePublishEntry(f *testing.F) {
	f.Add("room:lobby", `{"text":"hi"}`, "", true, true, false)
	f.Add("room:lobby", "", "\x00\x01", true, false, true)
	f.Add("room:lobby", "1", "2", true, true, true)
	f.Add("$session:x", "1", "", true, true, false)
	f.Add("", "", "", false, false, false)
	f.Fuzz(func(t *testing.T, channel, data, bin string, hasChannel, hasData, hasBin bool) {
		values := map[string]any{}
		if hasChannel {
			values["channel"] = channel
		}
		if hasData {
			values["data"] = data
		}
		if hasBin {
			values["bin"] = bin
		}
		ch, d, b, err := decodePublishEntry(values, 1024)
		if err != nil {
			return
		}
		if session.CheckChannel(ch) != nil || (d == nil) == (b == nil) || len(d)+len(b) > 1024 || (d != nil && !json.Valid(d)) {
			t.Fatalf("accepted %q %q %q", ch, d, b)
		}
		m := &session.Message{Channel: ch, Pos: session.Position{Epoch: "e", Offset: 1}, Data: d, Bin: b}
		checkMessage(t, m)
	})
}

func FuzzRedisDecodeUpstream(f *testing.F) {
	f.Add("s1", "ann", "1", `{"a":1}`, "", "", true, false)
	f.Add("s1", "", "18446744073709551615", "", "\x00", "", false, true)
	f.Add("s1", "", "0", "1", "", "", true, false)
	f.Add("", "", "", "", "", "", false, false)
	f.Add("s1", "", "3", "1", "", "tab-0123456789abcdef", true, false)
	f.Add("s1", "", "3", "1", "", "short", true, false)
	f.Fuzz(func(t *testing.T, sid, user, seq, data, bin, cid string, hasData, hasBin bool) {
		values := map[string]any{"session": sid, "user": user, "seq": seq}
		if cid != "" {
			values["cid"] = cid
		}
		if hasData {
			values["data"] = data
		}
		if hasBin {
			values["bin"] = bin
		}
		u, err := DecodeUpstream(goredis.XMessage{ID: "1-0", Values: values})
		if err != nil {
			return
		}
		if u.Session == "" || u.Seq == 0 || (u.Data == nil) == (u.Binary == nil) || (u.Data != nil && !json.Valid(u.Data)) ||
			(u.Client != "" && session.CheckClientID(u.Client) != nil) {
			t.Fatalf("accepted %+v", u)
		}
	})
}

func FuzzRedisDecodeNotice(f *testing.F) {
	f.Add(encodeNotice("node1", "hZt", "000000000001-abcd"))
	f.Add("attach a b")
	f.Add("attach    ")
	f.Fuzz(func(t *testing.T, s string) {
		node, sid, id, err := decodeNotice(s)
		if err != nil {
			return
		}
		if node == "" || sid == "" || id == "" || encodeNotice(node, sid, id) != s {
			t.Fatalf("accepted %q as %q %q %q", s, node, sid, id)
		}
	})
}

func FuzzRedisDecodeMember(f *testing.F) {
	f.Add(encodeMember(presence.Member{Session: "s1", User: "ann"}))
	f.Add(`{"session":""}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, s string) {
		m, err := decodeMember(s)
		if err != nil {
			return
		}
		if m.Session == "" {
			t.Fatalf("accepted %q", s)
		}
	})
}

// The record of a publish id, as the publish script answers it for a publish sent again.
func FuzzRedisDecodePublishRecord(f *testing.F) {
	f.Add("k3x9a1bc:42:1700000000000:", "")
	f.Add("k3x9a1bc:42:1700000000000:abcd", "abcd")
	f.Add("k3x9a1bc:0:1:", "")
	f.Add("::::", "")
	f.Fuzz(func(t *testing.T, rec, digest string) {
		pos, _, err := decodePublished([]any{rec}, digest)
		if err != nil {
			return
		}
		if !session.ValidEpoch(pos.Epoch) || pos.Offset == 0 || !strings.HasSuffix(rec, ":"+digest) {
			t.Fatalf("accepted %q (digest %q) as %v", rec, digest, pos)
		}
	})
}
