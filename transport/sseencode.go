package transport

// The one encoder of Server-Sent Events (HTML Living Standard, "Server-sent events"), for
// GET /sse (a session's frames, writeEvent) and GET /events (a watch's frames as a
// dashboard reads them, channelEvents). No field written here can hold CR, LF or NUL:
// frames and payloads are single-line JSON (payloads are compacted, and JSON escapes CR
// and LF in strings), channel names and epochs come from restricted character sets
// (session.ValidChannel, session.ValidEpoch). FuzzSSEEventEncoding and
// FuzzEventsEncoding check it.

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"strconv"
	"sync"

	"github.com/ferryrt/ferry/session"
)

// encodeFunc writes one frame of an attachment to a stream.
type encodeFunc func(bw *bufio.Writer, o session.Outgoing)

var sseWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}

// getSSEWriter lends a buffer that writes to w. A stream waits far longer than it
// writes: its buffer is lent for one batch only.
func getSSEWriter(w io.Writer) *bufio.Writer {
	bw := sseWriters.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

// putSSEWriter flushes bw and returns it to the pool.
func putSSEWriter(bw *bufio.Writer) error {
	err := bw.Flush()
	bw.Reset(nil)
	sseWriters.Put(bw)
	return err
}

// writeEvent writes one frame of a session as an event of /sse: its id, if it has one,
// and the frame as the data.
func writeEvent(bw *bufio.Writer, o session.Outgoing) {
	if id := o.EventID(); id != "" {
		bw.WriteString("id: ")
		bw.WriteString(id)
		bw.WriteByte('\n')
	}
	bw.WriteString("data: ")
	bw.Write(o.JSON)
	bw.WriteString("\n\n")
}

// The names of the dashboard stream's own events; no channel of these names is streamed
// (eventsCursor), so that no message passes for one of them.
const (
	eventReset = "reset"
	eventClose = "close"
)

// eventsPrelude opens a dashboard stream: the reconnection hint, and a comment that
// makes a proxy pass the response head on at once.
func eventsPrelude(retry int) string {
	return "retry: " + strconv.Itoa(retry) + "\n: ferry events\n\n"
}

// channelEvents writes the frames of a watch as the events of GET /events (PROTOCOL.md
// §5), and keeps the position of each channel of the stream, which every id carries:
//
//	id: a=k3x9a1.42,b=p0q1r2.7      the position of every channel, for Last-Event-ID
//	event: a                        the channel
//	data: {"text":"hi"}             the payload
//
// A reset is "event: reset" with its channel, position and reason, the close is
// "event: close" with its code and reason, a ping is a comment. A message needs no
// encoding of its own beyond the id, which is written without allocating.
type channelEvents struct{ pos session.Cursor }

// newChannelEvents returns the encoder of a stream of cur's channels, at cur's positions.
func newChannelEvents(cur session.Cursor) *channelEvents {
	return &channelEvents{pos: append(session.Cursor(nil), cur...)}
}

// write writes o; frames a dashboard has no use for (hello, unsub, ack) write nothing.
func (e *channelEvents) write(bw *bufio.Writer, o session.Outgoing) {
	switch o.Kind {
	case session.KindMsg:
		m := o.Msg
		e.move(m.Channel, m.Pos)
		e.writeID(bw)
		bw.WriteString("event: ")
		bw.WriteString(m.Channel)
		bw.WriteString("\ndata: ")
		if m.Bin != nil {
			// As encoding/json writes a []byte: base64 in a JSON string.
			b := append(bw.AvailableBuffer(), '"')
			b = base64.StdEncoding.AppendEncode(b, m.Bin)
			bw.Write(append(b, '"'))
		} else {
			bw.Write(m.Payload()) // compact JSON, valid UTF-8: one line
		}
		bw.WriteString("\n\n")
	case session.KindPing:
		bw.WriteString(": ping ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), o.Control().TS, 10))
		bw.WriteString("\n\n")
	case session.KindSub:
		// The stream's starting position. An event with only an id sets the browser's
		// Last-Event-ID without dispatching anything, so a stream cut before its first
		// message still resumes from here instead of "from now".
		c := o.Control()
		e.move(c.Channel, c.Pos)
		e.writeID(bw)
		bw.WriteByte('\n')
	case session.KindReset:
		c := o.Control()
		e.move(c.Channel, c.Pos)
		e.writeID(bw)
		b, _ := json.Marshal(struct {
			Channel string `json:"channel"`
			Epoch   string `json:"epoch"`
			Offset  uint64 `json:"offset"`
			Reason  string `json:"reason"`
		}{c.Channel, c.Pos.Epoch, c.Pos.Offset, c.Reason})
		bw.WriteString("event: " + eventReset + "\ndata: ")
		bw.Write(b)
		bw.WriteString("\n\n")
	case session.KindClose:
		c := o.Control()
		b, _ := json.Marshal(struct {
			Code   int    `json:"code"`
			Reason string `json:"reason"`
		}{int(c.Code), c.Reason})
		bw.WriteString("event: " + eventClose + "\ndata: ")
		bw.Write(b)
		bw.WriteString("\n\n")
	}
}

// move records that channel is at p; a channel the stream doesn't list is ignored.
func (e *channelEvents) move(channel string, p session.Position) {
	for i := range e.pos {
		if e.pos[i].Channel == channel {
			e.pos[i].Position = p
			return
		}
	}
}

// writeID writes the id line: the stream's cursor, as session.Cursor.String writes it.
func (e *channelEvents) writeID(bw *bufio.Writer) {
	bw.WriteString("id: ")
	for i, c := range e.pos {
		if i > 0 {
			bw.WriteByte(',')
		}
		bw.WriteString(c.Channel)
		bw.WriteByte('=')
		if c.Position.Epoch != "" {
			bw.WriteString(c.Position.Epoch)
			bw.WriteByte('.')
			bw.Write(strconv.AppendUint(bw.AvailableBuffer(), c.Position.Offset, 10))
		}
	}
	bw.WriteByte('\n')
}
