// Command chart turns the JSON lines written by ferry-bench --json into the results
// tables (markdown: the transports, the dashboard scale, the brokers) and the latency
// chart (SVG) of docs/BENCHMARKS.md, with no plotting dependency: the SVG is written by
// hand.
//
//	chart --in results.jsonl --md results.md --svg p99.svg [--machine machine.txt]
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// result is the part of ferry-bench's Result that the report uses.
type result struct {
	Label          string  `json:"label"`
	Scenario       string  `json:"scenario"`
	Target         string  `json:"target"`
	Transport      string  `json:"transport"`
	Clients        int     `json:"clients"`
	Stalled        int     `json:"stalled"`
	Connected      int     `json:"connected"`
	ConnectErrors  int     `json:"connect_errors"`
	ConnectSeconds float64 `json:"connect_seconds"`
	KiBPerConn     float64 `json:"kib_per_conn"`
	Nodes          int     `json:"nodes"`    // 0: one
	Channels       int     `json:"channels"` // 0: one
	Steady         *phase  `json:"steady"`
	Burst          *phase  `json:"burst"`
	PublishTest    *phase  `json:"publish_test"`
	Disconnected   int64   `json:"disconnected"`
	RSS            *trace  `json:"rss_trace"`
}

// trace is the server's memory sampled through a run (ferry-bench --rss-every), in KiB.
type trace struct {
	EveryMs float64 `json:"every_ms"`
	First   int64   `json:"first_kib"`
	Last    int64   `json:"last_kib"`
	Max     int64   `json:"max_kib"`
	Samples []int64 `json:"samples_kib"`
}

type phase struct {
	Rate             float64 `json:"rate"`
	Published        int64   `json:"published"`
	Expected         int64   `json:"expected"`
	Delivered        int64   `json:"delivered"`
	Lost             int64   `json:"lost"`
	Dups             int64   `json:"dups"`
	P50Ms            float64 `json:"p50_ms"`
	P99Ms            float64 `json:"p99_ms"`
	MaxMs            float64 `json:"max_ms"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	CPUPerDelivery   float64 `json:"server_cpu_us_per_delivery"`
	CPUPercent       float64 `json:"server_cpu_percent"`
	GenCPUPercent    float64 `json:"generator_cpu_percent"`
	Skipped          int64   `json:"skipped"`
	PublishesPerSec  float64 `json:"publishes_per_sec"`
	PublishP50Ms     float64 `json:"publish_p50_ms"`
	PublishP99Ms     float64 `json:"publish_p99_ms"`
	Procs            []proc  `json:"server_procs"`
}

// proc is one server process's CPU over a phase (ferry-bench with several --server-pid).
type proc struct {
	Name           string  `json:"name"`
	CPUPercent     float64 `json:"cpu_percent"`
	CPUPerDelivery float64 `json:"cpu_us_per_delivery"`
}

func readResults(r io.Reader) ([]result, error) {
	var out []result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var res result
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, res)
	}
	return out, sc.Err()
}

// labels returns the labels in the order they first appear.
func labels(rs []result) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rs {
		if !seen[r.Label] {
			seen[r.Label] = true
			out = append(out, r.Label)
		}
	}
	return out
}

// find returns the last result of label and scenario, nil if none.
func find(rs []result, label, scenario string) *result {
	var found *result
	for i := range rs {
		if rs[i].Label == label && rs[i].Scenario == scenario {
			found = &rs[i]
		}
	}
	return found
}

func lat(p *phase) string {
	if p == nil || p.Delivered == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s", num(p.P50Ms), num(p.P99Ms))
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func lost(ps ...*phase) string {
	var l, e int64
	for _, p := range ps {
		if p != nil {
			l += p.Lost + p.Dups
			e += p.Expected
		}
	}
	if e == 0 {
		return "–"
	}
	if l == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%.2f%%)", l, 100*float64(l)/float64(e))
}

// writeTable writes the main table: one row per label, from the scenarios "rate2"
// (memory, connect, latency at 2 msg/s, burst) and "rate10" (latency at 10 msg/s), and
// the stall comparison if any.
func writeTable(w io.Writer, rs []result) {
	if !slices.ContainsFunc(rs, func(r result) bool { return r.Scenario == "rate2" || r.Scenario == "rate10" }) {
		return // a run of the dashboard scenario alone
	}
	fmt.Fprintln(w, "| server / transport | clients | idle KiB per conn | connect (s) | p50 / p99 ms at 2 msg/s | p50 / p99 ms at 10 msg/s | burst deliveries/s | server CPU µs per delivery (2 / 10 msg/s / burst) | lost or duplicated |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, l := range labels(rs) {
		r2, r10 := find(rs, l, "rate2"), find(rs, l, "rate10")
		if r2 == nil && r10 == nil {
			continue
		}
		base := r2
		if base == nil {
			base = r10
		}
		var s10, burst, s2 *phase
		if r10 != nil {
			s10 = r10.Steady
		}
		if r2 != nil {
			s2, burst = r2.Steady, r2.Burst
		}
		mem := "–"
		if base.KiBPerConn > 0 {
			mem = fmt.Sprintf("%.1f", base.KiBPerConn)
		}
		tput := "–"
		if burst != nil && burst.DeliveriesPerSec > 0 {
			tput = fmt.Sprintf("%.0f k", burst.DeliveriesPerSec/1000)
		}
		cpu := []string{"–", "–", "–"}
		for i, p := range []*phase{s2, s10, burst} {
			if p != nil && p.CPUPerDelivery > 0 {
				cpu[i] = num(p.CPUPerDelivery)
			}
		}
		clients := fmt.Sprintf("%d", base.Clients)
		if base.Connected < base.Clients {
			clients = fmt.Sprintf("%d of %d", base.Connected, base.Clients)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.1f | %s | %s | %s | %s | %s |\n",
			l, clients, mem, base.ConnectSeconds, lat(s2), lat(s10), tput, strings.Join(cpu, " / "), lost(s2, s10, burst))
	}
	var stalls []result
	for _, r := range rs {
		if r.Scenario == "stall" {
			stalls = append(stalls, r)
		}
	}
	if len(stalls) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Slow subscriber: the load at 2 msg/s with clients that stop reading once subscribed (their socket's receive buffer shrunk to 4 KiB), against the same load without them.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| server / transport | clients | stalled | p50 / p99 ms of the others | without stalled clients | lost or duplicated among the others |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for _, r := range stalls {
		without := "–"
		if base := find(rs, r.Label, "rate2"); base != nil {
			without = lat(base.Steady)
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s |\n", r.Label, r.Clients, r.Stalled, lat(r.Steady), without, lost(r.Steady))
	}
}

// ofScenario returns the results of scenario, in their order.
func ofScenario(rs []result, scenario string) []result {
	var out []result
	for _, r := range rs {
		if r.Scenario == scenario {
			out = append(out, r)
		}
	}
	return out
}

// writeDashboard writes the table of the "dashboard" scenario (bench/run.sh
// SCALE_EVENTS): as many readers as one node holds, a slow steady rate, and the server's
// memory sampled from the end of the connect phase to the end of the run.
func writeDashboard(w io.Writer, rs []result) {
	ds := ofScenario(rs, "dashboard")
	if len(ds) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Dashboard scale: readers held on one node at a slow rate; the server's memory sampled from the end of the connect phase to the end of the run (MiB).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| server / transport | readers | rate (msg/s) | published | p50 / p99 ms | dropped readers | memory first / last / max | lost or duplicated |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range ds {
		readers := fmt.Sprintf("%d", r.Connected)
		if r.Connected < r.Clients {
			readers = fmt.Sprintf("%d of %d", r.Connected, r.Clients)
		}
		rate, published := "–", "–"
		if r.Steady != nil {
			rate, published = num(r.Steady.Rate), fmt.Sprintf("%d", r.Steady.Published)
		}
		mem := "–"
		if t := r.RSS; t != nil && len(t.Samples) > 0 {
			mem = fmt.Sprintf("%.1f / %.1f / %.1f", float64(t.First)/1024, float64(t.Last)/1024, float64(t.Max)/1024)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %d | %s | %s |\n", r.Label, readers, rate, published, lat(r.Steady), r.Disconnected, mem, lost(r.Steady))
	}
}

// writeBrokers writes the table of the "brokers" scenario (bench/run.sh's ferry-mem,
// ferry-redis, ferry-redis1 and ferry-cluster): one row per run, the same subscribers over one node or
// two, one channel or many, and where the server's CPU went, per process name.
func writeBrokers(w io.Writer, rs []result) {
	bs := ofScenario(rs, "brokers")
	if len(bs) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Brokers: the same subscribers on the in-memory broker (one node) and on Redis (two nodes, or one: redis-1node) and a Redis Cluster (two nodes), steady rate per channel, a burst, and publishes as fast as they go. Server CPU is summed over Ferry's nodes and Redis, then split by process (µs per delivery, and % of one core) in the steady phase.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "A steady phase whose publishes fell behind its schedule skips a publish when a second's worth are already in flight: its publishes per second show how many got through, and its latency includes the wait.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| server / broker | nodes | channels | subscribers | p50 / p99 ms steady | steady deliveries/s | steady publishes/s (skipped) | p50 / p99 ms burst | burst deliveries/s | publishes/s flat out (request p50 / p99 ms) | server CPU µs per delivery (steady / burst) | steady CPU per process | lost or duplicated |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
	for _, r := range bs {
		subs := fmt.Sprintf("%d", r.Connected)
		if r.Connected < r.Clients {
			subs = fmt.Sprintf("%d of %d", r.Connected, r.Clients)
		}
		rate := func(p *phase) string {
			if p == nil || p.DeliveriesPerSec == 0 {
				return "–"
			}
			return fmt.Sprintf("%.0f k", p.DeliveriesPerSec/1000)
		}
		steadyPubs := "–"
		if p := r.Steady; p != nil && p.PublishesPerSec > 0 {
			steadyPubs = fmt.Sprintf("%.0f (%d)", p.PublishesPerSec, p.Skipped)
		}
		pubs := "–"
		if p := r.PublishTest; p != nil && p.PublishesPerSec > 0 {
			pubs = fmt.Sprintf("%.0f (%s / %s)", p.PublishesPerSec, num(p.PublishP50Ms), num(p.PublishP99Ms))
		}
		cpu := []string{"–", "–"}
		for i, p := range []*phase{r.Steady, r.Burst} {
			if p != nil && p.CPUPerDelivery > 0 {
				cpu[i] = num(p.CPUPerDelivery)
			}
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Label, max(r.Nodes, 1), max(r.Channels, 1), subs, lat(r.Steady), rate(r.Steady), steadyPubs, lat(r.Burst), rate(r.Burst),
			pubs, strings.Join(cpu, " / "), byProcess(r.Steady), lost(r.Steady, r.Burst, r.PublishTest))
	}
}

// byProcess sums a phase's per-process CPU by process name, in the order the names
// first appear: "ferry 8.10 (45%), redis-server 3.20 (18%)".
func byProcess(p *phase) string {
	if p == nil || len(p.Procs) == 0 {
		return "–"
	}
	var names []string
	us, pct := map[string]float64{}, map[string]float64{}
	for _, pc := range p.Procs {
		if _, ok := us[pc.Name]; !ok {
			names = append(names, pc.Name)
		}
		us[pc.Name] += pc.CPUPerDelivery
		pct[pc.Name] += pc.CPUPercent
	}
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %s (%.0f%%)", n, num(us[n]), pct[n])
	}
	return strings.Join(parts, ", ")
}

// point is one (subscribers, p99) of a series.
type point struct {
	x int
	y float64
}

// series returns, per label, p99 latency at 2 msg/s against subscriber count, from the
// scenarios "rate2" and "scale".
func series(rs []result) (map[string][]point, []string) {
	out := map[string][]point{}
	var order []string
	for _, l := range labels(rs) {
		byX := map[int]float64{}
		for _, r := range rs {
			if r.Label != l || (r.Scenario != "rate2" && r.Scenario != "scale") || r.Steady == nil || r.Steady.Delivered == 0 || r.Steady.Rate != 2 {
				continue
			}
			byX[r.Connected] = r.Steady.P99Ms
		}
		if len(byX) == 0 {
			continue
		}
		for x, y := range byX {
			out[l] = append(out[l], point{x, y})
		}
		sort.Slice(out[l], func(i, j int) bool { return out[l][i].x < out[l][j].x })
		order = append(order, l)
	}
	return out, order
}

// palette has a colour for each of bench/run.sh's peers, base-* included.
var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#e7969c"}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// writeSVG draws p99 latency at 2 msg/s against subscriber count, one line per label.
func writeSVG(w io.Writer, rs []result, title string) error {
	data, order := series(rs)
	if len(order) == 0 {
		return errors.New("no steady-phase results at 2 msg/s to chart")
	}
	const (
		width, height       = 760, 440
		left, right         = 70, 210
		top, bottom         = 50, 60
		plotW, plotH        = width - left - right, height - top - bottom
		xTicks, yTicks      = 5, 5
		legendX, legendLine = width - right + 20, 22
	)
	maxX, maxY := 0, 0.0
	for _, l := range order {
		for _, p := range data[l] {
			maxX = max(maxX, p.x)
			maxY = max(maxY, p.y)
		}
	}
	xMax := niceCeil(float64(maxX))
	yMax := niceCeil(maxY * 1.05)
	px := func(x int) float64 { return left + float64(x)/xMax*plotW }
	py := func(y float64) float64 { return top + plotH - y/yMax*plotH }

	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(w, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", left, xmlEscape(title))
	// Grid and axes.
	for i := 0; i <= yTicks; i++ {
		v := yMax * float64(i) / yTicks
		y := py(v)
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e0e0e0"/>`+"\n", left, y, left+plotW, y)
		fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-8, y, strconv.FormatFloat(v, 'f', -1, 64))
	}
	for i := 0; i <= xTicks; i++ {
		v := xMax * float64(i) / xTicks
		x := px(int(v))
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#e0e0e0"/>`+"\n", x, top, x, top+plotH)
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%.0f</text>`+"\n", x, top+plotH+18, v)
	}
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", left, top, plotW, plotH)
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">subscribers</text>`+"\n", left+plotW/2, height-18)
	fmt.Fprintf(w, `<text x="18" y="%d" text-anchor="middle" transform="rotate(-90 18 %d)">p99 broadcast latency (ms)</text>`+"\n", top+plotH/2, top+plotH/2)
	// Series and legend.
	for i, l := range order {
		color := palette[i%len(palette)]
		var pts []string
		for _, p := range data[l] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p.x), py(p.y)))
		}
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		for _, p := range data[l] {
			fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %d subscribers, p99 %s ms</title></circle>`+"\n", px(p.x), py(p.y), color, xmlEscape(l), p.x, num(p.y))
		}
		ly := top + 10 + i*legendLine
		fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", legendX, ly, legendX+22, ly, color)
		fmt.Fprintf(w, `<text x="%d" y="%d" dominant-baseline="middle">%s</text>`+"\n", legendX+30, ly, xmlEscape(l))
	}
	_, err := fmt.Fprintln(w, "</svg>")
	return err
}

func writeFile(name string, f func(io.Writer) error) error {
	out, err := os.Create(name)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(out)
	if err := f(bw); err != nil {
		out.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func main() {
	in := flag.String("in", "", "JSON lines written by ferry-bench --json")
	md := flag.String("md", "", "write the markdown table here")
	svg := flag.String("svg", "", "write the chart here")
	machine := flag.String("machine", "", "text file describing the machine, put above the table")
	title := flag.String("title", "Broadcast latency, p99, at 2 messages per second", "chart title")
	flag.Parse()
	if *in == "" || (*md == "" && *svg == "") {
		fmt.Fprintln(os.Stderr, "usage: chart --in results.jsonl [--md results.md] [--svg chart.svg] [--machine machine.txt]")
		os.Exit(2)
	}
	f, err := os.Open(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
	rs, err := readResults(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chart:", *in+":", err)
		os.Exit(1)
	}
	if *md != "" {
		err = writeFile(*md, func(w io.Writer) error {
			if *machine != "" {
				b, err := os.ReadFile(*machine)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "%s\n", strings.TrimSpace(string(b)))
				fmt.Fprintln(w)
			}
			writeTable(w, rs)
			writeDashboard(w, rs)
			writeBrokers(w, rs)
			return nil
		})
	}
	if err == nil && *svg != "" {
		err = writeFile(*svg, func(w io.Writer) error { return writeSVG(w, rs, *title) })
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}
