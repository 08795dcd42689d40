package core

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func publishN(t testing.TB, v *VHost, q string, n int) {
	t.Helper()
	for i := range n {
		publish(t, v, "", q, fmt.Sprint(i))
	}
}

func TestPrefetchPerConsumer(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "q", nil)
	publishN(t, v, "q", 5)
	c, s := consume(t, q, ConsumeOptions{Prefetch: 2})
	ds := s.take()
	if !equalStrings(bodies(ds), []string{"0", "1"}) {
		t.Fatalf("delivered %v, want [0 1]", bodies(ds))
	}
	q.Settle(c, []uint64{ds[0].Seq}, Ack)
	if got := bodies(s.take()); !equalStrings(got, []string{"2"}) {
		t.Fatalf("after one ack delivered %v, want [2]", got)
	}
	// NoAck consumers ignore prefetch.
	_, s2 := consume(t, q, ConsumeOptions{Tag: "noack", NoAck: true, Prefetch: 1})
	if got := bodies(s2.take()); !equalStrings(got, []string{"3", "4"}) {
		t.Fatalf("no-ack consumer got %v", got)
	}
}

func TestSharedLimitAcrossQueues(t *testing.T) {
	v, _ := newTestBroker(t)
	q1 := declareQ(t, v, "q1", nil)
	q2 := declareQ(t, v, "q2", nil)
	lim := NewLimit(2)
	publishN(t, v, "q1", 2)
	c1, s1 := consume(t, q1, ConsumeOptions{Shared: lim})
	c2, s2 := consume(t, q2, ConsumeOptions{Shared: lim})
	publishN(t, v, "q2", 3)
	d1 := s1.take()
	if len(d1) != 2 || len(s2.take()) != 0 {
		t.Fatal("the shared limit did not hold")
	}
	// Acking on q1 frees room that q2's waiting consumer must use.
	q1.Settle(c1, []uint64{d1[0].Seq}, Ack)
	d2 := s2.take()
	if !equalStrings(bodies(d2), []string{"0"}) {
		t.Fatalf("q2 got %v after a q1 ack, want [0]", bodies(d2))
	}
	// Raising the limit dispatches the rest.
	lim.SetMax(10)
	if got := bodies(s2.take()); !equalStrings(got, []string{"1", "2"}) {
		t.Fatalf("after SetMax q2 got %v", got)
	}
	// Settling everything returns all credit.
	q1.Settle(c1, []uint64{d1[1].Seq}, Ack)
	q2.Settle(c2, []uint64{1, 2, 3}, Ack)
	if lim.used.Load() != 0 {
		t.Fatalf("credit leaked: %d", lim.used.Load())
	}
	// Deleting a queue returns the credit its unacked deliveries held.
	publishN(t, v, "q2", 1)
	if lim.used.Load() != 1 {
		t.Fatalf("used = %d", lim.used.Load())
	}
	if _, err := v.DeleteQueue("q2", false, false, 0); err != nil {
		t.Fatal(err)
	}
	if lim.used.Load() != 0 {
		t.Fatalf("credit leaked by deletion: %d", lim.used.Load())
	}
}

func TestRoundRobinAndPriorities(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "q", nil)
	ca, a := consume(t, q, ConsumeOptions{Tag: "a", NoAck: true})
	if ca.Tag() != "a" || ca.Queue() != q {
		t.Fatal("consumer accessors")
	}
	_, b := consume(t, q, ConsumeOptions{Tag: "b", NoAck: true})
	publishN(t, v, "q", 4)
	if got := bodies(a.take()); !equalStrings(got, []string{"0", "2"}) {
		t.Fatalf("a got %v", got)
	}
	if got := bodies(b.take()); !equalStrings(got, []string{"1", "3"}) {
		t.Fatalf("b got %v", got)
	}

	// Higher x-priority first; lower only while the higher ones have no credit.
	p := declareQ(t, v, "p", nil)
	low, ls := consume(t, p, ConsumeOptions{Tag: "low", Priority: -1})
	hi, hs := consume(t, p, ConsumeOptions{Tag: "hi", Priority: 5, Prefetch: 2})
	publishN(t, v, "p", 3)
	hd := hs.take()
	if got := bodies(hd); !equalStrings(got, []string{"0", "1"}) {
		t.Fatalf("high priority got %v", got)
	}
	if got := bodies(ls.take()); !equalStrings(got, []string{"2"}) {
		t.Fatalf("low priority got %v", got)
	}
	p.Settle(hi, seqs(hd), Ack)
	publishN(t, v, "p", 1)
	if len(hs.take()) != 1 || len(ls.take()) != 0 {
		t.Fatal("message went to the low-priority consumer while the high one had room")
	}
	_ = low
}

func TestExclusiveConsumer(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "q", nil)
	inUse := "queue 'q' in vhost '/' in exclusive use"
	c, _ := consume(t, q, ConsumeOptions{Tag: "a", Exclusive: true})
	_, err := q.Consume(ConsumeOptions{Tag: "b"}, &recSink{})
	wantErr(t, err, CodeAccessRefused, inUse)
	c.Cancel()
	consume(t, q, ConsumeOptions{Tag: "b"})
	_, err = q.Consume(ConsumeOptions{Tag: "c", Exclusive: true}, &recSink{})
	wantErr(t, err, CodeAccessRefused, inUse)
}

func TestSingleActiveConsumer(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "q", Table{"x-single-active-consumer": true})
	first, s1 := consume(t, q, ConsumeOptions{Tag: "1", Prefetch: 1})
	_, s2 := consume(t, q, ConsumeOptions{Tag: "2"})
	publishN(t, v, "q", 3)
	d1 := s1.take()
	if len(d1) != 1 || len(s2.take()) != 0 {
		t.Fatal("a non-active consumer received, or prefetch ignored")
	}
	q.Settle(first, seqs(d1), Ack)
	if got := bodies(s1.take()); !equalStrings(got, []string{"1"}) {
		t.Fatalf("active consumer got %v", got)
	}
	first.Cancel() // its unacked "1" stays outstanding; "2" goes to the next consumer
	if got := bodies(s2.take()); !equalStrings(got, []string{"2"}) {
		t.Fatalf("failover consumer got %v", got)
	}
	q.Settle(first, []uint64{2}, Requeue)
	if got := s2.take(); len(got) != 1 || string(got[0].Msg.Body) != "1" || !got[0].Redelivered {
		t.Fatalf("requeued message after failover: %v", got)
	}
}

func TestRequeueOrdering(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "q", nil)
	publishN(t, v, "q", 6)
	c, s := consume(t, q, ConsumeOptions{Prefetch: 4})
	ds := s.take() // 0 1 2 3
	q.Settle(c, []uint64{ds[0].Seq}, Ack)
	ds = append(ds[1:], s.take()...) // 1 2 3 4
	c.Cancel()
	// Requeue out of order and in separate calls: they go back by original
	// position, ahead of "5", which was never delivered.
	q.Settle(c, []uint64{ds[2].Seq}, Requeue)            // 3
	q.Settle(c, []uint64{ds[0].Seq, ds[3].Seq}, Requeue) // 1, 4
	q.Settle(c, []uint64{ds[1].Seq}, Requeue)            // 2
	q.Settle(c, []uint64{ds[1].Seq}, Requeue)            // already settled: ignored
	var got []string
	for {
		d, ok := q.Get(true)
		if !ok {
			break
		}
		got = append(got, fmt.Sprintf("%s/%v", d.Msg.Body, d.Redelivered))
	}
	want := []string{"1/true", "2/true", "3/true", "4/true", "5/false"}
	if !equalStrings(got, want) {
		t.Fatalf("order after requeue %v, want %v", got, want)
	}
}

func TestGetAndSettle(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "q", nil)
	if _, ok := q.Get(false); ok {
		t.Fatal("get on empty queue")
	}
	publishN(t, v, "q", 2)
	d, ok := q.Get(false)
	if !ok || d.Consumer != nil || string(d.Msg.Body) != "0" {
		t.Fatalf("get = %+v %v", d, ok)
	}
	if n, _ := q.Counts(); n != 1 {
		t.Fatalf("ready = %d", n)
	}
	q.Settle(nil, []uint64{d.Seq}, Requeue)
	if got := getAll(q); !equalStrings(got, []string{"0", "1"}) {
		t.Fatalf("after requeue %v", got)
	}
}

func TestSinkBackpressure(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "q", nil)
	c1, s1 := consume(t, q, ConsumeOptions{Tag: "1", NoAck: true})
	_, s2 := consume(t, q, ConsumeOptions{Tag: "2", NoAck: true})
	s1.setRefuse(true)
	s2.setRefuse(true)
	publishN(t, v, "q", 3)
	if n, _ := q.Counts(); n != 3 {
		t.Fatalf("refused messages not kept: ready %d", n)
	}
	s1.setRefuse(false)
	publish(t, v, "", "q", "3") // a blocked consumer is skipped until Resume
	if len(s1.take()) != 0 {
		t.Fatal("delivered to a consumer waiting for Resume")
	}
	c1.Resume()
	if got := bodies(s1.take()); !equalStrings(got, []string{"0", "1", "2", "3"}) {
		t.Fatalf("after Resume got %v", got)
	}
}

func TestSharedCreditReturnedOnRefusal(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "q", nil)
	lim := NewLimit(1)
	c, s := consume(t, q, ConsumeOptions{Shared: lim})
	s.setRefuse(true)
	publishN(t, v, "q", 1)
	if lim.used.Load() != 0 {
		t.Fatalf("refused delivery kept credit: %d", lim.used.Load())
	}
	s.setRefuse(false)
	c.Resume()
	if len(s.take()) != 1 || lim.used.Load() != 1 {
		t.Fatal("resume did not deliver with credit")
	}
}

func TestPriorityQueue(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "q", Table{"x-max-priority": uint8(5)})
	for i, p := range []uint8{0, 3, 9, 3, 1, 5} {
		publish(t, v, "", "q", fmt.Sprintf("%d-p%d", i, p), withPriority(p))
	}
	want := []string{"2-p9", "5-p5", "1-p3", "3-p3", "4-p1", "0-p0"} // 9 is capped at 5, FIFO within a level
	if got := getAll(q); !equalStrings(got, want) {
		t.Fatalf("priority order %v, want %v", got, want)
	}
}

func TestMaxLength(t *testing.T) {
	cases := []struct {
		name     string
		args     Table
		bodies   []string
		kept     []string
		rejected []bool
		dead     []string
	}{
		{"drop-head", Table{"x-max-length": int32(2)}, []string{"a", "b", "c"},
			[]string{"b", "c"}, []bool{false, false, false}, []string{"a"}},
		{"drop-head bytes", Table{"x-max-length-bytes": int32(4)}, []string{"aa", "bb", "c"},
			[]string{"bb", "c"}, []bool{false, false, false}, []string{"aa"}},
		{"reject-publish", Table{"x-max-length": int32(2), "x-overflow": "reject-publish"}, []string{"a", "b", "c"},
			[]string{"a", "b"}, []bool{false, false, true}, nil},
		{"reject-publish-dlx", Table{"x-max-length": int32(2), "x-overflow": "reject-publish-dlx"}, []string{"a", "b", "c"},
			[]string{"a", "b"}, []bool{false, false, true}, []string{"c"}},
		{"zero length", Table{"x-max-length": int32(0)}, []string{"a"},
			nil, []bool{false}, []string{"a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, _ := newTestBroker(t)
			declareX(t, v, "dlx", "fanout", nil)
			dlq := declareQ(t, v, "dlq", nil)
			bindQ(t, v, "dlq", "dlx", "", nil)
			args := Table{"x-dead-letter-exchange": "dlx"}
			for k, val := range tc.args {
				args[k] = val
			}
			q := declareQ(t, v, "q", args)
			for i, b := range tc.bodies {
				res := publish(t, v, "", "q", b)
				if res.Rejected != tc.rejected[i] || (res.Routed == 1) == tc.rejected[i] {
					t.Fatalf("publish %s: %+v", b, res)
				}
			}
			if got := getAll(q); !equalStrings(got, tc.kept) {
				t.Errorf("kept %v, want %v", got, tc.kept)
			}
			var dead []string
			for {
				d, ok := dlq.Get(true)
				if !ok {
					break
				}
				dead = append(dead, string(d.Msg.Body))
				if r := d.Msg.Properties.Headers["x-first-death-reason"]; r != "maxlen" {
					t.Errorf("death reason %v", r)
				}
			}
			if !equalStrings(dead, tc.dead) {
				t.Errorf("dead-lettered %v, want %v", dead, tc.dead)
			}
		})
	}
}

func TestMessageTTL(t *testing.T) {
	v, clk := newTestBroker(t)
	declareX(t, v, "dlx", "fanout", nil)
	dlq := declareQ(t, v, "dlq", nil)
	bindQ(t, v, "dlq", "dlx", "", nil)
	q := declareQ(t, v, "q", Table{"x-message-ttl": int32(1000), "x-dead-letter-exchange": "dlx"})

	publish(t, v, "", "q", "queue-ttl")
	publish(t, v, "", "q", "short", withExpiration("300"))
	publish(t, v, "", "q", "long", withExpiration("5000")) // capped by the queue's 1000
	clk.Advance(299 * time.Millisecond)
	if n, _ := q.Counts(); n != 3 {
		t.Fatalf("expired early: %d left", n)
	}
	// "short" expires only once it is at the head (RabbitMQ semantics);
	// the idle timer fires at the head's deadline and re-arms.
	clk.Advance(701 * time.Millisecond)
	if n, _ := q.Counts(); n != 0 {
		t.Fatalf("%d messages left after their TTL", n)
	}
	if got := getAll(dlq); !equalStrings(got, []string{"queue-ttl", "short", "long"}) {
		t.Fatalf("dead-lettered %v", got)
	}
	if clk.pending() != 0 {
		t.Fatalf("%d timers left armed on an empty queue", clk.pending())
	}

	// A consumer gets the message before it expires.
	_, s := consume(t, q, ConsumeOptions{NoAck: true})
	publish(t, v, "", "q", "fresh")
	if got := bodies(s.take()); !equalStrings(got, []string{"fresh"}) {
		t.Fatalf("consumer got %v", got)
	}
}

func TestZeroTTL(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "q", Table{"x-message-ttl": int32(0)})
	publish(t, v, "", "q", "nobody-home")
	if n, _ := q.Counts(); n != 0 {
		t.Fatal("TTL 0 message kept without a consumer")
	}
	_, s := consume(t, q, ConsumeOptions{NoAck: true})
	publish(t, v, "", "q", "now")
	if got := bodies(s.take()); !equalStrings(got, []string{"now"}) {
		t.Fatalf("TTL 0 with a consumer: got %v", got)
	}
	p := declareQ(t, v, "p", nil)
	publish(t, v, "", "p", "x", withExpiration("0"))
	if n, _ := p.Counts(); n != 0 {
		t.Fatal("expiration 0 message kept")
	}
}

func TestRequeuedMessageExpires(t *testing.T) {
	v, clk := newTestBroker(t)
	q := declareQ(t, v, "q", Table{"x-message-ttl": int32(100)})
	publish(t, v, "", "q", "m")
	d, _ := q.Get(false)
	clk.Advance(200 * time.Millisecond)
	q.Settle(nil, []uint64{d.Seq}, Requeue)
	if _, ok := q.Get(true); ok {
		t.Fatal("a requeued message past its TTL was delivered")
	}
}

func TestQueueExpires(t *testing.T) {
	v, clk := newTestBroker(t)
	declareQ(t, v, "q", Table{"x-expires": int32(1000)})
	clk.Advance(600 * time.Millisecond)
	if _, err := v.DeclareQueue(QueueDecl{Name: "q", Passive: true}); err != nil {
		t.Fatal(err) // a (passive) redeclare counts as a use
	}
	clk.Advance(600 * time.Millisecond)
	q := v.Queue("q")
	if q == nil {
		t.Fatal("expired despite the redeclare")
	}
	q.Get(true)
	clk.Advance(999 * time.Millisecond)
	if v.Queue("q") == nil {
		t.Fatal("expired despite the get")
	}
	c, _ := consume(t, q, ConsumeOptions{})
	clk.Advance(5 * time.Second)
	if v.Queue("q") == nil {
		t.Fatal("expired while it had a consumer")
	}
	c.Cancel()
	clk.Advance(999 * time.Millisecond)
	if v.Queue("q") == nil {
		t.Fatal("expired too early after the last consumer left")
	}
	clk.Advance(time.Millisecond)
	if v.Queue("q") != nil {
		t.Fatal("unused queue did not expire")
	}
}

func TestAutoDeleteQueue(t *testing.T) {
	v, _ := newTestBroker(t)
	if _, err := v.DeclareQueue(QueueDecl{Name: "ad", AutoDelete: true}); err != nil {
		t.Fatal(err)
	}
	q := v.Queue("ad")
	a, _ := consume(t, q, ConsumeOptions{Tag: "a"})
	b, _ := consume(t, q, ConsumeOptions{Tag: "b"})
	a.Cancel()
	if v.Queue("ad") == nil {
		t.Fatal("deleted while a consumer remained")
	}
	b.Cancel()
	if v.Queue("ad") != nil {
		t.Fatal("auto-delete queue kept after its last consumer")
	}
}

func TestDeleteCancelsConsumers(t *testing.T) {
	v, _ := newTestBroker(t)
	q := declareQ(t, v, "q", nil)
	_, s1 := consume(t, q, ConsumeOptions{Tag: "1"})
	_, s2 := consume(t, q, ConsumeOptions{Tag: "2"})
	if _, err := v.DeleteQueue("q", false, false, 0); err != nil {
		t.Fatal(err)
	}
	if s1.cancelled != 1 || s2.cancelled != 1 {
		t.Fatalf("cancel notifications %d %d", s1.cancelled, s2.cancelled)
	}
	_, err := q.Consume(ConsumeOptions{Tag: "3"}, &recSink{})
	wantErr(t, err, CodeNotFound, "no queue 'q' in vhost '/'")
}

func TestDequeRing(t *testing.T) {
	var d deque
	var want []uint64
	for i := uint64(1); i <= 100; i++ {
		d.pushBack(entry{seq: 2 * i})
		want = append(want, 2*i)
	}
	for range 90 {
		d.popFront()
		want = want[1:]
	}
	for _, s := range []uint64{1, 185, 199, 250, 183} {
		d.insert(entry{seq: s})
		want = append(want, s)
	}
	slices.Sort(want)
	var got []uint64
	for d.len() > 0 {
		got = append(got, d.popFront().seq)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("deque order %v, want %v", got, want)
	}
}
