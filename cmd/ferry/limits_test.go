package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrt/ferry/internal/fclient"
)

// With default flags, one address (an office behind NAT, a reconnect storm after a
// restart) is not refused: 300 negotiations at once from 127.0.0.1 all succeed.
func TestDefaultsAdmitOneAddressCrowd(t *testing.T) {
	addr := startServer(t)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	defer hc.Transport.(*http.Transport).CloseIdleConnections()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		refused = map[string]int{}
	)
	next := make(chan int)
	for range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				c := fclient.New("http://" + addr + "/ferry")
				c.HTTP = hc
				if err := c.Negotiate(context.Background()); err != nil {
					mu.Lock()
					refused[err.Error()]++
					mu.Unlock()
				}
			}
		}()
	}
	for i := range 300 {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(refused) > 0 {
		t.Fatalf("300 negotiations from one address with default flags: refused %v", refused)
	}
}

// A per-address limit behind a proxy whose X-Forwarded-For is not trusted counts every
// client as the proxy: the node says so in its log, once, and only then.
func TestProxyWarning(t *testing.T) {
	const warning = "but --trust-forwarded-for is off"
	for _, tc := range []struct {
		name   string
		args   []string
		header http.Header
		want   int
	}{
		{"limit, proxy", []string{"--max-conns-per-ip", "5000"}, http.Header{"X-Forwarded-For": {"203.0.113.7"}}, 1},
		{"rate, proxy (Forwarded)", []string{"--negotiate-rate", "100"}, http.Header{"Forwarded": {"for=203.0.113.7"}}, 1},
		{"limit, no proxy", []string{"--max-conns-per-ip", "5000"}, nil, 0},
		{"limit, trusted proxy", []string{"--max-conns-per-ip", "5000", "--trust-forwarded-for"}, http.Header{"X-Forwarded-For": {"203.0.113.7"}}, 0},
		{"defaults, proxy", nil, http.Header{"X-Forwarded-For": {"203.0.113.7"}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log syncBuffer
			addr, _, _ := launch(t, &log, append([]string{"--log-level", "info"}, tc.args...)...)
			for range 5 {
				c := fclient.New("http://" + addr + "/ferry")
				c.Header = tc.header
				if err := c.Negotiate(context.Background()); err != nil {
					t.Fatal(err)
				}
				s, err := c.SSE(context.Background(), "")
				if err != nil {
					t.Fatal(err)
				}
				<-s.Frames
				s.Close()
			}
			if got := strings.Count(log.String(), warning); got != tc.want {
				t.Fatalf("warning %d times, want %d:\n%s", got, tc.want, log.String())
			}
		})
	}
}

// A client that sends its headers slowly is cut after --header-timeout; others are served
// meanwhile.
func TestSlowlorisCut(t *testing.T) {
	addr := startServer(t, "--header-timeout", "300ms")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")) // and never the blank line
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("another client during the slow one: %v %v", resp, err)
	}
	resp.Body.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(conn) // returns when the server closes the connection
	if err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("slow client not cut: %v after %v", err, time.Since(start))
	}
}

// --max-sessions bounds the in-memory broker's live sessions: beyond it a negotiation is
// refused with 503 and code 4000 (try another node), counted as a limit.
func TestMaxSessions(t *testing.T) {
	addr := startServer(t, "--max-sessions", "2")
	for i := range 3 {
		c := fclient.New("http://" + addr + "/ferry")
		err := c.Negotiate(context.Background())
		if i < 2 {
			if err != nil {
				t.Fatalf("negotiation %d: %v", i+1, err)
			}
			continue
		}
		var he *fclient.HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || he.Code != 4000 {
			t.Fatalf("negotiation over --max-sessions: %v, want 503 with code 4000", err)
		}
	}
	m := scrape(t, addr)
	if got := m.get("ferry_rejected_total", "reason", "limit"); got != 1 {
		t.Errorf("ferry_rejected_total{reason=limit} = %v, want 1", got)
	}
	if got := m.get("ferry_sessions"); got != 2 {
		t.Errorf("ferry_sessions = %v, want 2", got)
	}
}
