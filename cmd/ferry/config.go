package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/ferryrt/ferry/bridge"
	"github.com/ferryrt/ferry/bridge/broker"
	ferrymemory "github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// options are the settings of the ferry binary. Every flag has an environment variable
// FERRY_<NAME> (dashes become underscores); a flag on the command line wins.
type options struct {
	addr           string
	base           string
	secret         string
	apiKey         string
	allowedOrigins string
	transports     string
	clientPublish  string
	heartbeat      time.Duration
	pollHold       time.Duration
	pollLinger     time.Duration
	sessionTTL     time.Duration
	dedupeTTL      time.Duration
	storeTimeout   time.Duration
	maxMessage     int
	maxChannels    int
	queueMessages  int
	queueBytes     int
	historySize    int
	historyTTL     time.Duration
	idempotencyTTL time.Duration
	drainTimeout   time.Duration
	logLevel       string
	logFormat      string
	stateFile      string
	dataDir        string // "" when off; see dataDirExplicit
	// dataDirExplicit is set when --data-dir came from the command line, the environment or
	// the config file: then a directory that can't be used stops the start, while the
	// default only earns a warning.
	dataDirExplicit bool
	configFile      string
	tokenKey        string
	allowAnonymous  bool
	tlsCert         string
	tlsKey          string
	maxConns        int
	maxConnsPerIP   int
	maxSessions     int
	negotiateRate   float64
	negotiateBurst  int
	upstreamRate    float64
	trustForwarded  bool
	headerTimeout   time.Duration
	io              string
	debugAddr       string
	redisURL        string
	nodeID          string
	presence        string
	upstreamStream  string
	demo            bool
	ticker          time.Duration
}

// flagHelp is returned by parseOptions when --help was asked for and shown.
var flagHelp = errors.New("help shown")

// history is the history every channel keeps, in the broker and in the server alike.
func (o *options) history() bridge.HistoryConfig {
	return bridge.HistoryConfig{Size: o.historySize, TTL: o.historyTTL}
}

// envName returns the environment variable of a flag.
func envName(flagName string) string {
	return "FERRY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func newFlagSet(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ferry", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.configFile, "config", "", "file of settings, one `name = value` per line with flag names (flags and environment win)")
	fs.StringVar(&o.addr, "addr", ":8080", "listen address")
	fs.StringVar(&o.base, "base", bridge.DefaultBase, "path prefix of the Ferry endpoints")
	fs.StringVar(&o.secret, "secret", "", "secret that signs session credentials; the same on every node (empty: the one stored in --data-dir, generated once; without a data dir, random per start)")
	fs.StringVar(&o.apiKey, "api-key", "", "bearer key for POST <base>/api/publish (empty: publish API disabled)")
	fs.StringVar(&o.tokenKey, "token-key", "", "HMAC key verifying HS256 JWTs (Authorization: Bearer, ?token= or cookie ferry_token); sub is the identity, channels the granted patterns")
	fs.BoolVar(&o.allowAnonymous, "allow-anonymous", false, "let requests without a token in when --token-key is set (without --token-key everyone is anonymous)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "certificate file (PEM): serve HTTPS and wss:// (needs --tls-key)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "private key file (PEM) of --tls-cert")
	fs.IntVar(&o.maxConns, "max-conns", transport.DefaultMaxConns, "open connections (WebSocket, SSE, held polls) per node; beyond it 503")
	fs.IntVar(&o.maxConnsPerIP, "max-conns-per-ip", 0, "open connections per client address; beyond it 429 (0: no per-address cap; see docs/OPERATIONS.md before setting one: a NAT or a proxy is one address)")
	fs.IntVar(&o.maxSessions, "max-sessions", ferrymemory.DefaultMaxSessions, "live sessions the in-memory broker keeps (not with --redis); beyond it negotiations get 503, code 4000: try another node")
	fs.Float64Var(&o.negotiateRate, "negotiate-rate", 0, "new sessions per second per client address; beyond it 429 (0: no per-address rate; see docs/OPERATIONS.md)")
	fs.IntVar(&o.negotiateBurst, "negotiate-burst", 0, "new sessions one client address may open at once under --negotiate-rate (0: ten seconds' worth, at least 50)")
	fs.Float64Var(&o.upstreamRate, "upstream-rate", session.DefaultUpstreamRate, "upstream messages per second per session (burst "+strconv.Itoa(session.DefaultUpstreamBurst)+"); beyond it they are refused with 4029 and resent")
	fs.StringVar(&o.debugAddr, "debug-addr", "", "if set, serve Go's profiler (/debug/pprof/) on this address, apart from clients; keep it private")
	fs.StringVar(&o.io, "io", "pooled", "connection I/O: pooled (idle connections hold no goroutine; Linux) or plain (a goroutine per connection, net/http's own serving)")
	fs.DurationVar(&o.headerTimeout, "header-timeout", transport.DefaultHeaderTimeout, "time a client has to send its request headers (slowloris)")
	fs.BoolVar(&o.trustForwarded, "trust-forwarded-for", false, "take the client address from X-Forwarded-For and the scheme of same-origin pages from X-Forwarded-Proto (only behind a proxy that sets them)")
	fs.StringVar(&o.allowedOrigins, "allowed-origins", "", "comma-separated origins allowed for WebSocket and cross-origin requests (* for any; same host is always allowed)")
	fs.StringVar(&o.transports, "transports", strings.Join([]string{transport.WebSocket, transport.SSE, transport.LongPoll}, ","), "transports offered to clients, comma-separated")
	fs.StringVar(&o.clientPublish, "client-publish", "room:*,chat:*", "channel patterns clients may publish to, comma-separated (empty: none)")
	fs.DurationVar(&o.heartbeat, "heartbeat", session.DefaultHeartbeat, "interval of heartbeats; keep under the idle timeout of proxies on the way")
	fs.DurationVar(&o.pollHold, "poll-hold", session.DefaultPollHold, "longest hold of a long-poll request; keep under the idle timeout of proxies on the way")
	fs.DurationVar(&o.pollLinger, "poll-linger", session.DefaultPollLinger, "how long a long-poll session stays subscribed between polls, for the next poll to continue from; 0 turns it off")
	fs.DurationVar(&o.sessionTTL, "session-ttl", session.DefaultSessionTTL, "a session absent this long expires")
	fs.DurationVar(&o.dedupeTTL, "dedupe-ttl", 0, "how long a client's upstream dedupe window outlives its latest frame, so that frames resent after 4005 under a new session are recognised (0: twice --session-ttl; at least --session-ttl)")
	fs.DurationVar(&o.storeTimeout, "store-timeout", session.DefaultStoreTimeout, "longest wait of one request for Redis (session check, attach, history, subscribe); beyond it the request fails with 503/4000 and the client retries")
	fs.IntVar(&o.maxMessage, "max-message", session.DefaultMaxMessageBytes, "largest message payload in bytes")
	fs.IntVar(&o.maxChannels, "max-channels", session.DefaultMaxChannels, "most channels one session may subscribe")
	fs.IntVar(&o.queueMessages, "queue-messages", session.DefaultQueueMessages, "frames queued per connection before it is dropped as a slow consumer")
	fs.IntVar(&o.queueBytes, "queue-bytes", session.DefaultQueueBytes, "bytes queued per connection before it is dropped as a slow consumer")
	fs.IntVar(&o.historySize, "history-size", broker.DefaultHistorySize, "messages kept per channel for resume")
	fs.DurationVar(&o.historyTTL, "history-ttl", broker.DefaultHistoryTTL, "age after which messages leave a channel's history")
	fs.DurationVar(&o.idempotencyTTL, "idempotency-ttl", broker.DefaultIdempotencyTTL, "how long a publish's Idempotency-Key (POST <base>/api/publish, the id of a --redis publish stream entry) is remembered: a retry with it within this window publishes nothing and gets the first answer")
	fs.StringVar(&o.redisURL, "redis", "", "Redis URL shared by several nodes: redis://host:port/db (rediss:// for TLS), or redis+cluster://host1:port1,host2:port2,... for a Redis Cluster; empty: the in-memory broker, one node")
	fs.StringVar(&o.presence, "presence", "room:*,chat:*", "channel patterns that keep presence (who is subscribed), comma-separated (empty: none)")
	fs.StringVar(&o.upstreamStream, "upstream-stream", "", "Redis stream that receives what clients send, for backends reading with consumer groups (needs --redis)")
	fs.StringVar(&o.nodeID, "node-id", "", "name of this node in Redis and logs (default random)")
	fs.StringVar(&o.dataDir, "data-dir", "", "directory (created 0700) keeping the stored --secret and the in-memory broker's state across a graceful restart (default $XDG_STATE_HOME/ferry, else $HOME/.local/state/ferry; none: keep nothing)")
	fs.StringVar(&o.stateFile, "state-file", "", "file where the in-memory broker keeps channel history and sessions across a graceful restart (default: state.json in --data-dir)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Second, "how long a graceful shutdown waits for connections to move away")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.BoolVar(&o.demo, "demo", true, "serve the demo pages at / and publish the demo ticker")
	fs.DurationVar(&o.ticker, "ticker", time.Second, "interval of the demo ticker channel (0: off)")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: ferry [flags]\n\nEvery flag can also be set by an environment variable, shown in brackets.\n\n")
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %s)", f.DefValue)
			}
			fmt.Fprintf(out, "  --%s [%s]\n    \t%s%s\n", f.Name, envName(f.Name), f.Usage, def)
		})
	}
	return fs
}

// parseOptions reads flags from args and, for flags not on the command line, from the
// environment. An invalid value fails with a message naming the flag or variable.
func parseOptions(args []string, getenv func(string) string, out io.Writer) (*options, error) {
	o, _, err := parse(args, getenv, out)
	return o, err
}

// parse is parseOptions, also returning the flag set bound to the options.
func parse(args []string, getenv func(string) string, out io.Writer) (*options, *flag.FlagSet, error) {
	o := &options{}
	fs := newFlagSet(o, out)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, flagHelp
		}
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("invalid value %q for %s (--%s): %v", v, envName(f.Name), f.Name, e)
			}
			set[f.Name] = true
		}
	})
	if err != nil {
		return nil, nil, err
	}
	if o.configFile != "" {
		if err := applyConfigFile(fs, o.configFile, set); err != nil {
			return nil, nil, err
		}
	}
	// The flag's own default is empty: a value means the flag, the environment or the config
	// file named a directory; an empty one given on the command line turns it off.
	if o.dataDirExplicit = set["data-dir"] || o.dataDir != ""; !o.dataDirExplicit {
		o.dataDir = defaultDataDir(getenv)
	} else if dataDirOff(o.dataDir) {
		o.dataDir = ""
	}
	return o, fs, o.validate()
}

// validate checks every value, and the values together, so that a bad setting stops the
// start with a message naming its flag rather than misbehaving later.
func (o *options) validate() error {
	for _, check := range []func() error{o.checkRanges, o.checkChoices, o.checkCombinations, o.checkAddrs, o.checkPatterns, o.checkTLS} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// checkRanges checks the numbers and durations one by one.
func (o *options) checkRanges() error {
	positive := []struct {
		name string
		ok   bool
	}{
		{"heartbeat", o.heartbeat >= 100*time.Millisecond},
		{"poll-hold", o.pollHold >= 100*time.Millisecond},
		{"poll-linger", o.pollLinger >= 0},
		{"session-ttl", o.sessionTTL >= time.Second},
		{"store-timeout", o.storeTimeout >= 10*time.Millisecond},
		{"max-message", o.maxMessage >= 64},
		{"max-channels", o.maxChannels >= 1},
		{"queue-messages", o.queueMessages >= 8},
		{"queue-bytes", o.queueBytes >= 1024},
		{"history-size", o.historySize >= 1},
		{"history-ttl", o.historyTTL >= time.Second},
		{"idempotency-ttl", o.idempotencyTTL >= time.Second},
		{"drain-timeout", o.drainTimeout >= 0},
		{"ticker", o.ticker >= 0},
		{"header-timeout", o.headerTimeout >= 10*time.Millisecond},
		{"negotiate-burst", o.negotiateBurst >= 0},
	}
	for _, p := range positive {
		if !p.ok {
			return fmt.Errorf("invalid value for --%s: out of range", p.name)
		}
	}
	if o.maxConns < 1 || o.upstreamRate <= 0 {
		return fmt.Errorf("invalid value for --max-conns or --upstream-rate: must be positive")
	}
	if o.maxConnsPerIP < 0 || o.negotiateRate < 0 {
		return fmt.Errorf("invalid value for --max-conns-per-ip or --negotiate-rate: must be positive, or 0 for no per-address limit")
	}
	if o.maxSessions < 1 {
		return fmt.Errorf("invalid value %d for --max-sessions: must be positive", o.maxSessions)
	}
	return nil
}

// checkChoices checks the flags that take one of a few words.
func (o *options) checkChoices() error {
	switch o.logLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("invalid value %q for --log-level: want debug, info, warn or error", o.logLevel)
	}
	switch o.logFormat {
	case "text", "json":
	default:
		return fmt.Errorf("invalid value %q for --log-format: want text or json", o.logFormat)
	}
	if _, err := transport.ParseIOMode(o.io); err != nil {
		return fmt.Errorf("invalid value %q for --io: want pooled or plain", o.io)
	}
	for _, t := range splitList(o.transports) {
		switch t {
		case transport.WebSocket, transport.SSE, transport.LongPoll:
		default:
			return fmt.Errorf("invalid value %q for --transports: unknown transport %q", o.transports, t)
		}
	}
	return nil
}

// checkCombinations checks the flags that depend on one another.
func (o *options) checkCombinations() error {
	if o.upstreamStream != "" && o.redisURL == "" {
		return fmt.Errorf("invalid value for --upstream-stream: needs --redis")
	}
	if o.redisURL != "" && o.stateFile != "" {
		return fmt.Errorf("invalid value for --state-file: it keeps the in-memory broker's state; with --redis, Redis keeps it")
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return fmt.Errorf("invalid value for --tls-cert/--tls-key: set both or neither")
	}
	if o.redisURL != "" && o.maxSessions != ferrymemory.DefaultMaxSessions {
		return fmt.Errorf("invalid value for --max-sessions: it bounds the in-memory broker; with --redis, sessions live in Redis, which has no such bound")
	}
	if o.dedupeTTL != 0 && o.dedupeTTL < o.sessionTTL {
		return fmt.Errorf("invalid value for --dedupe-ttl: must be 0 or at least --session-ttl")
	}
	if o.heartbeat*2 > o.sessionTTL {
		return fmt.Errorf("invalid value for --session-ttl: must be at least twice --heartbeat")
	}
	return nil
}

// checkAddrs checks the listen addresses.
func (o *options) checkAddrs() error {
	if err := checkAddr(o.addr); err != nil {
		return fmt.Errorf("invalid value %q for --addr: %v", o.addr, err)
	}
	if o.debugAddr != "" {
		if err := checkAddr(o.debugAddr); err != nil {
			return fmt.Errorf("invalid value %q for --debug-addr: %v", o.debugAddr, err)
		}
	}
	return nil
}

// checkPatterns checks the channel patterns and the allowed origins.
func (o *options) checkPatterns() error {
	for _, f := range []struct{ name, value string }{{"client-publish", o.clientPublish}, {"presence", o.presence}} {
		for _, p := range splitList(f.value) {
			// The same check bridge makes, here so that the message names the flag. A bad
			// --presence pattern would otherwise match nothing, silently.
			if _, err := path.Match(p, ""); err != nil {
				return fmt.Errorf("invalid value %q for --%s: bad pattern %q: %v", f.value, f.name, p, err)
			}
		}
	}
	for _, origin := range splitList(o.allowedOrigins) {
		if err := checkOrigin(origin); err != nil {
			return fmt.Errorf("invalid value %q for --allowed-origins: %q %v", o.allowedOrigins, origin, err)
		}
	}
	return nil
}

// checkTLS loads the certificate and its key here, not only in the listener, so that a
// missing or mismatched file stops the start with the flag's name rather than after the
// port is taken.
func (o *options) checkTLS() error {
	if o.tlsCert == "" {
		return nil
	}
	for _, f := range []struct{ name, file string }{{"tls-cert", o.tlsCert}, {"tls-key", o.tlsKey}} {
		if _, err := os.Stat(f.file); err != nil {
			return fmt.Errorf("invalid value %q for --%s: %v", f.file, f.name, err)
		}
	}
	if _, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey); err != nil {
		return fmt.Errorf("invalid value for --tls-cert/--tls-key: %v", err)
	}
	return nil
}

// checkAddr checks the form net.Listen("tcp", addr) takes, [host]:port with a port
// number or service name; whether the host is this machine's is for Listen to say.
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return err
	}
	return nil
}

// checkOrigin accepts "*" and origins as browsers send them in the Origin header:
// scheme://host[:port], nothing more. An entry with a path, a trailing slash or a default
// port is compared as a string with that header and would never match.
func checkOrigin(s string) error {
	if s == "*" {
		return nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("is not a URL: %v", err)
	case u.Scheme == "" || u.Host == "" || u.Opaque != "":
		return errors.New("is not an origin: want scheme://host[:port]")
	case u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(s, "?") || strings.HasSuffix(s, "#"):
		return errors.New("is not an origin: want scheme://host[:port], without user, path (not even a trailing /), query or fragment")
	case (u.Scheme == "https" && u.Port() == "443") || (u.Scheme == "http" && u.Port() == "80"):
		return errors.New("names the default port, which browsers leave out of Origin: drop it")
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// applyConfigFile sets, from a file of "name = value" lines, the flags that neither the
// command line nor the environment set. Blank lines and lines starting with # are skipped.
func applyConfigFile(fs *flag.FlagSet, name string, set map[string]bool) error {
	data, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"`)
		f := fs.Lookup(k)
		switch {
		case !ok:
			return fmt.Errorf("--config %s:%d: want name = value", name, i+1)
		case f == nil || k == "config":
			return fmt.Errorf("--config %s:%d: unknown setting %q", name, i+1, k)
		case set[k]:
			continue
		}
		if err := f.Value.Set(v); err != nil {
			return fmt.Errorf("--config %s:%d: invalid value %q for --%s: %v", name, i+1, v, k, err)
		}
	}
	return nil
}

// ioMode is --io as a transport.IOMode; validate has checked it.
func (o *options) ioMode() transport.IOMode {
	m, _ := transport.ParseIOMode(o.io)
	return m
}
