package transport

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/ferryrt/ferry/session"
)

// sseBlock is one block of an event stream as the WHATWG parser sees it: the fields up
// to a blank line, in order. A comment is a field with an empty name.
type sseBlock []sseField

type sseField struct{ name, value string }

// parseSSE splits an event stream the way a browser does (HTML Living Standard,
// "Parsing an event stream"): lines end at CRLF, a lone CR or a lone LF; a field's name
// runs to the first colon, and one space after it is dropped. Parsing by the standard,
// not by the server's own assumptions, is what makes a forged line visible.
func parseSSE(b []byte) []sseBlock {
	var blocks []sseBlock
	var cur sseBlock
	for len(b) > 0 {
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			// An unterminated last line is discarded by browsers: report it so the test
			// sees it rather than losing it.
			cur = append(cur, sseField{"<unterminated>", string(b)})
			break
		}
		line := string(b[:i])
		if b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n' {
			i++
		}
		b = b[i+1:]
		if line == "" {
			if cur != nil {
				blocks = append(blocks, cur)
			}
			cur = nil
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		cur = append(cur, sseField{name, value})
	}
	if cur != nil {
		blocks = append(blocks, cur)
	}
	return blocks
}

// resetEvent is the data of an "event: reset".
type resetEvent struct {
	Channel string `json:"channel"`
	Epoch   string `json:"epoch"`
	Offset  uint64 `json:"offset"`
	Reason  string `json:"reason"`
}

// Whatever channel, epoch, offset, payload and reason reach it, the /events encoding
// parses back, by the standard's rules, as exactly the intended events: no CR, LF or NUL
// starts a field or an event of its own, no message passes for the stream's own reset or
// close, and every id resumes the stream where it says. Names and epochs that could carry
// such bytes are refused by validation before they reach a stream, which the target
// checks too.
func FuzzEventsEncoding(f *testing.F) {
	f.Fuzz(func(t *testing.T, channel, epoch string, off uint64, payload []byte, binary bool, reason string) {
		if session.ValidChannel(channel) && strings.ContainsAny(channel, "\r\n\x00 ,=") {
			t.Fatalf("channel %q passes validation with a byte that breaks a field or an id", channel)
		}
		if session.ValidEpoch(epoch) && strings.ContainsAny(epoch, "\r\n\x00 ,=.") {
			t.Fatalf("epoch %q passes validation with a byte that breaks a field or an id", epoch)
		}
		// The stream's channels come from the query, through the same parser as requests.
		r := httptest.NewRequest(http.MethodGet, "/events?channel="+url.QueryEscape(channel)+"&channel=other", nil)
		cur, err := eventsCursor(r, 128)
		if err != nil {
			if session.ValidChannel(channel) && channel != eventReset && channel != eventClose {
				t.Fatalf("valid channel %q refused: %v", channel, err)
			}
			return
		}
		if !session.ValidChannel(channel) || channel == eventReset || channel == eventClose {
			t.Fatalf("channel %q accepted for a stream", channel)
		}
		if !session.ValidEpoch(epoch) {
			return // no broker hands out such an epoch: ParsePosition refuses it
		}
		m := &session.Message{Channel: channel, Pos: session.Position{Epoch: epoch, Offset: off + 1}}
		wantData := ""
		if binary {
			m.Bin = append([]byte{}, payload...)
			wantData = strconv.Quote(base64.StdEncoding.EncodeToString(payload)) // base64 needs no escape
		} else {
			data, err := session.CompactPayload(payload, 1<<16)
			if err != nil {
				return // refused at publish
			}
			m.Data = data
			wantData = string(data)
		}
		start, resetAt := off, off/2
		frames := []session.Outgoing{
			(&session.ServerFrame{T: session.FrameSub, Ch: channel, Ep: epoch, Off: &start}).Encode(),
			session.MessageFrame(m),
			(&session.ServerFrame{T: session.FrameReset, Ch: channel, Ep: epoch, Off: &resetAt, Reason: reason}).Encode(),
			(&session.ServerFrame{T: session.FramePing, Seq: 1, TS: int64(off)}).Encode(),
			(&session.ServerFrame{T: session.FrameClose, Code: session.CodeShutdown, Reason: reason}).Encode(),
		}
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		enc := newChannelEvents(cur)
		for _, o := range frames {
			enc.write(bw, o)
		}
		bw.Flush()

		// The ids, built here by hand rather than by channelEvents: the channel's position,
		// then "other" with none (unless the channel is "other" itself).
		id := func(p session.Position) string {
			s := channel + "=" + epoch + "." + strconv.FormatUint(p.Offset, 10)
			if channel != "other" {
				s += ",other="
			}
			return s
		}
		blocks := parseSSE(buf.Bytes())
		if len(blocks) != 5 {
			t.Fatalf("%d blocks, want 5:\n%q", len(blocks), buf.Bytes())
		}
		expect := func(i int, want ...sseField) {
			t.Helper()
			got := blocks[i]
			if len(got) != len(want) {
				t.Fatalf("block %d is %q, want %q", i, got, want)
			}
			for j := range want {
				// A data value is compared as JSON below where it was re-encoded.
				if got[j].name != want[j].name || (want[j].value != "*" && got[j].value != want[j].value) {
					t.Fatalf("block %d is %q, want %q", i, got, want)
				}
			}
		}
		expect(0, sseField{"id", id(session.Position{Offset: start})})
		expect(1, sseField{"id", id(m.Pos)}, sseField{"event", channel}, sseField{"data", wantData})
		expect(2, sseField{"id", id(session.Position{Offset: resetAt})}, sseField{"event", eventReset}, sseField{"data", "*"})
		expect(3, sseField{"", "ping " + strconv.FormatInt(int64(off), 10)})
		expect(4, sseField{"event", eventClose}, sseField{"data", "*"})

		// Reasons are arbitrary text: they must come back as the JSON encoding keeps them.
		var wantReason string
		b, _ := json.Marshal(reason)
		json.Unmarshal(b, &wantReason)
		var rs resetEvent
		if err := json.Unmarshal([]byte(blocks[2][2].value), &rs); err != nil || rs != (resetEvent{channel, epoch, resetAt, wantReason}) {
			t.Fatalf("reset data %q: %+v %v", blocks[2][2].value, rs, err)
		}
		var cl struct {
			Code   int    `json:"code"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal([]byte(blocks[4][1].value), &cl); err != nil || cl.Code != int(session.CodeShutdown) || cl.Reason != wantReason {
			t.Fatalf("close data %q: %+v %v", blocks[4][1].value, cl, err)
		}

		// Each id, sent back as Last-Event-ID, resumes the stream at its own position.
		for i, want := range []uint64{start, m.Pos.Offset, resetAt} {
			r := httptest.NewRequest(http.MethodGet, "/events?channel="+url.QueryEscape(channel)+"&channel=other", nil)
			r.Header.Set("Last-Event-ID", blocks[i][0].value)
			back, err := eventsCursor(r, 128)
			if err != nil || back[0].Position != (session.Position{Epoch: epoch, Offset: want}) {
				t.Fatalf("id %q resumes at %v (%v), want %s.%d", blocks[i][0].value, back, err, epoch, want)
			}
		}
	})
}

// Every byte that could end a line or a field is refused in a channel name, wherever it
// stands; so are the stream's own event names. FuzzEventsEncoding covers the rest.
func TestEventsChannelNamesCantInject(t *testing.T) {
	for _, bad := range []string{"\r", "\n", "\r\n", "\x00", ":\n", " ", ",", "="} {
		for _, name := range []string{bad + "room", "room" + bad, "ro" + bad + "om"} {
			r := httptest.NewRequest(http.MethodGet, "/events?channel="+url.QueryEscape(name), nil)
			if _, err := eventsCursor(r, 128); err == nil {
				t.Errorf("channel %q accepted", name)
			}
		}
	}
	for _, name := range []string{eventReset, eventClose} {
		r := httptest.NewRequest(http.MethodGet, "/events?channel="+name, nil)
		if _, err := eventsCursor(r, 128); err == nil || session.AsError(err).Code != session.CodeBadRequest {
			t.Errorf("channel %q: %v, want a 4100 refusal", name, err)
		}
	}
}
