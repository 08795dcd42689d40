package core

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// pagedQueue stores n persistent messages of size body bytes (each body
// starts with its index, "%05d") in durable queue "q", declared with args,
// and recovers them into a second broker with the given memory budget, so
// that every one is paged out. prio gives each message's priority. The
// store's record of LoadBatch calls starts empty.
func pagedQueue(t *testing.T, n, size int, budget int64, args Table, prio func(i int) uint8) (*VHost, *Queue, *memStore, *manualClock) {
	t.Helper()
	s := newMemStore()
	clk := newManualClock()
	b1 := NewBroker(Options{Clock: clk, Store: s, MemoryBudget: -1})
	v1 := b1.VHost("/")
	declareDurable(t, v1, "q", args)
	for i := range n {
		body := fmt.Sprintf("%05d", i)
		body += strings.Repeat("x", max(size-len(body), 0))
		opts := []pubOpt{persistent}
		if prio != nil {
			opts = append(opts, withPriority(prio(i)))
		}
		publish(t, v1, "", "q", body, opts...)
	}
	b1.Close() // its TTL timers must not touch the store any more
	b2 := NewBroker(Options{Clock: clk, Store: s, MemoryBudget: budget})
	t.Cleanup(b2.Close)
	if err := b2.Recover(s); err != nil {
		t.Fatal(err)
	}
	v2 := b2.VHost("/")
	s.mu.Lock()
	s.batches = nil
	s.loads = map[uint64]int{}
	s.mu.Unlock()
	return v2, v2.Queue("q"), s, clk
}

// residentOf sums the body bytes of q's ready stored entries that are in
// memory: what the vhost's resident count must hold for q.
func residentOf(q *Queue) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var n int64
	for l := range q.levels {
		d := &q.levels[l]
		for i := range d.len() {
			if e := d.at(i); e.stored && e.msg != nil {
				n += int64(e.size)
			}
		}
	}
	return n
}

// checkResident fails unless the vhost's resident bytes are exactly the
// in-memory bodies of q (the only queue of the test's broker).
func checkResident(t *testing.T, v *VHost, q *Queue, when string) {
	t.Helper()
	if got, want := v.mem.resident.Load(), residentOf(q); got != want {
		t.Fatalf("%s: resident bytes %d, want %d (the in-memory bodies of ready entries)", when, got, want)
	}
}

func (s *memStore) takeBatches() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.batches
	s.batches = nil
	return b
}

// drain consumes every ready message of q with a consumer that has
// prefetch 1 (acking each), checking the resident count after every
// delivery, and returns the bodies' indexes in delivery order.
func drain(t *testing.T, v *VHost, q *Queue) []string {
	t.Helper()
	c, sink := consume(t, q, ConsumeOptions{Tag: "drain", Prefetch: 1})
	var got []string
	for {
		ds := sink.take()
		if len(ds) == 0 {
			break
		}
		checkResident(t, v, q, fmt.Sprintf("after %d deliveries", len(got)+len(ds)))
		for _, d := range ds {
			got = append(got, string(d.Msg.Body[:5]))
		}
		q.Settle(c, seqs(ds), Ack)
	}
	c.Cancel()
	return got
}

func indexes(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%05d", i))
	}
	return out
}

// TestPageInWindow: a consumer reading a paged-out backlog reads it back in
// windows of at most 256 entries and 1 MiB of bodies (at least one entry,
// however large; 64 KiB when resident bodies fill the memory budget), per
// priority level, in order; what a window read stays counted as resident
// until delivered, and nothing is left counted after the drain.
func TestPageInWindow(t *testing.T) {
	for _, tc := range []struct {
		name        string
		n, size     int
		budget      int64
		args        Table
		prio        func(int) uint8
		wantBatches []int
		wantOrder   []string // nil: indexes in publish order
	}{
		{name: "small messages: 256 a window", n: 600, size: 16, budget: -1, wantBatches: []int{256, 256, 88}},
		{name: "100 KiB messages: 1 MiB a window", n: 25, size: 100 << 10, budget: -1, wantBatches: []int{10, 10, 5}},
		{name: "2 MiB messages: one a window", n: 3, size: 2 << 20, budget: -1, wantBatches: []int{1, 1, 1}},
		{name: "budget nearly used: 64 KiB a window", n: 150, size: 1 << 10, budget: 1000, wantBatches: []int{64, 64, 22}},
		{name: "budget with room: up to 1 MiB", n: 150, size: 1 << 10, budget: 100 << 10, wantBatches: []int{100, 50}},
		{
			name: "priority levels apart", n: 20, size: 16, budget: -1,
			args: Table{"x-max-priority": int32(5)},
			prio: func(i int) uint8 { return uint8(5 * (i % 2)) },
			// The odd indexes (priority 5) first, then the even ones.
			wantBatches: []int{10, 10},
			wantOrder: append(
				slices.DeleteFunc(indexes(0, 20), func(s string) bool { return (s[4]-'0')%2 == 0 }),
				slices.DeleteFunc(indexes(0, 20), func(s string) bool { return (s[4]-'0')%2 == 1 })...),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, q, s, _ := pagedQueue(t, tc.n, tc.size, tc.budget, tc.args, tc.prio)
			checkResident(t, v, q, "recovered")
			got := drain(t, v, q)
			want := tc.wantOrder
			if want == nil {
				want = indexes(0, tc.n)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("delivered %v, want %v", got, want)
			}
			if b := s.takeBatches(); !slices.Equal(b, tc.wantBatches) {
				t.Errorf("LoadBatch sizes %v, want %v", b, tc.wantBatches)
			}
			if r := v.mem.resident.Load(); r != 0 {
				t.Errorf("resident bytes %d after the drain, want 0", r)
			}
		})
	}
}

// TestPageInResident: bodies a window read back stay resident until they
// leave the queue, and every way out uncounts them: delivery, purge,
// requeue (counted again), expiry, deletion, and dead-lettering a paged-out
// message (read for the dead letter, never counted).
func TestPageInResident(t *testing.T) {
	const n, size = 50, 100
	for _, tc := range []struct {
		name string
		args Table
		do   func(t *testing.T, v *VHost, q *Queue, clk *manualClock)
	}{
		{"purge", nil, func(t *testing.T, v *VHost, q *Queue, _ *manualClock) {
			if _, err := v.PurgeQueue("q", 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"requeue", nil, func(t *testing.T, v *VHost, q *Queue, _ *manualClock) {
			d, ok := q.Get(false)
			if !ok {
				t.Fatal("get: empty")
			}
			checkResident(t, v, q, "got one")
			q.Settle(nil, []uint64{d.Seq}, Requeue)
			checkResident(t, v, q, "requeued")
			if got := drain(t, v, q); len(got) != n-1 || got[0] != "00001" {
				t.Fatalf("after the requeue drained %d from %v, want %d from 00001", len(got), got[:1], n-1)
			}
		}},
		{"expire", Table{"x-message-ttl": int32(1000)}, func(t *testing.T, v *VHost, q *Queue, clk *manualClock) {
			clk.Advance(2 * time.Second)
		}},
		{"delete", nil, func(t *testing.T, v *VHost, q *Queue, _ *manualClock) {
			if _, err := v.DeleteQueue("q", false, false, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"dead-letter paged out", Table{"x-message-ttl": int32(1000), "x-dead-letter-exchange": "dlx"}, func(t *testing.T, v *VHost, q *Queue, clk *manualClock) {
			clk.Advance(2 * time.Second)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, q, _, clk := pagedQueue(t, n, size, -1, tc.args, nil)
			declareX(t, v, "dlx", "fanout", nil) // unbound: dead letters go nowhere
			// A consumer that takes one and refuses the rest leaves a window
			// read and waiting, resident.
			c, sink := consume(t, q, ConsumeOptions{Tag: "one", Prefetch: 1})
			if len(sink.take()) != 1 {
				t.Fatal("no first delivery")
			}
			if r := v.mem.resident.Load(); r != (n-1)*size {
				t.Fatalf("resident bytes %d with one delivered of a window of %d, want %d", r, n, (n-1)*size)
			}
			c.Cancel()
			// Page the rest out again except the head, as if it had arrived
			// over the budget: the ways out below see both kinds.
			q.mu.Lock()
			for i := 1; i < q.levels[0].len(); i++ {
				e := q.levels[0].at(i)
				e.msg = nil
				v.mem.resident.Add(-int64(e.size))
			}
			q.mu.Unlock()
			checkResident(t, v, q, "half paged out")
			tc.do(t, v, q, clk)
			checkResident(t, v, q, tc.name)
			if r := v.mem.resident.Load(); r != 0 {
				t.Fatalf("resident bytes %d after %s, want 0", r, tc.name)
			}
		})
	}
}

// TestPageInUnreadable: messages the store cannot read are dropped as they
// reach the head, each counted once (queue WARN counter and the vhost's
// unreadable drops) and removed from the store, whether they are at the
// head of a window or further back; the rest is delivered in order, each
// unreadable id is read at most twice, and a channel's shared credit taken
// for a dropped message is given back.
func TestPageInUnreadable(t *testing.T) {
	const n = 10
	for _, tc := range []struct {
		name string
		bad  []int // indexes of unreadable messages
		get  bool  // read with basic.get instead of a consumer
	}{
		{name: "head", bad: []int{0, 1}},
		{name: "middle", bad: []int{4, 7}},
		{name: "tail", bad: []int{9}},
		{name: "all", bad: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{name: "get: head and middle", bad: []int{0, 5}, get: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, q, s, _ := pagedQueue(t, n, 16, -1, nil, nil)
			var ids []uint64
			q.mu.Lock()
			for i := range q.levels[0].len() {
				ids = append(ids, q.levels[0].at(i).id)
			}
			q.mu.Unlock()
			s.mu.Lock()
			s.unreadable = map[uint64]bool{}
			for _, i := range tc.bad {
				s.unreadable[ids[i]] = true
			}
			s.mu.Unlock()
			var want []string
			for i := range n {
				if !slices.Contains(tc.bad, i) {
					want = append(want, fmt.Sprintf("%05d", i))
				}
			}

			var got []string
			if tc.get {
				for {
					d, ok := q.Get(true)
					if !ok {
						break
					}
					got = append(got, string(d.Msg.Body[:5]))
				}
			} else {
				lim := NewLimit(1)
				c, sink := consume(t, q, ConsumeOptions{Tag: "c", Shared: lim})
				for {
					ds := sink.take()
					if len(ds) == 0 {
						break
					}
					for _, d := range ds {
						got = append(got, string(d.Msg.Body[:5]))
					}
					q.Settle(c, seqs(ds), Ack)
				}
				if used := lim.used.Load(); used != 0 {
					t.Errorf("shared limit holds %d credits after every delivery was acked, want 0", used)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("delivered %v, want %v", got, want)
			}
			q.mu.Lock()
			unreadable := q.unreadable
			q.mu.Unlock()
			if unreadable != uint64(len(tc.bad)) {
				t.Errorf("queue counted %d unreadable, want %d", unreadable, len(tc.bad))
			}
			if d := v.Counters().Dropped[DropUnreadable]; d != uint64(len(tc.bad)) {
				t.Errorf("vhost counted %d unreadable drops, want %d", d, len(tc.bad))
			}
			if _, refs := s.counts("/", "q"); refs != 0 {
				t.Errorf("%d references left in the store, want 0 (unreadable ones removed too)", refs)
			}
			s.mu.Lock()
			for _, i := range tc.bad {
				if r := s.loads[ids[i]]; r > 2 {
					t.Errorf("unreadable message %d read %d times, want at most 2", i, r)
				}
			}
			s.mu.Unlock()
			if r := v.mem.resident.Load(); r != 0 {
				t.Errorf("resident bytes %d after the drain, want 0", r)
			}
		})
	}
}
