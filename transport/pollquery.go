package transport

// The query of a poll, read in one pass without building url.Values: a poll's query is
// long (a credential, a cursor) and read on every poll, and url.Values costs a map, a
// slice and a string for each parameter.

import (
	"net/url"
	"os"
	"runtime/debug"
	"strings"
)

// pollParams are the parameters a poll reads (admit, attachQuery, attach).
var pollParams = [...]string{"session", "cursor", "att", "from", "reason", "hello", "hold"}

// pollQuery answers Get as the url.Values of url.ParseQuery(raw) would: the first value
// of a key among those that parse, where a pair with a semicolon or a bad escape (in its
// key or its value) is left out, as is every pair of a query with more parameters than
// the limit (see queryParamsMax). The parameters of pollParams are found in one pass;
// any other key is looked for in raw when asked.
type pollQuery struct {
	raw  string
	vals [len(pollParams)]string
	all  bool // raw is over the limit: every Get is ""
}

// queryParamsMax is net/url's limit on the parameters of a query, past which it parses
// none. The GODEBUG setting urlmaxqueryparams changes it; where it is set (in the
// environment or in the binary's defaults) pollQuery is not used (see parsePollQuery).
const queryParamsMax = 10000

// queryLimitSet reports whether the process may run with another limit than
// queryParamsMax.
var queryLimitSet = func() bool {
	if strings.Contains(os.Getenv("GODEBUG"), "urlmaxqueryparams") {
		return true
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "DefaultGODEBUG" && strings.Contains(s.Value, "urlmaxqueryparams") {
				return true
			}
		}
	}
	return false
}()

// queryGetter is what attachQuery reads a query with: url.Values or a pollQuery.
type queryGetter interface{ Get(key string) string }

// parsePollQuery returns the query raw as a poll reads it: a *pollQuery, or url.Values
// where the parameter limit is not net/url's default.
func parsePollQuery(raw string) queryGetter {
	if queryLimitSet {
		v, _ := url.ParseQuery(raw)
		return v
	}
	q := &pollQuery{raw: raw}
	if strings.Count(raw, "&")+1 > queryParamsMax {
		q.all = true
		return q
	}
	var found int // a bit for each of pollParams found
	for rest := raw; rest != "" && found != 1<<len(pollParams)-1; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		if pair == "" || strings.IndexByte(pair, ';') >= 0 {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		key, ok := queryUnescape(k)
		if !ok {
			continue
		}
		for i, p := range pollParams {
			if p != key || found&(1<<i) != 0 {
				continue
			}
			if val, ok := queryUnescape(v); ok {
				q.vals[i] = val
				found |= 1 << i
			}
			break
		}
	}
	return q
}

// Get returns the first value of key, "" if none.
func (q *pollQuery) Get(key string) string {
	if q.all {
		return ""
	}
	for i, p := range pollParams {
		if p == key {
			return q.vals[i]
		}
	}
	v, _ := url.ParseQuery(q.raw)
	return v.Get(key)
}

// queryUnescape is url.QueryUnescape, without a copy when s has nothing to unescape.
func queryUnescape(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, true
	}
	u, err := url.QueryUnescape(s)
	return u, err == nil
}
