package stream

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ferryrt/ferry/transport/internal/netpoll"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// forEachMode runs test pooled and plain.
func forEachMode(t *testing.T, test func(t *testing.T, pooled bool)) {
	for _, pooled := range []bool{true, false} {
		name := "plain"
		if pooled {
			name = "pooled"
		}
		t.Run(name, func(t *testing.T) { test(t, pooled) })
	}
}

// endedOnce returns an ended func that reports on ch and fails the test when it runs
// twice.
func endedOnce(t *testing.T, ch chan struct{}) func() {
	var n atomic.Int32
	return func() {
		if n.Add(1) > 1 {
			t.Error("ended ran twice")
			return
		}
		close(ch)
	}
}

func wait(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s within 5 s", what)
	}
}

// What the client sends reaches handle, in order; the client leaving ends the reading
// once, after handle has seen the end.
func TestReaderReadsUntilTheClientLeaves(t *testing.T) {
	forEachMode(t, func(t *testing.T, pooled bool) {
		srv, cli := pair(t)
		var r Reader
		got := make(chan string, 8)
		ended := make(chan struct{})
		var polledSeen atomic.Bool
		r.Start(srv, pooled, func(polled bool) bool {
			polledSeen.Store(polled)
			var b [16]byte
			n, err := srv.Read(b[:])
			if n > 0 {
				got <- string(b[:n])
			}
			return err == nil
		}, endedOnce(t, ended))
		if pooled && netpoll.Supported() != r.Watched() {
			t.Fatalf("Watched() = %v where the poller is supported: %v", r.Watched(), netpoll.Supported())
		}
		cli.Write([]byte("one"))
		if s := <-got; s != "one" {
			t.Fatalf("read %q", s)
		}
		cli.Write([]byte("two"))
		if s := <-got; s != "two" {
			t.Fatalf("read %q", s)
		}
		if polledSeen.Load() != r.Watched() {
			t.Errorf("handle(polled=%v) on a reader that is watched: %v", polledSeen.Load(), r.Watched())
		}
		cli.Close()
		wait(t, ended, "end after the client left")
	})
}

// The writer stopping the reading while the client is silent ends it: pooled at once,
// plain once the blocking Read fails (here: the connection closed).
func TestReaderStopWhileIdle(t *testing.T) {
	forEachMode(t, func(t *testing.T, pooled bool) {
		srv, _ := pair(t)
		var r Reader
		ended := make(chan struct{})
		r.Start(srv, pooled, func(bool) bool {
			_, err := srv.Read(make([]byte, 1))
			return err == nil
		}, endedOnce(t, ended))
		r.Stop()
		r.Stop() // twice is once
		if !r.Watched() {
			srv.SetReadDeadline(time.Now()) // what a plain caller does to end a blocking Read
		}
		wait(t, ended, "end after Stop")
	})
}

// Stop before Start: Start runs only the ending, and handle never.
func TestReaderStopBeforeStart(t *testing.T) {
	forEachMode(t, func(t *testing.T, pooled bool) {
		srv, cli := pair(t)
		var r Reader
		r.Stop()
		ended := make(chan struct{})
		cli.Write([]byte("x"))
		r.Start(srv, pooled, func(bool) bool {
			t.Error("handle ran after Stop")
			return false
		}, endedOnce(t, ended))
		wait(t, ended, "end")
	})
}

// Stop while handle runs: the ending waits for handle to return, and runs on its
// goroutine once.
func TestReaderStopWhileHandling(t *testing.T) {
	forEachMode(t, func(t *testing.T, pooled bool) {
		srv, cli := pair(t)
		var r Reader
		in, release := make(chan struct{}), make(chan struct{})
		var handling atomic.Bool
		ended := make(chan struct{})
		end := endedOnce(t, ended)
		var first sync.Once
		r.Start(srv, pooled, func(bool) bool {
			if _, err := io.ReadFull(srv, make([]byte, 1)); err != nil {
				return false
			}
			handling.Store(true)
			first.Do(func() { close(in) })
			<-release
			handling.Store(false)
			return true
		}, func() {
			if handling.Load() {
				t.Error("ended ran while handle ran")
			}
			end()
		})
		cli.Write([]byte("x"))
		<-in
		r.Stop()
		close(release)
		if !r.Watched() {
			srv.SetReadDeadline(time.Now())
		}
		// Plain, the loop calls handle again: its read fails at the deadline.
		wait(t, ended, "end")
	})
}
