package transport

import (
	"bufio"
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// checkPlainPoll fails t if readPlainPoll takes raw (a whole header) and makes of it
// anything but the request http.ReadRequest reads from it.
func checkPlainPoll(t *testing.T, raw []byte, target string) (taken bool) {
	t.Helper()
	got, ok := readPlainPoll(raw, target)
	if !ok {
		return false
	}
	want, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("took %q, which http.ReadRequest refuses: %v", raw, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\nread   %#v\nwant %#v\nURL %#v, want %#v", raw, got, want, got.URL, want.URL)
	}
	return true
}

// The plain polls that readPlainPoll reads come out as http.ReadRequest reads them, and
// whatever it leaves (anything less plain) is ReadRequest's.
func TestPlainPollMatchesReadRequest(t *testing.T) {
	const target = "GET /ferry/poll"
	for _, c := range []struct {
		raw   string
		taken bool
	}{
		{"GET /ferry/poll?session=v1.a.b&cursor=c%3De1.5 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: Mozilla/5.0 (X11)\r\nAccept: */*\r\n\r\n", true},
		{"GET /ferry/poll HTTP/1.1\r\nhost: h\r\n\r\n", true},
		{"GET /ferry/poll? HTTP/1.1\r\nHost: h\r\n\r\n", true},
		{"GET /ferry/poll?a?b#c HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nAccept:\r\nOrigin:\t https://a.example\r\n\r\n", true},
		{"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\n\r\n", true},
		{"GET /ferry/poll?x HTTP/1.1\nHost: h\n\n", false},
		{"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", false},
		{"GET /ferry/poll?x HTTP/1.1\r\nX: y\r\n\r\n", false},
		{"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false},
		{"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n", false},
		{"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", false},
		{"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nX: a \r\n\r\n", false},
		{"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nX: y\r\n z\r\n\r\n", false},
		{"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nX : y\r\n\r\n", false},
		{"GET /ferry/poll?x HTTP/1.0\r\nHost: h\r\n\r\n", false},
		{"GET /ferry/poll?x HTTP/1.1 \r\nHost: h\r\n\r\n", false},
		{"GET /ferry/poll?x\x7f HTTP/1.1\r\nHost: h\r\n\r\n", false},
		{"GET /ferry/poll?x HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n", false},
	} {
		if got := checkPlainPoll(t, []byte(c.raw), target); got != c.taken {
			t.Errorf("%q: taken %v, want %v", c.raw, got, c.taken)
		}
	}
}

// FuzzPlainPollMatchesReadRequest feeds arbitrary headers of polls to readPlainPoll: what
// it takes must be read exactly as http.ReadRequest reads it.
func FuzzPlainPollMatchesReadRequest(f *testing.F) {
	f.Add("?session=v1.a.b&cursor=c%3De1.5", "Host: 127.0.0.1:8080\r\nUser-Agent: Mozilla/5.0 (X11)\r\nAccept: */*\r\n")
	f.Add("", "host: h\r\nx-a: 1\r\nX-A: 2\r\n")
	f.Add("?", "Host: h\r\nOrigin:\t https://a.example\r\nAccept:\r\n")
	f.Add("?a?b#c", "Host: h\r\nPragma: no-cache\r\n")
	f.Fuzz(func(t *testing.T, query, header string) {
		if strings.ContainsAny(query, " \r\n") {
			return // the request line ends there; parsePoll has looked at it already
		}
		const target = "GET /ferry/poll"
		raw := []byte(target + query + " HTTP/1.1\r\n" + header + "\r\n")
		if headerEnd(raw) != len(raw) {
			return // not one whole header: parsePoll cuts it where it ends
		}
		checkPlainPoll(t, raw, target)
	})
}
