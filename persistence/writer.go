package persistence

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"time"
	"unsafe"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/ferrymq/ferrymq/core"
)

type opKind uint8

const (
	opPutExchange opKind = iota + 1
	opDeleteExchange
	opPutQueue
	opTouchQueue
	opDeleteQueue
	opPutBinding
	opDeleteBinding
	opEnqueue
	opRemove
	opDelivered
	opPutRetained
	opDeleteRetained
)

// op is one append to the log. The hot ones (Enqueue, Remove, Delivered)
// use the flat fields only; topology records ride in rec.
type op struct {
	kind     opKind
	pos      uint64 // Delivered: the position of the append before it
	vhost    string
	name     string // queue, exchange, binding source, or retained topic
	seq      uint64
	id       uint64
	deadline int64         // Enqueue: deadline; TouchQueue: lastUsed
	msg      *core.Message // Enqueue, PutRetained
	rec      any           // *core.ExchangeDecl, *core.QueueRecord, *core.BindingRecord
}

// qkey names a queue in the writer's maps.
type qkey struct{ vhost, name string }

// queueState is what the writer keeps per stored queue: the record, so
// that TouchQueue can rewrite it, and the delivered mark.
type queueState struct {
	key       qkey
	rec       core.QueueRecord
	delivered uint64
	dirty     bool // delivered changed since the last batch
}

// writer is the state of the writer goroutine; nothing else touches it.
type writer struct {
	// refs counts the references of every stored message; a body is
	// deleted when its count drops to zero. Rebuilt at Open from the r/
	// keys, which is cheaper than a read per Remove.
	refs   map[uint64]uint32
	queues map[qkey]*queueState
	dirty  []*queueState

	ov overlay
	// failed is set while the overlay holds a batch whose commit failed:
	// it is committed again, with whatever came since, until it succeeds.
	failed bool
	// ids are the ids of the Enqueues in the overlay, released from
	// Store.pending once committed.
	ids []uint64

	// fails are the positions of the ops the store failed alone since the
	// last successful commit (a message too large, a record Badger would
	// refuse, a table that cannot be encoded), in position order: their
	// waiters, and only theirs, are told (see failOp). Kept across a failed
	// commit, for the failure log once the retry succeeds.
	fails []failure
	// refusedIDs are the latest messages of which a write was refused, with
	// the error, so that the other writes of the same publish (a retained
	// copy and the Enqueues of one message share its id) fail with it even
	// when a later commit takes them; see failOp.
	refusedIDs  [refusedIDRing]uint64
	refusedErrs [refusedIDRing]error // refusedIDs[i] was refused with refusedErrs[i]
	nRefused    int                  // entries of refusedIDs in use
	refusedAt   int                  // next entry of refusedIDs to overwrite
	// lateRefusal is set when commitOverlay refused a message's write,
	// after the ops following it in the batch were applied: see commitOps.
	lateRefusal bool

	lastTs uint64 // Badger version of the last commit attempted

	// cleanClose is set when the last batch, at Close, deletes the crash
	// mark (runningKey).
	cleanClose bool
	// opening is set while Open reads the store and writes its batch.
	opening bool

	// sweepFrom is where the orphan sweep goes on (nil: not sweeping);
	// swept counts the bodies it has deleted so far.
	sweepFrom []byte
	swept     int

	key, val, nval []byte // scratch
	ready          []waiter

	batchOps int // ops in the batch being committed, for StoreStats

	// timer ends the wait of a held-back batch (see cycle); reused.
	timer *time.Timer
}

func (w *writer) init() {
	w.refs = make(map[uint64]uint32)
	w.queues = make(map[qkey]*queueState)
	w.ov.init()
}

// refusedIDRing bounds writer.refusedIDs. The writes of one publish are
// appended within one VHost.Publish call, so the writer meets the rest of
// a message's writes long before 64 other refused messages come between.
const refusedIDRing = 64

// write is one key of the overlay: its latest value, or its deletion.
type write struct {
	key []byte
	val []byte
	del bool
	// skip drops the write altogether: the key was created and deleted
	// within the overlay and is absent on disk.
	skip bool
	// fresh: the key is known to be absent on disk, so deleting it needs
	// no write. Set for new message references and bodies.
	fresh bool
	msgID uint64 // r/ keys: the message referenced
	// pos is the log position of the op that wrote it last (0: none, a
	// write of the store's own), so that a write Badger would refuse
	// fails that op (see Store.commit).
	pos uint64
}

// overlay is the batch being built: the last write of every key touched,
// in the order the keys were first touched.
type overlay struct {
	idx    map[string]int
	writes []write
	arena  []byte
	pos    uint64 // position of the op being applied: see write.pos
}

func (o *overlay) init() { o.idx = make(map[string]int) }

func (o *overlay) reset() {
	clear(o.idx)
	clear(o.writes)
	o.writes = o.writes[:0]
	// A fresh arena: Badger has copied the bytes into its memtable and
	// value log by now, but nothing in its API promises it, so the old
	// chunk is left to the garbage collector instead of being reused.
	o.arena = nil
}

// copy returns b copied into the arena: keys and values of a batch share a
// few allocations. Chunks start small, for the one-message batches of a
// lone publisher, and double up to 64 KiB.
func (o *overlay) copy(b []byte) []byte {
	const minChunk, maxChunk = 4 << 10, 64 << 10
	if len(b) > maxChunk/4 {
		return append([]byte(nil), b...)
	}
	if cap(o.arena)-len(o.arena) < len(b) {
		size := min(max(2*cap(o.arena), minChunk), maxChunk)
		for size < len(b) {
			size *= 2
		}
		o.arena = make([]byte, 0, size)
	}
	n := len(o.arena)
	o.arena = append(o.arena, b...)
	return o.arena[n:len(o.arena):len(o.arena)]
}

func (o *overlay) lookup(key []byte) (*write, bool) {
	i, ok := o.idx[string(key)]
	if !ok {
		return nil, false
	}
	return &o.writes[i], true
}

// set records key = val. fresh tells whether key is known to be absent on
// disk when no write for it is in the overlay yet.
func (o *overlay) set(key, val []byte, fresh bool) *write {
	if w, ok := o.lookup(key); ok {
		w.val = o.copy(val)
		w.del, w.skip = false, false
		w.pos = o.pos
		return w
	}
	k := o.copy(key)
	o.writes = append(o.writes, write{key: k, val: o.copy(val), fresh: fresh, pos: o.pos})
	// The key bytes live in the arena and are never modified, so the map
	// can use them as its string without a copy.
	o.idx[unsafe.String(unsafe.SliceData(k), len(k))] = len(o.writes) - 1
	return &o.writes[len(o.writes)-1]
}

// del records the deletion of key.
func (o *overlay) del(key []byte) {
	if w, ok := o.lookup(key); ok {
		w.val = nil
		if w.fresh {
			w.skip = true
		} else {
			w.del = true
		}
		return
	}
	k := o.copy(key)
	o.writes = append(o.writes, write{key: k, del: true})
	o.idx[unsafe.String(unsafe.SliceData(k), len(k))] = len(o.writes) - 1
}

// dirty reports whether the overlay has anything to write.
func (o *overlay) dirty() bool {
	for i := range o.writes {
		if !o.writes[i].skip {
			return true
		}
	}
	return false
}

// live reports whether w writes a value (neither a deletion nor dropped).
func (w *write) live() bool { return !w.del && !w.skip }

// run is the writer goroutine.
func (s *Store) run() {
	defer close(s.done)
	backoff := time.Duration(0)
	for {
		if backoff > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.quit:
				t.Stop()
				s.finish()
				return
			}
		} else {
			select {
			case <-s.kick:
			case <-s.quit:
				s.finish()
				return
			}
		}
		failed := s.cycle()
		switch {
		case !failed:
			backoff = 0
		case backoff == 0:
			backoff = 10 * time.Millisecond
		default:
			backoff = min(2*backoff, time.Second)
		}
	}
}

// cycle commits batches while there is something to commit, and tells the
// waiters. It reports whether the last commit failed, so that run backs off
// before trying again.
//
// A batch no one waits for (no waiter at a position the writer has not
// taken: acks' Removes, publishes without a confirm) is held back for up to
// commitDelay, or until the log reaches lazyMaxOps ops or lazyMaxBytes of
// bodies, so that one fsync carries many of them. A Notify or Wait for a
// position not taken, Close, and a bound reached wake the writer at once.
func (s *Store) cycle() (failed bool) {
	var due time.Time // when the batch held back must be committed
	for {
		s.mu.Lock()
		s.lazy = false
		if s.closing {
			// Close is waiting: finish takes what is left, so that a
			// stream of appends cannot keep the writer here.
			s.mu.Unlock()
			return false
		}
		if s.sweepReq.Swap(false) && s.w.sweepFrom == nil {
			s.w.sweepFrom = kindPrefix(kindMessage)
		}
		last := s.cutLocked()
		if last == s.taken && !s.w.failed && s.w.sweepFrom == nil {
			// Nothing new to commit (a Delivered alone does not start a
			// commit, and a Hold keeps back what follows it); there may be
			// waiters that Notify registered for positions already
			// committed.
			ready := s.takeWaitersLocked(s.synced)
			synced := s.synced
			s.mu.Unlock()
			s.tell(ready, synced, nil, nil)
			return false
		}
		if s.holdBackLocked(last) {
			now := time.Now()
			if due.IsZero() {
				due = now.Add(s.commitDelay)
			}
			if now.Before(due) {
				s.lazy = true
				// No waiter is past taken, so every waiter left is for a
				// committed position (a Notify after its commit): tell
				// them before sleeping.
				var ready []waiter
				if len(s.waiters) > 0 {
					ready = s.takeWaitersLocked(s.synced)
				}
				synced := s.synced
				s.mu.Unlock()
				s.tell(ready, synced, nil, nil)
				if hook := s.testLazyHook.Load(); hook != nil {
					(*hook)()
				}
				if !s.sleep(due.Sub(now)) {
					return false // Close: finish takes the batch
				}
				continue
			}
		}
		due = time.Time{}
		ops := s.takeLocked(last)
		s.mu.Unlock()

		err := s.commitOps(ops, last)

		clear(ops[:cap(ops)]) // drop the messages they point to
		s.mu.Lock()
		s.spare = ops[:0]
		s.mu.Unlock()
		if err != nil {
			return true
		}
	}
}

// holdBackLocked reports whether the batch up to last may wait for more
// (see cycle). s.mu is held.
func (s *Store) holdBackLocked(last uint64) bool {
	return s.commitDelay > 0 &&
		last > s.taken && s.want <= s.taken &&
		!s.w.failed && s.w.sweepFrom == nil &&
		len(s.ops) < lazyMaxOps && s.opsBytes < lazyMaxBytes
}

// sleep waits up to d for a kick (a waiter, a bound reached, a Release);
// it reports false if the store is closing instead.
func (s *Store) sleep(d time.Duration) bool {
	if s.w.timer == nil {
		s.w.timer = time.NewTimer(d)
	} else {
		s.w.timer.Reset(d)
	}
	defer s.w.timer.Stop()
	select {
	case <-s.kick:
		return true
	case <-s.w.timer.C:
		return true
	case <-s.quit:
		return false
	}
}

// finish is the writer's last batch, at Close: one attempt, then every
// waiter is told and appends are refused.
func (s *Store) finish() {
	s.mu.Lock()
	// A dead-lettering still under a Hold has appended only part of its
	// move: that part is left out, so the message stays where it was.
	last := s.cutLocked()
	ops := s.takeLocked(last)
	s.sealed = true
	// Anything left out, or appended from now on, is lost as in a crash:
	// the crash mark stays (see markRunning).
	s.unclean = len(s.ops) > 0 || last < s.pos
	s.ops = nil
	unclean := s.unclean
	s.mu.Unlock()
	s.w.cleanClose = !unclean
	if s.w.cleanClose {
		s.w.ov.del(runningKey)
	}
	// Delivered marks alone, and the crash mark, are worth this commit:
	// after a clean shutdown, unacknowledged messages come back
	// redelivered and the others do not.
	err := s.commitOps(ops, last)
	if err == nil {
		err = ErrClosed
	}
	s.mu.Lock()
	s.closed = true
	s.closeErr = err
	ready := s.takeWaitersLocked(^uint64(0))
	synced := s.synced
	s.mu.Unlock()
	s.tell(ready, synced, err, nil)
}

// commitOps applies ops to the overlay, commits it and tells the waiters up
// to last.
//
// An op the store cannot write (apply's error: a message too large, a
// record Badger would refuse) writes nothing and fails alone: its position
// goes to w.fails, and only its waiters are told. Ops before and after it
// in the batch commit and are confirmed. The one logical operation of
// several positions whose waiter waits at its last is a publish (a
// retained copy, then an Enqueue per durable queue, all of one message
// id): a refused write of a message fails every later position of that
// message too, in this commit or a later one (refusedIDs), so that its
// publisher is never told it is stored.
func (s *Store) commitOps(ops []op, last uint64) error {
	w := &s.w
	for i := range ops {
		o := &ops[i]
		if w.nRefused > 0 {
			if err := w.refusedMessage(o); err != nil {
				// Written all the same: core holds the message in the
				// queue, and the store agrees with it; the publisher is
				// told it failed and may send it again.
				w.failOp(o, err)
			}
		}
		w.ov.pos = o.pos
		err := s.apply(o)
		w.ov.pos = 0
		if err != nil {
			s.log.Error("store operation skipped", "pos", o.pos, "err", err)
			w.failOp(o, err)
		}
	}
	s.flushDelivered()
	if w.sweepFrom != nil {
		if err := s.sweepChunk(); err != nil {
			s.log.Warn("orphan sweep", "err", err)
			w.sweepFrom = nil
		}
	}

	w.batchOps = len(ops)
	err := s.commit()
	w.batchOps = 0
	if w.lateRefusal {
		// A message's write refused at commit: the positions of that
		// message applied after it in this batch fail with it too.
		w.lateRefusal = false
		for i := range ops {
			if e := w.refusedMessage(&ops[i]); e != nil {
				w.failAt(ops[i].pos, e)
			}
		}
	}
	if err == nil {
		// Readers move to the new version before the messages leave
		// pending: see Load.
		s.readTs.Store(w.lastTs)
		s.db.SetDiscardTs(w.lastTs)
	}

	if len(w.fails) > 1 && !slices.IsSortedFunc(w.fails, cmpFailure) {
		// A write refused at commit (commitOverlay) comes after the ops
		// applied after it.
		slices.SortFunc(w.fails, cmpFailure)
	}
	s.mu.Lock()
	if err == nil && len(w.fails) > 0 {
		s.logFailuresLocked(w.fails)
	}
	if err == nil {
		s.synced = last
		for _, id := range w.ids {
			if p, ok := s.pending[id]; ok && p.pos <= last {
				delete(s.pending, id)
			}
		}
		w.ids = w.ids[:0]
	}
	ready := s.takeWaitersLocked(last)
	synced := s.synced
	s.mu.Unlock()

	s.tell(ready, synced, err, w.fails)
	if err == nil {
		clear(w.fails)
		w.fails = w.fails[:0]
	}

	switch {
	case err != nil:
		wasFailed := w.failed
		w.failed = true
		if !wasFailed {
			s.log.Error("commit failed; retrying with the next batch", "err", err)
		}
		if s.onError != nil {
			s.onError(err)
		}
	case w.failed:
		w.failed = false
		s.log.Info("commit succeeded again")
		if s.onError != nil {
			s.onError(nil)
		}
	}
	return err
}

// takeWaitersLocked removes and returns the waiters with pos <= upTo,
// sorted by position. s.mu is held.
func (s *Store) takeWaitersLocked(upTo uint64) []waiter {
	ready := s.w.ready[:0]
	keep := s.waiters[:0]
	for _, wt := range s.waiters {
		if wt.pos <= upTo {
			ready = append(ready, wt)
		} else {
			keep = append(keep, wt)
		}
	}
	clear(s.waiters[len(keep):])
	s.waiters = keep
	if !slices.IsSortedFunc(ready, cmpWaiter) {
		slices.SortStableFunc(ready, cmpWaiter)
	}
	s.w.ready = ready
	return ready
}

func cmpWaiter(a, b waiter) int {
	switch {
	case a.pos < b.pos:
		return -1
	case a.pos > b.pos:
		return 1
	}
	return 0
}

// tell calls the waiters: those up to synced are durable, unless the
// store failed the op at their own position (fails, this batch's, sorted;
// or the failure log, for a waiter that registered after its batch
// committed); the others get err (a failed commit, or Close). A waiter at
// a position the store did not fail is never told another op's error.
func (s *Store) tell(ready []waiter, synced uint64, err error, fails []failure) {
	for i, wt := range ready {
		var e error
		switch {
		case wt.pos > synced:
			e = err
		default:
			if f, ok := findFailure(fails, wt.pos); ok {
				e = f.err
			} else if s.lastFailed.Load() >= wt.pos {
				s.mu.Lock()
				e = s.failedLocked(wt.pos)
				s.mu.Unlock()
			}
		}
		wt.w.Synced(wt.pos, e)
		ready[i] = waiter{}
	}
}

// failOp records that the store failed op o with err: its position alone
// (see commitOps), and, for a write of a message, the message's id, so
// that the publish's later positions fail with it.
func (w *writer) failOp(o *op, err error) {
	w.failAt(o.pos, err)
	if id, ok := opMessageID(o); ok {
		w.refuseID(id, err)
	}
}

// failAt records that the store failed the op at pos with err.
func (w *writer) failAt(pos uint64, err error) {
	if n := len(w.fails); n > 0 && w.fails[n-1].to == pos {
		return // failed already
	}
	w.fails = append(w.fails, failure{from: pos, to: pos, err: err})
}

// refuseID remembers that a write of message id was refused with err.
func (w *writer) refuseID(id uint64, err error) {
	for i := range w.nRefused {
		if w.refusedIDs[i] == id {
			return
		}
	}
	w.refusedIDs[w.refusedAt], w.refusedErrs[w.refusedAt] = id, err
	w.refusedAt = (w.refusedAt + 1) % refusedIDRing
	w.nRefused = min(w.nRefused+1, refusedIDRing)
}

// refusedMessage returns the error of a refused write of o's message, if
// o writes a message one of whose writes was refused.
func (w *writer) refusedMessage(o *op) error {
	id, ok := opMessageID(o)
	if !ok {
		return nil
	}
	for i := range w.nRefused {
		if w.refusedIDs[i] == id {
			return w.refusedErrs[i]
		}
	}
	return nil
}

// opMessageID is the id of the message o writes: an Enqueue's, or a
// retained message's.
func opMessageID(o *op) (uint64, bool) {
	switch o.kind {
	case opEnqueue:
		return o.id, true
	case opPutRetained:
		return o.msg.ID, o.msg.ID != 0
	}
	return 0, false
}

// writeMessageID is the id of the message whose body or reference wr
// writes.
func writeMessageID(wr *write) (uint64, bool) {
	switch wr.key[0] {
	case kindMessage:
		return parseMessageKey(wr.key)
	case kindRef:
		return wr.msgID, true
	}
	return 0, false
}

func cmpFailure(a, b failure) int { return cmp.Compare(a.from, b.from) }

// findFailure returns the failure of fails (sorted, disjoint) that covers
// pos.
func findFailure(fails []failure, pos uint64) (failure, bool) {
	if len(fails) == 0 {
		return failure{}, false
	}
	i, _ := slices.BinarySearchFunc(fails, pos, func(f failure, p uint64) int { return cmp.Compare(f.to, p) })
	if i < len(fails) && fails[i].from <= pos {
		return fails[i], true
	}
	return failure{}, false
}

// apply adds one op to the overlay.
func (s *Store) apply(o *op) error {
	w := &s.w
	switch o.kind {
	case opPutExchange:
		d := o.rec.(*core.ExchangeDecl)
		val, err := encodeExchange(w.val[:0], d)
		if err != nil {
			return fmt.Errorf("exchange '%s' in vhost '%s': %w", d.Name, o.vhost, err)
		}
		w.val = val
		w.key = entityKey(w.key[:0], kindExchange, o.vhost, d.Name)
		nval := w.named(val, o.vhost, d.Name)
		if err := s.check(w.key, nval); err != nil {
			return err
		}
		w.ov.set(w.key, nval, false)

	case opDeleteExchange:
		w.key = entityKey(w.key[:0], kindExchange, o.vhost, o.name)
		w.ov.del(w.key)
		return s.deleteBindings(o.vhost, func(b *core.BindingRecord) bool {
			return b.Source == o.name || (b.ToExchange && b.Destination == o.name)
		})

	case opPutQueue:
		r := o.rec.(*core.QueueRecord)
		val, err := encodeQueue(w.val[:0], r)
		if err != nil {
			return fmt.Errorf("queue '%s' in vhost '%s': %w", r.Name, r.VHost, err)
		}
		w.val = val
		w.key = entityKey(w.key[:0], kindQueue, r.VHost, r.Name)
		nval := w.named(val, r.VHost, r.Name)
		// Before the writer counts the queue as stored: an Enqueue to a
		// queue whose record was refused is not stored either.
		if err := s.check(w.key, nval); err != nil {
			return err
		}
		k := qkey{r.VHost, r.Name}
		qs := w.queues[k]
		if qs == nil {
			qs = &queueState{key: k}
			w.queues[k] = qs
		}
		qs.rec = *r
		w.ov.set(w.key, nval, false)

	case opTouchQueue:
		qs := w.queues[qkey{o.vhost, o.name}]
		if qs == nil {
			return nil
		}
		qs.rec.LastUsed = o.deadline
		val, err := encodeQueue(w.val[:0], &qs.rec)
		if err != nil {
			return fmt.Errorf("queue '%s' in vhost '%s': %w", o.name, o.vhost, err)
		}
		w.val = val
		w.key = entityKey(w.key[:0], kindQueue, o.vhost, o.name)
		nval := w.named(val, o.vhost, o.name)
		if err := s.check(w.key, nval); err != nil {
			return err
		}
		w.ov.set(w.key, nval, false)

	case opDeleteQueue:
		if err := s.deleteRefs(o.vhost, o.name); err != nil {
			return err
		}
		k := qkey{o.vhost, o.name}
		if qs := w.queues[k]; qs != nil {
			qs.dirty = false
			delete(w.queues, k)
		}
		w.key = entityKey(w.key[:0], kindDelivered, o.vhost, o.name)
		w.ov.del(w.key)
		w.key = entityKey(w.key[:0], kindQueue, o.vhost, o.name)
		w.ov.del(w.key)
		return s.deleteBindings(o.vhost, func(b *core.BindingRecord) bool {
			return !b.ToExchange && b.Destination == o.name
		})

	case opPutBinding, opDeleteBinding:
		b := o.rec.(*core.BindingRecord)
		val, err := encodeBinding(w.val[:0], b)
		if err != nil {
			return fmt.Errorf("binding of '%s' to '%s' in vhost '%s': %w", b.Source, b.Destination, o.vhost, err)
		}
		w.val = val
		w.key = bindingKey(w.key[:0], o.vhost, b, val[1:])
		if o.kind == opPutBinding {
			nval := w.named(val, o.vhost, b.Source, b.Destination, b.RoutingKey)
			if err := s.check(w.key, nval); err != nil {
				return err
			}
			w.ov.set(w.key, nval, false)
		} else {
			w.ov.del(w.key)
		}

	case opEnqueue:
		w.ids = append(w.ids, o.id)
		if w.queues[qkey{o.vhost, o.name}] == nil {
			s.log.Warn("enqueue to a queue the store does not hold: not stored", "vhost", o.vhost, "queue", o.name, "id", o.id)
			return nil
		}
		n := w.refs[o.id]
		if n == 0 {
			val, err := encodeMessage(w.val[:0], o.msg)
			if err != nil {
				return err
			}
			w.val = val
			if len(val) > MaxMessageSize {
				return fmt.Errorf("%w: message %d is %d bytes stored, limit %d", ErrTooLarge, o.id, len(val), MaxMessageSize)
			}
			w.key = messageKey(w.key[:0], o.id)
			if err := s.check(w.key, val); err != nil {
				return fmt.Errorf("message %d: %w", o.id, err)
			}
			w.ov.set(w.key, val, true)
			if o.id > s.maxID.Load() {
				s.maxID.Store(o.id)
			}
		}
		w.refs[o.id] = n + 1
		w.val = encodeRef(w.val[:0], ref{id: o.id, size: len(o.msg.Body), priority: o.msg.Properties.Priority, deadline: o.deadline})
		w.key = refKey(w.key[:0], o.vhost, o.name, o.seq)
		// seq is new to the queue, so the reference is absent on disk: a
		// Remove in the same batch writes neither.
		w.ov.set(w.key, w.val, true).msgID = o.id

	case opRemove:
		if w.queues[qkey{o.vhost, o.name}] == nil {
			return nil // the queue is gone, and its references with it
		}
		w.key = refKey(w.key[:0], o.vhost, o.name, o.seq)
		if wr, ok := w.ov.lookup(w.key); ok && !wr.live() {
			return nil // removed already in this batch
		}
		w.ov.del(w.key)
		s.unref(o.id)

	case opPutRetained:
		val, err := encodeRetained(w.val[:0], o.msg)
		if err != nil {
			return fmt.Errorf("retained message of topic '%s' in vhost '%s': %w", o.name, o.vhost, err)
		}
		w.val = val
		if len(val) > MaxMessageSize {
			return fmt.Errorf("%w: retained message of topic '%s' in vhost '%s' is %d bytes stored, limit %d",
				ErrTooLarge, o.name, o.vhost, len(val), MaxMessageSize)
		}
		w.key = entityKey(w.key[:0], kindRetained, o.vhost, o.name)
		nval := w.named(val, o.vhost, o.name)
		if err := s.check(w.key, nval); err != nil {
			return fmt.Errorf("retained message of topic '%s' in vhost '%s': %w", o.name, o.vhost, err)
		}
		w.ov.set(w.key, nval, false)
		if o.msg.ID > s.maxID.Load() {
			s.maxID.Store(o.msg.ID)
		}

	case opDeleteRetained:
		// A marker, not a tombstone: see markerKind.
		w.key = entityKey(w.key[:0], kindRetained, o.vhost, o.name)
		w.ov.del(w.key)

	case opDelivered:
		qs := w.queues[qkey{o.vhost, o.name}]
		if qs == nil || o.seq <= qs.delivered {
			return nil
		}
		qs.delivered = o.seq
		if !qs.dirty {
			qs.dirty = true
			w.dirty = append(w.dirty, qs)
		}
	}
	return nil
}

// check returns why Badger would refuse key = val (see refused): the op
// that writes it fails alone, before anything of it reaches the overlay.
func (s *Store) check(key, val []byte) error {
	return refused(key, val, s.valueLimit)
}

// named returns val as the value of a record whose key holds names (see
// named), in w.nval when the names are written into it: never in w.nval
// otherwise, which would then alias w.val.
func (w *writer) named(val []byte, names ...string) []byte {
	if !anyLong(names...) {
		return val
	}
	w.nval = append(appendNamed(w.nval[:0], names...), val...)
	return w.nval
}

// unref drops one reference to message id, and its body with the last.
func (s *Store) unref(id uint64) {
	w := &s.w
	n := w.refs[id]
	switch n {
	case 0:
		// More Removes than Enqueues: a caller bug. Never let the count
		// wrap, which would keep the body forever, or go negative.
		s.log.Warn("remove of a message the store holds no reference to", "id", id)
	case 1:
		delete(w.refs, id)
		w.key = messageKey(w.key[:0], id)
		w.ov.del(w.key)
	default:
		w.refs[id] = n - 1
	}
}

// flushDelivered writes the delivered marks that moved in this batch.
func (s *Store) flushDelivered() {
	w := &s.w
	for i, qs := range w.dirty {
		w.dirty[i] = nil
		if !qs.dirty {
			continue // deleted since
		}
		qs.dirty = false
		w.key = entityKey(w.key[:0], kindDelivered, qs.key.vhost, qs.key.name)
		var v [8]byte
		w.ov.set(w.key, encodeDelivered(v[:0], qs.delivered), false)
	}
	w.dirty = w.dirty[:0]
}

// sweepChunk is one step of the orphan sweep: it deletes the bodies, among
// the next sweepChunkKeys message keys, that no reference counts. Value-log
// GC can bring a deleted body back (see markerKind); it is garbage nobody
// will read, but it would hold its disk space for ever. The sweep runs after
// every GC that moved something, a chunk per batch, so that a store of
// millions of messages never stalls the commits for long.
func (s *Store) sweepChunk() error {
	const sweepChunkKeys = 20000
	w := &s.w
	prefix := kindPrefix(kindMessage)
	txn := s.db.NewTransactionAt(w.lastTs, false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	n, orphans := 0, 0
	for it.Seek(w.sweepFrom); it.Valid(); it.Next() {
		key := it.Item().Key()
		if n == sweepChunkKeys {
			w.sweepFrom = append(w.sweepFrom[:0:0], key...)
			w.swept += orphans
			return nil
		}
		n++
		id, ok := parseMessageKey(key)
		if !ok || w.refs[id] != 0 {
			continue
		}
		if _, ok := w.ov.lookup(key); ok {
			continue // written or deleted in this batch
		}
		w.ov.del(key)
		orphans++
	}
	w.swept += orphans
	if w.swept > 0 {
		s.log.Debug("orphan sweep: deleted bodies brought back by value-log GC", "bodies", w.swept)
	}
	w.swept = 0
	w.sweepFrom = nil
	s.sweeps.Add(1)
	return nil
}

// deleteRefs deletes every reference of a queue, on disk and in the
// overlay, dropping the bodies left without one.
func (s *Store) deleteRefs(vhost, queue string) error {
	w := &s.w
	prefix := entityKey(nil, kindRef, vhost, queue)
	// The overlay first: what it says about a key overrides the disk.
	for i := range w.ov.writes {
		wr := &w.ov.writes[i]
		if wr.live() && len(wr.key) == len(prefix)+8 && bytes.HasPrefix(wr.key, prefix) {
			s.w.ov.del(wr.key)
			s.unref(wr.msgID)
		}
	}
	// Reference values are a few bytes and live in the LSM tree: this
	// reads no message body.
	return s.scan(prefix, w.lastTs, true, func(key, val []byte) error {
		if len(key) != len(prefix)+8 {
			return nil
		}
		if _, ok := w.ov.lookup(key); ok {
			return nil
		}
		r, ok := decodeRef(val)
		if !ok {
			return corrupt("message reference", key)
		}
		w.ov.del(key)
		s.unref(r.id)
		return nil
	})
}

// deleteBindings deletes the bindings of vhost that match.
func (s *Store) deleteBindings(vhost string, match func(*core.BindingRecord) bool) error {
	w := &s.w
	prefix := bindingPrefix(vhost)
	for i := range w.ov.writes {
		wr := &w.ov.writes[i]
		if !wr.live() || !bytes.HasPrefix(wr.key, prefix) {
			continue
		}
		if v, b, err := decodeBinding(wr.key, wr.val); err == nil && v == vhost && match(&b) {
			w.ov.del(wr.key)
		}
	}
	// Values too: a binding key with a hashed name has its names there.
	return s.scan(prefix, w.lastTs, true, func(key, val []byte) error {
		if _, ok := w.ov.lookup(key); ok || len(val) == 0 {
			return nil // decided in the overlay, or deleted already
		}
		if v, b, err := decodeBinding(key, val); err == nil && v == vhost && match(&b) {
			w.ov.del(key)
		}
		return nil
	})
}

// scan calls fn for every key with prefix at version ts, with its value if
// values is set. key and val are valid only during the call.
func (s *Store) scan(prefix []byte, ts uint64, values bool, fn func(key, val []byte) error) error {
	txn := s.db.NewTransactionAt(ts, false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		var err error
		if values {
			err = s.value(item, func(v []byte) error { return fn(item.Key(), v) })
		} else {
			err = fn(item.Key(), nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// commit writes the overlay as one Badger write batch at a new version and
// makes it durable. With SyncWrites, Badger fsyncs the value log and the
// memtable WAL before Flush returns. Bodies are written before the
// references to them and deleted after, so that a batch too large for one
// Badger transaction never leaves a reference without its body on disk.
func (s *Store) commit() error {
	w := &s.w
	if !w.ov.dirty() {
		// Nothing to write (an Enqueue and its Remove cancelled out, or
		// Removes of a deleted queue): nothing to sync either.
		w.ov.reset()
		return nil
	}
	s.commits.Add(1)
	start := time.Now()
	err := s.commitOverlay()
	s.stats.observeCommit(w.batchOps, time.Since(start), err)
	return err
}

// commitOverlay is commit once the overlay is known to hold writes.
func (s *Store) commitOverlay() error {
	w := &s.w
	if hook := s.testCommitHook.Load(); hook != nil {
		if err := (*hook)(); err != nil {
			return s.failed(err)
		}
	}
	if err := s.checkDiskFree(); err != nil {
		return s.failed(err)
	}
	w.lastTs++
	wb := s.db.NewWriteBatchAt(w.lastTs)
	errs := s.blog.errors.Load()
	for phase := range 3 {
		for i := range w.ov.writes {
			wr := &w.ov.writes[i]
			if wr.skip {
				continue
			}
			body := wr.key[0] == kindMessage
			switch {
			case phase == 0 && (!body || wr.del),
				phase == 1 && body,
				phase == 2 && (!body || !wr.del):
				continue
			}
			if err := refused(wr.key, wr.val, s.valueLimit); err != nil {
				// Never handed to Badger, which would fail the whole
				// batch, and every retry of it, for every client: the op
				// that wrote it fails alone. apply checks every write of
				// an op before it reaches the overlay (Store.check), so
				// this is the last line only.
				s.log.Error("store write refused", "key_bytes", len(wr.key), "value_bytes", len(wr.val),
					"key_start", fmt.Sprintf("%q", wr.key[:min(len(wr.key), 64)]), "err", err)
				wr.skip = true
				if wr.pos != 0 {
					w.failAt(wr.pos, err)
				}
				if id, ok := writeMessageID(wr); ok {
					w.refuseID(id, err)
					w.lateRefusal = true
				}
				continue
			}
			var err error
			switch {
			case wr.del && markerKind(wr.key[0]):
				err = wb.Set(wr.key, nil)
			case wr.del:
				err = wb.Delete(wr.key)
			default:
				err = wb.Set(wr.key, wr.val)
			}
			if err != nil {
				wb.Cancel()
				return s.failed(fmt.Errorf("persistence: write batch: %w", err))
			}
		}
	}
	if err := wb.Flush(); err != nil {
		return s.failed(fmt.Errorf("persistence: commit: %w", err))
	}
	// Badger logs, and does not return, a failed fsync of the value log
	// (valueLog.write with SyncWrites). Any error it logged while this
	// batch was in flight fails the batch: it is retried, and nothing is
	// confirmed on a disk that just failed.
	if s.blog.errors.Load() != errs {
		return s.failed(fmt.Errorf("persistence: commit: badger reported: %s", s.blog.lastError()))
	}
	w.ov.reset()
	return nil
}

// maxKeySize is Badger's key limit (Txn.modify): a longer key fails the
// write batch it is in.
const maxKeySize = 65000

// refused returns why Badger would refuse to write key = val, the checks
// of its Txn.modify that do not depend on the transaction: such a write
// must never reach a batch. Keys are bounded by construction (hashed
// names) and message values by MaxMessageSize; apply checks each op's
// writes with it before they reach the overlay, commitOverlay again. (An
// entry never exceeds a transaction's size either: values of
// valueThreshold or more go to the value log, and the transaction holds a
// pointer.)
func refused(key, val []byte, valueLimit int64) error {
	switch {
	case len(key) == 0:
		return fmt.Errorf("%w: empty key", ErrRefused)
	case bytes.HasPrefix(key, []byte("!badger!")):
		return fmt.Errorf("%w: key %q is reserved by Badger", ErrRefused, key)
	case len(key) > maxKeySize:
		return fmt.Errorf("%w: key of %d bytes, limit %d", ErrRefused, len(key), maxKeySize)
	case int64(len(val)) > valueLimit:
		return fmt.Errorf("%w: value of %d bytes, limit %d", ErrRefused, len(val), valueLimit)
	}
	return nil
}

// failed keeps the overlay for the next attempt. Part of it may have
// reached the disk, so no key in it can be assumed absent any more.
func (s *Store) failed(err error) error {
	for i := range s.w.ov.writes {
		s.w.ov.writes[i].fresh = false
	}
	return err
}

func (s *Store) checkDiskFree() error {
	limit := s.diskFreeLimit
	if limit <= 0 {
		return nil
	}
	if s.w.opening {
		// Open's one small batch (the crash mark, leftovers of an
		// interrupted batch) must not keep a broker from starting, blocked,
		// on a disk below the limit; only a disk with next to no room does.
		limit = min(limit, openingDiskFree)
	}
	free, err := diskFree(s.dir)
	if err != nil || free < 0 {
		return nil // unknown: let the write itself fail
	}
	if free < limit {
		return fmt.Errorf("%w: %d bytes free in %s, limit %d", ErrDiskFull, free, s.dir, limit)
	}
	return nil
}

// openingDiskFree is the free space Open's batch needs.
const openingDiskFree = 16 << 20
