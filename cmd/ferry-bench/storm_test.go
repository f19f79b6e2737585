package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// buildFerry builds the ferry binary for the storm tests.
func buildFerry(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ferry")
	if out, err := exec.Command("go", "build", "-o", bin, "../ferry").CombinedOutput(); err != nil {
		t.Fatalf("go build ../ferry: %v\n%s", err, out)
	}
	return bin
}

func stormOptions(t *testing.T, args ...string) *options {
	t.Helper()
	o, err := parseOptions(append([]string{"--mode", "storm", "--clients", "30", "--steady", "500ms", "--rate", "20",
		"--drain", "15s", "--storm-timeout", "60s"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// The storm mode at a small scale: a graceful restart brings every client back with
// nothing lost and no reset; a crash brings every client back with an explicit reset and
// no silent gap; and the counts add up.
func TestStormSingleNode(t *testing.T) {
	o := stormOptions(t, "--ferry-bin", buildFerry(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := runStorm(ctx, o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Signal != "SIGTERM" || res[1].Signal != "SIGKILL" {
		t.Fatalf("results %+v, want SIGTERM then SIGKILL", res)
	}
	for _, r := range res {
		if r.Affected != 30 || r.Back != 30 || r.SilentGaps != 0 || r.Dups != 0 || r.Behind != 0 {
			t.Errorf("%s: affected %d, back %d, gaps %d, dups %d, behind %d; want 30, 30, 0, 0, 0", r.Signal, r.Affected, r.Back, r.SilentGaps, r.Dups, r.Behind)
		}
		if r.SteadyRSSKiB <= 0 || r.PeakRSSKiB <= 0 || r.BackLastMs < r.BackP50Ms {
			t.Errorf("%s: figures %+v", r.Signal, r)
		}
	}
	if term := res[0]; term.Resets != 0 || term.NewSessions != 0 {
		t.Errorf("SIGTERM: %d resets, %d new sessions; want none", term.Resets, term.NewSessions)
	}
	if kill := res[1]; kill.Resets != 30 || kill.NewSessions != 30 {
		t.Errorf("SIGKILL: %d resets, %d new sessions; want one each per client", kill.Resets, kill.NewSessions)
	}
}

// Three nodes on Redis: the clients of the restarted node come back (on any node) with
// nothing lost and no reset, after a graceful restart and after a crash alike, since Redis
// keeps the channels and sessions.
func TestStormCluster(t *testing.T) {
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server in PATH")
	}
	o := stormOptions(t, "--ferry-bin", buildFerry(t), "--nodes", "3", "--redis-server", redis)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := runStorm(ctx, o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Affected < 1 || r.Back != r.Affected || r.Resets != 0 || r.SilentGaps != 0 || r.Dups != 0 || r.Behind != 0 || r.NewSessions != 0 {
			t.Errorf("%s: %+v; want every affected client back, no reset, nothing lost", r.Signal, r)
		}
	}
}

func TestStormOptions(t *testing.T) {
	o, err := parseOptions([]string{"--mode", "storm", "--ferry-bin", os.Args[0]}, io.Discard)
	if err != nil || o.clients != 10000 || o.sources != 0 || o.signals != "term,kill" {
		t.Fatalf("defaults: %v %+v", err, o)
	}
	for _, bad := range [][]string{{"--mode", "storm"}, {"--mode", "storm", "--ferry-bin", "x", "--signals", "hup"}, {"--mode", "flood"}} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

// A restart takes the candidate node with the most clients attached: a node whose clients
// all came back elsewhere after the previous restart is not chosen again.
func TestBusiestNode(t *testing.T) {
	nodes := []*node{{name: "node0"}, {name: "node1"}}
	var clients []*stormClient
	for i, at := range []struct {
		node int
		live bool
	}{{0, true}, {1, true}, {1, true}, {0, false}, {0, false}, {2, true}, {2, true}, {2, true}} {
		c := &stormClient{id: i}
		c.st.node, c.st.live = at.node, at.live
		clients = append(clients, c)
	}
	if got := busiestNode(nodes, clients); got != nodes[1] {
		t.Errorf("busiest: %s, want node1 (node0 has one live client, node2 is not a candidate)", got.name)
	}
	if got := busiestNode(nodes, clients[3:5]); got != nodes[0] {
		t.Errorf("no live client: %s, want the first candidate", got.name)
	}
}
