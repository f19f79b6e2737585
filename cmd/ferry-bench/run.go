package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
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
	pub, err := newPublisher(o, e.u)
	if err != nil {
		return nil, err
	}
	defer pub.close()

	res := &Result{Label: o.label, Scenario: o.scenario, Target: o.target, Transport: o.transport, Clients: o.clients, Stalled: o.stall, Time: time.Now().UTC().Format(time.RFC3339)}
	st := newStats()
	srv := newProbe(o.serverPID)
	res.RSSBeforeKiB = srv.rss()

	// Clients live in their own context: the run's ctx bounds the phases, cancelling
	// clientCtx tears the connections down.
	clientCtx, cancelClients := context.WithCancel(context.Background())
	defer cancelClients()
	var (
		wg          sync.WaitGroup
		connected   atomic.Int64
		connectDur  hist
		connectErrs atomic.Int64
		readEnded   atomic.Int64 // clients whose connection ended before teardown
		tearingDown atomic.Bool
	)

	// ---- connect --------------------------------------------------------------------
	logf("connecting %d %s clients to %s (%d at a time)", o.clients, res.Label, o.url, o.connConc)
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
		c := e.newClient(i, stalled)
		launched.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			// The connect is bounded by the connect phase, the connection by clientCtx.
			// Only this goroutine touches c, so it closes it too, whatever happens.
			defer c.close()
			err := connectWithin(connCtx, clientCtx, c)
			<-sem
			if err != nil {
				connectErrs.Add(1)
				if clientCtx.Err() == nil {
					st.fail("connect", err)
				}
				launched.Done()
				return
			}
			connectDur.Record(time.Since(t0))
			connected.Add(1)
			launched.Done()
			if stalled {
				<-clientCtx.Done()
				return
			}
			if err := c.read(clientCtx, st); err != nil && !tearingDown.Load() {
				readEnded.Add(1)
				st.fail("connection ended", err)
			}
		}()
	}
	launched.Wait()
	connCancel()
	res.ConnectSeconds = time.Since(start).Seconds()
	res.Connected = int(connected.Load())
	res.ConnectErrors = int(connectErrs.Load())
	res.ConnectP50Ms = ms(connectDur.Quantile(0.5))
	res.ConnectP99Ms = ms(connectDur.Quantile(0.99))
	res.ConnectMaxMs = ms(connectDur.Max())
	logf("connected %d of %d in %.1fs (%d errors)", res.Connected, o.clients, res.ConnectSeconds, res.ConnectErrors)

	// Cancelling clientCtx fails every blocked read (each client watches it), and each
	// client's goroutine then closes its connection.
	teardown := func() {
		tearingDown.Store(true)
		cancelClients()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			logf("some clients did not end within 30s of teardown")
		}
	}
	defer teardown()

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

	active := func() int64 {
		return int64(res.Connected) - int64(min(o.stall, res.Connected)) - readEnded.Load()
	}

	// ---- steady rate ----------------------------------------------------------------
	if o.rate > 0 && o.duration > 0 {
		logf("steady phase: %.4g msg/s for %s to %d readers", o.rate, o.duration, active())
		pr, err := runPhase(ctx, o, st, pub, srv, phaseRate, active, func(ctx context.Context, send func()) {
			interval := time.Duration(float64(time.Second) / o.rate)
			n := int(math.Round(o.rate * o.duration.Seconds()))
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
				send()
			}
		})
		pr.Rate = o.rate
		res.Steady = pr
		if err != nil {
			res.Errors = st.errorCounts()
			return res, err
		}
	}

	// ---- burst ------------------------------------------------------------------------
	if o.burst > 0 {
		logf("burst phase: %d messages to %d readers", o.burst, active())
		pr, err := runPhase(ctx, o, st, pub, srv, phaseBurst, active, func(ctx context.Context, send func()) {
			for i := 0; i < o.burst && ctx.Err() == nil; i++ {
				send()
			}
		})
		res.Burst = pr
		if err != nil {
			res.Errors = st.errorCounts()
			return res, err
		}
	}
	res.Unknown = st.unknown.Load()
	res.Disconnected = readEnded.Load()
	res.Errors = st.errorCounts()
	if s := st.errorSummary(); s != "" {
		logf("errors:\n%s", s)
	}
	return res, nil
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

// runPhase publishes with schedule, waits for the deliveries to arrive, and measures.
func runPhase(ctx context.Context, o *options, st *stats, pub *publisher, srv *probe, ph int, active func() int64, schedule func(ctx context.Context, send func())) (*PhaseResult, error) {
	p := &st.phases[ph]
	readers := active()
	cpu0, self0 := srv.cpu(), selfCPU()
	t0 := time.Now()

	conc := o.burstConc
	if ph == phaseRate {
		// A steady phase never waits for a slow publish: it keeps its schedule with up to
		// 64 requests in flight, so that a saturated server shows as latency, not as a
		// lower rate.
		conc = 64
	}
	var seq atomic.Uint64
	seq.Store(seqBase(ph))
	sem := make(chan struct{}, conc)
	var inflight sync.WaitGroup
	skipped := 0
	schedule(ctx, func() {
		select {
		case sem <- struct{}{}:
		default:
			if ph == phaseRate {
				skipped++
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			defer func() { <-sem }()
			if err := pub.publish(ctx, ph, seq.Add(1), o.payload); err != nil {
				p.pubErrors.Add(1)
				st.fail("publish", err)
				return
			}
			p.published.Add(1)
		}()
	})
	inflight.Wait()
	published := p.published.Load()
	pubEnd := time.Now()
	expected := published * readers

	// Wait for the last deliveries: until all arrived, or nothing arrived for a while,
	// or the drain bound.
	deadline := pubEnd.Add(o.drain)
	lastCount, lastChange := p.delivered.Load(), time.Now()
	for p.delivered.Load()+p.dups.Load() < expected && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if n := p.delivered.Load(); n != lastCount {
			lastCount, lastChange = n, time.Now()
		} else if time.Since(lastChange) > min(o.drain, 5*time.Second) && time.Since(pubEnd) > 2*time.Second {
			break
		}
	}
	end := time.Now()
	delivered := p.delivered.Load()
	pr := &PhaseResult{
		Published:     published,
		PublishErrors: p.pubErrors.Load(),
		Skipped:       int64(skipped),
		Readers:       readers,
		Expected:      expected,
		Delivered:     delivered,
		Lost:          max(0, expected-delivered),
		Dups:          p.dups.Load(),
		P50Ms:         ms(p.lat.Quantile(0.50)),
		P90Ms:         ms(p.lat.Quantile(0.90)),
		P99Ms:         ms(p.lat.Quantile(0.99)),
		P999Ms:        ms(p.lat.Quantile(0.999)),
		MaxMs:         ms(p.lat.Max()),
		MeanMs:        ms(p.lat.Mean()),
		PublishSecs:   round3(pubEnd.Sub(t0).Seconds()),
	}
	// Throughput: deliveries over the time from the first publish to the last delivery.
	if last := p.lastArrive.Load(); last > 0 && delivered > 0 {
		span := time.Unix(0, last).Sub(t0).Seconds()
		pr.Seconds = round3(span)
		if span > 0 {
			pr.DeliveriesPerSec = math.Round(float64(delivered) / span)
		}
	}
	if cpu1 := srv.cpu(); cpu0 >= 0 && cpu1 >= 0 {
		pr.ServerCPUSecs = round3((cpu1 - cpu0).Seconds())
		if delivered > 0 {
			pr.ServerCPUPerDeliveryUs = round3(float64((cpu1 - cpu0).Microseconds()) / float64(delivered))
		}
		pr.ServerCPUPercent = round1(100 * (cpu1 - cpu0).Seconds() / end.Sub(t0).Seconds())
	}
	if self1 := selfCPU(); self0 >= 0 && self1 >= 0 {
		pr.GenCPUPercent = round1(100 * (self1 - self0).Seconds() / end.Sub(t0).Seconds())
	}
	if ctx.Err() != nil {
		return pr, fmt.Errorf("run bound reached during phase %d: %w", ph, ctx.Err())
	}
	return pr, nil
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

// probe reads a local server's memory and CPU; with no pid it reports nothing.
type probe struct{ pid int }

func newProbe(pid int) *probe { return &probe{pid: pid} }

func (p *probe) rss() int64 {
	if p.pid <= 0 {
		return 0
	}
	v, err := rssKiB(p.pid)
	if err != nil {
		return 0
	}
	return v
}

func (p *probe) cpu() time.Duration {
	if p.pid <= 0 {
		return -1
	}
	v, err := cpuTime(strconv.Itoa(p.pid))
	if err != nil {
		return -1
	}
	return v
}

func selfCPU() time.Duration {
	v, err := cpuTime("self")
	if err != nil {
		return -1
	}
	return v
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
