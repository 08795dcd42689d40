package core

import (
	"sync"
	"sync/atomic"
)

// Limit is a shared unacked-message budget: the per-channel prefetch of
// basic.qos with global=true. Consumers on any number of queues may share one
// Limit through ConsumeOptions.Shared. Safe for concurrent use.
//
// The counter is atomic so that queues take and return credit without a lock.
// A consumer that finds the Limit full registers itself as a waiter (under
// mu) and its queue is dispatched again when credit comes back. Lock order:
// a queue's lock may be held while taking mu, never the reverse; queues are
// kicked only after every lock has been released.
type Limit struct {
	max  atomic.Uint32 // 0 = unlimited
	used atomic.Int64  // deliveries holding credit
	// hasWaiters lets release skip mu when no consumer is waiting.
	hasWaiters atomic.Bool

	mu      sync.Mutex
	waiters []*Consumer // guarded by mu; Consumer.waiting marks membership
}

// NewLimit returns a Limit allowing max unacked deliveries; 0 = unlimited.
func NewLimit(max uint32) *Limit {
	l := &Limit{}
	l.max.Store(max)
	return l
}

// SetMax changes the budget (basic.qos on a channel that already consumes).
// Consumers that were blocked on the Limit are dispatched again, on the
// caller's goroutine, before SetMax returns. The caller must hold no queue
// lock.
func (l *Limit) SetMax(max uint32) {
	l.max.Store(max)
	for _, q := range l.takeWaiters(nil, nil) {
		q.kick()
	}
}

// tryAcquire takes one unit of credit if there is room.
func (l *Limit) tryAcquire() bool {
	for {
		used, max := l.used.Load(), l.max.Load()
		if max != 0 && used >= int64(max) {
			return false
		}
		if l.used.CompareAndSwap(used, used+1) {
			return true
		}
	}
}

// acquireOrWait takes one unit of credit, or registers c as waiting for
// credit and reports false. The retry after registering closes the race with
// a release that ran between the failed attempt and the registration: either
// that release saw the waiter, or the retry sees its credit. c's queue lock
// is held.
func (l *Limit) acquireOrWait(c *Consumer) bool {
	if l.tryAcquire() {
		return true
	}
	l.mu.Lock()
	if !c.waiting {
		c.waiting = true
		l.waiters = append(l.waiters, c)
	}
	l.hasWaiters.Store(true)
	l.mu.Unlock()
	return l.tryAcquire()
}

// release returns n units of credit. If that leaves room and consumers are
// waiting, their queues (other than self) are appended to kick; the caller
// dispatches them after releasing its own lock.
func (l *Limit) release(n int64, self *Queue, kick []*Queue) []*Queue {
	if n == 0 {
		return kick
	}
	l.used.Add(-n)
	if !l.hasWaiters.Load() {
		return kick
	}
	if max := l.max.Load(); max != 0 && l.used.Load() >= int64(max) {
		return kick
	}
	return l.takeWaiters(self, kick)
}

// takeWaiters empties the waiter set and appends the distinct queues of the
// waiting consumers, except self, to kick.
func (l *Limit) takeWaiters(self *Queue, kick []*Queue) []*Queue {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, c := range l.waiters {
		c.waiting = false
		l.waiters[i] = nil
		if c.q != self && !containsQueue(kick, c.q) {
			kick = append(kick, c.q)
		}
	}
	l.waiters = l.waiters[:0]
	l.hasWaiters.Store(false)
	return kick
}

func containsQueue(qs []*Queue, q *Queue) bool {
	for _, x := range qs {
		if x == q {
			return true
		}
	}
	return false
}
