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
// frames to an attachment with push; a watch (GET /events) is a Stream likewise, see
// Watch. It lets the handlers be tested at the HTTP level without bridge.
type fakeSessions struct {
	params session.Params

	mu       sync.Mutex
	next     int
	attached map[string]*session.Attachment // by session id
	watches  map[*session.Attachment]bool
	draining bool
	revoked  bool
	attachCh chan *session.Attachment // each new attachment, when not nil
	watchCh  chan *session.Attachment // each new watch, when not nil
}

var _ transport.Sessions = (*fakeSessions)(nil)

func newFakeSessions() *fakeSessions {
	return &fakeSessions{
		params: session.Params{Heartbeat: time.Hour, PollHold: time.Hour, SessionTTL: time.Minute,
			StoreTimeout: time.Second, MaxMessageBytes: 1024, MaxChannels: 8},
		attached: map[string]*session.Attachment{},
		watches:  map[*session.Attachment]bool{},
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

// Watch refuses a channel named "forbidden" (a Refusal, 4103) and an identity whose user
// is "lapsed" (4101), and otherwise watches the channels with a heartbeat that closes
// the watch with ErrRevoked once revoke has been called.
func (f *fakeSessions) Watch(_ context.Context, req session.WatchRequest) (*session.Attachment, error) {
	if req.Identity.User == "lapsed" {
		return nil, session.ErrRevoked
	}
	for _, e := range req.Cursor {
		if e.Channel == "forbidden" {
			return nil, &session.Refusal{Channel: e.Channel, Err: session.Errorf(session.CodeForbidden, "not %s", e.Channel)}
		}
	}
	a := &session.Attachment{
		Stream: session.NewStream(emptySource{}, session.StreamConfig{QueueMessages: 64, QueueBytes: 1 << 20,
			BatchMessages: 64, BatchBytes: 1 << 20, PageSize: 32}), // tests send heartbeats with Ping
		Claims: session.Claims{User: req.Identity.User}, Transport: req.Transport, Started: time.Now(),
	}
	a.OnClose, a.OnWake = req.OnClose, req.OnWake
	a.OnHeartbeat = func() {
		f.mu.Lock()
		revoked := f.revoked
		f.mu.Unlock()
		if revoked {
			a.Close(session.ErrRevoked)
		}
	}
	f.mu.Lock()
	if f.draining {
		f.mu.Unlock()
		return nil, session.ErrShutdown
	}
	f.watches[a] = true
	ch := f.watchCh
	f.mu.Unlock()
	for _, e := range req.Cursor {
		a.Subscribe(e.Channel, e.Position, false)
	}
	if ch != nil {
		ch <- a
	}
	return a, nil
}

// revoke makes every later heartbeat of a watch close it as revoked.
func (f *fakeSessions) revoke() {
	f.mu.Lock()
	f.revoked = true
	f.mu.Unlock()
}

// watching returns the number of watches not yet detached.
func (f *fakeSessions) watching() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watches)
}

func (f *fakeSessions) Detach(a *session.Attachment) {
	f.mu.Lock()
	if f.attached[a.Claims.SID] == a {
		delete(f.attached, a.Claims.SID)
	}
	delete(f.watches, a)
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

// shutdown refuses new attachments and watches and closes every current one with 4003.
func (f *fakeSessions) shutdown() {
	f.mu.Lock()
	f.draining = true
	all := make([]*session.Attachment, 0, len(f.attached))
	for _, a := range f.attached {
		all = append(all, a)
	}
	for a := range f.watches {
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
	mux.Handle("/ferry/events", transport.NewEvents(cfg))
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
