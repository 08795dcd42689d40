package amqp

import (
	"slices"

	"github.com/ferrymq/ferrymq/core"
)

// pending is one delivery awaiting ack, nack or reject.
type pending struct {
	tag  uint64
	q    *core.Queue
	cons *core.Consumer // nil for basic.get
	seq  uint64         // core's Delivery.Seq
}

// ledger is a channel's unsettled deliveries in delivery-tag order. Tags
// are handed out in increasing order, so appending keeps it sorted and the
// usual in-order ack removes from the front in O(1); an ack out of order
// leaves a tombstone (q == nil) that the front skips later.
type ledger struct {
	items []pending
	head  int // items[:head] are gone
	live  int // entries that are not tombstones
}

func (l *ledger) add(p pending) {
	l.items = append(l.items, p)
	l.live++
}

func (l *ledger) len() int { return l.live }

// find returns the index of tag, or -1.
func (l *ledger) find(tag uint64) int {
	rest := l.items[l.head:]
	i, ok := slices.BinarySearchFunc(rest, tag, func(p pending, t uint64) int {
		switch {
		case p.tag < t:
			return -1
		case p.tag > t:
			return 1
		}
		return 0
	})
	if !ok || rest[i].q == nil {
		return -1
	}
	return l.head + i
}

// take removes and appends to out the delivery tag (multiple=false) or
// every delivery up to and including tag (multiple=true; tag 0 means all).
// ok is false when tag is not outstanding, which RabbitMQ answers with 406
// PRECONDITION_FAILED "unknown delivery tag"; nothing is removed then.
func (l *ledger) take(tag uint64, multiple bool, out []pending) ([]pending, bool) {
	if multiple {
		end := len(l.items)
		if tag != 0 {
			i := l.find(tag)
			if i < 0 {
				return out, false
			}
			end = i + 1
		}
		for i := l.head; i < end; i++ {
			if l.items[i].q != nil {
				out = append(out, l.items[i])
				l.items[i].q = nil
				l.live--
			}
		}
		l.compact()
		return out, true
	}
	i := l.find(tag)
	if i < 0 {
		return out, false
	}
	out = append(out, l.items[i])
	l.items[i].q = nil
	l.live--
	l.compact()
	return out, true
}

// takeAll removes and returns every outstanding delivery.
func (l *ledger) takeAll(out []pending) []pending {
	out, _ = l.take(0, true, out)
	return out
}

// restore puts deliveries back (tx.rollback of acks), keeping tag order.
func (l *ledger) restore(ps []pending) {
	if len(ps) == 0 {
		return
	}
	live := l.items[l.head:]
	merged := make([]pending, 0, l.live+len(ps))
	for _, p := range live {
		if p.q != nil {
			merged = append(merged, p)
		}
	}
	merged = append(merged, ps...)
	slices.SortFunc(merged, func(a, b pending) int {
		switch {
		case a.tag < b.tag:
			return -1
		case a.tag > b.tag:
			return 1
		}
		return 0
	})
	l.items, l.head, l.live = merged, 0, len(merged)
}

// compact drops tombstones from the front and reclaims space once the dead
// prefix is at least half the slice.
func (l *ledger) compact() {
	for l.head < len(l.items) && l.items[l.head].q == nil {
		l.head++
	}
	if l.head == len(l.items) {
		l.items, l.head = l.items[:0], 0
		return
	}
	if l.head >= 1024 && l.head*2 >= len(l.items) {
		n := copy(l.items, l.items[l.head:])
		clear(l.items[n:])
		l.items, l.head = l.items[:n], 0
	}
}

// settle groups ps by queue and consumer and settles each group with o.
// It must be called without the channel lock: core dispatches inline.
func settle(ps []pending, o core.Outcome) {
	var seqs []uint64
	for i := 0; i < len(ps); {
		q, cons := ps[i].q, ps[i].cons
		seqs = seqs[:0]
		j := i
		for ; j < len(ps) && ps[j].q == q && ps[j].cons == cons; j++ {
			seqs = append(seqs, ps[j].seq)
		}
		q.Settle(cons, seqs, o)
		i = j
	}
}
