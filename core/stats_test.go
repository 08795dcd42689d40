package core

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"
)

// TestCounters drives each path that moves a counter and checks every
// counter of the vhost and the queue afterwards, so that a path counting
// twice or in the wrong place shows up as a difference.
func TestCounters(t *testing.T) {
	type want struct {
		published, unroutable uint64
		queue                 MessageCounters // of queue "q"
		dropped, dead         map[DropReason]uint64
	}
	tests := []struct {
		name string
		run  func(t *testing.T, v *VHost, clk *manualClock)
		want want
	}{
		{
			name: "publish to a queue and to nowhere",
			run: func(t *testing.T, v *VHost, _ *manualClock) {
				declareQ(t, v, "q", nil)
				publish(t, v, "", "q", "a")
				publish(t, v, "", "q", "b")
				publish(t, v, "", "nowhere", "c")
			},
			want: want{published: 3, unroutable: 1, queue: MessageCounters{Published: 2}},
		},
		{
			name: "consume with acks, then requeue and redeliver",
			run: func(t *testing.T, v *VHost, _ *manualClock) {
				q := declareQ(t, v, "q", nil)
				c, s := consume(t, q, ConsumeOptions{})
				publish(t, v, "", "q", "a")
				publish(t, v, "", "q", "b")
				ds := s.take()
				q.Settle(c, seqs(ds[:1]), Ack)
				q.Settle(c, seqs(ds[1:]), Requeue) // delivered again at once, redelivered
				q.Settle(c, seqs(s.take()), Ack)
			},
			want: want{published: 2, queue: MessageCounters{Published: 2, Delivered: 3, Redelivered: 1, Acked: 2}},
		},
		{
			name: "auto-ack consumer",
			run: func(t *testing.T, v *VHost, _ *manualClock) {
				q := declareQ(t, v, "q", nil)
				consume(t, q, ConsumeOptions{NoAck: true})
				publish(t, v, "", "q", "a")
			},
			want: want{published: 1, queue: MessageCounters{Published: 1, DeliveredNoAck: 1}},
		},
		{
			name: "basic.get with and without ack, and empty",
			run: func(t *testing.T, v *VHost, _ *manualClock) {
				q := declareQ(t, v, "q", nil)
				publish(t, v, "", "q", "a")
				publish(t, v, "", "q", "b")
				d, _ := q.Get(false)
				q.Settle(nil, []uint64{d.Seq}, Ack)
				q.Get(true)
				q.Get(true)
			},
			want: want{published: 2, queue: MessageCounters{Published: 2, Got: 1, GotNoAck: 1, GetEmpty: 1, Acked: 1}},
		},
		{
			name: "expired without and with a dead-letter exchange",
			run: func(t *testing.T, v *VHost, clk *manualClock) {
				declareQ(t, v, "q", Table{"x-message-ttl": int64(10)})
				declareQ(t, v, "dlq", nil)
				declareQ(t, v, "q2", Table{"x-message-ttl": int64(10), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
				publish(t, v, "", "q", "a")
				publish(t, v, "", "q2", "b")
				clk.Advance(time.Second)
			},
			want: want{published: 2, queue: MessageCounters{Published: 1},
				dropped: map[DropReason]uint64{DropExpired: 1}, dead: map[DropReason]uint64{DropExpired: 1}},
		},
		{
			name: "max length: drop-head and reject-publish",
			run: func(t *testing.T, v *VHost, _ *manualClock) {
				declareQ(t, v, "q", Table{"x-max-length": int64(1)})
				declareQ(t, v, "r", Table{"x-max-length": int64(1), "x-overflow": "reject-publish"})
				publish(t, v, "", "q", "a")
				publish(t, v, "", "q", "b")
				publish(t, v, "", "r", "a")
				if res := publish(t, v, "", "r", "b"); !res.Rejected {
					t.Fatal("reject-publish did not reject")
				}
			},
			// The rejected publish reached no queue but is not unroutable: the publisher gets a nack.
			want: want{published: 4, queue: MessageCounters{Published: 2},
				dropped: map[DropReason]uint64{DropMaxLen: 1, DropOverflow: 1}},
		},
		{
			name: "rejected, to a missing dead-letter exchange",
			run: func(t *testing.T, v *VHost, _ *manualClock) {
				q := declareQ(t, v, "q", Table{"x-dead-letter-exchange": "gone"})
				c, s := consume(t, q, ConsumeOptions{})
				publish(t, v, "", "q", "a")
				q.Settle(c, seqs(s.take()), Reject)
			},
			want: want{published: 1, queue: MessageCounters{Published: 1, Delivered: 1},
				dead: map[DropReason]uint64{DropRejected: 1}, dropped: map[DropReason]uint64{DropDeadLetterUnroutable: 1}},
		},
		{
			name: "beyond a backlog limit",
			run: func(t *testing.T, v *VHost, _ *manualClock) {
				q := declareQ(t, v, "q", nil)
				q.SetBacklogLimit(BacklogLimit{Messages: 1, DropAll: true})
				publish(t, v, "", "q", "a")
				publish(t, v, "", "q", "b")
			},
			// Dropped by the queue, not unroutable: the queue took it (as Mosquitto drops QoS 0).
			want: want{published: 2, queue: MessageCounters{Published: 1}, dropped: map[DropReason]uint64{DropBacklog: 1}},
		},
		{
			name: "a deleted queue's counts stay in the vhost",
			run: func(t *testing.T, v *VHost, _ *manualClock) {
				q := declareQ(t, v, "gone", nil)
				publish(t, v, "", "gone", "a")
				q.Get(true)
				if _, err := v.DeleteQueue("gone", false, false, 0); err != nil {
					t.Fatal(err)
				}
				declareQ(t, v, "q", nil)
			},
			want: want{published: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, clk := newTestBroker(t)
			tt.run(t, v, clk)
			got := v.Counters()
			if got.VHost != "/" || got.Published != tt.want.published || got.Unroutable != tt.want.unroutable {
				t.Errorf("vhost %q published %d unroutable %d, want / %d %d", got.VHost, got.Published, got.Unroutable, tt.want.published, tt.want.unroutable)
			}
			if q := v.Queue("q"); q != nil {
				if c := q.Counters(); c != tt.want.queue {
					t.Errorf("queue counters\n got %+v\nwant %+v", c, tt.want.queue)
				}
			}
			for r := range NumDropReasons {
				if got.Dropped[r] != tt.want.dropped[r] {
					t.Errorf("dropped %s = %d, want %d", r, got.Dropped[r], tt.want.dropped[r])
				}
				if got.DeadLettered[r] != tt.want.dead[r] {
					t.Errorf("dead-lettered %s = %d, want %d", r, got.DeadLettered[r], tt.want.dead[r])
				}
			}
			// The vhost's sums include every queue, deleted ones too.
			var sum MessageCounters
			v.EachQueue(func(s QueueFigures) { sum.add(&s.Counters) })
			_, dead, retired := v.countersSnapshot()
			sum.add(&retired)
			for _, q := range dead {
				c := q.Counters()
				sum.add(&c)
			}
			if sum != got.Queues {
				t.Errorf("vhost queue sums %+v, want %+v", got.Queues, sum)
			}
		})
	}
}

// TestCountersDeletedQueue checks that the counts of a deleted queue move
// into the vhost's sums and are not lost or counted twice.
func TestCountersDeletedQueue(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "gone", nil)
	publish(t, v, "", "gone", "a")
	q.Get(true)
	before := v.Counters().Queues
	if _, err := v.DeleteQueue("gone", false, false, 0); err != nil {
		t.Fatal(err)
	}
	after := v.Counters().Queues
	want := MessageCounters{Published: 1, GotNoAck: 1}
	if before != want || after != want {
		t.Fatalf("sums before %+v, after %+v, want %+v both", before, after, want)
	}
	if got := after.DeliverGet(); got != 1 {
		t.Fatalf("DeliverGet = %d, want 1", got)
	}
}

// TestCountersNoAllocs: counting adds no allocation to publish, deliver and
// ack (the benchmarks' paths).
func TestCountersNoAllocs(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "q", nil)
	s := &discardSink{}
	c, err := q.Consume(ConsumeOptions{Tag: "c", Prefetch: 100}, s)
	if err != nil {
		t.Fatal(err)
	}
	msg := &Message{RoutingKey: "q", Body: make([]byte, 64)}
	var tag [1]uint64
	// Warm up the router pool and the unacked map.
	for range 10 {
		_, _ = v.Publish(msg)
		tag[0] = s.last.Seq
		q.Settle(c, tag[:], Ack)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := v.Publish(msg); err != nil {
			t.Fatal(err)
		}
		tag[0] = s.last.Seq
		q.Settle(c, tag[:], Ack)
	})
	// Under -race sync.Pool drops the router at random; the counts below
	// are still checked.
	if allocs != 0 && !raceEnabled {
		t.Fatalf("%v allocations per publish+deliver+ack, want 0", allocs)
	}
	if got := q.Counters(); got.Published != got.Acked || got.Delivered != got.Acked || got.Acked < 1010 {
		t.Fatalf("counters %+v", got)
	}
}

// TestTotalsAndConnectionCounts checks the current-state sums that the
// metrics scrape reads: queues, ready, unacked, consumers by protocol, and
// connections and channels by protocol.
func TestTotalsAndConnectionCounts(t *testing.T) {
	users := NewUsers()
	must(t, users.Put(UserSpec{Name: "u", PasswordHash: HashPassword("pw")}))
	must(t, users.SetPermissions("u", "/", FullPermissions))
	b := NewBroker(Options{})
	defer b.Close()
	ctx := context.Background()
	p, err := NewAuth(users).Login(ctx, LoginRequest{Username: "u", Password: "pw"})
	must(t, err)
	open := func(proto string, channels int) *Access {
		a, err := b.Open(ctx, p, "/", ConnInfo{Protocol: proto})
		must(t, err)
		for range channels {
			must(t, a.OpenChannel())
		}
		return a
	}
	a1, a2, m := open("amqp", 2), open("amqp", 1), open("mqtt", 0)
	defer a1.Close()
	defer m.Close()
	a2.Close()
	got := map[string]ProtocolConns{}
	for _, c := range b.ConnectionCounts() {
		got[c.Protocol] = c
	}
	if got["amqp"] != (ProtocolConns{"amqp", 1, 2}) || got["mqtt"] != (ProtocolConns{"mqtt", 1, 0}) || len(got) != 2 {
		t.Errorf("connection counts %+v", got)
	}

	v := b.VHost("/")
	q1, q2 := declareQ(t, v, "q1", nil), declareQ(t, v, "q2", nil)
	consume(t, q1, ConsumeOptions{Protocol: "amqp"})
	consume(t, q1, ConsumeOptions{Tag: "c2", Protocol: "amqp"})
	consume(t, q2, ConsumeOptions{Protocol: "mqtt", Prefetch: 1})
	publish(t, v, "", "q2", "one")  // delivered, unacked
	publish(t, v, "", "q2", "two!") // ready: the prefetch of 1 is taken
	tot := v.Counters().Totals
	want := QueueTotals{Queues: 2, Ready: 1, ReadyBytes: 4, Unacked: 1, Consumers: 3}
	by := tot.ConsumersBy
	tot.ConsumersBy = nil
	if !reflect.DeepEqual(tot, want) || by["amqp"] != 2 || by["mqtt"] != 1 {
		t.Errorf("totals %+v by %v, want %+v and amqp 2, mqtt 1", tot, by, want)
	}
}

// TestPublishInternal: the broker's own messages route through an
// internal exchange, which refuses client publishes, and are not counted
// as client publishes.
func TestPublishInternal(t *testing.T) {
	v, _ := newTestBroker(t)
	if err := v.DeclareExchange(ExchangeDecl{Name: "sys", Kind: "topic", Internal: true}); err != nil {
		t.Fatal(err)
	}
	q := declareQ(t, v, "q", nil)
	bindQ(t, v, "q", "sys", "#", nil)
	if _, err := v.Publish(&Message{Exchange: "sys", RoutingKey: "a"}); err == nil {
		t.Fatal("a client publish to an internal exchange was accepted")
	}
	res, err := v.PublishInternal(&Message{Exchange: "sys", RoutingKey: "a"})
	if err != nil || res.Routed != 1 {
		t.Fatalf("PublishInternal: %+v, %v", res, err)
	}
	if _, err := v.PublishInternal(&Message{Exchange: "missing"}); err == nil {
		t.Fatal("PublishInternal to a missing exchange succeeded")
	}
	if c := v.Counters(); c.Published != 0 || c.Unroutable != 0 || q.Counters().Published != 1 {
		t.Fatalf("counters %+v, queue %+v: want no client publish, one enqueue", c, q.Counters())
	}
}

// TestCountersConcurrent: publishers on several goroutines and consumers
// acking on theirs, into queues of one vhost; no count is lost or doubled
// (-race checks the accesses), and a queue deleted meanwhile keeps its
// counts in the vhost's sums.
func TestCountersConcurrent(t *testing.T) {
	v, _ := newTestBroker(t)
	const queues, perQueue = 4, 2000
	var sinks []*ackSink
	for i := range queues {
		name := fmt.Sprint("q", i)
		q := declareQ(t, v, name, nil)
		s := &ackSink{q: q}
		c, err := q.Consume(ConsumeOptions{Tag: "c", Prefetch: 50}, s)
		if err != nil {
			t.Fatal(err)
		}
		s.c = c
		sinks = append(sinks, s)
	}
	var wg sync.WaitGroup
	for i := range queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perQueue {
				if _, err := v.Publish(&Message{RoutingKey: fmt.Sprint("q", i), Body: []byte("x")}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, s := range sinks {
		s.drain()
	}
	if _, err := v.DeleteQueue("q0", false, false, 0); err != nil {
		t.Fatal(err)
	}
	c := v.Counters()
	want := uint64(queues * perQueue)
	if c.Published != want || c.Queues.Published != want || c.Queues.Delivered != want || c.Queues.Acked != want {
		t.Fatalf("published %d, queues %+v; want %d published, enqueued, delivered and acked", c.Published, c.Queues, want)
	}
}

// ackSink records deliveries; drain acks them until none are left.
type ackSink struct {
	q   *Queue
	c   *Consumer
	mu  sync.Mutex
	tag []uint64
}

func (s *ackSink) Deliver(d Delivery) bool {
	s.mu.Lock()
	s.tag = append(s.tag, d.Seq)
	s.mu.Unlock()
	return true
}

func (s *ackSink) Cancelled(*Consumer) {}

func (s *ackSink) drain() {
	for {
		s.mu.Lock()
		tags := s.tag
		s.tag = nil
		s.mu.Unlock()
		if len(tags) == 0 {
			return
		}
		s.q.Settle(s.c, tags, Ack)
	}
}

// TestCountersMonotonicUnderDeletes: while queues are declared, used and
// deleted (past the graveyard's size, so that it is summed), the vhost's
// sums read concurrently never go backwards and end exact.
func TestCountersMonotonicUnderDeletes(t *testing.T) {
	v, _ := newTestBroker(t)
	const n = 3 * graveyardMax
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			// Not the t.Fatal helpers: this is not the test's goroutine.
			name := fmt.Sprint("tmp", i)
			if _, err := v.DeclareQueue(QueueDecl{Name: name}); err != nil {
				t.Error(err)
				return
			}
			if _, err := v.Publish(&Message{RoutingKey: name, Body: []byte("x")}); err != nil {
				t.Error(err)
				return
			}
			v.Queue(name).Get(true)
			if _, err := v.DeleteQueue(name, false, false, 0); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var last MessageCounters
	check := func() {
		c := v.Counters().Queues
		if c.Published < last.Published || c.GotNoAck < last.GotNoAck {
			t.Fatalf("sums went backwards: %+v after %+v", c, last)
		}
		last = c
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		check()
	}
	check()
	if last.Published != n || last.GotNoAck != n {
		t.Fatalf("final sums %+v, want %d published and got", last, n)
	}
}
