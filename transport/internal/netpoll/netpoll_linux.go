//go:build linux

package netpoll

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// poller is the process's one epoll instance. Its goroutine runs only while something is
// watched, so that a process (or a test) with no connections has no goroutine left.
type poller struct {
	once    sync.Once
	initErr error
	epfd    int
	file    *os.File        // epfd, kept open for the life of the process
	raw     syscall.RawConn // of file: the loop waits on the runtime's poller through it
	wakefd  int             // an eventfd that wakes the loop when the last watch stops

	mu      sync.Mutex
	watches map[int]*watch // by file descriptor
	running bool           // the loop goroutine runs
}

var p poller

// events asks for one report of readability (data, or the peer's FIN, or an error).
const events = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func (p *poller) init() error {
	p.once.Do(func() {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			p.initErr = fmt.Errorf("netpoll: epoll_create1: %w", err)
			return
		}
		wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			unix.Close(epfd)
			p.initErr = fmt.Errorf("netpoll: eventfd: %w", err)
			return
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
			unix.Close(epfd)
			unix.Close(wakefd)
			p.initErr = fmt.Errorf("netpoll: epoll_ctl: %w", err)
			return
		}
		// The epoll descriptor is itself watched by the Go runtime's poller: the loop
		// goroutine parks there, not in a blocking epoll_wait of its own thread. Readiness
		// then reaches the scheduler as any socket's does, in batches while the process is
		// busy, with no thread woken (and no core's work interrupted) per event.
		if err := unix.SetNonblock(epfd, true); err != nil {
			unix.Close(epfd)
			unix.Close(wakefd)
			p.initErr = fmt.Errorf("netpoll: set nonblocking: %w", err)
			return
		}
		f := os.NewFile(uintptr(epfd), "netpoll")
		raw, err := f.SyscallConn()
		if err != nil {
			f.Close()
			unix.Close(wakefd)
			p.initErr = fmt.Errorf("netpoll: %w", err)
			return
		}
		p.epfd, p.wakefd, p.file, p.raw = epfd, wakefd, f, raw
		p.watches = make(map[int]*watch)
	})
	return p.initErr
}

// watch is one watched connection. armed and stopped are guarded by p.mu.
type watch struct {
	raw     syscall.RawConn
	fd      int
	fn      func()
	run     func(func()) // starts fn; nil: a new goroutine
	armed   bool         // the kernel will report readability, and no fn call runs or is due
	stopped bool
}

func start(c net.Conn, fn func(), run func(func())) (*watch, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, ErrUnsupported
	}
	if err := p.init(); err != nil {
		return nil, errors.Join(ErrUnsupported, err)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, errors.Join(ErrUnsupported, err)
	}
	w := &watch{raw: raw, fn: fn, run: run, armed: true}
	var ctlErr error
	// Inside Control the descriptor can't be closed (and its number reused) under us.
	err = raw.Control(func(fd uintptr) {
		w.fd = int(fd)
		p.mu.Lock()
		defer p.mu.Unlock()
		ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
		if ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, w.fd, &ev); ctlErr != nil {
			return
		}
		p.watches[w.fd] = w
		if !p.running {
			p.running = true
			go p.loop()
		}
	})
	if err == nil {
		err = ctlErr
	}
	if err != nil {
		return nil, errors.Join(ErrUnsupported, err)
	}
	return w, nil
}

func (w *watch) arm() bool {
	ok := false
	err := w.raw.Control(func(fd uintptr) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if w.stopped || p.watches[w.fd] != w {
			return
		}
		// Armed before the kernel is asked, under p.mu: an event that fires at once waits
		// for the lock and then finds the watch armed.
		w.armed = true
		ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
		if unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, w.fd, &ev) != nil {
			w.armed = false
			p.removeLocked(w)
			return
		}
		ok = true
	})
	return err == nil && ok
}

func (w *watch) stop() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.stopped {
		return false
	}
	was := w.armed
	w.armed = false
	p.removeLocked(w)
	return was
}

// removeLocked forgets w and takes its descriptor out of the epoll set (the kernel has
// done so already if it was closed).
func (p *poller) removeLocked(w *watch) {
	w.stopped = true
	if p.watches[w.fd] != w {
		return
	}
	delete(p.watches, w.fd)
	w.raw.Control(func(fd uintptr) { unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	if len(p.watches) == 0 {
		var one = [8]byte{1}
		unix.Write(p.wakefd, one[:]) // the loop ends; EAGAIN means a wake is pending anyway
	}
}

// loop waits for readable connections and runs each one's callback on a goroutine of
// its own. It ends when nothing is watched.
func (p *poller) loop() {
	evs := make([]unix.EpollEvent, 256)
	var drain [8]byte
	// Made once, not per wait: the function and what it sets would be allocated on
	// every wake of the loop.
	var n int
	var werr error
	wait := func(fd uintptr) bool {
		n, werr = unix.EpollWait(int(fd), evs, 0)
		if werr == unix.EINTR {
			n, werr = 0, nil
		}
		return n > 0 || werr != nil // nothing yet: park until the descriptor is readable
	}
	for {
		n, werr = 0, nil
		err := p.raw.Read(wait)
		if err == nil {
			err = werr
		}
		if err != nil {
			// Not expected with a valid epoll descriptor; stop watching rather than spin.
			p.failAll()
			return
		}
		p.mu.Lock()
		for _, ev := range evs[:max(n, 0)] {
			fd := int(ev.Fd)
			if fd == p.wakefd {
				unix.Read(p.wakefd, drain[:])
				continue
			}
			w := p.watches[fd]
			if w == nil || !w.armed {
				continue
			}
			w.armed = false
			w.dispatch()
		}
		if len(p.watches) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
}

// failAll hands every armed watch back to its owner: the callback runs, finds Arm false
// and reads on its own.
func (p *poller) failAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.watches {
		armed := w.armed
		w.armed = false
		p.removeLocked(w)
		if armed {
			w.dispatch()
		}
	}
	p.running = false
}

func peek(c net.Conn) (data, closed bool) {
	raw, err := rawConn(c)
	if errors.Is(err, ErrUnsupported) {
		return false, false
	}
	if err != nil {
		return false, true
	}
	var b [1]byte
	err = raw.Read(func(fd uintptr) bool {
		n, _, rerr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case n > 0:
			data = true
		case rerr == nil:
			closed = true // a read of 0 bytes: the peer's FIN
		case rerr != unix.EAGAIN && rerr != unix.EINTR:
			closed = true
		}
		return true // never wait: the caller is told "neither"
	})
	if err != nil {
		closed = true // the descriptor is closed
	}
	return data, closed
}

func supported() bool { return p.init() == nil }

func (w *watch) dispatch() {
	if w.run != nil {
		w.run(w.fn)
	} else {
		go w.fn()
	}
}

func rawConn(c net.Conn) (syscall.RawConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, ErrUnsupported
	}
	return sc.SyscallConn()
}

func tryRead(c net.Conn, b []byte) (int, error) {
	var r reader
	if err := r.init(c); err != nil {
		return 0, err
	}
	return r.tryRead(b)
}

func tryWrite(c net.Conn, b []byte) (int, error) {
	var w writer
	if err := w.init(c); err != nil {
		return 0, err
	}
	return w.tryWrite(b)
}

// rawIO is a Reader's or a Writer's: the connection's RawConn and the function its Read
// or Write calls, made once, so that a read or write allocates nothing.
type rawIO struct {
	raw   syscall.RawConn
	write bool
	plain bool                  // write with write(2): the descriptor is not a socket
	fn    func(fd uintptr) bool // x.call
	b     []byte                // what is read into or written, during do only
	n     int
	err   error
}

func (x *rawIO) ready() bool { return x.raw != nil }

func (x *rawIO) init(c net.Conn, write bool) error {
	raw, err := rawConn(c)
	if err != nil {
		return err
	}
	x.raw, x.write, x.fn = raw, write, x.call
	return nil
}

func (x *rawIO) call(fd uintptr) bool {
	for {
		switch {
		case !x.write:
			x.n, x.err = unix.Read(int(fd), x.b)
		case x.plain:
			x.n, x.err = unix.Write(int(fd), x.b)
		default:
			x.n, x.err = send(int(fd), x.b)
			if x.err == unix.ENOTSOCK {
				x.plain = true // not a socket (a pipe in a test): write(2) from now on
				continue
			}
		}
		if x.err != unix.EINTR {
			return true
		}
	}
}

// send is write(2) for a socket, as send(2) with MSG_DONTWAIT (sendto without an
// address), which goes straight to the socket layer: write(2) passes through the file
// layer first (vfs_write, fdget_pos, sock_write_iter), some 6 % of the server's CPU when
// it writes one small frame to each of ten thousand WebSocket connections. MSG_NOSIGNAL
// keeps a write to a reset connection an EPIPE, as the runtime's SIGPIPE handling makes
// it for write(2).
func send(fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(p), uintptr(len(b)),
		unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(n), nil
}

// do makes one read or write of b without waiting: unix.EAGAIN when it would have to.
func (x *rawIO) do(b []byte) (int, error) {
	x.b = b
	var err error
	if x.write {
		err = x.raw.Write(x.fn)
	} else {
		err = x.raw.Read(x.fn)
	}
	x.b = nil
	if err == nil {
		err = x.err
	}
	return x.n, err
}

type writer struct{ rawIO }

func (w *writer) init(c net.Conn) error { return w.rawIO.init(c, true) }

// tryWrite answers as TryWrite does: 0 and no error when the kernel takes nothing now.
func (w *writer) tryWrite(b []byte) (int, error) {
	n, err := w.do(b)
	switch {
	case err == unix.EAGAIN:
		return 0, nil
	case err != nil:
		return 0, err
	}
	return n, nil
}

type reader struct{ rawIO }

func (r *reader) init(c net.Conn) error { return r.rawIO.init(c, false) }

// tryRead answers as TryRead does: ErrWouldBlock when nothing has arrived, io.EOF at the
// end.
func (r *reader) tryRead(b []byte) (int, error) {
	n, err := r.do(b)
	switch {
	case err == unix.EAGAIN:
		return 0, ErrWouldBlock
	case err != nil:
		return 0, err
	case n == 0 && len(b) > 0:
		return 0, io.EOF
	}
	return n, nil
}
