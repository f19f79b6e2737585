package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/bridge/presence"
	"github.com/ferryrt/ferry/internal/await"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/transport"
)

var jwtKey = []byte("test-signing-key")

func token(t *testing.T, key []byte, sub string, exp time.Duration, channels ...string) string {
	t.Helper()
	now := time.Now()
	c := TokenClaims{Channels: channels, RegisteredClaims: jwt.RegisteredClaims{
		Subject: sub, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(exp)),
	}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func authServer(t *testing.T, cfg Config) (*testServer, *memory.Broker) {
	b := memory.New(memory.Config{})
	cfg.Broker = b
	cfg.Authenticate = JWTAuthenticator(JWTConfig{Key: jwtKey})
	return newTestServer(t, cfg), b
}

func withToken(c *fclient.Client, tok string) *fclient.Client {
	c.Header = http.Header{"Authorization": {"Bearer " + tok}}
	return c
}

// authPresenceServer is authServer with presence kept on room:*, so that /api/presence
// is served.
func authPresenceServer(t *testing.T, cfg Config) (*testServer, *memory.Broker) {
	b := memory.New(memory.Config{})
	p := presence.NewMemory(b, presence.Config{})
	t.Cleanup(func() { p.Close() })
	cfg.Broker, cfg.Presence, cfg.PresenceChannels = b, p, []string{"room:*"}
	cfg.Authenticate = JWTAuthenticator(JWTConfig{Key: jwtKey})
	return newTestServer(t, cfg), b
}

// tokenBystander is newBystander for servers that require a token (tok; "" for none). It
// also returns the bystander's client, for tests that check its upstream too.
func tokenBystander(t *testing.T, ts *testServer, tok string) (*bystander, *fclient.Client) {
	t.Helper()
	c := fclient.New(ts.URL)
	if tok != "" {
		withToken(c, tok)
	}
	if err := c.Negotiate(context.Background()); err != nil {
		t.Fatalf("bystander: %v", err)
	}
	c.Subscribe("room:calm", "")
	a := attach(t, c, "websocket")
	t.Cleanup(a.close)
	a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "sub" })
	return &bystander{ts: ts, a: a}, c
}

// errorCode is the close code in the JSON body of a refusal.
func errorCode(t *testing.T, resp *http.Response) int {
	t.Helper()
	var body struct {
		Code int `json:"code"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Errorf("%s: refusal without a JSON body: %v", resp.Request.URL.Path, err)
	}
	return body.Code
}

// No token, an expired one or one signed with another key: 401 and no session. A
// session's credential presented with another identity is refused exactly like an
// unknown one, so nobody learns whether a credential exists.
func TestTokenAuthentication(t *testing.T) {
	ts, broker := authServer(t, Config{})
	by, _ := tokenBystander(t, ts, token(t, jwtKey, "zoe", time.Hour))
	for name, tc := range map[string]struct {
		tok  string
		code int
	}{
		"none":      {"", 4101},
		"expired":   {token(t, jwtKey, "alice", -2*time.Minute), 4006},
		"wrong key": {token(t, []byte("other"), "alice", time.Minute), 4101},
		"garbage":   {"not.a.jwt", 4101},
		"no exp":    {mustSign(t, jwt.MapClaims{"sub": "alice"}), 4101},
		// The 24 h cap on a token's lifetime holds with or without iat.
		"25 h":             {mustSign(t, jwt.MapClaims{"sub": "alice", "iat": time.Now().Unix(), "exp": time.Now().Add(25 * time.Hour).Unix()}), 4101},
		"25 h without iat": {mustSign(t, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(25 * time.Hour).Unix()}), 4101},
		"10 y without iat": {mustSign(t, jwt.MapClaims{"sub": "alice", "exp": time.Now().AddDate(10, 0, 0).Unix()}), 4101},
		"alg none":         {mustSignNone(t), 4101},
	} {
		c := fclient.New(ts.URL)
		if tc.tok != "" {
			withToken(c, tc.tok)
		}
		var he *fclient.HTTPError
		if err := c.Negotiate(context.Background()); !errors.As(err, &he) || he.Status != 401 || he.Code != tc.code {
			t.Errorf("%s: %v, want 401 with code %d", name, err, tc.code)
		}
	}
	if n := broker.Sessions(); n != 1 {
		t.Fatalf("%d sessions besides the bystander's created by refused negotiations", n-1)
	}
	by.check(t)

	// Within the cap, iat is optional.
	noIAT := withToken(fclient.New(ts.URL), mustSign(t, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(23 * time.Hour).Unix()}))
	if err := noIAT.Negotiate(context.Background()); err != nil {
		t.Fatalf("a 23 h token without iat: %v", err)
	}
	alice := withToken(fclient.New(ts.URL), token(t, jwtKey, "alice", time.Hour))
	if err := alice.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The token may come as a query parameter (EventSource, WebSocket) or a cookie too.
	tok := token(t, jwtKey, "alice", time.Hour)
	for how, set := range map[string]func(*http.Request){
		"query":  func(r *http.Request) { r.URL.RawQuery += "&token=" + tok },
		"cookie": func(r *http.Request) { r.Header.Set("Cookie", "ferry_token="+tok) },
	} {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/poll?hello=1&session="+url.QueryEscape(alice.Session), nil)
		set(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("token in %s: %v %v", how, resp, err)
		}
		resp.Body.Close()
	}

	// Bob presenting Alice's credential, and anyone presenting a forged one: same answer.
	bob := withToken(fclient.New(ts.URL), token(t, jwtKey, "bob", time.Hour))
	bob.Session = alice.Session
	forged := withToken(fclient.New(ts.URL), token(t, jwtKey, "bob", time.Hour))
	forged.Session = alice.Session[:len(alice.Session)-2] + "AA"
	var errs []string
	for _, c := range []*fclient.Client{bob, forged} {
		_, _, err := c.Poll(context.Background(), true, 0)
		errs = append(errs, errString(err))
	}
	if errs[0] != errs[1] || !strings.Contains(errs[0], "401: 4005") {
		t.Fatalf("another identity's credential: %q, forged: %q; want the same 401/4005", errs[0], errs[1])
	}
	// Renegotiating with Alice's credential as Bob gives Bob a new session, not Alice's.
	if err := bob.Negotiate(context.Background()); err != nil || bob.Resumed || bob.SID == alice.SID {
		t.Fatalf("bob resumed alice's session: %v %+v", err, bob.Negotiation)
	}
	by.check(t)
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func mustSign(t *testing.T, c jwt.MapClaims) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(jwtKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustSignNone(t *testing.T) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A token's channel grants open exactly those channels; everything else stays refused,
// and a refused subscription leaks nothing.
func TestTokenGrants(t *testing.T) {
	ts, _ := authServer(t, Config{})
	by, _ := tokenBystander(t, ts, token(t, jwtKey, "zoe", time.Hour))
	c := withToken(fclient.New(ts.URL), token(t, jwtKey, "ops", time.Hour, "$alerts:*", "team:ops"))
	if err := c.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	acks, err := c.Send(context.Background(),
		map[string]any{"t": "pub", "seq": 1, "ch": "team:ops", "d": 1},
		map[string]any{"t": "pub", "seq": 2, "ch": "team:dev", "d": 1},
		map[string]any{"t": "pub", "seq": 3, "ch": "$alerts:disk", "d": 1})
	if err != nil {
		t.Fatal(err)
	}
	if acks[0].Err != nil || acks[1].Err == nil || acks[1].Err.Code != 4103 || acks[2].Err != nil {
		t.Fatalf("acks %+v %+v %+v", acks[0], acks[1], acks[2])
	}
	c.Subscribe("$alerts:disk", "")
	c.Subscribe("$user:root", "")
	a := attach(t, c, "sse")
	defer a.close()
	seen := map[string]string{}
	for len(seen) < 2 {
		f := a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "sub" || f.T == "unsub" })
		seen[f.Ch] = f.T
	}
	if seen["$alerts:disk"] != "sub" || seen["$user:root"] != "unsub" {
		t.Fatalf("subscriptions %v", seen)
	}
	ts.publish(t, "$user:root", "secret")
	ts.publish(t, "$alerts:disk", "full")
	if f := a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" }); string(f.D) != `"full"` {
		t.Fatalf("got %s", f.D)
	}
	by.check(t)
}

// An attachment of an identity whose token expires, or that is revoked, is closed within
// a heartbeat: 4006 (negotiate again with a fresh token) or 4101 (terminal).
func TestExpiredAndRevokedIdentitiesAreClosed(t *testing.T) {
	var revoked atomic.Value
	revoked.Store("")
	ts, _ := authServer(t, Config{Heartbeat: 100 * time.Millisecond, SessionTTL: 10 * time.Second,
		Revoked: func(_ context.Context, user string) bool { return revoked.Load().(string) == user }})
	short := withToken(fclient.New(ts.URL), token(t, jwtKey, "carol", time.Second))
	long := withToken(fclient.New(ts.URL), token(t, jwtKey, "dave", time.Hour))
	for _, c := range []*fclient.Client{short, long} {
		if err := c.Negotiate(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	a := attach(t, short, "websocket")
	defer a.close()
	if f := a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "close" }); f.Code != 4006 {
		t.Fatalf("expired token: close %+v, want 4006", f)
	}
	b := attach(t, long, "sse")
	defer b.close()
	b.next(t, 5*time.Second)
	revoked.Store("dave")
	if f := b.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "close" }); f.Code != 4101 {
		t.Fatalf("revoked: close %+v, want 4101", f)
	}
}

// With a cookie-carried identity, a foreign page must not ride on it: every endpoint that
// reads a token refuses a foreign Origin with 403 before any session or stream exists (a
// preflight included), and the sessions already connected are untouched.
func TestForeignOriginWithCookie(t *testing.T) {
	ts, broker := authPresenceServer(t, Config{AllowedOrigins: []string{"https://app.example"}})
	by, _ := tokenBystander(t, ts, token(t, jwtKey, "zoe", time.Hour))
	cookie := "ferry_token=" + token(t, jwtKey, "erin", time.Hour)
	request := func(method, path, origin string) *http.Response {
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Cookie", cookie)
		req.Header.Set("Origin", origin)
		if method == http.MethodOptions {
			req.Header.Set("Access-Control-Request-Method", "GET")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/negotiate"},
		{http.MethodGet, "/sse?session=x"},
		{http.MethodGet, "/poll?session=x"},
		{http.MethodPost, "/send?session=x"},
		{http.MethodGet, "/events?channel=room:a"},
		{http.MethodGet, "/api/history?channel=room:a"},
		{http.MethodGet, "/api/presence?channel=room:a"},
		{http.MethodOptions, "/api/presence?channel=room:a"},
	} {
		resp := request(tc.method, tc.path, "https://evil.example")
		code := errorCode(t, resp)
		resp.Body.Close()
		if resp.StatusCode != 403 || code != 4103 {
			t.Errorf("%s %s: %d/%d, want 403/4103", tc.method, tc.path, resp.StatusCode, code)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s %s: CORS headers for a foreign origin", tc.method, tc.path)
		}
	}
	if n := broker.Sessions(); n != 1 {
		t.Fatalf("%d sessions besides the bystander's were created", n-1)
	}
	if n := ts.hub.Channels(); n != 1 {
		t.Fatalf("%d channels subscribed besides the bystander's", n-1)
	}
	// An allowed origin gets CORS with credentials on every endpoint, and never a wildcard.
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/negotiate"},
		{http.MethodGet, "/api/history?channel=room:a"},
		{http.MethodGet, "/api/presence?channel=room:a"},
	} {
		resp := request(tc.method, tc.path, "https://app.example")
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
			resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Errorf("allowed origin, %s %s: %d %v", tc.method, tc.path, resp.StatusCode, resp.Header)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/events?channel=room:a", nil)
	req.Header.Set("Cookie", cookie)
	req.Header.Set("Origin", "https://app.example")
	_, resp, stop := openEventsReq(t, http.DefaultClient, req, false)
	stop()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("allowed origin, /events: %d %v", resp.StatusCode, resp.Header)
	}
	by.check(t)
}

// clientFrom returns an HTTP client whose connections come from a given loopback address.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxConnsPerHost: 0}}
}

// A flood of connections from one address is capped with 429 before anything is
// attached, on every endpoint that holds a connection (/sse, /ws, /events); other
// addresses are served; a full node answers 503. Short requests (/api/history,
// /api/presence) hold no connection and are served at the cap. Streams already open, and
// the bystander's session, are untouched, and a stream that ends gives its slot back.
func TestConnectionFloodCapped(t *testing.T) {
	broker := memory.New(memory.Config{})
	p := presence.NewMemory(broker, presence.Config{})
	t.Cleanup(func() { p.Close() })
	// 6 slots: the bystander's, 3 from 127.0.0.2 (its cap) and 2 from 127.0.0.3.
	ts := newTestServer(t, Config{Broker: broker, Presence: p, PresenceChannels: []string{"room:*"},
		Limits: transport.Limits{MaxConnsPerIP: 3, MaxConns: 6}})
	by := newBystander(t, ts)
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	// openSSE opens a session's stream from ip; openEventsFrom opens GET /events.
	openSSE := func(ip string) error {
		c := ts.client(t)
		c.HTTP = clientFrom(ip)
		s, err := c.SSE(context.Background(), "")
		if err == nil {
			stops = append(stops, s.Close)
		}
		return err
	}
	openEventsFrom := func(ip string) (<-chan event, *http.Response, func()) {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/events?channel=room:flood", nil)
		ch, resp, stop := openEventsReq(t, clientFrom(ip), req, true)
		stops = append(stops, stop)
		return ch, resp, stop
	}
	// refused checks that an /events request from ip is refused with status and code.
	refused := func(ip string, status, code int) {
		t.Helper()
		_, resp, stop := openEventsFrom(ip)
		if got := errorCode(t, resp); resp.StatusCode != status || got != code {
			t.Errorf("/events from %s: %d/%d, want %d/%d", ip, resp.StatusCode, got, status, code)
		}
		stop()
	}
	var he *fclient.HTTPError
	for i := range 2 {
		if err := openSSE("127.0.0.2"); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	events, resp, stopEvents := openEventsFrom("127.0.0.2")
	if resp.StatusCode != 200 {
		t.Fatalf("/events under the cap: %d", resp.StatusCode)
	}
	if e := nextEvent(t, events); e.id == "" {
		t.Fatalf("first event %+v, want the starting id", e)
	}
	if err := openSSE("127.0.0.2"); !errors.As(err, &he) || he.Status != 429 || he.Code != 4029 {
		t.Fatalf("stream over the per-address cap: %v, want 429/4029", err)
	}
	refused("127.0.0.2", 429, 4029)
	// Another address still gets in, up to the node's cap.
	for i := range 2 {
		if err := openSSE("127.0.0.3"); err != nil {
			t.Fatalf("other address, stream %d: %v", i, err)
		}
	}
	if err := openSSE("127.0.0.3"); !errors.As(err, &he) || he.Status != 503 || he.Code != 4000 {
		t.Fatalf("node full: %v, want 503/4000", err)
	}
	refused("127.0.0.3", 503, 4000)
	flood := ts.client(t)
	// A WebSocket handshake is refused before the upgrade.
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws?session=" + url.QueryEscape(flood.Session)
	d := websocket.Dialer{NetDialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}
	if _, resp, err := d.Dial(u, nil); err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("websocket over the cap: %v %v", resp, err)
	}
	for _, path := range []string{"/api/history?channel=room:flood", "/api/presence?channel=room:flood"} {
		resp, err := clientFrom("127.0.0.2").Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s at the cap: %d, want 200", path, resp.StatusCode)
		}
	}
	// What was open before the flood still works.
	ts.publish(t, "room:flood", "still here")
	if e := nextEvent(t, events); e.name != "room:flood" || e.data != `"still here"` {
		t.Fatalf("open /events stream got %+v", e)
	}
	by.check(t)
	// An ended stream gives its slot back: the next /events from that address gets in.
	// Until the server has noticed the end, the node and the address are still full.
	stopEvents()
	await.Until(t, "a new /events stream from the address to get in", func() bool {
		_, resp, stop := openEventsFrom("127.0.0.2")
		if resp.StatusCode != 200 && resp.StatusCode != 429 && resp.StatusCode != 503 {
			t.Fatalf("/events after a stream ended: %d", resp.StatusCode)
		}
		if resp.StatusCode != 200 {
			stop()
		}
		return resp.StatusCode == 200
	})
}

// Negotiations per address are rate-limited.
func TestNegotiationRateLimited(t *testing.T) {
	ts := newTestServer(t, Config{Limits: transport.Limits{NegotiateRate: 0.001, NegotiateBurst: 3}})
	for i := range 4 {
		c := fclient.New(ts.URL)
		c.HTTP = clientFrom("127.0.0.4")
		err := c.Negotiate(context.Background())
		var he *fclient.HTTPError
		if (i < 3) != (err == nil) || (i == 3 && (!errors.As(err, &he) || he.Status != 429)) {
			t.Fatalf("negotiation %d: %v", i, err)
		}
	}
	c := fclient.New(ts.URL)
	c.HTTP = clientFrom("127.0.0.5")
	if err := c.Negotiate(context.Background()); err != nil {
		t.Fatalf("another address: %v", err)
	}
}

// Upstream beyond the session's rate gets 4029 acks, is not processed, and goes through
// when resent later. The bucket is the session's own: another session sends its whole
// burst at once and keeps receiving.
func TestUpstreamRateLimited(t *testing.T) {
	// 100/s refills a token in 10 ms: the bystander's burst below comes well within that,
	// so a bucket shared between sessions would refuse some of it.
	ts := newTestServer(t, Config{UpstreamRate: 100, UpstreamBurst: 5})
	by, other := tokenBystander(t, ts, "")
	c := ts.client(t)
	frames := make([]any, 8)
	for i := range frames {
		frames[i] = map[string]any{"t": "send", "seq": i + 1, "d": i}
	}
	acks, err := c.Send(context.Background(), frames...)
	if err != nil {
		t.Fatal(err)
	}
	limited := 0
	for i, a := range acks {
		if a.Err != nil {
			if a.Err.Code != 4029 {
				t.Fatalf("ack %d: %+v", i, a)
			}
			limited++
			if ts.seenCount(c.SID, a.Seq) != 0 {
				t.Fatalf("a refused frame was processed")
			}
		}
	}
	if limited == 0 {
		t.Fatal("no frame was rate-limited")
	}
	acks, err = other.Send(context.Background(), frames[:5]...)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range acks {
		if a.Err != nil || ts.seenCount(other.SID, a.Seq) != 1 {
			t.Fatalf("bystander's frame %d after another session's flood: %+v", i, a)
		}
	}
	by.check(t)
	// Resend what was refused, as the client does, until everything is acked.
	pending := frames
	await.Until(t, "every refused frame to be acked on resend", func() bool {
		acks, err := c.Send(context.Background(), pending...)
		if err != nil {
			t.Fatal(err)
		}
		var again []any
		for i, a := range acks {
			if a.Err != nil {
				again = append(again, pending[i])
			}
		}
		pending = again
		return len(pending) == 0
	})
	for seq := uint64(1); seq <= 8; seq++ {
		if n := ts.seenCount(c.SID, seq); n != 1 {
			t.Fatalf("seq %d processed %d times", seq, n)
		}
	}
}

// Compression is never negotiated, so a deflate bomb can't pass the read limit.
func TestNoWebSocketCompression(t *testing.T) {
	ts := newTestServer(t, Config{})
	c := ts.client(t)
	d := websocket.Dialer{EnableCompression: true}
	conn, resp, err := d.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws?session="+url.QueryEscape(c.Session), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		t.Fatalf("server accepted extension %q", ext)
	}
	io.Copy(io.Discard, resp.Body)
}

// The server's own origin is its scheme and host, not its host alone: on a plain-HTTP
// node, a page on https://<host> is another origin (a network attacker can serve it), so
// it gets 403 and no cookie-carried identity. Behind a TLS-terminating proxy the proxy's
// X-Forwarded-Proto says the scheme, but only with TrustForwardedFor: otherwise any client
// could claim it.
func TestSameOriginComparesScheme(t *testing.T) {
	for _, tc := range []struct {
		name   string
		trust  bool
		proto  string // X-Forwarded-Proto
		origin string // scheme; the host is the server's
		want   int
	}{
		{"plain node, http page", false, "", "http", 200},
		{"plain node, https page", false, "", "https", 403},
		{"untrusted X-Forwarded-Proto", false, "https", "https", 403},
		{"trusted X-Forwarded-Proto, https page", true, "https", "https", 200},
		{"trusted X-Forwarded-Proto, http page", true, "https", "http", 403},
		{"trusted proxy chain, last entry counts", true, "http, https", "https", 200},
		{"trusted, no X-Forwarded-Proto", true, "", "https", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, Config{Limits: transport.Limits{TrustForwardedFor: tc.trust}})
			host := strings.TrimPrefix(ts.http.URL, "http://")
			req, _ := http.NewRequest(http.MethodPost, ts.URL+"/negotiate", strings.NewReader(`{}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Origin", tc.origin+"://"+host)
			if tc.proto != "" {
				req.Header.Set("X-Forwarded-Proto", tc.proto)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("Origin %s://%s: %d, want %d", tc.origin, host, resp.StatusCode, tc.want)
			}
			if tc.want == 200 && resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
				t.Fatalf("same origin without credentials: %v", resp.Header)
			}
		})
	}
	// A WebSocket handshake is checked the same way.
	ts := newTestServer(t, Config{})
	c := ts.client(t)
	host := strings.TrimPrefix(ts.http.URL, "http://")
	u := "ws://" + host + ts.Base() + "/ws?session=" + url.QueryEscape(c.Session)
	conn, resp, err := websocket.DefaultDialer.Dial(u, http.Header{"Origin": {"https://" + host}})
	if conn != nil {
		conn.Close()
	}
	if resp == nil || resp.StatusCode != 403 {
		t.Fatalf("WebSocket from https://%s on a plain node: %v %v, want 403", host, resp, err)
	}
}
