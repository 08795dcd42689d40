package core

import (
	"errors"
	"sync"
)

// SyncQueue releases items in the order they were added, each once the
// store position it waits for is durable. The acknowledgements that must
// follow the store and keep their order go through one: AMQP publisher
// confirms, MQTT PUBACKs, a bridge's upstream acks.
//
// release runs with the queue's lock held, so that releases never overtake
// one another: on the adding goroutine when nothing waits and the item
// needs no sync (fromStore false), else on the store's goroutine
// (fromStore true). It must be quick, must not block and must not call
// back into the queue. err is the store's failure for the items it covers;
// items added with position 0 never fail.
//
// The queue waits for one position at a time, the furthest of its items,
// so that one Notify covers many. With a Store that is a FailureLog, each
// item it releases gets the outcome of its own position: an item the
// store refused in an earlier commit than the one of that position is
// failed, not released as durable, and an item before or after a refused
// one in the same commit is not failed with it.
type SyncQueue[T any] struct {
	broker  *Broker
	release func(items []T, err error, fromStore bool)
	log     FailureLog // the broker's store, if it is one; else nil

	mu       sync.Mutex
	waiting  []syncItem[T]
	notified bool // a Store.Notify is outstanding
	closed   bool
	batch    []T
	// err and fails are the outcomes of the items Synced is releasing
	// (setOutcomes).
	err   error
	fails []StoreFailure
}

type syncItem[T any] struct {
	pos  uint64
	item T
}

// FailureLog is implemented by a Store that remembers which committed
// positions it told a failure: the ops it refused (ErrStoreRefused), each
// alone, and the other positions of the same logical operation (a
// publish's). Without it, a SyncQueue waiting for position p releases
// every item up to p as durable if p is, although an earlier item of its
// own may have been refused in an earlier commit.
type FailureLog interface {
	// FailedBetween returns the failures that cover committed positions
	// in [from, to]; nil if none. It is called with a SyncQueue's lock
	// held, on the store's goroutine: it must not block or call back.
	FailedBetween(from, to uint64) []StoreFailure
}

// StoreFailure is a range of committed positions, From to To, whose
// waiters were told Err.
type StoreFailure struct {
	From, To uint64
	Err      error
}

// NewSyncQueue returns a SyncQueue releasing through release.
func NewSyncQueue[T any](b *Broker, release func(items []T, err error, fromStore bool)) *SyncQueue[T] {
	q := &SyncQueue[T]{broker: b, release: release}
	q.log, _ = b.store.(FailureLog)
	return q
}

// Add queues item until store position pos (0: none) is durable and
// everything added before it has been released.
func (q *SyncQueue[T]) Add(pos uint64, item T) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	if pos == 0 && len(q.waiting) == 0 {
		q.batch = append(q.batch[:0], item)
		q.release(q.batch, nil, false)
		clear(q.batch)
		q.mu.Unlock()
		return
	}
	q.waiting = append(q.waiting, syncItem[T]{pos: pos, item: item})
	notify := !q.notified
	q.notified = true
	q.mu.Unlock()
	if notify {
		q.broker.NotifySynced(pos, q)
	}
}

// Synced implements SyncWaiter.
func (q *SyncQueue[T]) Synced(pos uint64, err error) {
	q.mu.Lock()
	q.notified = false
	if q.closed {
		q.mu.Unlock()
		return
	}
	n := 0
	for n < len(q.waiting) && q.waiting[n].pos <= pos {
		n++
	}
	q.setOutcomes(q.waiting[:n], pos, err)
	// Release in runs that share an outcome, in order.
	for i := 0; i < n; {
		k := q.outcome(q.waiting[i].pos)
		q.batch = q.batch[:0]
		for ; i < n && q.outcome(q.waiting[i].pos) == k; i++ {
			q.batch = append(q.batch, q.waiting[i].item)
		}
		var e error
		switch {
		case k == 0:
			e = q.err
		case k > 0:
			e = q.fails[k-1].Err
		}
		q.release(q.batch, e, true)
	}
	q.err, q.fails = nil, nil
	clear(q.batch)
	clear(q.waiting[:n])
	q.waiting = q.waiting[:copy(q.waiting, q.waiting[n:])]
	// Wait for the furthest position: the last item may be a position-0
	// one queued behind others, and positions only grow.
	var next uint64
	for _, w := range q.waiting {
		next = max(next, w.pos)
	}
	q.notified = next != 0
	q.mu.Unlock()
	if next != 0 {
		q.broker.NotifySynced(next, q)
	}
}

// setOutcomes prepares outcome for releasing items, now that pos is synced
// with err. A failed commit (an outage) fails every item that waits for a
// position. Otherwise the failure log, if any, says which positions the
// store failed; without one, every item shares err. q.mu is held.
func (q *SyncQueue[T]) setOutcomes(items []syncItem[T], pos uint64, err error) {
	q.err, q.fails = err, nil
	if q.log == nil || (err != nil && !errors.Is(err, ErrStoreRefused)) {
		return
	}
	var from uint64
	for _, it := range items {
		if it.pos != 0 {
			from = it.pos
			break
		}
	}
	if from == 0 || (err == nil && from == pos) {
		return // nothing but pos itself, which the store answered for
	}
	// Usually nil: the log holds only commits in which an op was refused.
	// If err is a refusal the log no longer holds (it keeps the latest
	// only), every item shares err, as without a log.
	q.fails = q.log.FailedBetween(from, pos)
}

// outcome is the outcome of the item at position p: -1 released as
// durable, 0 failed with q.err, k > 0 failed with q.fails[k-1].Err.
func (q *SyncQueue[T]) outcome(p uint64) int {
	switch {
	case p == 0:
		return -1
	case q.fails == nil:
		if q.err == nil {
			return -1
		}
		return 0
	}
	for k, f := range q.fails {
		if p >= f.From && p <= f.To {
			return k + 1
		}
	}
	return -1
}

// Locked runs f with the queue's lock held, for state that release shares
// with its owner.
func (q *SyncQueue[T]) Locked(f func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	f()
}

// Close drops everything waiting: its owner is gone (and, for an AMQP
// channel, its number may be reused by a new one).
func (q *SyncQueue[T]) Close() {
	q.mu.Lock()
	q.closed = true
	q.waiting = nil
	q.mu.Unlock()
}
