package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Test doubles of the peers, each speaking just enough of its protocol for the
// generator's clients: the real servers are exercised by bench/run.sh.

var testUpgrader = websocket.Upgrader{}

// fakeFloor broadcasts the body of POST /publish to every WebSocket of /ws.
type fakeFloor struct {
	mu    sync.Mutex
	conns map[*websocket.Conn]*sync.Mutex
}

func newFakeFloor() *fakeFloor { return &fakeFloor{conns: map[*websocket.Conn]*sync.Mutex{}} }

func (f *fakeFloor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/ws":
		c, err := testUpgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns[c] = &sync.Mutex{}
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
		for c, mu := range f.conns {
			mu.Lock()
			c.WriteMessage(websocket.TextMessage, b)
			mu.Unlock()
		}
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// fakeSocketIO is an Engine.IO v4 / Socket.IO v5 server reduced to what the generator
// uses: the handshake, the namespace connect, one ping per client (which must be
// answered), and events broadcast from POST /publish.
type fakeSocketIO struct {
	mu       sync.Mutex
	ws       map[*websocket.Conn]*sync.Mutex
	sessions map[string]*fakeSession
	nextID   int
	pongs    atomic.Int64
	done     chan struct{}
	once     sync.Once
}

type fakeSession struct {
	queue []string
	wake  chan struct{}
}

func newFakeSocketIO() *fakeSocketIO {
	return &fakeSocketIO{ws: map[*websocket.Conn]*sync.Mutex{}, sessions: map[string]*fakeSession{}, done: make(chan struct{})}
}

func (f *fakeSocketIO) shutdown() { f.once.Do(func() { close(f.done) }) }

const fakeOpen = `{"sid":"%s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`

func (f *fakeSocketIO) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/publish" {
		b, _ := io.ReadAll(r.Body)
		f.broadcast(`42["msg",` + string(b) + `]`)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	q := r.URL.Query()
	if r.URL.Path != "/socket.io/" || q.Get("EIO") != "4" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	switch q.Get("transport") {
	case "websocket":
		f.serveWS(w, r)
	case "polling":
		f.servePolling(w, r, q.Get("sid"))
	default:
		http.Error(w, "bad transport", http.StatusBadRequest)
	}
}

func (f *fakeSocketIO) id() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	return fmt.Sprintf("s%d", f.nextID)
}

func (f *fakeSocketIO) serveWS(w http.ResponseWriter, r *http.Request) {
	c, err := testUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "0"+fakeOpen, f.id()))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			break
		}
		switch string(b) {
		case "40":
			mu := &sync.Mutex{}
			mu.Lock()
			c.WriteMessage(websocket.TextMessage, []byte(`40{"sid":"x"}`))
			c.WriteMessage(websocket.TextMessage, []byte("2"))
			mu.Unlock()
			f.mu.Lock()
			f.ws[c] = mu
			f.mu.Unlock()
		case "3":
			f.pongs.Add(1)
		}
	}
	f.mu.Lock()
	delete(f.ws, c)
	f.mu.Unlock()
}

func (f *fakeSocketIO) servePolling(w http.ResponseWriter, r *http.Request, sid string) {
	if sid == "" {
		sid = f.id()
		f.mu.Lock()
		f.sessions[sid] = &fakeSession{wake: make(chan struct{}, 1)}
		f.mu.Unlock()
		fmt.Fprintf(w, "0"+fakeOpen, sid)
		return
	}
	f.mu.Lock()
	s := f.sessions[sid]
	f.mu.Unlock()
	if s == nil {
		http.Error(w, `{"code":1,"message":"Session ID unknown"}`, http.StatusBadRequest)
		return
	}
	if r.Method == http.MethodPost {
		b, _ := io.ReadAll(r.Body)
		for _, p := range bytes.Split(b, []byte{0x1e}) {
			switch string(p) {
			case "40":
				f.push(s, `40{"sid":"x"}`, "2")
			case "3":
				f.pongs.Add(1)
			}
		}
		io.WriteString(w, "ok")
		return
	}
	for {
		f.mu.Lock()
		out := s.queue
		s.queue = nil
		f.mu.Unlock()
		if len(out) > 0 {
			io.WriteString(w, strings.Join(out, "\x1e"))
			return
		}
		select {
		case <-s.wake:
		case <-time.After(time.Second):
			io.WriteString(w, "6") // noop
			return
		case <-f.done:
			io.WriteString(w, "1") // close
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (f *fakeSocketIO) push(s *fakeSession, packets ...string) {
	f.mu.Lock()
	s.queue = append(s.queue, packets...)
	f.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (f *fakeSocketIO) broadcast(packet string) {
	f.mu.Lock()
	sessions := make([]*fakeSession, 0, len(f.sessions))
	for _, s := range f.sessions {
		sessions = append(sessions, s)
	}
	for c, mu := range f.ws {
		mu.Lock()
		c.WriteMessage(websocket.TextMessage, []byte(packet))
		mu.Unlock()
	}
	f.mu.Unlock()
	for _, s := range sessions {
		f.push(s, packet)
	}
}
