package main

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

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
