package transport

import (
	"testing"

	"go.uber.org/goleak"
)

// The handlers start goroutines (writers, readers, the netpoll loop); the handler and
// conformance tests here drive them over a fake Sessions (fake_test.go), and must leave
// none behind. bridge's tests exercise them end to end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
