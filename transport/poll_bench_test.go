package transport

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/ferryrt/ferry/session"
)

// discardWriter is a ResponseWriter that keeps nothing, so that only writeFrames' own
// work is measured.
type discardWriter struct {
	h http.Header
	n int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }

// BenchmarkWriteFrames is the assembly of one long-poll answer from k queued frames
// (already encoded, as Stream.Next returns them). The figure to read is ns/frame.
func BenchmarkWriteFrames(b *testing.B) {
	for _, k := range []int{1, 10, 100, 1000} {
		b.Run("frames="+strconv.Itoa(k), func(b *testing.B) {
			out := make([]session.Outgoing, k)
			for i := range out {
				m := &session.Message{Channel: "bench", Pos: session.Position{Epoch: "e1", Offset: uint64(i + 1)},
					Data: []byte(`{"p":1,"seq":42,"ts":1700000000000000000,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)}
				out[i] = session.MessageFrame(m)
			}
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				writeFrames(w, out)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*k), "ns/frame")
		})
	}
}

// BenchmarkParsePoll is the reading of one poll request on a taken-over connection, from
// the bytes that arrived to the parsed request: what the long-poll rows pay per poll
// besides the session's work and the system calls.
func BenchmarkParsePoll(b *testing.B) {
	in := []byte("GET /ferry/poll?session=v1.eyJzaWQiOiJhYmNkZWZnaGlqa2xtbm9wcXJzdHV2IiwiaWF0IjoxNzAwMDAwMDAwfQ.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2ln&cursor=bench%3De1.123 HTTP/1.1\r\n" +
		"Host: 127.0.0.1:8080\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\nAccept-Encoding: gzip\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := parsePoll(in, "GET /ferry/poll"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPollResponse is the assembly of one poll answer on a taken-over connection
// (status line, headers, body) into the buffer its one write sends.
func BenchmarkPollResponse(b *testing.B) {
	m := &session.Message{Channel: "bench", Pos: session.Position{Epoch: "e1", Offset: 1},
		Data: []byte(`{"p":1,"seq":42,"ts":1700000000000000000}`)}
	out := []session.Outgoing{session.MessageFrame(m)}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		rw := newPollResponse()
		writeFrames(rw, out)
		buf = rw.appendTo(buf[:0], false)
		rw.free()
	}
}
