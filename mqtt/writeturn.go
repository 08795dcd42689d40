package mqtt

import "sync"

// writeTurn is the right to write on a connection, held by one goroutine at
// a time so that packets never interleave. Unlike a mutex it may be passed
// on: a delivering goroutine whose direct write got only part of a packet
// out hands the turn to the writer goroutine that writes the rest (see
// session.signalLocked). Its own lock is held only to change hands, never
// across a write.
type writeTurn struct {
	mu   sync.Mutex
	held bool
	// free is made by the first goroutine to wait for a held turn and
	// closed when the turn is released; contention is rare (a control
	// packet while deliveries are written), so an uncontended connection
	// does not pay for it.
	free chan struct{}
}

// take waits for the turn and takes it. The holder's writes have deadlines,
// so the wait is bounded by them.
func (t *writeTurn) take() {
	t.mu.Lock()
	for t.held {
		if t.free == nil {
			t.free = make(chan struct{})
		}
		free := t.free
		t.mu.Unlock()
		<-free
		t.mu.Lock()
	}
	t.held = true
	t.mu.Unlock()
}

// tryTake takes the turn if it is free, without waiting.
func (t *writeTurn) tryTake() bool {
	t.mu.Lock()
	ok := !t.held
	t.held = true
	t.mu.Unlock()
	return ok
}

// release gives the turn up, from whichever goroutine holds it, and wakes
// the goroutines waiting for it.
func (t *writeTurn) release() {
	t.mu.Lock()
	t.held = false
	if t.free != nil {
		close(t.free)
		t.free = nil
	}
	t.mu.Unlock()
}
