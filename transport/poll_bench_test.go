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
// (already encoded, as Conn.Next returns them). The figure to read is ns/frame.
func BenchmarkWriteFrames(b *testing.B) {
	for _, k := range []int{1, 10, 100, 1000} {
		b.Run("frames="+strconv.Itoa(k), func(b *testing.B) {
			out := make([]session.Outgoing, k)
			for i := range out {
				m := &session.Message{Channel: "bench", Pos: session.Position{Epoch: "e1", Offset: uint64(i + 1)},
					Data: []byte(`{"p":1,"seq":42,"ts":1700000000000000000,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)}
				out[i] = session.Outgoing{JSON: m.Frame(), EventID: m.EventID(), Msg: m}
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
