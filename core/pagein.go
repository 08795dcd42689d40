package core

import "sync"

// Paging in: a queue whose head was paged out (stored, body not in memory)
// reads it back together with the paged-out entries behind it, in one
// Store.LoadBatch, so that draining a backlog costs one store read per
// window instead of one per message (a bridge after an outage, an MQTT
// session coming back).
const (
	// pageInMax bounds the entries of one window.
	pageInMax = 256
	// pageInMaxBytes bounds a window's body bytes (its first entry is
	// always read, however large): a window of 16 MiB messages must not
	// take memory.
	pageInMaxBytes = 1 << 20
	// pageInMinBytes is what a window may hold when resident bodies are at
	// or over the memory budget, so that small messages are still read in
	// batches: one delivering queue overshoots the budget by at most this
	// much (or by its one head message).
	pageInMinBytes = 64 << 10
)

// pageInBuf is the scratch of one LoadBatch; pooled, since a queue pages
// in rarely compared with how many queues there are.
type pageInBuf struct {
	ids  [pageInMax]uint64
	msgs [pageInMax]*Message
	errs [pageInMax]error
}

var pageInPool = sync.Pool{New: func() any { return new(pageInBuf) }}

func putPageInBuf(b *pageInBuf, n int) {
	clear(b.msgs[:n]) // hold no message or error past the call
	clear(b.errs[:n])
	pageInPool.Put(b)
}

// pageInBytesLocked is the body bytes a window may hold: what is left of
// the memory budget, between pageInMinBytes and pageInMaxBytes.
func (q *Queue) pageInBytesLocked() int64 {
	m := q.vhost.mem
	if m.limit <= 0 {
		return pageInMaxBytes
	}
	return min(max(m.limit-m.resident.Load(), pageInMinBytes), pageInMaxBytes)
}

// pageInLocked reads the paged-out head of level back from the store, with
// the paged-out entries that directly follow it (up to pageInMax entries
// and pageInBytesLocked bytes), in one Store.LoadBatch. Each entry read
// gets its message and counts as resident, exactly as if it had been
// enqueued resident: it stays so until delivered, and popLocked uncounts
// it whichever way it leaves (delivery, expiry, purge, deletion).
//
// Entries the store cannot read at the head of the level are dropped
// (unreadableLocked, then forgotten) and their number returned; the caller
// must then look at the level again. An unreadable entry further back
// stays paged out: it is read again, and dropped, once it is the head, so
// that it is counted once, and only if no purge or expiry took it first.
func (q *Queue) pageInLocked(fx *effects, level int) (dropped int) {
	d := &q.levels[level]
	limit := q.pageInBytesLocked()
	b := pageInPool.Get().(*pageInBuf)
	n, bytes := 0, int64(0)
	for n < d.len() && n < pageInMax {
		e := d.at(n)
		if e.msg != nil || !e.stored {
			break
		}
		if n > 0 && bytes+int64(e.size) > limit {
			break
		}
		bytes += int64(e.size)
		b.ids[n] = e.id
		n++
	}
	q.vhost.store.LoadBatch(b.ids[:n], b.msgs[:n], b.errs[:n])
	// Nothing was popped since the window was taken: entry i is still d.at(i).
	lead := true
	for i := range n {
		if b.errs[i] != nil || b.msgs[i] == nil {
			if lead {
				dropped++
			}
			continue
		}
		lead = false
		e := d.at(i)
		e.msg = b.msgs[i]
		q.vhost.mem.resident.Add(int64(e.size))
	}
	for i := range dropped {
		e := q.popLocked(level)
		q.unreadableLocked(e.id, b.errs[i])
		q.forgetLocked(&e, fx)
	}
	putPageInBuf(b, n)
	return dropped
}

// readLocked returns the message of e, an entry already taken out of the
// queue (popLocked), reading it from the store if it was paged out, for
// dead-lettering. It does not count as resident: the entry is gone. nil
// if the store cannot read it (reported by unreadableLocked).
func (q *Queue) readLocked(e *entry) *Message {
	if e.msg != nil {
		return e.msg
	}
	b := pageInPool.Get().(*pageInBuf)
	b.ids[0] = e.id
	q.vhost.store.LoadBatch(b.ids[:1], b.msgs[:1], b.errs[:1])
	m, err := b.msgs[0], b.errs[0]
	putPageInBuf(b, 1)
	if err != nil || m == nil {
		q.unreadableLocked(e.id, err)
		return nil
	}
	return m
}

// unreadableLocked reports a stored message the store could not read back,
// which the caller drops: one WARN per queue, then one each time its count
// doubles, since a damaged value log can make every message of a queue
// unreadable and that is one fact, not a line per message.
func (q *Queue) unreadableLocked(id uint64, err error) {
	q.unreadable++
	if n := q.unreadable; n&(n-1) == 0 {
		q.vhost.log.Warn("stored messages unreadable: dropped", "vhost", q.vhost.name, "queue", q.name,
			"unreadable", n, "id", id, "err", err)
	}
	q.vhost.countDrop(DropUnreadable, false)
}
