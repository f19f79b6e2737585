package main

import (
	"bufio"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge"
)

func TestHistQuantiles(t *testing.T) {
	var h hist
	vals := make([]time.Duration, 0, 10000)
	for range 10000 {
		v := time.Duration(rand.ExpFloat64()*20_000) * time.Microsecond
		vals = append(vals, v)
		h.Record(v)
	}
	// Sorting would do; counting below each candidate checks the same thing.
	for _, q := range []float64{0.5, 0.9, 0.99} {
		got := h.Quantile(q)
		below := 0
		for _, v := range vals {
			if v <= got {
				below++
			}
		}
		frac := float64(below) / float64(len(vals))
		if frac < q-0.01 || frac > q+0.01 {
			t.Errorf("Quantile(%v) = %v, but %.3f of the values are at or below it", q, got, frac)
		}
	}
	if h.Max() < h.Quantile(0.99) {
		t.Errorf("max %v below p99 %v", h.Max(), h.Quantile(0.99))
	}
}

func TestBuckets(t *testing.T) {
	prev := 0
	for v := uint64(0); v < 1<<40; v += max(1, v/200) {
		b := bucketOf(v)
		if b < prev || b > prev+1 {
			t.Fatalf("bucketOf(%d) = %d after bucket %d: not contiguous", v, b, prev)
		}
		lo, hi := bucketLow(b), bucketLow(b+1)
		if lo > v || hi <= v {
			t.Fatalf("value %d in bucket %d of [%d, %d)", v, b, lo, hi)
		}
		if v >= 128 && float64(hi-lo)/float64(v) > 1.0/64 {
			t.Fatalf("bucket %d of [%d, %d) wider than 1/64 of %d", b, lo, hi, v)
		}
		prev = b
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	b := appendPayload(nil, phaseBurst, seqBase(phaseBurst)+7, 1234567890123, 5)
	frames := [][]byte{
		append(append([]byte(`{"t":"msg","ch":"bench","ep":"abc","off":9,"d":`), b...), '}'),
		append(append([]byte(`42["msg",`), b...), ']'),
		b,
	}
	for _, f := range frames {
		ph, seq, ts, ok := payloadFields(f)
		if !ok || ph != phaseBurst || seq != seqBase(phaseBurst)+7 || ts != 1234567890123 {
			t.Errorf("payloadFields(%s) = %d %d %d %v", f, ph, seq, ts, ok)
		}
	}
	if _, _, _, ok := payloadFields([]byte(`{"t":"ping","seq":3,"ts":5}`)); ok {
		t.Error("a ping frame read as a payload")
	}
}

func TestSeqStateCountsDuplicatesNotReordering(t *testing.T) {
	var cs seqState
	base := seqBase(phaseRate)
	for _, s := range []uint64{3, 1, 2, 200, 5} {
		if !cs.first(phaseRate, base+s) {
			t.Fatalf("seq %d counted as a duplicate", s)
		}
	}
	if cs.first(phaseRate, base+2) {
		t.Fatal("seq 2 twice not counted as a duplicate")
	}
	if !cs.first(phaseBurst, seqBase(phaseBurst)+2) {
		t.Fatal("phases share their sequence numbers")
	}
}

func TestParseOptions(t *testing.T) {
	for _, bad := range [][]string{
		{"--target", "nats"},
		{"--target", "gorilla", "--transport", "sse"},
		{"--clients", strconv.Itoa(maxClients() + 1)}, // over the open-file limit
		{"--stall", "5", "--clients", "5"},
		{"--api-key", ""}, // ferry publishes by default: the key is needed
	} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("parseOptions(%q) accepted", bad)
		}
	}
	o, err := parseOptions([]string{"--target", "socketio", "--transport", "polling"}, io.Discard)
	if err != nil || o.label != "socketio/polling" {
		t.Fatalf("parseOptions: %v %+v", err, o)
	}
}

// smallRun returns options for a short run against u.
func smallRun(t *testing.T, u, target, transport string, stall int) *options {
	t.Helper()
	o, err := parseOptions([]string{
		"--url", u, "--target", target, "--transport", transport, "--api-key", "k",
		"--clients", "12", "--stall", strconv.Itoa(stall), "--rate", "40", "--duration", "250ms",
		"--burst", "20", "--settle", "50ms", "--drain", "3s", "--max-time", "30s",
		"--server-pid", strconv.Itoa(os.Getpid()), "--sources", "4",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// checkRun runs o and checks that every reader got every message exactly once.
func checkRun(t *testing.T, o *options) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := run(ctx, o, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if res.Connected != o.clients || res.ConnectErrors != 0 {
		t.Fatalf("connected %d of %d: %v", res.Connected, o.clients, res.Errors)
	}
	for name, p := range map[string]*PhaseResult{"steady": res.Steady, "burst": res.Burst} {
		if p == nil {
			t.Fatalf("no %s phase", name)
		}
		readers := int64(o.clients - o.stall)
		// With several channels each has its own readers: the caller checks Expected.
		if p.Readers != readers || p.Published == 0 || (o.channels == 1 && p.Expected != p.Published*readers) {
			t.Errorf("%s: published %d to %d readers, expected %d", name, p.Published, p.Readers, p.Expected)
		}
		if p.Delivered != p.Expected || p.Lost != 0 || p.Dups != 0 {
			t.Errorf("%s: delivered %d of %d, lost %d, dups %d; errors %v", name, p.Delivered, p.Expected, p.Lost, p.Dups, res.Errors)
		}
		if p.P99Ms <= 0 || p.MaxMs < p.P99Ms || p.DeliveriesPerSec <= 0 {
			t.Errorf("%s: implausible figures %+v", name, p)
		}
	}
	if res.RSSAfterKiB <= 0 {
		t.Errorf("no memory figure for a local server: %+v", res)
	}
	return res
}

func TestFerryTransports(t *testing.T) {
	srv, err := bridge.New(bridge.Config{APIKey: "k", PollHold: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Mount(mux)
	ts := httptest.NewServer(mux)
	defer ts.Close()
	defer srv.Shutdown(context.Background())
	for _, tr := range transports["ferry"] {
		t.Run(tr, func(t *testing.T) {
			stall := 0
			if tr == "websocket" {
				stall = 2 // stalled clients must not count as losses
			}
			checkRun(t, smallRun(t, ts.URL, "ferry", tr, stall))
		})
	}
}

func TestPeers(t *testing.T) {
	floor := httptest.NewServer(newFakeFloor())
	defer floor.Close()
	sio := newFakeSocketIO()
	sioSrv := httptest.NewServer(sio)
	defer sioSrv.Close()
	defer sio.shutdown()
	t.Run("gorilla", func(t *testing.T) { checkRun(t, smallRun(t, floor.URL, "gorilla", "websocket", 0)) })
	for _, tr := range transports["socketio"] {
		t.Run("socketio/"+tr, func(t *testing.T) {
			checkRun(t, smallRun(t, sioSrv.URL, "socketio", tr, 0))
			if tr == "polling" && sio.pongs.Load() == 0 {
				t.Error("no pong answered a ping")
			}
		})
	}
}

func TestRunReportsRefusedConnections(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	defer ts.Close()
	o := smallRun(t, ts.URL, "gorilla", "websocket", 0)
	res, err := run(context.Background(), o, io.Discard)
	if err == nil || res == nil || res.Connected != 0 || res.ConnectErrors != o.clients {
		t.Fatalf("run against a 404 server: %v %+v", err, res)
	}
}

func TestSplitFramesAndMsgFrame(t *testing.T) {
	body := []byte(`{"frames":[{"t":"sub","ch":"a","ep":"e1","off":0},{"t":"msg","ch":"a","ep":"e1","off":7,"d":{"s":"x,}]\"{","n":[1,2]}},{"t":"ping","seq":3}]}` + "\n")
	raw, err := splitFrames(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 3 {
		t.Fatalf("got %d frames %q, want 3", len(raw), raw)
	}
	ep, off, d, ok := msgFrame(raw[1])
	if !ok || ep != "e1" || off != 7 || string(d) != `{"s":"x,}]\"{","n":[1,2]}` {
		t.Fatalf("msgFrame = %q %d %q %v", ep, off, d, ok)
	}
	if _, _, _, ok := msgFrame(raw[0]); ok {
		t.Fatal("a sub frame read as a msg frame")
	}
	for _, bad := range []string{`{"frames":[{"t":"msg"]}`, `{"frames":[`, `[]`, `{"frames":["x]}`} {
		if _, err := splitFrames([]byte(bad)); err == nil {
			t.Errorf("splitFrames(%q) took a malformed answer", bad)
		}
	}
	if raw, err := splitFrames([]byte(`{"frames":[]}`)); err != nil || len(raw) != 0 {
		t.Fatalf("empty answer: %q %v", raw, err)
	}
}

func TestReadResponse(t *testing.T) {
	stream := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-type: text/plain\r\n\r\nhello" +
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n" +
		"HTTP/1.1 204 No Content\r\n\r\n" +
		"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nContent-Length: 2\r\n\r\nno"
	br := bufio.NewReader(strings.NewReader(stream))
	for i, want := range []struct {
		status  int
		body    string
		closing bool
	}{{200, "hello", false}, {200, "abcde", false}, {204, "", false}, {503, "no", true}} {
		status, body, closing, err := readResponse(br, http.MethodGet)
		if err != nil || status != want.status || string(body) != want.body || closing != want.closing {
			t.Fatalf("response %d: %d %q close=%v err=%v, want %d %q close=%v", i, status, body, closing, err, want.status, want.body, want.closing)
		}
	}
	if _, _, _, err := readResponse(bufio.NewReader(strings.NewReader("HTTP/1.1 2x\r\n\r\n")), http.MethodGet); err == nil {
		t.Fatal("a bad status line was taken")
	}
}
