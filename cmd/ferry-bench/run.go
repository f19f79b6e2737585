package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// run performs one bounded run: connect, settle, steady phase, burst phase, teardown.
// It returns what it measured even when it stops early on an error.
func run(ctx context.Context, o *options, logw io.Writer) (*Result, error) {
	logf := func(format string, a ...any) { fmt.Fprintf(logw, "ferry-bench: "+format+"\n", a...) }
	e, err := newEnv(o)
	if err != nil {
		return nil, err
	}
	pub, err := newPublisher(o, e.us)
	if err != nil {
		return nil, err
	}
	defer pub.close()

	res := &Result{Label: o.label, Scenario: o.scenario, Target: o.target, Transport: o.transport, Clients: o.clients, Stalled: o.stall, Time: time.Now().UTC().Format(time.RFC3339)}
	if len(e.us) > 1 || o.channels > 1 {
		res.Nodes, res.Channels = len(e.us), max(o.channels, 1)
	}
	st := newStats()
	srv := newProbe(o.serverPIDs)
	res.RSSBeforeKiB = srv.rss()

	cr := newCrowd(o, e, st, logf)
	logf("connecting %d %s clients to %s on %d channel(s) (%d at a time)", o.clients, res.Label, o.url, max(o.channels, 1), o.connConc)
	cr.connect(ctx, res)
	logf("connected %d of %d in %.1fs (%d errors)", res.Connected, o.clients, res.ConnectSeconds, res.ConnectErrors)
	defer cr.teardown()
	if res.Connected == 0 {
		res.Errors = st.errorCounts()
		return res, fmt.Errorf("no client connected:\n%s", st.errorSummary())
	}

	// ---- settle, memory ----------------------------------------------------------------
	if err := sleep(ctx, o.settle); err != nil {
		return res, err
	}
	res.RSSAfterKiB = srv.rss()
	if res.RSSBeforeKiB > 0 && res.RSSAfterKiB > 0 {
		res.KiBPerConn = round1(float64(res.RSSAfterKiB-res.RSSBeforeKiB) / float64(res.Connected))
	}
	active := func() int64 { return cr.active(res.Connected) }
	readers := cr.readers
	if o.rssEvery > 0 && len(o.serverPIDs) > 0 {
		stopRSS := srv.sampleRSS(o.rssEvery)
		defer func() { res.RSS = stopRSS() }()
	}

	if o.rate > 0 && o.duration > 0 {
		logf("steady phase: %.4g msg/s per channel for %s to %d readers", o.rate, o.duration, active())
		pr, err := runPhase(ctx, o, st, pub, srv, phaseRate, readers, steadyRate(o.rate, o.duration, o.channels))
		pr.Rate = o.rate
		res.Steady = pr
		if err != nil {
			res.Errors = st.errorCounts()
			return res, err
		}
	}
	if o.burst > 0 {
		logf("burst phase: %d messages per channel to %d readers", o.burst, active())
		pr, err := runPhase(ctx, o, st, pub, srv, phaseBurst, readers, burstOf(o.burst, o.channels))
		res.Burst = pr
		if err != nil {
			res.Errors = st.errorCounts()
			return res, err
		}
	}
	if o.pubTest > 0 {
		logf("publish-rate test: %s, %d publishes in flight, to %d readers", o.pubTest, o.burstConc, active())
		pr, err := runPhase(ctx, o, st, pub, srv, phasePubTest, readers, publishFor(o.pubTest, o.channels))
		res.PublishTest = pr
		if err != nil {
			res.Errors = st.errorCounts()
			return res, err
		}
	}
	res.Unknown = st.unknown.Load()
	res.Disconnected = cr.readEnded.Load()
	res.Errors = st.errorCounts()
	if s := st.errorSummary(); s != "" {
		logf("errors:\n%s", s)
	}
	return res, nil
}

// steadyRate is the schedule of the steady phase: rate ticks a second for d, each
// publishing once to every one of the channels.
func steadyRate(rate float64, d time.Duration, channels int) func(ctx context.Context, send func(ch int)) {
	return func(ctx context.Context, send func(ch int)) {
		interval := time.Duration(float64(time.Second) / rate)
		n := int(math.Round(rate * d.Seconds()))
		t := time.NewTicker(interval)
		defer t.Stop()
		for i := 0; i < n; i++ {
			if i > 0 {
				select {
				case <-t.C:
				case <-ctx.Done():
					return
				}
			}
			for c := range max(channels, 1) {
				send(c)
			}
		}
	}
}

// burstOf is the schedule of the burst phase: n publishes to each of the channels at
// once, the channels in turn.
func burstOf(n, channels int) func(ctx context.Context, send func(ch int)) {
	return func(ctx context.Context, send func(ch int)) {
		for i := 0; i < n && ctx.Err() == nil; i++ {
			for c := 0; c < max(channels, 1) && ctx.Err() == nil; c++ {
				send(c)
			}
		}
	}
}

// publishFor is the schedule of the publish-rate test: publishes back to back for d,
// the channels in turn (send waits for a free slot).
func publishFor(d time.Duration, channels int) func(ctx context.Context, send func(ch int)) {
	return func(ctx context.Context, send func(ch int)) {
		end := time.Now().Add(d)
		for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
			send(i % max(channels, 1))
		}
	}
}

// crowd is the clients of one run. They live in their own context: the run's ctx bounds
// the phases, and teardown cancels the clients' to close the connections.
type crowd struct {
	o    *options
	e    *env
	st   *stats
	logf func(format string, a ...any)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	connected   atomic.Int64
	connectDur  hist
	connectErrs atomic.Int64
	readEnded   atomic.Int64 // clients whose connection ended before teardown
	tearingDown atomic.Bool
	// chanReaders counts, per channel, the clients that read it: connected, not
	// stalled, not ended.
	chanReaders []atomic.Int64
}

func newCrowd(o *options, e *env, st *stats, logf func(format string, a ...any)) *crowd {
	cr := &crowd{o: o, e: e, st: st, logf: logf, chanReaders: make([]atomic.Int64, max(o.channels, 1))}
	cr.ctx, cr.cancel = context.WithCancel(context.Background())
	return cr
}

// connect starts --clients clients, --conn-conc at a time, each reading in its own
// goroutine once connected, and returns when each has connected or failed or the connect
// phase (--conn-timeout) is over. It records the outcome in res.
func (cr *crowd) connect(ctx context.Context, res *Result) {
	o := cr.o
	connCtx, connCancel := context.WithTimeout(ctx, o.connTimeout)
	sem := make(chan struct{}, o.connConc)
	start := time.Now()
	var launched sync.WaitGroup
	for i := range o.clients {
		select {
		case sem <- struct{}{}:
		case <-connCtx.Done():
		}
		if connCtx.Err() != nil {
			break
		}
		stalled := i >= o.clients-o.stall
		c := cr.e.newClient(i, stalled)
		ch := clientChannel(i, o.channels, len(cr.e.us))
		launched.Add(1)
		cr.wg.Add(1)
		go func() {
			defer cr.wg.Done()
			cr.runClient(connCtx, c, ch, stalled, func() { <-sem }, launched.Done)
		}()
	}
	launched.Wait()
	connCancel()
	res.ConnectSeconds = time.Since(start).Seconds()
	res.Connected = int(cr.connected.Load())
	res.ConnectErrors = int(cr.connectErrs.Load())
	res.ConnectP50Ms = ms(cr.connectDur.Quantile(0.5))
	res.ConnectP99Ms = ms(cr.connectDur.Quantile(0.99))
	res.ConnectMaxMs = ms(cr.connectDur.Max())
}

// runClient connects c, a client of channel ch, within the connect phase connCtx,
// calling connectEnded once it has connected or failed and launched once it is counted,
// then reads (a stalled client only waits) until teardown. Only this goroutine touches
// c, so it closes it too, whatever happens.
func (cr *crowd) runClient(connCtx context.Context, c client, ch int, stalled bool, connectEnded, launched func()) {
	t0 := time.Now()
	defer c.close()
	err := connectWithin(connCtx, cr.ctx, c)
	connectEnded()
	if err != nil {
		cr.connectErrs.Add(1)
		if cr.ctx.Err() == nil {
			cr.st.fail("connect", err)
		}
		launched()
		return
	}
	cr.connectDur.Record(time.Since(t0))
	cr.connected.Add(1)
	if !stalled {
		cr.chanReaders[ch].Add(1)
	}
	launched()
	if stalled {
		<-cr.ctx.Done()
		return
	}
	if err := c.read(cr.ctx, cr.st); err != nil && !cr.tearingDown.Load() {
		cr.chanReaders[ch].Add(-1)
		cr.readEnded.Add(1)
		cr.st.fail("connection ended", err)
	}
}

// active returns how many of the connected clients read: not stalled, not ended.
func (cr *crowd) active(connected int) int64 {
	return int64(connected) - int64(min(cr.o.stall, connected)) - cr.readEnded.Load()
}

// readers returns how many clients read each channel now.
func (cr *crowd) readers() []int64 {
	out := make([]int64, len(cr.chanReaders))
	for i := range cr.chanReaders {
		out[i] = cr.chanReaders[i].Load()
	}
	return out
}

// teardown cancels the clients' context, which fails every blocked read (each client
// watches it), and each client's goroutine then closes its connection; it waits up to
// 30 s for them.
func (cr *crowd) teardown() {
	cr.tearingDown.Store(true)
	cr.cancel()
	done := make(chan struct{})
	go func() { cr.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cr.logf("some clients did not end within 30s of teardown")
	}
}

// connectWithin runs c.connect bounded by connCtx (the connect phase) while the
// connection itself lives in clientCtx.
func connectWithin(connCtx, clientCtx context.Context, c client) error {
	ctx, cancel := context.WithCancel(clientCtx)
	stop := context.AfterFunc(connCtx, cancel)
	err := c.connect(ctx)
	if !stop() || ctx.Err() != nil {
		// The connect phase ended during connect: whatever connect achieved is cut.
		cancel()
		if err == nil {
			err = errors.New("connect phase timed out")
		}
		return err
	}
	// ctx now lives as long as the connection: it ends with clientCtx.
	context.AfterFunc(clientCtx, cancel)
	return err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func ms(d time.Duration) float64 { return round1(float64(d) / float64(time.Millisecond)) }

func round1(v float64) float64 { return math.Round(v*10) / 10 }
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// sortedKeys returns the keys of m in order.
func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
