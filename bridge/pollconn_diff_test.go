package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/transport"
)

// The differential tests send the same bytes to a connection the long-polling handler
// has taken over and to plain net/http (the same handlers, Handoff not served), and
// compare what comes back: status, the headers that matter, keep-alive, and so where the
// next pipelined request starts. Two servers share a broker and a secret, so that a
// session negotiated on one is valid on the other.

type diffPair struct {
	taken, plain *testServer
	takeOvers    *takeOverCounter
}

// takeOverCounter is a slog handler that counts the taken server's take-overs (its debug
// line), so that the test knows the path it compares was taken.
type takeOverCounter struct{ n atomic.Int64 }

func (c *takeOverCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *takeOverCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "poll connection taken over" {
		c.n.Add(1)
	}
	return nil
}
func (c *takeOverCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *takeOverCounter) WithGroup(string) slog.Handler      { return c }

func newDiffPair(t testing.TB) *diffPair {
	t.Helper()
	broker := memory.New(memory.Config{})
	t.Cleanup(func() { broker.Close() })
	cfg := Config{Secret: []byte("differential-test-secret-32-bytes!"), Broker: broker,
		AllowedOrigins: []string{"https://good.example"}, PollHold: 300 * time.Millisecond,
		Limits: transport.Limits{NegotiateRate: 1e6, NegotiateBurst: 1e6}}
	counter := &takeOverCounter{}
	takenCfg := cfg
	takenCfg.Logger = slog.New(counter)
	pair := &diffPair{taken: newTestServer(t, takenCfg), takeOvers: counter}
	plainCfg := cfg
	plainCfg.IO = transport.IOPlain // polls stay on net/http
	pair.plain = newTestServer(t, plainCfg)
	return pair
}

// answer is what the comparison looks at in one response.
type answer struct {
	Status                        int
	Code                          int // the JSON error body's code, if any
	AllowOrigin, AllowCredentials string
	Vary, ContentType, Cache      string
	Close                         bool
}

// exchange sends in on a new connection to ts after a poll that takes it over (where the
// Handoff is served), then a sentinel request that asks to close the connection, and
// returns every answer until the server closes, and whether it was still waiting for
// more of a request after wait.
func exchange(t testing.TB, ts *testServer, in string, wait time.Duration) (out []answer, waiting bool) {
	u, _ := url.Parse(ts.URL)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub := func(s string) string {
		if strings.Contains(s, "{SID}") {
			cl := fclient.New(ts.URL)
			if err := cl.Negotiate(context.Background()); err != nil {
				t.Fatal(err)
			}
			s = strings.ReplaceAll(s, "{SID}", url.QueryEscape(cl.Session))
		}
		return strings.NewReplacer("{HOST}", u.Host, "{BASE}", u.Path).Replace(s)
	}
	first := sub("GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
	sentinel := sub("GET {BASE}/poll?sentinel=1 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, first); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 401 {
		t.Fatalf("first poll: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	c.SetDeadline(time.Now().Add(wait))
	go func() {
		// In its own goroutine: a server that stops reading must not block the test.
		io.WriteString(c, sub(in)+sentinel)
	}()
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			var ne net.Error
			return out, errors.As(err, &ne) && ne.Timeout()
		}
		body, _ := io.ReadAll(resp.Body)
		var e struct{ Code int }
		json.Unmarshal(body, &e)
		h := resp.Header
		out = append(out, answer{resp.StatusCode, e.Code, strings.ReplaceAll(h.Get("Access-Control-Allow-Origin"), u.Host, "{HOST}"), h.Get("Access-Control-Allow-Credentials"),
			h.Get("Vary"), h.Get("Content-Type"), h.Get("Cache-Control"), resp.Close})
	}
}

// differ reports how the taken-over connection's answers to in differ from net/http's,
// or "" if they don't.
func (p *diffPair) differ(t testing.TB, in string) string {
	const wait = 2 * time.Second // for what a server that waits for more would answer
	taken, w1 := exchange(t, p.taken, in, wait)
	plain, w2 := exchange(t, p.plain, in, wait)
	if fmt.Sprint(taken, w1) != fmt.Sprint(plain, w2) {
		return fmt.Sprintf("\ntaken over: %+v (still waiting: %v)\nnet/http:   %+v (still waiting: %v)", taken, w1, plain, w2)
	}
	return ""
}

// diffCorpus: {HOST}, {BASE} and {SID} (a fresh session) are filled in per server.
var diffCorpus = []string{
	// Plain polls, alone and pipelined, same-origin and cross-origin.
	"GET {BASE}/poll?session={SID}&cursor=&hold=0 HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?session={SID}&cursor=&hold=0 HTTP/1.1\r\nHost: {HOST}\r\nOrigin: https://good.example\r\n\r\n",
	"GET {BASE}/poll?session={SID}&cursor=&hold=0 HTTP/1.1\r\nHost: {HOST}\r\nOrigin: http://{HOST}\r\n\r\n",
	"GET {BASE}/poll?session={SID}&cursor=&hold=0 HTTP/1.1\r\nHost: {HOST}\r\nOrigin: https://evil.example\r\n\r\n",
	"GET {BASE}/poll?session=bogus&cursor= HTTP/1.1\r\nHost: {HOST}\r\nOrigin: https://good.example\r\n\r\n",
	"GET {BASE}/poll?x=2 HTTP/1.1\r\nHost: {HOST}\r\nOrigin: https://good.example\r\n\r\n",
	"GET {BASE}/poll?session={SID}&cursor=&hold=0 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n",
	"GET {BASE}/poll?session={SID}&cursor=&hold=0 HTTP/1.1\r\nHost: {HOST}\r\n\r\nGET {BASE}/poll?session={SID}&cursor=&hold=0 HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\nGET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\nGET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?session={SID}&cursor=&hold=0 HTTP/1.1\r\nHost: {HOST}\r\n\r\nPOST {BASE}/send?session={SID} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"frames\":[]}",
	"OPTIONS {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nOrigin: https://good.example\r\nAccess-Control-Request-Method: GET\r\n\r\n",
	"POST {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n\r\n",
	"get {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	// Bodies and their framing: Content-Length and Transfer-Encoding mixed and repeated.
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0, 0\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: +0\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: -1\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n0\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: identity\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: xchunked\r\n\r\n",
	// Header syntax: obs-fold, bare LF, bare CR, control bytes, bad names.
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nX-A: b\r\n c\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n 5\r\n\r\nhello",
	"GET {BASE}/poll?x=1 HTTP/1.1\nHost: {HOST}\n\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\nX-A: b\r\n\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nX-A: b\rc\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nX-A: a\x00b\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nX\x7fA: b\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nBad Name: b\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost : {HOST}\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nno colon\r\n\r\n",
	"GET {BASE}/poll?x=\x01 HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	// Host.
	"GET {BASE}/poll?x=1 HTTP/1.1\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost:\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nHost: other.example\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nhost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: a b\r\n\r\n",
	// Oversized: a request line and a header longer than the taken-over reader's 64 KiB.
	"GET {BASE}/poll?x=" + strings.Repeat("a", 70<<10) + " HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nX-Pad: " + strings.Repeat("a", 70<<10) + "\r\n\r\n",
	// Expectations.
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nExpect: 100-continue\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nExpect: foo\r\n\r\n",
	"GET {BASE}/poll?session={SID}&cursor=&hold=0 HTTP/1.1\r\nHost: {HOST}\r\nExpect: foo\r\n\r\n",
	// Versions.
	"GET {BASE}/poll?session={SID}&cursor=&hold=0 HTTP/1.0\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?session={SID}&cursor=&hold=0 HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/2.0\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/0.9\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.2\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.10\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?x=1 http/1.1\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?x=1\r\nHost: {HOST}\r\n\r\n",
	// Targets and request lines.
	"GET http://{HOST}{BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	"GET http://other.example{BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	"GET  {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?x=1  HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1 \r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll\tHTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	"\r\nGET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nConnection: keep-alive, close\r\n\r\n",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	// Incomplete: the client stops (and half-closes) mid-request.
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HO",
	"GET {BASE}/poll?x=1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 10\r\n\r\nabc",
}

func TestTakenOverMatchesNetHTTP(t *testing.T) {
	pooledOnly(t)
	needTakeOver(t)
	p := newDiffPair(t)
	for i, in := range diffCorpus {
		if d := p.differ(t, in); d != "" {
			t.Errorf("case %d %.120q: %s", i, in, d)
		}
	}
	// Every exchange with the taken server began with a poll that took its connection over.
	if n := p.takeOvers.n.Load(); n < int64(len(diffCorpus)) {
		t.Fatalf("%d take-overs for %d cases: the comparison did not run on taken-over connections", n, len(diffCorpus))
	}
}

// FuzzTakenOverMatchesNetHTTP is TestTakenOverMatchesNetHTTP with generated bytes.
func FuzzTakenOverMatchesNetHTTP(f *testing.F) {
	needTakeOver(f)
	for _, in := range diffCorpus {
		if len(in) < 4096 {
			f.Add([]byte(in))
		}
	}
	p := newDiffPair(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		if bytes.Contains(in, []byte("{SID}")) && bytes.Count(in, []byte("{SID}")) > 4 {
			return // each is a negotiation
		}
		if d := p.differ(t, string(in)); d != "" {
			t.Errorf("%.200q: %s", in, d)
		}
	})
}
