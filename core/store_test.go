package core

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// memStore is an in-memory Store and Recovery: every append is "synced" at
// once. It checks core's side of the contract (what is stored, when it is
// removed, what recovery rebuilds) without a disk; persistence/ has the
// Badger-backed tests.
type memStore struct {
	mu        sync.Mutex
	pos       uint64
	exchanges map[string]ExchangeDecl // vhost\x00name
	queues    map[string]QueueRecord
	bindings  map[string]BindingRecord
	msgs      map[uint64]*Message
	refs      map[string]map[uint64]StoredMessage // vhost\x00queue -> seq
	delivered map[string]uint64
	holds     int      // open Holds
	log       []string // holds, releases, enqueues and removes, in order
	// unreadable are the ids LoadBatch fails for, as a damaged value log
	// would; batches are the sizes of the LoadBatch calls, in order.
	unreadable map[uint64]bool
	batches    []int
	loads      map[uint64]int // LoadBatch reads per id, when not nil
}

func newMemStore() *memStore {
	return &memStore{
		exchanges: map[string]ExchangeDecl{}, queues: map[string]QueueRecord{}, bindings: map[string]BindingRecord{},
		msgs: map[uint64]*Message{}, refs: map[string]map[uint64]StoredMessage{}, delivered: map[string]uint64{},
	}
}

func key(parts ...string) string { return fmt.Sprint(parts) }

func bkey(vhost string, b BindingRecord) string {
	return key(vhost, b.Source, fmt.Sprint(b.ToExchange), b.Destination, b.RoutingKey, fmt.Sprint(b.Arguments))
}

func (s *memStore) next() uint64 { s.pos++; return s.pos }

func (s *memStore) PutExchange(vhost string, d ExchangeDecl) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exchanges[key(vhost, d.Name)] = d
	return s.next()
}

func (s *memStore) DeleteExchange(vhost, name string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.exchanges, key(vhost, name))
	return s.next()
}

func (s *memStore) PutQueue(r QueueRecord) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queues[key(r.VHost, r.Name)] = r
	return s.next()
}

func (s *memStore) TouchQueue(vhost, name string, lastUsed int64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.queues[key(vhost, name)]; ok {
		r.LastUsed = lastUsed
		s.queues[key(vhost, name)] = r
	}
	return s.next()
}

func (s *memStore) DeleteQueue(vhost, name string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(vhost, name)
	delete(s.queues, k)
	refs := s.refs[k]
	delete(s.refs, k)
	for _, m := range refs {
		s.unrefLocked(m.ID)
	}
	return s.next()
}

func (s *memStore) PutBinding(vhost string, b BindingRecord) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bindings[bkey(vhost, b)] = b
	return s.next()
}

func (s *memStore) DeleteBinding(vhost string, b BindingRecord) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.bindings, bkey(vhost, b))
	return s.next()
}

func (s *memStore) Enqueue(vhost, queue string, seq uint64, msg *Message, deadline int64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs[msg.ID] = msg
	k := key(vhost, queue)
	if s.refs[k] == nil {
		s.refs[k] = map[uint64]StoredMessage{}
	}
	s.refs[k][seq] = StoredMessage{Seq: seq, ID: msg.ID, Size: len(msg.Body), Priority: msg.Properties.Priority, Deadline: deadline}
	s.log = append(s.log, "enqueue "+queue)
	return s.next()
}

func (s *memStore) Remove(vhost, queue string, seq, id uint64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(vhost, queue)
	if _, ok := s.refs[k][seq]; ok {
		delete(s.refs[k], seq)
		s.unrefLocked(id)
	}
	s.log = append(s.log, "remove "+queue)
	return s.next()
}

func (s *memStore) unrefLocked(id uint64) {
	for _, refs := range s.refs {
		for _, m := range refs {
			if m.ID == id {
				return
			}
		}
	}
	delete(s.msgs, id)
}

func (s *memStore) Delivered(vhost, queue string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(vhost, queue)
	s.delivered[k] = max(s.delivered[k], seq)
}

func (s *memStore) Hold() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holds++
	s.log = append(s.log, "hold")
	return uint64(s.holds)
}

func (s *memStore) Release(uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holds--
	s.log = append(s.log, "release")
}

func (s *memStore) LoadBatch(ids []uint64, msgs []*Message, errs []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, len(ids))
	for i, id := range ids {
		if s.loads != nil {
			s.loads[id]++
		}
		m, ok := s.msgs[id]
		switch {
		case s.unreadable[id]:
			msgs[i], errs[i] = nil, fmt.Errorf("message %d damaged", id)
		case !ok:
			msgs[i], errs[i] = nil, fmt.Errorf("message %d not stored", id)
		default:
			msgs[i], errs[i] = m, nil
		}
	}
}

func (s *memStore) Notify(pos uint64, w SyncWaiter) { w.Synced(pos, nil) }
func (s *memStore) Wait(uint64) error               { return nil }

func (s *memStore) Exchanges(fn func(string, ExchangeDecl) error) error {
	for k, d := range s.exchanges {
		var vhost, name string
		fmt.Sscan(k[1:len(k)-1], &vhost, &name)
		if err := fn(vhost, d); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) Queues(fn func(QueueRecord) error) error {
	for _, r := range s.queues {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) Bindings(fn func(string, BindingRecord) error) error {
	for _, b := range s.bindings {
		if err := fn("/", b); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) Messages(vhost, queue string, fn func(StoredMessage) error) error {
	k := key(vhost, queue)
	var ms []StoredMessage
	for _, m := range s.refs[k] {
		m.Delivered = m.Seq <= s.delivered[k]
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b StoredMessage) int { return int(a.Seq) - int(b.Seq) })
	for _, m := range ms {
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) MaxMessageID() uint64 {
	var id uint64
	for k := range s.msgs {
		id = max(id, k)
	}
	return id
}

func (s *memStore) counts(vhost, queue string) (msgs, refs int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs), len(s.refs[key(vhost, queue)])
}

func newStoreBroker(t *testing.T, s *memStore, clk *manualClock, budget int64) *VHost {
	t.Helper()
	b := NewBroker(Options{Clock: clk, Store: s, MemoryBudget: budget})
	t.Cleanup(b.Close)
	return b.VHost("/")
}

func persistent(m *Message) { m.Properties.DeliveryMode = 2 }

func declareDurable(t *testing.T, v *VHost, name string, args Table) *Queue {
	t.Helper()
	if _, err := v.DeclareQueue(QueueDecl{Name: name, Durable: true, Arguments: args}); err != nil {
		t.Fatal(err)
	}
	return v.Queue(name)
}

// TestStoreWhatIsStored: only persistent messages on durable, non-exclusive
// queues reach the store, and only they make a publish wait (Pos).
func TestStoreWhatIsStored(t *testing.T) {
	s := newMemStore()
	v := newStoreBroker(t, s, newManualClock(), -1)
	declareDurable(t, v, "durable", nil)
	declareQ(t, v, "transient", nil)
	if _, err := v.DeclareQueue(QueueDecl{Name: "excl", Durable: true, Exclusive: true, Owner: 1}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		queue   string
		opts    []pubOpt
		stored  bool
		wantPos bool
	}{
		{"durable", []pubOpt{persistent}, true, true},
		{"durable", nil, false, false},
		{"transient", []pubOpt{persistent}, false, false},
		{"excl", []pubOpt{persistent}, false, false},
	} {
		before, _ := s.counts("/", tc.queue)
		res := publish(t, v, "", tc.queue, "m", tc.opts...)
		after, refs := s.counts("/", tc.queue)
		if (after > before) != tc.stored || (tc.stored && refs == 0) {
			t.Errorf("%s %v: stored=%v, want %v", tc.queue, tc.opts != nil, after > before, tc.stored)
		}
		if (res.Pos != 0) != tc.wantPos {
			t.Errorf("%s: Pos=%d, want non-zero %v", tc.queue, res.Pos, tc.wantPos)
		}
	}
	if _, ok := s.queues[key("/", "excl")]; ok {
		t.Error("exclusive queue was stored")
	}
	if _, ok := s.queues[key("/", "transient")]; ok {
		t.Error("non-durable queue was stored")
	}
}

// TestStoreRemovedWhenSettled: every way a stored message leaves a queue
// removes its reference, and the body goes with the last reference.
func TestStoreRemovedWhenSettled(t *testing.T) {
	for _, tc := range []struct {
		name string
		args Table
		do   func(t *testing.T, v *VHost, q *Queue, clk *manualClock)
	}{
		{"ack", nil, func(t *testing.T, v *VHost, q *Queue, _ *manualClock) {
			d, _ := q.Get(false)
			q.Settle(nil, []uint64{d.Seq}, Ack)
		}},
		{"reject", nil, func(t *testing.T, v *VHost, q *Queue, _ *manualClock) {
			d, _ := q.Get(false)
			q.Settle(nil, []uint64{d.Seq}, Reject)
		}},
		{"get no-ack", nil, func(t *testing.T, v *VHost, q *Queue, _ *manualClock) { q.Get(true) }},
		{"purge", nil, func(t *testing.T, v *VHost, q *Queue, _ *manualClock) { v.PurgeQueue("q", 0) }},
		{"expire", Table{"x-message-ttl": int32(1000)}, func(t *testing.T, v *VHost, q *Queue, clk *manualClock) {
			clk.Advance(2 * time.Second)
		}},
		{"delete queue", nil, func(t *testing.T, v *VHost, q *Queue, _ *manualClock) { v.DeleteQueue("q", false, false, 0) }},
		{"max-length drop-head", Table{"x-max-length": int32(1)}, func(t *testing.T, v *VHost, q *Queue, _ *manualClock) {
			publish(t, v, "", "q", "newer", persistent)
			if _, refs := s2(v).counts("/", "q"); refs != 1 {
				t.Fatalf("refs after drop-head = %d, want 1", refs)
			}
			q.Get(true)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newMemStore()
			clk := newManualClock()
			v := newStoreBroker(t, s, clk, -1)
			q := declareDurable(t, v, "q", tc.args)
			publish(t, v, "", "q", "m", persistent)
			if msgs, refs := s.counts("/", "q"); msgs != 1 || refs != 1 {
				t.Fatalf("after publish: %d messages, %d refs; want 1, 1", msgs, refs)
			}
			tc.do(t, v, q, clk)
			if msgs, refs := s.counts("/", "q"); msgs != 0 || refs != 0 {
				t.Fatalf("after %s: %d messages, %d refs; want 0, 0", tc.name, msgs, refs)
			}
		})
	}
}

// s2 returns a vhost's memStore (test helper for closures).
func s2(v *VHost) *memStore { return v.store.(*memStore) }

// TestStoreOneBodyManyQueues: a message routed to three durable queues is
// stored once with three references; the body stays until the last ack.
func TestStoreOneBodyManyQueues(t *testing.T) {
	s := newMemStore()
	v := newStoreBroker(t, s, newManualClock(), -1)
	if err := v.DeclareExchange(ExchangeDecl{Name: "fan", Kind: "fanout", Durable: true}); err != nil {
		t.Fatal(err)
	}
	var qs []*Queue
	for _, n := range []string{"a", "b", "c"} {
		qs = append(qs, declareDurable(t, v, n, nil))
		bindQ(t, v, n, "fan", "", nil)
	}
	publish(t, v, "fan", "", "body", persistent)
	if len(s.msgs) != 1 {
		t.Fatalf("stored %d bodies, want 1", len(s.msgs))
	}
	for i, q := range qs {
		d, _ := q.Get(false)
		q.Settle(nil, []uint64{d.Seq}, Ack)
		if want := min(1, 2-i); len(s.msgs) != want {
			t.Fatalf("after %d acks: %d bodies, want %d", i+1, len(s.msgs), want)
		}
	}
}

// TestStorePaging: over the memory budget, stored messages that cannot be
// delivered at once leave memory and come back, in order, for delivery.
func TestStorePaging(t *testing.T) {
	s := newMemStore()
	v := newStoreBroker(t, s, newManualClock(), 500)
	q := declareDurable(t, v, "q", nil)
	body := string(make([]byte, 100))
	for i := range 50 {
		publish(t, v, "", "q", fmt.Sprintf("%03d", i)+body, persistent)
	}
	if r := v.mem.resident.Load(); r > 500 {
		t.Fatalf("resident bytes %d over the 500-byte budget", r)
	}
	_, sink := consume(t, q, ConsumeOptions{NoAck: true})
	got := bodies(sink.take())
	if len(got) != 50 {
		t.Fatalf("delivered %d, want 50", len(got))
	}
	for i, b := range got {
		if b[:3] != fmt.Sprintf("%03d", i) {
			t.Fatalf("delivery %d is %q: out of order", i, b[:3])
		}
	}
	if r := v.mem.resident.Load(); r != 0 {
		t.Fatalf("resident bytes %d after draining, want 0", r)
	}
}

// TestStoreRecover: a second broker on the same store gets the durable
// topology and messages back: in order, paged out, redelivered where they
// had been delivered, with TTLs counting from the original enqueue.
func TestStoreRecover(t *testing.T) {
	s := newMemStore()
	clk := newManualClock()
	v := newStoreBroker(t, s, clk, -1)
	if err := v.DeclareExchange(ExchangeDecl{Name: "dx", Kind: "topic", Durable: true}); err != nil {
		t.Fatal(err)
	}
	declareX(t, v, "tx", "topic", nil) // transient: not recovered
	declareDurable(t, v, "q", nil)
	declareDurable(t, v, "ttl", Table{"x-message-ttl": int32(10_000)})
	bindQ(t, v, "q", "dx", "a.#", nil)
	bindQ(t, v, "q", "tx", "b.#", nil)
	for i := range 5 {
		publish(t, v, "dx", "a.x", fmt.Sprint(i), persistent)
	}
	publish(t, v, "", "ttl", "expiring", persistent)
	q := v.Queue("q")
	d, _ := q.Get(false) // delivered, never acked: redelivered after restart
	_ = d
	clk.Advance(6 * time.Second)

	b2 := NewBroker(Options{Clock: clk, Store: s, MemoryBudget: -1})
	t.Cleanup(b2.Close)
	if err := b2.Recover(s); err != nil {
		t.Fatal(err)
	}
	v2 := b2.VHost("/")
	if v2.exchange("dx") == nil || v2.exchange("tx") != nil {
		t.Fatalf("exchanges: durable dx=%v transient tx=%v", v2.exchange("dx") != nil, v2.exchange("tx") != nil)
	}
	if res := publish(t, v2, "dx", "a.y", "new", persistent); res.Routed != 1 {
		t.Fatalf("binding dx->q not recovered: routed %d", res.Routed)
	}
	q2 := v2.Queue("q")
	var got []string
	var redelivered []bool
	for {
		d, ok := q2.Get(true)
		if !ok {
			break
		}
		got = append(got, string(d.Msg.Body))
		redelivered = append(redelivered, d.Redelivered)
	}
	if want := []string{"0", "1", "2", "3", "4", "new"}; !equalStrings(got, want) {
		t.Fatalf("recovered %q, want %q", got, want)
	}
	if !redelivered[0] || redelivered[1] {
		t.Fatalf("redelivered flags %v: want only the delivered one set", redelivered)
	}
	if n, _ := v2.Queue("ttl").Counts(); n != 1 {
		t.Fatalf("ttl queue has %d before expiry, want 1", n)
	}
	clk.Advance(5 * time.Second) // 11 s after the publish: past the 10 s TTL
	if n, _ := v2.Queue("ttl").Counts(); n != 0 {
		t.Fatalf("ttl queue has %d after its TTL ran out across the restart, want 0", n)
	}
}

// TestStoreTopology: the store follows durable declarations and deletions,
// bindings included, and ignores transient ones.
func TestStoreTopology(t *testing.T) {
	s := newMemStore()
	v := newStoreBroker(t, s, newManualClock(), -1)
	if err := v.DeclareExchange(ExchangeDecl{Name: "d", Kind: "direct", Durable: true}); err != nil {
		t.Fatal(err)
	}
	declareX(t, v, "t", "direct", nil)
	declareDurable(t, v, "q", nil)
	bindQ(t, v, "q", "d", "k", nil)
	bindQ(t, v, "q", "t", "k", nil)
	if err := v.BindExchange("d", "amq.direct", "k", nil); err != nil {
		t.Fatal(err)
	}
	if len(s.bindings) != 2 {
		t.Fatalf("stored %d bindings, want 2 (d->q and amq.direct->d)", len(s.bindings))
	}
	if err := v.DeleteExchange("d", false); err != nil {
		t.Fatal(err)
	}
	if len(s.bindings) != 0 {
		t.Fatalf("bindings of a deleted exchange still stored: %v", s.bindings)
	}
	if _, ok := s.exchanges[key("/", "d")]; ok {
		t.Fatal("deleted exchange still stored")
	}
	if _, err := v.DeleteQueue("q", false, false, 0); err != nil {
		t.Fatal(err)
	}
	if len(s.queues) != 0 {
		t.Fatalf("deleted queue still stored: %v", s.queues)
	}
}
