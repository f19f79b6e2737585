package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// memStore is a Store in memory with a clock the test moves: enough to expire sessions.
type memStore struct {
	mu       sync.Mutex
	now      time.Time
	sessions map[string]time.Time // sid -> expiry
	windows  map[string]*memWindow
	// recordFails makes RecordUpstream fail, as a store failing over between a frame's
	// mark and its outcome.
	recordFails bool
	// markFailsFrom makes MarkUpstream fail for every seq from it on (0: never).
	markFailsFrom uint64
}

type memWindow struct {
	expires time.Time
	l       *Ledger
}

func newMemStore() *memStore {
	return &memStore{now: time.Unix(1_700_000_000, 0), sessions: map[string]time.Time{}, windows: map[string]*memWindow{}}
}

func (s *memStore) advance(d time.Duration) {
	s.mu.Lock()
	s.now = s.now.Add(d)
	s.mu.Unlock()
}

func (s *memStore) CreateSession(_ context.Context, sid string, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions[sid] = s.now.Add(ttl)
	return nil
}

func (s *memStore) TouchSession(_ context.Context, sid string, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if exp, ok := s.sessions[sid]; !ok || s.now.After(exp) {
		return false, nil
	}
	s.sessions[sid] = s.now.Add(ttl)
	return true, nil
}

func (s *memStore) window(key string) *memWindow {
	w := s.windows[key]
	if w == nil || s.now.After(w.expires) {
		w = &memWindow{l: NewLedger(DefaultDedupeWindow)}
		s.windows[key] = w
	}
	return w
}

func (s *memStore) MarkUpstream(_ context.Context, key string, seq uint64, result string, ttl time.Duration) (bool, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.markFailsFrom != 0 && seq >= s.markFailsFrom {
		return false, "", errors.New("store unreachable")
	}
	w := s.window(key)
	w.expires = s.now.Add(ttl)
	first, rec := w.l.Mark(seq, result)
	return first, rec, nil
}

func (s *memStore) RecordUpstream(_ context.Context, key string, seq uint64, result string, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recordFails {
		return errors.New("store unreachable")
	}
	s.window(key).l.Record(seq, result)
	return nil
}

func (s *memStore) Announce(context.Context, string, string) error { return nil }

// countingHandler counts what it processes by client identity (or session) and seq, and
// publishes at consecutive offsets of one epoch.
type countingHandler struct {
	mu      sync.Mutex
	calls   map[string]int
	off     uint64
	fail    error         // returned by Publish and Send when set
	publish chan struct{} // when set, Publish waits for it
	send    chan struct{} // when set, Send tells entered, then waits for it
	entered chan struct{} // Send's arrival, with send set
}

func (h *countingHandler) count(c Claims, f *ClientFrame) {
	h.mu.Lock()
	defer h.mu.Unlock()
	who := c.CID
	if who == "" {
		who = c.SID
	}
	h.calls[fmt.Sprintf("%s/%s/%d", f.T, who, f.Seq)]++
}

func (h *countingHandler) times(t, who string, seq uint64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[fmt.Sprintf("%s/%s/%d", t, who, seq)]
}

func (h *countingHandler) Authorize(context.Context, Claims, Action, string) error { return nil }

func (h *countingHandler) Send(_ context.Context, c Claims, f *ClientFrame) error {
	h.count(c, f)
	if h.send != nil {
		h.entered <- struct{}{}
		<-h.send
	}
	return h.fail
}

func (h *countingHandler) Publish(_ context.Context, c Claims, f *ClientFrame) (Position, error) {
	h.count(c, f)
	if h.publish != nil {
		<-h.publish
	}
	if h.fail != nil {
		return Position{}, h.fail
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.off++
	return Position{Epoch: "ep1", Offset: h.off}, nil
}

const testCID = "tab-0123456789abcdef"

func newUpstreamManager(t *testing.T) (*Manager, *memStore, *countingHandler) {
	t.Helper()
	st := newMemStore()
	h := &countingHandler{calls: map[string]int{}}
	m := NewManager(Config{Store: st, Source: newFakeSource(), Handler: h, SessionTTL: 30 * time.Second, UpstreamRate: -1})
	return m, st, h
}

// expireAndRenegotiate lets the session of cred expire, checks that it is gone (4005),
// and negotiates a new one with the same client identity, as a client does after 4005.
func expireAndRenegotiate(t *testing.T, m *Manager, st *memStore, n Negotiated, cid string) Negotiated {
	t.Helper()
	ctx := context.Background()
	st.advance(31 * time.Second)
	if _, err := m.Verify(ctx, n.Credential, nil); !errors.Is(err, ErrSession) {
		t.Fatalf("session alive after its TTL: %v", err)
	}
	n2, err := m.Negotiate(ctx, n.Credential, Identity{}, cid)
	if err != nil || n2.Resumed || n2.Claims.SID == n.Claims.SID || n2.Claims.CID != cid {
		t.Fatalf("renegotiate: %+v, %v; want a new session with cid %q", n2.Claims, err, cid)
	}
	return n2
}

// A frame processed by a session whose ack the client never got (the connection cut,
// then the session expired: 4005) and resent by the client's next session is recognised
// as a duplicate: the handler runs once, and a pub's duplicate carries the position of
// the first attempt. Without a client identity, the new session can't tell: the control.
func TestUpstreamExactlyOnceAcrossSessions(t *testing.T) {
	ctx := context.Background()
	m, st, h := newUpstreamManager(t)
	n, err := m.Negotiate(ctx, "", Identity{}, testCID)
	if err != nil || n.Claims.CID != testCID {
		t.Fatalf("negotiate: %+v %v", n.Claims, err)
	}
	if c, err := m.Verify(ctx, n.Credential, nil); err != nil || c.CID != testCID {
		t.Fatalf("the credential does not carry the cid: %+v %v", c, err)
	}
	send := &ClientFrame{T: FrameSend, Seq: 1, Data: []byte(`"hi"`)}
	pub := &ClientFrame{T: FramePub, Seq: 2, Ch: "room:a", Data: []byte(`"hey"`)}
	acks, err := m.Upstream(ctx, n.Claims, []ClientFrame{*send, *pub})
	if err != nil || len(acks) != 2 || acks[0].Dup || acks[1].Pos.IsZero() {
		t.Fatalf("first attempt: %+v %v", acks, err)
	}
	firstPos := acks[1].Pos // the acks are lost on the way: the client never sees them

	n2 := expireAndRenegotiate(t, m, st, n, testCID)
	acks, err = m.Upstream(ctx, n2.Claims, []ClientFrame{*send, *pub})
	if err != nil {
		t.Fatal(err)
	}
	if !acks[0].Dup || acks[0].Err != nil || !acks[1].Dup || acks[1].Pos != firstPos {
		t.Fatalf("resent under the new session: %+v; want duplicates, the pub at %v", acks, firstPos)
	}
	if s, p := h.times(FrameSend, testCID, 1), h.times(FramePub, testCID, 2); s != 1 || p != 1 {
		t.Fatalf("handler ran %d times for the send and %d for the pub, want once each", s, p)
	}
	// The ack frame a client reads: dup, with the first attempt's position.
	if got := string(acks[1].Frame().JSON); got != fmt.Sprintf(`{"t":"ack","ep":"ep1","off":%d,"seq":2,"dup":true}`, firstPos.Offset) {
		t.Fatalf("duplicate pub ack %s", got)
	}
	// The sequence continues under the new session.
	acks, _ = m.Upstream(ctx, n2.Claims, []ClientFrame{{T: FrameSend, Seq: 3, Data: []byte(`1`)}})
	if acks[0].Dup || h.times(FrameSend, testCID, 3) != 1 {
		t.Fatalf("seq 3: %+v", acks)
	}

	// The control: a client without an identity renumbers nothing either, but its new
	// session has a window of its own, and the frame is processed again.
	n, _ = m.Negotiate(ctx, "", Identity{}, "")
	m.Upstream(ctx, n.Claims, []ClientFrame{*send})
	n2 = expireAndRenegotiate(t, m, st, n, "")
	acks, _ = m.Upstream(ctx, n2.Claims, []ClientFrame{*send})
	if acks[0].Dup || h.times(FrameSend, n.Claims.SID, 1)+h.times(FrameSend, n2.Claims.SID, 1) != 2 {
		t.Fatalf("without a cid the new session deduplicated against the old one: %+v", acks)
	}
}

// The window is the client identity's and the user's: another user presenting the same
// cid gets a window of its own, so it can't suppress the first user's frames.
func TestUpstreamClientIdentityIsPerUser(t *testing.T) {
	ctx := context.Background()
	m, _, h := newUpstreamManager(t)
	alice, _ := m.Negotiate(ctx, "", Identity{User: "alice"}, testCID)
	mallory, _ := m.Negotiate(ctx, "", Identity{User: "mallory"}, testCID)
	f := ClientFrame{T: FrameSend, Seq: 1, Data: []byte(`1`)}
	m.Upstream(ctx, mallory.Claims, []ClientFrame{f})
	acks, _ := m.Upstream(ctx, alice.Claims, []ClientFrame{f})
	if acks[0].Dup || h.times(FrameSend, testCID, 1) != 2 {
		t.Fatalf("alice's frame after mallory's with the same cid: %+v", acks)
	}
	if DedupeKey(alice.Claims) == DedupeKey(mallory.Claims) {
		t.Fatal("one dedupe key for two users")
	}
}

// A duplicate is answered as its first attempt was: a failed pub's error again (the
// frame counts as processed), and "in progress, resend" (4029) while the first attempt
// has no outcome yet.
func TestUpstreamDuplicateReplaysOutcome(t *testing.T) {
	ctx := context.Background()
	m, _, h := newUpstreamManager(t)
	n, _ := m.Negotiate(ctx, "", Identity{}, testCID)

	h.fail = Errorf(CodeForbidden, "%s", strings.Repeat("no ", 100))
	pub := ClientFrame{T: FramePub, Seq: 1, Ch: "room:a", Data: []byte(`1`)}
	first, _ := m.Upstream(ctx, n.Claims, []ClientFrame{pub})
	again, _ := m.Upstream(ctx, n.Claims, []ClientFrame{pub})
	if first[0].Err == nil || again[0].Err == nil || again[0].Err.Code != CodeForbidden || !again[0].Dup ||
		!strings.HasPrefix(first[0].Err.Reason, again[0].Err.Reason) || len(again[0].Err.Reason) != maxOutcomeReason {
		t.Fatalf("failed pub: first %+v, duplicate %+v", first[0], again[0])
	}
	send := ClientFrame{T: FrameSend, Seq: 2, Data: []byte(`1`)}
	m.Upstream(ctx, n.Claims, []ClientFrame{send})
	again, _ = m.Upstream(ctx, n.Claims, []ClientFrame{send})
	if again[0].Err == nil || again[0].Err.Code != CodeForbidden || !again[0].Dup || h.times(FrameSend, testCID, 2) != 1 {
		t.Fatalf("failed send's duplicate: %+v", again[0])
	}
	h.fail = nil

	h.publish = make(chan struct{})
	pub = ClientFrame{T: FramePub, Seq: 3, Ch: "room:a", Data: []byte(`1`)}
	done := make(chan Ack)
	go func() {
		acks, _ := m.Upstream(ctx, n.Claims, []ClientFrame{pub})
		done <- acks[0]
	}()
	deadline := time.Now().Add(5 * time.Second)
	for h.times(FramePub, testCID, 3) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first attempt never reached the handler")
		}
		time.Sleep(time.Millisecond)
	}
	during, _ := m.Upstream(ctx, n.Claims, []ClientFrame{pub})
	if during[0].Err == nil || during[0].Err.Code != CodeRateLimited {
		t.Fatalf("duplicate while the first attempt runs: %+v, want 4029 (resend)", during[0])
	}
	close(h.publish)
	firstAck := <-done
	after, _ := m.Upstream(ctx, n.Claims, []ClientFrame{pub})
	if !after[0].Dup || after[0].Pos != firstAck.Pos || firstAck.Pos.IsZero() || h.times(FramePub, testCID, 3) != 1 {
		t.Fatalf("first %+v, duplicate afterwards %+v", firstAck, after[0])
	}
}

// A send is acknowledged "ok" only once its handler has succeeded: a duplicate that
// comes while the first attempt runs is told to resend (4029), and one that comes after a
// failed attempt whose outcome the store could not record is never told "ok".
func TestUpstreamSendDuplicateWaitsForItsOutcome(t *testing.T) {
	ctx := context.Background()
	m, store, h := newUpstreamManager(t)
	n, _ := m.Negotiate(ctx, "", Identity{}, testCID)

	h.send, h.entered = make(chan struct{}), make(chan struct{}, 1)
	send := ClientFrame{T: FrameSend, Seq: 1, Data: []byte(`1`)}
	done := make(chan Ack)
	go func() {
		acks, _ := m.Upstream(ctx, n.Claims, []ClientFrame{send})
		done <- acks[0]
	}()
	<-h.entered // the first attempt is in the handler
	during, _ := m.Upstream(ctx, n.Claims, []ClientFrame{send})
	if during[0].Err == nil || during[0].Err.Code != CodeRateLimited {
		t.Fatalf("duplicate while the first attempt runs: %+v, want 4029 (resend)", during[0])
	}
	close(h.send)
	if first := <-done; first.Err != nil {
		t.Fatalf("first attempt: %+v", first)
	}
	h.send = nil
	after, _ := m.Upstream(ctx, n.Claims, []ClientFrame{send})
	if after[0].Err != nil || !after[0].Dup || h.times(FrameSend, testCID, 1) != 1 {
		t.Fatalf("duplicate afterwards: %+v, handler ran %d times", after[0], h.times(FrameSend, testCID, 1))
	}

	// The handler fails, and so does recording it.
	h.fail = Errorf(CodeInternal, "downstream unavailable")
	store.mu.Lock()
	store.recordFails = true
	store.mu.Unlock()
	send = ClientFrame{T: FrameSend, Seq: 2, Data: []byte(`2`)}
	first, _ := m.Upstream(ctx, n.Claims, []ClientFrame{send})
	again, _ := m.Upstream(ctx, n.Claims, []ClientFrame{send})
	if first[0].Err == nil || again[0].Err == nil || h.times(FrameSend, testCID, 2) != 1 {
		t.Fatalf("failed send, outcome unrecorded: first %+v, resend %+v (an ok would be a lie), handler ran %d times",
			first[0], again[0], h.times(FrameSend, testCID, 2))
	}
}

// A resumed session takes the cid of the negotiation that resumes it.
func TestNegotiateResumeTakesClientIdentity(t *testing.T) {
	ctx := context.Background()
	m, _, _ := newUpstreamManager(t)
	n, _ := m.Negotiate(ctx, "", Identity{}, "")
	r, err := m.Negotiate(ctx, n.Credential, Identity{}, testCID)
	if err != nil || !r.Resumed || r.Claims.SID != n.Claims.SID || r.Claims.CID != testCID {
		t.Fatalf("resume: %+v %v", r, err)
	}
}

func TestCheckClientID(t *testing.T) {
	for _, ok := range []string{testCID, strings.Repeat("a", MinClientIDLen), strings.Repeat("Z9_-", MaxClientIDLen/4)} {
		if err := CheckClientID(ok); err != nil {
			t.Errorf("CheckClientID(%q) = %v", ok, err)
		}
	}
	for bad, why := range map[string]string{
		"":                                  "16 to 64",
		"short":                             "16 to 64",
		strings.Repeat("a", 65):             "16 to 64",
		"tab-0123456789abcde!":              `'!'`,
		"tab 0123456789abcdef":              `' '`,
		"tab-0123456789abcdé":               "character",
		"tab-0123456789abcdef\n":            "character",
		"tab.0123456789abcdef:0123456789ab": `'.'`,
	} {
		err := CheckClientID(bad)
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeBadRequest || !strings.Contains(e.Reason, why) || !strings.Contains(e.Reason, "cid") {
			t.Errorf("CheckClientID(%q) = %v, want 4100 naming the problem (%s)", bad, err, why)
		}
	}
}

// The store fails part-way through a POST's frames, as a Redis master dies: the frame
// processed before the failure keeps its ack, whose outcome (here the handler's failure)
// no resend could learn, since recording it failed too. The frame the store failed on and
// the ones after it are answered 4029 (resend after a backoff) and not processed; resent
// once the store is back, each is processed once, and the one processed before is not
// processed again.
func TestUpstreamStoreFailingPartWayKeepsEarlierAcks(t *testing.T) {
	ctx := context.Background()
	m, store, h := newUpstreamManager(t)
	n, _ := m.Negotiate(ctx, "", Identity{}, testCID)
	setStore := func(recordFails bool, markFailsFrom uint64) {
		store.mu.Lock()
		store.recordFails, store.markFailsFrom = recordFails, markFailsFrom
		store.mu.Unlock()
	}

	h.fail = Errorf(CodeInternal, "echo service down")
	setStore(true, 2)
	frames := []ClientFrame{
		{T: FrameSend, Seq: 1, Data: []byte(`1`)},
		{T: FramePub, Seq: 2, Ch: "room:a", Data: []byte(`2`)},
		{T: FrameSend, Seq: 3, Data: []byte(`3`)},
	}
	acks, err := m.Upstream(ctx, n.Claims, frames)
	if err != nil || len(acks) != 3 {
		t.Fatalf("Upstream: %d acks, %v; want 3 acks and no error", len(acks), err)
	}
	if acks[0].Seq != 1 || acks[0].Err == nil || acks[0].Err.Code != CodeInternal {
		t.Errorf("the processed frame's ack: %+v, want the handler's error (1011)", acks[0])
	}
	for _, a := range acks[1:] {
		if a.Err == nil || a.Err.Code != CodeRateLimited || !strings.Contains(a.Err.Reason, "store") {
			t.Errorf("ack %d: %+v, want 4029 naming the store", a.Seq, a.Err)
		}
	}
	if h.times(FramePub, testCID, 2) != 0 || h.times(FrameSend, testCID, 3) != 0 {
		t.Fatal("a frame after the store failed was processed")
	}

	h.fail = nil
	setStore(false, 0)
	acks, err = m.Upstream(ctx, n.Claims, frames[1:])
	if err != nil || len(acks) != 2 || acks[0].Err != nil || acks[0].Pos.IsZero() || acks[1].Err != nil {
		t.Fatalf("resent after the store came back: %+v, %v; want both processed, the pub with a position", acks, err)
	}
	for _, f := range frames {
		if n := h.times(f.T, testCID, f.Seq); n != 1 {
			t.Errorf("%s %d processed %d times, want 1", f.T, f.Seq, n)
		}
	}
}

// retriedMarkStore sends every mark twice and returns the second answer, as go-redis does
// when the answer to the first was lost (a read timeout, a broken connection) although
// Redis ran it.
type retriedMarkStore struct{ *memStore }

func (s retriedMarkStore) MarkUpstream(ctx context.Context, key string, seq uint64, result string, ttl time.Duration) (bool, string, error) {
	s.memStore.MarkUpstream(ctx, key, seq, result, ttl) // its answer is lost
	return s.memStore.MarkUpstream(ctx, key, seq, result, ttl)
}

// An attempt whose mark was sent again by the store's client finds its own mark and
// processes the frame: it is not taken for a duplicate still in progress, which would
// answer 4029 to every resend until the client gave the frame up as of unknown outcome.
// A duplicate of another attempt is still told that the frame is in progress.
func TestUpstreamAttemptFindsItsOwnMark(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	h := &countingHandler{calls: map[string]int{}}
	m := NewManager(Config{Store: retriedMarkStore{st}, Source: newFakeSource(), Handler: h, SessionTTL: 30 * time.Second, UpstreamRate: -1})
	n, _ := m.Negotiate(ctx, "", Identity{}, testCID)

	acks, _ := m.Upstream(ctx, n.Claims, []ClientFrame{
		{T: FramePub, Seq: 1, Ch: "room:a", Data: []byte(`1`)},
		{T: FrameSend, Seq: 2, Data: []byte(`2`)},
	})
	if len(acks) != 2 || acks[0].Err != nil || acks[0].Dup || acks[0].Pos.IsZero() || acks[1].Err != nil || acks[1].Dup {
		t.Fatalf("acks %+v, want both processed (the pub with its position), neither a duplicate", acks)
	}
	if h.times(FramePub, testCID, 1) != 1 || h.times(FrameSend, testCID, 2) != 1 {
		t.Fatal("a frame was not processed exactly once")
	}

	h.send, h.entered = make(chan struct{}), make(chan struct{}, 1)
	done := make(chan []Ack)
	go func() {
		acks, _ := m.Upstream(ctx, n.Claims, []ClientFrame{{T: FrameSend, Seq: 3, Data: []byte(`3`)}})
		done <- acks
	}()
	<-h.entered
	during, _ := m.Upstream(ctx, n.Claims, []ClientFrame{{T: FrameSend, Seq: 3, Data: []byte(`3`)}})
	close(h.send)
	if first := <-done; first[0].Err != nil {
		t.Fatalf("first attempt: %+v", first[0])
	}
	if during[0].Err == nil || during[0].Err.Code != CodeRateLimited || h.times(FrameSend, testCID, 3) != 1 {
		t.Fatalf("a duplicate while the first attempt ran: %+v, want 4029; handler ran %d times", during[0], h.times(FrameSend, testCID, 3))
	}
}
