package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/internal/fclient"
)

// openTokenEvents opens /events?channel=<ch> with tok in the query, as an EventSource
// does, and waits for the id-only event that starts the stream: from then on the stream
// is subscribed.
func openTokenEvents(t *testing.T, ts *testServer, ch, tok string) (<-chan event, func()) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/events?channel="+url.QueryEscape(ch)+"&token="+url.QueryEscape(tok), nil)
	events, resp, stop := openEventsReq(t, http.DefaultClient, req, true)
	if resp.StatusCode != 200 {
		stop()
		t.Fatalf("/events: %d", resp.StatusCode)
	}
	if e := nextEvent(t, events); e.id == "" || e.data != "" {
		stop()
		t.Fatalf("first event %+v, want the starting id", e)
	}
	return events, stop
}

// closeEvent waits for the stream's close event, returns its code, and checks that the
// stream then ends.
func closeEvent(t *testing.T, events <-chan event) int {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("stream ended without a close event")
			}
			if e.name != eventClose {
				continue
			}
			var c struct {
				Code int `json:"code"`
			}
			json.Unmarshal([]byte(e.data), &c)
			select {
			case e, ok := <-events:
				if ok {
					t.Fatalf("event %+v after the close event", e)
				}
			case <-deadline:
				t.Fatal("stream still open after its close event")
			}
			return c.Code
		case <-deadline:
			t.Fatal("no close event within 5s")
		}
	}
}

// A dashboard stream lives no longer than its identity, like a session's attachment: at
// the heartbeat after its token expires it ends with a close event 4006, after a
// revocation with 4101. Another identity's stream goes on.
func TestEventsStreamEndsWhenIdentityLapses(t *testing.T) {
	var revoked atomic.Value
	revoked.Store("")
	ts, _ := authServer(t, Config{Heartbeat: 100 * time.Millisecond,
		Revoked: func(_ context.Context, user string) bool { return revoked.Load().(string) == user }})
	// exp has whole seconds: 2 s from now is 1 to 2 s away, time enough to open the stream.
	short, stopShort := openTokenEvents(t, ts, "room:a", token(t, jwtKey, "carol", 2*time.Second))
	defer stopShort()
	revokedStream, stopRevoked := openTokenEvents(t, ts, "room:a", token(t, jwtKey, "dave", time.Hour))
	defer stopRevoked()
	calm, stopCalm := openTokenEvents(t, ts, "room:a", token(t, jwtKey, "erin", time.Hour))
	defer stopCalm()

	if code := closeEvent(t, short); code != 4006 {
		t.Fatalf("expired token: close %d, want 4006", code)
	}
	revoked.Store("dave")
	if code := closeEvent(t, revokedStream); code != 4101 {
		t.Fatalf("revoked: close %d, want 4101", code)
	}
	ts.publish(t, "room:a", "still here")
	for {
		e := nextEvent(t, calm)
		if e.name == "room:a" {
			if e.data != `"still here"` {
				t.Fatalf("bystander stream got %+v", e)
			}
			break
		}
		if e.name == eventClose {
			t.Fatalf("bystander stream closed: %+v", e)
		}
	}
	// An expired token is refused at the door, not after the stream started.
	resp, err := http.Get(ts.URL + "/events?channel=room:a&token=" + url.QueryEscape(token(t, jwtKey, "carol", -time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	if code := errorCode(t, resp); resp.StatusCode != 401 || code != 4006 {
		t.Fatalf("expired token: %d/%d, want 401/4006", resp.StatusCode, code)
	}
	resp.Body.Close()
}

// With --allowed-origins '*', any page may use the server, but not with the user's
// cookies: a page let in by the wildcard only gets no Access-Control-Allow-Credentials,
// and a cookie token counts for nothing on any endpoint, while a header or query token
// works. Origins listed by name and the server's own host keep their credentials.
func TestWildcardOriginNoCredentials(t *testing.T) {
	ts, broker := authPresenceServer(t, Config{AllowedOrigins: []string{"https://app.example", "*"}})
	by, _ := tokenBystander(t, ts, token(t, jwtKey, "zoe", time.Hour))
	tok := token(t, jwtKey, "erin", time.Hour)
	do := func(method, path, origin string, header http.Header) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, ts.URL+path, nil)
		for k, v := range header {
			req.Header[k] = v
		}
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	cookie := http.Header{"Cookie": {"ferry_token=" + tok}}
	bearer := http.Header{"Authorization": {"Bearer " + tok}}
	// erin's own channel: reading it with her cookie is what a hijacking page is after.
	const history = "/api/history?channel=$user:erin"
	for _, path := range []string{"/negotiate", history, "/api/presence?channel=room:a"} {
		method := http.MethodGet
		if path == "/negotiate" {
			method = http.MethodPost
		}
		resp := do(method, path, "https://evil.example", cookie)
		code := errorCode(t, resp)
		resp.Body.Close()
		if resp.StatusCode != 401 || code != 4101 {
			t.Errorf("wildcard origin, cookie, %s: %d/%d, want 401/4101", path, resp.StatusCode, code)
		}
		if resp.Header.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("wildcard origin, %s: credentials allowed", path)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "https://evil.example" {
			t.Errorf("wildcard origin, %s: no CORS answer", path)
		}

		resp = do(method, path, "https://evil.example", bearer)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("wildcard origin, bearer token, %s: %d %v, want 200 without credentials", path, resp.StatusCode, resp.Header)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/events?channel=$user:erin", nil)
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Cookie", "ferry_token="+tok)
	_, resp, stop := openEventsReq(t, http.DefaultClient, req, false)
	if code := errorCode(t, resp); resp.StatusCode != 401 || code != 4101 {
		t.Errorf("wildcard origin, cookie, /events: %d/%d, want 401/4101", resp.StatusCode, code)
	}
	stop()
	req, _ = http.NewRequest(http.MethodGet, ts.URL+"/events?channel=$user:erin&token="+url.QueryEscape(tok), nil)
	req.Header.Set("Origin", "https://evil.example")
	_, resp, stop = openEventsReq(t, http.DefaultClient, req, false)
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("wildcard origin, query token, /events: %d %v, want 200 without credentials", resp.StatusCode, resp.Header)
	}
	stop()
	// A WebSocket needs a session credential, which only a negotiation hands out; its
	// handshake from a wildcard origin is let in, but a cookie is not even read: a bad one
	// is refused (4101) from a trusted origin only.
	erin := withToken(fclient.New(ts.URL), tok)
	if err := erin.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	for origin, want := range map[string]int{"https://evil.example": 0, "https://app.example": 4101} {
		u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws?session=" + url.QueryEscape(erin.Session)
		conn, _, err := websocket.DefaultDialer.Dial(u, http.Header{"Origin": {origin}, "Cookie": {"ferry_token=garbage"}})
		if err != nil {
			t.Fatalf("websocket from %s: %v", origin, err)
		}
		var f fclient.Frame
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		err = conn.ReadJSON(&f)
		conn.Close()
		var ce *websocket.CloseError
		if (want == 0 && (err != nil || f.T != "hello")) || (want != 0 && (!errors.As(err, &ce) || ce.Code != want)) {
			t.Errorf("websocket from %s with a bad cookie: %+v %v, want close code %d (0: hello)", origin, f, err, want)
		}
	}
	// The preflight of a wildcard origin allows the Authorization header, not credentials.
	pre := do(http.MethodOptions, history, "https://evil.example", http.Header{"Access-Control-Request-Method": {"GET"},
		"Access-Control-Request-Headers": {"authorization"}})
	pre.Body.Close()
	if pre.StatusCode != 204 || pre.Header.Get("Access-Control-Allow-Credentials") != "" ||
		!strings.Contains(pre.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("wildcard preflight: %d %v", pre.StatusCode, pre.Header)
	}

	// A listed origin and the server's own host are trusted: cookies count, credentials too.
	for _, origin := range []string{"https://app.example", ts.http.URL} {
		resp := do(http.MethodGet, history, origin, cookie)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Errorf("origin %s with a cookie: %d %v, want 200 with credentials", origin, resp.StatusCode, resp.Header)
		}
	}

	// A session negotiated with a cookie from a wildcard origin would hand the page the
	// user's session; the negotiation above was refused, and none exists but the
	// bystander's and the bearer one's.
	if n := broker.Sessions(); n != 3 {
		t.Errorf("%d sessions, want the bystander's and the two bearer negotiations'", n)
	}
	by.check(t)
}

// A page on an allowed origin reads presence and history with its token in the
// Authorization header, which needs a CORS preflight: it is answered, with the methods and
// headers the endpoints take.
func TestSessionlessPreflight(t *testing.T) {
	ts, _ := authPresenceServer(t, Config{AllowedOrigins: []string{"https://app.example"}})
	c := withToken(fclient.New(ts.URL), token(t, jwtKey, "erin", time.Hour))
	if err := c.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		"/api/presence?channel=room:a&session=" + url.QueryEscape(c.Session),
		"/api/history?channel=room:a",
		"/events?channel=room:a",
	} {
		req, _ := http.NewRequest(http.MethodOptions, ts.URL+path, nil)
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Access-Control-Request-Method", "GET")
		req.Header.Set("Access-Control-Request-Headers", "authorization")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if resp.StatusCode != 204 || h.Get("Access-Control-Allow-Origin") != "https://app.example" ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "GET") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Errorf("preflight %s: %d %v", path, resp.StatusCode, h)
		}
		if strings.HasPrefix(path, "/events") {
			continue // a stream: its GET is TestForeignOriginWithCookie's
		}
		req, _ = http.NewRequest(http.MethodGet, ts.URL+path, nil)
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Authorization", "Bearer "+token(t, jwtKey, "erin", time.Hour))
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
			t.Errorf("GET %s after the preflight: %d %v", path, resp.StatusCode, resp.Header)
		}
	}
	// Without an Origin nothing is a preflight: OPTIONS stays a method the endpoint refuses.
	req, _ := http.NewRequest(http.MethodOptions, ts.URL+"/api/history?channel=room:a", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("OPTIONS without Origin: %d, want 405", resp.StatusCode)
	}
}
