// Command gorilla-floor is the reference of docs/BENCHMARKS.md for WebSocket broadcast:
// the strongest plain gorilla/websocket broadcast server a Go engineer would write,
// with nothing of what Ferry adds (no sessions, positions, history, heartbeats or
// fallbacks).
//
// POST /publish takes its body as one message; GET /ws upgrades to a WebSocket that
// receives every message published from then on. One broadcaster joins the messages
// pending into one text frame, one message a line (so a message is one line: compact
// JSON), prepares the frame once (websocket.PreparedMessage) and has a few workers
// write it, each to its own shard of the connections, with a short write deadline; a
// connection whose write fails or times out is dropped. Each connection has one
// goroutine, its reader, and no writer goroutine or queue of its own. See server.go.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net/http"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	workers := flag.Int("workers", 0, "writer workers, each with its shard of the connections (0: GOMAXPROCS, at least 4)")
	writeWait := flag.Duration("write-wait", defaultWriteWait, "deadline of one write to one connection; a connection that misses it is dropped")
	flag.Parse()

	s := newServer(config{workers: *workers, writeWait: *writeWait})
	s.start()
	hs := &http.Server{Addr: *addr, Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.ListenAndServe() }()
	log.Printf("gorilla-floor listening on %s, %d workers, write deadline %v", *addr, s.cfg.workers, s.cfg.writeWait)
	select {
	case err := <-errc:
		log.Fatal(err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Print(err)
	}
	s.Close() // hijacked connections are not the http.Server's
	log.Printf("%d messages in %d frames; %d connections dropped by a failed write",
		s.messages.Load(), s.frames.Load(), s.dropped.Load())
}
