package session

import (
	"bufio"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseCursor(t *testing.T) {
	c, err := ParseCursor("room:a=ab12.42,ticker=,$session:x=z.0", 10)
	if err != nil {
		t.Fatal(err)
	}
	want := Cursor{
		{"room:a", Position{"ab12", 42}},
		{"ticker", Position{}},
		{"$session:x", Position{"z", 0}},
	}
	if len(c) != len(want) {
		t.Fatalf("got %v", c)
	}
	for i := range want {
		if c[i] != want[i] {
			t.Errorf("entry %d: got %v, want %v", i, c[i], want[i])
		}
	}
	if got := c.String(); got != "room:a=ab12.42,ticker=,$session:x=z.0" {
		t.Errorf("String() = %q", got)
	}
	for _, bad := range []string{
		"room", "room=x", "room=ab.", "room=.1", "room=ab.-1", "room=ab.+1", "room=ab.1x",
		"a b=", "=", "a=,a=", "a=ab.18446744073709551616", "a=toolongepoch01234.1",
		"a=,b=,c=", // over the limit of 2 below
	} {
		_, err := ParseCursor(bad, 2)
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeBadRequest {
			t.Errorf("ParseCursor(%q) = %v, want a bad-request error", bad, err)
		}
	}
	if _, err := ParseCursor(strings.Repeat("a", MaxCursorLen+1), 1); err == nil {
		t.Error("overlong cursor accepted")
	}
}

func TestCredentials(t *testing.T) {
	s := NewSigner([]byte("secret"))
	c := Claims{SID: NewSessionID(), User: "alice|admin", Issued: time.Unix(1700000000, 0),
		Expires: time.Unix(1700003600, 0), Grants: []string{"room:*", "$user:alice"}}
	cred := s.Issue(c)
	got, err := s.Verify(cred)
	if err != nil || got.SID != c.SID || got.User != c.User || !got.Issued.Equal(c.Issued) ||
		!got.Expires.Equal(c.Expires) || strings.Join(got.Grants, ",") != "room:*,$user:alice" {
		t.Fatalf("Verify = %+v, %v; want %+v", got, err, c)
	}
	// Another node with the same secret verifies it without any shared state.
	if _, err := NewSigner([]byte("secret")).Verify(cred); err != nil {
		t.Fatalf("second node: %v", err)
	}
	forged := []string{
		"",
		cred[:len(cred)-1],
		cred + "A",
		strings.Replace(cred, "v1.", "v2.", 1),
		NewSigner([]byte("other")).Issue(c),
		// Same signature on another payload.
		"v1." + b64.EncodeToString([]byte(`{"s":"`+NewSessionID()+`","i":1,"u":"alice"}`)) + cred[strings.LastIndexByte(cred, '.'):],
	}
	for _, f := range forged {
		if _, err := s.Verify(f); !errors.Is(err, ErrSession) {
			t.Errorf("Verify(%q) = %v, want ErrSession", f, err)
		}
	}
	// Verified credentials are remembered per Signer: a second Verify gives the same
	// claims, and what another key verified proves nothing here.
	if again, err := s.Verify(cred); err != nil || again.SID != c.SID || !again.Expires.Equal(c.Expires) {
		t.Fatalf("second Verify = %+v, %v", again, err)
	}
	other := NewSigner([]byte("other"))
	foreign := other.Issue(c)
	if _, err := other.Verify(foreign); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(foreign); !errors.Is(err, ErrSession) {
		t.Fatalf("a credential of another key, verified there: %v", err)
	}
	for range verifiedMax + 10 {
		s.Verify(s.Issue(Claims{SID: NewSessionID(), Issued: time.Now()}))
	}
	if n := len(s.verified); n > verifiedMax {
		t.Fatalf("%d credentials remembered, at most %d", n, verifiedMax)
	}
	if a, b := NewSessionID(), NewSessionID(); a == b || len(a) != 22 {
		t.Errorf("session ids %q %q", a, b)
	}
}

func TestWindow(t *testing.T) {
	w := NewWindow(128)
	for _, step := range []struct {
		seq   uint64
		first bool
	}{
		{1, true}, {1, false}, {3, true}, {2, true}, {2, false}, {0, false},
		{200, true}, // slides past 1..72
		{72, false}, {73, true}, {73, false}, {199, true}, {200, false},
		{1000, true}, {999, true}, {872, false}, {873, true},
	} {
		if got := w.Mark(step.seq); got != step.first {
			t.Fatalf("Mark(%d) = %v, want %v", step.seq, got, step.first)
		}
	}
}

// The close-code table in client-js/src/codes.js has exactly the rows of Codes.
func TestCodesMatchJSClient(t *testing.T) {
	f, err := os.Open("../client-js/src/codes.js")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile(`^\s*(\d+): \{ name: '([^']*)', reconnect: (true|false) \},$`)
	js := map[Code]CodeInfo{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := row.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.Atoi(m[1])
			js[Code(n)] = CodeInfo{Name: m[2], Reconnect: m[3] == "true"}
		}
	}
	if len(js) != len(Codes) {
		t.Errorf("codes.js has %d rows, session.Codes %d", len(js), len(Codes))
	}
	for c, info := range Codes {
		if js[c] != info {
			t.Errorf("code %d: Go %+v, JS %+v", c, info, js[c])
		}
	}
	for c, want := range map[Code]bool{4050: true, 4150: false, 4600: true, 4800: false, 1012: true} {
		if c.Reconnect() != want {
			t.Errorf("Code(%d).Reconnect() = %v", c, !want)
		}
	}
}

func TestDecodeClientFrame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code Code
	}{
		{`{"t":"send","seq":1,"d":{"a": 1}}`, 0},
		{`{"t":"pub","seq":2,"ch":"room:a","b":"AAEC"}`, 0},
		{`{"t":"sub","ch":"x","ep":"ab","off":3}`, 0},
		{`{"t":"unsub","ch":"x"}`, 0},
		{`{"t":"pong","seq":4}`, 0},
		{"\xff", CodeInvalidPayload},
		{`{`, CodeBadRequest},
		{`[]`, CodeBadRequest},
		{`{"t":"nope"}`, CodeBadRequest},
		{`{}`, CodeBadRequest},
		{`{"t":"send","d":1}`, CodeBadRequest},                        // no seq
		{`{"t":"send","seq":1}`, CodeBadRequest},                      // no payload
		{`{"t":"send","seq":1,"d":1,"b":"AA=="}`, CodeBadRequest},     // both payloads
		{`{"t":"pub","seq":1,"ch":"bad name","d":1}`, CodeBadRequest}, // channel
		{`{"t":"sub","ch":"x","off":3}`, CodeBadRequest},              // offset without epoch
		{`{"t":"send","seq":1,"d":"` + strings.Repeat("x", 100) + `"}`, CodeTooBig},
		{`{"t":"send","seq":-1,"d":1}`, CodeBadRequest},
	} {
		f, err := DecodeClientFrame([]byte(tc.in), 64)
		var e *Error
		switch {
		case tc.code == 0 && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.code != 0 && (!errors.As(err, &e) || e.Code != tc.code):
			t.Errorf("%q: %v, want code %d", tc.in, err, tc.code)
		}
		if tc.code == 0 && f.T == FrameSend && string(f.Data) != `{"a":1}` {
			t.Errorf("payload not compacted: %s", f.Data)
		}
	}
}

func TestMessageFrame(t *testing.T) {
	m := &Message{Channel: "room:a", Pos: Position{"ep1", 7}, Data: []byte(`{"x":"a\nb"}`)}
	if got := string(m.Frame()); got != `{"t":"msg","ch":"room:a","ep":"ep1","off":7,"d":{"x":"a\nb"}}` {
		t.Errorf("frame %s", got)
	}
	if m.EventID() != "room:a=ep1.7" {
		t.Errorf("event id %s", m.EventID())
	}
	b := &Message{Channel: "c", Pos: Position{"e", 1}, Bin: []byte{0xff, 0}}
	if got := string(b.Frame()); got != `{"t":"msg","ch":"c","ep":"e","off":1,"b":"/wA="}` {
		t.Errorf("binary frame %s", got)
	}
}
