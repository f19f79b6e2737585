// Command gorilla-floor is the floor of docs/BENCHMARKS.md: the least a Go WebSocket
// broadcast server can do with gorilla/websocket in the usual way, with nothing of what
// Ferry adds (no sessions, positions, history, heartbeats or fallbacks). Each connection
// has a reader goroutine (which answers pings and notices the close) and a writer
// goroutine fed by a buffered channel; POST /publish sends its body, as one text message,
// to every connection. A connection whose channel is full is dropped.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const (
	queueLen  = 256
	writeWait = 10 * time.Second
)

type hub struct {
	mu    sync.RWMutex
	conns map[*conn]struct{}
}

type conn struct {
	ws   *websocket.Conn
	send chan []byte
	once sync.Once
}

func (c *conn) stop() { c.once.Do(func() { close(c.send) }) }

func (h *hub) add(c *conn) {
	h.mu.Lock()
	h.conns[c] = struct{}{}
	h.mu.Unlock()
}

func (h *hub) remove(c *conn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
	c.stop()
}

func (h *hub) broadcast(msg []byte) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.conns {
		select {
		case c.send <- msg:
		default:
			go h.remove(c) // too slow: never block the others
		}
	}
}

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}

func (h *hub) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &conn{ws: ws, send: make(chan []byte, queueLen)}
	h.add(c)
	go func() { // writer
		defer ws.Close()
		for msg := range c.send {
			ws.SetWriteDeadline(time.Now().Add(writeWait))
			if err := ws.WriteMessage(websocket.TextMessage, msg); err != nil {
				h.remove(c)
				return
			}
		}
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
	}()
	go func() { // reader
		defer h.remove(c)
		for {
			if _, _, err := ws.NextReader(); err != nil {
				return
			}
		}
	}()
}

func (h *hub) servePublish(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	h.broadcast(body)
	w.WriteHeader(http.StatusNoContent)
}

func newMux() (*http.ServeMux, *hub) {
	h := &hub{conns: map[*conn]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", h.serveWS)
	mux.HandleFunc("/publish", h.servePublish)
	return mux, h
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	flag.Parse()
	mux, _ := newMux()
	log.Printf("gorilla-floor listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}
