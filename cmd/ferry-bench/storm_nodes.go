package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// node is one ferry server the storm scenario runs as its child, so that it can stop it
// (SIGTERM or SIGKILL) and start it again on the same address with the same data
// directory.
type node struct {
	name string
	bin  string
	args []string
	addr string
	log  string // file receiving the node's output
	cmd  *exec.Cmd
	done chan struct{}
}

// freePort returns a loopback address nothing listens on now.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func newNode(name, bin, workDir string, args []string) (*node, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	args = append([]string{"--addr", addr, "--data-dir", filepath.Join(workDir, name+"-data")}, args...)
	return &node{name: name, bin: bin, args: args, addr: addr, log: filepath.Join(workDir, name+".log")}, nil
}

// start runs the node and returns once /healthz answers: the node answers again. started,
// if not nil, is called with the new process's pid as soon as it runs, before it answers,
// so that its memory can be sampled from its first moment.
func (n *node) start(ctx context.Context, started func(pid int)) error {
	f, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	n.cmd = exec.Command(n.bin, n.args...)
	n.cmd.Stdout, n.cmd.Stderr = f, f
	// The node's environment is the bench's, less FERRY_ settings, so that only the flags
	// given here count.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_") {
			n.cmd.Env = append(n.cmd.Env, kv)
		}
	}
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	n.done = make(chan struct{})
	if started != nil {
		started(n.cmd.Process.Pid)
	}
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(n.cmd, n.done)
	return waitHealthy(ctx, "http://"+n.addr+"/healthz", n.done, n.name+" (log: "+n.log+")")
}

// waitHealthy polls url until it answers 200, the process ends or ctx is done.
func waitHealthy(ctx context.Context, url string, exited <-chan struct{}, what string) error {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := hc.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("%s ended at start", what)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer within a minute", what)
		}
	}
}

func (n *node) pid() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// stop signals the node and waits for it to end.
func (n *node) stop(sig syscall.Signal) error {
	if n.cmd == nil {
		return nil
	}
	select {
	case <-n.done:
		return fmt.Errorf("%s had ended already (log: %s)", n.name, n.log)
	default:
	}
	n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
		return nil
	case <-time.After(60 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
		return fmt.Errorf("%s did not end within a minute of %v", n.name, sig)
	}
}

// kill ends the node at once, if it runs.
func (n *node) kill() {
	if n.cmd != nil && n.done != nil {
		select {
		case <-n.done:
		default:
			n.cmd.Process.Kill()
			<-n.done
		}
	}
}

// redisProc is a redis-server on a free loopback port, without persistence.
type redisProc struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

func startRedis(ctx context.Context, bin, workDir string) (*redisProc, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	f, err := os.Create(filepath.Join(workDir, "redis.log"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", workDir, "--maxclients", "50000")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("redis-server: %w", err)
	}
	r := &redisProc{addr: addr, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(r.done) }()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return r, nil
		}
		select {
		case <-r.done:
			return nil, fmt.Errorf("redis-server ended at start (log: %s)", f.Name())
		case <-time.After(20 * time.Millisecond):
		}
		if i > 500 {
			r.stop()
			return nil, fmt.Errorf("redis-server did not listen on %s", addr)
		}
	}
}

func (r *redisProc) stop() {
	r.cmd.Process.Kill()
	<-r.done
}

// sample is one reading of a process's resident memory and CPU time.
type sample struct {
	at  time.Time
	rss int64 // KiB
	cpu time.Duration
}

func readSample(pid int) (sample, bool) {
	rss, err := rssKiB(pid)
	if err != nil {
		return sample{}, false
	}
	cpu, err := cpuTime(strconv.Itoa(pid))
	if err != nil {
		return sample{}, false
	}
	return sample{at: time.Now(), rss: rss, cpu: cpu}, true
}
