package transport

import "time"

// SetCloseHandshake sets how long a server waits for the client's close frame after its
// own, until restore is called.
func SetCloseHandshake(d time.Duration) (restore func()) {
	old := closeHandshake.Swap(int64(d))
	return func() { closeHandshake.Store(old) }
}

// SetWriteWait sets the bound of one write to a client, until restore is called.
func SetWriteWait(d time.Duration) (restore func()) {
	old := writeWaitNs.Swap(int64(d))
	return func() { writeWaitNs.Store(old) }
}
