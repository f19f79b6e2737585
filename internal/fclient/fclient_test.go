package fclient

import "testing"

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
