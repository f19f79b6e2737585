package transport

import (
	"net/url"
	"strings"
	"testing"
)

// checkPollQuery fails t if a pollQuery of raw answers any Get otherwise than the
// url.Values of url.ParseQuery(raw).
func checkPollQuery(t *testing.T, raw string) {
	t.Helper()
	want, _ := url.ParseQuery(raw)
	got := parsePollQuery(raw)
	for _, k := range append(pollParams[:], "other", "") {
		if g, w := got.Get(k), want.Get(k); g != w {
			t.Fatalf("query %q: Get(%q) = %q, url.Values has %q", raw, k, g, w)
		}
	}
}

// A poll's query reads as url.Values does: the first value that parses, with pairs
// holding a semicolon or a bad escape, in the key or in the value, left out.
func TestPollQueryMatchesURLValues(t *testing.T) {
	for _, raw := range []string{
		"",
		"session=v1.abc.def&cursor=bench%3De1.123&att=3&hello=1&hold=500&from=sse&reason=timeout",
		"session=a&session=b",
		"session=%zz&session=b",      // a bad escape in the value: the next one counts
		"se%73sion=a&session=b",      // an escaped key
		"session=a;b&session=c",      // a semicolon leaves its pair out
		"session;x=a&session=c",      // in the key too
		"%zz=1&session=a",            // a bad escape in a key
		"session=a+b%20c&cursor=x%2", // '+' is a space; a truncated escape
		"session&cursor=&hold",       // no values
		"&&session=a&&",
		"session=a=b",
		"session%3Dx=y",
		"Session=a&SESSION=b",
		"hello=1&hello=0",
		"other=1&other=2",
		"session=%E2%82%AC",
	} {
		checkPollQuery(t, raw)
	}
	// Past net/url's parameter limit, url.ParseQuery keeps nothing.
	checkPollQuery(t, "session=a"+strings.Repeat("&x", queryParamsMax))
	checkPollQuery(t, "session=a"+strings.Repeat("&x", queryParamsMax-1))
}

// FuzzPollQuery compares the poll's own query reading with url.ParseQuery on arbitrary
// queries: every parameter a poll reads, and any other, must read the same.
func FuzzPollQuery(f *testing.F) {
	for _, s := range []string{
		"session=v1.abc.def&cursor=bench%3De1.123&att=3&hello=1&hold=500",
		"session=%zz&session=b&se%73sion=c",
		"session=a;b&session=c&%zz=1",
		"cursor=a+b%20c&cursor=x%2&hold",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		checkPollQuery(t, raw)
	})
}

// Reading a poll's query allocates only its pollQuery when nothing in it is escaped.
func TestPollQueryAllocations(t *testing.T) {
	raw := "session=v1.eyJzaWQiOiJhYmMifQ.c2ln&cursor=bench.e1.123&att=3"
	allocs := testing.AllocsPerRun(100, func() {
		q := parsePollQuery(raw)
		_ = q.Get("session")
	})
	if allocs > 1 {
		t.Errorf("%v allocations, want at most 1", allocs)
	}
}
