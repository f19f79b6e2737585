package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"
)

// The storm scenario (--mode storm) measures a reconnect storm: --clients sessions, spread
// over WebSocket, SSE and long-polling and all from one source address (a NAT), follow one
// channel that a publisher feeds at --rate; the bench runs the ferry binary (--ferry-bin)
// itself and restarts it, once per signal of --signals, and reports how long the clients
// take to come back and resume, what they lost, and the server's memory and CPU during the
// storm against the steady state before it. With --nodes 3 the nodes share a redis-server
// the bench starts; the publisher uses the last node, and each restart takes whichever
// other node has the most clients attached (the first node in the first restart).

// StormResult is the outcome of one restart.
type StormResult struct {
	Label    string `json:"label"`
	Scenario string `json:"scenario,omitempty"`
	Time     string `json:"time"`
	Clients  int    `json:"clients"`
	Nodes    int    `json:"nodes"`
	Signal   string `json:"signal"`
	// Affected clients lost their attachment in the restart; Back of them came back.
	Affected int `json:"affected"`
	Back     int `json:"back"`
	// Down is from the signal to the node answering again: /healthz, or a client's
	// attachment if one came first (under a storm, /healthz waits in the accept queue).
	DownMs float64 `json:"down_ms"`
	// Times until each affected client attached again, from the node answering again
	// (0 for clients back earlier, on another node) and from the signal.
	BackP50Ms       float64 `json:"back_p50_ms"`
	BackP99Ms       float64 `json:"back_p99_ms"`
	BackLastMs      float64 `json:"back_last_ms"`
	FromSignalP50Ms float64 `json:"from_signal_p50_ms"`
	FromSignalLast  float64 `json:"from_signal_last_ms"`
	// Resets are reset frames; SilentGaps messages skipped without one (must be 0); Dups
	// messages delivered twice; Behind clients that did not reach the publisher's position
	// within the drain after the storm.
	Resets      int    `json:"resets"`
	SilentGaps  uint64 `json:"silent_gaps"`
	Dups        uint64 `json:"dups"`
	Behind      int    `json:"behind"`
	NewSessions int    `json:"new_sessions"`
	Refused     int    `json:"refused_rounds"`
	ConnFails   int    `json:"failed_rounds"`
	Published   int64  `json:"published"`
	PublishErrs int64  `json:"publish_errors"`
	// Memory and CPU of the restarted node: steady state before the restart, peak and
	// average during the storm (from its start until every client is back, plus 2 s).
	SteadyRSSKiB int64 `json:"steady_rss_kib"`
	// ConnectPeakRSSKiB is the first node's peak while the clients first connected: the
	// same crowd arriving, without a restart, for comparison with PeakRSSKiB.
	ConnectPeakRSSKiB int64   `json:"connect_peak_rss_kib"`
	PeakRSSKiB        int64   `json:"peak_rss_kib"`
	SteadyCPUPct      float64 `json:"steady_cpu_pct"`
	StormCPUPct       float64 `json:"storm_cpu_pct"`
	PeakCPUPct        float64 `json:"peak_cpu_pct"` // highest over any 500 ms
	AfterRSSKiB       int64   `json:"after_rss_kib"`
	// With several nodes, the surviving node whose memory grew most: its steady RSS and
	// its peak while the restarted node's clients moved to it.
	OtherSteadyRSSKiB int64   `json:"other_steady_rss_kib,omitempty"`
	OtherPeakRSSKiB   int64   `json:"other_peak_rss_kib,omitempty"`
	StormWindowMs     float64 `json:"storm_window_ms"`
}

func (r *StormResult) print(w io.Writer) {
	fmt.Fprintf(w, "storm %s: %d clients (ws/sse/longpoll from one address), %d node(s), %s\n", r.Label, r.Clients, r.Nodes, r.Signal)
	fmt.Fprintf(w, "  node down %.0f ms; affected %d, back %d\n", r.DownMs, r.Affected, r.Back)
	fmt.Fprintf(w, "  back after the node answered: p50 %.0f ms, p99 %.0f ms, last %.0f ms (from the signal: p50 %.0f ms, last %.0f ms)\n",
		r.BackP50Ms, r.BackP99Ms, r.BackLastMs, r.FromSignalP50Ms, r.FromSignalLast)
	fmt.Fprintf(w, "  resets %d, silent gaps %d, duplicates %d, behind after drain %d, new sessions %d, refused rounds %d, failed rounds %d\n",
		r.Resets, r.SilentGaps, r.Dups, r.Behind, r.NewSessions, r.Refused, r.ConnFails)
	fmt.Fprintf(w, "  published %d (%d refused while down)\n", r.Published, r.PublishErrs)
	ratio := 0.0
	if r.SteadyRSSKiB > 0 {
		ratio = float64(r.PeakRSSKiB) / float64(r.SteadyRSSKiB)
	}
	fmt.Fprintf(w, "  node RSS: steady %.1f MiB, storm peak %.1f MiB (%.2fx; first connection peak %.1f MiB), after %.1f MiB; CPU: steady %.0f%%, storm %.0f%% (peak %.0f%%) of one core over %.1f s\n",
		float64(r.SteadyRSSKiB)/1024, float64(r.PeakRSSKiB)/1024, ratio, float64(r.ConnectPeakRSSKiB)/1024, float64(r.AfterRSSKiB)/1024, r.SteadyCPUPct, r.StormCPUPct, r.PeakCPUPct, r.StormWindowMs/1000)
	if r.OtherSteadyRSSKiB > 0 {
		fmt.Fprintf(w, "  busiest other node RSS: steady %.1f MiB, peak %.1f MiB (%.2fx)\n",
			float64(r.OtherSteadyRSSKiB)/1024, float64(r.OtherPeakRSSKiB)/1024, float64(r.OtherPeakRSSKiB)/float64(r.OtherSteadyRSSKiB))
	}
}

func (r *StormResult) appendJSON(name string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(append(b, '\n'))
	return err
}

// quantiles returns the median, the 99th percentile and the largest of ds, in ms.
func quantiles(ds []time.Duration) (p50, p99, last float64) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return ms(at(0.5)), ms(at(0.99)), ms(ds[len(ds)-1])
}

// cpuPct is the CPU used between two samples as a percentage of one core.
func cpuPct(a, b sample) float64 {
	wall := b.at.Sub(a.at)
	if wall <= 0 || b.cpu < a.cpu {
		return 0
	}
	return round1(100 * float64(b.cpu-a.cpu) / float64(wall))
}

// waitGroup waits for wg, ctx or timeout.
func waitGroup(ctx context.Context, wg *sync.WaitGroup, timeout time.Duration) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		return fmt.Errorf("not every client attached within %v", timeout)
	}
}
