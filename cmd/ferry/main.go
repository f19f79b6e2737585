// Command ferry runs a Ferry server: the endpoints under --base, an echo handler that
// sends every upstream message back to its session, and the demo pages. It holds no
// protocol logic: that lives in session/, transport/ and bridge/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferryrt/ferry/bridge"
	// Imported under these names: run's variables are called memory, presence and broker.
	ferrymemory "github.com/ferryrt/ferry/bridge/memory"
	ferrypresence "github.com/ferryrt/ferry/bridge/presence"
	ferryredis "github.com/ferryrt/ferry/bridge/redis"
	"github.com/ferryrt/ferry/transport"
)

// idleTimeout closes keep-alive connections that carry no request, on net/http and on
// the connections taken over for long-polling alike.
const idleTimeout = 2 * time.Minute

func main() {
	o, err := parseOptions(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flagHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferry:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ferry:", err)
		os.Exit(1)
	}
}

func newLogger(o *options, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(o.logLevel))
	opts := &slog.HandlerOptions{Level: level}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// run serves until ctx is cancelled, then drains.
func run(ctx context.Context, o *options, logw io.Writer) error {
	log := newLogger(o, logw)
	keep, err := openPersistence(o, log)
	if err != nil {
		return err
	}
	defer keep.close()
	history := bridge.HistoryConfig{Size: o.historySize, TTL: o.historyTTL}
	var broker bridge.Broker
	var memory *ferrymemory.Broker
	var rb *ferryredis.Broker
	if o.redisURL != "" {
		var err error
		rb, err = ferryredis.New(ctx, ferryredis.Config{URL: o.redisURL, NodeID: o.nodeID,
			History: history, MaxMessageBytes: o.maxMessage, Logger: log})
		if err != nil {
			return fmt.Errorf("--redis: %w", err)
		}
		broker = rb
	} else {
		// The bound of bridge.Config.MaxSessions, set on the broker itself: the binary makes
		// its broker (to load and save --state-file), and bridge bounds only one it makes.
		memory = ferrymemory.New(ferrymemory.Config{History: history, MaxSessions: o.maxSessions})
		if keep.stateFile != "" {
			if err := loadState(memory, keep.stateFile); err != nil {
				return err
			}
		}
		broker = memory
	}
	defer broker.Close()
	// Presence outlives no broker: closed first (defers run in reverse).
	var presence bridge.Presence
	if o.presence != "" {
		pcfg := ferrypresence.Config{TTL: 2 * max(o.heartbeat, o.pollHold), Logger: log}
		if rb != nil {
			presence = ferryredis.NewPresence(rb, pcfg)
		} else {
			presence = ferrypresence.NewMemory(memory, pcfg)
		}
		defer presence.Close()
	}
	// Upstream messages: echoed to their session (the demo's echo service), and with
	// --upstream-stream also appended to a Redis stream for backends.
	var toStream func(context.Context, bridge.Upstream) error
	if o.upstreamStream != "" {
		toStream = ferryredis.UpstreamToStream(rb.Client(), ferryredis.UpstreamConfig{Stream: o.upstreamStream})
	}
	var authenticate transport.Authenticator
	if o.tokenKey != "" {
		authenticate = bridge.JWTAuthenticator(bridge.JWTConfig{Key: []byte(o.tokenKey)})
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var srv *bridge.Server
	srv, err = bridge.New(bridge.Config{
		Metrics:        reg,
		Authenticate:   authenticate,
		Broker:         broker,
		Base:           o.base,
		Secret:         []byte(keep.secret),
		APIKey:         o.apiKey,
		AllowedOrigins: splitList(o.allowedOrigins),
		Transports:     splitList(o.transports),
		ClientPublish:  splitList(o.clientPublish),
		AllowAnonymous: o.allowAnonymous,
		UpstreamRate:   o.upstreamRate,
		Limits: transport.Limits{
			MaxConns:          o.maxConns,
			MaxConnsPerIP:     o.maxConnsPerIP,
			NegotiateRate:     o.negotiateRate,
			NegotiateBurst:    o.negotiateBurst,
			TrustForwardedFor: o.trustForwarded,
		},
		History:         history,
		Heartbeat:       o.heartbeat,
		PollHold:        o.pollHold,
		HeaderTimeout:   o.headerTimeout,
		IdleTimeout:     idleTimeout,
		PollLinger:      pollLinger(o.pollLinger),
		SessionTTL:      o.sessionTTL,
		DedupeTTL:       o.dedupeTTL,
		StoreTimeout:    o.storeTimeout,
		MaxMessageBytes: o.maxMessage,
		MaxChannels:     o.maxChannels,
		QueueMessages:   o.queueMessages,
		QueueBytes:      o.queueBytes,
		Logger:          log,
		// The echo service: every upstream message goes back to its session's channel.
		Presence:         presence,
		PresenceChannels: splitList(o.presence),
		OnMessage: func(ctx context.Context, m bridge.Upstream) error {
			if toStream != nil {
				if err := toStream(ctx, m); err != nil {
					return err
				}
			}
			_, err := srv.PublishToSession(ctx, m.Session, echoReply{Seq: m.Seq, Echo: m.Data})
			return err
		},
	})
	if err != nil {
		return err
	}
	if o.tokenKey == "" {
		log.Info("no --token-key: every session is anonymous")
	}
	keep.logSecret(log, o.redisURL != "")

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	srv.MountEcho(e)
	if o.demo {
		mountDemo(e, srv.Base())
	}
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	e.GET("/readyz", func(c echo.Context) error {
		if err := srv.Ready(c.Request().Context()); err != nil {
			return c.String(http.StatusServiceUnavailable, err.Error()+"\n")
		}
		return c.String(http.StatusOK, "ready\n")
	})

	hs := &http.Server{
		Handler:           e,
		ReadHeaderTimeout: o.headerTimeout,  // slowloris: headers must arrive promptly
		ReadTimeout:       30 * time.Second, // and bodies; hijacked WebSockets set their own deadlines
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		// TLS handshake failures and the like are the client's doing: debug level.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// No WriteTimeout: SSE streams and long-polls set per-write deadlines themselves.
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	if o.debugAddr != "" {
		stop, err := serveDebug(o.debugAddr, log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stop()
	}
	if memory != nil && keep.stateFile != "" {
		// The state now lives in the broker alone, until the drain writes it back. Were a
		// crash to leave the file, the next start would load positions older than what
		// clients have seen, and reuse offsets they hold for other messages: a silent gap.
		// Without the file, a crash costs the new epochs of a fresh broker: an honest reset.
		if err := os.Remove(keep.stateFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			ln.Close()
			return fmt.Errorf("state file: %w", err)
		}
	}
	log.Info("ferry listening", "addr", ln.Addr().String(), "base", srv.Base(), "demo", o.demo, "tls", o.tlsCert != "")

	if o.demo && o.ticker > 0 {
		go runTicker(ctx, srv, o.ticker)
	}
	errc := make(chan error, 1)
	go func() {
		if o.tlsCert != "" {
			errc <- hs.ServeTLS(ln, o.tlsCert, o.tlsKey)
			return
		}
		errc <- hs.Serve(ln)
	}()
	// Keep-alive connections the long-polling handler took over come back through this
	// listener when they carry another request; it ends with hs.Shutdown.
	go hs.Serve(srv.Handoff())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}

	log.Info("draining", "timeout", o.drainTimeout)
	dctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	if err := hs.Shutdown(dctx); err != nil {
		hs.Close()
	}
	if memory != nil && keep.stateFile != "" {
		if err := saveState(memory, keep.stateFile); err != nil {
			return err
		}
		log.Info("state saved", "file", keep.stateFile)
	}
	log.Info("stopped")
	return nil
}

// loadState loads the broker's state from name, if the file exists. run removes the file
// once the node serves, so a state file is only ever the one a drain wrote.
func loadState(b *ferrymemory.Broker, name string) error {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	defer f.Close()
	if err := b.Load(f); err != nil {
		return fmt.Errorf("state file %s: %w (remove it to start afresh: clients then get a reset)", name, err)
	}
	return nil
}

// saveState writes the state next to name, private to this user (it holds messages), and
// renames it into place once on disk, so that a crash mid-write leaves no half state.
func saveState(b *ferrymemory.Broker, name string) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	err = b.Save(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state file: %w", err)
	}
	syncDir(filepath.Dir(name))
	return nil
}

// persistence is what run keeps between starts: the signing secret and where the
// in-memory broker's state goes.
type persistence struct {
	secret       string
	secretSource string // "flag", "data-dir" or "random"
	secretFile   string // with "data-dir"
	stateFile    string // "" for none
	unlock       func()
}

// openPersistence takes the data directory, if any, and decides the secret and the state
// file: --secret wins over the stored secret, --state-file over the data directory's.
func openPersistence(o *options, log *slog.Logger) (*persistence, error) {
	p := &persistence{secret: o.secret, secretSource: "flag", unlock: func() {}}
	if o.redisURL == "" {
		p.stateFile = o.stateFile
	}
	if o.dataDir != "" {
		dd, err := openDataDir(o.dataDir)
		switch {
		case err != nil && o.dataDirExplicit:
			return nil, fmt.Errorf("--data-dir %s: %w (every node needs its own; --data-dir none keeps nothing)", o.dataDir, err)
		case err != nil:
			log.Warn("the default data directory can't be used: sessions and history will not survive a restart; set --data-dir (FERRY_DATA_DIR), or --data-dir none to silence this",
				"dir", o.dataDir, "err", err)
		default:
			p.unlock = dd.unlock
			if dd.loosePerms() {
				log.Warn("the data directory can be read by other users: it holds the signing secret", "dir", dd.path)
			}
			if p.secret == "" {
				s, created, err := dd.secret()
				if err != nil {
					dd.unlock()
					return nil, fmt.Errorf("--data-dir: %w", err)
				}
				p.secret, p.secretSource, p.secretFile = s, "data-dir", filepath.Join(dd.path, secretFileName)
				if created {
					log.Info("generated a signing secret", "file", p.secretFile)
				}
			}
			if p.stateFile == "" && o.redisURL == "" {
				p.stateFile = dd.statePath()
			}
			log.Info("data directory", "dir", dd.path, "state_file", p.stateFile)
		}
	}
	if p.secret == "" {
		p.secretSource = "random"
	}
	return p, nil
}

func (p *persistence) close() { p.unlock() }

// logSecret says where the signing secret comes from and warns where it will hurt: a
// random one resets every client at each restart, and on several nodes (Redis) any
// secret but a shared one refuses the sessions of the other nodes.
func (p *persistence) logSecret(log *slog.Logger, cluster bool) {
	switch {
	case p.secretSource == "random" && cluster:
		log.Warn("no --secret and no data directory: this node signs sessions with a random key, which no other node shares: sessions that move between nodes are refused (4005) and every client resets at a restart; give every node the same --secret")
	case p.secretSource == "random":
		log.Warn("no --secret and no data directory: sessions are signed with a random key and do not survive a restart")
	case p.secretSource == "data-dir" && cluster:
		log.Warn("with --redis every node must sign sessions with the same secret, but this node uses the one generated in its data directory: sessions that move to a node with another secret are refused (4005) and reset; give every node the same --secret (for example this file's content), and compare secret_id across the nodes' logs",
			"file", p.secretFile, "secret_id", secretFingerprint(p.secret))
	default:
		log.Info("signing secret", "from", p.secretSource, "file", p.secretFile, "secret_id", secretFingerprint(p.secret))
	}
}

type echoReply struct {
	Seq  uint64 `json:"seq"`
	Echo any    `json:"echo"`
}

// runTicker publishes a random walk on the "ticker" channel for the demo dashboard.
func runTicker(ctx context.Context, srv *bridge.Server, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	v := 100.0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			v += rand.NormFloat64()
			srv.Publish(ctx, "ticker", map[string]any{"ts": now.UnixMilli(), "value": v})
		}
	}
}

// pollLinger maps the flag, where 0 turns lingering off, to bridge.Config, where 0 is the
// default and a negative value turns it off.
func pollLinger(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// serveDebug serves the profiler on its own listener, so that it is never reachable on the
// client-facing address; stop closes it.
func serveDebug(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	log.Info("profiler listening", "addr", ln.Addr().String())
	return func() { hs.Close() }, nil
}
