package bridge

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/transport"
)

// The dashboard stream's own events (PROTOCOL.md §5).
const (
	eventReset = "reset"
	eventClose = "close"
)

// event is one event of a dashboard stream.
type event struct{ id, name, data string }

func parseEvent(b []byte) (e event) {
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		switch k {
		case "id":
			e.id = v
		case "event":
			e.name = v
		case "data":
			e.data = v
		}
	}
	return e
}

// openEvents opens GET /events and returns its events on a channel.
func openEvents(t *testing.T, u string, lastID string) (<-chan event, *http.Response, func()) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	return openEventsReq(t, http.DefaultClient, req, false)
}

// openEventsReq sends req with c and, for a 200, delivers the stream's events that carry
// data (and, with ids, also the id-only ones that mark a position) until the returned
// func is called. Another status leaves the body unread for the caller.
func openEventsReq(t *testing.T, c *http.Client, req *http.Request, ids bool) (<-chan event, *http.Response, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(req.Context())
	resp, err := c.Do(req.WithContext(ctx))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ch := make(chan event, 1024)
	if resp.StatusCode != http.StatusOK {
		close(ch)
		return ch, resp, func() { cancel(); resp.Body.Close() }
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		r := sse.NewEventStreamReader(resp.Body, 1<<20)
		for {
			b, err := r.ReadEvent()
			if err != nil {
				return
			}
			if e := parseEvent(b); e.data != "" || (ids && e.id != "") {
				ch <- e
			}
		}
	}()
	return ch, resp, func() { cancel(); resp.Body.Close(); <-done }
}

func nextEvent(t *testing.T, ch <-chan event) event {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("stream ended")
		}
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return event{}
}

// One stream carries several channels; its ids resume all of them at once.
func TestEventsSeveralChannelsResume(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode transport.IOMode) {
		ts := newTestServer(t, Config{IO: mode})
		u := ts.URL + "/events?channel=a&channel=b"
		ch, resp, stop := openEvents(t, u, "")
		if got := resp.Header.Get("Content-Type"); !strings.HasPrefix(got, "text/event-stream") ||
			resp.Header.Get("X-Accel-Buffering") != "no" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("headers %v", resp.Header)
		}
		await.Until(t, `ts.hub.Channels() == 2`, func() bool { return ts.hub.Channels() == 2 })
		ts.publish(t, "a", 1)
		ts.publish(t, "b", 2)
		e1, e2 := nextEvent(t, ch), nextEvent(t, ch)
		if e1.name != "a" || e1.data != "1" || e2.name != "b" || e2.data != "2" {
			t.Fatalf("events %+v %+v", e1, e2)
		}
		stop()
		// Missed while disconnected, on both channels.
		ts.publish(t, "a", 3)
		ts.publish(t, "b", 4)
		ts.publish(t, "a", 5)
		ch, _, stop = openEvents(t, u, e2.id)
		defer stop()
		// Order is per channel: each channel resumes from its own history.
		got := map[string][]string{}
		for range 3 {
			e := nextEvent(t, ch)
			got[e.name] = append(got[e.name], e.data)
		}
		if strings.Join(got["a"], ",") != "3,5" || strings.Join(got["b"], ",") != "4" {
			t.Fatalf("resumed with %v", got)
		}
	})
}

// The r3labs/sse Go client rides through cut connections and resumes by Last-Event-ID
// with no gap and no duplicate.
func TestEventsGoClientResumesAcrossCuts(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode transport.IOMode) {
		ts := newTestServer(t, Config{IO: mode, Heartbeat: time.Second, SessionTTL: 10 * time.Second})
		client := sse.NewClient(ts.URL + "/events?channel=ticker")
		ctx, cancel := context.WithCancel(context.Background())
		// Quick reconnects, and bound to ctx: the library's default backoff ignores
		// cancellation and would keep the test waiting for up to a minute per retry.
		b := backoff.NewExponentialBackOff()
		b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 20*time.Millisecond, 500*time.Millisecond, 0
		client.ReconnectStrategy = backoff.WithContext(b, ctx)
		got := make(chan int, 1024)
		done := make(chan error, 1)
		go func() {
			done <- client.SubscribeRawWithContext(ctx, func(m *sse.Event) {
				if string(m.Event) == "ticker" {
					n, _ := strconv.Atoi(string(m.Data))
					got <- n
				}
			})
		}()
		defer func() {
			cancel()
			ts.http.CloseClientConnections()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("the SSE client did not stop after cancel")
			}
		}()
		await.Until(t, `ts.hub.Channels() == 1`, func() bool { return ts.hub.Channels() == 1 })

		const n = 300
		next := 0
		for i := range n {
			ts.publish(t, "ticker", i)
			if i%100 == 50 {
				// Cut every connection; the client reconnects with Last-Event-ID.
				for next <= i {
					if v := <-got; v != next {
						t.Fatalf("got %d, want %d", v, next)
					}
					next++
				}
				ts.http.CloseClientConnections()
			}
		}
		for next < n {
			select {
			case v := <-got:
				if v != next {
					t.Fatalf("got %d, want %d", v, next)
				}
				next++
			case <-time.After(10 * time.Second):
				t.Fatalf("stuck after %d", next)
			}
		}
	})
}

// A resume behind history gets a reset event; bad Last-Event-ID values get a clear 400,
// and positions of channels outside the query are ignored.
func TestEventsResetAndBadIDs(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode transport.IOMode) {
		ts := newTestServer(t, Config{IO: mode, History: HistoryConfig{Size: 5}})
		pos, _ := ts.Publish(context.Background(), "a", 0)
		for i := 1; i < 20; i++ {
			ts.publish(t, "a", i)
		}
		ch, _, stop := openEvents(t, ts.URL+"/events?channel=a", "a="+pos.String())
		e := nextEvent(t, ch)
		stop()
		var reset struct {
			Channel string `json:"channel"`
			Offset  uint64 `json:"offset"`
		}
		json.Unmarshal([]byte(e.data), &reset)
		if e.name != "reset" || reset.Channel != "a" || reset.Offset != 20 || e.id != "a="+pos.Epoch+".20" {
			t.Fatalf("got %+v, want a reset to offset 20", e)
		}

		for _, bad := range []string{"garbage", "a=x", "a=" + strings.Repeat("z", 20) + ".1", strings.Repeat("a=,", 500)} {
			req, _ := http.NewRequest(http.MethodGet, ts.URL+"/events?channel=a", nil)
			req.Header.Set("Last-Event-ID", bad)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(string(body), "Last-Event-ID") {
				t.Errorf("Last-Event-ID %.30q: %d %s", bad, resp.StatusCode, body)
			}
		}
		// b's position in the id must not open b: the query decides the stream.
		ts.publish(t, "b", "secret")
		ch, _, stop = openEvents(t, ts.URL+"/events?channel=a", "b="+pos.Epoch+".0")
		defer stop()
		await.Until(t, `ts.hub.Channels() == 1`, func() bool { return ts.hub.Channels() == 1 })
		ts.publish(t, "a", "x")
		if e := nextEvent(t, ch); e.name != "a" {
			t.Fatalf("got %+v", e)
		}
		for _, q := range []string{"", "?channel=bad%20name", "?channel=$session:x"} {
			resp, err := http.Get(ts.URL + "/events" + q)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 400 && resp.StatusCode != 403 {
				t.Errorf("%q: status %d", q, resp.StatusCode)
			}
		}
	})
}

func TestHistoryAPI(t *testing.T) {
	ts := newTestServer(t, Config{History: HistoryConfig{Size: 50}})
	first, _ := ts.Publish(context.Background(), "c", 0)
	for i := 1; i < 80; i++ {
		ts.publish(t, "c", i)
	}
	get := func(q string) (HistoryResponse, int) {
		resp, err := http.Get(ts.URL + "/api/history?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h HistoryResponse
		json.NewDecoder(resp.Body).Decode(&h)
		return h, resp.StatusCode
	}
	offsets := func(h HistoryResponse) (lo, hi uint64) {
		return h.Messages[0].Offset, h.Messages[len(h.Messages)-1].Offset
	}
	h, _ := get("channel=c&limit=10")
	if lo, hi := offsets(h); lo != 71 || hi != 80 || h.Reset || h.More || h.Top != 80 {
		t.Fatalf("latest 10: %d..%d %+v", lo, hi, h)
	}
	h, _ = get("channel=c&limit=5&since=" + url.QueryEscape(first.Epoch+".60"))
	if lo, hi := offsets(h); lo != 61 || hi != 65 || !h.More || h.Reset {
		t.Fatalf("since 60: %d..%d %+v", lo, hi, h)
	}
	if string(h.Messages[0].Data) != "60" {
		t.Fatalf("payload %s", h.Messages[0].Data)
	}
	h, _ = get("channel=c&limit=1000&since=" + first.String())
	if lo, hi := offsets(h); lo != 31 || hi != 80 || !h.Reset {
		t.Fatalf("since an offset older than history: %d..%d reset=%v", lo, hi, h.Reset)
	}
	h, _ = get("channel=c&since=other.3")
	if !h.Reset || len(h.Messages) != 50 {
		t.Fatalf("other epoch: reset=%v, %d messages", h.Reset, len(h.Messages))
	}
	for _, q := range []string{"", "channel=bad%20name", "channel=c&limit=0", "channel=c&limit=1001", "channel=c&limit=x", "channel=c&since=nodot", "channel=$session:abc"} {
		if _, status := get(q); status != 400 && status != 403 {
			t.Errorf("%q: status %d", q, status)
		}
	}
}

// The stream names its starting position at once, so a cut before the first message
// resumes from there; and a drain ends open streams instead of waiting for them.
func TestEventsStartingIDAndDrain(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode transport.IOMode) {
		ts := newTestServer(t, Config{IO: mode})
		ts.publish(t, "a", 1)
		resp, err := http.Get(ts.URL + "/events?channel=a")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := sse.NewEventStreamReader(resp.Body, 1<<20)
		for {
			b, err := r.ReadEvent()
			if err != nil {
				t.Fatal(err)
			}
			if e := parseEvent(b); e.id != "" {
				if e.data != "" || !strings.HasSuffix(e.id, ".1") {
					t.Fatalf("first id event %+v, want an id-only event at offset 1", e)
				}
				break
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Fatalf("drain with an open stream: %v", err)
		}
		for {
			b, err := r.ReadEvent()
			if err != nil {
				t.Fatal("stream ended without a close event")
			}
			if e := parseEvent(b); e.name == "close" {
				if !strings.Contains(e.data, "4003") {
					t.Fatalf("close event %+v", e)
				}
				break
			}
		}
	})
}

// Both I/O modes answer a dashboard stream with the same headers and the same bytes
// (DESIGN invariant 11), as TestSSEModesAnswerTheSameBytes checks for /sse: pooled, the
// stream is written on the hijacked connection; plain, by net/http. Only the channel's
// epoch (each server has a broker of its own) differs, and is masked.
func TestEventsModesAnswerTheSameBytes(t *testing.T) {
	pooledOnly(t)
	epoch := regexp.MustCompile(`=([0-9a-z]+)\.`)
	stream := func(mode transport.IOMode) (*http.Response, string) {
		ts := newTestServer(t, Config{IO: mode, Heartbeat: time.Minute})
		ts.publish(t, "room:diff", "before")
		resp, err := http.Get(ts.URL + "/events?channel=room:diff&channel=room:other")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		var out strings.Builder
		blocks := 0
		read := func(n int) {
			for blocks < n {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("%s: after %q: %v", mode, out.String(), err)
				}
				out.WriteString(line)
				if line == "\n" {
					blocks++
				}
			}
		}
		read(3) // the prelude and the starting positions
		ts.publish(t, "room:diff", map[string]any{"n": 1, "s": "a\nb"})
		ts.publish(t, "room:other", "two")
		if _, err := ts.Publish(context.Background(), "room:diff", []byte(`[3, {"x": null}]`)); err != nil {
			t.Fatal(err)
		}
		read(6)
		s := out.String()
		for _, m := range epoch.FindAllStringSubmatch(s, -1) {
			s = strings.ReplaceAll(s, m[1], "<epoch>")
		}
		return resp, s
	}
	pooled, pooledBody := stream(transport.IOPooled)
	plain, plainBody := stream(transport.IOPlain)
	if pooledBody != plainBody {
		t.Errorf("event streams differ:\npooled: %q\nplain:  %q", pooledBody, plainBody)
	}
	if !strings.Contains(pooledBody, "event: room:diff\ndata: [3,{\"x\":null}]\n\n") {
		t.Errorf("stream %q lacks the compacted payload", pooledBody)
	}
	if pooled.StatusCode != plain.StatusCode {
		t.Errorf("status %d pooled, %d plain", pooled.StatusCode, plain.StatusCode)
	}
	for _, h := range []string{"Content-Type", "Cache-Control", "X-Accel-Buffering"} {
		if a, b := pooled.Header.Values(h), plain.Header.Values(h); !slices.Equal(a, b) {
			t.Errorf("%s: %q pooled, %q plain", h, a, b)
		}
	}
	// The two really took different paths: the hijacked stream ends with its connection.
	if !pooled.Close || plain.Close {
		t.Errorf("Connection: close pooled %v, plain %v; want the pooled stream hijacked and the plain one served by net/http", pooled.Close, plain.Close)
	}
}

// A dashboard stream outlives the http.Server's ReadTimeout and WriteTimeout, as the
// transports' streams do (TestStreamsOutliveServerTimeouts): its heartbeats keep coming
// and it keeps delivering, in both I/O modes.
func TestEventsOutliveServerTimeouts(t *testing.T) {
	forEachIO(t, func(t *testing.T, mode transport.IOMode) {
		ts := newTestServerWith(t, Config{IO: mode, Heartbeat: 100 * time.Millisecond}, func(hs *http.Server) {
			hs.ReadTimeout = 300 * time.Millisecond
			hs.WriteTimeout = 300 * time.Millisecond
		})
		resp, err := http.Get(ts.URL + "/events?channel=room:t")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		// Ten heartbeats span more than three ReadTimeouts.
		for pings := 0; pings < 10; {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("stream ended after %d pings: %v", pings, err)
			}
			if strings.HasPrefix(line, ": ping ") {
				pings++
			}
		}
		ts.publish(t, "room:t", "still here")
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("after the timeouts: %v", err)
			}
			if line == "data: \"still here\"\n" {
				return
			}
		}
	})
}
