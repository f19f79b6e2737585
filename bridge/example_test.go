package bridge_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/ferryrt/ferry/bridge"
)

// Embed Ferry in an echo application: every endpoint lives under /ferry.
func ExampleServer_MountEcho() {
	srv, err := bridge.New(bridge.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown(context.Background())

	e := echo.New()
	e.GET("/", func(c echo.Context) error { return c.String(http.StatusOK, "my app") })
	srv.MountEcho(e)

	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ferry/negotiate", nil))
	fmt.Println(rec.Code, strings.Contains(rec.Body.String(), `"transports":["websocket","sse","longpoll"]`))
	// Output: 200 true
}

// Publish from Go: the answer is the message's position in its channel.
func ExampleServer_Publish() {
	srv, _ := bridge.New(bridge.Config{})
	defer srv.Shutdown(context.Background())

	ctx := context.Background()
	srv.Publish(ctx, "room:lobby", map[string]string{"text": "hello"})
	pos, err := srv.Publish(ctx, "room:lobby", map[string]string{"text": "again"})
	fmt.Println(pos.Offset, err)
	// Output: 2 <nil>
}

// Handle what clients send: OnMessage sees each upstream message once, however often a
// client resent it, and can answer on the session's own channel.
func ExampleConfig_onMessage() {
	var srv *bridge.Server
	srv, _ = bridge.New(bridge.Config{
		OnMessage: func(ctx context.Context, m bridge.Upstream) error {
			fmt.Printf("session sent %s\n", m.Data)
			_, err := srv.PublishToSession(ctx, m.Session, map[string]string{"ok": "yes"})
			return err
		},
	})
	defer srv.Shutdown(context.Background())

	mux := http.NewServeMux()
	srv.Mount(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ferry/negotiate", nil))
	cred := rec.Body.String()
	cred = cred[strings.Index(cred, `"session":"`)+11:]
	cred = cred[:strings.IndexByte(cred, '"')]

	body := `{"frames":[{"t":"send","seq":1,"d":{"move":"e4"}}]}`
	for range 2 { // the second POST is a resend: acknowledged, not processed again
		req := httptest.NewRequest(http.MethodPost, "/ferry/send?session="+cred, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec = httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		fmt.Print(rec.Body.String())
	}
	// Output:
	// session sent {"move":"e4"}
	// {"acks":[{"t":"ack","seq":1}]}
	// {"acks":[{"t":"ack","seq":1,"dup":true}]}
}

// Decide who may do what: Authorize sees every subscribe, publish and send, and refuses
// with a close code that the client receives with the reason.
func ExampleConfig_authorize() {
	srv, _ := bridge.New(bridge.Config{
		Authorize: func(ctx context.Context, r bridge.AuthRequest) error {
			if r.Action == bridge.ActSubscribe && strings.HasPrefix(r.Channel, "admin:") && r.User != "root" {
				return bridge.Errorf(bridge.CodeForbidden, "%s is for admins", r.Channel)
			}
			return nil
		},
	})
	defer srv.Shutdown(context.Background())

	mux := http.NewServeMux()
	srv.Mount(mux)
	for _, ch := range []string{"room:lobby", "admin:audit"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ferry/api/history?channel="+ch, nil))
		if rec.Code == http.StatusOK {
			fmt.Println(ch, rec.Code)
		} else {
			fmt.Println(ch, rec.Code, strings.TrimSpace(rec.Body.String()))
		}
	}
	// Output:
	// room:lobby 200
	// admin:audit 403 {"code":4103,"reason":"admin:audit is for admins"}
}
