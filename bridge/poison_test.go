package bridge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/internal/fclient"
	"github.com/ferryrt/ferry/session"
)

// poison is a JSON payload whose string holds bytes that are not UTF-8, as a backend
// passing through text from an old Latin-1 database sends it.
const poison = `{"s":"a` + "\xff\xfe" + `b"}`

// POST /api/publish refuses a payload that is not UTF-8 with 400 and code 1007, naming
// the byte, and publishes nothing.
func TestPublishAPIRefusesInvalidUTF8(t *testing.T) {
	ts := newTestServer(t, Config{APIKey: "k"})
	post := func(body string) (int, map[string]any) {
		t.Helper()
		return postPublish(t, ts.URL, "k", body)
	}
	status, out := post(`{"channel":"c","data":` + poison + `}`)
	if status != 400 || out["code"] != float64(1007) || out["reason"] != "data: invalid UTF-8 in a string at byte 7" {
		t.Fatalf("poison: %d %v, want 400 with code 1007 naming byte 7", status, out)
	}
	// An escaped lone surrogate is ASCII on the wire: accepted, passed on as written.
	if status, out := post(`{"channel":"c","data":"\udc00"}`); status != 200 || out["offset"] != float64(1) {
		t.Fatalf("escaped surrogate: %d %v, want 200 at offset 1", status, out)
	}
	msgs, _, _, err := ts.Broker().Since(context.Background(), "c", session.Position{}, 0)
	if err != nil || len(msgs) != 0 {
		t.Fatal(msgs, err)
	}
}

// The Go API refuses it too, with an error that errors.Is matches; binary data is not
// JSON text and is not concerned.
func TestPublishGoAPIRefusesInvalidUTF8(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	for name, publish := range map[string]func(any) (session.Position, error){
		"Publish":          func(d any) (session.Position, error) { return ts.Publish(ctx, "c", d) },
		"PublishToSession": func(d any) (session.Position, error) { return ts.PublishToSession(ctx, "sid", d) },
		"PublishToUser":    func(d any) (session.Position, error) { return ts.PublishToUser(ctx, "ann", d) },
	} {
		for _, data := range []any{json.RawMessage(poison), []byte(poison)} {
			_, err := publish(data)
			if !errors.Is(err, ErrInvalidUTF8) || !strings.Contains(err.Error(), "invalid UTF-8 in a string at byte 7") {
				t.Errorf("%s(%T): %v, want ErrInvalidUTF8 naming byte 7", name, data, err)
			}
		}
		// A Go string is marshalled by encoding/json, which replaces what is not UTF-8.
		if _, err := publish(map[string]string{"s": "a\xffb"}); err != nil {
			t.Errorf("%s(map): %v", name, err)
		}
	}
}

// poisonHistory is a broker whose history returns the message at offset 2 of every
// channel with bytes that are not UTF-8, as a Redis log written by another program would.
type poisonHistory struct{ *memory.Broker }

func (p poisonHistory) Since(ctx context.Context, ch string, pos session.Position, limit int) ([]*session.Message, session.Position, bool, error) {
	msgs, top, ok, err := p.Broker.Since(ctx, ch, pos, limit)
	for i, m := range msgs {
		if m.Pos.Offset == 2 {
			msgs[i] = &session.Message{Channel: m.Channel, Pos: m.Pos, Data: json.RawMessage(poison), Time: m.Time}
		}
	}
	return msgs, top, ok, err
}

// Defence in depth: a message that reaches a subscriber with invalid UTF-8 goes out on
// every transport at its position, with U+FFFD in place of the bad bytes, and the ones
// after it follow. Nothing is skipped, no connection fails.
func TestHistoryPoisonDeliveredRepaired(t *testing.T) {
	mb := memory.New(memory.Config{})
	t.Cleanup(func() { mb.Close() })
	ts := newTestServer(t, Config{Broker: poisonHistory{mb}, APIKey: "k"})
	ctx := context.Background()
	var epoch string
	for i := 1; i <= 3; i++ {
		pos, err := ts.Publish(ctx, "room:p", i)
		if err != nil {
			t.Fatal(err)
		}
		epoch = pos.Epoch
	}
	repaired := `{"s":"a` + "\uFFFD" + `b"}`
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			c := ts.client(t)
			c.Subscribe("room:p", epoch+".0")
			a := attach(t, c, tr)
			defer a.close()
			for off, want := range []string{"", "1", repaired, "3"} {
				if off == 0 {
					continue
				}
				f := a.waitFor(t, 5*time.Second, func(f fclient.Frame) bool { return f.T == "msg" })
				if f.Off != uint64(off) || string(f.D) != want || !utf8.Valid(f.D) {
					t.Fatalf("message %d: %+v (d %q), want d %q", off, f, f.D, want)
				}
			}
		})
	}
	t.Run("events", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/events?channel=room:p&since=room:p="+epoch+".0", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var data []string
		sc := bufio.NewScanner(resp.Body)
		for len(data) < 3 && sc.Scan() {
			if !utf8.Valid(sc.Bytes()) {
				t.Fatalf("event line %q is not UTF-8", sc.Bytes())
			}
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				data = append(data, d)
			}
		}
		if strings.Join(data, " ") != "1 "+repaired+" 3" {
			t.Fatalf("events data %q", data)
		}
	})
	t.Run("history", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/history?channel=room:p", nil)
		req.Header.Set("Authorization", "Bearer k")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !utf8.Valid(body) || !bytes.Contains(body, []byte(repaired)) {
			t.Fatalf("history %q", body)
		}
	})
}
