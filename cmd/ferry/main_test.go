package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
