package core

import "sync"

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
type SyncQueue[T any] struct {
	broker  *Broker
	release func(items []T, err error, fromStore bool)

	mu       sync.Mutex
	waiting  []syncItem[T]
	notified bool // a Store.Notify is outstanding
	closed   bool
	batch    []T
}

type syncItem[T any] struct {
	pos  uint64
	item T
}

// NewSyncQueue returns a SyncQueue releasing through release.
func NewSyncQueue[T any](b *Broker, release func(items []T, err error, fromStore bool)) *SyncQueue[T] {
	return &SyncQueue[T]{broker: b, release: release}
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
	// Release in runs that share an outcome, in order.
	for i := 0; i < n; {
		failed := err != nil && q.waiting[i].pos != 0
		q.batch = q.batch[:0]
		for ; i < n && (err != nil && q.waiting[i].pos != 0) == failed; i++ {
			q.batch = append(q.batch, q.waiting[i].item)
		}
		var e error
		if failed {
			e = err
		}
		q.release(q.batch, e, true)
	}
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
