package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ferryrt/ferry/internal/fclient"
)

// The binary serves health, readiness, metrics and the client. On SIGTERM (the cancelled
// context main wires it to) it drains: /readyz answers 503 at once while /healthz still
// answers, open streams are closed with 4003, the requests in flight are served to their
// end, and then the process ends.
func TestRunServesAndDrains(t *testing.T) {
	addr, stop, done := launch(t, io.Discard, "--drain-timeout", "1m")
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": "ferry_broker_ready 1",
		"/ferry/client.js": "export", "/": "Ferry"} {
		if code, body := get(path); code != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %.100q", path, code, body)
		}
	}

	c := fclient.New("http://" + addr + "/ferry")
	if err := c.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	stream, err := c.SSE(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if f := <-stream.Frames; f.T != "hello" {
		t.Fatalf("first frame %+v, want hello", f)
	}
	// A send whose body is still on its way keeps the drain from finishing, so that the
	// node can be looked at while it drains.
	send := startSlowSend(t, addr, c.Session)

	stop()
	closed := closeFrame(stream)
	if closed.Code != 4003 {
		t.Fatalf("open stream ended with %+v, want a close with 4003", closed)
	}
	// The stream is closed after the node starts draining, so /readyz must already fail.
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("/readyz while draining: %d %q, want 503 draining", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz while draining: %d, want 200: the process is alive", code)
	}
	if code, _ := get("/ferry/client.js"); code != http.StatusServiceUnavailable {
		t.Errorf("a new request while draining: %d, want 503", code)
	}
	select {
	case err := <-done:
		t.Fatalf("run returned (%v) with a request in flight", err)
	default:
	}

	if code := send.finish(); code != 200 {
		t.Errorf("the send in flight when the drain started answered %d, want 200", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return once the last request ended")
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("still answering after run returned: %d", resp.StatusCode)
	}
}

// slowSend is a POST <base>/send whose body has not been sent yet.
type slowSend struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
	body string
}

// startSlowSend starts a send for the session with credential cred and returns once the
// server's handler is reading its body: the request is then in flight. It asks for
// "100 Continue", which net/http sends when the handler first reads the body.
func startSlowSend(t *testing.T, addr, cred string) *slowSend {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	s := &slowSend{t: t, conn: conn, br: bufio.NewReader(conn), body: `{"frames":[{"t":"send","seq":1,"d":"late"}]}`}
	fmt.Fprintf(conn, "POST /ferry/send?session=%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", url.QueryEscape(cred), addr, len(s.body))
	resp, err := http.ReadResponse(s.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusContinue {
		t.Fatalf("send: %d before its body, want 100 Continue", resp.StatusCode)
	}
	return s
}

// finish sends the body and returns the status of the answer.
func (s *slowSend) finish() int {
	s.t.Helper()
	if _, err := io.WriteString(s.conn, s.body); err != nil {
		s.t.Fatal(err)
	}
	resp, err := http.ReadResponse(s.br, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
