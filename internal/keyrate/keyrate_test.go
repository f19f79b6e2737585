package keyrate

import (
	"testing"
	"time"
)

func TestTable(t *testing.T) {
	tb := New(1, 2)
	now := time.Now()
	if !tb.allowAt("a", now) || !tb.allowAt("a", now) {
		t.Fatal("a burst of 2 was refused")
	}
	if tb.allowAt("a", now) {
		t.Fatal("a third token within the same instant was given")
	}
	if !tb.allowAt("b", now) {
		t.Fatal("another key shares a's bucket")
	}
	if !tb.allowAt("a", now.Add(time.Second)) {
		t.Fatal("a second later, a has no token")
	}
	// Idle buckets are full again, so a sweep forgets them.
	later := now.Add(sweepEvery + time.Minute)
	if !tb.allowAt("c", later) || tb.Len() != 1 {
		t.Fatalf("after a sweep the table holds %d buckets, want only c's", tb.Len())
	}
}
