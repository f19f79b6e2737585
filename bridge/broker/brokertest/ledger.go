package brokertest

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ferryrt/ferry/session"
)

// CheckLedger drives the dedupe window key of stores (in turn) with a random walk of
// marks and records, and compares every answer with session.Ledger's.
func CheckLedger(t *testing.T, stores []session.Store, key string) {
	t.Helper()
	ctx := context.Background()
	l := session.NewLedger(session.DefaultDedupeWindow)
	rng := rand.New(rand.NewPCG(1, 2))
	seq := uint64(0)
	results := []string{"", "", "?", "pabc.17", "e4103 not allowed: ünïcode"}
	var firsts, dups, replays int
	for i := range 3000 {
		switch r := rng.IntN(100); {
		case i == 2500:
			seq = 1<<63 + uint64(rng.IntN(5000)) // beyond what a Lua number holds exactly
		case r < 50:
			seq++
		case r < 75 && seq > 1:
			seq -= min(seq-1, uint64(rng.IntN(20)))
		case r < 76 && seq > 1:
			seq -= min(seq-1, uint64(rng.IntN(1500)))
		case r < 98:
			seq += uint64(rng.IntN(30))
		default:
			seq += uint64(rng.IntN(3000))
		}
		st := stores[i%len(stores)]
		res := results[rng.IntN(len(results))]
		if rng.IntN(4) == 0 {
			if err := st.RecordUpstream(ctx, key, seq, res, time.Minute); err != nil {
				t.Fatal(err)
			}
			l.Record(seq, res)
			continue
		}
		first, recorded, err := st.MarkUpstream(ctx, key, seq, res, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if wf, wr := l.Mark(seq, res); first != wf || recorded != wr {
			t.Fatalf("step %d: MarkUpstream(%d, %q) = %v %q, session.Ledger says %v %q", i, seq, res, first, recorded, wf, wr)
		}
		switch {
		case first:
			firsts++
		case recorded != "":
			replays++
		default:
			dups++
		}
	}
	// The walk must have tried every case, or it compared nothing that matters.
	if firsts < 100 || dups < 100 || replays < 100 {
		t.Fatalf("walk too narrow: %d first, %d duplicates, %d with a result", firsts, dups, replays)
	}
}
