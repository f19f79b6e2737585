package transport

// The answers of polls on a taken-over connection, each built whole and written with one
// write.

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ferryrt/ferry/session"
)

// pollResponse is the http.ResponseWriter of a poll on a taken-over connection: poll
// answers are small and complete at once, so it keeps the whole answer, written with one
// write. It is lent by pollResponses for one request, and given back (free) once its
// answer is appended to the buffer written.
type pollResponse struct {
	hdr    http.Header
	status int
	body   []byte
	hw     headerAppender // appendTo's, kept here so that it is not allocated per answer
}

// pollResponses lends the pollResponse of each request; a connection holds one only
// while a request is served.
var pollResponses = sync.Pool{New: func() any { return &pollResponse{hdr: make(http.Header, 4)} }}

// pollBodyMax bounds the body buffer a pollResponse keeps when it is given back.
const pollBodyMax = 4096

func newPollResponse() *pollResponse { return pollResponses.Get().(*pollResponse) }

// free gives w back to pollResponses; nothing may use it afterwards.
func (w *pollResponse) free() {
	clear(w.hdr)
	w.status = 0
	if cap(w.body) > pollBodyMax {
		w.body = nil
	} else {
		w.body = w.body[:0]
	}
	w.hw.b = nil
	pollResponses.Put(w)
}

func (w *pollResponse) Header() http.Header { return w.hdr }

func (w *pollResponse) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *pollResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, b...)
	return len(b), nil
}

var responseBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func putResponseBuf(p *[]byte, b []byte) {
	if cap(b) <= 64<<10 {
		*p = b[:0]
		responseBufs.Put(p)
	}
}

// appendTo appends w as an HTTP/1.1 response; goAway adds Connection: close.
func (w *pollResponse) appendTo(b []byte, goAway bool) []byte {
	w.WriteHeader(http.StatusOK)
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(w.status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(w.status)...)
	b = append(b, "\r\nDate: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\n"...)
	w.hw.b = b
	w.hdr.WriteSubset(&w.hw, noLength)
	b, w.hw.b = w.hw.b, nil
	bodyless := w.status == http.StatusNoContent || w.status == http.StatusNotModified
	if !bodyless {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(w.body)), 10)
		b = append(b, "\r\n"...)
	}
	if goAway {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	if !bodyless {
		b = append(b, w.body...)
	}
	return b
}

// headerAppender is an io.Writer (and io.StringWriter, which http.Header.Write prefers)
// that appends to a byte slice.
type headerAppender struct{ b []byte }

func (a *headerAppender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

func (a *headerAppender) WriteString(s string) (int, error) {
	a.b = append(a.b, s...)
	return len(s), nil
}

// noLength leaves out the headers appendTo writes itself.
var noLength = map[string]bool{"Content-Length": true, "Connection": true, "Date": true}

// Shared values of the headers writeFrames sets on a pollResponse: Header.Set and Add
// replace a value slice, never write into it.
var (
	jsonContentType = []string{"application/json"}
	noStoreCache    = []string{"no-store"}
)

// writeFrames is the package's writeFrames for a pollResponse: the answer is appended
// to its body as it is built, and the Content-Length that appendTo writes itself is not
// set, so that nothing is allocated per answer.
func (w *pollResponse) writeFrames(out []session.Outgoing) int {
	w.hdr["Content-Type"] = jsonContentType
	w.hdr["Cache-Control"] = noStoreCache
	w.WriteHeader(http.StatusOK)
	start := len(w.body)
	w.body = append(w.body, `{"frames":[`...)
	for i, o := range out {
		if i > 0 {
			w.body = append(w.body, ',')
		}
		w.body = append(w.body, o.JSON...)
	}
	w.body = append(w.body, "]}"...)
	return len(w.body) - start
}
