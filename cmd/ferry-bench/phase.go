package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// runPhase publishes with schedule, waits for the deliveries to arrive, and measures.
func runPhase(ctx context.Context, o *options, st *stats, pub *publisher, srv *probe, ph int, active func() int64, schedule func(ctx context.Context, send func())) (*PhaseResult, error) {
	p := &st.phases[ph]
	readers := active()
	cpu0, self0 := srv.cpu(), selfCPU()
	t0 := time.Now()

	skipped := publishAll(ctx, o, st, pub, ph, schedule)
	published := p.published.Load()
	pubEnd := time.Now()
	expected := published * readers
	awaitDeliveries(ctx, p, expected, pubEnd, o.drain)
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
	pr.measureCPU(srv, cpu0, self0, end.Sub(t0))
	if ctx.Err() != nil {
		return pr, fmt.Errorf("run bound reached during phase %d: %w", ph, ctx.Err())
	}
	return pr, nil
}

// publishAll publishes to phase ph every time schedule calls send, and returns once every
// publish has ended. A burst publishes --burst-concurrency at a time, waiting for a free slot;
// a steady phase never waits for a slow publish: it keeps its schedule with up to 64
// requests in flight, so that a saturated server shows as latency, not as a lower rate,
// and skips a publish when all 64 are busy. It returns how many it skipped.
func publishAll(ctx context.Context, o *options, st *stats, pub *publisher, ph int, schedule func(ctx context.Context, send func())) (skipped int) {
	p := &st.phases[ph]
	conc := o.burstConc
	if ph == phaseRate {
		conc = 64
	}
	var seq atomic.Uint64
	seq.Store(seqBase(ph))
	sem := make(chan struct{}, conc)
	var inflight sync.WaitGroup
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
	return skipped
}

// awaitDeliveries waits for the last deliveries of phase p: until all expected arrived,
// or nothing arrived for a while, or drain has passed since pubEnd, or ctx ends.
func awaitDeliveries(ctx context.Context, p *phase, expected int64, pubEnd time.Time, drain time.Duration) {
	deadline := pubEnd.Add(drain)
	lastCount, lastChange := p.delivered.Load(), time.Now()
	for p.delivered.Load()+p.dups.Load() < expected && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if n := p.delivered.Load(); n != lastCount {
			lastCount, lastChange = n, time.Now()
		} else if time.Since(lastChange) > min(drain, 5*time.Second) && time.Since(pubEnd) > 2*time.Second {
			break
		}
	}
}

// measureCPU fills in the server's CPU (read by srv, cpu0 at the phase's start) and the
// generator's own (self0 at the start) over the phase's wall time.
func (pr *PhaseResult) measureCPU(srv *probe, cpu0, self0, wall time.Duration) {
	if cpu1 := srv.cpu(); cpu0 >= 0 && cpu1 >= 0 {
		pr.ServerCPUSecs = round3((cpu1 - cpu0).Seconds())
		if pr.Delivered > 0 {
			pr.ServerCPUPerDeliveryUs = round3(float64((cpu1 - cpu0).Microseconds()) / float64(pr.Delivered))
		}
		pr.ServerCPUPercent = round1(100 * (cpu1 - cpu0).Seconds() / wall.Seconds())
	}
	if self1 := selfCPU(); self0 >= 0 && self1 >= 0 {
		pr.GenCPUPercent = round1(100 * (self1 - self0).Seconds() / wall.Seconds())
	}
}
