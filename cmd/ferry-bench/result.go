package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Result is what one run measured; bench/chart reads it back from the JSON lines.
type Result struct {
	Label     string `json:"label"`
	Scenario  string `json:"scenario,omitempty"`
	Target    string `json:"target"`
	Transport string `json:"transport"`
	Time      string `json:"time"`

	// Nodes is how many server addresses --url named, Channels how many channels the
	// clients were spread over (both left out when 1: the runs before them had one).
	Nodes    int `json:"nodes,omitempty"`
	Channels int `json:"channels,omitempty"`

	Clients        int     `json:"clients"`
	Stalled        int     `json:"stalled"`
	Connected      int     `json:"connected"`
	ConnectErrors  int     `json:"connect_errors"`
	ConnectSeconds float64 `json:"connect_seconds"`
	ConnectP50Ms   float64 `json:"connect_p50_ms"`
	ConnectP99Ms   float64 `json:"connect_p99_ms"`
	ConnectMaxMs   float64 `json:"connect_max_ms"`

	// Resident memory of the server before connecting and after settling, and the
	// difference per connected client. Zero without --server-pid.
	RSSBeforeKiB int64   `json:"rss_before_kib"`
	RSSAfterKiB  int64   `json:"rss_after_kib"`
	KiBPerConn   float64 `json:"kib_per_conn"`
	// With --rss-every: the server's resident memory sampled from the end of the settle
	// to the end of the last phase, whether memory stays flat while the readers are held.
	RSS *RSSTrace `json:"rss_trace,omitempty"`

	Steady *PhaseResult `json:"steady,omitempty"`
	Burst  *PhaseResult `json:"burst,omitempty"`
	// PublishTest is the --publish-rate-test phase: publishes as fast as
	// --burst-concurrency requests in flight allow, its PublishesPerSec the figure.
	PublishTest *PhaseResult `json:"publish_test,omitempty"`

	Disconnected int64          `json:"disconnected"`
	Unknown      int64          `json:"unknown_messages"`
	Errors       map[string]int `json:"errors,omitempty"`
}

// RSSTrace is the server's memory sampled through a run, in KiB.
type RSSTrace struct {
	EveryMs float64 `json:"every_ms"`
	First   int64   `json:"first_kib"`
	Last    int64   `json:"last_kib"`
	Max     int64   `json:"max_kib"`
	Min     int64   `json:"min_kib"`
	Samples []int64 `json:"samples_kib"`
}

// PhaseResult is one phase: what was published, what arrived, how late.
type PhaseResult struct {
	Rate          float64 `json:"rate,omitempty"`
	Published     int64   `json:"published"`
	PublishErrors int64   `json:"publish_errors"`
	// Skipped counts scheduled publishes dropped because 64 were already in flight.
	Skipped   int64 `json:"skipped"`
	Readers   int64 `json:"readers"`
	Expected  int64 `json:"expected"`
	Delivered int64 `json:"delivered"`
	Lost      int64 `json:"lost"`
	Dups      int64 `json:"dups"`

	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`

	PublishSecs float64 `json:"publish_seconds"`
	// Publishes per second over PublishSecs, and the latency of the publish requests
	// (sent to answered) that succeeded.
	PublishesPerSec  float64 `json:"publishes_per_sec"`
	PublishP50Ms     float64 `json:"publish_p50_ms"`
	PublishP99Ms     float64 `json:"publish_p99_ms"`
	Seconds          float64 `json:"seconds"` // first publish to last delivery
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`

	ServerCPUSecs          float64 `json:"server_cpu_seconds"`
	ServerCPUPercent       float64 `json:"server_cpu_percent"`
	ServerCPUPerDeliveryUs float64 `json:"server_cpu_us_per_delivery"`
	GenCPUPercent          float64 `json:"generator_cpu_percent"`
	// Procs is the server's CPU per process of --server-pid (the Server* figures are
	// their sum): where the CPU goes, Ferry's nodes or Redis.
	Procs []ProcCPU `json:"server_procs,omitempty"`
}

// ProcCPU is one server process's CPU over a phase.
type ProcCPU struct {
	PID              int     `json:"pid"`
	Name             string  `json:"name"`
	CPUSecs          float64 `json:"cpu_seconds"`
	CPUPercent       float64 `json:"cpu_percent"`
	CPUPerDeliveryUs float64 `json:"cpu_us_per_delivery"`
}

func (r *Result) print(w io.Writer) {
	fmt.Fprintf(w, "== %s: %d clients (%d stalled)", r.Label, r.Clients, r.Stalled)
	if r.Nodes > 1 || r.Channels > 1 {
		fmt.Fprintf(w, " on %d nodes, %d channels", max(r.Nodes, 1), max(r.Channels, 1))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "connect     %d connected, %d errors, %.1fs; per client p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
		r.Connected, r.ConnectErrors, r.ConnectSeconds, r.ConnectP50Ms, r.ConnectP99Ms, r.ConnectMaxMs)
	if r.RSSAfterKiB > 0 {
		fmt.Fprintf(w, "memory      server RSS %d KiB -> %d KiB: %.1f KiB per connection\n", r.RSSBeforeKiB, r.RSSAfterKiB, r.KiBPerConn)
	}
	if t := r.RSS; t != nil && len(t.Samples) > 0 {
		fmt.Fprintf(w, "memory      through the run, %d samples every %.0f ms: first %d KiB, last %d KiB, min %d KiB, max %d KiB\n",
			len(t.Samples), t.EveryMs, t.First, t.Last, t.Min, t.Max)
	}
	for _, p := range []struct {
		name string
		r    *PhaseResult
	}{{"steady", r.Steady}, {"burst", r.Burst}, {"publish", r.PublishTest}} {
		if p.r == nil {
			continue
		}
		name := p.name
		if p.r.Rate > 0 {
			name = fmt.Sprintf("%s %g/s", p.name, p.r.Rate)
		}
		fmt.Fprintf(w, "%-11s published %d (%d errors, %d skipped) to %d readers: delivered %d of %d, lost %d, dups %d\n",
			name, p.r.Published, p.r.PublishErrors, p.r.Skipped, p.r.Readers, p.r.Delivered, p.r.Expected, p.r.Lost, p.r.Dups)
		fmt.Fprintf(w, "            latency p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  mean %.1f ms\n",
			p.r.P50Ms, p.r.P90Ms, p.r.P99Ms, p.r.P999Ms, p.r.MaxMs, p.r.MeanMs)
		fmt.Fprintf(w, "            %.0f deliveries/s over %.2fs; server CPU %.2fs (%.0f%%, %.2f µs per delivery); generator CPU %.0f%%\n",
			p.r.DeliveriesPerSec, p.r.Seconds, p.r.ServerCPUSecs, p.r.ServerCPUPercent, p.r.ServerCPUPerDeliveryUs, p.r.GenCPUPercent)
		if p.r.Published > 0 {
			fmt.Fprintf(w, "            %.0f publishes/s over %.2fs; publish request p50 %.1f  p99 %.1f ms\n",
				p.r.PublishesPerSec, p.r.PublishSecs, p.r.PublishP50Ms, p.r.PublishP99Ms)
		}
		for _, pc := range p.r.Procs {
			if len(p.r.Procs) > 1 { // one process is the server CPU above
				fmt.Fprintf(w, "            process %d %s: CPU %.2fs (%.0f%%, %.2f µs per delivery)\n", pc.PID, pc.Name, pc.CPUSecs, pc.CPUPercent, pc.CPUPerDeliveryUs)
			}
		}

	}
	if r.Disconnected > 0 || r.Unknown > 0 {
		fmt.Fprintf(w, "other       %d connections ended early, %d unreadable messages\n", r.Disconnected, r.Unknown)
	}
	for _, k := range sortedKeys(r.Errors) {
		fmt.Fprintf(w, "error       %s: %d\n", k, r.Errors[k])
	}
}

func (r *Result) appendJSON(name string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
