package amqp_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
)

// concurrencyTimeout bounds the many-message tests; -race makes them slow.
const concurrencyTimeout = 90 * time.Second

// TestE2EConcurrentWorkQueue: 4 publisher connections and 4 consumer
// connections share one queue; 20k messages are each delivered exactly
// once, and every publish is confirmed.
func TestE2EConcurrentWorkQueue(t *testing.T) {
	t.Parallel()
	const publishers, consumers, perPublisher = 4, 4, 5000
	const total = publishers * perPublisher
	url, _, _ := startServer(t, amqp.Config{})
	setup := openChannel(t, dial(t, url))
	q := declareQueue(t, setup, "work", nil)

	var (
		mu        sync.Mutex
		seen      = make(map[string]int, total)
		perCons   [consumers]int
		unique    atomic.Int64
		allSeen   = make(chan struct{})
		closeOnce sync.Once
		wg        sync.WaitGroup
		stop      = make(chan struct{})
	)
	for c := range consumers {
		ch := openChannel(t, dial(t, url))
		if err := ch.Qos(100, 0, false); err != nil {
			t.Fatalf("qos: %v", err)
		}
		ds := consume(t, ch, q, false, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case d, ok := <-ds:
					if !ok {
						return
					}
					if d.Redelivered {
						t.Errorf("consumer %d: %q redelivered", c, d.Body)
					}
					mu.Lock()
					seen[string(d.Body)]++
					first := seen[string(d.Body)] == 1
					perCons[c]++
					mu.Unlock()
					if err := d.Ack(false); err != nil {
						t.Errorf("consumer %d: ack: %v", c, err)
						return
					}
					if first && unique.Add(1) == total {
						closeOnce.Do(func() { close(allSeen) })
					}
				}
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()

	var pubWG sync.WaitGroup
	for p := range publishers {
		conn := dial(t, url)
		ch, confirms, _ := confirmChannel(t, conn, perPublisher)
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			ctx, cancel := context.WithTimeout(context.Background(), concurrencyTimeout)
			defer cancel()
			for i := range perPublisher {
				body := []byte("p" + strconv.Itoa(p) + "-" + strconv.Itoa(i))
				if err := ch.PublishWithContext(ctx, "", q, false, false, amqp091.Publishing{Body: body}); err != nil {
					t.Errorf("publisher %d: publish %d: %v", p, i, err)
					return
				}
			}
			for i := 1; i <= perPublisher; i++ {
				select {
				case c, ok := <-confirms:
					if !ok {
						t.Errorf("publisher %d: confirms closed after %d", p, i-1)
						return
					}
					if !c.Ack || c.DeliveryTag != uint64(i) {
						t.Errorf("publisher %d: confirm %+v, want ack of %d", p, c, i)
						return
					}
				case <-ctx.Done():
					t.Errorf("publisher %d: %d of %d confirms within %v", p, i-1, perPublisher, concurrencyTimeout)
					return
				}
			}
		}()
	}
	pubWG.Wait()
	if t.Failed() {
		t.FailNow()
	}

	select {
	case <-allSeen:
	case <-time.After(concurrencyTimeout):
		t.Fatalf("%d of %d messages delivered within %v", unique.Load(), total, concurrencyTimeout)
	}
	mu.Lock()
	defer mu.Unlock()
	for p := range publishers {
		for i := range perPublisher {
			if n := seen["p"+strconv.Itoa(p)+"-"+strconv.Itoa(i)]; n != 1 {
				t.Errorf("message p%d-%d delivered %d times, want exactly once", p, i, n)
			}
		}
	}
	if len(seen) != total {
		t.Errorf("%d distinct bodies delivered, want %d", len(seen), total)
	}
	for c, n := range perCons {
		if n == 0 {
			t.Errorf("consumer %d got nothing; the queue should spread work over all consumers", c)
		}
	}
	t.Logf("deliveries per consumer: %v", perCons)
}

// TestE2EConcurrentFanoutOrdering: 4 publishers on their own connections
// feed a fanout exchange bound to 4 queues, each consumed on its own
// connection. Every consumer gets every message, and each publisher's
// messages in publish order (one channel -> one queue -> one consumer is
// FIFO in RabbitMQ).
func TestE2EConcurrentFanoutOrdering(t *testing.T) {
	t.Parallel()
	const publishers, queues, perPublisher = 4, 4, 1000
	const total = publishers * perPublisher
	url, _, _ := startServer(t, amqp.Config{})
	setup := openChannel(t, dial(t, url))
	declareExchange(t, setup, "fan", "fanout", nil)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	done := make(chan int, queues)
	for qi := range queues {
		q := declareQueue(t, setup, fmt.Sprint("fan-", qi), nil)
		bindQueue(t, setup, q, "", "fan", nil)
		ds := consume(t, openChannel(t, dial(t, url)), q, true, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var next [publishers]int
			for n := 0; n < total; {
				select {
				case <-stop:
					return
				case d, ok := <-ds:
					if !ok {
						t.Errorf("queue %d: deliveries closed after %d", qi, n)
						return
					}
					p, i, err := parseSeq(string(d.Body))
					if err != nil || p >= publishers {
						t.Errorf("queue %d: bad body %q", qi, d.Body)
						return
					}
					if i != next[p] {
						t.Errorf("queue %d: publisher %d message %d arrived when %d was expected (lost, duplicated or reordered)", qi, p, i, next[p])
						return
					}
					next[p]++
					n++
				}
			}
			done <- qi
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()

	var pubWG sync.WaitGroup
	for p := range publishers {
		ch := openChannel(t, dial(t, url))
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			ctx, cancel := context.WithTimeout(context.Background(), concurrencyTimeout)
			defer cancel()
			for i := range perPublisher {
				if err := ch.PublishWithContext(ctx, "fan", "", false, false, amqp091.Publishing{Body: []byte(fmt.Sprintf("%d:%d", p, i))}); err != nil {
					t.Errorf("publisher %d: %v", p, err)
					return
				}
			}
		}()
	}
	pubWG.Wait()
	deadline := time.After(concurrencyTimeout)
	for range queues {
		select {
		case <-done:
		case <-deadline:
			t.Fatalf("not every queue's consumer got all %d messages within %v", total, concurrencyTimeout)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
}

func parseSeq(s string) (p, i int, err error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("no colon")
	}
	if p, err = strconv.Atoi(a); err != nil {
		return
	}
	i, err = strconv.Atoi(b)
	return
}

// TestE2EConcurrentChannelsOneConnection: many channels of one connection
// publish and consume at the same time, each on its own queue, while other
// channels of the same connection open and close.
func TestE2EConcurrentChannelsOneConnection(t *testing.T) {
	t.Parallel()
	const channels, perChannel = 8, 1000
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	var wg sync.WaitGroup
	for c := range channels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pub, err := conn.Channel()
			if err != nil {
				t.Errorf("channel %d: open: %v", c, err)
				return
			}
			sub, err := conn.Channel()
			if err != nil {
				t.Errorf("channel %d: open: %v", c, err)
				return
			}
			q, err := pub.QueueDeclare("", false, true, true, false, nil)
			if err != nil {
				t.Errorf("channel %d: declare: %v", c, err)
				return
			}
			if err := sub.Qos(50, 0, false); err != nil {
				t.Errorf("channel %d: qos: %v", c, err)
				return
			}
			ds, err := sub.Consume(q.Name, "", false, false, false, false, nil)
			if err != nil {
				t.Errorf("channel %d: consume: %v", c, err)
				return
			}
			go func() {
				for i := range perChannel {
					if err := pub.Publish("", q.Name, false, false, amqp091.Publishing{Body: []byte(strconv.Itoa(i))}); err != nil {
						t.Errorf("channel %d: publish: %v", c, err)
						return
					}
				}
			}()
			deadline := time.After(concurrencyTimeout)
			for i := range perChannel {
				select {
				case d, ok := <-ds:
					if !ok {
						t.Errorf("channel %d: deliveries closed after %d", c, i)
						return
					}
					if string(d.Body) != strconv.Itoa(i) {
						t.Errorf("channel %d: got %q, want %d", c, d.Body, i)
						return
					}
					if err := d.Ack(false); err != nil {
						t.Errorf("channel %d: ack: %v", c, err)
						return
					}
				case <-deadline:
					t.Errorf("channel %d: %d of %d within %v", c, i, perChannel, concurrencyTimeout)
					return
				}
			}
			// Churn: open and close a few more channels on the busy connection.
			for range 5 {
				x, err := conn.Channel()
				if err != nil {
					t.Errorf("channel %d: churn open: %v", c, err)
					return
				}
				if err := x.Close(); err != nil {
					t.Errorf("channel %d: churn close: %v", c, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	assertConnUsable(t, conn)
}
