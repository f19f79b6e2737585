package netpoll

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func skipUnsupported(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skipf("netpoll watches connections on Linux only (here: %s); the transports fall back to a reader goroutine", runtime.GOOS)
	}
}

func recv(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("no callback: %s", what)
	}
}

func TestReportsDataOnceUntilArmed(t *testing.T) {
	skipUnsupported(t)
	server, client := pair(t)
	calls := make(chan struct{}, 10)
	w, err := Start(server, func() { calls <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	client.Write([]byte("ab"))
	recv(t, calls, "data written")
	// One-shot: more data is not reported before Arm.
	client.Write([]byte("cd"))
	select {
	case <-calls:
		t.Fatal("a second callback before Arm")
	case <-time.After(50 * time.Millisecond):
	}
	buf := make([]byte, 2)
	io.ReadFull(server, buf)
	// Two bytes are still unread: Arm reports them at once.
	if !w.Arm() {
		t.Fatal("Arm on a running watch reported stopped")
	}
	recv(t, calls, "unread data at Arm")
	io.ReadFull(server, buf)
	if string(buf) != "cd" {
		t.Fatalf("read %q, want cd", buf)
	}
	w.Arm()
	client.Close()
	recv(t, calls, "the peer's FIN")
	if _, err := server.Read(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("read after FIN: %v, want EOF", err)
	}
}

func TestStopHandsOverReading(t *testing.T) {
	skipUnsupported(t)
	server, client := pair(t)
	called := make(chan struct{}, 1)
	w, err := Start(server, func() { called <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	if !w.Stop() {
		t.Fatal("Stop of an armed watch with nothing running reported false")
	}
	if w.Stop() {
		t.Fatal("a second Stop reported true")
	}
	if w.Arm() {
		t.Fatal("Arm after Stop reported true")
	}
	client.Write([]byte("x"))
	select {
	case <-called:
		t.Fatal("callback after Stop")
	case <-time.After(50 * time.Millisecond):
	}

	// Stopped while a callback runs: Stop says so, and the callback's Arm fails.
	server2, client2 := pair(t)
	inCallback, release := make(chan struct{}), make(chan struct{})
	armed := make(chan bool, 1)
	var w2 *Watch
	w2, err = Start(server2, func() {
		close(inCallback)
		<-release
		armed <- w2.Arm()
	})
	if err != nil {
		t.Fatal(err)
	}
	client2.Write([]byte("y"))
	recv(t, inCallback, "data")
	if w2.Stop() {
		t.Fatal("Stop during a callback reported armed")
	}
	close(release)
	if <-armed {
		t.Fatal("Arm in a callback after Stop reported true")
	}
}

// Many connections, each written once from several goroutines at once: every one is
// reported, and the poller's goroutine ends with the last watch (TestMain checks).
func TestManyConnections(t *testing.T) {
	skipUnsupported(t)
	const n = 200
	var wg sync.WaitGroup
	watches := make([]*Watch, n)
	clients := make([]net.Conn, n)
	wg.Add(n)
	for i := range n {
		server, client := pair(t)
		clients[i] = client
		w, err := Start(server, wg.Done)
		if err != nil {
			t.Fatal(err)
		}
		watches[i] = w
	}
	for _, c := range clients {
		go c.Write([]byte("z"))
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	recv(t, done, "every connection")
	for _, w := range watches {
		w.Stop()
	}
}

func TestUnsupportedConnections(t *testing.T) {
	server, _ := pair(t)
	// A TLS connection buffers records above the socket: readability of the descriptor
	// says nothing about what a Read returns.
	if _, err := Start(tls.Server(server, &tls.Config{}), func() {}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Start on a TLS connection: %v, want ErrUnsupported", err)
	}
}

// A Writer writes what the kernel takes without waiting: all of a small write, nothing
// (and no error) once the buffers of a peer that doesn't read are full, an error once the
// write deadline has passed; and it allocates nothing per write.
func TestWriter(t *testing.T) {
	skipUnsupported(t)
	server, client := pair(t)
	var w Writer
	if n, err := w.TryWrite(server, []byte("hello")); n != 5 || err != nil {
		t.Fatalf("small write: %d %v", n, err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "hello" {
		t.Fatalf("read %q %v", got, err)
	}
	x := []byte{'x'}
	if allocs := testing.AllocsPerRun(100, func() { w.TryWrite(server, x) }); allocs != 0 {
		t.Errorf("%v allocations per write, want 0", allocs)
	}
	// The peer reads nothing more: writes take what fits, then nothing, without waiting
	// and without an error.
	big := make([]byte, 1<<20)
	total, full := 0, false
	for range 1000 {
		n, err := w.TryWrite(server, big)
		if err != nil || n < 0 || n > len(big) {
			t.Fatalf("write %d: %d %v", total, n, err)
		}
		if n == 0 {
			full = true
			break
		}
		total += n
	}
	if !full || total == 0 {
		t.Fatalf("wrote %d bytes to a peer that reads nothing and never found the buffers full", total)
	}
	server.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := w.TryWrite(server, []byte("late")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
}

// A Reader reads what has arrived without waiting: what is there, ErrWouldBlock when
// nothing is, io.EOF once the peer has closed; and it allocates nothing per read.
func TestReader(t *testing.T) {
	skipUnsupported(t)
	server, client := pair(t)
	var r Reader
	buf := make([]byte, 16)
	if n, err := r.TryRead(server, buf); n != 0 || !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("read of nothing: %d %v, want ErrWouldBlock", n, err)
	}
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := 0
	for got < 5 { // loopback delivers at once, but not necessarily in one piece
		n, err := r.TryRead(server, buf[got:])
		if errors.Is(err, ErrWouldBlock) {
			continue
		}
		if err != nil {
			t.Fatalf("read: %d %v", n, err)
		}
		got += n
	}
	if string(buf[:got]) != "hello" {
		t.Fatalf("read %q, want hello", buf[:got])
	}
	if allocs := testing.AllocsPerRun(100, func() { r.TryRead(server, buf) }); allocs != 0 {
		t.Errorf("%v allocations per read, want 0", allocs)
	}
	client.Close()
	for {
		_, err := r.TryRead(server, buf)
		if errors.Is(err, ErrWouldBlock) {
			continue
		}
		if err != io.EOF {
			t.Fatalf("read after the peer closed: %v, want io.EOF", err)
		}
		break
	}
}

// pipeConn is a pipe as a net.Conn: a descriptor that is not a socket.
type pipeConn struct{ *os.File }

func (pipeConn) LocalAddr() net.Addr  { return nil }
func (pipeConn) RemoteAddr() net.Addr { return nil }

// A Writer writes to sockets with send(2); to a descriptor that is not a socket, it falls
// back to write(2).
func TestWriterOnAPipe(t *testing.T) {
	skipUnsupported(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var tw Writer
	for _, s := range []string{"hello", " again"} {
		if n, err := tw.TryWrite(pipeConn{w}, []byte(s)); n != len(s) || err != nil {
			t.Fatalf("write of %q: %d %v", s, n, err)
		}
	}
	got := make([]byte, len("hello again"))
	if _, err := io.ReadFull(r, got); err != nil || string(got) != "hello again" {
		t.Fatalf("read %q %v", got, err)
	}
}
