package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
)

// BenchmarkPollCycle is the server's whole cost of one long-poll that finds a message
// waiting, as under load every poll does: credential check, session touch, cursor parse,
// attach and subscribe, the history read, the answer, detach. Long-polling pays it once
// per client per answer, so it bounds deliveries per CPU second on that transport.
func BenchmarkPollCycle(b *testing.B) {
	srv, err := New(Config{APIKey: "k"})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	ctx := context.Background()
	// Under load a channel always has other subscribers: keep one, so that the hub does
	// not drop and re-create the channel on every poll, which only a lone client causes.
	unsub, err := srv.hub.Subscribe(ctx, "bench", &countingDeliverer{})
	if err != nil {
		b.Fatal(err)
	}
	defer unsub()

	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/ferry/negotiate", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	srv.ServeHTTP(rec, req)
	var n struct {
		Session string `json:"session"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &n); err != nil || n.Session == "" {
		b.Fatalf("negotiate: %d %s", rec.Code, rec.Body)
	}
	pos, err := srv.Publish(ctx, "bench", brokertest.BenchPayload)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		q := url.Values{"session": {n.Session}, "cursor": {"bench=" + pos.String()}}
		if pos, err = srv.Publish(ctx, "bench", brokertest.BenchPayload); err != nil {
			b.Fatal(err)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ferry/poll?"+q.Encode(), nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"t":"msg"`) {
			b.Fatalf("poll: %d %s", rec.Code, rec.Body)
		}
	}
}
