package bridge

import (
	"testing"

	"github.com/ferrymq/ferrymq/core"
)

// TestOutSinkBoundsBytesInFlight: a link's window is counted in messages,
// but the bodies held between the queue and the upstream's confirm stop
// at windowBytes; settling one resumes the deliveries the sink refused.
func TestOutSinkBoundsBytesInFlight(t *testing.T) {
	v := core.NewBroker(core.Options{}).VHost("/")
	if _, err := v.DeclareQueue(core.QueueDecl{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	q := v.Queue("q")
	sink := &outSink{ch: make(chan core.Delivery, 16)}
	if _, err := q.Consume(core.ConsumeOptions{Tag: "t", Prefetch: 16}, sink); err != nil {
		t.Fatal(err)
	}
	const size = windowBytes / 3 // three fit below the bound, the fourth crosses it
	for range 6 {
		if _, err := v.Publish(&core.Message{Exchange: "", RoutingKey: "q", Body: make([]byte, size)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(sink.ch); n != 4 {
		t.Fatalf("%d deliveries in flight, want 4: three below %d bytes and the one that crosses it", n, windowBytes)
	}
	sink.settle(<-sink.ch, core.Ack)
	if n := len(sink.ch); n != 4 {
		t.Fatalf("after one ack, %d deliveries in flight, want 4 (one resumed)", n)
	}
	for len(sink.ch) > 0 {
		sink.settle(<-sink.ch, core.Ack)
	}
	if msgs, _ := q.Counts(); msgs != 0 {
		t.Fatalf("queue holds %d messages after all were acked", msgs)
	}
}

// TestOutSinkBatchesAnswers: the upstream's answers are settled in
// batches, whatever order they come in; a confirmed message leaves the
// queue, an unconfirmed one goes back in its place, and nothing is
// settled twice or lost. A batch is settled by flush, or by itself when
// the last publish in flight is answered.
func TestOutSinkBatchesAnswers(t *testing.T) {
	v := core.NewBroker(core.Options{}).VHost("/")
	if _, err := v.DeclareQueue(core.QueueDecl{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	q := v.Queue("q")
	const n = 10
	sink := &outSink{ch: make(chan core.Delivery, n)}
	cons, err := q.Consume(core.ConsumeOptions{Tag: "t", Prefetch: n}, sink)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := v.Publish(&core.Message{RoutingKey: "q", Body: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	var tickets []ticket
	for range n {
		tickets = append(tickets, sink.published(<-sink.ch))
	}
	// Answers out of order: 0-4 confirmed, 5 and 7 lost, 6, 8 confirmed;
	// 9 still in flight, so nothing settles until flush.
	for _, i := range []int{3, 0, 1, 7, 4, 2, 6, 5, 8} {
		var err error
		if i == 5 || i == 7 {
			err = errLost
		}
		tickets[i].done(err)
	}
	if s := q.Stats(); s.Unacked != n {
		t.Fatalf("%d unacked before the flush, want %d: answers are settled in a batch", s.Unacked, n)
	}
	sink.flush()
	// The two lost went back to the queue in their place, and the
	// consumer has room: they are delivered again, in order.
	for _, want := range []byte{5, 7} {
		d := <-sink.ch
		if d.Msg.Body[0] != want || !d.Redelivered {
			t.Fatalf("redelivered message: got body %d (redelivered %v), want %d, in order", d.Msg.Body[0], d.Redelivered, want)
		}
		sink.settle(d, core.Ack)
	}
	if s := q.Stats(); s.Unacked != 1 || s.Messages != 0 {
		t.Fatalf("after the flush: %d unacked, %d ready; want 1 (in flight) and 0", s.Unacked, s.Messages)
	}
	tickets[9].done(nil) // the last in flight: settles at once
	if s := q.Stats(); s.Unacked != 0 || s.Messages != 0 {
		t.Fatalf("after the last answer: %d unacked, %d ready; want none", s.Unacked, s.Messages)
	}
	cons.Cancel()
	if sink.bytes != 0 {
		t.Fatalf("window holds %d bytes after every message was settled", sink.bytes)
	}
}
