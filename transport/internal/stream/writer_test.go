package stream

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/transport/internal/workers"
)

// fakeBatches is a Batches of ints, queued by push. It fails the test when two of its
// methods run at once (two writers) or a method runs after Finish, and reports every
// item written on written. hook, if set, runs at the start of every method (op is its
// name), to hold a writer where a test wants it.
type fakeBatches struct {
	t       *testing.T
	w       *Writer[int]
	batch   int                // items per batch; 0: all that are queued
	mayWait func(b []int) bool // nil: no batch may wait
	hook    func(op string, b []int)
	rest    atomic.Bool            // Try leaves a rest of every batch
	onEmpty atomic.Pointer[func()] // runs once, after a Next that found nothing

	mu       sync.Mutex
	queue    []int
	closed   bool
	needWait int // Next(true) answers ErrWait this many more times

	active   atomic.Int32
	done     atomic.Bool
	written  chan int
	finished chan struct{}
	ops      sync.Map // op name → *atomic.Int32, calls
}

func newFake(t *testing.T) *fakeBatches {
	return &fakeBatches{t: t, w: &Writer[int]{}, written: make(chan int, 10000), finished: make(chan struct{})}
}

// push queues v and wakes the writer, as an attachment does.
func (f *fakeBatches) push(v ...int) {
	f.mu.Lock()
	f.queue = append(f.queue, v...)
	f.mu.Unlock()
	f.w.Wake()
}

// close makes the next Next fail, and wakes the writer.
func (f *fakeBatches) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.w.Wake()
}

func (f *fakeBatches) enter(op string, b []int) func() {
	if f.done.Load() {
		f.t.Errorf("%s after Finish", op)
	}
	if f.active.Add(1) > 1 {
		f.t.Errorf("%s: two writers at once", op)
	}
	n, _ := f.ops.LoadOrStore(op, new(atomic.Int32))
	n.(*atomic.Int32).Add(1)
	if f.hook != nil {
		f.hook(op, b)
	}
	return func() { f.active.Add(-1) }
}

func (f *fakeBatches) calls(op string) int {
	n, ok := f.ops.Load(op)
	if !ok {
		return 0
	}
	return int(n.(*atomic.Int32).Load())
}

// Next's op is "nextLocal" when asked not to wait, "next" otherwise.
func (f *fakeBatches) Next(local bool) ([]int, error) {
	op := "next"
	if local {
		op = "nextLocal"
	}
	defer f.enter(op, nil)()
	f.mu.Lock()
	switch {
	case f.closed:
		f.mu.Unlock()
		return nil, errors.New("closed")
	case local && f.needWait > 0:
		f.needWait--
		f.mu.Unlock()
		return nil, ErrWait
	}
	n := len(f.queue)
	if f.batch > 0 {
		n = min(n, f.batch)
	}
	b := slices.Clone(f.queue[:n])
	f.queue = f.queue[n:]
	f.mu.Unlock()
	if fn := f.onEmpty.Load(); n == 0 && fn != nil && f.onEmpty.CompareAndSwap(fn, nil) {
		(*fn)()
	}
	return b, nil
}

func (f *fakeBatches) MayWait(b []int) bool { return f.mayWait != nil && f.mayWait(b) }

func (f *fakeBatches) Try(b []int) ([]byte, bool) {
	defer f.enter("try", b)()
	f.record(b)
	if f.rest.Load() {
		return []byte("rest"), true
	}
	return nil, true
}

func (f *fakeBatches) WriteRest([]byte) bool {
	defer f.enter("rest", nil)()
	return true
}

func (f *fakeBatches) Write(b []int) bool {
	defer f.enter("write", b)()
	f.record(b)
	return true
}

func (f *fakeBatches) Finish() {
	defer f.enter("finish", nil)()
	f.done.Store(true)
	close(f.finished)
}

func (f *fakeBatches) record(b []int) {
	for _, v := range b {
		f.written <- v
	}
}

// expect waits for the next n items written and returns them.
func (f *fakeBatches) expect(n int) []int {
	f.t.Helper()
	var got []int
	for range n {
		select {
		case v := <-f.written:
			got = append(got, v)
		case <-time.After(5 * time.Second):
			f.t.Fatalf("written %v, then nothing for 5 s (want %d items)", got, n)
		}
	}
	return got
}

// waitIdle waits until no writer runs.
func (f *fakeBatches) waitIdle() {
	f.t.Helper()
	await.Until(f.t, "the writer idle", func() bool { return f.w.state.Load() == idle })
}

// end closes the batches and waits for Finish.
func (f *fakeBatches) end() {
	f.t.Helper()
	f.close()
	select {
	case <-f.finished:
	case <-time.After(5 * time.Second):
		f.t.Fatal("no Finish within 5 s of the close")
	}
}

// forEachWriterMode runs test with a pool of one worker (pooled) and without (plain).
func forEachWriterMode(t *testing.T, test func(t *testing.T, pool *workers.Pool)) {
	forEachMode(t, func(t *testing.T, pooled bool) {
		var pool *workers.Pool
		if pooled {
			pool = workers.New(1, time.Millisecond, 0)
		}
		test(t, pool)
	})
}

// Writers woken from many goroutines write every item once, in the order each was
// queued, one writer at a time (fakeBatches fails the test otherwise).
func TestWriterOneWriterAtATime(t *testing.T) {
	forEachWriterMode(t, func(t *testing.T, pool *workers.Pool) {
		f := newFake(t)
		f.batch = 3
		f.w.Start(pool, f)
		const producers, each = 4, 500
		var wg sync.WaitGroup
		for p := range producers {
			wg.Go(func() {
				for i := range each {
					f.push(p*each + i)
				}
			})
		}
		wg.Wait()
		got := f.expect(producers * each)
		last := map[int]int{}
		for _, v := range got {
			p := v / each
			if prev, ok := last[p]; ok && v <= prev {
				t.Fatalf("producer %d: %d written after %d", p, v, prev)
			}
			last[p] = v
		}
		f.end()
	})
}

// A wake while the writer runs is not lost: neither one while it writes, nor one that
// comes after Next found nothing and before the writer went idle.
func TestWriterWakeWhileRunningIsNotLost(t *testing.T) {
	forEachWriterMode(t, func(t *testing.T, pool *workers.Pool) {
		f := newFake(t)
		writing, release := make(chan struct{}), make(chan struct{})
		f.hook = func(op string, b []int) {
			if (op == "try" || op == "write") && b[0] == 1 {
				close(writing)
				<-release
			}
		}
		f.w.Start(pool, f)
		f.push(1)
		<-writing
		f.push(2) // the writer runs: no second one starts
		close(release)
		if got := f.expect(2); !slices.Equal(got, []int{1, 2}) {
			t.Fatalf("written %v, want [1 2]", got)
		}

		// Next finds nothing; a frame comes before the writer rests.
		pushed := func() { f.push(3) }
		f.onEmpty.Store(&pushed)
		f.push()
		if got := f.expect(1); got[0] != 3 {
			t.Fatalf("written %v, want [3]", got)
		}
		f.end()
	})
}

// Pooled, a write the kernel didn't finish, a batch that may wait and a history read
// move the writer off the pool: the pool's one worker runs other tasks while they wait.
// The next wake-up after the writer went idle is a pool task again.
func TestWriterMovesOffPoolToWait(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   string // the method that waits off the pool
		set  func(f *fakeBatches)
	}{
		{"rest", "rest", func(f *fakeBatches) { f.rest.Store(true) }},
		{"batch", "write", func(f *fakeBatches) { f.mayWait = func(b []int) bool { return b[0] == 1 } }},
		{"history", "next", func(f *fakeBatches) { f.needWait = 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := workers.New(1, time.Millisecond, 0)
			f := newFake(t)
			tc.set(f)
			waiting, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			f.hook = func(op string, _ []int) {
				if op == tc.op {
					once.Do(func() {
						close(waiting)
						<-release
					})
				}
			}
			f.w.Start(pool, f)
			f.push(1)
			<-waiting
			ran := make(chan struct{})
			pool.Go(func() { close(ran) })
			select {
			case <-ran:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s waited on the pool's worker", tc.op)
			}
			close(release)
			f.expect(1)
			f.rest.Store(false)
			f.waitIdle()
			tries := f.calls("try")
			f.push(2)
			f.expect(1)
			if f.calls("try") != tries+1 {
				t.Errorf("the next wake-up wrote with %d Try calls, want 1 on the pool", f.calls("try")-tries)
			}
			f.end()
		})
	}
}

// A pooled writer gives its worker up after a bounded turn: a task queued behind it runs
// before it has written everything it has.
func TestWriterTurnIsBounded(t *testing.T) {
	pool := workers.New(1, time.Millisecond, 0)
	f := newFake(t)
	f.batch = 1
	queued := make(chan struct{})
	var once sync.Once
	f.hook = func(op string, _ []int) {
		if op == "try" {
			once.Do(func() { <-queued })
		}
	}
	f.w.Start(pool, f)
	items := make([]int, 3*writerTurn)
	for i := range items {
		items[i] = i
	}
	f.push(items...)
	var at atomic.Int32
	ran := make(chan struct{})
	pool.Go(func() { at.Store(int32(f.calls("try"))); close(ran) })
	close(queued)
	<-ran
	if n := at.Load(); n != writerTurn {
		t.Errorf("the task behind the writer ran after %d batches, want %d", n, writerTurn)
	}
	f.expect(len(items))
	f.end()
}

// No goroutine is left once the writing is over, nor of a writer woken and never
// started (its attachment failed).
func TestWriterLeavesNoGoroutine(t *testing.T) {
	forEachWriterMode(t, func(t *testing.T, pool *workers.Pool) {
		f := newFake(t)
		f.push(1) // before Start: held
		f.w.Start(pool, f)
		f.expect(1)
		f.end()
		f.push(2) // after Finish: nothing runs
		never := newFake(t)
		never.push(1)
		goleak.VerifyNone(t)
		if len(f.written) != 0 || len(never.written) != 0 {
			t.Error("written after Finish, or before Start")
		}
	})
}
