package bridge

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/ferryrt/ferry/bridge/presence"
)

// The presence endpoint answers backends holding the API key, and nobody who holds a
// wrong key or none (on a server that requires a token), nor a key on a server without
// one: such a key is only a token that does not verify.
func TestPresenceEndpointAPIKey(t *testing.T) {
	get := func(ts *testServer, key, channel string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/presence?channel="+channel, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	keyless, _ := authPresenceServer(t, Config{})
	ts, _ := authPresenceServer(t, Config{APIKey: "k"})
	if err := ts.cfg.Presence.Join(context.Background(), presence.Member{Session: "s1", User: "ann"}, "room:a"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ts      *testServer
		key, ch string
		status  int
		body    string
	}{
		{keyless, "k", "room:a", http.StatusUnauthorized, ""},
		{ts, "", "room:a", http.StatusUnauthorized, ""},
		{ts, "wrong", "room:a", http.StatusUnauthorized, ""},
		{ts, "k", "bad%20name", http.StatusBadRequest, ""},
		{ts, "k", "room:a", http.StatusOK, `{"channel":"room:a","members":[{"session":"s1","user":"ann"}]}` + "\n"},
		{ts, "k", "room:b", http.StatusOK, `{"channel":"room:b","members":[]}` + "\n"},
	} {
		status, body := get(c.ts, c.key, c.ch)
		if status != c.status || (c.body != "" && body != c.body) {
			t.Errorf("key %q channel %q: %d %s", c.key, c.ch, status, body)
		}
	}
}
