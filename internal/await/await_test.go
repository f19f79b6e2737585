package await

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeTB records failures instead of failing the test that uses it.
type fakeTB struct {
	testing.TB
	msgs []string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Errorf(format string, args ...any) {
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	Until(t, "three increments", func() bool { return n.Load() == 3 })
}

func TestHoldsStopsCheckingOnceTheConditionHolds(t *testing.T) {
	calls := 0
	if !Holds(t, "the third call", func() bool { calls++; return calls == 3 }) {
		t.Fatal("Holds returned false for a condition that held")
	}
	if calls != 3 {
		t.Fatalf("cond called %d times, want 3", calls)
	}
}

func TestTimeoutNamesWhatWasAwaited(t *testing.T) {
	const timeout = 50 * time.Millisecond
	start := time.Now()
	f := &fakeTB{}
	if holds(f, "the moon", func() bool { return false }, timeout) {
		t.Fatal("holds returned true for a condition that never held")
	}
	if waited := time.Since(start); waited < timeout {
		t.Fatalf("gave up after %v, before the timeout", waited)
	}
	if len(f.msgs) != 1 || !strings.Contains(f.msgs[0], "for the moon") {
		t.Fatalf("reported %q, want one message naming what was awaited", f.msgs)
	}
}
