package bridge

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/session"
)

// bystander is a session on another transport that must keep receiving while someone
// else sends garbage.
type bystander struct {
	ts *testServer
	a  *attachment
	n  int
}

func newBystander(t *testing.T, ts *testServer) *bystander {
	c := ts.client(t)
	c.Subscribe("room:calm", "")
	a := attach(t, c, "websocket")
	t.Cleanup(a.close)
	a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "sub" })
	return &bystander{ts: ts, a: a}
}

// check publishes one message and waits for the bystander to receive it.
func (b *bystander) check(t *testing.T) {
	t.Helper()
	b.n++
	b.ts.publish(t, "room:calm", b.n)
	f := b.a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" })
	if string(f.D) != strconv.Itoa(b.n) {
		t.Fatalf("bystander got %s, want %d", f.D, b.n)
	}
}

// Forged, unknown and missing credentials get code 4005 on every transport, in the form
// that transport can carry: an HTTP status, a WebSocket close code, an SSE close event.
func TestBadCredentials(t *testing.T) {
	ts := newTestServer(t, Config{})
	by := newBystander(t, ts)
	other := session.NewSigner([]byte("another secret")).Issue(session.Claims{SID: session.NewSessionID()})
	for name, cred := range map[string]string{"forged": other, "garbage": "v1.abc.def", "missing": ""} {
		t.Run(name, func(t *testing.T) {
			c := fclient.New(ts.URL)
			c.Session = cred
			var he *fclient.HTTPError
			if _, _, err := c.Poll(context.Background(), true, 0); !errors.As(err, &he) || he.Status != 401 || he.Code != 4005 {
				t.Errorf("poll: %v, want 401/4005", err)
			}
			if _, err := c.Send(context.Background(), map[string]any{"t": "send", "seq": 1, "d": 1}); !errors.As(err, &he) || he.Status != 401 || he.Code != 4005 {
				t.Errorf("send: %v, want 401/4005", err)
			}
			for _, tr := range []string{"websocket", "sse"} {
				a := attach(t, c, tr)
				f := a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "close" })
				if f.Code != 4005 {
					t.Errorf("%s: close %+v, want 4005", tr, f)
				}
				a.close()
			}
			by.check(t)
		})
	}
	if n := ts.Manager().Attached(); n != 1 {
		t.Fatalf("%d attachments, want only the bystander's", n)
	}
}

// Malformed, oversized and non-UTF-8 WebSocket frames close only their own connection,
// each with its code.
func TestBadWebSocketFrames(t *testing.T) {
	ts := newTestServer(t, Config{MaxMessageBytes: 1024})
	by := newBystander(t, ts)
	for _, tc := range []struct {
		name string
		typ  int
		data string
		code int
	}{
		{"malformed JSON", websocket.TextMessage, `{"t":`, 4100},
		{"unknown type", websocket.TextMessage, `{"t":"boom"}`, 4100},
		{"invalid UTF-8", websocket.TextMessage, "{\"t\":\"send\",\"seq\":1,\"d\":\"\xff\"}", 1007},
		{"oversized", websocket.TextMessage, `{"t":"send","seq":1,"d":"` + strings.Repeat("x", 4096) + `"}`, 1009},
		{"payload over the limit", websocket.TextMessage, `{"t":"send","seq":1,"d":"` + strings.Repeat("x", 1100) + `"}`, 1009},
		{"binary", websocket.BinaryMessage, `{}`, 4100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.client(t)
			s, err := c.WebSocket(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// The server may close as soon as it has read an oversized frame's
			// header, before the rest of the frame is written; the write then fails
			// (close sent, broken pipe) and what matters is the close code below.
			if err := s.WriteRaw(tc.typ, []byte(tc.data)); err != nil {
				t.Logf("write: %v", err)
			}
			var last fclient.Frame
			for f := range s.Frames {
				last = f
			}
			if last.T != "close" || last.Code != tc.code {
				t.Fatalf("ended with %+v (%v), want close %d", last, s.Err(), tc.code)
			}
			by.check(t)
		})
	}
}

// Bad POST bodies get a status and a JSON body naming the problem.
func TestBadSendBodies(t *testing.T) {
	ts := newTestServer(t, Config{MaxMessageBytes: 1024, MaxBodyBytes: 4096})
	by := newBystander(t, ts)
	c := ts.client(t)
	u := ts.URL + "/send?session=" + url.QueryEscape(c.Session)
	for _, tc := range []struct {
		name, ctype, body string
		status, code      int
	}{
		{"cross-site simple POST", "text/plain", `{"frames":[{"t":"send","seq":1,"d":1}]}`, 415, 4100},
		{"form", "application/x-www-form-urlencoded", `a=b`, 415, 4100},
		{"malformed JSON", "application/json", `{"frames":[`, 400, 4100},
		{"no frames", "application/json", `{"frames":[]}`, 400, 4100},
		{"bad frame", "application/json", `{"frames":[{"t":"send","seq":0,"d":1}]}`, 400, 4100},
		{"sub by POST", "application/json", `{"frames":[{"t":"sub","ch":"x"}]}`, 200, 0},
		{"payload too big", "application/json", `{"frames":[{"t":"send","seq":1,"d":"` + strings.Repeat("x", 2000) + `"}]}`, 413, 1009},
		{"body too big", "application/json", `{"frames":[` + strings.Repeat(`{"t":"send","seq":1,"d":1},`, 300) + `]}`, 413, 1009},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(u, tc.ctype, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.status)
			}
			if tc.code != 0 && !strings.Contains(string(body), `"code":`+strconv.Itoa(tc.code)) {
				t.Fatalf("body %s, want code %d", body, tc.code)
			}
			if tc.code == 0 && !strings.Contains(string(body), `"code":4100`) {
				t.Fatalf("ack %s should refuse the frame with 4100", body)
			}
		})
	}
	by.check(t)
}

// A WebSocket handshake from a foreign origin is refused with 403 before any session
// attachment exists; allowed origins and same-host pages get in.
func TestWebSocketOrigin(t *testing.T) {
	ts := newTestServer(t, Config{AllowedOrigins: []string{"https://app.example"}})
	by := newBystander(t, ts)
	c := ts.client(t)
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws?session=" + url.QueryEscape(c.Session)
	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"https://evil.example", 403},
		{"https://app.example", 101},
		{"http://" + strings.TrimPrefix(ts.http.URL, "http://"), 101},
	} {
		conn, resp, err := websocket.DefaultDialer.Dial(u, http.Header{"Origin": {tc.origin}})
		if resp == nil || resp.StatusCode != tc.want {
			t.Errorf("origin %s: %v %v, want %d", tc.origin, resp, err, tc.want)
		}
		if conn != nil {
			conn.Close()
		}
		if tc.want == 403 {
			if n := ts.Manager().Attached(); n != 1 {
				t.Errorf("a foreign origin got an attachment (%d)", n)
			}
		}
	}
	by.check(t)
}

// Subscribing to another session's channel is refused with an unsub frame; nothing of it
// is delivered.
func TestSubscribeForbiddenChannel(t *testing.T) {
	ts := newTestServer(t, Config{})
	victim := ts.client(t)
	c := ts.client(t)
	c.Subscribe(SessionChannel(victim.SID), "")
	c.Subscribe(SessionChannel(c.SID), "")
	a := attach(t, c, "sse")
	defer a.close()
	f := a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "unsub" || f.T == "sub" })
	if f.T != "unsub" || f.Code != 4103 || f.Ch != SessionChannel(victim.SID) {
		t.Fatalf("got %+v, want unsub 4103 for the victim's channel", f)
	}
	ts.PublishToSession(context.Background(), victim.SID, "secret")
	ts.PublishToSession(context.Background(), c.SID, "mine")
	f = a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" })
	if string(f.D) != `"mine"` {
		t.Fatalf("got %s", f.D)
	}
}

// A negotiation with a malformed client identity is refused with 400 and code 4100
// naming the problem, and creates no session; a good one is carried by the credential.
func TestNegotiateClientID(t *testing.T) {
	broker := memory.New(memory.Config{})
	t.Cleanup(func() { broker.Close() })
	ts := newTestServer(t, Config{Broker: broker})
	for cid, want := range map[string]string{
		"short":                     "cid must be 16 to 64 characters",
		strings.Repeat("a", 65):     "cid must be 16 to 64 characters",
		"tab-0123456789abcde!":      "cid has the character '!' at 19",
		"tab-0123456789abcde\u00e9": "cid has the character",
	} {
		c := fclient.New(ts.URL)
		c.CID = cid
		var he *fclient.HTTPError
		if err := c.Negotiate(context.Background()); !errors.As(err, &he) || he.Status != 400 || he.Code != 4100 || !strings.Contains(he.Reason, want) {
			t.Errorf("cid %q: %v, want 400/4100 with %q", cid, err, want)
		}
	}
	if n := broker.Sessions(); n != 0 {
		t.Fatalf("%d sessions created by refused negotiations", n)
	}
	c := fclient.New(ts.URL)
	c.CID = "tab-0123456789abcdef"
	if err := c.Negotiate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if claims, err := ts.Manager().Verify(context.Background(), c.Session, nil); err != nil || claims.CID != c.CID {
		t.Fatalf("credential carries %+v, %v", claims, err)
	}
}
