package session

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Client frames are untrusted: any input either decodes into a valid frame or fails with
// an *Error, and a decoded payload is compact JSON that fits on one SSE line.
func FuzzDecodeClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"t":"send","seq":1,"d":{"a":1}}`, `{"t":"pub","seq":2,"ch":"room:a","b":"AAEC"}`,
		`{"t":"sub","ch":"x","ep":"ab","off":3}`, `{"t":"unsub","ch":"x"}`, `{"t":"pong","seq":1}`,
		`{"t":"send","seq":1,"d":"a\nb"}`, `{"t":"send","seq":1,"d":[1, 2,` + "\n" + `3]}`, "\xff", `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fr, err := DecodeClientFrame(in, 1024)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason == "" {
				t.Fatalf("error %v is not a close reason", err)
			}
			return
		}
		if strings.ContainsAny(string(fr.Data), "\r\n") {
			t.Fatalf("payload %q would break an SSE data line", fr.Data)
		}
		if (fr.T == FrameSub || fr.T == FrameUnsub || fr.T == FramePub) && !ValidChannel(fr.Ch) {
			t.Fatalf("accepted channel %q", fr.Ch)
		}
	})
}

// Cursors and positions come from query strings and Last-Event-ID headers.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"room:a=ab12.42,ticker=", "a=b.1", "=", "a=,a=", "a=b.99999999999999999999", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := ParseCursor(in, 8)
		if err != nil {
			return
		}
		if len(c) > 8 {
			t.Fatalf("%d entries", len(c))
		}
		for _, e := range c {
			if !ValidChannel(e.Channel) || (!e.Position.IsZero() && !ValidEpoch(e.Position.Epoch)) {
				t.Fatalf("accepted %+v", e)
			}
		}
		// What parses formats back to something that parses the same.
		again, err := ParseCursor(c.String(), 8)
		if err != nil || len(again) != len(c) {
			t.Fatalf("round trip of %q: %v", c.String(), err)
		}
		for i := range c {
			if again[i] != c[i] {
				t.Fatalf("round trip changed %v to %v", c[i], again[i])
			}
		}
	})
}

// Credentials are presented by anyone: only what the signer issued verifies.
func FuzzVerify(f *testing.F) {
	s := NewSigner([]byte("fuzz"))
	good := s.Issue(Claims{SID: NewSessionID(), User: "u"})
	f.Add(good)
	f.Add("v1..")
	f.Add("v1.x.y")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := s.Verify(in)
		if err != nil {
			if !errors.Is(err, ErrSession) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if in != good && s.Issue(c) != in {
			t.Fatalf("verified %q which the signer did not issue", in)
		}
		if !utf8.ValidString(c.SID) {
			t.Fatal("bad sid")
		}
	})
}

// Client identities come from negotiation bodies: an accepted one is safe in a Redis key,
// a log line and a credential, and every refusal is a 4100 naming the problem.
func FuzzCheckClientID(f *testing.F) {
	for _, s := range []string{"tab-0123456789abcdef", "short", "tab-0123456789abcde!", "\xff\xfe0123456789abcdef", strings.Repeat("a", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cid string) {
		err := CheckClientID(cid)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeBadRequest || !utf8.ValidString(e.Reason) {
				t.Fatalf("error %v is not a 4100 with a readable reason", err)
			}
			return
		}
		if len(cid) < MinClientIDLen || len(cid) > MaxClientIDLen || strings.Trim(cid, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			t.Fatalf("accepted %q", cid)
		}
		// A credential carries it through Verify unchanged.
		s := NewSigner([]byte("k"))
		c, err := s.Verify(s.Issue(Claims{SID: NewSessionID(), CID: cid, Issued: time.Unix(1, 0)}))
		if err != nil || c.CID != cid {
			t.Fatalf("credential with cid %q: %+v %v", cid, c, err)
		}
	})
}
