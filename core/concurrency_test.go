package core

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// chanSink is a consumer whose Deliver never blocks: it refuses when its
// buffer is full, and its worker calls Resume after draining, like a
// connection with a bounded outbound buffer.
type chanSink struct {
	ch      chan Delivery
	refused atomic.Bool
}

func (s *chanSink) Deliver(d Delivery) bool {
	select {
	case s.ch <- d:
		return true
	default:
		s.refused.Store(true)
		return false
	}
}

func (s *chanSink) Cancelled(*Consumer) {}

func TestConcurrentPublishConsume(t *testing.T) {
	const (
		publishers = 4
		perPub     = 2000
		queues     = 3
		consumers  = 3 // per queue
	)
	v, _ := newTestBroker(t)
	declareX(t, v, "fan", "fanout", nil)
	qs := make([]*Queue, queues)
	for i := range qs {
		qs[i] = declareQ(t, v, fmt.Sprint("q", i), nil)
		bindQ(t, v, qs[i].Name(), "fan", "", nil)
	}
	total := publishers * perPub
	var mu sync.Mutex
	acked := make([]map[uint64]int, queues) // per queue: message ID -> acks
	for i := range acked {
		acked[i] = make(map[uint64]int)
	}
	var ackedN atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	shared := NewLimit(8) // one "channel" spans the first consumer of every queue

	for qi, q := range qs {
		for ci := range consumers {
			s := &chanSink{ch: make(chan Delivery, 4)}
			opts := ConsumeOptions{Tag: fmt.Sprint("c", ci), Prefetch: uint32(1 + ci*3)}
			if ci == 0 {
				opts.Shared = shared
			}
			c, err := q.Consume(opts, s)
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func(qi int, q *Queue, c *Consumer, s *chanSink, seed uint64) {
				defer wg.Done()
				r := rand.New(rand.NewPCG(seed, 1))
				for {
					var d Delivery
					select {
					case d = <-s.ch:
					case <-done:
						return
					case <-time.After(time.Millisecond):
						if s.refused.Swap(false) {
							c.Resume()
						}
						continue
					}
					if r.IntN(10) == 0 {
						q.Settle(c, []uint64{d.Seq}, Requeue)
					} else {
						mu.Lock()
						acked[qi][d.Msg.ID]++
						mu.Unlock()
						q.Settle(c, []uint64{d.Seq}, Ack)
						ackedN.Add(1)
					}
					if s.refused.Swap(false) {
						c.Resume()
					}
				}
			}(qi, q, c, s, uint64(qi*10+ci))
		}
	}

	// Topology churn on the side: must not disturb the fanout.
	var churn sync.WaitGroup
	churn.Add(1)
	go func() {
		defer churn.Done()
		for i := range 200 {
			name := fmt.Sprint("tmp", i)
			if _, err := v.DeclareQueue(QueueDecl{Name: name}); err != nil {
				t.Error(err)
			}
			if err := v.BindQueue(name, "fan", "", nil, 0); err != nil {
				t.Error(err)
			}
			if _, err := v.DeleteQueue(name, false, false, 0); err != nil {
				t.Error(err)
			}
		}
	}()

	var pubs sync.WaitGroup
	for range publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for range perPub {
				res, err := v.Publish(&Message{Exchange: "fan", Body: []byte("x")})
				if err != nil || res.Routed < queues {
					t.Errorf("publish: %+v %v", res, err)
					return
				}
			}
		}()
	}
	pubs.Wait()
	churn.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for ackedN.Load() < int64(total*queues) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(done)
	wg.Wait()

	for qi := range qs {
		if len(acked[qi]) != total {
			t.Errorf("queue %d: %d distinct messages acked, want %d", qi, len(acked[qi]), total)
		}
		for id, n := range acked[qi] {
			if n != 1 {
				t.Fatalf("queue %d: message %d acked %d times", qi, id, n)
			}
		}
		if n, _ := qs[qi].Counts(); n != 0 {
			t.Errorf("queue %d: %d left", qi, n)
		}
	}
	if u := shared.used.Load(); u != 0 {
		t.Errorf("shared limit leaked %d", u)
	}
}
