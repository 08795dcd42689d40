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
