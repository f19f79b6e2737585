package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestBroadcast(t *testing.T) {
	mux, h := newMux()
	ts := httptest.NewServer(mux)
	defer ts.Close()
	var conns []*websocket.Conn
	for range 3 {
		c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// The handler registers a connection after the handshake: wait for all three.
	for deadline := time.Now().Add(5 * time.Second); ; {
		h.mu.RLock()
		n := len(h.conns)
		h.mu.RUnlock()
		if n == len(conns) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections registered", n, len(conns))
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, err := http.Post(ts.URL+"/publish", "application/json", strings.NewReader(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("publish: %s", resp.Status)
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := c.ReadMessage()
		if err != nil || string(b) != `{"n":1}` {
			t.Fatalf("conn %d: %q %v", i, b, err)
		}
	}
}
