package core

import (
	"slices"
	"sync/atomic"
)

// Message counters. They are the figures behind RabbitMQ's message_stats
// (publish, deliver_get, ack, redeliver) and ferrymq's Prometheus metrics,
// and they cost the message path nothing it does not already pay for:
//
//   - a queue's counters are plain fields written under the queue's lock,
//     which every enqueue, delivery and settlement holds anyway, and read
//     under it (Queue.Counters);
//   - a vhost's delivery, get and ack figures are the sums of its queues'
//     counters plus those of its deleted queues, folded in at deletion
//     under the topology lock, so nothing per vhost is written per
//     delivery;
//   - the only shared write per message is VHost.Publish's one atomic add
//     of published; unroutable and dropped messages add to vhost atomics
//     on those (rare) paths only.
//
// Counters only grow, from broker start (they are not stored). Summing
// them for a vhost copies its list of queues under the topology lock held
// for reading, then takes each queue's lock in turn without it: ~1 ms per
// 100,000 queues, during which publishers are never held up.

// MessageCounters are message counts of a queue since it was created (or
// recovered at start-up), or of all queues of a vhost (VHostCounters.Queues).
type MessageCounters struct {
	// Published counts messages enqueued: routed here and accepted,
	// dead-lettered here or replayed as MQTT retained messages
	// (RabbitMQ's queue "publish").
	Published uint64
	// Delivered counts deliveries to consumers awaiting an ack (RabbitMQ's
	// "deliver"), DeliveredNoAck those to consumers in auto-ack mode
	// ("deliver_no_ack").
	Delivered, DeliveredNoAck uint64
	// Got counts messages taken by basic.get awaiting an ack ("get"),
	// GotNoAck those taken with no-ack ("get_no_ack"), GetEmpty the
	// basic.get that found the queue empty ("get_empty").
	Got, GotNoAck, GetEmpty uint64
	// Acked counts deliveries settled with Ack ("ack").
	Acked uint64
	// Redelivered counts deliveries and gets of messages delivered before
	// ("redeliver"), a subset of DeliverGet.
	Redelivered uint64
}

// DeliverGet is RabbitMQ's "deliver_get": every message handed out, by
// consumers and basic.get, with or without acks.
func (c MessageCounters) DeliverGet() uint64 {
	return c.Delivered + c.DeliveredNoAck + c.Got + c.GotNoAck
}

func (c *MessageCounters) add(o *MessageCounters) {
	c.Published += o.Published
	c.Delivered += o.Delivered
	c.DeliveredNoAck += o.DeliveredNoAck
	c.Got += o.Got
	c.GotNoAck += o.GotNoAck
	c.GetEmpty += o.GetEmpty
	c.Acked += o.Acked
	c.Redelivered += o.Redelivered
}

// DropReason says why a message left a queue, or the broker, without
// being delivered or routed.
type DropReason uint8

// Why messages are dropped or dead-lettered. Expired, MaxLen and Rejected
// are also the x-death reasons when the queue has a dead-letter exchange.
const (
	// DropExpired: its TTL passed while it waited in a queue.
	DropExpired DropReason = iota
	// DropMaxLen: x-overflow drop-head pushed it out of a full queue.
	DropMaxLen
	// DropRejected: a consumer rejected (nacked) it without requeueing.
	DropRejected
	// DropOverflow: x-overflow reject-publish (or reject-publish-dlx)
	// refused it at the door; the publisher got a nack.
	DropOverflow
	// DropDeadLetterUnroutable: it was dead-lettered, but its dead-letter
	// exchange does not exist or routed it to no queue.
	DropDeadLetterUnroutable
	// DropDeadLetterCycle: dead-lettering would have sent it back to a
	// queue it died in, for a reason other than rejection.
	DropDeadLetterCycle
	// DropUnreadable: the store could not read back its paged-out body.
	DropUnreadable
	// DropBacklog: a queue at its backlog limit (an MQTT session's,
	// Queue.SetBacklogLimit) dropped or refused it.
	DropBacklog
	// DropMemory: under the memory alarm, a queue holding more than its
	// share of transient messages refused it.
	DropMemory
	// NumDropReasons is the number of reasons, for arrays indexed by them.
	NumDropReasons
)

var dropReasonNames = [NumDropReasons]string{
	"expired", "maxlen", "rejected", "overflow", "dead_letter_unroutable", "dead_letter_cycle", "unreadable",
	"backlog", "memory",
}

// String returns the reason's label value, as in ferrymq_messages_dropped_total{reason="expired"}.
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropReasonNames[r]
	}
	return "unknown"
}

// VHostCounters are the message counts of one vhost since broker start.
type VHostCounters struct {
	VHost string
	// Published counts messages clients published (VHost.Publish that
	// got past the exchange and expiration checks), whether routed or
	// not; RabbitMQ's vhost and overview "publish".
	Published uint64
	// Unroutable counts those of them that reached no queue (RabbitMQ's
	// unroutable_dropped plus unroutable_returned: core does not know
	// the mandatory flag). A publish dropped by a publish hook (a
	// bridge's loop guard) is not counted here.
	Unroutable uint64
	// Queues sums the counters of the vhost's queues, deleted ones
	// included: deliveries, gets, acks and redeliveries of the vhost.
	Queues MessageCounters
	// Dropped counts messages lost, by reason; a message that went to a
	// dead-letter exchange instead is counted in DeadLettered.
	Dropped [NumDropReasons]uint64
	// DeadLettered counts messages republished to a dead-letter exchange,
	// by reason (DropExpired, DropMaxLen, DropRejected; DropMaxLen also
	// for reject-publish-dlx).
	DeadLettered [NumDropReasons]uint64
	// Totals are the vhost's queues now, summed.
	Totals QueueTotals
}

// QueueTotals sum the current state of a vhost's queues (RabbitMQ's
// queue_totals and object_totals).
type QueueTotals struct {
	Queues     int
	Ready      int   // ready messages
	ReadyBytes int64 // their body bytes
	Unacked    int   // delivered, not yet settled
	Consumers  int
	// ConsumersBy counts the consumers by ConsumeOptions.Protocol ("" for
	// those that gave none).
	ConsumersBy map[string]int
}

// vhostCounters are a vhost's own counters. published sits right after
// VHost.mu, whose reader count every publish already writes (the exchange
// lookup), so its add usually lands on a cache line the publisher holds.
type vhostCounters struct {
	published    atomic.Uint64
	unroutable   atomic.Uint64
	dropped      [NumDropReasons]atomic.Uint64
	deadLettered [NumDropReasons]atomic.Uint64
	// A deleted queue's counters are final. It goes to graveyard, and
	// the graveyard, when full, into retired, their sum; both guarded by
	// VHost.mu. A reader copies both and the live queues under VHost.mu
	// for reading, then reads the queues without it: a queue deleted
	// meanwhile is in its copy of the live queues and not in its copy of
	// the graveyard, so it is counted once, and no reader holds the
	// topology lock (which a waiting writer would turn into a stall for
	// every publisher) across a walk of 100,000 queues.
	retired   MessageCounters
	graveyard []*Queue
}

// graveyardMax is how many deleted queues wait before being summed.
const graveyardMax = 64

// buryLocked records the deletion of q, whose counters are final. VHost.mu
// is held for writing.
func (v *VHost) buryLocked(q *Queue) {
	st := &v.stats
	if len(st.graveyard) >= graveyardMax {
		// Their last writes came before their deletion, under the
		// vhost lock held now: no queue lock needed to read them.
		for _, g := range st.graveyard {
			st.retired.add(&g.counters)
		}
		clear(st.graveyard)
		st.graveyard = st.graveyard[:0]
	}
	st.graveyard = append(st.graveyard, q)
}

// countersSnapshot copies, under the topology read lock, what a reader
// walks afterwards without it: the live queues, the deleted ones not yet
// summed, and the sum of the others.
func (v *VHost) countersSnapshot() (live, dead []*Queue, retired MessageCounters) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	live = make([]*Queue, 0, len(v.queues))
	for _, q := range v.queues {
		live = append(live, q)
	}
	return live, slices.Clone(v.stats.graveyard), v.stats.retired
}

// countDrop records a message lost or dead-lettered for reason.
func (v *VHost) countDrop(reason DropReason, deadLettered bool) {
	if deadLettered {
		v.stats.deadLettered[reason].Add(1)
		return
	}
	v.stats.dropped[reason].Add(1)
}

// dropReasonOf maps an x-death reason to its DropReason.
func dropReasonOf(reason string) DropReason {
	switch reason {
	case reasonExpired:
		return DropExpired
	case reasonMaxLen:
		return DropMaxLen
	}
	return DropRejected
}

// Counters returns the queue's message counters.
func (q *Queue) Counters() MessageCounters {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.counters
}

// Counters returns the vhost's message counters. It copies the list of
// queues under the topology lock held for reading, then takes each queue's
// lock in turn; a queue deleted meanwhile is counted exactly once, and
// the sums never go backwards from one call to the next.
func (v *VHost) Counters() VHostCounters {
	c := VHostCounters{
		VHost:      v.name,
		Published:  v.stats.published.Load(),
		Unroutable: v.stats.unroutable.Load(),
	}
	for r := range NumDropReasons {
		c.Dropped[r] = v.stats.dropped[r].Load()
		c.DeadLettered[r] = v.stats.deadLettered[r].Load()
	}
	live, dead, retired := v.countersSnapshot()
	c.Queues = retired
	for _, q := range dead {
		q.mu.Lock()
		c.Queues.add(&q.counters)
		q.mu.Unlock()
	}
	t := &c.Totals
	for _, q := range live {
		q.mu.Lock()
		// Deleted since the snapshot: counted here (it is not in dead),
		// not in the totals.
		c.Queues.add(&q.counters)
		if q.deleted {
			q.mu.Unlock()
			continue
		}
		t.Queues++
		t.Ready += q.ready
		t.ReadyBytes += q.readyBytes
		t.Unacked += len(q.unacked)
		t.Consumers += len(q.consumers)
		for _, cons := range q.consumers {
			if t.ConsumersBy == nil {
				t.ConsumersBy = make(map[string]int, 3)
			}
			t.ConsumersBy[cons.protocol]++
		}
		q.mu.Unlock()
	}
	return c
}

// vhostList returns the vhosts, in no particular order.
func (b *Broker) vhostList() []*VHost {
	b.mu.RLock()
	defer b.mu.RUnlock()
	vs := make([]*VHost, 0, len(b.vhosts))
	for _, v := range b.vhosts {
		vs = append(vs, v)
	}
	return vs
}

// VHostCounters returns the counters of every vhost, in no particular
// order.
func (b *Broker) VHostCounters() []VHostCounters {
	vs := b.vhostList()
	out := make([]VHostCounters, 0, len(vs))
	for _, v := range vs {
		out = append(out, v.Counters())
	}
	return out
}

// QueueFigures are one queue's figures for per-object metrics: its current
// state and its counters, read under one lock. (QueueSnapshot, in
// snapshot.go, is the fuller description for the management API.)
type QueueFigures struct {
	VHost, Name string
	Durable     bool
	QueueStats
	Counters MessageCounters
}

// EachQueue calls fn with the figures of every queue of the vhost, in no
// particular order. It holds no lock while fn runs: the list of queues is
// copied first, and each queue's lock is held while its figures are read;
// a queue deleted meanwhile is left out.
func (v *VHost) EachQueue(fn func(QueueFigures)) {
	live, _, _ := v.countersSnapshot()
	for _, q := range live {
		q.mu.Lock()
		if q.deleted {
			q.mu.Unlock()
			continue
		}
		s := QueueFigures{
			VHost: v.name, Name: q.name, Durable: q.durable,
			QueueStats: q.statsLocked(),
			Counters:   q.counters,
		}
		q.mu.Unlock()
		fn(s)
	}
}

// ProtocolConns count the open client connections of one protocol
// (ConnInfo.Protocol) and their channels.
type ProtocolConns struct {
	Protocol              string
	Connections, Channels int
}

// ConnectionCounts counts the open connections and channels by protocol,
// in no particular order, without copying the registry.
func (b *Broker) ConnectionCounts() []ProtocolConns {
	b.connMu.Lock()
	defer b.connMu.Unlock()
	var out []ProtocolConns
	for a := range b.conns {
		i := 0
		for i < len(out) && out[i].Protocol != a.info.Protocol {
			i++
		}
		if i == len(out) {
			out = append(out, ProtocolConns{Protocol: a.info.Protocol})
		}
		out[i].Connections++
		out[i].Channels += a.channels
	}
	return out
}

// QueueFigures returns the figures of every queue of every vhost, in no
// particular order (see VHost.EachQueue).
func (b *Broker) QueueFigures() []QueueFigures {
	var out []QueueFigures
	for _, v := range b.vhostList() {
		v.EachQueue(func(f QueueFigures) { out = append(out, f) })
	}
	return out
}
