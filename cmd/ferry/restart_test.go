package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// ferryBinary builds this command once per test run.
func ferryBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "ferry")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is the ferry binary running as a child process.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan error
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startBinary runs the binary with args and an environment without FERRY_ variables, and
// waits for /healthz.
func startBinary(t *testing.T, addr string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(ferryBinary(t), append([]string{"--addr", addr}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	p := &proc{t: t, cmd: cmd, log: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	answered := await.Holds(t, "ferry to answer /healthz", func() bool {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("ferry ended at start: %v\n%s", err, p.log)
		default:
		}
		resp, err := hc.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if !answered {
		t.Fatalf("ferry's log:\n%s", p.log)
	}
	return p
}

// stop sends sig and waits for the process to end.
func (p *proc) stop(sig syscall.Signal) error {
	p.t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		return err
	case <-time.After(30 * time.Second):
		p.t.Fatalf("ferry did not end on %v\n%s", sig, p.log)
		return nil
	}
}

// restartClient is one session of the restart test, on long-polling: the transport that
// shows most plainly what a client asks for and gets.
type restartClient struct {
	t *testing.T
	*fclient.Client
}

func newRestartClient(t *testing.T, addr string, hc *http.Client, channels ...string) *restartClient {
	c := fclient.New("http://" + addr + "/ferry")
	c.HTTP = hc
	if err := c.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, ch := range channels {
		c.Subscribe(ch, "")
	}
	return &restartClient{t, c}
}

// poll polls once (at once with hello, else holding up to a second) and tracks positions.
func (c *restartClient) poll(hello bool) ([]fclient.Frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.NextAttachment()
	frames, _, err := c.Poll(ctx, hello, time.Second)
	for _, f := range frames {
		c.Track(f)
	}
	return frames, err
}

// publish sends pub frames on channel and returns their positions.
func (c *restartClient) publish(channel string, values ...int) ([]string, error) {
	var frames []any
	for _, v := range values {
		frames = append(frames, map[string]any{"t": "pub", "seq": c.NextSeq(), "ch": channel, "d": v})
	}
	acks, err := c.Send(context.Background(), frames...)
	if err != nil {
		return nil, err
	}
	var pos []string
	for _, a := range acks {
		if a.Err != nil || a.Ep == "" {
			return nil, fmt.Errorf("ack %+v", a)
		}
		pos = append(pos, fmt.Sprintf("%s.%d", a.Ep, a.Off))
	}
	return pos, nil
}

// messages polls until n msg frames of channel have come (or a reset, or an error), and
// returns the data of the msg frames and every reset.
func (c *restartClient) messages(channel string, n int) (data []string, resets []fclient.Frame, err error) {
	deadline := time.Now().Add(10 * time.Second)
	for len(data) < n && time.Now().Before(deadline) {
		frames, err := c.poll(false)
		if err != nil {
			return data, resets, err
		}
		for _, f := range frames {
			switch {
			case f.T == "msg" && f.Ch == channel:
				data = append(data, string(f.D))
			case f.T == "reset":
				resets = append(resets, f)
			}
		}
		if len(resets) > 0 {
			break
		}
	}
	return data, resets, nil
}

// With nothing but --addr and a data directory, a node stopped by SIGTERM and started
// again resumes its clients: the same sessions, the same epochs, every message published
// before the stop and not yet read arrives after the start, in order, with no reset. A
// SIGKILL, which leaves no chance to save, costs the clients an explicit reset on a new
// epoch, never messages silently missing.
func TestRestartWithDefaults(t *testing.T) {
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{}}
	defer hc.Transport.(*http.Transport).CloseIdleConnections()
	addr := freeAddr(t)
	dir := filepath.Join(t.TempDir(), "data")
	p := startBinary(t, addr, "--data-dir", dir)
	for name, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "secret"): 0o600} {
		if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: %v, mode %v; want %v", name, err, fi, want)
		}
	}
	secret, _ := os.ReadFile(filepath.Join(dir, "secret"))

	const ch = "room:restart"
	sub := newRestartClient(t, addr, hc, ch)
	// lag reads less often: at the crash it stands where the saved state ended.
	lag := newRestartClient(t, addr, hc, ch)
	pub := newRestartClient(t, addr, hc)
	frames, err := sub.poll(true)
	if err != nil || len(frames) < 2 || frames[1].T != "sub" {
		t.Fatalf("first poll: %v %+v", err, frames)
	}
	epoch := frames[1].Ep
	if _, err := lag.poll(true); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.publish(ch, 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	if got, resets, err := sub.messages(ch, 3); err != nil || len(resets) > 0 || strings.Join(got, ",") != "1,2,3" {
		t.Fatalf("before the restart: %v %v %v", got, resets, err)
	}
	// Published, not read yet: they must survive the restart.
	if _, err := pub.publish(ch, 4, 5); err != nil {
		t.Fatal(err)
	}

	if err := p.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, p.log)
	}
	if fi, err := os.Stat(filepath.Join(dir, "state.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file after SIGTERM: %v %v", fi, err)
	}
	p = startBinary(t, addr, "--data-dir", dir)
	if again, _ := os.ReadFile(filepath.Join(dir, "secret")); string(again) != string(secret) {
		t.Fatal("the stored secret changed across a restart")
	}
	// Loaded, the state file is gone: a crash from now on can't bring back this old state.
	if _, err := os.Stat(filepath.Join(dir, "state.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file while serving: %v, want none", err)
	}
	if got, resets, err := lag.messages(ch, 5); err != nil || len(resets) > 0 || strings.Join(got, ",") != "1,2,3,4,5" {
		t.Fatalf("lagging client after a graceful restart: got %v, resets %+v, err %v", got, resets, err)
	}
	pos, err := pub.publish(ch, 6)
	if err != nil {
		t.Fatalf("publishing with the session of before the restart: %v", err)
	}
	if !strings.HasPrefix(pos[0], epoch+".") || pos[0] != epoch+".6" {
		t.Fatalf("after the restart the message went to %s, want %s.6", pos[0], epoch)
	}
	got, resets, err := sub.messages(ch, 3)
	if err != nil || len(resets) > 0 || strings.Join(got, ",") != "4,5,6" {
		t.Fatalf("after a graceful restart: got %v, resets %+v, err %v; want 4,5,6 and no reset", got, resets, err)
	}
	if !strings.Contains(p.log.String(), "signing secret") {
		t.Errorf("the log does not say where the secret comes from:\n%s", p.log)
	}

	// A crash: nothing is saved, and no state of an earlier stop is loaded either.
	if _, err := pub.publish(ch, 7); err != nil {
		t.Fatal(err)
	}
	p.stop(syscall.SIGKILL)
	if _, err := os.Stat(filepath.Join(dir, "state.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file after SIGKILL: %v, want none", err)
	}
	p = startBinary(t, addr, "--data-dir", dir)
	// The session is gone with the broker: 4005, and the client negotiates a new one, keeping
	// its positions (PROTOCOL.md §7).
	_, err = sub.poll(false)
	var he *fclient.HTTPError
	if !errors.As(err, &he) || he.Code != 4005 {
		t.Fatalf("poll after a crash: %v, want 4005", err)
	}
	if err := sub.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Messages 6 and 7 are lost with the broker; lag never saw them, sub did. Both must be
	// told, and a message published now must not pass for the one after their position.
	if err := lag.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := pub.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.publish(ch, 8); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*restartClient{"sub": sub, "lag": lag} {
		frames, err = c.poll(true)
		if err != nil {
			t.Fatal(err)
		}
		var reset *fclient.Frame
		for i, f := range frames {
			switch {
			case f.T == "msg" && reset == nil:
				t.Fatalf("%s: after a crash a message came without a reset: %+v", name, f)
			case f.T == "reset":
				reset = &frames[i]
			}
		}
		if reset == nil || reset.Ch != ch || reset.Ep == epoch {
			t.Fatalf("%s after a crash: frames %+v, want a reset of %s into a new epoch", name, frames, ch)
		}
	}
	if err := p.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// A data directory holds one node: a second node given the same one is refused at start
// with a message naming the directory, and --data-dir none keeps nothing.
func TestDataDirOneNode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, stop, _ := launch(t, io.Discard, "--data-dir", dir)
	o, err := parseOptions([]string{"--addr", freeAddr(t), "--data-dir", dir}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), o, io.Discard)
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second node on one data directory: %v", err)
	}
	stop()

	for _, v := range []string{"none", ""} {
		o, err := parseOptions([]string{"--data-dir", v}, func(k string) string { return map[string]string{"HOME": "/home/x"}[k] }, io.Discard)
		if err != nil || o.dataDir != "" {
			t.Fatalf("--data-dir %q: %v %q, want none", v, err, o.dataDir)
		}
	}
	for env, want := range map[string]string{"HOME=/home/x": "/home/x/.local/state/ferry", "XDG_STATE_HOME=/st": "/st/ferry", "HOME=/": ""} {
		k, v, _ := strings.Cut(env, "=")
		o, err := parseOptions(nil, func(n string) string {
			if n == k {
				return v
			}
			return ""
		}, io.Discard)
		if err != nil || o.dataDir != want || o.dataDirExplicit {
			t.Errorf("%s: default data dir %q, want %q", env, o.dataDir, want)
		}
	}
}

// An explicit --secret wins over the stored one, and --state-file over the directory's.
func TestSecretAndStateFileWin(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(t.TempDir(), "elsewhere.json")
	var log syncBuffer
	_, stop, done := launch(t, &log, "--log-level", "info", "--data-dir", dir, "--secret", "flag-secret", "--state-file", state)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "secret")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a secret was stored though --secret was given: %v", err)
	}
	if _, err := os.Stat(state); err != nil {
		t.Errorf("--state-file not written: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state written to the data directory though --state-file was given: %v", err)
	}
	if !strings.Contains(log.String(), "secret_id="+secretFingerprint("flag-secret")) {
		t.Errorf("log does not name the secret in use:\n%s", log.String())
	}
}

// With Redis, a secret of the node's own data directory earns a warning: every node must
// share one.
func TestStoredSecretOnRedisWarns(t *testing.T) {
	mr := miniredis.RunT(t).Addr()
	for _, tc := range []struct {
		args []string
		warn bool
	}{
		{[]string{"--redis", "redis://" + mr}, true},
		{[]string{"--redis", "redis://" + mr, "--secret", "shared"}, false},
		{nil, false},
	} {
		var log syncBuffer
		_, stop, done := launch(t, &log, append([]string{"--log-level", "info"}, tc.args...)...)
		stop()
		<-done
		got := strings.Contains(log.String(), "every node must sign sessions with the same secret")
		if got != tc.warn {
			t.Errorf("%v: warning %v, want %v:\n%s", tc.args, got, tc.warn, log.String())
		}
	}
}
