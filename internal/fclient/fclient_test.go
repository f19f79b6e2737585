package fclient

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// An SSE event block gives its frame, its id and its size as the server counts it (the
// data); a block without data (a retry hint, a comment) gives none.
func TestParseEvent(t *testing.T) {
	data := `{"t":"msg","ch":"news","ep":"e1","off":7,"d":1}`
	f, ok, err := ParseEvent([]byte("id: news=e1.7\ndata: " + data + "\n"))
	if err != nil || !ok {
		t.Fatalf("ParseEvent: %v %v", ok, err)
	}
	if f.T != "msg" || f.Ch != "news" || f.Off != 7 || f.EventID != "news=e1.7" || f.Size != len(data) {
		t.Fatalf("frame %+v", f)
	}
	for _, block := range []string{"retry: 1000\n", ": keep-alive\n"} {
		if _, ok, err := ParseEvent([]byte(block)); ok || err != nil {
			t.Errorf("%q: ok %v, err %v; want no frame", block, ok, err)
		}
	}
	if _, _, err := ParseEvent([]byte("data: {not json\n")); err == nil {
		t.Error("bad data accepted")
	}
}

// A poll's answer is its frames and its size; a 204 is a superseded poll; an error
// answer is an *HTTPError with the protocol's code. The query carries what the client
// holds.
func TestPollAnswer(t *testing.T) {
	const answer = `{"frames":[{"t":"hello","sid":"s1"},{"t":"ping"}]}`
	var status int
	var query string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.RawQuery
		switch status {
		case http.StatusOK:
			io.WriteString(w, answer)
		case http.StatusNoContent:
			w.WriteHeader(status)
		default:
			w.WriteHeader(status)
			io.WriteString(w, `{"code":4005,"reason":"session expired"}`)
		}
	}))
	defer srv.Close()
	c := New(srv.URL + "/ferry/")
	c.Session = "cred"
	c.Subscribe("news", "")
	c.NextAttachment()

	status = http.StatusOK
	a, err := c.PollAnswer(context.Background(), true, 0)
	if err != nil || a.Superseded || len(a.Frames) != 2 || a.Frames[1].T != "ping" || a.Bytes != len(answer) {
		t.Fatalf("answer %+v, %v", a, err)
	}
	if want := "att=1&cursor=news%3D&hello=1&session=cred"; query != want {
		t.Errorf("query %q, want %q", query, want)
	}
	status = http.StatusNoContent
	if a, err := c.PollAnswer(context.Background(), false, 0); err != nil || !a.Superseded {
		t.Fatalf("204: %+v, %v", a, err)
	}
	status = http.StatusUnauthorized
	_, _, err = c.Poll(context.Background(), false, 0)
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusUnauthorized || he.Code != 4005 {
		t.Fatalf("401: %v, want an HTTPError with code 4005", err)
	}
}
