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
const idleTimeout = transport.DefaultIdleTimeout

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
			History: history, MaxMessageBytes: o.maxMessage, IdempotencyTTL: o.idempotencyTTL, Logger: log})
		if err != nil {
			return fmt.Errorf("--redis: %w", err)
		}
		broker = rb
	} else {
		// The bound of bridge.Config.MaxSessions, set on the broker itself: the binary makes
		// its broker (to load and save --state-file), and bridge bounds only one it makes.
		memory = ferrymemory.New(ferrymemory.Config{History: history, MaxSessions: o.maxSessions, IdempotencyTTL: o.idempotencyTTL})
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
	srv, reg, err := newServer(o, keep, broker, presence, toStream, log)
	if err != nil {
		return err
	}
	keep.logSecret(log, o.redisURL != "")
	hs := newHTTPServer(o, srv, reg, log)
	ln, stopDebug, err := listen(o, log)
	if err != nil {
		return err
	}
	defer stopDebug()
	if err := keep.removeState(memory); err != nil {
		ln.Close()
		return err
	}
	log.Info("ferry listening", "addr", ln.Addr().String(), "base", srv.Base(), "demo", o.demo, "tls", o.tlsCert != "")

	if o.demo && o.ticker > 0 {
		go runTicker(ctx, srv, o.ticker)
	}
	if err := serve(ctx, o, hs, ln, srv.Handoff()); err != nil {
		return err
	}
	drain(o.drainTimeout, srv, hs, log)
	if err := keep.saveState(memory, log); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// newServer makes the bridge server with the echo service as its OnMessage: every
// upstream message goes back to its session, and with toStream also to a Redis stream.
// Its metrics are in reg, with the Go runtime's and the process's.
func newServer(o *options, keep *persistence, broker bridge.Broker, presence bridge.Presence,
	toStream func(context.Context, bridge.Upstream) error, log *slog.Logger) (*bridge.Server, *prometheus.Registry, error) {
	var authenticate transport.Authenticator
	if o.tokenKey != "" {
		authenticate = bridge.JWTAuthenticator(bridge.JWTConfig{Key: []byte(o.tokenKey)})
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var srv *bridge.Server
	var err error
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
		History:         o.history(),
		Heartbeat:       o.heartbeat,
		PollHold:        o.pollHold,
		HeaderTimeout:   o.headerTimeout,
		IO:              o.ioMode(),
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
		return nil, nil, err
	}
	if o.tokenKey == "" {
		log.Info("no --token-key: every session is anonymous")
	}
	return srv, reg, nil
}

// newHTTPServer serves srv on echo beside the demo pages, /metrics from reg, and the
// health and readiness probes.
func newHTTPServer(o *options, srv *bridge.Server, reg *prometheus.Registry, log *slog.Logger) *http.Server {
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

	return &http.Server{
		Handler:           e,
		ReadHeaderTimeout: o.headerTimeout,  // slowloris: headers must arrive promptly
		ReadTimeout:       30 * time.Second, // and bodies; hijacked WebSockets set their own deadlines
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		// TLS handshake failures and the like are the client's doing: debug level.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// No WriteTimeout: SSE streams and long-polls set per-write deadlines themselves.
	}
}

// listen takes --addr and, if set, serves the profiler on --debug-addr until stopDebug.
func listen(o *options, log *slog.Logger) (ln net.Listener, stopDebug func(), err error) {
	ln, err = net.Listen("tcp", o.addr)
	if err != nil {
		return nil, nil, fmt.Errorf("--addr: %w", err)
	}
	stopDebug = func() {}
	if o.debugAddr != "" {
		stopDebug, err = serveDebug(o.debugAddr, log)
		if err != nil {
			ln.Close()
			return nil, nil, err
		}
	}
	return ln, stopDebug, nil
}

// serve serves hs on ln, and on handoff the keep-alive connections the long-polling
// handler took over and gives back when they carry another request (that one ends with
// hs.Shutdown). It returns when ctx is cancelled, or with the error that ended ln.
func serve(ctx context.Context, o *options, hs *http.Server, ln, handoff net.Listener) error {
	errc := make(chan error, 1)
	go func() {
		if o.tlsCert != "" {
			errc <- hs.ServeTLS(ln, o.tlsCert, o.tlsKey)
			return
		}
		errc <- hs.Serve(ln)
	}()
	go hs.Serve(handoff)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return nil
	}
}

// drain moves the sessions away (srv closes their streams with 4003) and lets the
// requests in flight end, for at most timeout, then closes what is left.
func drain(timeout time.Duration, srv *bridge.Server, hs *http.Server, log *slog.Logger) {
	log.Info("draining", "timeout", timeout)
	dctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil {
		log.Warn("drain incomplete", "err", err)
	}
	if err := hs.Shutdown(dctx); err != nil {
		hs.Close()
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
