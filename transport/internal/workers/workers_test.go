package workers

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPoolRunsEveryTaskInOrderOnOneWorker(t *testing.T) {
	p := New(1, 50*time.Millisecond, 0)
	const n = 1000
	var mu sync.Mutex
	var got []int
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		p.Go(func() {
			mu.Lock()
			got = append(got, i)
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	for i, v := range got {
		if v != i {
			t.Fatalf("task %d ran as number %d: a single worker must keep the order", v, i)
		}
	}
}

func TestPoolBoundsWorkersAndEndsThemWhenIdle(t *testing.T) {
	p := New(4, 20*time.Millisecond, 0)
	var running, peak atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	const n = 40
	wg.Add(n)
	for range n {
		p.Go(func() {
			defer wg.Done()
			if r := running.Add(1); r > peak.Load() {
				peak.Store(r)
			}
			<-release
			running.Add(-1)
		})
	}
	close(release)
	wg.Wait()
	if got := peak.Load(); got > 4 {
		t.Fatalf("%d tasks ran at once, the pool allows 4", got)
	}
	// Idle workers end: goleak (TestMain) fails the package if any is left.
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		w := p.workers
		p.mu.Unlock()
		if w == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still alive 5 s after the last task", w)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPoolTaskQueuedAsWorkerTimesOutStillRuns(t *testing.T) {
	// A worker whose keep time ends just as a task comes must not strand it.
	p := New(2, time.Millisecond, 0)
	for i := range 2000 {
		done := make(chan struct{})
		p.Go(func() { close(done) })
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("task %d never ran", i)
		}
		if i%7 == 0 {
			// Not a wait for anything: idle time, so that workers reach their 1 ms
			// keep and end, now and then just as Go hands them a task.
			time.Sleep(time.Millisecond)
		}
	}
}

// TestPoolTurnLetsOthersRun runs a long queue on one processor, with a goroutine made
// runnable just before: it must get its turn within one turn of tasks, not after the whole
// queue (without the yield it waits until the worker runs out of tasks, or for the
// scheduler's 10 ms preemption, far more than the tasks take here).
func TestPoolTurnLetsOthersRun(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for _, turn := range []int{1, 16, 128} {
		p := New(1, time.Millisecond, turn)
		const n = 4096
		var done atomic.Int64
		var wg sync.WaitGroup
		wg.Add(n)
		started, gate := make(chan struct{}), make(chan struct{})
		p.Go(func() { close(started); <-gate; done.Add(1); wg.Done() })
		for range n - 1 {
			p.Go(func() { done.Add(1); wg.Done() })
		}
		<-started // the worker is waiting at the gate, with every task queued
		seen := make(chan int64, 1)
		go func() { seen <- done.Load() }()
		close(gate) // the worker runs next, the goroutine above is queued behind it
		wg.Wait()
		if got := <-seen; got > int64(turn) {
			t.Errorf("turn %d: a runnable goroutine waited for %d tasks of a busy worker", turn, got)
		}
	}
}

func BenchmarkPool(b *testing.B) {
	p := New(8, time.Second, 0)
	var wg sync.WaitGroup
	b.ReportAllocs()
	for b.Loop() {
		wg.Add(1)
		p.Go(wg.Done)
	}
	wg.Wait()
}

func BenchmarkGoroutine(b *testing.B) {
	var wg sync.WaitGroup
	b.ReportAllocs()
	for b.Loop() {
		wg.Add(1)
		go wg.Done()
	}
	wg.Wait()
}
