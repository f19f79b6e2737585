package bridge

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
)

// Traffic over each transport moves the counters by what the traffic did.
func TestMetricsFollowTraffic(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			// A long-poll attachment stays connected for PollLinger after its last poll (10 s
			// by default, as long as waitUntil waits): short here, so its end is seen.
			ts := newTestServer(t, Config{Metrics: reg, PollLinger: 200 * time.Millisecond})
			m := ts.metrics
			c := ts.client(t)
			ts.publish(t, "room:m", 0)
			c.Subscribe("room:m", "gone.1") // an epoch history no longer has: a reset
			c.Subscribe("live", "")
			a := attach(t, c, tr)
			a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "sub" })
			for i := range 10 {
				ts.publish(t, "live", i)
			}
			for n := 0; n < 10; {
				if a.next(t, 5*time.Second).T == "msg" {
					n++
				}
			}
			c.Send(context.Background(), map[string]any{"t": "send", "seq": 1, "d": 1})
			c.Send(context.Background(), map[string]any{"t": "send", "seq": 1, "d": 1})
			a.close()

			if got := testutil.ToFloat64(m.negotiations.WithLabelValues("new")); got != 1 {
				t.Errorf("negotiations %v", got)
			}
			if got := testutil.ToFloat64(m.resets); got != 1 {
				t.Errorf("resets %v", got)
			}
			if got := testutil.ToFloat64(m.resumes); got < 1 {
				t.Errorf("resumes %v", got)
			}
			// hello, sub, reset and 10 messages at least.
			if got := testutil.ToFloat64(m.framesOut.WithLabelValues(tr)); got < 13 {
				t.Errorf("frames out on %s: %v", tr, got)
			}
			if got := testutil.ToFloat64(m.bytesOut.WithLabelValues(tr)); got < 200 {
				t.Errorf("bytes out on %s: %v", tr, got)
			}
			if got := testutil.ToFloat64(m.upstream.WithLabelValues("ok")); got != 1 {
				t.Errorf("upstream ok %v", got)
			}
			if got := testutil.ToFloat64(m.upstream.WithLabelValues("duplicate")); got != 1 {
				t.Errorf("dedupe hits %v", got)
			}
			if got := testutil.ToFloat64(m.framesIn.WithLabelValues("http")); got != 2 {
				t.Errorf("frames in %v", got)
			}
			if got := testutil.CollectAndCount(m.publishSeconds); got != 1 {
				t.Errorf("publish histogram series %d", got)
			}
			if tr == "longpoll" && testutil.ToFloat64(m.polls.WithLabelValues("data")) < 1 {
				t.Errorf("poll outcomes not counted")
			}
			await.Until(t, `testutil.ToFloat64(m.connections.WithLabelValues(tr)) == 0`, func() bool { return testutil.ToFloat64(m.connections.WithLabelValues(tr)) == 0 })
		})
	}
}

func TestMetricsSwitchesAndRejections(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, Config{Metrics: reg, AllowedOrigins: []string{"https://ok.example"}})
	c := ts.client(t)
	// The client reports what it left and why.
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/poll?hello=1&from=websocket&reason=proof-timeout&session="+c.Session, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := testutil.ToFloat64(ts.metrics.switches.WithLabelValues("websocket", "longpoll", "proof-timeout")); got != 1 {
		t.Errorf("switches %v", got)
	}
	req, _ = http.NewRequest(http.MethodGet, ts.URL+"/poll?session=x", nil)
	req.Header.Set("Origin", "https://evil.example")
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	resp, _ = http.Get(ts.URL + "/poll?session=forged")
	resp.Body.Close()
	if got := testutil.ToFloat64(ts.metrics.rejected.WithLabelValues("origin")); got != 1 {
		t.Errorf("origin rejections %v", got)
	}
	if got := testutil.ToFloat64(ts.metrics.rejected.WithLabelValues("session")); got != 1 {
		t.Errorf("session rejections %v", got)
	}
	if n, err := testutil.GatherAndCount(reg, "ferry_broker_ready", "ferry_sessions", "ferry_queue_frames"); err != nil || n != 3 {
		t.Errorf("gauges: %d %v", n, err)
	}
}

// An upstream frame over its session's rate is refused by the session layer; the
// metrics count it with the transports' refusals, as rejected{reason="rate"}, and not
// as an upstream outcome.
func TestMetricsUpstreamRateLimited(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, Config{Metrics: reg, UpstreamRate: 0.001, UpstreamBurst: 1})
	c := ts.client(t)
	acks, err := c.Send(context.Background(),
		map[string]any{"t": "send", "seq": 1, "d": 1}, map[string]any{"t": "send", "seq": 2, "d": 2})
	if err != nil || len(acks) != 2 || acks[1].Err == nil {
		t.Fatalf("acks %+v %v: want the second refused", acks, err)
	}
	if got := testutil.ToFloat64(ts.metrics.rejected.WithLabelValues("rate")); got != 1 {
		t.Errorf("rate rejections %v, want 1", got)
	}
	if got := testutil.ToFloat64(ts.metrics.upstream.WithLabelValues("ok")); got != 1 {
		t.Errorf("upstream ok %v, want 1", got)
	}
	if n := testutil.CollectAndCount(ts.metrics.upstream); n != 1 {
		t.Errorf("%d upstream outcome series, want only ok", n)
	}
}
