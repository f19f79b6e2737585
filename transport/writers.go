package transport

// What the writers of WebSocket connections and hijacked SSE streams share: the pool they
// write on in the pooled I/O, their heartbeats, and the way they take a batch from an
// attachment. The wake-ups, the drain loop and the move off the pool are stream.Writer's.

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport/internal/beat"
	"github.com/ferryrt/ferry/transport/internal/netpoll"
	"github.com/ferryrt/ferry/transport/internal/stream"
	"github.com/ferryrt/ferry/transport/internal/workers"
)

// writers is the pool that writes to WebSocket clients and SSE streams in the pooled I/O.
// A write there never waits (what the kernel doesn't take at once is finished on a
// goroutine of the connection's own), so a few workers per core keep the cores busy; more
// would only take turns with them, and with everything else the process must do (the
// publish that starts the next fan-out among it). A worker yields after writerTurn
// connections, so that a fan-out is not held back while the writers run: the connections
// it reaches before their turn take its message in the write they were due anyway.
var writers = workers.New(2*runtime.GOMAXPROCS(0)+2, 250*time.Millisecond, writerTurn)

// writerTurn is how many connections a writer serves before it lets other goroutines run.
// At about a microsecond and a half per write it is a fifth of a millisecond: often
// enough that a fan-out runs within a round of writes, rarely enough that the yield
// (a fraction of a microsecond) costs nothing; 64 and 256 did as well. docs/BENCHMARKS.md
// has the measurement ("writers that batch under load").
const writerTurn = 128

// writerPool returns the pool a writer of c runs on: writers in the pooled I/O when c
// takes non-blocking writes, nil (goroutines of the writer's own) otherwise, as over TLS,
// whose records are buffered above the socket.
func (c *Config) writerPool(conn net.Conn) *workers.Pool {
	if _, raw := conn.(syscall.Conn); raw && netpoll.Supported() && c.pooled() {
		return writers
	}
	return nil
}

// wheels are the heartbeat wheels of WebSocket sessions and SSE streams, one per
// heartbeat period (one in a server; tests use several), shared by every handler.
var wheels struct {
	mu sync.Mutex
	m  map[time.Duration]*beat.Wheel
}

// heartbeats returns the wheel of period. A session's heartbeat queues its ping without
// waking the writer (session.Stream.PingLater) and flushes it a tick later: the pings
// of a slot go out with the data of the next tick, in the same writes, or alone then.
func heartbeats(period time.Duration) *beat.Wheel {
	wheels.mu.Lock()
	defer wheels.mu.Unlock()
	w := wheels.m[period]
	if w == nil {
		if wheels.m == nil {
			wheels.m = make(map[time.Duration]*beat.Wheel)
		}
		w = beat.New(period)
		wheels.m[period] = w
	}
	return w
}

// tryBytes is the largest batch a pool worker writes; a larger one is written by a
// goroutine of its own, which may wait.
const tryBytes = 32 << 10

// nextBatch is stream.Batches.Next of an attachment: TryNextLocal when the writer must
// not wait (stream.ErrWait where a history read is due), TryNext otherwise.
func nextBatch(a *session.Attachment, local bool) ([]session.Outgoing, error) {
	if !local {
		return a.TryNext(context.Background())
	}
	out, err := a.TryNextLocal()
	if errors.Is(err, session.ErrNeedsSource) {
		return nil, stream.ErrWait
	}
	return out, err
}

// batchMayWait is stream.Batches.MayWait of a transport that adds up to overhead bytes to
// each frame: a batch larger than tryBytes, or one with the close frame (after which the
// connection closes, or waits for the client's close frame), may wait.
func batchMayWait(out []session.Outgoing, overhead int) bool {
	n := 0
	for _, o := range out {
		if o.Kind == session.KindClose {
			return true
		}
		n += len(o.JSON) + overhead
	}
	return n > tryBytes
}

// writeFailed ends a stream whose connection could not be written to, with 1006: the
// connection is as good as dropped.
func writeFailed(s interface{ Close(*session.Error) }) {
	s.Close(&session.Error{Code: session.CodeAbnormal, Reason: "write failed"})
}
