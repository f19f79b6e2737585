package bridge

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/transport"
)

// What a reader of GET /events costs next to an /sse attachment (issue #21), in process:
//
//	go test -run '^$' -bench 'EventsVsSSE|IdleReaders' -benchtime=1x ./bridge/   (idle memory)
//	go test -run '^$' -bench 'EventsVsSSE' -benchtime=2000x ./bridge/            (delivery)
//
// Readers are bare TCP connections with a request written by hand, so that the client's
// side costs little of what is measured: idle ones are not read at all, and those that
// receive are read by a goroutine each, the same for both endpoints.

// streamReader opens one event stream: /events or /sse of one channel.
type streamReader struct {
	conn net.Conn
	br   *bufio.Reader
}

// benchEndpoints are the endpoints compared, and the line that marks a message on each.
var benchEndpoints = []struct{ name, msgPrefix string }{
	{"sse", `data: {"t":"msg"`},
	{"events", "event: bench"},
}

// openStreamReader opens endpoint ("sse" or "events") on channel bench and reads until
// the stream has subscribed (its sub frame, or the id-only event of its position).
func openStreamReader(tb testing.TB, ts *testServer, endpoint string) *streamReader {
	tb.Helper()
	addr := ts.http.Listener.Addr().String()
	var path, started string
	switch endpoint {
	case "events":
		path, started = ts.Base()+"/events?channel=bench", "id: "
	case "sse":
		c := fclient.New(ts.URL)
		if err := c.Negotiate(context.Background()); err != nil {
			tb.Fatal(err)
		}
		path = ts.Base() + "/sse?" + url.Values{"session": {c.Session}, "cursor": {"bench="}}.Encode()
		started = `data: {"t":"sub"`
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr)
	// Plain, net/http sends the stream chunked; pooled, as it is, to the connection's end.
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 512), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("%s: %v %v", endpoint, resp, err)
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10) // a line holds a whole message
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			tb.Fatalf("%s: before the stream started: %v", endpoint, err)
		}
		if bytes.HasPrefix(line, []byte(started)) {
			break
		}
	}
	return &streamReader{conn: conn, br: br}
}

func benchServer(tb testing.TB, mode transport.IOMode) *testServer {
	return newTestServer(tb, Config{IO: mode, Heartbeat: time.Hour, SessionTTL: time.Hour,
		Limits: transport.Limits{MaxConns: -1}})
}

// BenchmarkEventsVsSSE delivers messages of one channel to readers of /events and of
// /sse, in both I/O modes, in bursts of 64: the figure to compare is cpu-ns/delivery,
// the process's CPU time (server and readers together) per message and reader.
func BenchmarkEventsVsSSE(b *testing.B) {
	const readers, burst = 200, 64
	for _, mode := range []transport.IOMode{transport.IOPooled, transport.IOPlain} {
		for _, ep := range benchEndpoints {
			b.Run(mode.String()+"/"+ep.name+"/readers="+strconv.Itoa(readers), func(b *testing.B) {
				ts := benchServer(b, mode)
				var wg sync.WaitGroup
				var done sync.WaitGroup
				prefix := []byte(ep.msgPrefix)
				for range readers {
					r := openStreamReader(b, ts, ep.name)
					done.Add(1)
					go func() {
						defer done.Done()
						for {
							line, err := r.br.ReadSlice('\n')
							if err != nil {
								return
							}
							if bytes.HasPrefix(line, prefix) {
								wg.Done()
							}
						}
					}()
					defer r.conn.Close()
				}
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				cpu0 := cpuTime()
				for sent := 0; sent < b.N; {
					k := min(burst, b.N-sent)
					wg.Add(readers * k)
					for range k {
						if _, err := ts.Publish(ctx, "bench", brokertest.BenchPayload); err != nil {
							b.Fatal(err)
						}
					}
					wg.Wait()
					sent += k
				}
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*readers), "ns/delivery")
				// CPU time of this process (server and readers): unlike the elapsed time, it
				// does not count what other processes of a shared machine take.
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*readers), "cpu-ns/delivery")
				ts.Shutdown(ctx)
				done.Wait()
			})
		}
	}
}

// BenchmarkIdleReaders opens readers of /events and of /sse that wait for messages and
// reports the memory each holds on the heap and in goroutine stacks, after a GC, and the
// goroutines each keeps; run it with -benchtime=1x.
func BenchmarkIdleReaders(b *testing.B) {
	const readers = 2000
	for _, mode := range []transport.IOMode{transport.IOPooled, transport.IOPlain} {
		for _, ep := range benchEndpoints {
			b.Run(mode.String()+"/"+ep.name+"/readers="+strconv.Itoa(readers), func(b *testing.B) {
				ts := benchServer(b, mode)
				before, g0 := inUse()
				rs := make([]*streamReader, readers)
				for i := range rs {
					rs[i] = openStreamReader(b, ts, ep.name)
					rs[i].br = nil // the reader holds its connection only
				}
				after, g1 := inUse()
				b.ReportMetric(float64(after-before)/readers, "B/reader")
				b.ReportMetric(float64(g1-g0)/readers, "goroutines/reader")
				for _, r := range rs {
					r.conn.Close()
				}
				ts.Shutdown(context.Background())
			})
		}
	}
}

// cpuTime returns the user and system CPU time of this process, in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// inUse returns the heap and stack memory in use after a GC, and the goroutines.
func inUse() (bytes uint64, goroutines int) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse, runtime.NumGoroutine()
}
