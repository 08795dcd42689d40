package core

// Outbox is a connection's output on its way to the socket, and the
// consumers whose deliveries it refused: the sink side of a queue's
// backpressure. Past a high-water mark a DeliverySink refuses (Deliver
// returns false), the queue keeps its messages, and the refused consumers
// are resumed once the writer has made room, so a client that does not
// read costs at most about the mark, never its queues' contents.
//
// The protocols share it and keep their own goroutine models (AMQP: one
// writer per connection; MQTT: a writer started on demand, or a direct
// write by the delivering goroutine). An Outbox is not safe for concurrent
// use: its owner guards it with the lock its sinks' Deliver takes, and
// writes what Take returns without that lock.
type Outbox struct {
	// Buf is the output not yet taken by the writer; encoders append
	// to it.
	Buf     []byte
	spare   []byte
	refused []*Consumer
	// taken is the length of the buffer the writer took and has not
	// given back: output too, until it is written.
	taken int
}

const (
	// outboxHighWater is where deliveries stop, counting what is being
	// written: about two writes' worth for a client that keeps up, little
	// memory for one that does not.
	outboxHighWater = 2 << 20
	// outboxMaxSpare is the largest buffer kept for reuse after a write:
	// a burst of big messages should not pin its memory forever.
	outboxMaxSpare = 4 << 20
)

// Full reports whether the output not yet written, Buf and what the
// writer took, is past the high-water mark: deliveries are refused until
// the writer has written enough of it, so a client that stopped reading
// holds at most the mark and one message, whatever its queues hold.
func (o *Outbox) Full() bool { return len(o.Buf)+o.taken >= outboxHighWater }

// Pending is the output not yet written: Buf and what the writer took.
func (o *Outbox) Pending() int { return len(o.Buf) + o.taken }

// Refuse records that c was refused a delivery, for whatever reason the
// owner had (a full Buf, a protocol's in-flight limit), so that it is
// resumed when there is room again.
func (o *Outbox) Refuse(c *Consumer) { o.refused = append(o.refused, c) }

// HasRefused reports whether consumers wait to be resumed.
func (o *Outbox) HasRefused() bool { return len(o.refused) > 0 }

// TakeRefused returns the consumers refused since the last call. The owner
// resumes them (Consumer.Resume) without its lock, which Deliver takes.
func (o *Outbox) TakeRefused() []*Consumer {
	r := o.refused
	o.refused = nil
	return r
}

// Take hands Buf to the writer, to be written without the owner's lock;
// Buf starts over in the spare buffer. The writer gives it back with
// Written.
func (o *Outbox) Take() []byte {
	buf := o.Buf
	o.Buf, o.spare = o.spare[:0], nil
	o.taken += len(buf)
	return buf
}

// Written takes back a buffer from Take once it is written, for reuse.
func (o *Outbox) Written(buf []byte) {
	o.taken = max(o.taken-len(buf), 0)
	if cap(buf) <= outboxMaxSpare {
		o.spare = buf[:0]
	}
}

// Reset drops the output and the refused consumers: the connection is
// going away and its consumers with it.
func (o *Outbox) Reset() {
	o.Buf, o.spare, o.refused, o.taken = nil, nil, nil, 0
}
