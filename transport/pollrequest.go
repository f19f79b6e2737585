package transport

// Reading the requests of a taken-over connection without waiting, and telling a plain
// poll, which pollConn serves, from anything else, which goes back to net/http.

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/ferryrt/ferry/transport/internal/netpoll"
)

// Errors of read that end a turn.
var (
	errNeedMore = errors.New("request incomplete")        // wait for the rest
	errTurnOver = errors.New("turn over: read turnBytes") // queue the next turn
)

// notPollError says the request is not a plain poll: it goes back to net/http with its
// connection (giveBack).
type notPollError struct{}

func (*notPollError) Error() string { return "not a plain poll" }

// inBufs lends the buffer of a request being read; a connection holds one only while a
// request is incomplete or pipelined.
var inBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (pc *pollConn) releaseIn() {
	if pc.inBuf != nil {
		*pc.inBuf = pc.in[:0]
		if cap(pc.in) <= 4096 {
			inBufs.Put(pc.inBuf)
		}
		pc.inBuf = nil
	}
	pc.in = nil
}

// read returns the next request, reading what the connection has without waiting, at
// most pollHeaderMax bytes: errNeedMore if its header is not complete yet, a
// *notPollError if it is not a plain poll (left unread in pc.in).
func (pc *pollConn) read() (*http.Request, error) {
	for {
		r, used, err := parsePoll(pc.in, pc.target)
		if err == nil {
			pc.consume(used)
			r.RemoteAddr = pc.remote
			return r, nil
		}
		if !errors.Is(err, errNeedMore) {
			return nil, err
		}
		if pc.turnRead >= turnBytes {
			return nil, errTurnOver
		}
		if len(pc.in) >= pollHeaderMax {
			// A header this long is net/http's to refuse, or to read, under its own
			// MaxHeaderBytes.
			return nil, &notPollError{}
		}
		if pc.inBuf == nil {
			pc.inBuf = inBufs.Get().(*[]byte)
			pc.in = append((*pc.inBuf)[:0], pc.in...)
			if len(pc.in) == 0 {
				pc.reqStart = time.Now()
			}
		}
		if len(pc.in) == cap(pc.in) {
			pc.in = append(pc.in, 0)[:len(pc.in)] // grow
		}
		room := pc.in[len(pc.in):min(cap(pc.in), pollHeaderMax)]
		n, rerr := pc.tr.TryRead(pc.conn, room)
		pc.in = pc.in[:len(pc.in)+n]
		pc.turnRead += n
		if rerr != nil {
			if errors.Is(rerr, netpoll.ErrWouldBlock) {
				if len(pc.in) == 0 {
					pc.releaseIn()
				}
				return nil, errNeedMore
			}
			if len(pc.in) > 0 && n > 0 {
				continue // what came before the end is parsed first
			}
			return nil, rerr
		}
	}
}

// consume drops the first n bytes of pc.in, keeping what follows (a pipelined request).
func (pc *pollConn) consume(n int) {
	rest := copy(pc.in, pc.in[n:])
	pc.in = pc.in[:rest]
	if rest == 0 {
		pc.releaseIn()
	} else {
		pc.reqStart = time.Now()
	}
}

// headerReader is what parsePoll hands http.ReadRequest: a buffered reader of the
// header's bytes, both lent by headerReaders.
type headerReader struct {
	src bytes.Reader
	br  *bufio.Reader
}

var headerReaders = sync.Pool{New: func() any {
	hr := &headerReader{}
	hr.br = bufio.NewReaderSize(&hr.src, 4096)
	return hr
}}

// parsePoll parses the request at the start of in if it is a plain GET of the poll path
// that target names ("GET /ferry/poll") and returns it with the bytes it took. It returns
// errNeedMore while the header is incomplete and a *notPollError when the request is
// anything else, or anything net/http would answer otherwise than by calling the poll
// handler (see servable).
func parsePoll(in []byte, target string) (*http.Request, int, error) {
	need := len(target) + 1
	head := in[:min(len(in), need)]
	if !bytes.HasPrefix([]byte(target), head) && !(len(head) == need && string(head[:len(target)]) == target) {
		return nil, 0, &notPollError{}
	}
	if len(head) < need {
		return nil, 0, errNeedMore // still reads as a poll
	}
	if c := head[len(target)]; c != '?' && c != ' ' {
		return nil, 0, &notPollError{}
	}
	end := headerEnd(in)
	if end < 0 {
		return nil, 0, errNeedMore
	}
	if r, ok := readPlainPoll(in[:end], target); ok {
		if !servable(r, in[:end]) {
			return nil, 0, &notPollError{}
		}
		return r, end, nil
	}
	hr := headerReaders.Get().(*headerReader)
	hr.src.Reset(in[:end])
	hr.br.Reset(&hr.src)
	r, err := http.ReadRequest(hr.br)
	hr.src.Reset(nil)
	hr.br.Reset(&hr.src)
	headerReaders.Put(hr)
	if err != nil || !servable(r, in[:end]) {
		return nil, 0, &notPollError{}
	}
	return r, end, nil
}

// headerEnd returns the length of the request header at the start of in, through the
// empty line that ends it, or -1 if it is not all there. Lines may end in LF alone, as
// textproto allows.
func headerEnd(in []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(in[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(in) && in[i] == '\n':
			return i + 1
		case i+1 < len(in) && in[i] == '\r' && in[i+1] == '\n':
			return i + 2
		}
	}
}

// servable reports whether net/http's server would hand r (whose header is raw) to the
// poll handler as it is, keep-alive, and that handler would take its connection over: an
// HTTP/1.1 request with one valid Host header, valid header fields, no body and no
// Expect. Anything else (a 505 for another version, a 400 for a bad Host or field, a 417
// for an expectation, a body to read or discard, HTTP/1.0 keep-alive) is net/http's to
// answer, so it goes back there: answers on a taken-over connection are net/http's.
func servable(r *http.Request, raw []byte) bool {
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.ContentLength != 0 || len(r.TransferEncoding) > 0 ||
		r.Host == "" || !httpguts.ValidHostHeader(r.Host) || hostLines(raw) != 1 || len(r.Header["Expect"]) > 0 {
		return false
	}
	for k, vv := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// hostLines counts the header lines of raw named Host (http.ReadRequest moves the Host
// header out of r.Header, and net/http's server refuses a request without one or with
// several).
func hostLines(raw []byte) int {
	n := 0
	for {
		i := bytes.IndexByte(raw, '\n')
		if i < 0 {
			return n
		}
		raw = raw[i+1:]
		if len(raw) >= 5 && raw[4] == ':' && strings.EqualFold(string(raw[:4]), "host") {
			n++
		}
	}
}

// readPlainPoll is http.ReadRequest for the plainest polls, which are nearly all of
// them: a request line "GET <target>[?query] HTTP/1.1", then header lines "Name: value"
// ending in CRLF, with a name of letters, digits and dashes, a value of printable ASCII
// (and tabs) with no trailing blank, and none of the headers that ReadRequest reads
// beyond storing them (Content-Length, Transfer-Encoding, Trailer, Connection, Pragma).
// It returns the request ReadRequest would, built with fewer allocations (one string
// holds the header, and the values are cut from it); on false the header is outside
// that subset and ReadRequest must read it. FuzzPlainPollMatchesReadRequest compares
// the two.
func readPlainPoll(raw []byte, target string) (*http.Request, bool) {
	// The request line.
	eol := bytes.IndexByte(raw, '\n')
	if eol < 1 || raw[eol-1] != '\r' {
		return nil, false
	}
	sp := bytes.IndexByte(raw[len(target):eol-1], ' ')
	if sp < 0 || string(raw[len(target)+sp:eol-1]) != " HTTP/1.1" {
		return nil, false
	}
	hdr := string(raw) // the one copy: every string of the request is cut from it
	uri := hdr[len("GET ") : len(target)+sp]
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, false
	}
	lines := 0 // header lines, for the map and the values' backing array
	for _, c := range raw[eol+1:] {
		if c == '\n' {
			lines++
		}
	}
	lines-- // the empty line that ends the header
	h := make(http.Header, lines)
	vals := make([]string, lines)
	host := ""
	for rest := hdr[eol+1:]; rest != "\r\n"; {
		e := strings.IndexByte(rest, '\n')
		if e < 1 || rest[e-1] != '\r' {
			return nil, false
		}
		line := rest[:e-1]
		rest = rest[e+1:]
		colon := strings.IndexByte(line, ':')
		if colon < 1 {
			return nil, false
		}
		name := line[:colon]
		for i := 0; i < len(name); i++ {
			if c := name[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return nil, false
			}
		}
		v := strings.TrimLeft(line[colon+1:], " \t")
		for i := 0; i < len(v); i++ {
			if c := v[i]; (c < ' ' && c != '\t') || c > '~' {
				return nil, false
			}
		}
		if n := len(v); n > 0 && (v[n-1] == ' ' || v[n-1] == '\t') {
			return nil, false
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Content-Length", "Transfer-Encoding", "Trailer", "Connection", "Pragma":
			return nil, false
		case "Host":
			if host != "" || v == "" {
				return nil, false // none or several: ReadRequest's (or net/http's) to refuse
			}
			host = v
			continue // ReadRequest moves it out of the header, to Host
		}
		if vv := h[key]; vv != nil {
			h[key] = append(vv, v)
		} else {
			vv, vals = vals[:1:1], vals[1:]
			vv[0] = v
			h[key] = vv
		}
	}
	if host == "" {
		return nil, false
	}
	return &http.Request{Method: http.MethodGet, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: http.NoBody, Host: host, RequestURI: uri}, true
}
