package core

// entry is a ready or unacked message of one queue.
type entry struct {
	// msg is shared and immutable. It is nil while the message is paged
	// out: stored, and enqueued when resident messages were over the
	// memory budget; Store.LoadBatch reads it back for delivery, with the
	// paged-out entries behind it (Queue.pageInLocked).
	msg         *Message
	id          uint64 // msg.ID
	seq         uint64 // enqueue order within the queue; requeue restores it
	deadline    int64  // Clock time (UnixNano) at which it expires; 0 = never
	size        int32  // body bytes, known without the body
	prio        uint8  // the message's priority property
	redelivered bool
	stored      bool // in the Store: a persistent message in a durable queue
}

func newEntry(msg *Message, seq uint64) entry {
	return entry{msg: msg, id: msg.ID, seq: seq, size: int32(len(msg.Body)), prio: msg.Properties.Priority}
}

// deque is a ring buffer of entries ordered by seq. Pushing and popping at
// either end are O(1) amortised; nothing shifts on the hot path. Its
// capacity is zero or a power of two so that indexing is a mask.
type deque struct {
	buf  []entry
	head int
	n    int
}

func (d *deque) len() int { return d.n }

func (d *deque) at(i int) *entry { return &d.buf[(d.head+i)&(len(d.buf)-1)] }

func (d *deque) front() *entry { return d.at(0) }

func (d *deque) back() *entry { return d.at(d.n - 1) }

func (d *deque) grow() {
	c := 2 * len(d.buf)
	if c == 0 {
		c = 8
	}
	d.resize(c)
}

// resize copies the entries, in order, into a buffer of capacity c (a power
// of two not smaller than d.n).
func (d *deque) resize(c int) {
	buf := make([]entry, c)
	for i := 0; i < d.n; i++ {
		buf[i] = *d.at(i)
	}
	d.buf, d.head = buf, 0
}

func (d *deque) pushBack(e entry) {
	if d.n == len(d.buf) {
		d.grow()
	}
	*d.at(d.n) = e
	d.n++
}

func (d *deque) pushFront(e entry) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.head = (d.head - 1) & (len(d.buf) - 1)
	d.buf[d.head] = e
	d.n++
}

func (d *deque) popFront() entry {
	p := d.front()
	e := *p
	*p = entry{} // release the message reference
	d.head = (d.head + 1) & (len(d.buf) - 1)
	d.n--
	// Give memory back after a burst: a queue that once held a million
	// messages should not keep that buffer while it holds ten.
	if c := len(d.buf); c > 64 && d.n < c/8 {
		d.resize(c / 4)
	}
	return e
}

// insert puts e at the position its seq orders it to. Requeued entries are
// usually older than everything ready (front) and, after a consumer's
// out-of-order acks, occasionally in between, which costs a shift.
func (d *deque) insert(e entry) {
	switch {
	case d.n == 0 || e.seq < d.front().seq:
		d.pushFront(e)
		return
	case e.seq > d.back().seq:
		d.pushBack(e)
		return
	}
	lo, hi := 0, d.n // first index whose seq is greater than e.seq
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if d.at(m).seq < e.seq {
			lo = m + 1
		} else {
			hi = m
		}
	}
	d.pushBack(e)
	for i := d.n - 1; i > lo; i-- {
		*d.at(i) = *d.at(i - 1)
	}
	*d.at(lo) = e
}

// clear drops every entry.
func (d *deque) clear() { *d = deque{} }
