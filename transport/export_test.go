package transport

import "time"

// SetWebSocketPlainIO selects the plain goroutine-per-connection I/O of WebSocket
// connections (see wsPlainIO) for servers started until restore is called.
func SetWebSocketPlainIO(plain bool) (restore func()) {
	old := wsPlainIO.Swap(plain)
	return func() { wsPlainIO.Store(old) }
}

// SetCloseHandshake sets how long a server waits for the client's close frame after its
// own, until restore is called.
func SetCloseHandshake(d time.Duration) (restore func()) {
	old := closeHandshake.Swap(int64(d))
	return func() { closeHandshake.Store(old) }
}
