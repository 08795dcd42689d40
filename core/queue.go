package core

import (
	"slices"
	"sync"
	"time"
)

// QueueDecl describes a queue.declare.
type QueueDecl struct {
	Name                                    string // "" -> server-named "amq.gen-<base64url 22 chars>"
	Durable, Exclusive, AutoDelete, Passive bool
	// Arguments are the x-arguments. Core keeps the table; the caller must
	// not modify it afterwards.
	Arguments Table
	Owner     uint64 // connection declaring; exclusive queues belong to it
	// ServerNamed says Name came from ServerQueueName: the caller named
	// the queue before declaring it, to check permissions on that name.
	ServerNamed bool
}

// QueueInfo is the reply to queue.declare.
type QueueInfo struct {
	Name      string
	Messages  uint32 // ready messages
	Consumers uint32
}

// Outcome is how a delivery is settled.
type Outcome uint8

const (
	// Ack ends the delivery: the message is done.
	Ack Outcome = iota
	// Requeue puts the message back at its original position, with
	// Redelivered set on its next delivery.
	Requeue
	// Reject dead-letters the message with reason "rejected" if the queue
	// has a dead-letter exchange, else drops it.
	Reject
)

// Dead-letter reasons, as RabbitMQ writes them in x-death.
const (
	reasonRejected = "rejected"
	reasonExpired  = "expired"
	reasonMaxLen   = "maxlen"
)

// Queue is a message queue of a vhost. Everything mutable is guarded by mu,
// except bindings (guarded by the vhost topology lock). Dispatch to
// consumers runs inline on whichever goroutine enqueues, settles, consumes,
// resumes or raises a Limit; there is no goroutine per queue.
type Queue struct {
	vhost      *VHost
	name       string
	durable    bool
	exclusive  bool
	autoDelete bool
	// persist: the queue and its persistent messages are in the store
	// (durable, not exclusive, and the broker has a store).
	persist bool
	owner   uint64 // the exclusive owner; 0 when not exclusive
	args    Table  // as declared, for equivalence checks
	cfg     queueArgs

	bindings map[*Binding]struct{} // bindings to this queue; vhost.mu

	mu         sync.Mutex
	levels     []deque // ready messages, one deque per priority level
	ready      int     // ready messages in all levels
	readyBytes int64
	expiring   int    // ready entries with a deadline
	nextSeq    uint64 // enqueue order
	nextTag    uint64 // last Delivery.Seq handed out
	unacked    map[uint64]unackedEntry

	consumers         []*Consumer      // registration order (single-active-consumer picks [0])
	byPriority        []*consumerLevel // highest priority first
	exclusiveConsumer bool

	deleted bool
	closed  bool   // the broker is closing: arm no more timers
	dropped uint64 // messages dropped from the head by x-max-length (drop-head)
	// unreadable counts the stored messages the store could not read back
	// (a damaged value log), dropped: see unreadableLocked.
	unreadable uint64
	// counters are the queue's message counts (stats.go); guarded by mu.
	counters MessageCounters

	// transient is the body bytes of ready messages that live only in
	// memory (not stored), counted against the memory limit.
	transient int64
	// backlog caps the ready messages as an MQTT session's queue is
	// capped (SetBacklogLimit); discarded counts the messages dropped or
	// refused by it, or refused under the memory alarm.
	backlog   BacklogLimit
	discarded uint64

	lastUsed     int64 // Clock time of the last get/declare/last cancel (x-expires)
	expiresTimer Timer
	ttlTimer     Timer
	ttlAt        int64  // deadline ttlTimer was armed for
	ttlGen       uint64 // identifies the armed ttlTimer, so a stale firing is ignored
}

// unackedEntry is a delivery awaiting Settle. c is nil for basic.get.
type unackedEntry struct {
	e entry
	c *Consumer
}

// effects are what a queue operation must do after releasing the queue
// lock: publish dead letters and dispatch queues whose consumers waited on a
// Limit that now has room.
type effects struct {
	dead []deadLetter
	kick []*Queue
	pos  uint64 // the last store append made
	// held is set while the store holds its commits for a stored message
	// being dead-lettered: from its Remove to its republication, which run
	// releases (see Store.Hold). hold is the token.
	held bool
	hold uint64
}

func (fx *effects) run(v *VHost) {
	for _, q := range fx.kick {
		q.kick()
	}
	for i := range fx.dead {
		v.deadLetter(&fx.dead[i])
	}
	if fx.held {
		fx.held = false
		v.store.Release(fx.hold)
	}
}

func newQueue(v *VHost, d QueueDecl, name string, cfg queueArgs) *Queue {
	q := &Queue{
		vhost:      v,
		name:       name,
		durable:    d.Durable,
		exclusive:  d.Exclusive,
		autoDelete: d.AutoDelete,
		args:       d.Arguments,
		cfg:        cfg,
		bindings:   make(map[*Binding]struct{}),
		levels:     make([]deque, cfg.levels),
		unacked:    make(map[uint64]unackedEntry),
		persist:    d.Durable && !d.Exclusive && v.store != nil,
	}
	if d.Exclusive {
		q.owner = d.Owner
	}
	return q
}

// Name returns the queue's name.
// Arguments returns the queue's x-arguments as declared; the caller must
// not modify them.
func (q *Queue) Arguments() Table { return q.args }

func (q *Queue) Name() string { return q.name }

// Counts returns the number of ready messages and of consumers.
func (q *Queue) Counts() (messages, consumers uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return uint32(q.ready), uint32(len(q.consumers))
}

// QueueStats are a queue's figures for status reports.
type QueueStats struct {
	Messages  int   // ready
	Bytes     int64 // body bytes of the ready messages
	Unacked   int   // delivered, not yet settled
	Consumers int
	Dropped   uint64 // dropped from the head by a length limit, since start
	// Discarded counts the messages dropped or refused beyond the
	// queue's backlog limit (SetBacklogLimit) or refused under the memory
	// alarm, since start.
	Discarded uint64
}

// Stats returns the queue's current figures.
func (q *Queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.statsLocked()
}

func (q *Queue) statsLocked() QueueStats {
	return QueueStats{Messages: q.ready, Bytes: q.readyBytes, Unacked: len(q.unacked), Consumers: len(q.consumers), Dropped: q.dropped, Discarded: q.discarded}
}

// CheckAccess returns a 405 RESOURCE_LOCKED if the queue is exclusive to a
// connection other than owner.
func (q *Queue) CheckAccess(owner uint64) error {
	if q.exclusive && q.owner != owner {
		return q.lockedError()
	}
	return nil
}

func (q *Queue) lockedError() error {
	return Errorf(CodeResourceLocked, "cannot obtain exclusive access to locked %s. It could be originally "+
		"declared on another connection or the exclusive property value does not match that of the original declaration.",
		rs("queue", q.name, q.vhost.name))
}

func (q *Queue) notFound() error {
	return Errorf(CodeNotFound, "no queue '%s' in vhost '%s'", q.name, q.vhost.name)
}

// now returns the Clock time in UnixNano.
func (q *Queue) now() int64 { return q.vhost.clock.Now().UnixNano() }

// cutoffLocked is the time against which heads are checked for expiry, or 0
// (nothing expires) when no ready entry has a deadline, which spares the
// clock read.
func (q *Queue) cutoffLocked() int64 {
	if q.expiring == 0 {
		return 0
	}
	return q.now()
}

// levelOf is the priority level of e: its priority capped at the queue's
// x-max-priority; always 0 for a queue without priorities.
func (q *Queue) levelOf(e *entry) int {
	p := int(e.prio)
	if p >= len(q.levels) {
		p = len(q.levels) - 1
	}
	return p
}

// topLevel returns the highest non-empty priority level; q.ready > 0.
func (q *Queue) topLevel() int {
	for i := len(q.levels) - 1; i > 0; i-- {
		if q.levels[i].len() > 0 {
			return i
		}
	}
	return 0
}

func (q *Queue) pushLocked(e entry) {
	q.levels[q.levelOf(&e)].insert(e)
	q.ready++
	q.readyBytes += int64(e.size)
	if e.deadline != 0 {
		q.expiring++
	}
	if e.stored && e.msg != nil {
		q.vhost.mem.resident.Add(int64(e.size))
	}
	if !e.stored {
		q.addTransientLocked(int64(e.size))
	}
}

// addTransientLocked counts n more (or, negative, fewer) bytes of
// transient messages ready in the queue, and whether it holds any.
func (q *Queue) addTransientLocked(n int64) {
	m := q.vhost.mem
	before := q.transient
	q.transient += n
	switch {
	case before == 0 && q.transient > 0:
		m.transientQueues.Add(1)
	case before > 0 && q.transient == 0:
		m.transientQueues.Add(-1)
	}
}

func (q *Queue) popLocked(level int) entry {
	e := q.levels[level].popFront()
	q.ready--
	q.readyBytes -= int64(e.size)
	if e.deadline != 0 {
		q.expiring--
	}
	if e.stored && e.msg != nil {
		q.vhost.mem.resident.Add(-int64(e.size))
	}
	if !e.stored {
		q.addTransientLocked(-int64(e.size))
	}
	return e
}

// forgetLocked removes a settled or dropped entry from the store.
func (q *Queue) forgetLocked(e *entry, fx *effects) {
	if e.stored {
		fx.pos = max(fx.pos, q.vhost.store.Remove(q.vhost.name, q.name, e.seq, e.id))
	}
}

// dropLocked takes a message out of the queue for good: it leaves the
// store, and goes to the dead-letter exchange with reason if the queue has
// one.
func (q *Queue) dropLocked(fx *effects, e entry, reason string) {
	q.vhost.countDrop(dropReasonOf(reason), q.cfg.hasDLX)
	if q.cfg.hasDLX {
		if msg := q.readLocked(&e); msg != nil {
			if e.stored && !fx.held {
				fx.held, fx.hold = true, q.vhost.store.Hold()
			}
			q.deadLetterLocked(fx, msg, reason)
		}
	}
	q.forgetLocked(&e, fx)
}

// overLimitLocked reports whether the ready messages exceed x-max-length or
// x-max-length-bytes.
func (q *Queue) overLimitLocked() bool {
	return (q.cfg.maxLength >= 0 && int64(q.ready) > q.cfg.maxLength) ||
		(q.cfg.maxBytes >= 0 && q.readyBytes > q.cfg.maxBytes)
}

// enqueue adds msg, published with per-message TTL msgTTL (negative = none),
// and dispatches. accepted is false if the queue is gone or refused the
// message; rejected is true if it refused it by x-overflow. pos is the store
// position that makes the enqueue durable (0: nothing was stored).
func (q *Queue) enqueue(msg *Message, msgTTL time.Duration) (accepted, rejected bool, pos uint64) {
	var fx effects
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return false, false, 0
	}
	// RabbitMQ's will_overflow: refuse when this message would take the
	// queue past a limit, whether or not a consumer could take it at once.
	if q.cfg.overflow != dropHead &&
		((q.cfg.maxLength >= 0 && int64(q.ready)+1 > q.cfg.maxLength) ||
			(q.cfg.maxBytes >= 0 && q.readyBytes+int64(msg.Size()) > q.cfg.maxBytes)) {
		if q.cfg.overflow == rejectPublishDLX && q.cfg.hasDLX {
			q.vhost.countDrop(DropMaxLen, true)
		} else {
			q.vhost.countDrop(DropOverflow, false)
		}
		if q.cfg.overflow == rejectPublishDLX {
			q.deadLetterLocked(&fx, msg, reasonMaxLen)
		}
		q.mu.Unlock()
		fx.run(q.vhost)
		return false, true, 0
	}
	stored := q.persist && msg.Properties.Persistent()
	// A message that cannot be delivered at once (others are ready before
	// it) to a queue at its backlog limit: an MQTT session's QoS 0
	// messages are dropped, as Mosquitto does, unknown to the publisher;
	// persistent ones wait on disk if the queue is stored, else in memory,
	// where the memory limit bounds them. Under the memory alarm a queue
	// holding more than its share of the limit in messages that live only
	// in memory refuses more, and the publisher is told (nack, PUBACK
	// 0x97): they are never held without bound.
	backlogFull := q.ready > 0 && q.backlogFullLocked(int64(msg.Size()))
	drop := backlogFull && (q.backlog.DropAll || !msg.Properties.Persistent())
	if drop || (q.ready > 0 && !stored && q.vhost.mem.transientShareExceeded(q.transient)) {
		q.discarded++
		if backlogFull {
			q.vhost.countDrop(DropBacklog, false)
		} else {
			q.vhost.countDrop(DropMemory, false)
		}
		q.mu.Unlock()
		return drop, !drop, 0
	}
	ttl := time.Duration(-1)
	if q.cfg.hasMessageTTL {
		ttl = q.cfg.messageTTL
	}
	if msgTTL >= 0 && (ttl < 0 || msgTTL < ttl) {
		ttl = msgTTL
	}
	var now int64
	if ttl >= 0 || q.expiring > 0 {
		now = q.now()
	}
	q.nextSeq++
	e := newEntry(msg, q.nextSeq)
	if ttl >= 0 {
		// TTL counts from the enqueue. A TTL of 0 gives a deadline of now:
		// the dispatch below may still deliver it (its cutoff is now-1), and
		// the expiry pass after it drops it ("deliver now or never").
		e.deadline = now + int64(ttl)
	}
	if stored {
		e.stored = true
		pos = q.vhost.store.Enqueue(q.vhost.name, q.name, e.seq, msg, e.deadline)
		// Over the budget or the backlog limit, a message that cannot be
		// delivered at once waits on disk only; the queue keeps its
		// 40-byte entry.
		if q.ready > 0 && (backlogFull || q.vhost.mem.over(int64(e.size))) {
			e.msg = nil
		}
	}
	q.pushLocked(e)
	q.counters.Published++
	q.dispatchLocked(&fx, now-1)
	if q.expiring > 0 {
		q.expireLocked(&fx, now)
		q.armTTLLocked(now)
	}
	if q.cfg.overflow == dropHead {
		for q.ready > 0 && q.overLimitLocked() {
			q.dropLocked(&fx, q.popLocked(q.topLevel()), reasonMaxLen)
			q.dropped++
		}
	}
	q.mu.Unlock()
	fx.run(q.vhost)
	return true, false, max(pos, fx.pos)
}

// expireLocked drops the expired heads of every priority level (RabbitMQ
// expires messages only at the head of the queue).
func (q *Queue) expireLocked(fx *effects, cutoff int64) {
	if q.expiring == 0 {
		return
	}
	for l := range q.levels {
		for q.levels[l].len() > 0 {
			if d := q.levels[l].front().deadline; d == 0 || d > cutoff {
				break
			}
			q.dropLocked(fx, q.popLocked(l), reasonExpired)
		}
	}
}

// deadLetterLocked queues msg for dead-lettering with reason when the queue
// has a dead-letter exchange; otherwise the message is simply dropped.
func (q *Queue) deadLetterLocked(fx *effects, msg *Message, reason string) {
	if !q.cfg.hasDLX {
		return
	}
	fx.dead = append(fx.dead, deadLetter{
		msg: msg, reason: reason, queue: q.name,
		dlx: q.cfg.dlx, dlrk: q.cfg.dlrk, hasDLRK: q.cfg.hasDLRK,
	})
}

// dispatchLocked hands ready messages to eligible consumers until either
// runs out. Heads whose deadline is at or before cutoff are expired instead
// of delivered.
func (q *Queue) dispatchLocked(fx *effects, cutoff int64) {
	for q.ready > 0 && len(q.consumers) > 0 {
		level := q.topLevel()
		head := q.levels[level].front()
		if head.deadline != 0 && head.deadline <= cutoff {
			q.dropLocked(fx, q.popLocked(level), reasonExpired)
			continue
		}
		c := q.pickLocked()
		if c == nil {
			return
		}
		if head.msg == nil && q.pageInLocked(fx, level) > 0 {
			// The head could not be read and was dropped: give back the
			// credit taken for it, and look at the new head.
			if !c.noAck && c.shared != nil {
				fx.kick = c.shared.release(1, q, fx.kick)
			}
			continue
		}
		msg := head.msg
		tag := q.nextTag + 1
		if !c.sink.Deliver(Delivery{Queue: q, Consumer: c, Msg: msg, Seq: tag, Redelivered: head.redelivered, Position: head.seq}) {
			c.blocked = true
			if !c.noAck && c.shared != nil {
				fx.kick = c.shared.release(1, q, fx.kick)
			}
			continue
		}
		q.nextTag = tag
		e := q.popLocked(level)
		if c.noAck {
			q.counters.DeliveredNoAck++
		} else {
			q.counters.Delivered++
		}
		if e.redelivered {
			q.counters.Redelivered++
		}
		q.deliveredLocked(fx, &e, c.noAck)
		if !c.noAck {
			c.unacked++
			q.unacked[tag] = unackedEntry{e: e, c: c}
		}
	}
}

// deliveredLocked tells the store that a stored entry was handed out:
// settled at once if noAck, otherwise to be redelivered after a restart.
func (q *Queue) deliveredLocked(fx *effects, e *entry, noAck bool) {
	switch {
	case !e.stored:
	case noAck:
		q.forgetLocked(e, fx)
	default:
		q.vhost.store.Delivered(q.vhost.name, q.name, e.seq)
	}
}

// pickLocked chooses the consumer for the next message and takes its shared
// credit: the single active consumer if the queue has one, else the first
// eligible consumer of the highest priority level, round-robin in the level.
func (q *Queue) pickLocked() *Consumer {
	if q.cfg.singleActive {
		if c := q.consumers[0]; q.eligibleLocked(c) {
			return c
		}
		return nil
	}
	for _, lv := range q.byPriority {
		n := len(lv.cs)
		for k := 0; k < n; k++ {
			i := lv.next + k
			if i >= n {
				i -= n
			}
			if c := lv.cs[i]; q.eligibleLocked(c) {
				lv.next = i + 1
				if lv.next == n {
					lv.next = 0
				}
				return c
			}
		}
	}
	return nil
}

// eligibleLocked reports whether c can take a message now, taking one unit
// of its shared Limit if so. NoAck consumers are limited by neither
// prefetch: their deliveries are settled at once.
func (q *Queue) eligibleLocked(c *Consumer) bool {
	if c.blocked || !c.hasCredit() {
		return false
	}
	return c.noAck || c.shared == nil || c.shared.acquireOrWait(c)
}

// armTTLLocked makes sure a timer fires when the earliest head deadline
// passes, so messages expire while the queue is idle. At most one timer is
// pending per queue; it is replaced only by an earlier one.
func (q *Queue) armTTLLocked(now int64) {
	if q.closed || q.deleted || q.expiring == 0 {
		return
	}
	var next int64
	for l := range q.levels {
		if q.levels[l].len() > 0 {
			if d := q.levels[l].front().deadline; d != 0 && (next == 0 || d < next) {
				next = d
			}
		}
	}
	if next == 0 || (q.ttlTimer != nil && q.ttlAt <= next) {
		return
	}
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
	}
	q.ttlGen++
	gen := q.ttlGen
	q.ttlAt = next
	q.ttlTimer = q.vhost.clock.AfterFunc(time.Duration(max(next-now, 0)), func() { q.ttlFired(gen) })
}

func (q *Queue) ttlFired(gen uint64) {
	var fx effects
	q.mu.Lock()
	if gen != q.ttlGen || q.deleted {
		q.mu.Unlock()
		return
	}
	q.ttlTimer = nil
	now := q.now()
	q.expireLocked(&fx, now)
	q.dispatchLocked(&fx, now)
	q.armTTLLocked(now)
	q.mu.Unlock()
	fx.run(q.vhost)
}

// armExpiresLocked starts the x-expires timer if the queue has one and it
// is not already pending.
func (q *Queue) armExpiresLocked(d time.Duration) {
	if q.cfg.expires == 0 || q.closed || q.deleted || q.expiresTimer != nil {
		return
	}
	q.expiresTimer = q.vhost.clock.AfterFunc(d, q.expiresFired)
}

// touchLocked records a use that restarts the x-expires interval.
func (q *Queue) touchLocked() {
	if q.cfg.expires != 0 {
		q.lastUsed = q.now()
		if q.persist {
			q.vhost.store.TouchQueue(q.vhost.name, q.name, q.lastUsed)
		}
	}
}

// unusedForLocked reports how long the queue has been unused, or -1 if it
// has consumers.
func (q *Queue) unusedForLocked(now int64) time.Duration {
	if len(q.consumers) > 0 {
		return -1
	}
	return time.Duration(now - q.lastUsed)
}

// expiresFired deletes the queue if it has been unused for x-expires, or
// re-arms for the remainder. A queue with consumers is left alone; its
// timer is armed again when the last consumer goes.
func (q *Queue) expiresFired() {
	q.mu.Lock()
	q.expiresTimer = nil
	if q.deleted || q.closed {
		q.mu.Unlock()
		return
	}
	idle := q.unusedForLocked(q.now())
	if idle < 0 {
		q.mu.Unlock()
		return
	}
	if idle < q.cfg.expires {
		q.armExpiresLocked(q.cfg.expires - idle)
		q.mu.Unlock()
		return
	}
	q.mu.Unlock()
	_, _ = q.vhost.deleteQueue(q, func() error {
		if idle := q.unusedForLocked(q.now()); idle < 0 || idle < q.cfg.expires {
			return errStillInUse
		}
		return nil
	})
}

// errStillInUse aborts an automatic deletion whose condition no longer holds
// once the locks are taken; it never reaches a client.
var errStillInUse = &Error{Code: CodePreconditionFailed, Text: "queue in use"}

// Consume registers a consumer and schedules dispatch. The first Deliver may
// happen on the caller's goroutine before Consume returns, so the channel
// must be ready to receive (and have sent consume-ok) before calling it. The
// caller has checked exclusive access (CheckAccess). Errors: 404 if the
// queue was deleted meanwhile; 403 ACCESS_REFUSED if an exclusive consumer
// is involved. sink is owned by the caller; the queue calls it as documented
// on DeliverySink until Cancel returns or Cancelled was called.
func (q *Queue) Consume(opts ConsumeOptions, sink DeliverySink) (*Consumer, error) {
	var fx effects
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return nil, q.notFound()
	}
	if q.exclusiveConsumer || (opts.Exclusive && len(q.consumers) > 0) {
		q.mu.Unlock()
		return nil, Errorf(CodeAccessRefused, "queue '%s' in vhost '%s' in exclusive use", q.name, q.vhost.name)
	}
	c := &Consumer{
		q: q, tag: opts.Tag, sink: sink, noAck: opts.NoAck, prefetch: opts.Prefetch,
		shared: opts.Shared, priority: opts.Priority, protocol: opts.Protocol,
	}
	q.consumers = append(q.consumers, c)
	q.addToLevelLocked(c)
	q.exclusiveConsumer = opts.Exclusive
	q.dispatchLocked(&fx, q.cutoffLocked())
	q.mu.Unlock()
	fx.run(q.vhost)
	return c, nil
}

func (q *Queue) addToLevelLocked(c *Consumer) {
	i, found := slices.BinarySearchFunc(q.byPriority, c.priority, func(lv *consumerLevel, p int32) int {
		switch {
		case lv.priority > p: // descending order
			return -1
		case lv.priority < p:
			return 1
		}
		return 0
	})
	if !found {
		q.byPriority = slices.Insert(q.byPriority, i, &consumerLevel{priority: c.priority})
	}
	q.byPriority[i].cs = append(q.byPriority[i].cs, c)
}

func (q *Queue) removeFromLevelLocked(c *Consumer) {
	for li, lv := range q.byPriority {
		if lv.priority != c.priority {
			continue
		}
		i := slices.Index(lv.cs, c)
		lv.cs = slices.Delete(lv.cs, i, i+1)
		if i < lv.next {
			lv.next--
		}
		if lv.next >= len(lv.cs) {
			lv.next = 0
		}
		if len(lv.cs) == 0 {
			q.byPriority = slices.Delete(q.byPriority, li, li+1)
		}
		return
	}
}

func (q *Queue) cancel(c *Consumer) {
	var fx effects
	q.mu.Lock()
	if c.cancelled {
		q.mu.Unlock()
		return
	}
	c.cancelled = true
	i := slices.Index(q.consumers, c)
	q.consumers = slices.Delete(q.consumers, i, i+1)
	q.removeFromLevelLocked(c)
	q.exclusiveConsumer = false // only an exclusive consumer can have set it, and it was alone
	last := len(q.consumers) == 0
	if last {
		q.touchLocked()
		q.armExpiresLocked(q.cfg.expires)
	}
	// With single-active-consumer the next registered consumer takes over
	// here; otherwise the remaining consumers may have room.
	q.dispatchLocked(&fx, q.cutoffLocked())
	q.mu.Unlock()
	fx.run(q.vhost)
	if last && q.autoDelete {
		_, _ = q.vhost.deleteQueue(q, func() error {
			if len(q.consumers) > 0 {
				return errStillInUse
			}
			return nil
		})
	}
}

func (q *Queue) resume(c *Consumer) {
	var fx effects
	q.mu.Lock()
	if c.cancelled || !c.blocked {
		q.mu.Unlock()
		return
	}
	c.blocked = false
	q.dispatchLocked(&fx, q.cutoffLocked())
	q.mu.Unlock()
	fx.run(q.vhost)
}

// kick dispatches after a Limit gained room.
func (q *Queue) kick() {
	var fx effects
	q.mu.Lock()
	if !q.deleted {
		q.dispatchLocked(&fx, q.cutoffLocked())
	}
	q.mu.Unlock()
	fx.run(q.vhost)
}

// Get is basic.get: it takes the message at the head, ignoring prefetch
// limits. ok is false when the queue is empty or deleted. Unless noAck, the
// delivery must be settled with Settle(nil, ...).
func (q *Queue) Get(noAck bool) (d Delivery, ok bool) {
	var fx effects
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return Delivery{}, false
	}
	q.touchLocked()
	now := q.cutoffLocked()
	q.expireLocked(&fx, now)
	for q.ready > 0 && !ok {
		level := q.topLevel()
		if q.levels[level].front().msg == nil && q.pageInLocked(&fx, level) > 0 {
			continue // the head could not be read and was dropped
		}
		e := q.popLocked(level)
		msg := e.msg
		q.nextTag++
		if noAck {
			q.counters.GotNoAck++
		} else {
			q.counters.Got++
		}
		if e.redelivered {
			q.counters.Redelivered++
		}
		q.deliveredLocked(&fx, &e, noAck)
		if !noAck {
			q.unacked[q.nextTag] = unackedEntry{e: e}
		}
		d, ok = Delivery{Queue: q, Msg: msg, Seq: q.nextTag, Redelivered: e.redelivered, Position: e.seq}, true
	}
	if ok {
		q.armTTLLocked(now)
	} else {
		q.counters.GetEmpty++
	}
	q.mu.Unlock()
	fx.run(q.vhost)
	return d, ok
}

// Settle ends deliveries of this queue (seqs from Delivery.Seq) with one
// outcome. c is the Delivery.Consumer (nil for basic.get); the consumer
// recorded at delivery is what is credited, so a mismatch cannot corrupt
// prefetch accounting. Settling releases the consumer's prefetch and Shared
// credit and dispatches again, on the caller's goroutine (consumers of other
// queues waiting on the same Limit included). Unknown or already settled
// seqs, and seqs of a deleted queue, are ignored. The caller must hold no
// queue lock.
func (q *Queue) Settle(c *Consumer, seqs []uint64, o Outcome) {
	var fx effects
	var requeueBuf [16]entry
	requeue := requeueBuf[:0]
	var lim *Limit // the common case: one channel's Limit
	var limN int64
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return
	}
	for _, seq := range seqs {
		u, ok := q.unacked[seq]
		if !ok {
			continue
		}
		delete(q.unacked, seq)
		if u.c != nil {
			u.c.unacked--
			if l := u.c.shared; l != nil {
				if l != lim {
					if lim != nil {
						fx.kick = lim.release(limN, q, fx.kick)
					}
					lim, limN = l, 0
				}
				limN++
			}
		}
		switch o {
		case Ack:
			q.counters.Acked++
			q.forgetLocked(&u.e, &fx)
		case Requeue:
			u.e.redelivered = true
			requeue = append(requeue, u.e)
		case Reject:
			q.dropLocked(&fx, u.e, reasonRejected)
		}
	}
	if lim != nil {
		fx.kick = lim.release(limN, q, fx.kick)
	}
	// Newest first, so that each goes to the front in O(1) when they are
	// all older than the ready messages, which is the usual case.
	slices.SortFunc(requeue, func(a, b entry) int {
		switch {
		case a.seq > b.seq:
			return -1
		case a.seq < b.seq:
			return 1
		}
		return 0
	})
	for _, e := range requeue {
		q.pushLocked(e)
	}
	now := q.cutoffLocked()
	q.dispatchLocked(&fx, now)
	q.armTTLLocked(now)
	q.mu.Unlock()
	fx.run(q.vhost)
}

// markDeletedLocked empties a queue being deleted and returns the number of
// ready messages dropped and the consumers to notify. Shared credit held by
// its unacked deliveries is returned at once, since settling them later is a
// no-op. The vhost lock and q.mu are held.
func (q *Queue) markDeletedLocked(fx *effects) (purged uint32, consumers []*Consumer) {
	q.deleted = true
	purged = uint32(q.ready)
	consumers = q.consumers
	for _, c := range consumers {
		c.cancelled = true
	}
	q.consumers, q.byPriority = nil, nil
	// The store forgets the queue's messages all at once (DeleteQueue);
	// popping only keeps the resident-memory count right.
	for l := range q.levels {
		for q.levels[l].len() > 0 {
			q.popLocked(l)
		}
	}
	for _, u := range q.unacked {
		if u.c != nil {
			u.c.unacked--
			if u.c.shared != nil {
				fx.kick = u.c.shared.release(1, q, fx.kick)
			}
		}
	}
	q.unacked = nil
	q.stopTimersLocked()
	return purged, consumers
}

func (q *Queue) stopTimersLocked() {
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
		q.ttlTimer = nil
	}
	q.ttlGen++
	if q.expiresTimer != nil {
		q.expiresTimer.Stop()
		q.expiresTimer = nil
	}
}

// purgeLocked drops every ready message (not dead-lettered, as in RabbitMQ).
func (q *Queue) purgeLocked(fx *effects) uint32 {
	n := uint32(q.ready)
	for l := range q.levels {
		for q.levels[l].len() > 0 {
			e := q.popLocked(l)
			q.forgetLocked(&e, fx)
		}
	}
	return n
}
