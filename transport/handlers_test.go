package transport_test

// The handlers at the HTTP level, over a fakeSessions: statuses, headers and bodies of
// negotiation, POST /send, SSE, long-polling and WebSocket. The I/O inside each transport
// is tested by the conformance cases and, end to end, by bridge.

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// do sends a request and returns the response with its body read.
func do(t *testing.T, method, url, contentType, body string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// wantError checks an HTTP error answer: its status, JSON body and close code.
func wantError(t *testing.T, resp *http.Response, body []byte, status int, code session.Code) {
	t.Helper()
	var e struct {
		Code   session.Code
		Reason string
	}
	if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != status || e.Code != code || e.Reason == "" {
		t.Fatalf("answered %d %s, want %d with code %d", resp.StatusCode, body, status, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q", ct)
	}
}

func TestNegotiate(t *testing.T) {
	ts := newTestServer(t, func(c *transport.Config) {
		c.MaxBodyBytes = 64
		c.AllowedOrigins = []string{"https://app.example"}
	})
	url := ts.URL + "/ferry/negotiate"

	resp, body := do(t, "POST", url, "", "", nil)
	var n transport.NegotiateResponse
	if err := json.Unmarshal(body, &n); err != nil || resp.StatusCode != 200 {
		t.Fatalf("negotiate: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Cache-Control") != "no-store" || n.V != 1 || n.Session != "cred:"+n.SID || n.Resumed ||
		strings.Join(n.Transports, ",") != "websocket,sse,longpoll" || n.HeartbeatMs != time.Hour.Milliseconds() ||
		n.Limits.MaxBodyBytes != 64 || n.Limits.MaxMessageBytes != 1024 || n.Limits.MaxChannels != 8 {
		t.Fatalf("negotiate answered %+v", n)
	}

	resp, body = do(t, "POST", url, "application/json", `{"session":"`+n.Session+`"}`, nil)
	var again transport.NegotiateResponse
	if json.Unmarshal(body, &again); resp.StatusCode != 200 || !again.Resumed || again.SID != n.SID {
		t.Fatalf("resume: %d %s", resp.StatusCode, body)
	}

	t.Run("errors", func(t *testing.T) {
		resp, body := do(t, "GET", url, "", "", nil)
		wantError(t, resp, body, 405, session.CodeBadRequest)
		if resp.Header.Get("Allow") != "POST" {
			t.Fatalf("405 without Allow: %v", resp.Header)
		}
		resp, body = do(t, "POST", url, "application/json", `{"session":`, nil)
		wantError(t, resp, body, 400, session.CodeBadRequest)
		resp, body = do(t, "POST", url, "text/plain", `{}`, nil)
		wantError(t, resp, body, 415, session.CodeBadRequest)
		resp, body = do(t, "POST", url, "application/json", `{"session":"`+strings.Repeat("x", 64)+`"}`, nil)
		wantError(t, resp, body, 413, session.CodeTooBig)
		resp, body = do(t, "POST", url, "application/json", `{"cid":"not a client id"}`, nil)
		wantError(t, resp, body, 400, session.CodeBadRequest)
	})

	t.Run("origin", func(t *testing.T) {
		before := ts.obs.rejections("origin")
		resp, body := do(t, "POST", url, "", "", map[string]string{"Origin": "https://evil.example"})
		wantError(t, resp, body, 403, session.CodeForbidden)
		if ts.obs.rejections("origin") != before+1 {
			t.Fatal("a foreign origin was not counted")
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("a foreign origin got CORS headers: %v", resp.Header)
		}

		resp, _ = do(t, "OPTIONS", url, "", "", map[string]string{"Origin": "https://app.example",
			"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"})
		h := resp.Header
		if resp.StatusCode != 204 || h.Get("Access-Control-Allow-Origin") != "https://app.example" ||
			h.Get("Access-Control-Allow-Credentials") != "true" || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") || h.Get("Vary") != "Origin" {
			t.Fatalf("preflight answered %d %v", resp.StatusCode, h)
		}

		resp, _ = do(t, "POST", url, "", "", map[string]string{"Origin": "https://app.example"})
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
			t.Fatalf("allowed origin answered %d %v", resp.StatusCode, resp.Header)
		}
	})
}

// A page let in only by "*" gets CORS answers without credentials.
func TestNegotiateWildcardOrigin(t *testing.T) {
	ts := newTestServer(t, func(c *transport.Config) { c.AllowedOrigins = []string{"*"} })
	resp, _ := do(t, "POST", ts.URL+"/ferry/negotiate", "", "", map[string]string{"Origin": "https://any.example"})
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://any.example" ||
		resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("answered %d %v", resp.StatusCode, resp.Header)
	}
}

func TestNegotiateRequiresIdentity(t *testing.T) {
	ts := newTestServer(t, func(c *transport.Config) {
		c.Authenticate = func(r *http.Request) (session.Identity, bool, error) {
			if r.Header.Get("Authorization") == "Bearer good" {
				return session.Identity{User: "u"}, true, nil
			}
			return session.Identity{}, false, nil
		}
	})
	resp, body := do(t, "POST", ts.URL+"/ferry/negotiate", "", "", nil)
	wantError(t, resp, body, 401, session.CodeUnauthorized)
	if ts.obs.rejections("auth") != 1 {
		t.Fatal("a refused identity was not counted")
	}
	resp, _ = do(t, "POST", ts.URL+"/ferry/negotiate", "", "", map[string]string{"Authorization": "Bearer good"})
	if resp.StatusCode != 200 {
		t.Fatalf("with a token: %d", resp.StatusCode)
	}
}

func TestSend(t *testing.T) {
	ts := newTestServer(t, nil)
	url := ts.URL + "/ferry/send?session=cred:s1"
	resp, body := do(t, "POST", url, "application/json",
		`{"frames":[{"t":"send","seq":1,"d":{"x":1}},{"t":"pub","seq":2,"ch":"forbidden","d":2}]}`, nil)
	var r transport.SendResponse
	if err := json.Unmarshal(body, &r); err != nil || resp.StatusCode != 200 || len(r.Acks) != 2 {
		t.Fatalf("send: %d %s", resp.StatusCode, body)
	}
	var refused session.ServerFrame
	json.Unmarshal(r.Acks[1], &refused)
	if string(r.Acks[0]) != `{"t":"ack","seq":1}` || refused.T != "ack" || refused.Seq != 2 || refused.Err == nil {
		t.Fatalf("acks %s", body)
	}
	if !strings.Contains(string(r.Acks[1]), `"code":4103`) {
		t.Fatalf("refused frame acked %s, want code 4103", r.Acks[1])
	}
	if n := ts.obs.receivedFrames(); n != 2 {
		t.Fatalf("received %d frames, want 2", n)
	}

	resp, body = do(t, "POST", ts.URL+"/ferry/send", "application/json", `{"frames":[{"t":"send","seq":1}]}`, nil)
	wantError(t, resp, body, 401, session.CodeSessionExpired)
	resp, body = do(t, "POST", url, "application/json", `{"frames":[]}`, nil)
	wantError(t, resp, body, 400, session.CodeBadRequest)
	resp, body = do(t, "POST", url, "application/json", `{"frames":[{"t":"send","seq":1,"d":1},{"t":"nope"}]}`, nil)
	wantError(t, resp, body, 400, session.CodeBadRequest)
	if !strings.Contains(string(body), "frame 1") {
		t.Fatalf("a bad frame's error does not name it: %s", body)
	}
	resp, body = do(t, "GET", url, "", "", nil)
	wantError(t, resp, body, 405, session.CodeBadRequest)
}

// sseStream reads the events of an SSE response.
type sseStream struct {
	resp *http.Response
	br   *bufio.Reader
}

func openSSE(t *testing.T, url string) *sseStream {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("sse: %d %v", resp.StatusCode, resp.Header)
	}
	return &sseStream{resp: resp, br: bufio.NewReader(resp.Body)}
}

// next returns the data of the next event.
func (s *sseStream) next(t *testing.T) session.ServerFrame {
	t.Helper()
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			t.Fatalf("sse read: %v", err)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var f session.ServerFrame
			if err := json.Unmarshal([]byte(data), &f); err != nil {
				t.Fatalf("sse data %q: %v", data, err)
			}
			return f
		}
	}
}

func TestSSE(t *testing.T) {
	ts := newTestServer(t, nil)
	s := openSSE(t, ts.URL+"/ferry/sse?session=cred:s1")
	line, _ := s.br.ReadString('\n')
	if line != "retry: 2000\n" {
		t.Fatalf("first line %q, want the retry hint", line)
	}
	if f := s.next(t); f.T != session.FrameHello || f.SID != "s1" || f.Tr != transport.SSE {
		t.Fatalf("first frame %+v, want hello", f)
	}
	ts.fake.attachment("s1").Enqueue((&session.ServerFrame{T: session.FrameUnsub, Ch: "c", Code: session.CodeForbidden}).Encode())
	if f := s.next(t); f.T != session.FrameUnsub || f.Ch != "c" {
		t.Fatalf("queued frame arrived as %+v", f)
	}

	// A newer attachment of the session closes this one with 4001, and the stream ends.
	newer := openSSE(t, ts.URL+"/ferry/sse?session=cred:s1")
	newer.next(t)
	if f := s.next(t); f.T != session.FrameClose || f.Code != session.CodeSuperseded {
		t.Fatalf("superseded stream got %+v, want close 4001", f)
	}
	if _, err := io.ReadAll(s.br); err != nil {
		t.Fatalf("stream did not end cleanly: %v", err)
	}

	// A bad credential is answered in the stream: an EventSource can't read a status.
	bad := openSSE(t, ts.URL+"/ferry/sse?session=bad")
	if f := bad.next(t); f.T != session.FrameClose || f.Code != session.CodeSessionExpired {
		t.Fatalf("bad credential got %+v, want close 4005", f)
	}
}

// pollAnswer is the body of a long-poll.
type pollAnswer struct{ Frames []session.ServerFrame }

func poll(t *testing.T, url string) (int, pollAnswer) {
	t.Helper()
	resp, body := do(t, "GET", url, "", "", nil)
	var a pollAnswer
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatalf("poll body %s: %v", body, err)
		}
	}
	return resp.StatusCode, a
}

func TestLongPoll(t *testing.T) {
	ts := newTestServer(t, nil)
	base := ts.URL + "/ferry/poll?session=cred:s1"
	status, a := poll(t, base+"&hello=1")
	if status != 200 || len(a.Frames) != 1 || a.Frames[0].T != session.FrameHello || a.Frames[0].Tr != transport.LongPoll {
		t.Fatalf("first poll: %d %+v", status, a)
	}

	// A held poll answers with what is queued for it.
	attached := make(chan *session.Attachment, 1)
	ts.fake.mu.Lock()
	ts.fake.attachCh = attached
	ts.fake.mu.Unlock()
	type result struct {
		status int
		a      pollAnswer
	}
	held := make(chan result, 1)
	go func() {
		status, a := poll(t, base+"&att=1")
		held <- result{status, a}
	}()
	(<-attached).Enqueue((&session.ServerFrame{T: session.FrameUnsub, Ch: "c"}).Encode())
	if r := <-held; r.status != 200 || len(r.a.Frames) != 1 || r.a.Frames[0].T != session.FrameUnsub {
		t.Fatalf("held poll: %d %+v", r.status, r.a)
	}

	// A poll superseded by a newer one of its session answers 204, having sent nothing.
	go func() {
		status, a := poll(t, base+"&att=2")
		held <- result{status, a}
	}()
	<-attached
	go func() {
		status, a := poll(t, base+"&att=3")
		held <- result{status, a}
	}()
	<-attached
	if r := <-held; r.status != 204 {
		t.Fatalf("superseded poll: %d %+v, want 204", r.status, r.a)
	}
	// The newer one ends with the server: 4003 in a close frame.
	ts.fake.shutdown()
	if r := <-held; r.status != 200 || len(r.a.Frames) != 1 || r.a.Frames[0].Code != session.CodeShutdown {
		t.Fatalf("poll at shutdown: %d %+v, want a close frame 4003", r.status, r.a)
	}

	status, _ = poll(t, ts.URL+"/ferry/poll")
	if status != 401 {
		t.Fatalf("poll without session: %d, want 401", status)
	}
}

func TestWebSocket(t *testing.T) {
	ts := newTestServer(t, nil)
	wsURL := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ferry/ws?session=cred:s1"
	dial := func() *websocket.Conn {
		t.Helper()
		c, resp, err := websocket.DefaultDialer.Dial(wsURL, nil)
		if err != nil {
			t.Fatalf("dial: %v %v", err, resp)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a failure guard only
		return c
	}
	read := func(c *websocket.Conn) session.ServerFrame {
		t.Helper()
		var f session.ServerFrame
		if err := c.ReadJSON(&f); err != nil {
			t.Fatalf("read: %v", err)
		}
		return f
	}
	c := dial()
	if f := read(c); f.T != session.FrameHello || f.Tr != transport.WebSocket {
		t.Fatalf("first frame %+v, want hello", f)
	}
	c.WriteMessage(websocket.TextMessage, []byte(`{"t":"send","seq":7,"d":"hi"}`))
	if f := read(c); f.T != session.FrameAck || f.Seq != 7 || f.Err != nil {
		t.Fatalf("send answered %+v, want ack 7", f)
	}
	ts.fake.attachment("s1").Enqueue((&session.ServerFrame{T: session.FrameUnsub, Ch: "c"}).Encode())
	if f := read(c); f.T != session.FrameUnsub {
		t.Fatalf("queued frame arrived as %+v", f)
	}

	newer := dial()
	read(newer)
	_, _, err := c.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != int(session.CodeSuperseded) {
		t.Fatalf("superseded connection ended with %v, want close 4001", err)
	}

	_, resp, err := websocket.DefaultDialer.Dial(wsURL, http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("foreign origin: %v %v, want 403", err, resp)
	}
}

func TestNegotiateRate(t *testing.T) {
	ts := newTestServer(t, func(c *transport.Config) {
		c.Limiter = transport.NewLimiter(transport.Limits{NegotiateRate: 0.001, NegotiateBurst: 1})
	})
	if resp, _ := do(t, "POST", ts.URL+"/ferry/negotiate", "", "", nil); resp.StatusCode != 200 {
		t.Fatalf("first negotiation: %d", resp.StatusCode)
	}
	resp, body := do(t, "POST", ts.URL+"/ferry/negotiate", "", "", nil)
	wantError(t, resp, body, 429, session.CodeRateLimited)
	if ts.obs.rejections("rate") != 1 {
		t.Fatal("a rate-limited negotiation was not counted as rate")
	}
}
