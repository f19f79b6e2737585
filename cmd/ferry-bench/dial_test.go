package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

// A request that finds its kept-alive connection closed by the server goes again on a new
// one and counts a redial (the storm counts such a long-poll as carried over a restart);
// a request on a fresh connection that fails is an error.
func TestHTTPConnRedialsOnce(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	u, _ := url.Parse(srv.URL)
	h := newHTTPConn(context.Background(), &dialer{timeout: 5 * time.Second}, u, nil, 0)
	defer h.Close()
	get := func() error {
		status, b, err := h.Do(http.MethodGet, "/", nil, nil, time.Now().Add(5*time.Second))
		if err == nil && (status != 200 || string(b) != "ok") {
			t.Fatalf("answer %d %q", status, b)
		}
		return err
	}
	if err := get(); err != nil || h.redials != 0 {
		t.Fatalf("first request: %v, %d redials", err, h.redials)
	}
	srv.CloseClientConnections()
	if err := get(); err != nil || h.redials != 1 {
		t.Fatalf("after the server closed the connection: %v, %d redials; want the request answered after one", err, h.redials)
	}
	srv.Close()
	if err := get(); err == nil || h.redials != 1 {
		t.Fatalf("server gone: %v, %d redials; want an error and no new redial", err, h.redials)
	}
}
