// Command ferry-bench is Ferry's load generator. It opens N clients on one transport
// against a running server, subscribes them to one channel (or spreads them over
// --channels, and over several nodes with a comma-separated --url), publishes through
// the server's publish API at a steady rate and then in a burst (and, with
// --publish-rate-test, as fast as it can), and reports connect time, broadcast latency
// percentiles (from a send timestamp in every payload), deliveries per second,
// publishes per second, losses and errors, and, for a local server named by
// --server-pid (several processes: Ferry's nodes and Redis), its resident memory per
// connection and its CPU time per delivery, in all and per process.
//
// It speaks to Ferry (WebSocket, SSE, long-polling, and the session-less /events stream
// of dashboards, read as a plain EventSource reads it) and to the two peers of
// docs/BENCHMARKS.md in their own protocols: a Socket.IO 4 server (bench/socketio, over
// WebSocket or polling) and a bare gorilla/websocket broadcast server (bench/gorilla-floor),
// so that the same load runs against each.
//
// Every run is bounded: at most --clients connections, --max-time overall.
//
//	ferry-bench --target ferry --transport websocket --clients 10000 --rate 2 --duration 20s \
//	    --burst 200 --url http://127.0.0.1:8080 --api-key k --server-pid $(pgrep -n ferry)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	target    string
	transport string
	url       string
	urls      []*url.URL // --url, split at commas and parsed
	base      string
	apiKey    string
	channel   string
	channels  int

	clients     int
	stall       int
	sources     int
	connConc    int
	connTimeout time.Duration
	settle      time.Duration

	rate      float64
	duration  time.Duration
	burst     int
	burstConc int
	pubTest   time.Duration
	payload   int
	drain     time.Duration
	maxTime   time.Duration

	serverPID  string
	serverPIDs []int // --server-pid, split at commas and parsed
	rssEvery   time.Duration
	jsonOut    string
	label      string
	scenario   string
	quiet      bool

	// --mode storm (storm.go)
	mode         string
	ferryBin     string
	ferryArgs    string
	nodes        int
	redisBin     string
	signals      string
	steady       time.Duration
	stormTimeout time.Duration
	keepWork     bool
}

// transports lists what each target speaks.
var transports = map[string][]string{
	"ferry":    {"websocket", "sse", "longpoll", "events"},
	"socketio": {"websocket", "polling"},
	"gorilla":  {"websocket"},
}

// parseOptions reads the flags of args and checks them for the mode they name.
func parseOptions(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := newFlagSet(o, out)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.mode == "storm" {
		return o, o.validateStorm(set)
	}
	if o.mode != "broadcast" {
		return nil, fmt.Errorf("--mode %q: want broadcast or storm", o.mode)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := o.validateBroadcast(); err != nil {
		return nil, err
	}
	return o, nil
}

// newFlagSet binds the flags to o.
func newFlagSet(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ferry-bench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.target, "target", "ferry", "server under test: ferry, socketio or gorilla")
	fs.StringVar(&o.transport, "transport", "websocket", "ferry: websocket, sse, longpoll or events (GET /events, no session: a dashboard's EventSource); socketio: websocket or polling; gorilla: websocket")
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8080", "server address (scheme and host); ferry: several nodes' addresses, comma-separated, over which the clients and the publishes are spread round-robin (client i on node i mod n)")
	fs.StringVar(&o.base, "base", "/ferry", "ferry: path prefix of the endpoints")
	fs.StringVar(&o.apiKey, "api-key", "", "ferry: API key of the publish API (--api-key of the server)")
	fs.StringVar(&o.channel, "channel", "bench", "ferry: channel the clients subscribe to (with --channels above 1, the prefix of the channels' names)")
	fs.IntVar(&o.channels, "channels", 1, "ferry: channels the clients are spread over, named <channel>-0 to <channel>-<n-1> (1: just <channel>): client i reads channel (i div nodes) mod n, so that each channel has readers on every node of --url")
	fs.IntVar(&o.clients, "clients", 100, "clients to open (at most the open-file limit less 100: every client holds a descriptor)")
	fs.IntVar(&o.stall, "stall", 0, "clients among --clients that stop reading once subscribed")
	fs.IntVar(&o.sources, "sources", 200, "source addresses 127.0.0.2... to spread connections over (0: one); servers that limit connections or sessions per address see each as a client")
	fs.IntVar(&o.connConc, "connect-concurrency", 64, "connections being opened at once")
	fs.DurationVar(&o.connTimeout, "connect-timeout", 2*time.Minute, "bound of the whole connect phase")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "wait after connecting before measuring memory and publishing")
	fs.Float64Var(&o.rate, "rate", 2, "messages per second per channel of the steady phase, so every subscriber receives this rate whatever --channels is: each tick publishes once to every channel, --rate × --channels publishes a second (0: no steady phase)")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "length of the steady phase")
	fs.IntVar(&o.burst, "burst", 200, "messages per channel published back to back in the burst phase, --burst × --channels publishes in all (0: none)")
	fs.IntVar(&o.burstConc, "burst-concurrency", 4, "publish requests in flight during the burst and the publish-rate test")
	fs.DurationVar(&o.pubTest, "publish-rate-test", 0, "after the burst, publish for this long as fast as --burst-concurrency requests in flight allow, over the channels in turn, and report publishes per second and the publish requests' latency beside the deliveries (0: none)")
	fs.IntVar(&o.payload, "payload", 64, "padding bytes in each payload (about 60 bytes of fields come on top)")
	fs.DurationVar(&o.drain, "drain", 15*time.Second, "longest wait for the last deliveries after a phase's last publish")
	fs.DurationVar(&o.maxTime, "max-time", 5*time.Minute, "bound of the whole run")
	fs.StringVar(&o.serverPID, "server-pid", "", "pids of the local server's processes, comma-separated (Ferry's nodes, and Redis's): report their memory per connection and CPU per delivery, summed over them, and with several the CPU of each too")
	fs.DurationVar(&o.rssEvery, "rss-every", 0, "with --server-pid: sample the server's memory (summed over its processes) at this interval from the end of --settle to the end of the last phase, and report the first, last and largest sample (0: no sampling)")
	fs.StringVar(&o.jsonOut, "json", "", "append the result as one JSON line to this file")
	fs.StringVar(&o.label, "label", "", "name of this run in the JSON result (default target/transport)")
	fs.StringVar(&o.scenario, "scenario", "", "name of the scenario this run belongs to, kept in the JSON result (bench/chart groups by it)")
	fs.BoolVar(&o.quiet, "quiet", false, "print only the report")
	fs.StringVar(&o.mode, "mode", "broadcast", "broadcast: connect, publish, measure latency; storm: restart the server under --clients sessions spread over all transports from one address, and measure the reconnect storm (needs --ferry-bin)")
	fs.StringVar(&o.ferryBin, "ferry-bin", "", "storm: the ferry binary, which the bench runs (on free loopback ports, with its own data directories) and restarts")
	fs.StringVar(&o.ferryArgs, "ferry-args", "", "storm: more flags for every node, space-separated")
	fs.IntVar(&o.nodes, "nodes", 1, "storm: nodes; more than one share a redis-server the bench starts, and the first one restarts")
	fs.StringVar(&o.redisBin, "redis-server", "redis-server", "storm: the redis-server binary, for --nodes above 1")
	fs.StringVar(&o.signals, "signals", "term,kill", "storm: restarts to run, in order, comma-separated: term (SIGTERM, graceful) or kill (SIGKILL, a crash)")
	fs.DurationVar(&o.steady, "steady", 10*time.Second, "storm: steady state measured before each restart")
	fs.DurationVar(&o.stormTimeout, "storm-timeout", 2*time.Minute, "storm: longest wait for every client to come back after a restart")
	fs.BoolVar(&o.keepWork, "keep-work", false, "storm: keep the work directory with the nodes' logs")
	return fs
}

// validateBroadcast checks the options of --mode broadcast and sets the default label.
func (o *options) validateBroadcast() error {
	tr, ok := transports[o.target]
	if !ok {
		return fmt.Errorf("--target %q: want ferry, socketio or gorilla", o.target)
	}
	found := false
	for _, t := range tr {
		found = found || t == o.transport
	}
	if !found {
		return fmt.Errorf("--transport %q: %s speaks %v", o.transport, o.target, tr)
	}
	switch {
	case o.clients < 1 || o.clients > maxClients():
		return fmt.Errorf("--clients: want 1 to %d (the open-file limit less 100)", maxClients())
	case o.stall < 0 || o.stall >= o.clients:
		return errors.New("--stall: want 0 to --clients - 1")
	case o.connConc < 1:
		return errors.New("--connect-concurrency: want at least 1")
	case o.rate < 0 || o.rate > 100000:
		return errors.New("--rate: want 0 to 100000")
	case o.burst < 0 || o.burst > 100000:
		return errors.New("--burst: want 0 to 100000")
	case o.burstConc < 1:
		return errors.New("--burst-concurrency: want at least 1")
	case o.payload < 0 || o.payload > 60000:
		return errors.New("--payload: want 0 to 60000")
	case o.maxTime <= 0 || o.maxTime > 30*time.Minute:
		return errors.New("--max-time: want at most 30m")
	case o.rssEvery < 0 || (o.rssEvery > 0 && o.rssEvery < 10*time.Millisecond):
		return errors.New("--rss-every: want 0 or at least 10ms")
	case o.sources < 0 || o.sources > 250:
		return errors.New("--sources: want 0 to 250")
	case o.target == "ferry" && o.apiKey == "" && (o.rate > 0 || o.burst > 0):
		return errors.New("--api-key: ferry's publish API needs the server's key")
	}
	if err := o.parseLists(); err != nil {
		return err
	}
	switch {
	case o.channels < 1 || o.channels > 100000:
		return errors.New("--channels: want 1 to 100000")
	case o.target != "ferry" && (o.channels > 1 || len(o.urls) > 1):
		return fmt.Errorf("--channels and several --url: ferry only (%s broadcasts to every client of one server)", o.target)
	case o.rate*float64(o.channels) > 100000:
		return errors.New("--rate × --channels: want at most 100000 publishes a second")
	case o.burst*o.channels > 1000000:
		return errors.New("--burst × --channels: want at most 1000000 publishes")
	case o.pubTest < 0 || o.pubTest > 10*time.Minute:
		return errors.New("--publish-rate-test: want 0 to 10m")
	}
	if o.label == "" {
		o.label = o.target + "/" + o.transport
	}
	return nil
}

// parseLists splits --url and --server-pid at commas and checks each part.
func (o *options) parseLists() error {
	o.urls = nil
	for _, s := range strings.Split(o.url, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("--url: %w", err)
		}
		if u.Scheme != "http" || u.Host == "" {
			return fmt.Errorf("--url: want http://host:port, comma-separated, got %q", s)
		}
		o.urls = append(o.urls, u)
	}
	pids, err := parsePIDs(o.serverPID)
	if err != nil {
		return err
	}
	o.serverPIDs = pids
	return nil
}

// parsePIDs reads a comma-separated list of process ids; "" and "0" are none.
func parsePIDs(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("--server-pid: want process ids, comma-separated, got %q", s)
		}
		out = append(out, pid)
	}
	return out, nil
}

func main() {
	o, err := parseOptions(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferry-bench:", err)
		os.Exit(2)
	}
	if _, err := raiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "ferry-bench: raising the open-file limit:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.maxTime)
	defer cancel()
	logw := io.Writer(os.Stderr)
	if o.quiet {
		logw = io.Discard
	}
	if o.mode == "storm" {
		results, err := runStorm(ctx, o, logw)
		for _, r := range results {
			r.print(os.Stdout)
			if o.jsonOut != "" {
				if werr := r.appendJSON(o.jsonOut); werr != nil {
					fmt.Fprintln(os.Stderr, "ferry-bench:", werr)
					os.Exit(1)
				}
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "ferry-bench:", err)
			os.Exit(1)
		}
		return
	}
	res, err := run(ctx, o, logw)
	if res != nil {
		res.print(os.Stdout)
		if o.jsonOut != "" {
			if werr := res.appendJSON(o.jsonOut); werr != nil {
				fmt.Fprintln(os.Stderr, "ferry-bench:", werr)
				os.Exit(1)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferry-bench:", err)
		os.Exit(1)
	}
}

// validateStorm checks the options of --mode storm and sets its own defaults: 10,000
// clients, all from one address.
func (o *options) validateStorm(set map[string]bool) error {
	if !set["clients"] {
		o.clients = 10000
	}
	if !set["rate"] {
		o.rate = 5
	}
	if !set["max-time"] {
		o.maxTime = 15 * time.Minute
	}
	if !set["connect-timeout"] {
		o.connTimeout = 5 * time.Minute
	}
	o.sources = 0
	if o.label == "" {
		o.label = "storm"
	}
	switch {
	case o.ferryBin == "":
		return errors.New("--ferry-bin: the storm mode runs and restarts the ferry binary itself")
	case o.clients < 3 || o.clients > 15000:
		return errors.New("--clients: want 3 to 15000")
	case o.nodes < 1 || o.nodes > 9:
		return errors.New("--nodes: want 1 to 9")
	case o.rate <= 0 || o.rate > 1000:
		return errors.New("--rate: want more than 0, at most 1000")
	case o.connConc < 1:
		return errors.New("--connect-concurrency: want at least 1")
	case o.maxTime <= 0 || o.maxTime > 30*time.Minute:
		return errors.New("--max-time: want at most 30m")
	}
	for _, s := range strings.Split(o.signals, ",") {
		if s != "term" && s != "kill" {
			return fmt.Errorf("--signals %q: want term and/or kill, comma-separated", o.signals)
		}
	}
	return nil
}
