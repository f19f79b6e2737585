// Package await waits, in tests, for what the code under test makes true in its own time:
// a server that starts listening, a detach after the client left, a gauge that falls. It
// polls a condition at a short interval up to a deadline and fails the test naming what it
// waited for. Use it only where nothing can be waited on directly: a channel, a
// WaitGroup or a returned error is always the better signal.
package await

import (
	"testing"
	"time"
)

const (
	// Timeout is how long Until and Holds wait. Only a failing test waits it out, so it
	// is generous: long enough for a loaded machine running the race detector.
	Timeout = 20 * time.Second
	// Interval is the pause between two checks of the condition.
	Interval = 10 * time.Millisecond
)

// Until checks cond every Interval until it returns true. If it has not within Timeout,
// Until fails the test with a message naming what, and ends it with t.Fatalf: call it
// only from the goroutine running the test (Holds is for the others). cond may itself
// end the test, for example when the process it waits for has exited.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !poll(cond, Timeout) {
		t.Fatalf("waited %v for %s, in vain", Timeout, what)
	}
}

// Holds waits like Until, but reports a timeout with t.Errorf and returns false, so that
// a goroutine other than the test's can call it and then return, or a test can add what
// it knows of the failure before it ends.
func Holds(t testing.TB, what string, cond func() bool) bool {
	t.Helper()
	return holds(t, what, cond, Timeout)
}

func holds(t testing.TB, what string, cond func() bool, timeout time.Duration) bool {
	t.Helper()
	if !poll(cond, timeout) {
		t.Errorf("waited %v for %s, in vain", timeout, what)
		return false
	}
	return true
}

// poll reports whether cond became true within timeout.
func poll(cond func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(Interval)
	}
	return true
}
