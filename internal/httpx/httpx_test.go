package httpx

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ferryrt/ferry/session"
)

func TestStatus(t *testing.T) {
	for code, want := range map[session.Code]int{
		session.CodeBadRequest:     400,
		session.CodeInvalidPayload: 400,
		session.CodeSessionExpired: 401,
		session.CodeUnauthorized:   401,
		session.CodeTokenExpired:   401,
		session.CodeForbidden:      403,
		session.CodeTooBig:         413,
		session.CodeRateLimited:    429,
		session.CodeReconnect:      503, // the store is unavailable, or the node full: try again
		session.CodeShutdown:       503,
		session.CodeNoHandler:      501,
		session.CodeInternal:       500,
	} {
		if got := Status(code); got != want {
			t.Errorf("Status(%v) = %d, want %d", code, got, want)
		}
	}
}

func TestWriteError(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, session.Errorf(session.CodeForbidden, "origin %q <not> allowed", "x"))
	if rec.Code != 403 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("answered %d %v", rec.Code, rec.Header())
	}
	if got, want := rec.Body.String(), `{"code":4103,"reason":"origin \"x\" <not> allowed"}`+"\n"; got != want {
		t.Fatalf("body %s, want %s", got, want)
	}

	// An error that is no close reason is the server's: its text stays in the logs.
	rec = httptest.NewRecorder()
	WriteError(rec, errors.New("dial tcp 10.0.0.7:6379: refused"))
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "10.0.0.7") || !strings.Contains(rec.Body.String(), `"code":1011`) {
		t.Fatalf("a plain error answered %d %s", rec.Code, rec.Body)
	}

	rec = httptest.NewRecorder()
	MethodNotAllowed(rec, "POST")
	var body ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 405 || rec.Header().Get("Allow") != "POST" || body.Code != session.CodeBadRequest {
		t.Fatalf("405: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}

func TestReadJSON(t *testing.T) {
	type v struct{ A int }
	for _, tc := range []struct {
		name, ct, body string
		optional       bool
		status         int // 0: no error
	}{
		{"ok", "application/json", `{"A":1}`, false, 0},
		{"charset", "application/json; charset=utf-8", `{"A":1}`, false, 0},
		{"empty optional", "", ``, true, 0},
		{"empty required", "application/json", ``, false, 400},
		{"text/plain", "text/plain", `{"A":1}`, false, 415},
		{"malformed", "application/json", `{"A":`, false, 400},
		{"too big", "application/json", `{"A":1}` + strings.Repeat(" ", 64), false, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
			if tc.ct != "" {
				r.Header.Set("Content-Type", tc.ct)
			}
			var got v
			err := ReadJSON(httptest.NewRecorder(), r, 32, &got, tc.optional)
			if tc.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			rec := httptest.NewRecorder()
			WriteError(rec, err)
			if rec.Code != tc.status {
				t.Fatalf("%v answered %d, want %d", err, rec.Code, tc.status)
			}
		})
	}
}
