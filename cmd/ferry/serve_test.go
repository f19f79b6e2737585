package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
)

// A listen address that cannot be had fails the start with a message naming --addr.
func TestListenFailureNamesAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	o, err := parseOptions([]string{"--addr", ln.Addr().String(), "--ticker", "0"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), o, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "--addr: ") {
		t.Fatalf("run on a taken address: %v, want an error naming --addr", err)
	}
}

// --debug-addr serves the profiler on its own address, and only there.
func TestDebugAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	debug := ln.Addr().String()
	ln.Close()
	addr := startServer(t, "--debug-addr", debug)
	resp, err := http.Get("http://" + debug + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine profile") {
		t.Fatalf("profiler: %d %.100q", resp.StatusCode, b)
	}
	resp, err = http.Get("http://" + addr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("profiler on the client address: %d, want 404", resp.StatusCode)
	}
}

// --tls-cert and --tls-key serve HTTPS and wss://.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	addr := startServer(t, "--tls-cert", certFile, "--tls-key", keyFile)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	c := fclient.New("https://" + addr + "/ferry")
	c.HTTP = client
	c.Dialer = &websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	if err := c.Negotiate(context.Background()); err != nil || c.Session == "" {
		t.Fatalf("negotiate over TLS: %v", err)
	}
	stream, err := c.WebSocket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if hello := <-stream.Frames; hello.T != "hello" {
		t.Fatalf("wss hello: %+v %v", hello, stream.Err())
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("plain HTTP on a TLS listener: %d", resp.StatusCode)
		}
	}
}

// With --redis, /readyz follows Redis: it fails while Redis is down and recovers when it
// comes back.
func TestReadyzFollowsRedis(t *testing.T) {
	mr := miniredis.RunT(t)
	addr := startServer(t, "--redis", "redis://"+mr.Addr()+"/0")
	readyz := func() int {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor := func(want int) {
		t.Helper()
		await.Until(t, fmt.Sprintf("/readyz to answer %d", want), func() bool { return readyz() == want })
	}
	waitFor(200)
	mr.Close()
	waitFor(503)
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(200)
}

// --upstream-stream appends what clients send to a Redis stream for backends.
func TestUpstreamStream(t *testing.T) {
	mr := miniredis.RunT(t)
	addr := startServer(t, "--redis", "redis://"+mr.Addr()+"/0", "--upstream-stream", "app:in")
	c := fclient.New("http://" + addr + "/ferry")
	if err := c.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a resend is deduplicated: one entry
		if _, err := c.Send(context.Background(), map[string]any{"t": "send", "seq": 1, "d": map[string]any{"move": "e4"}}); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	entries, err := mr.Stream("app:in")
	if err != nil || len(entries) != 1 {
		t.Fatalf("stream entries %v %v, want 1", entries, err)
	}
	found := false
	for _, v := range entries[0].Values {
		found = found || strings.Contains(v, "e4")
	}
	if !found {
		t.Fatalf("entry %v has no payload", entries[0].Values)
	}
}

// Every session lifecycle event is one log line with the session id, the client's
// address and, once attached, the transport; credentials never appear.
func TestLifecycleLogs(t *testing.T) {
	mr := miniredis.RunT(t)
	var logs syncBuffer
	addr, _, _ := launch(t, &logs, "--redis", "redis://"+mr.Addr()+"/0", "--log-level", "info", "--log-format", "json",
		"--heartbeat", "200ms", "--session-ttl", "1s")
	base := "http://" + addr + "/ferry"
	ctx := context.Background()
	streaming, idle := fclient.New(base), fclient.New(base)
	for _, c := range []*fclient.Client{streaming, idle} {
		if err := c.Negotiate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	creds := []string{streaming.Session, idle.Session}
	if err := streaming.Negotiate(ctx); err != nil || !streaming.Resumed {
		t.Fatalf("resume: %v %+v", err, streaming.Negotiation)
	}
	creds = append(creds, streaming.Session)
	stream, err := streaming.WebSocket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if f := <-stream.Frames; f.T != "hello" {
		t.Fatalf("first frame %+v", f)
	}

	// Both sessions lapse in Redis, as if their clients had been away for the TTL. The
	// streaming one finds out at its next heartbeat, the idle one when it next sends.
	mr.FastForward(time.Minute)
	closed := closeFrame(stream)
	if closed.Code != 4005 {
		t.Fatalf("stream of an expired session ended with %+v, want 4005", closed)
	}
	if _, err := idle.Send(ctx, map[string]any{"t": "send", "seq": 1, "d": 1}); err == nil {
		t.Fatal("send of an expired session accepted")
	}
	await.Until(t, "detached logged", func() bool { return len(logs.find(t, "detached", streaming.SID)) == 1 })

	for _, want := range []struct {
		msg, sid, transport string
	}{
		{"session created", streaming.SID, ""},
		{"session created", idle.SID, ""},
		{"session resumed", streaming.SID, ""},
		{"attached", streaming.SID, "websocket"},
		{"session expired", streaming.SID, "websocket"},
		{"detached", streaming.SID, "websocket"},
		{"session expired", idle.SID, ""},
	} {
		lines := logs.find(t, want.msg, want.sid)
		if len(lines) != 1 {
			t.Errorf("%d lines %q for %s, want 1", len(lines), want.msg, want.sid)
			continue
		}
		rec := lines[0]
		if remote, _ := rec["remote"].(string); !strings.HasPrefix(remote, "127.0.0.1:") {
			t.Errorf("%q line has remote %q, want the client's address", want.msg, rec["remote"])
		}
		if want.transport != "" && rec["transport"] != want.transport {
			t.Errorf("%q line has transport %v, want %s", want.msg, rec["transport"], want.transport)
		}
	}
	for _, cred := range creds {
		if strings.Contains(logs.String(), cred) {
			t.Errorf("a session credential is in the logs")
		}
	}
}
