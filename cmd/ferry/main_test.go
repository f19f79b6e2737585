package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gorilla/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis retries a failed dial in a goroutine that sleeps a second between
		// attempts and ends at its next wake-up once the client is closed.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

// A valid value for every flag, different from its default. A new flag without a sample
// fails TestEveryFlagHasEnvironmentAndHelp, so this list stays complete.
var samples = map[string]string{
	"config": "", "addr": "127.0.0.1:9999", "base": "/rt", "secret": "s3", "api-key": "k",
	"allowed-origins": "https://a.example", "transports": "sse,longpoll", "client-publish": "x:*",
	"heartbeat": "5s", "poll-hold": "7s", "poll-linger": "3s", "session-ttl": "30s", "dedupe-ttl": "5m0s", "store-timeout": "2s", "max-message": "1024",
	"max-channels": "4", "queue-messages": "64", "queue-bytes": "65536", "history-size": "10",
	"history-ttl": "1m0s", "drain-timeout": "3s", "log-level": "debug", "log-format": "json",
	"demo": "false", "ticker": "2s", "state-file": "/tmp/ferry-state.json", "data-dir": "/tmp/ferry-data",
	"token-key": "jwtkey", "allow-anonymous": "true", "tls-cert": "", "tls-key": "",
	"max-conns": "10", "max-conns-per-ip": "5", "max-sessions": "500", "negotiate-rate": "2", "negotiate-burst": "9", "upstream-rate": "7",
	"trust-forwarded-for": "true", "header-timeout": "3s", "debug-addr": "127.0.0.1:6060", "redis": "redis://127.0.0.1:6379/1", "node-id": "n1",
	"presence": "team:*", "upstream-stream": "",
}

func TestEveryFlagHasEnvironmentAndHelp(t *testing.T) {
	var help bytes.Buffer
	if _, err := parseOptions([]string{"--help"}, func(string) string { return "" }, &help); err != flagHelp {
		t.Fatalf("--help: %v", err)
	}
	fs := newFlagSet(&options{}, io.Discard)
	fs.VisitAll(func(f *flag.Flag) {
		env := envName(f.Name)
		if !strings.Contains(help.String(), "--"+f.Name+" ["+env+"]") {
			t.Errorf("--help does not show --%s with %s", f.Name, env)
		}
		if f.DefValue != "" && !strings.Contains(help.String(), "(default "+f.DefValue+")") {
			t.Errorf("--help does not show the default of --%s", f.Name)
		}
		v, ok := samples[f.Name]
		if !ok {
			t.Errorf("flag --%s has no sample value in this test", f.Name)
			return
		}
		if f.Name == "config" || f.Name == "tls-cert" || f.Name == "tls-key" || f.Name == "upstream-stream" {
			return // tested with real files elsewhere
		}
		getenv := func(k string) string {
			if k == env {
				return v
			}
			return ""
		}
		_, parsed, err := parse(nil, getenv, io.Discard)
		if err != nil {
			t.Errorf("%s=%s: %v", env, v, err)
			return
		}
		if got := parsed.Lookup(f.Name).Value.String(); got != v {
			t.Errorf("%s=%s gave --%s=%s", env, v, f.Name, got)
		}
	})
}

func TestEnvironmentReachesOptions(t *testing.T) {
	env := map[string]string{"FERRY_HEARTBEAT": "5s", "FERRY_API_KEY": "k", "FERRY_DEMO": "false", "FERRY_MAX_CHANNELS": "4"}
	o, err := parseOptions([]string{"--max-channels", "9"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.heartbeat != 5*time.Second || o.apiKey != "k" || o.demo || o.maxChannels != 9 {
		t.Fatalf("options %+v: the flag must win over the environment, the environment over defaults", o)
	}
}

func TestInvalidValuesNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := selfSigned(t, dir)
	otherDir := filepath.Join(dir, "other")
	os.Mkdir(otherDir, 0o700)
	_, otherKey, _ := selfSigned(t, otherDir)
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--client-publish", "room:*,chat:["}, nil, "--client-publish"},
		{nil, map[string]string{"FERRY_PRESENCE": "team:[a-"}, "--presence"},
		{[]string{"--addr", "8080"}, nil, "--addr"},
		{[]string{"--addr", ":99999"}, nil, "--addr"},
		{[]string{"--debug-addr", "localhost"}, nil, "--debug-addr"},
		{[]string{"--tls-cert", missing, "--tls-key", key}, nil, "--tls-cert"},
		{[]string{"--tls-cert", cert, "--tls-key", missing}, nil, "--tls-key"},
		{[]string{"--tls-cert", cert, "--tls-key", otherKey}, nil, "--tls-cert/--tls-key"},
		{[]string{"--tls-cert", cert}, nil, "--tls-cert/--tls-key"},
		{[]string{"--allowed-origins", "ok.example"}, nil, "--allowed-origins"},
		{[]string{"--allowed-origins", "https://ok.example,https://b.example/"}, nil, "--allowed-origins"},
		{[]string{"--allowed-origins", "https://ok.example/app"}, nil, "--allowed-origins"},
		{[]string{"--allowed-origins", "https://ok.example:443"}, nil, "--allowed-origins"},
		{[]string{"--allowed-origins", "null"}, nil, "--allowed-origins"},
		{[]string{"--max-sessions", "0"}, nil, "--max-sessions"},
		{[]string{"--redis", "redis://127.0.0.1:6379/0", "--max-sessions", "10"}, nil, "--max-sessions"},
		{[]string{"--heartbeat", "soon"}, nil, "heartbeat"},
		{nil, map[string]string{"FERRY_MAX_MESSAGE": "big"}, "FERRY_MAX_MESSAGE (--max-message)"},
		{[]string{"--queue-messages", "2"}, nil, "--queue-messages"},
		{[]string{"--log-level", "loud"}, nil, "--log-level"},
		{[]string{"--transports", "websocket,carrier-pigeon"}, nil, "--transports"},
		{[]string{"--heartbeat", "40s"}, nil, "--session-ttl"},
		{[]string{"--dedupe-ttl", "30s"}, nil, "--dedupe-ttl"},
		{[]string{"extra"}, nil, "unexpected argument"},
	} {
		_, err := parseOptions(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want a message naming %s", tc.args, tc.env, err, tc.want)
		}
		// The same values from the environment fail the same way.
		env := map[string]string{}
		for i := 0; i+1 < len(tc.args); i += 2 {
			if name, ok := strings.CutPrefix(tc.args[i], "--"); ok {
				env[envName(name)] = tc.args[i+1]
			}
		}
		if len(env) == 0 || len(env)*2 != len(tc.args) {
			continue
		}
		_, err = parseOptions(nil, func(k string) string { return env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("environment %v: %v, want a message naming %s", env, err, tc.want)
		}
	}
	// What the checks above refuse is not refused whole: valid values still go through.
	if _, err := parseOptions([]string{"--tls-cert", cert, "--tls-key", key, "--addr", "localhost:http",
		"--allowed-origins", "*, https://ok.example, http://[::1]:8080", "--presence", "", "--client-publish", "a:[0-9]*"},
		func(string) string { return "" }, io.Discard); err != nil {
		t.Errorf("valid values refused: %v", err)
	}
}

// A listen address that cannot be had fails the start with a message naming --addr.
func TestListenFailureNamesAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	o, err := parseOptions([]string{"--addr", ln.Addr().String(), "--ticker", "0"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), o, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "--addr: ") {
		t.Fatalf("run on a taken address: %v, want an error naming --addr", err)
	}
}

func TestConfigFile(t *testing.T) {
	name := filepath.Join(t.TempDir(), "ferry.conf")
	os.WriteFile(name, []byte("# settings\napi-key = fromfile\nheartbeat = 3s\nmax-channels = 7\n"), 0o600)
	env := map[string]string{"FERRY_CONFIG": name, "FERRY_HEARTBEAT": "4s"}
	o, err := parseOptions([]string{"--max-channels", "8"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.apiKey != "fromfile" || o.heartbeat != 4*time.Second || o.maxChannels != 8 {
		t.Fatalf("%+v: want file < environment < flag", o)
	}
	os.WriteFile(name, []byte("no-such-knob = 1\n"), 0o600)
	if _, err := parseOptions([]string{"--config", name}, func(string) string { return "" }, io.Discard); err == nil ||
		!strings.Contains(err.Error(), `"no-such-knob"`) {
		t.Fatalf("unknown setting: %v", err)
	}
}

// startServer runs the binary's run with args on a free port until the test ends.
func startServer(t *testing.T, args ...string) string {
	t.Helper()
	addr, _, _ := launch(t, io.Discard, args...)
	return addr
}

// launch runs the binary's run with args on a free port, logging to logw, and returns
// its address, the cancellation that stands for SIGTERM (main wires the signal to the same
// context), and run's result. The test's cleanup stops it if the test did not.
func launch(t *testing.T, logw io.Writer, args ...string) (addr string, stop context.CancelFunc, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	// A data directory of its own, as every node has by default (a later --data-dir wins).
	args = append([]string{"--addr", addr, "--ticker", "0", "--log-level", "error", "--data-dir", t.TempDir()}, args...)
	o, err := parseOptions(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	ended := make(chan struct{})
	var runErr error
	go func() {
		runErr = run(ctx, o, logw)
		close(ended)
		result <- runErr
	}()
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		cancel()
		<-ended
		if runErr != nil {
			t.Error(runErr)
		}
	})
	await.Until(t, "the server to listen on "+addr, func() bool {
		select {
		case <-ended:
			t.Fatalf("server ended at start: %v", runErr)
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr, cancel, result
}

// The binary serves health, readiness, metrics and the client. On SIGTERM (the cancelled
// context main wires it to) it drains: /readyz answers 503 at once while /healthz still
// answers, open streams are closed with 4003, the requests in flight are served to their
// end, and then the process ends.
func TestRunServesAndDrains(t *testing.T) {
	addr, stop, done := launch(t, io.Discard, "--drain-timeout", "1m")
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": "ferry_broker_ready 1",
		"/ferry/client.js": "export", "/": "Ferry"} {
		if code, body := get(path); code != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %.100q", path, code, body)
		}
	}

	c := fclient.New("http://" + addr + "/ferry")
	if err := c.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	stream, err := c.SSE(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if f := <-stream.Frames; f.T != "hello" {
		t.Fatalf("first frame %+v, want hello", f)
	}
	// A send whose body is still on its way keeps the drain from finishing, so that the
	// node can be looked at while it drains.
	send := startSlowSend(t, addr, c.Session)

	stop()
	closed := closeFrame(stream)
	if closed.Code != 4003 {
		t.Fatalf("open stream ended with %+v, want a close with 4003", closed)
	}
	// The stream is closed after the node starts draining, so /readyz must already fail.
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("/readyz while draining: %d %q, want 503 draining", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz while draining: %d, want 200: the process is alive", code)
	}
	if code, _ := get("/ferry/client.js"); code != http.StatusServiceUnavailable {
		t.Errorf("a new request while draining: %d, want 503", code)
	}
	select {
	case err := <-done:
		t.Fatalf("run returned (%v) with a request in flight", err)
	default:
	}

	if code := send.finish(); code != 200 {
		t.Errorf("the send in flight when the drain started answered %d, want 200", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return once the last request ended")
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("still answering after run returned: %d", resp.StatusCode)
	}
}

// slowSend is a POST <base>/send whose body has not been sent yet.
type slowSend struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
	body string
}

// startSlowSend starts a send for the session with credential cred and returns once the
// server's handler is reading its body: the request is then in flight. It asks for
// "100 Continue", which net/http sends when the handler first reads the body.
func startSlowSend(t *testing.T, addr, cred string) *slowSend {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	s := &slowSend{t: t, conn: conn, br: bufio.NewReader(conn), body: `{"frames":[{"t":"send","seq":1,"d":"late"}]}`}
	fmt.Fprintf(conn, "POST /ferry/send?session=%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", url.QueryEscape(cred), addr, len(s.body))
	resp, err := http.ReadResponse(s.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusContinue {
		t.Fatalf("send: %d before its body, want 100 Continue", resp.StatusCode)
	}
	return s
}

// finish sends the body and returns the status of the answer.
func (s *slowSend) finish() int {
	s.t.Helper()
	if _, err := io.WriteString(s.conn, s.body); err != nil {
		s.t.Fatal(err)
	}
	resp, err := http.ReadResponse(s.br, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// --debug-addr serves the profiler on its own address, and only there.
func TestDebugAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	debug := ln.Addr().String()
	ln.Close()
	addr := startServer(t, "--debug-addr", debug)
	resp, err := http.Get("http://" + debug + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine profile") {
		t.Fatalf("profiler: %d %.100q", resp.StatusCode, b)
	}
	resp, err = http.Get("http://" + addr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("profiler on the client address: %d, want 404", resp.StatusCode)
	}
}

// A client that sends its headers slowly is cut after --header-timeout; others are served
// meanwhile.
func TestSlowlorisCut(t *testing.T) {
	addr := startServer(t, "--header-timeout", "300ms")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")) // and never the blank line
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("another client during the slow one: %v %v", resp, err)
	}
	resp.Body.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(conn) // returns when the server closes the connection
	if err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("slow client not cut: %v after %v", err, time.Since(start))
	}
}

// --tls-cert and --tls-key serve HTTPS and wss://.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	addr := startServer(t, "--tls-cert", certFile, "--tls-key", keyFile)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	resp, err := client.Post("https://"+addr+"/ferry/negotiate", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	var n struct {
		Session string `json:"session"`
	}
	json.NewDecoder(resp.Body).Decode(&n)
	resp.Body.Close()
	if resp.StatusCode != 200 || n.Session == "" {
		t.Fatalf("negotiate over TLS: %d", resp.StatusCode)
	}
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	conn, _, err := d.Dial("wss://"+addr+"/ferry/ws?session="+url.QueryEscape(n.Session), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, hello, err := conn.ReadMessage()
	if err != nil || !strings.Contains(string(hello), `"t":"hello"`) {
		t.Fatalf("wss hello: %s %v", hello, err)
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("plain HTTP on a TLS listener: %d", resp.StatusCode)
		}
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ferry test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// With --redis, /readyz follows Redis: it fails while Redis is down and recovers when it
// comes back.
func TestReadyzFollowsRedis(t *testing.T) {
	mr := miniredis.RunT(t)
	addr := startServer(t, "--redis", "redis://"+mr.Addr()+"/0")
	readyz := func() int {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor := func(want int) {
		t.Helper()
		await.Until(t, fmt.Sprintf("/readyz to answer %d", want), func() bool { return readyz() == want })
	}
	waitFor(200)
	mr.Close()
	waitFor(503)
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(200)
}

// --upstream-stream appends what clients send to a Redis stream for backends.
func TestUpstreamStream(t *testing.T) {
	mr := miniredis.RunT(t)
	addr := startServer(t, "--redis", "redis://"+mr.Addr()+"/0", "--upstream-stream", "app:in")
	resp, err := http.Post("http://"+addr+"/ferry/negotiate", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	var n struct {
		Session string `json:"session"`
	}
	json.NewDecoder(resp.Body).Decode(&n)
	resp.Body.Close()
	body := `{"frames":[{"t":"send","seq":1,"d":{"move":"e4"}}]}`
	for range 2 { // a resend is deduplicated: one entry
		resp, err = http.Post("http://"+addr+"/ferry/send?session="+url.QueryEscape(n.Session), "application/json", strings.NewReader(body))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("send: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	entries, err := mr.Stream("app:in")
	if err != nil || len(entries) != 1 {
		t.Fatalf("stream entries %v %v, want 1", entries, err)
	}
	found := false
	for _, v := range entries[0].Values {
		found = found || strings.Contains(v, "e4")
	}
	if !found {
		t.Fatalf("entry %v has no payload", entries[0].Values)
	}
}

// metricSet is a scrape of /metrics: every sample by name and labels, the labels sorted,
// as in ferry_frames_out_total{transport="sse"}. Histograms give name_count and name_sum.
type metricSet map[string]float64

// scrape fetches and parses /metrics of the server at addr.
func scrape(t *testing.T, addr string) metricSet {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	set := metricSet{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var pairs []string
			for _, l := range m.GetLabel() {
				pairs = append(pairs, l.GetName(), l.GetValue())
			}
			switch {
			case m.Counter != nil:
				set[metricKey(name, pairs...)] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				set[metricKey(name, pairs...)] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				set[metricKey(name+"_count", pairs...)] = float64(m.GetHistogram().GetSampleCount())
				set[metricKey(name+"_sum", pairs...)] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return set
}

// metricKey names a series: name and label pairs (name, value, name, value...).
func metricKey(name string, pairs ...string) string {
	if len(pairs) == 0 {
		return name
	}
	labels := make([]string, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		labels = append(labels, pairs[i]+"="+strconv.Quote(pairs[i+1]))
	}
	slices.Sort(labels)
	return name + "{" + strings.Join(labels, ",") + "}"
}

// get returns the value of one series; a series not exported counts as 0, as
// Prometheus's rate() treats a counter that has not started.
func (s metricSet) get(name string, pairs ...string) float64 { return s[metricKey(name, pairs...)] }

// sum adds up every series of name whose labels include pairs.
func (s metricSet) sum(name string, pairs ...string) float64 {
	var want []string
	for i := 0; i+1 < len(pairs); i += 2 {
		want = append(want, pairs[i]+"="+strconv.Quote(pairs[i+1]))
	}
	total := 0.0
series:
	for k, v := range s {
		rest, ok := strings.CutPrefix(k, name)
		if !ok || (rest != "" && rest[0] != '{') {
			continue
		}
		labels := strings.Split(strings.Trim(rest, "{}"), ",")
		for _, p := range want {
			if !slices.Contains(labels, p) {
				continue series
			}
		}
		total += v
	}
	return total
}

// downstream is one attachment of a test client that counts what it receives as
// ferry_frames_out_total and ferry_bytes_out_total count it: every frame, and the bytes
// of the frames' JSON (WebSocket messages, SSE data lines) or of the poll answers.
type downstream struct {
	t      *testing.T
	c      *fclient.Client
	next   func() fclient.Frame // the next frame, polling or reading as the transport does
	send   func(frame string)   // sends an upstream frame as the transport's clients do
	close  func()
	frames int
	bytes  int
	// Long-polling only: polls made, those answered by the hold's timeout (a lone ping),
	// and channels whose position the polls carried (each counts in ferry_resumes_total,
	// since every poll attaches with --poll-linger 0).
	polls, timeouts, resumed int
}

func (d *downstream) count(f fclient.Frame, size int) fclient.Frame {
	d.frames++
	d.bytes += size
	d.c.Track(f)
	return f
}

// attachWebSocket attaches c over WebSocket, reading the messages raw to count them.
func attachWebSocket(t *testing.T, addr string, c *fclient.Client) *downstream {
	q := url.Values{"session": {c.Session}, "cursor": {c.Cursor()}}
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ferry/ws?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &downstream{t: t, c: c}
	d.send = func(frame string) {
		if err := conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	d.next = func() fclient.Frame {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("websocket: %v", err)
		}
		var f fclient.Frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("websocket frame %q: %v", b, err)
		}
		return d.count(f, len(b))
	}
	d.close = func() {
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		conn.Close()
	}
	t.Cleanup(func() { conn.Close() })
	return d
}

// attachSSE attaches c over SSE, reading the event stream raw to count the data lines.
func attachSSE(t *testing.T, addr string, c *fclient.Client) *downstream {
	q := url.Values{"session": {c.Session}, "cursor": {c.Cursor()}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/ferry/sse?"+q.Encode(), nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		cancel()
		t.Fatalf("sse: %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	d := &downstream{t: t, c: c, send: postSend(t, c)}
	d.next = func() fclient.Frame {
		t.Helper()
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("sse: %v", err)
			}
			data, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "data: ")
			if !ok {
				continue // retry hints, ids, the blank lines between events
			}
			var f fclient.Frame
			if err := json.Unmarshal([]byte(data), &f); err != nil {
				t.Fatalf("sse data %q: %v", data, err)
			}
			return d.count(f, len(data))
		}
	}
	d.close = func() {
		cancel()
		resp.Body.Close()
	}
	t.Cleanup(d.close)
	return d
}

// attachLongPoll returns a downstream that polls whenever it has no frame left, the
// first time with hello=1.
func attachLongPoll(t *testing.T, addr string, c *fclient.Client) *downstream {
	d := &downstream{t: t, c: c, send: postSend(t, c), close: func() {}}
	var queue []fclient.Frame
	d.next = func() fclient.Frame {
		t.Helper()
		for len(queue) == 0 {
			q := url.Values{"session": {c.Session}, "cursor": {c.Cursor()}, "att": {"1"}, "hold": {"10000"}}
			if d.polls == 0 {
				q.Set("hello", "1")
			}
			for _, e := range strings.Split(c.Cursor(), ",") {
				if !strings.HasSuffix(e, "=") {
					d.resumed++
				}
			}
			d.polls++
			resp, err := http.Get("http://" + addr + "/ferry/poll?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("poll: %d %s %v", resp.StatusCode, b, err)
			}
			var body struct {
				Frames []fclient.Frame `json:"frames"`
			}
			if err := json.Unmarshal(b, &body); err != nil {
				t.Fatalf("poll answer %q: %v", b, err)
			}
			if len(body.Frames) == 1 && body.Frames[0].T == "ping" {
				d.timeouts++
			}
			d.bytes += len(b)
			queue = body.Frames
		}
		f := queue[0]
		queue = queue[1:]
		return d.count(f, 0) // the answer's bytes are counted whole
	}
	return d
}

// Traffic over each transport of the running binary, read back from /metrics: every
// counter moves by what the traffic did, under the transport's label.
func TestMetricsEndpointFollowsTraffic(t *testing.T) {
	const published = 5
	upstream := `{"t":"send","seq":1,"d":{"move":"e4"}}`
	for _, tr := range []string{"websocket", "sse", "longpoll"} {
		t.Run(tr, func(t *testing.T) {
			// No heartbeat within the test, and no lingering polls: every frame is the
			// traffic's, and every poll is an attachment.
			addr := startServer(t, "--api-key", "k", "--heartbeat", "1m", "--session-ttl", "5m", "--poll-linger", "0")
			c := fclient.New("http://" + addr + "/ferry")
			if err := c.Negotiate(context.Background()); err != nil {
				t.Fatal(err)
			}
			c.Subscribe("news", "")
			c.Subscribe("$session:"+c.SID, "") // where the echo service answers
			var d *downstream
			switch tr {
			case "websocket":
				d = attachWebSocket(t, addr, c)
			case "sse":
				d = attachSSE(t, addr, c)
			case "longpoll":
				d = attachLongPoll(t, addr, c)
			}
			for subs := 0; subs < 2; {
				if f := d.next(); f.T == "sub" {
					subs++
				}
			}

			// Publish once the node holds a connection for the session: a stream, or a
			// held poll (which the publish then answers).
			publisher := make(chan struct{})
			go func() {
				defer close(publisher)
				if !await.Holds(t, fmt.Sprintf("ferry_connections{transport=%q} to be 1", tr), func() bool {
					return scrape(t, addr).get("ferry_connections", "transport", tr) == 1
				}) {
					return
				}
				for i := range published {
					apiPublish(t, addr, "news", i)
				}
			}()
			for n := 0; n < published; {
				if f := d.next(); f.T == "msg" && f.Ch == "news" {
					n++
				}
			}
			<-publisher

			// An upstream message, then its resend: one reaches the echo service, which
			// answers on the session's channel; the other is a dedupe hit.
			d.send(upstream)
			d.send(upstream)
			in := "http" // POST <base>/send
			if tr == "websocket" {
				in = "websocket"
			}
			for acks, echoed := 0, false; !echoed || (tr == "websocket" && acks < 2); {
				switch f := d.next(); {
				case f.T == "ack":
					acks++
				case f.T == "msg" && f.Ch == "$session:"+c.SID:
					echoed = true
				}
			}

			m := scrape(t, addr)
			check := func(what string, got, want float64) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %v, want %v", what, got, want)
				}
			}
			attachments := 1.0
			if tr == "longpoll" {
				attachments = float64(d.polls)
			}
			check("ferry_negotiations_total{result=new}", m.get("ferry_negotiations_total", "result", "new"), 1)
			check("ferry_negotiations_total", m.sum("ferry_negotiations_total"), 1)
			check("ferry_sessions", m.get("ferry_sessions"), 1)
			check("ferry_attachments_total{transport}", m.get("ferry_attachments_total", "transport", tr), attachments)
			check("ferry_attachments_total", m.sum("ferry_attachments_total"), attachments)
			check("ferry_frames_out_total{transport}", m.get("ferry_frames_out_total", "transport", tr), float64(d.frames))
			check("ferry_frames_out_total", m.sum("ferry_frames_out_total"), float64(d.frames))
			check("ferry_bytes_out_total{transport}", m.get("ferry_bytes_out_total", "transport", tr), float64(d.bytes))
			check("ferry_frames_in_total{transport}", m.get("ferry_frames_in_total", "transport", in), 2)
			check("ferry_frames_in_total", m.sum("ferry_frames_in_total"), 2)
			check("ferry_bytes_in_total{transport}", m.get("ferry_bytes_in_total", "transport", in), float64(2*len(upstream)))
			check("ferry_upstream_total{outcome=ok}", m.get("ferry_upstream_total", "outcome", "ok"), 1)
			check("ferry_upstream_total{outcome=duplicate}", m.get("ferry_upstream_total", "outcome", "duplicate"), 1)
			check("ferry_upstream_total", m.sum("ferry_upstream_total"), 2)
			check("ferry_publish_seconds_count", m.get("ferry_publish_seconds_count"), published+1) // and the echo
			check("ferry_broker_publish_errors_total", m.get("ferry_broker_publish_errors_total"), 0)
			check("ferry_resumes_total", m.get("ferry_resumes_total"), float64(d.resumed))
			check("ferry_resets_total", m.get("ferry_resets_total"), 0)
			check("ferry_transport_switches_total", m.sum("ferry_transport_switches_total"), 0)
			check("ferry_rejected_total", m.sum("ferry_rejected_total"), 0)
			check("ferry_broker_ready", m.get("ferry_broker_ready"), 1)
			if tr == "longpoll" {
				// Each poll detaches as it answers: no connection stays between polls.
				check("ferry_connections{transport}", m.get("ferry_connections", "transport", tr), 0)
				check("ferry_polls_total{outcome=timeout}", m.get("ferry_polls_total", "outcome", "timeout"), float64(d.timeouts))
				check("ferry_polls_total{outcome=data}", m.get("ferry_polls_total", "outcome", "data"), float64(d.polls-d.timeouts))
				check("ferry_polls_total", m.sum("ferry_polls_total"), float64(d.polls))
			} else {
				check("ferry_connections{transport}", m.get("ferry_connections", "transport", tr), 1)
				check("ferry_polls_total", m.sum("ferry_polls_total"), 0)
			}
			check("ferry_connections", m.sum("ferry_connections"), m.get("ferry_connections", "transport", tr))
			check("ferry_broker_channels", m.get("ferry_broker_channels"), 2*m.get("ferry_connections", "transport", tr))

			// Leaving ends the attachment: the gauge falls and the disconnect is counted.
			d.close()
			await.Until(t, "detach counted", func() bool {
				m := scrape(t, addr)
				return m.get("ferry_connections", "transport", tr) == 0 &&
					m.sum("ferry_disconnects_total", "transport", tr) == attachments
			})
		})
	}
}

// postSend returns a function that POSTs one upstream frame for c, as SSE and long-poll
// clients send.
func postSend(t *testing.T, c *fclient.Client) func(string) {
	return func(frame string) {
		body := `{"frames":[` + frame + `]}`
		resp, err := http.Post(c.Base+"/send?"+url.Values{"session": {c.Session}}.Encode(), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("send: %d %s", resp.StatusCode, b)
		}
	}
}

// apiPublish publishes v on channel through POST <base>/api/publish.
func apiPublish(t *testing.T, addr, channel string, v any) {
	body, _ := json.Marshal(map[string]any{"channel": channel, "data": v})
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/ferry/api/publish", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("publish: %d", resp.StatusCode)
	}
}

// Refusals show in /metrics under their reason: connection caps (per address and per
// node) as limit, the negotiation rate as rate, and origin, auth and session as such.
func TestMetricsEndpointCountsRejections(t *testing.T) {
	// X-Forwarded-For stands for the client addresses a proxy in front would report.
	addr := startServer(t, "--trust-forwarded-for", "--max-conns", "2", "--max-conns-per-ip", "1",
		"--negotiate-rate", "0.001", "--token-key", "jwt-key", "--allow-anonymous", "--allowed-origins", "https://ok.example")
	base := "http://" + addr + "/ferry"
	from := func(ip string) *fclient.Client {
		c := fclient.New(base)
		c.Header = http.Header{"X-Forwarded-For": {ip}}
		return c
	}
	stream := func(ip string) error {
		t.Helper()
		c := from(ip)
		if err := c.Negotiate(context.Background()); err != nil {
			t.Fatal(err)
		}
		s, err := c.SSE(context.Background(), "")
		if err != nil {
			return err
		}
		t.Cleanup(s.Close)
		if f := <-s.Frames; f.T != "hello" {
			t.Fatalf("first frame %+v", f)
		}
		return nil
	}
	status := func(err error) int {
		var he *fclient.HTTPError
		if errors.As(err, &he) {
			return he.Status
		}
		return 0
	}
	// Before the streams below fill the node.
	resp, err := http.Get(base + "/poll?session=forged")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged session: %d, want 401", resp.StatusCode)
	}
	if err := stream("10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := stream("10.0.0.1"); status(err) != http.StatusTooManyRequests {
		t.Fatalf("second stream from one address: %v, want 429", err)
	}
	if err := stream("10.0.0.2"); err != nil {
		t.Fatal(err)
	}
	if err := stream("10.0.0.3"); status(err) != http.StatusServiceUnavailable {
		t.Fatalf("third stream on the node: %v, want 503", err)
	}
	// The negotiation bucket holds 50.
	c := from("10.0.0.9")
	for range 50 {
		c.Session = ""
		if err := c.Negotiate(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	c.Session = ""
	if err := c.Negotiate(context.Background()); status(err) != http.StatusTooManyRequests {
		t.Fatalf("negotiation over the rate: %v, want 429", err)
	}
	c = fclient.New(base)
	c.Header = http.Header{"Origin": {"https://evil.example"}}
	if err := c.Negotiate(context.Background()); status(err) != http.StatusForbidden {
		t.Fatalf("foreign origin: %v, want 403", err)
	}
	c.Header = http.Header{"Authorization": {"Bearer not-a-jwt"}}
	if err := c.Negotiate(context.Background()); status(err) != http.StatusUnauthorized {
		t.Fatalf("bad token: %v, want 401", err)
	}

	m := scrape(t, addr)
	for reason, want := range map[string]float64{"limit": 2, "rate": 1, "origin": 1, "auth": 1, "session": 1} {
		if got := m.get("ferry_rejected_total", "reason", reason); got != want {
			t.Errorf("ferry_rejected_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if got := m.sum("ferry_rejected_total"); got != 6 {
		t.Errorf("ferry_rejected_total = %v in all, want 6 (nothing under other reasons)", got)
	}
}

// syncBuffer collects the server's log lines; run writes from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// find returns the JSON log lines with message msg and session sid.
func (b *syncBuffer) find(t *testing.T, msg, sid string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg && rec["sid"] == sid {
			out = append(out, rec)
		}
	}
	return out
}

// Every session lifecycle event is one log line with the session id, the client's
// address and, once attached, the transport; credentials never appear.
func TestLifecycleLogs(t *testing.T) {
	mr := miniredis.RunT(t)
	var logs syncBuffer
	addr, _, _ := launch(t, &logs, "--redis", "redis://"+mr.Addr()+"/0", "--log-level", "info", "--log-format", "json",
		"--heartbeat", "200ms", "--session-ttl", "1s")
	base := "http://" + addr + "/ferry"
	ctx := context.Background()
	streaming, idle := fclient.New(base), fclient.New(base)
	for _, c := range []*fclient.Client{streaming, idle} {
		if err := c.Negotiate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	creds := []string{streaming.Session, idle.Session}
	if err := streaming.Negotiate(ctx); err != nil || !streaming.Resumed {
		t.Fatalf("resume: %v %+v", err, streaming.Negotiation)
	}
	creds = append(creds, streaming.Session)
	stream, err := streaming.WebSocket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if f := <-stream.Frames; f.T != "hello" {
		t.Fatalf("first frame %+v", f)
	}

	// Both sessions lapse in Redis, as if their clients had been away for the TTL. The
	// streaming one finds out at its next heartbeat, the idle one when it next sends.
	mr.FastForward(time.Minute)
	closed := closeFrame(stream)
	if closed.Code != 4005 {
		t.Fatalf("stream of an expired session ended with %+v, want 4005", closed)
	}
	if _, err := idle.Send(ctx, map[string]any{"t": "send", "seq": 1, "d": 1}); err == nil {
		t.Fatal("send of an expired session accepted")
	}
	await.Until(t, "detached logged", func() bool { return len(logs.find(t, "detached", streaming.SID)) == 1 })

	for _, want := range []struct {
		msg, sid, transport string
	}{
		{"session created", streaming.SID, ""},
		{"session created", idle.SID, ""},
		{"session resumed", streaming.SID, ""},
		{"attached", streaming.SID, "websocket"},
		{"session expired", streaming.SID, "websocket"},
		{"detached", streaming.SID, "websocket"},
		{"session expired", idle.SID, ""},
	} {
		lines := logs.find(t, want.msg, want.sid)
		if len(lines) != 1 {
			t.Errorf("%d lines %q for %s, want 1", len(lines), want.msg, want.sid)
			continue
		}
		rec := lines[0]
		if remote, _ := rec["remote"].(string); !strings.HasPrefix(remote, "127.0.0.1:") {
			t.Errorf("%q line has remote %q, want the client's address", want.msg, rec["remote"])
		}
		if want.transport != "" && rec["transport"] != want.transport {
			t.Errorf("%q line has transport %v, want %s", want.msg, rec["transport"], want.transport)
		}
	}
	for _, cred := range creds {
		if strings.Contains(logs.String(), cred) {
			t.Errorf("a session credential is in the logs")
		}
	}
}

// --max-sessions bounds the in-memory broker's live sessions: beyond it a negotiation is
// refused with 503 and code 4000 (try another node), counted as a limit.
func TestMaxSessions(t *testing.T) {
	addr := startServer(t, "--max-sessions", "2")
	for i := range 3 {
		c := fclient.New("http://" + addr + "/ferry")
		err := c.Negotiate(context.Background())
		if i < 2 {
			if err != nil {
				t.Fatalf("negotiation %d: %v", i+1, err)
			}
			continue
		}
		var he *fclient.HTTPError
		if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || he.Code != 4000 {
			t.Fatalf("negotiation over --max-sessions: %v, want 503 with code 4000", err)
		}
	}
	m := scrape(t, addr)
	if got := m.get("ferry_rejected_total", "reason", "limit"); got != 1 {
		t.Errorf("ferry_rejected_total{reason=limit} = %v, want 1", got)
	}
	if got := m.get("ferry_sessions"); got != 2 {
		t.Errorf("ferry_sessions = %v, want 2", got)
	}
}

// closeFrame reads s up to its close frame and returns it (the zero Frame if the stream
// ended without one).
func closeFrame(s *fclient.Stream) fclient.Frame {
	for f := range s.Frames {
		if f.T == "close" {
			return f
		}
	}
	return fclient.Frame{}
}
