package core

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// discardSink accepts everything and keeps nothing.
type discardSink struct{ last Delivery }

func (s *discardSink) Deliver(d Delivery) bool { s.last = d; return true }
func (s *discardSink) Cancelled(*Consumer)     {}

func BenchmarkPublishConsumeNoAck(b *testing.B) {
	v, _ := newTestBroker(b)
	q := declareQ(b, v, "q", nil)
	if _, err := q.Consume(ConsumeOptions{Tag: "c", NoAck: true}, &discardSink{}); err != nil {
		b.Fatal(err)
	}
	msg := &Message{Exchange: "", RoutingKey: "q", Body: make([]byte, 64)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Publish(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPublishConsumeSettle(b *testing.B) {
	v, _ := newTestBroker(b)
	q := declareQ(b, v, "q", nil)
	s := &discardSink{}
	c, err := q.Consume(ConsumeOptions{Tag: "c", Prefetch: 100, Shared: NewLimit(1000)}, s)
	if err != nil {
		b.Fatal(err)
	}
	msg := &Message{Exchange: "", RoutingKey: "q", Body: make([]byte, 64)}
	var tag [1]uint64
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Publish(msg); err != nil {
			b.Fatal(err)
		}
		tag[0] = s.last.Seq
		q.Settle(c, tag[:], Ack)
	}
}

func BenchmarkFanout10(b *testing.B) {
	v, _ := newTestBroker(b)
	declareX(b, v, "fan", "fanout", nil)
	for i := range 10 {
		q := declareQ(b, v, fmt.Sprint("q", i), nil)
		bindQ(b, v, q.Name(), "fan", "", nil)
		if _, err := q.Consume(ConsumeOptions{Tag: "c", NoAck: true}, &discardSink{}); err != nil {
			b.Fatal(err)
		}
	}
	msg := &Message{Exchange: "fan", Body: make([]byte, 64)}
	b.ReportAllocs()
	for b.Loop() {
		if res, err := v.Publish(msg); err != nil || res.Routed != 10 {
			b.Fatal(res, err)
		}
	}
}

func BenchmarkTopic10kBindings(b *testing.B) {
	v, _ := newTestBroker(b)
	declareX(b, v, "t", "topic", nil)
	const queues = 100
	for i := range queues {
		q := declareQ(b, v, fmt.Sprint("q", i), nil)
		if _, err := q.Consume(ConsumeOptions{Tag: "c", NoAck: true}, &discardSink{}); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 10000 {
		var key string
		switch i % 4 {
		case 0:
			key = fmt.Sprintf("site%d.dev%d.temp", i%50, i)
		case 1:
			key = fmt.Sprintf("site%d.*.temp", i%50)
		case 2:
			key = fmt.Sprintf("site%d.#", i%50)
		default:
			key = fmt.Sprintf("*.dev%d.#", i)
		}
		bindQ(b, v, fmt.Sprint("q", i%queues), "t", key, nil)
	}
	msg := &Message{Exchange: "t", RoutingKey: "site7.dev7.temp", Body: make([]byte, 64)}
	b.ReportAllocs()
	for b.Loop() {
		if res, err := v.Publish(msg); err != nil || res.Routed == 0 {
			b.Fatal(res, err)
		}
	}
}

// BenchmarkPublishConsumeParallel publishes from every P into queues of
// one vhost, one queue per goroutine, each with an auto-ack consumer: what
// the publishers share is the vhost (its lock, its counters), not a queue.
func BenchmarkPublishConsumeParallel(b *testing.B) {
	v, _ := newTestBroker(b)
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		name := fmt.Sprint("q", next.Add(1))
		q := declareQ(b, v, name, nil)
		if _, err := q.Consume(ConsumeOptions{Tag: "c", NoAck: true}, &discardSink{}); err != nil {
			b.Error(err)
			return
		}
		msg := &Message{Exchange: "", RoutingKey: name, Body: make([]byte, 64)}
		for pb.Next() {
			if _, err := v.Publish(msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
