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
	"sync"
	"time"
)

// Pool runs tasks in FIFO order on at most Max goroutines. The zero value is not usable;
// use New.
type Pool struct {
	max  int
	keep time.Duration

	mu      sync.Mutex
	queue   []func()
	head    int
	workers int // goroutines alive
	idle    int // of which waiting for a task
	wake    chan struct{}
}

// New returns a pool of at most max workers, each of which ends after keep without a task.
func New(max int, keep time.Duration) *Pool {
	return &Pool{max: max, keep: keep, wake: make(chan struct{}, max)}
}

// Go queues fn. It never blocks.
func (p *Pool) Go(fn func()) {
	p.mu.Lock()
	p.queue = append(p.queue, fn)
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
func (p *Pool) next() func() {
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
	for {
		if fn := p.next(); fn != nil {
			fn()
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
