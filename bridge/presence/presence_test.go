package presence_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ferryrt/ferry/bridge/broker/brokertest"
	"github.com/ferryrt/ferry/bridge/memory"
	"github.com/ferryrt/ferry/bridge/presence"
)

func TestMemoryPresence(t *testing.T) {
	mb := memory.New(memory.Config{})
	defer mb.Close()
	in := brokertest.NewInbox()
	mb.Start(in.Deliver, nil)
	clock := brokertest.NewClock(time.Now())
	p := presence.NewMemory(mb, presence.Config{TTL: 10 * time.Second, SweepInterval: time.Hour, Now: clock.Now})
	defer p.Close()
	ctx := context.Background()
	s1, s2 := presence.Member{Session: "s1", User: "ann"}, presence.Member{Session: "s2"}

	if err := p.Join(ctx, presence.Member{}, "room"); err == nil {
		t.Fatal("joined without a session")
	}
	p.Join(ctx, s1, "room")
	p.Join(ctx, s1, "room") // a refresh: no event
	p.Join(ctx, s2, "room", "other")
	if got := brokertest.MemberList(t, p, "room"); got != "[{s1 ann} {s2 }]" {
		t.Fatalf("room: %s", got)
	}
	p.Leave(ctx, s2, "room")
	p.Leave(ctx, s2, "room") // not there any more: no event
	if got := fmt.Sprint(in.Events(t, "room")); got != "[join s1 join s2 leave s2]" {
		t.Fatalf("events: %s", got)
	}

	clock.Add(11 * time.Second) // past the TTL: gone for List at once, announced by Sweep
	if got := brokertest.MemberList(t, p, "room"); got != "[]" {
		t.Fatalf("room after the TTL: %s", got)
	}
	if n, err := p.Sweep(ctx); n != 2 || err != nil {
		t.Fatalf("sweep: %d %v", n, err)
	}
	if got := fmt.Sprint(in.Events(t, "room"), in.Events(t, "other")); got != "[join s1 join s2 leave s2 leave s1] [join s2 leave s2]" {
		t.Fatalf("events: %s", got)
	}
}
