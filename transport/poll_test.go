package transport

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/ferryrt/ferry/session"
)

// An answer with frames on a taken-over connection is built into the buffer written
// without an allocation: a long-polling client pays one per delivery otherwise.
func TestPollAnswerAllocatesNothing(t *testing.T) {
	m := &session.Message{Channel: "c", Pos: session.Position{Epoch: "e1", Offset: 1}, Data: []byte(`{"n":1}`)}
	out := []session.Outgoing{session.MessageFrame(m)}
	buf := make([]byte, 0, 4096)
	cors := false
	answer := func() {
		rw := newPollResponse()
		if cors {
			rw.Header().Set("Access-Control-Allow-Origin", "https://a.example") // as admit may
		}
		writeFrames(rw, out)
		buf = rw.appendTo(buf[:0], false)
		rw.free()
	}
	answer() // the pool's first
	if raceEnabled {
		t.Log("allocations not counted: the race detector drops pooled values")
	} else if allocs := testing.AllocsPerRun(100, answer); allocs != 0 {
		t.Errorf("%v allocations per answer, want 0", allocs)
	}
	// What was built is the answer net/http's writeFrames gives, with the headers set
	// before.
	cors = true
	answer()
	res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(buf)), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	want := `{"frames":[` + string(out[0].JSON) + `]}`
	if res.StatusCode != 200 || string(body) != want || res.ContentLength != int64(len(want)) ||
		res.Header.Get("Content-Type") != "application/json" || res.Header.Get("Cache-Control") != "no-store" ||
		res.Header.Get("Access-Control-Allow-Origin") != "https://a.example" {
		t.Fatalf("answer %d %q %v", res.StatusCode, body, res.Header)
	}
}

// A pollResponse given back keeps nothing of its answer: the next request lent it starts
// with no header, no status and no body.
func TestPollResponseFreedIsEmpty(t *testing.T) {
	rw := newPollResponse()
	rw.Header().Set("X-A", "1")
	rw.WriteHeader(http.StatusTeapot)
	rw.Write([]byte("body"))
	rw.appendTo(nil, false)
	rw.free()
	for range 10 { // whichever the pool lends
		rw := newPollResponse()
		if len(rw.hdr) != 0 || rw.status != 0 || len(rw.body) != 0 || rw.hw.b != nil {
			t.Fatalf("lent %+v", rw)
		}
		defer rw.free()
	}
}
