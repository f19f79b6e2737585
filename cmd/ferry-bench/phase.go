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
// readers returns how many clients read each channel; what each channel's readers
// should receive is what was published to it, so the expected deliveries are the sum
// over the channels of published times readers.
func runPhase(ctx context.Context, o *options, st *stats, pub *publisher, srv *probe, ph int, readers func() []int64, schedule func(ctx context.Context, send func(ch int))) (*PhaseResult, error) {
	p := &st.phases[ph]
	byChan := readers()
	cpu0, self0 := srv.cpus(), selfCPU()
	t0 := time.Now()

	skipped, pubByChan := publishAll(ctx, o, st, pub, ph, schedule)
	published := p.published.Load()
	pubEnd := time.Now()
	var expected, nreaders int64
	for c, r := range byChan {
		nreaders += r
		if c < len(pubByChan) {
			expected += pubByChan[c] * r
		}
	}
	awaitDeliveries(ctx, p, expected, pubEnd, o.drain)
	end := time.Now()

	delivered := p.delivered.Load()
	pr := &PhaseResult{
		Published:     published,
		PublishErrors: p.pubErrors.Load(),
		Skipped:       int64(skipped),
		Readers:       nreaders,
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
		PublishP50Ms:  ms(p.pubLat.Quantile(0.50)),
		PublishP99Ms:  ms(p.pubLat.Quantile(0.99)),
	}
	if s := pubEnd.Sub(t0).Seconds(); s > 0 {
		pr.PublishesPerSec = math.Round(float64(published) / s)
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

// publishAll publishes to phase ph every time schedule calls send, to the channel send
// names, and returns once every publish has ended. A burst publishes --burst-concurrency
// at a time, waiting for a free slot; a steady phase never waits for a slow publish: it
// keeps its schedule with up to 64 requests in flight (with several channels, a second's
// worth of publishes if that is more), so that a saturated server shows as latency, not
// as a lower rate, and skips a publish when all are busy. It returns how many it skipped
// and how many it published to each channel. Each channel numbers its messages of the
// phase on its own.
func publishAll(ctx context.Context, o *options, st *stats, pub *publisher, ph int, schedule func(ctx context.Context, send func(ch int))) (skipped int, published []int64) {
	p := &st.phases[ph]
	nch := max(o.channels, 1)
	conc := o.burstConc
	if ph == phaseRate {
		conc = steadyInFlight(o.rate, nch)
	}
	seqs := make([]atomic.Uint64, nch)
	pubs := make([]atomic.Int64, nch)
	for i := range seqs {
		seqs[i].Store(seqBase(ph))
	}
	sem := make(chan struct{}, conc)
	var inflight sync.WaitGroup
	schedule(ctx, func(ch int) {
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
			t0 := time.Now()
			if err := pub.publish(ctx, ph, ch, seqs[ch].Add(1), o.payload); err != nil {
				p.pubErrors.Add(1)
				st.fail("publish", err)
				return
			}
			p.pubLat.Record(time.Since(t0))
			pubs[ch].Add(1)
			p.published.Add(1)
		}()
	})
	inflight.Wait()
	published = make([]int64, nch)
	for i := range pubs {
		published[i] = pubs[i].Load()
	}
	return skipped, published
}

// steadyInFlight is the most publishes the steady phase keeps in flight: 64, or with
// several channels a second's worth if that is more.
func steadyInFlight(rate float64, channels int) int {
	if channels <= 1 {
		return 64
	}
	return max(64, int(math.Ceil(rate*float64(channels))))
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

// measureCPU fills in the server's CPU (read by srv, cpu0 at the phase's start: one per
// process) and the generator's own (self0 at the start) over the phase's wall time. The
// server's figures are summed over its processes, and each has its own in Procs.
func (pr *PhaseResult) measureCPU(srv *probe, cpu0 []time.Duration, self0, wall time.Duration) {
	cpu1 := srv.cpus()
	var sum time.Duration
	ok := len(cpu0) > 0 && len(cpu1) == len(cpu0)
	for i := range cpu0 {
		if !ok || cpu0[i] < 0 || cpu1[i] < 0 {
			ok = false
			break
		}
		sum += cpu1[i] - cpu0[i]
	}
	if ok {
		pr.ServerCPUSecs, pr.ServerCPUPercent, pr.ServerCPUPerDeliveryUs = cpuFigures(sum, pr.Delivered, wall)
		for i, pid := range srv.pids {
			pc := ProcCPU{PID: pid, Name: procName(pid)}
			pc.CPUSecs, pc.CPUPercent, pc.CPUPerDeliveryUs = cpuFigures(cpu1[i]-cpu0[i], pr.Delivered, wall)
			pr.Procs = append(pr.Procs, pc)
		}
	}
	if self1 := selfCPU(); self0 >= 0 && self1 >= 0 {
		pr.GenCPUPercent = round1(100 * (self1 - self0).Seconds() / wall.Seconds())
	}
}

// cpuFigures is CPU time d over a phase of wall time and delivered deliveries: seconds,
// percent of one core, and microseconds per delivery (0 without deliveries).
func cpuFigures(d time.Duration, delivered int64, wall time.Duration) (secs, percent, usPerDelivery float64) {
	secs = round3(d.Seconds())
	if delivered > 0 {
		usPerDelivery = round3(float64(d.Microseconds()) / float64(delivered))
	}
	percent = round1(100 * d.Seconds() / wall.Seconds())
	return secs, percent, usPerDelivery
}
