package main

import (
	"testing"

	"go.uber.org/goleak"
)

// A run must end every client, publisher and watcher it started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
