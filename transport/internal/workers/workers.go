// Package workers runs short tasks in the order they were given on a few goroutines that
// are kept while there is work.
//
// A goroutine per event is the usual Go answer, and the right one for work that may
// block. For the many small events of long-polling (a poll to answer, a request to read)
// it costs more than the work: each new goroutine starts with a small stack that grows,
// by copying, two or three times on the way through a request. It also answers in no
// useful order: when a message wakes five thousand held polls, answering all of them
// before reading the next polls is what keeps the last answer early.
//
// Tasks must not block for long: they are not given a goroutine of their own, so one that
// waits holds up those queued behind it on its worker.
package workers

import (
	"runtime"
	"sync"
	"time"
)

// Task is a task for Run: a value whose Run method is the work. A connection's state that
// implements it is queued as itself, where a func value would be an object of its own (a
// method value is a closure pointing at the state): one more cache miss for every task of
// a fan-out to ten thousand connections.
type Task interface{ Run() }

// Func is a func as a Task.
type Func func()

// Run calls f.
func (f Func) Run() { f() }

// Pool runs tasks in FIFO order on at most Max goroutines. The zero value is not usable;
// use New.
type Pool struct {
	max  int
	keep time.Duration
	turn int

	mu      sync.Mutex
	queue   []Task
	head    int
	workers int // goroutines alive
	idle    int // of which waiting for a task
	wake    chan struct{}
}

// New returns a pool of at most max workers, each of which ends after keep without a task.
//
// A worker with tasks queued runs them back to back, and Go's scheduler lets the other
// goroutines of the process run only when it preempts it, every 10 ms. With turn above 0 a
// worker yields after every turn tasks instead (runtime.Gosched), so that what feeds the
// pool gets its share of a busy processor. For writers this is what batches: a fan-out
// that runs between their turns adds to the queues of connections not written yet, and
// each of those then takes several messages in one write, where a fan-out held back for
// 10 ms finds every connection written and wakes each again for one message.
func New(max int, keep time.Duration, turn int) *Pool {
	return &Pool{max: max, keep: keep, turn: turn, wake: make(chan struct{}, max)}
}

// Go queues fn. It never blocks.
func (p *Pool) Go(fn func()) { p.Run(Func(fn)) }

// Run queues t, whose Run method a worker calls. It never blocks.
func (p *Pool) Run(t Task) {
	p.mu.Lock()
	p.queue = append(p.queue, t)
	switch {
	case p.idle > 0:
		p.idle--
		p.wake <- struct{}{} // under mu, so that a worker timing out sees it; buffered for max, never blocks
		p.mu.Unlock()
	case p.workers < p.max:
		p.workers++
		p.mu.Unlock()
		go p.work()
	default:
		p.mu.Unlock() // a busy worker takes it next
	}
}

// next takes the oldest task, or marks the caller idle and returns nil.
func (p *Pool) next() Task {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.head == len(p.queue) {
		p.idle++
		if p.head > 0 {
			clear(p.queue)
			p.queue, p.head = p.queue[:0], 0
		}
		return nil
	}
	fn := p.queue[p.head]
	p.queue[p.head] = nil
	p.head++
	return fn
}

func (p *Pool) work() {
	var t *time.Timer
	n := 0
	for {
		if t := p.next(); t != nil {
			t.Run()
			if n++; n == p.turn {
				n = 0
				runtime.Gosched()
			}
			continue
		}
		if t == nil {
			t = time.NewTimer(p.keep)
		} else {
			t.Reset(p.keep)
		}
		select {
		case <-p.wake:
		case <-t.C:
			p.mu.Lock()
			if len(p.wake) > 0 {
				// Go counted this worker idle and signalled it: take the task.
				p.mu.Unlock()
				<-p.wake
				continue
			}
			p.idle--
			p.workers--
			p.mu.Unlock()
			return
		}
	}
}
