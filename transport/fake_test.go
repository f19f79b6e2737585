package transport_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryrt/ferry/session"
	"github.com/ferryrt/ferry/transport"
)

// fakeSessions is a transport.Sessions without a store or channels: a credential is
// "cred:<sid>", an attachment is a real session.Stream over a source without messages,
// a newer attachment of a session supersedes the older one (4001), send and pub frames
// are acknowledged (refused with 4103 on a channel named "forbidden"), and tests queue
// frames to an attachment with push. It lets the handlers be tested at the HTTP level
// without bridge.
type fakeSessions struct {
	params session.Params

	mu       sync.Mutex
	next     int
	attached map[string]*session.Attachment // by session id
	draining bool
	attachCh chan *session.Attachment // each new attachment, when not nil
}

var _ transport.Sessions = (*fakeSessions)(nil)

func newFakeSessions() *fakeSessions {
	return &fakeSessions{
		params: session.Params{Heartbeat: time.Hour, PollHold: time.Hour, SessionTTL: time.Minute,
			StoreTimeout: time.Second, MaxMessageBytes: 1024, MaxChannels: 8},
		attached: map[string]*session.Attachment{},
	}
}

func (f *fakeSessions) Params() session.Params { return f.params }

func (f *fakeSessions) Negotiate(_ context.Context, prev string, id session.Identity, _ string) (session.Negotiated, error) {
	if sid, ok := strings.CutPrefix(prev, "cred:"); ok {
		return session.Negotiated{Credential: prev, Claims: session.Claims{SID: sid, User: id.User}, Resumed: true}, nil
	}
	f.mu.Lock()
	f.next++
	sid := "s" + strconv.Itoa(f.next)
	f.mu.Unlock()
	return session.Negotiated{Credential: "cred:" + sid, Claims: session.Claims{SID: sid, User: id.User}}, nil
}

func (f *fakeSessions) Verify(_ context.Context, cred string, _ *string) (session.Claims, error) {
	sid, ok := strings.CutPrefix(cred, "cred:")
	if !ok || sid == "" {
		return session.Claims{}, session.ErrSession
	}
	return session.Claims{SID: sid}, nil
}

func (f *fakeSessions) Attach(_ context.Context, req session.AttachRequest) (*session.Attachment, error) {
	a := &session.Attachment{
		Stream: session.NewStream(emptySource{}, session.StreamConfig{QueueMessages: 64, QueueBytes: 1 << 20,
			BatchMessages: 64, BatchBytes: 1 << 20, PageSize: 32}),
		Claims: req.Claims, ID: req.Transport, Transport: req.Transport, Started: time.Now(), Seq: req.Seq,
	}
	a.OnClose, a.OnWake = req.OnClose, req.OnWake
	if req.Hello {
		a.Enqueue((&session.ServerFrame{T: session.FrameHello, SID: req.Claims.SID, V: 1, Tr: req.Transport}).Encode())
	}
	for _, e := range req.Cursor {
		a.Subscribe(e.Channel, e.Position, req.Hello)
	}
	f.mu.Lock()
	if f.draining {
		f.mu.Unlock()
		return nil, session.ErrShutdown
	}
	prev := f.attached[req.Claims.SID]
	f.attached[req.Claims.SID] = a
	ch := f.attachCh
	f.mu.Unlock()
	if prev != nil {
		prev.Close(session.ErrSuperseded)
	}
	if ch != nil {
		ch <- a
	}
	return a, nil
}

func (f *fakeSessions) Detach(a *session.Attachment) {
	f.mu.Lock()
	if f.attached[a.Claims.SID] == a {
		delete(f.attached, a.Claims.SID)
	}
	f.mu.Unlock()
	a.Done()
}

// Park detaches: the fake keeps nothing between polls, so every poll attaches anew.
func (f *fakeSessions) Park(a *session.Attachment, _ session.Cursor) { f.Detach(a) }

func (f *fakeSessions) Resume(session.Claims, uint64, session.Cursor) *session.Attachment { return nil }

func (f *fakeSessions) HandleFrame(ctx context.Context, a *session.Attachment, fr *session.ClientFrame) {
	if fr.T == session.FrameSend || fr.T == session.FramePub {
		acks, _ := f.Upstream(ctx, a.Claims, []session.ClientFrame{*fr})
		a.Enqueue(acks[0].Frame())
	}
}

func (f *fakeSessions) Upstream(_ context.Context, _ session.Claims, frames []session.ClientFrame) ([]session.Ack, error) {
	acks := make([]session.Ack, len(frames))
	for i, fr := range frames {
		acks[i] = session.Ack{Seq: fr.Seq}
		if fr.Ch == "forbidden" {
			acks[i].Err = session.Errorf(session.CodeForbidden, "publish %s not allowed", fr.Ch)
		}
	}
	return acks, nil
}

func (f *fakeSessions) Draining() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.draining
}

// attachment returns the current attachment of sid, nil if none.
func (f *fakeSessions) attachment(sid string) *session.Attachment {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attached[sid]
}

// shutdown refuses new attachments and closes every current one with 4003.
func (f *fakeSessions) shutdown() {
	f.mu.Lock()
	f.draining = true
	all := make([]*session.Attachment, 0, len(f.attached))
	for _, a := range f.attached {
		all = append(all, a)
	}
	f.mu.Unlock()
	for _, a := range all {
		a.Close(session.ErrShutdown)
	}
}

// emptySource is a channel layer without messages or history.
type emptySource struct{}

func (emptySource) Subscribe(context.Context, string, session.Deliverer) (func(), error) {
	return func() {}, nil
}

func (emptySource) Since(context.Context, string, session.Position, int) ([]*session.Message, session.Position, bool, error) {
	return nil, session.Position{Epoch: "e"}, true, nil
}

// countingObserver records the transports' counts.
type countingObserver struct {
	mu       sync.Mutex
	rejected map[string]int
	received int
}

func (o *countingObserver) Sent(string, int, int) {}
func (o *countingObserver) Received(_ string, frames, _ int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.received += frames
}
func (o *countingObserver) PollDone(string) {}
func (o *countingObserver) Rejected(reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.rejected == nil {
		o.rejected = map[string]int{}
	}
	o.rejected[reason]++
}

func (o *countingObserver) receivedFrames() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.received
}

func (o *countingObserver) rejections(reason string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.rejected[reason]
}

// testServer is every handler of transport on one httptest.Server under /ferry, driving
// a fakeSessions.
type testServer struct {
	URL  string
	fake *fakeSessions
	obs  *countingObserver
	poll *transport.PollHandler
}

// newTestServer starts a testServer; tune, if not nil, changes its Config first. The
// server is drained and closed when the test ends, and its streams waited for.
func newTestServer(t *testing.T, tune func(*transport.Config)) *testServer {
	t.Helper()
	fake := newFakeSessions()
	obs := &countingObserver{}
	var streams sync.WaitGroup
	cfg := transport.Config{Manager: fake, Observer: obs, Streams: &streams,
		Limiter: transport.NewLimiter(transport.Limits{NegotiateRate: 1000, NegotiateBurst: 1000})}
	if tune != nil {
		tune(&cfg)
	}
	poll := transport.NewPoll(cfg)
	mux := http.NewServeMux()
	mux.Handle("/ferry/negotiate", transport.NewNegotiate(cfg))
	mux.Handle("/ferry/ws", transport.NewWebSocket(cfg))
	mux.Handle("/ferry/sse", transport.NewSSE(cfg))
	mux.Handle("/ferry/poll", poll)
	mux.Handle("/ferry/send", transport.NewSend(cfg))
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		fake.shutdown()
		poll.Shutdown()
		hs.CloseClientConnections()
		hs.Close()
		streams.Wait()
	})
	return &testServer{URL: hs.URL, fake: fake, obs: obs, poll: poll}
}
