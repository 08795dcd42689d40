package mqtt

import (
	"testing"
	"time"
)

// TestWriteTurn: one holder at a time; the turn passes from the goroutine
// that took it to another that releases it, and waiters take it in turn.
func TestWriteTurn(t *testing.T) {
	var turn writeTurn
	if !turn.tryTake() {
		t.Fatal("a free turn was not taken")
	}
	if turn.tryTake() {
		t.Fatal("a held turn was taken again")
	}
	const waiters = 3
	took := make(chan int, waiters)
	for i := range waiters {
		go func() {
			turn.take()
			took <- i
		}()
	}
	// Released by another goroutine than the one that took it, as the
	// direct write passes it to the session's writer.
	go turn.release()
	for range waiters {
		select {
		case <-took:
		case <-time.After(10 * time.Second):
			t.Fatal("a waiter never got the turn")
		}
		select {
		case i := <-took:
			t.Fatalf("waiter %d got the turn while another held it", i)
		default:
		}
		turn.release()
	}
	if !turn.tryTake() {
		t.Fatal("the turn was not free after the last release")
	}
}
