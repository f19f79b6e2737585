package transport

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The pooled WebSocket reader relies on gorilla reading through the buffer corkHijacker
// hands its Upgrade, with the handler's own Upgrader settings (see corkHijacker). If a
// gorilla release reads through a buffer of its own instead, the bytes the server has
// buffered stay unseen and the read below waits for its deadline: this test fails before
// any client would notice.
func TestGorillaReadsThroughHijackedReader(t *testing.T) {
	c, result := corkedUpgrade(t, func(hj *corkHijacker, conn *websocket.Conn) error {
		if hj.br == nil {
			return errors.New("net/http had read past the request")
		}
		// The client's message arrives in the buffer the server holds...
		if _, err := hj.br.Peek(1); err != nil {
			return err
		}
		// ...and gorilla reads it from there.
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return fmt.Errorf("gorilla did not read through the hijacked reader: %v", err)
		}
		if string(msg) != "hello" || hj.br.Buffered() != 0 {
			return fmt.Errorf("read %q, %d bytes left in the hijacked reader", msg, hj.br.Buffered())
		}
		return nil
	})
	if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := <-result; err != nil {
		t.Fatal(err)
	}
}

// corkedUpgrade serves one WebSocket upgraded through corkHijacker, as the pooled handler
// upgrades, dials it, and runs fn on the server's side; it returns the client's side and
// what fn returned, once it has. Both sides close when the test ends.
func corkedUpgrade(t testing.TB, fn func(hj *corkHijacker, conn *websocket.Conn) error) (*websocket.Conn, <-chan error) {
	t.Helper()
	h := NewWebSocket(Config{})
	result := make(chan error, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj := &corkHijacker{ResponseWriter: w}
		conn, err := h.upgrader.Upgrade(hj, r, nil)
		if err != nil {
			result <- err
			return
		}
		defer conn.Close()
		result <- fn(hj, conn)
	}))
	t.Cleanup(hs.Close)
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, result
}
