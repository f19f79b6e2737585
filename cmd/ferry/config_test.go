package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge"
	"github.com/ferryrt/ferry/internal/await"
)

// A valid value for every flag, different from its default. A new flag without a sample
// fails TestEveryFlagHasEnvironmentAndHelp, so this list stays complete.
var samples = map[string]string{
	"config": "", "addr": "127.0.0.1:9999", "base": "/rt", "secret": "s3", "api-key": "k",
	"allowed-origins": "https://a.example", "transports": "sse,longpoll", "client-publish": "x:*",
	"heartbeat": "5s", "poll-hold": "7s", "poll-linger": "3s", "session-ttl": "30s", "dedupe-ttl": "5m0s", "store-timeout": "2s", "max-message": "1024",
	"max-channels": "4", "queue-messages": "64", "queue-bytes": "65536", "history-size": "10",
	"history-ttl": "1m0s", "idempotency-ttl": "30m0s", "drain-timeout": "3s", "log-level": "debug", "log-format": "json",
	"demo": "false", "ticker": "2s", "state-file": "/tmp/ferry-state.json", "data-dir": "/tmp/ferry-data",
	"token-key": "jwtkey", "allow-anonymous": "true", "tls-cert": "", "tls-key": "",
	"max-conns": "10", "max-conns-per-ip": "5", "max-sessions": "500", "negotiate-rate": "2", "negotiate-burst": "9", "upstream-rate": "7",
	"trust-forwarded-for": "true", "header-timeout": "3s", "debug-addr": "127.0.0.1:6060", "redis": "redis://127.0.0.1:6379/1", "node-id": "n1",
	"presence": "team:*", "upstream-stream": "", "io": "plain",
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
		{[]string{"--io", "epoll"}, nil, "--io"},
		{[]string{"--transports", "websocket,carrier-pigeon"}, nil, "--transports"},
		{[]string{"--heartbeat", "40s"}, nil, "--session-ttl"},
		{[]string{"--dedupe-ttl", "30s"}, nil, "--dedupe-ttl"},
		{[]string{"--idempotency-ttl", "0s"}, nil, "--idempotency-ttl"},
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

// --idempotency-ttl reaches the broker: a publish retried with its Idempotency-Key is
// answered with the first position until the window ends, and published anew only after
// it (well before the default ten minutes).
func TestIdempotencyTTLReachesTheBroker(t *testing.T) {
	addr := startServer(t, "--api-key", "k", "--idempotency-ttl", "1s")
	publish := func() uint64 {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/ferry/api/publish", strings.NewReader(`{"channel":"room:idem","data":1}`))
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "retry-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var pr bridge.PublishResponse
		if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("publish: %d %v", resp.StatusCode, err)
		}
		return pr.Offset
	}
	start := time.Now()
	if first, again := publish(), publish(); first != 1 || again != 1 {
		t.Fatalf("a retry within the window: offsets %d then %d, want 1 twice", first, again)
	}
	await.Until(t, "the key's window to end", func() bool { return publish() == 2 })
	if d := time.Since(start); d < time.Second {
		t.Fatalf("the key was forgotten after %v, before its --idempotency-ttl of 1s", d)
	}
}
