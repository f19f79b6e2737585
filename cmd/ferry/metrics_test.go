package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
)

// metricSet is a scrape of /metrics: every sample by name and labels, the labels sorted,
// as in ferry_frames_out_total{transport="sse"}. Histograms give name_count and name_sum.
type metricSet map[string]float64

// scrape fetches and parses /metrics of the server at addr.
func scrape(t *testing.T, addr string) metricSet {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	set := metricSet{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var pairs []string
			for _, l := range m.GetLabel() {
				pairs = append(pairs, l.GetName(), l.GetValue())
			}
			switch {
			case m.Counter != nil:
				set[metricKey(name, pairs...)] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				set[metricKey(name, pairs...)] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				set[metricKey(name+"_count", pairs...)] = float64(m.GetHistogram().GetSampleCount())
				set[metricKey(name+"_sum", pairs...)] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return set
}

// metricKey names a series: name and label pairs (name, value, name, value...).
func metricKey(name string, pairs ...string) string {
	if len(pairs) == 0 {
		return name
	}
	labels := make([]string, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		labels = append(labels, pairs[i]+"="+strconv.Quote(pairs[i+1]))
	}
	slices.Sort(labels)
	return name + "{" + strings.Join(labels, ",") + "}"
}

// get returns the value of one series; a series not exported counts as 0, as
// Prometheus's rate() treats a counter that has not started.
func (s metricSet) get(name string, pairs ...string) float64 { return s[metricKey(name, pairs...)] }

// sum adds up every series of name whose labels include pairs.
func (s metricSet) sum(name string, pairs ...string) float64 {
	var want []string
	for i := 0; i+1 < len(pairs); i += 2 {
		want = append(want, pairs[i]+"="+strconv.Quote(pairs[i+1]))
	}
	total := 0.0
series:
	for k, v := range s {
		rest, ok := strings.CutPrefix(k, name)
		if !ok || (rest != "" && rest[0] != '{') {
			continue
		}
		labels := strings.Split(strings.Trim(rest, "{}"), ",")
		for _, p := range want {
			if !slices.Contains(labels, p) {
				continue series
			}
		}
		total += v
	}
	return total
}

// Traffic over each transport of the running binary, read back from /metrics: every
// counter moves by what the traffic did, under the transport's label, with either --io.
func TestMetricsEndpointFollowsTraffic(t *testing.T) {
	const published = 5
	upstream := `{"t":"send","seq":1,"d":{"move":"e4"}}`
	for _, run := range []struct{ tr, io string }{
		{"websocket", "pooled"}, {"sse", "pooled"}, {"longpoll", "pooled"},
		{"websocket", "plain"}, {"sse", "plain"}, {"longpoll", "plain"},
	} {
		tr := run.tr
		t.Run(tr+"/"+run.io, func(t *testing.T) {
			// No heartbeat within the test, and no lingering polls: every frame is the
			// traffic's, and every poll is an attachment.
			addr := startServer(t, "--api-key", "k", "--heartbeat", "1m", "--session-ttl", "5m", "--poll-linger", "0", "--io", run.io)
			c := fclient.New("http://" + addr + "/ferry")
			if err := c.Negotiate(context.Background()); err != nil {
				t.Fatal(err)
			}
			c.Subscribe("news", "")
			c.Subscribe("$session:"+c.SID, "") // where the echo service answers
			var d *downstream
			switch tr {
			case "websocket":
				d = attachWebSocket(t, c)
			case "sse":
				d = attachSSE(t, c)
			case "longpoll":
				d = attachLongPoll(t, c)
			}
			for subs := 0; subs < 2; {
				if f := d.next(); f.T == "sub" {
					subs++
				}
			}

			// Publish once the node holds a connection for the session: a stream, or a
			// held poll (which the publish then answers).
			publisher := make(chan struct{})
			go func() {
				defer close(publisher)
				if !await.Holds(t, fmt.Sprintf("ferry_connections{transport=%q} to be 1", tr), func() bool {
					return scrape(t, addr).get("ferry_connections", "transport", tr) == 1
				}) {
					return
				}
				for i := range published {
					apiPublish(t, addr, "news", i)
				}
			}()
			for n := 0; n < published; {
				if f := d.next(); f.T == "msg" && f.Ch == "news" {
					n++
				}
			}
			<-publisher

			// An upstream message, then its resend: one reaches the echo service, which
			// answers on the session's channel; the other is a dedupe hit.
			d.send(upstream)
			d.send(upstream)
			in := "http" // POST <base>/send
			if tr == "websocket" {
				in = "websocket"
			}
			for acks, echoed := 0, false; !echoed || (tr == "websocket" && acks < 2); {
				switch f := d.next(); {
				case f.T == "ack":
					acks++
				case f.T == "msg" && f.Ch == "$session:"+c.SID:
					echoed = true
				}
			}

			m := scrape(t, addr)
			check := func(what string, got, want float64) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %v, want %v", what, got, want)
				}
			}
			attachments := 1.0
			if tr == "longpoll" {
				attachments = float64(d.polls)
			}
			check("ferry_negotiations_total{result=new}", m.get("ferry_negotiations_total", "result", "new"), 1)
			check("ferry_negotiations_total", m.sum("ferry_negotiations_total"), 1)
			check("ferry_sessions", m.get("ferry_sessions"), 1)
			check("ferry_attachments_total{transport}", m.get("ferry_attachments_total", "transport", tr), attachments)
			check("ferry_attachments_total", m.sum("ferry_attachments_total"), attachments)
			check("ferry_frames_out_total{transport}", m.get("ferry_frames_out_total", "transport", tr), float64(d.frames))
			check("ferry_frames_out_total", m.sum("ferry_frames_out_total"), float64(d.frames))
			check("ferry_bytes_out_total{transport}", m.get("ferry_bytes_out_total", "transport", tr), float64(d.bytes))
			check("ferry_frames_in_total{transport}", m.get("ferry_frames_in_total", "transport", in), 2)
			check("ferry_frames_in_total", m.sum("ferry_frames_in_total"), 2)
			check("ferry_bytes_in_total{transport}", m.get("ferry_bytes_in_total", "transport", in), float64(2*len(upstream)))
			check("ferry_upstream_total{outcome=ok}", m.get("ferry_upstream_total", "outcome", "ok"), 1)
			check("ferry_upstream_total{outcome=duplicate}", m.get("ferry_upstream_total", "outcome", "duplicate"), 1)
			check("ferry_upstream_total", m.sum("ferry_upstream_total"), 2)
			check("ferry_publish_seconds_count", m.get("ferry_publish_seconds_count"), published+1) // and the echo
			check("ferry_broker_publish_errors_total", m.get("ferry_broker_publish_errors_total"), 0)
			check("ferry_resumes_total", m.get("ferry_resumes_total"), float64(d.resumed))
			check("ferry_resets_total", m.get("ferry_resets_total"), 0)
			check("ferry_transport_switches_total", m.sum("ferry_transport_switches_total"), 0)
			check("ferry_rejected_total", m.sum("ferry_rejected_total"), 0)
			check("ferry_broker_ready", m.get("ferry_broker_ready"), 1)
			if tr == "longpoll" {
				// Each poll detaches as it answers: no connection stays between polls.
				check("ferry_connections{transport}", m.get("ferry_connections", "transport", tr), 0)
				check("ferry_polls_total{outcome=timeout}", m.get("ferry_polls_total", "outcome", "timeout"), float64(d.timeouts))
				check("ferry_polls_total{outcome=data}", m.get("ferry_polls_total", "outcome", "data"), float64(d.polls-d.timeouts))
				check("ferry_polls_total", m.sum("ferry_polls_total"), float64(d.polls))
			} else {
				check("ferry_connections{transport}", m.get("ferry_connections", "transport", tr), 1)
				check("ferry_polls_total", m.sum("ferry_polls_total"), 0)
			}
			check("ferry_connections", m.sum("ferry_connections"), m.get("ferry_connections", "transport", tr))
			check("ferry_broker_channels", m.get("ferry_broker_channels"), 2*m.get("ferry_connections", "transport", tr))

			// Leaving ends the attachment: the gauge falls and the disconnect is counted.
			d.close()
			await.Until(t, "detach counted", func() bool {
				m := scrape(t, addr)
				return m.get("ferry_connections", "transport", tr) == 0 &&
					m.sum("ferry_disconnects_total", "transport", tr) == attachments
			})
		})
	}
}

// apiPublish publishes v on channel through POST <base>/api/publish.
func apiPublish(t *testing.T, addr, channel string, v any) {
	body, _ := json.Marshal(map[string]any{"channel": channel, "data": v})
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/ferry/api/publish", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("publish: %d", resp.StatusCode)
	}
}

// Refusals show in /metrics under their reason: connection caps (per address and per
// node) as limit, the negotiation rate as rate, and origin, auth and session as such.
func TestMetricsEndpointCountsRejections(t *testing.T) {
	// X-Forwarded-For stands for the client addresses a proxy in front would report.
	addr := startServer(t, "--trust-forwarded-for", "--max-conns", "2", "--max-conns-per-ip", "1",
		"--negotiate-rate", "0.001", "--token-key", "jwt-key", "--allow-anonymous", "--allowed-origins", "https://ok.example")
	base := "http://" + addr + "/ferry"
	from := func(ip string) *fclient.Client {
		c := fclient.New(base)
		c.Header = http.Header{"X-Forwarded-For": {ip}}
		return c
	}
	stream := func(ip string) error {
		t.Helper()
		c := from(ip)
		if err := c.Negotiate(context.Background()); err != nil {
			t.Fatal(err)
		}
		s, err := c.SSE(context.Background(), "")
		if err != nil {
			return err
		}
		t.Cleanup(s.Close)
		if f := <-s.Frames; f.T != "hello" {
			t.Fatalf("first frame %+v", f)
		}
		return nil
	}
	status := func(err error) int {
		var he *fclient.HTTPError
		if errors.As(err, &he) {
			return he.Status
		}
		return 0
	}
	// Before the streams below fill the node.
	forged := fclient.New(base)
	forged.Session = "forged"
	if _, _, err := forged.Poll(context.Background(), false, 0); status(err) != http.StatusUnauthorized {
		t.Fatalf("forged session: %v, want 401", err)
	}
	if err := stream("10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := stream("10.0.0.1"); status(err) != http.StatusTooManyRequests {
		t.Fatalf("second stream from one address: %v, want 429", err)
	}
	if err := stream("10.0.0.2"); err != nil {
		t.Fatal(err)
	}
	if err := stream("10.0.0.3"); status(err) != http.StatusServiceUnavailable {
		t.Fatalf("third stream on the node: %v, want 503", err)
	}
	// The negotiation bucket holds 50.
	c := from("10.0.0.9")
	for range 50 {
		c.Session = ""
		if err := c.Negotiate(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	c.Session = ""
	if err := c.Negotiate(context.Background()); status(err) != http.StatusTooManyRequests {
		t.Fatalf("negotiation over the rate: %v, want 429", err)
	}
	c = fclient.New(base)
	c.Header = http.Header{"Origin": {"https://evil.example"}}
	if err := c.Negotiate(context.Background()); status(err) != http.StatusForbidden {
		t.Fatalf("foreign origin: %v, want 403", err)
	}
	c.Header = http.Header{"Authorization": {"Bearer not-a-jwt"}}
	if err := c.Negotiate(context.Background()); status(err) != http.StatusUnauthorized {
		t.Fatalf("bad token: %v, want 401", err)
	}

	m := scrape(t, addr)
	for reason, want := range map[string]float64{"limit": 2, "rate": 1, "origin": 1, "auth": 1, "session": 1} {
		if got := m.get("ferry_rejected_total", "reason", reason); got != want {
			t.Errorf("ferry_rejected_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if got := m.sum("ferry_rejected_total"); got != 6 {
		t.Errorf("ferry_rejected_total = %v in all, want 6 (nothing under other reasons)", got)
	}
}
