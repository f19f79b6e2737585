package transport

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/r3labs/sse/v2"

	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/session"
)

func FuzzApplyLastEventID(f *testing.F) {
	for _, s := range []string{"room:a=ep.5", "room:a=", "=", "room:a=ep.x", "a=b=c.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		cur := session.Cursor{{Channel: "room:a", Position: session.Position{Epoch: "ep", Offset: 3}}, {Channel: "b"}}
		if err := applyLastEventID(cur, id); err != nil {
			var e *session.Error
			if !errors.As(err, &e) || e.Code != session.CodeBadRequest {
				t.Fatalf("error %v", err)
			}
			return
		}
		// Only a newer position of the same epoch for a listed channel moves the cursor.
		if cur[0].Position.Epoch != "ep" || cur[0].Position.Offset < 3 || !cur[1].Position.IsZero() {
			t.Fatalf("cursor became %v", cur)
		}
	})
}

func FuzzDecodeSendFrames(f *testing.F) {
	f.Add([]byte(`{"frames":[{"t":"send","seq":1,"d":1}]}`))
	f.Add([]byte(`{"frames":[{"t":"pub","seq":1,"ch":"a","d":1},{"t":"x"}]}`))
	f.Add([]byte(`{"frames":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req SendRequest
		if json.Unmarshal(body, &req) != nil {
			return
		}
		frames, err := DecodeSendFrames(req.Frames, 256)
		if err != nil {
			var e *session.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if len(frames) != len(req.Frames) {
			t.Fatalf("%d frames decoded from %d", len(frames), len(req.Frames))
		}
	})
}

// Whatever a client publishes, the SSE encoding of its message is exactly one event whose
// id and data are those of the message: no CR, LF or NUL can start a field of its own.
func FuzzSSEEventEncoding(f *testing.F) {
	for _, s := range []string{`"a\nb"`, `{"x":"\r\ndata: evil"}`, `"\u0000"`, `[1,` + "\n" + `2]`, `"id: x"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		data, err := session.CompactPayload([]byte(payload), 1<<16)
		if err != nil {
			return
		}
		m := &session.Message{Channel: "room:a", Pos: session.Position{Epoch: "ep", Offset: 9}, Data: data}
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		writeEvent(bw, session.MessageFrame(m))
		writeEvent(bw, session.Outgoing{JSON: []byte(`{"t":"ping","seq":1,"ts":1}`)})
		bw.Flush()
		r := sse.NewEventStreamReader(&buf, 1<<20)
		ev, err := r.ReadEvent()
		if err != nil {
			t.Fatal(err)
		}
		fr, ok, err := fclient.ParseEvent(ev)
		if err != nil || !ok || fr.T != "msg" || fr.EventID != "room:a=ep.9" || !bytes.Equal(fr.D, data) {
			t.Fatalf("event %q decoded to %+v, %v", ev, fr, err)
		}
		ev, err = r.ReadEvent()
		if fr, ok, _ := fclient.ParseEvent(ev); err != nil || !ok || fr.T != "ping" {
			t.Fatalf("second event %q: the first one spilled over", ev)
		}
	})
}

// Credentials go only where the allow-list names the page. With "*" in the list every
// origin is let in, but one that matches only through "*" never gets
// Access-Control-Allow-Credentials, and its cookies never reach the Authenticator
// (without touching the request the handler goes on with); a listed origin, the server's
// own origin (scheme and host: the request here is plain HTTP) and a request without
// Origin get them.
func FuzzOriginCredentials(f *testing.F) {
	for _, s := range [][2]string{
		{"https://app.example", "ferry.example"}, {"HTTPS://APP.EXAMPLE", "ferry.example"},
		{"https://ferry.example", "ferry.example"}, {"http://ferry.example", "ferry.example"},
		{"http://ferry.example:8080", "ferry.example:8080"}, {"http://ferry.example:80", "ferry.example"},
		{"http://ferry.example/", "ferry.example"},
		{"https://evil.example", "ferry.example"}, {"https://app.example.evil", "ferry.example"},
		{"null", ""}, {"", "ferry.example"}, {"https://", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, origin, host string) {
		sawCookie := false
		cfg := (&Config{AllowedOrigins: []string{"https://app.example", "*"},
			Authenticate: func(r *http.Request) (session.Identity, bool, error) {
				sawCookie = r.Header.Get("Cookie") != ""
				return session.Identity{}, false, nil
			}}).withDefaults()
		r := httptest.NewRequest(http.MethodGet, "/poll", nil)
		r.Host = host
		r.Header["Origin"] = []string{origin}
		r.Header.Set("Cookie", "ferry_token=t")
		w := httptest.NewRecorder()
		if !cfg.cors(w, r) {
			t.Fatalf("origin %q refused although \"*\" is allowed", origin)
		}
		cfg.Authenticate(r)
		// The server's own origin on plain HTTP: http://<Host>, where an explicit :80 on
		// either side is the default port.
		ownHost, isHTTP := "", len(origin) >= 7 && strings.EqualFold(origin[:7], "http://")
		if isHTTP {
			ownHost = origin[7:]
		}
		same := isHTTP && ownHost != "" && !strings.ContainsAny(ownHost, "/?#@") &&
			strings.EqualFold(strings.TrimSuffix(ownHost, ":80"), strings.TrimSuffix(host, ":80"))
		trusted := origin == "" || strings.EqualFold(origin, "https://app.example") || same
		creds := w.Header().Get("Access-Control-Allow-Credentials") == "true"
		if creds != (trusted && origin != "") || sawCookie != trusted {
			t.Fatalf("origin %q on host %q: credentials %v, cookie seen %v; trusted %v", origin, host, creds, sawCookie, trusted)
		}
		if origin != "" && w.Header().Get("Access-Control-Allow-Origin") != origin {
			t.Fatalf("origin %q: Access-Control-Allow-Origin %q", origin, w.Header().Get("Access-Control-Allow-Origin"))
		}
		if r.Header.Get("Cookie") == "" {
			t.Fatal("hiding the cookie from the Authenticator removed it from the request")
		}
	})
}

// FuzzParsePoll feeds arbitrary bytes to the request reader of taken-over connections. A
// request is taken only when it is a complete HTTP/1.1 GET of the poll path with no body,
// no Expect and one valid Host, and takes no more than its own header; anything else is
// handed back to net/http untouched, or waited for.
func FuzzParsePoll(f *testing.F) {
	const target = "GET /ferry/poll"
	for _, s := range []string{
		"GET /ferry/poll?session=x&cursor=a%3D HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\n\r\nGET /ferry/poll?y HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /ferry/poll?x HTTP/1.1\nHost: h\n\n",
		"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
		"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n",
		"GET /ferry/poll?x HTTP/1.0\r\n\r\n",
		"GET /ferry/poll?x HTTP/2.0\r\nHost: h\r\n\r\n",
		"GET /ferry/polls HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST /ferry/send HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}",
		"GET /ferry/po",
		"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
		"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nExpect: foo\r\n\r\n",
		"GET /ferry/poll?x HTTP/1.1\r\nhost: h\r\nX: y\r\n z\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, used, err := parsePoll(in, target)
		var back *notPollError
		switch {
		case err == nil:
			if used <= 0 || used > len(in) || r.Method != http.MethodGet || r.URL.Path != "/ferry/poll" {
				t.Fatalf("took %d of %d bytes as %s %q", used, len(in), r.Method, r.URL.Path)
			}
			if r.ContentLength != 0 || len(r.TransferEncoding) > 0 || r.Host == "" || r.ProtoMajor != 1 || r.ProtoMinor != 1 ||
				r.Header.Get("Expect") != "" || hostLines(in[:used]) != 1 {
				t.Fatalf("took a poll net/http would not pass on as it is: %q", in[:used])
			}
			if !bytes.HasPrefix(in, []byte(target)) {
				t.Fatalf("took a request that is not a poll: %q", in)
			}
		case errors.As(err, &back):
			// Handed back whole: net/http reads it from its first byte.
			if used != 0 || r != nil {
				t.Fatalf("handed back having taken %d bytes", used)
			}
		case errors.Is(err, errNeedMore):
			if headerEnd(in) >= 0 && len(in) > len(target) {
				t.Fatalf("waits for more of a complete header: %q", in)
			}
		}
	})
}
