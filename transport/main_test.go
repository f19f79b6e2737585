package transport

import (
	"testing"

	"go.uber.org/goleak"
)

// The handlers start goroutines (writers, readers, the netpoll loop); they are exercised
// end to end by bridge's tests, and here by the fuzz seeds and benchmarks, which must
// leave none behind either.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
