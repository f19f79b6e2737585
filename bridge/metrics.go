package bridge

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// metrics implements session.Observer and transport.Observer with Prometheus collectors,
// all prefixed ferry_.
// docs/OPERATIONS.md lists them; docs/grafana-dashboard.json charts them.
type metrics struct {
	negotiations   *prometheus.CounterVec
	attachments    *prometheus.CounterVec
	connections    *prometheus.GaugeVec
	switches       *prometheus.CounterVec
	resumes        prometheus.Counter
	resets         prometheus.Counter
	disconnects    *prometheus.CounterVec
	upstream       *prometheus.CounterVec
	framesOut      *prometheus.CounterVec
	bytesOut       *prometheus.CounterVec
	framesIn       *prometheus.CounterVec
	bytesIn        *prometheus.CounterVec
	polls          *prometheus.CounterVec
	rejected       *prometheus.CounterVec
	publishSeconds prometheus.Histogram
	publishErrors  prometheus.Counter

	// io holds the frame and byte counters of each transport, resolved once: Sent runs
	// for every batch a writer sends, and a label lookup there is a measurable part of a
	// fan-out. Read-only after newMetrics.
	io map[string]*ioCounters
}

type ioCounters struct{ framesOut, bytesOut, framesIn, bytesIn prometheus.Counter }

func (m *metrics) ioFor(transport string) *ioCounters {
	if c := m.io[transport]; c != nil {
		return c
	}
	return &ioCounters{m.framesOut.WithLabelValues(transport), m.bytesOut.WithLabelValues(transport),
		m.framesIn.WithLabelValues(transport), m.bytesIn.WithLabelValues(transport)}
}

func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	m := &metrics{
		negotiations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_negotiations_total",
			Help: "Negotiations, by result: new session or resumed."}, []string{"result"}),
		attachments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_attachments_total",
			Help: "Downstream attachments (connections, SSE streams, long-poll requests), by transport."}, []string{"transport"}),
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ferry_connections",
			Help: "Open attachments on this node, by transport: WebSocket connections, SSE streams, long-poll attachments (held polls, and those lingering between polls)."}, []string{"transport"}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_transport_switches_total",
			Help: "Attachments whose client reported leaving another transport, by from, to and reason."}, []string{"from", "to", "reason"}),
		resumes: prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_resumes_total",
			Help: "Subscriptions resumed from a position."}),
		resets: prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_resets_total",
			Help: "Subscriptions that history could not resume (reset sent)."}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_disconnects_total",
			Help: "Ended attachments by transport and close code (4002: slow consumer)."}, []string{"transport", "code"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_upstream_total",
			Help: "Upstream frames by outcome: ok, duplicate (dedupe hit), in_progress (a duplicate whose first attempt is still running), refused, rate_limited, unavailable (not processed: the session store failed)."}, []string{"outcome"}),
		framesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_frames_out_total",
			Help: "Frames written to clients, by transport."}, []string{"transport"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bytes_out_total",
			Help: "Frame bytes written to clients, by transport."}, []string{"transport"}),
		framesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_frames_in_total",
			Help: "Frames read from clients, by transport (http for POST /send)."}, []string{"transport"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_bytes_in_total",
			Help: "Frame bytes read from clients, by transport."}, []string{"transport"}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_polls_total",
			Help: "Long-poll requests by outcome: data (early return), timeout (hold expired), superseded, closed, gone."}, []string{"outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ferry_rejected_total",
			Help: "Refused requests and frames, by reason: auth, session, origin, forbidden, limit (connection, session and size caps), rate, bad_request, draining."}, []string{"reason"}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ferry_publish_seconds",
			Help:    "Time to publish a message into the broker and fan it out to this node's subscribers.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10)}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "ferry_broker_publish_errors_total",
			Help: "Publishes the broker failed."}),
	}
	m.io = make(map[string]*ioCounters)
	for _, tr := range []string{transport.WebSocket, transport.SSE, transport.LongPoll, transport.HTTPUpstream} {
		m.io[tr] = m.ioFor(tr)
	}
	reg.MustRegister(m.negotiations, m.attachments, m.connections, m.switches, m.resumes, m.resets,
		m.disconnects, m.upstream, m.framesOut, m.bytesOut, m.framesIn, m.bytesIn, m.polls, m.rejected,
		m.publishSeconds, m.publishErrors)
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ferry_payloads_repaired_total",
			Help: "Messages delivered with invalid UTF-8 replaced by U+FFFD (in this process): written into the broker past Ferry's entry points, which refuse them."},
			func() float64 { return float64(session.RepairedPayloads()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_broker_channels",
			Help: "Channels this node is subscribed to in the broker."}, func() float64 { return float64(s.hub.Channels()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_queue_frames",
			Help: "Frames waiting in the outbound queues of this node's attachments."}, func() float64 { return float64(s.mgr.QueueDepth()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_broker_ready",
			Help: "1 when the broker is reachable and subscribed, else 0."}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if s.broker.Ready(ctx) != nil {
				return 0
			}
			return 1
		}),
	)
	// Only a broker that holds the sessions in this process can count them cheaply. In
	// Redis a session is a key with a TTL, shared by every node: counting would take a
	// SCAN of the keyspace on every scrape, and each node would report the same cluster
	// total. ferry_connections counts the attached ones, per node.
	if counter, ok := s.broker.(interface{ Sessions() int }); ok {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_sessions",
			Help: "Live sessions (negotiated and not expired) of the in-memory broker."}, func() float64 { return float64(counter.Sessions()) }))
	}
	return m
}

func (m *metrics) Negotiated(resumed bool) {
	if resumed {
		m.negotiations.WithLabelValues("resumed").Inc()
	} else {
		m.negotiations.WithLabelValues("new").Inc()
	}
}

func (m *metrics) Attached(transport, from, reason string, resumed int) {
	m.attachments.WithLabelValues(transport).Inc()
	m.connections.WithLabelValues(transport).Inc()
	m.resumes.Add(float64(resumed))
	if from != "" && from != transport {
		if reason == "" {
			reason = "unknown"
		}
		m.switches.WithLabelValues(from, transport, reason).Inc()
	}
}

func (m *metrics) Detached(transport string, code session.Code) {
	m.connections.WithLabelValues(transport).Dec()
	m.disconnects.WithLabelValues(transport, strconv.Itoa(int(code))).Inc()
}

func (m *metrics) Reset() { m.resets.Inc() }
func (m *metrics) Upstream(outcome string) {
	if outcome == "rate_limited" {
		// A frame over its session's rate is a refusal, counted with the transports' others.
		m.rejected.WithLabelValues("rate").Inc()
		return
	}
	m.upstream.WithLabelValues(outcome).Inc()
}
func (m *metrics) Sent(transport string, frames, bytes int) {
	c := m.ioFor(transport)
	c.framesOut.Add(float64(frames))
	c.bytesOut.Add(float64(bytes))
}
func (m *metrics) Received(transport string, frames, bytes int) {
	c := m.ioFor(transport)
	c.framesIn.Add(float64(frames))
	c.bytesIn.Add(float64(bytes))
}
func (m *metrics) PollDone(outcome string) { m.polls.WithLabelValues(outcome).Inc() }
func (m *metrics) Rejected(reason string)  { m.rejected.WithLabelValues(reason).Inc() }

var (
	_ session.Observer   = (*metrics)(nil)
	_ transport.Observer = (*metrics)(nil)
)
