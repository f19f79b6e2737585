package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestDeliverLinesCountsEachMessageOfAFrame(t *testing.T) {
	s := newStats()
	var cs seqState
	now := time.Now()
	var frame []byte
	for i := range 3 {
		if i > 0 {
			frame = append(frame, '\n')
		}
		frame = appendPayload(frame, phaseRate, seqBase(phaseRate)+uint64(i), now.UnixNano(), 4)
	}
	deliverLines(s, &cs, frame, now)
	deliverLines(s, &cs, append(appendPayload(nil, phaseRate, seqBase(phaseRate)+3, now.UnixNano(), 0), '\n'), now)
	p := &s.phases[phaseRate]
	if p.delivered.Load() != 4 || p.dups.Load() != 0 || s.unknown.Load() != 0 {
		t.Fatalf("delivered %d, dups %d, unknown %d; want 4, 0, 0", p.delivered.Load(), p.dups.Load(), s.unknown.Load())
	}
	deliverLines(s, &cs, frame, now) // the same three again
	if p.delivered.Load() != 4 || p.dups.Load() != 3 {
		t.Fatalf("delivered %d, dups %d; want 4, 3", p.delivered.Load(), p.dups.Load())
	}
	deliverLines(s, &cs, []byte("\n\n"), now)
	if s.unknown.Load() != 2 {
		t.Fatalf("unknown %d after two empty lines, want 2", s.unknown.Load())
	}
}

// A whole run against a floor that joins what is published close together into one
// frame counts every message once.
func TestRunAgainstAJoiningFloor(t *testing.T) {
	f := newJoiningFloor(50 * time.Millisecond)
	ts := httptest.NewServer(f)
	defer ts.Close()
	defer f.close()
	checkRun(t, smallRun(t, ts.URL, "gorilla", "websocket", 0))
	if f.joined.Load() == 0 {
		t.Fatal("the fake sent no frame of several messages: the test proved nothing")
	}
}

// joiningFloor is a fake of bench/gorilla-floor that holds what is published for up to
// hold, then sends it all in one frame, one message a line.
type joiningFloor struct {
	mu      sync.Mutex
	conns   map[*websocket.Conn]bool
	pending [][]byte
	joined  atomic.Int64 // frames of more than one message

	stop chan struct{}
	done chan struct{}
}

func newJoiningFloor(hold time.Duration) *joiningFloor {
	f := &joiningFloor{conns: map[*websocket.Conn]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		tick := time.NewTicker(hold)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				f.flush()
			case <-f.stop:
				return
			}
		}
	}()
	return f
}

func (f *joiningFloor) flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pending) == 0 {
		return
	}
	if len(f.pending) > 1 {
		f.joined.Add(1)
	}
	frame := bytes.Join(f.pending, []byte{'\n'})
	f.pending = nil
	for c := range f.conns {
		c.WriteMessage(websocket.TextMessage, frame)
	}
}

func (f *joiningFloor) close() {
	close(f.stop)
	<-f.done
}

func (f *joiningFloor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/ws":
		c, err := testUpgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns[c] = true
		f.mu.Unlock()
		for {
			if _, _, err := c.NextReader(); err != nil {
				break
			}
		}
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
		c.Close()
	case "/publish":
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.pending = append(f.pending, b)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}
