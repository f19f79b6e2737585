package memory

// StopSweeper stops b's sweeper timer and reports whether it was still scheduled, for
// the tests of package memory_test.
func StopSweeper(b *Broker) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sweeper.Stop()
}
