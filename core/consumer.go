package core

// ConsumeOptions describe a basic.consume.
type ConsumeOptions struct {
	Tag       string // required (the channel generates amq.ctag-... if the client sent "")
	NoAck     bool   // deliveries count as settled when handed to the sink
	Exclusive bool   // no other consumer may exist on the queue at the same time
	Priority  int32  // x-priority; higher first, round-robin within a level
	Prefetch  uint32 // per-consumer unacked limit (basic.qos global=false); 0 = none
	Shared    *Limit // per-channel unacked limit (basic.qos global=true); nil = none
	// Owner and Arguments describe the request; core reads neither. The
	// caller checks exclusive-queue access with Queue.CheckAccess before
	// Consume, and decodes x-priority into Priority.
	Owner     uint64
	Arguments Table
	// Protocol says who consumes ("amqp", "mqtt", "bridge"); core only
	// counts consumers by it (VHostCounters.Totals).
	Protocol string
}

// DeliverySink receives a consumer's deliveries. The channel implements it.
type DeliverySink interface {
	// Deliver hands one message to the consumer. It is called with the queue's
	// lock held, from any goroutine: it must not block and must not call into
	// the queue. It returns false when the consumer cannot take the message now
	// (its connection's Outbox is full); the queue keeps the message,
	// stops delivering to that consumer and waits for Consumer.Resume.
	Deliver(d Delivery) bool
	// Cancelled reports that the queue was deleted (or the consumer otherwise
	// ended by the server). Called without the queue lock.
	Cancelled(c *Consumer)
}

// Delivery is one message handed to a consumer or returned by Queue.Get.
// Msg is shared and immutable.
type Delivery struct {
	Queue       *Queue
	Consumer    *Consumer // nil for basic.get
	Msg         *Message
	Seq         uint64 // identifies this delivery to Queue.Settle; unique per queue
	Redelivered bool
	// Position is the message's place in its queue's order: the same for
	// every delivery of it, before and after a restart (a stored message
	// keeps it), unlike Seq. The MQTT listener derives packet ids from it.
	Position uint64
}

// Consumer is one basic.consume registration on a queue. Its mutable state
// is guarded by its queue's lock, except waiting (guarded by shared.mu).
type Consumer struct {
	q        *Queue
	tag      string
	sink     DeliverySink
	noAck    bool
	prefetch uint32
	shared   *Limit
	priority int32
	protocol string

	unacked   uint32 // deliveries not yet settled (guarded by q.mu)
	blocked   bool   // the sink refused a delivery; waits for Resume (q.mu)
	cancelled bool   // (q.mu)
	waiting   bool   // registered in shared.waiters (shared.mu)
}

// Tag returns the consumer tag.
func (c *Consumer) Tag() string { return c.tag }

// Queue returns the queue consumed from.
func (c *Consumer) Queue() *Queue { return c.q }

// Cancel stops deliveries to c (basic.cancel, channel or connection close).
// Deliveries not yet settled stay outstanding until Queue.Settle. If c was
// the last consumer of an auto-delete queue, the queue is deleted. Calling
// Cancel again, or after the queue was deleted, does nothing. Must not be
// called from DeliverySink.Deliver.
func (c *Consumer) Cancel() { c.q.cancel(c) }

// Resume tells the queue that the sink can take deliveries again after
// Deliver returned false, and dispatches to it on the caller's goroutine.
// Must not be called from DeliverySink.Deliver.
func (c *Consumer) Resume() { c.q.resume(c) }

// hasCredit reports whether c's own prefetch allows one more delivery.
// q.mu is held.
func (c *Consumer) hasCredit() bool {
	return c.noAck || c.prefetch == 0 || c.unacked < c.prefetch
}

// consumerLevel is the set of consumers sharing one x-priority, served
// round-robin.
type consumerLevel struct {
	priority int32
	cs       []*Consumer
	next     int // index of the consumer to try first
}
