package beat

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type call struct {
	due bool
	at  time.Time
}

// Every beat is due once a period, never earlier than a period less a tick after the one
// before (timers don't fire early), and gets its second call one tick after each due one,
// before the next: the order a ping queued on the due call relies on to be flushed.
func TestBeatsComeEveryPeriodEachFollowedByItsFlush(t *testing.T) {
	const period = 160 * time.Millisecond // ticks of 10 ms
	w := New(period)
	calls := make(chan call, 64)
	start := time.Now()
	b := w.Add(func(due bool) { calls <- call{due, time.Now()} })
	defer b.Stop()

	var last time.Time
	for i := range 3 {
		var c call
		select {
		case c = <-calls:
		case <-time.After(10 * period): // a failure guard only
			t.Fatalf("due call %d never came", i)
		}
		if !c.due {
			t.Fatalf("call %d: a flush where the due call should come", 2*i)
		}
		since := start
		if i > 0 {
			since = last
		}
		if gap := c.at.Sub(since); gap < period-period/Slots {
			t.Fatalf("due call %d came %v after the one before, want at least %v", i, gap, period-period/Slots)
		}
		last = c.at
		select {
		case c = <-calls:
		case <-time.After(10 * period):
			t.Fatalf("the flush after due call %d never came", i)
		}
		if c.due {
			t.Fatalf("due call %d was followed by another due call, not its flush", i)
		}
		if gap := c.at.Sub(last); gap < period/Slots/2 {
			t.Fatalf("flush %v after its due call, want about a tick (%v)", gap, period/Slots)
		}
	}
}

// Beats added in one tick share a slot and are due on the same tick; the due calls run on
// goroutines of their own, so one that waits holds up neither the others nor the flushes.
func TestOneSlotIsDueTogetherAndAWaitingBeatHoldsUpNoOther(t *testing.T) {
	w := New(160 * time.Millisecond)
	release := make(chan struct{})
	var mu sync.Mutex
	got := map[int]int{} // beat → due calls
	flushed := make(chan int, 64)
	var beats []*Beat
	for i := range 5 {
		beats = append(beats, w.Add(func(due bool) {
			if !due {
				flushed <- i
				return
			}
			mu.Lock()
			got[i]++
			mu.Unlock()
			if i == 0 {
				<-release // a beat stuck on its session store
			}
		}))
	}
	seen := map[int]bool{}
	for len(seen) < 5 {
		select {
		case i := <-flushed:
			seen[i] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("flushes of %v only, with beat 0 stuck in its due call", seen)
		}
	}
	close(release)
	for _, b := range beats {
		b.Stop()
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range 5 {
		if got[i] == 0 {
			t.Fatalf("beat %d flushed without having been due: %v", i, got)
		}
	}
}

// A stopped beat is not called again once a call already due has run, and a wheel with
// nothing registered stops ticking: goleak (TestMain) finds no goroutine of its left.
func TestStopEndsTheBeatAndAnEmptyWheelStops(t *testing.T) {
	const period = 80 * time.Millisecond
	w := New(period)
	calls := make(chan bool, 64)
	b := w.Add(func(due bool) { calls <- due })
	select {
	case <-calls:
	case <-time.After(10 * period):
		t.Fatal("no call before the stop")
	}
	b.Stop()
	b.Stop() // twice is harmless
	// One call may have been due already when Stop ran; then nothing for periods on end
	// (this wait is the subject: nothing happens).
	n := 0
	timeout := time.After(4 * period)
	for done := false; !done; {
		select {
		case <-calls:
			n++
		case <-timeout:
			done = true
		}
	}
	if n > 1 {
		t.Fatalf("%d calls after Stop, want at most the one already due", n)
	}
	w.mu.Lock()
	running := w.running
	w.mu.Unlock()
	if running {
		t.Fatal("the wheel still ticks with no beat registered")
	}
}
