package main

import (
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
	"flag"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
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
	"heartbeat": "5s", "poll-hold": "7s", "poll-linger": "3s", "session-ttl": "30s", "max-message": "1024",
	"max-channels": "4", "queue-messages": "64", "queue-bytes": "65536", "history-size": "10",
	"history-ttl": "1m0s", "drain-timeout": "3s", "log-level": "debug", "log-format": "json",
	"demo": "false", "ticker": "2s", "state-file": "/tmp/ferry-state.json",
	"token-key": "jwtkey", "allow-anonymous": "true", "tls-cert": "", "tls-key": "",
	"max-conns": "10", "max-conns-per-ip": "5", "negotiate-rate": "2", "upstream-rate": "7",
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
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--heartbeat", "soon"}, nil, "heartbeat"},
		{nil, map[string]string{"FERRY_MAX_MESSAGE": "big"}, "FERRY_MAX_MESSAGE (--max-message)"},
		{[]string{"--queue-messages", "2"}, nil, "--queue-messages"},
		{[]string{"--log-level", "loud"}, nil, "--log-level"},
		{[]string{"--transports", "websocket,carrier-pigeon"}, nil, "--transports"},
		{[]string{"--heartbeat", "40s"}, nil, "--session-ttl"},
		{[]string{"extra"}, nil, "unexpected argument"},
	} {
		_, err := parseOptions(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want a message naming %s", tc.args, tc.env, err, tc.want)
		}
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	args = append([]string{"--addr", addr, "--ticker", "0", "--log-level", "error"}, args...)
	o, err := parseOptions(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, io.Discard) }()
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	// Wait for the listener.
	for range 200 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("server did not start")
	return ""
}

// The binary serves health, readiness, metrics and the client, and drains on cancel.
func TestRunServesAndDrains(t *testing.T) {
	addr := startServer(t)
	get := func(path string) (int, string) {
		for range 100 {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				time.Sleep(20 * time.Millisecond) // the listener is not up yet
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b)
		}
		t.Fatalf("%s: server not reachable", path)
		return 0, ""
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": "ferry_broker_ready 1",
		"/ferry/client.js": "export", "/": "Ferry"} {
		if code, body := get(path); code != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %.100q", path, code, body)
		}
	}
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
		deadline := time.Now().Add(15 * time.Second)
		for readyz() != want {
			if time.Now().After(deadline) {
				t.Fatalf("/readyz never answered %d", want)
			}
			time.Sleep(50 * time.Millisecond)
		}
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
