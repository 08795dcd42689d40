package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// amqp-topology-10k: --queues queues (10,000), each bound to amq.topic with
// topoKeysPerQueue binding keys the way IoT applications bind - literal
// words, * and # at the start, in the middle and at the end - so 100,000
// bindings in all. It measures how long declaring and binding them takes
// (topoWorkers channels in parallel, each waiting for every reply), how
// much the broker's RSS grows per queue, and then routing through that
// topology: one publisher with confirms, each routing key matching exactly
// one queue of a sample of topoSample queues, each sampled queue consumed.
// At the end it deletes the queues, which drops their bindings.
const (
	topoKeysPerQueue = 10
	topoForms        = 10 // routing keys per target queue, see topoRoutingKeys
	topoSample       = 200
	topoWorkers      = 4 // connections declaring, binding and deleting in parallel
	topoConsumers    = 4 // connections of the sampled queues' consumers
	// topoHeader: the message header and the index of the queue the
	// routing key targets, which the consumer checks.
	topoHeader = headerSize + 4
)

// topoSettle is how long amqp-topology-10k waits after the last binding
// before it reads the broker's RSS.
var topoSettle = 2 * time.Second

// topoBindings returns the binding keys of queue i. Every key names i as a
// whole word, so a routing key naming one queue matches no other; several
// keys of a queue overlap, so one message may match a queue twice and
// must still be delivered to it once.
func topoBindings(i int) [topoKeysPerQueue]string {
	q, g, h := strconv.Itoa(i), strconv.Itoa(i%100), strconv.Itoa(i%50)
	return [topoKeysPerQueue]string{
		"site." + g + ".dev." + q + ".#",
		"site.*.dev." + q + ".temp",
		"site." + g + ".dev." + q + ".*.alarm",
		"*." + g + ".gw." + q + ".humidity",
		"#.dev." + q + ".battery",
		"fleet." + q + ".*.status",
		"fleet." + q + ".#",
		"alerts." + h + "." + q + ".*",
		"cmd." + q,
		"telemetry.#." + q,
	}
}

// topoRoutingKeys returns the routing keys the publisher sends to queue i;
// each matches queue i only, through the bindings (indexes into
// topoBindings) of topoRoutes.
func topoRoutingKeys(i int) [topoForms]string {
	q, g, h := strconv.Itoa(i), strconv.Itoa(i%100), strconv.Itoa(i%50)
	return [topoForms]string{
		"site." + g + ".dev." + q + ".temp",
		"site." + g + ".dev." + q + ".door.alarm",
		"site." + g + ".dev." + q + ".battery",
		"site." + g + ".gw." + q + ".humidity",
		"fleet." + q + ".truck.status",
		"fleet." + q + ".gps",
		"alerts." + h + "." + q + ".fire",
		"cmd." + q,
		"telemetry.site." + g + "." + q,
		"plant.7.dev." + q + ".battery",
	}
}

// topoRoutes lists, for each routing key form, the bindings of its queue
// it matches.
var topoRoutes = [topoForms][]int{{0, 1}, {0, 2}, {0, 4}, {3}, {5, 6}, {6}, {7}, {8}, {9}, {4}}

// topoSampled returns the queues that get messages: sample of n, spread
// over the whole range and over the residues the keys use (i%100, i%50).
func topoSampled(n, sample int) []int {
	sample = min(sample, n)
	stride := n / sample
	out := make([]int, sample)
	for k := range out {
		out[k] = k*stride + (k*7)%stride
	}
	return out
}

// topoQueue is the name of queue i of a run.
func (r *run) topoQueue(i int) string { return fmt.Sprintf("%s-q%05d", r.id, i) }

func amqpTopology(ctx context.Context, r *run, res *result) error {
	n := r.cfg.queues
	if r.size < topoHeader {
		return fmt.Errorf("--size %d: amqp-topology-10k needs at least %d bytes, to carry the target queue", r.size, topoHeader)
	}
	res.Queues, res.Bindings = n, n*topoKeysPerQueue
	r.addPublishers(1)
	st := r.addStream("sampled queues")
	// The declaring connections wait for every reply: plain connections,
	// as the latency scenarios use.
	workers, err := amqpConns(r.cfg, topoWorkers, false)
	if err != nil {
		return err
	}
	defer closeAMQP(workers)
	conns, err := amqpConns(r.cfg, topoConsumers+1, true)
	if err != nil {
		return err
	}
	defer closeAMQP(conns)
	consumerConns, pubConn := conns[:topoConsumers], conns[topoConsumers]

	var before procStat
	if r.cfg.pid > 0 {
		if before, err = readProc(r.cfg.pid); err != nil {
			return fmt.Errorf("reading the broker's /proc: %w", err)
		}
		res.RSSBeforeKiB = before.rssKiB
	} else {
		r.warn("no --pid: RSS per queue not measured")
	}

	declared := make([]bool, n)
	var consumers []*amqpConsumer
	defer func() {
		// Consumers first: deleting a consumed queue cancels its consumer,
		// which would count as a failure.
		for _, c := range consumers {
			c.stop()
		}
		t0 := time.Now()
		if err := topoDelete(r, workers, declared); err != nil {
			r.warn("cleanup: %v", err)
		}
		res.DeleteSeconds = time.Since(t0).Seconds()
	}()

	declareTime, err := topoDeclare(ctx, r, workers, declared)
	res.DeclareSeconds = declareTime.Seconds()
	if err != nil {
		return err
	}
	if r.cfg.pid > 0 {
		// Let the broker settle (GC, lazily grown tables), then read its RSS.
		time.Sleep(topoSettle)
		after, err := readProc(r.cfg.pid)
		if err != nil {
			return fmt.Errorf("reading the broker's /proc: %w", err)
		}
		res.RSSTopoKiB = after.rssKiB
		res.RSSPerQueueKiB = float64(after.rssKiB-before.rssKiB) / float64(n)
		if res.RSSPerQueueKiB <= 0 {
			r.warn("the broker's RSS did not grow (%.1f -> %.1f MiB): it reused memory freed earlier; RSS per queue means something only on a freshly started broker",
				float64(before.rssKiB)/1024, float64(after.rssKiB)/1024)
		}
	}

	// Routing: every sampled queue consumed on its own channel, spread
	// over the consumer connections; the receivers share one stream, as
	// every message has exactly one destination.
	sampled := topoSampled(n, topoSample)
	recv := &topoReceiver{st: st}
	for k, q := range sampled {
		c, err := startAMQPConsumer(r, consumerConns[k%len(consumerConns)], r.topoQueue(q), r.cfg.ackEvery, recv.handler(q))
		if err != nil {
			return err
		}
		consumers = append(consumers, c)
	}
	keys := make([][topoForms]string, len(sampled))
	for k, q := range sampled {
		keys[k] = topoRoutingKeys(q)
	}
	r.measure(ctx, res, func(p *publisher) error {
		return amqpPublishTo(ctx, r, p, pubConn, "amq.topic", func(body []byte, seq uint32) string {
			k := int(seq % uint32(len(sampled)))
			binary.LittleEndian.PutUint32(body[headerSize:], uint32(sampled[k]))
			return keys[k][(seq/uint32(len(sampled)))%topoForms]
		}, false, true)
	})
	if m := recv.misrouted.Load(); m > 0 {
		r.fail(fmt.Errorf("%d deliveries to a queue whose bindings the routing key does not match", m))
	}
	return nil
}

// topoReceiver is the receiving end of every sampled queue: one stream,
// as every message has exactly one destination, fed by all consumers.
type topoReceiver struct {
	mu        sync.Mutex // the consumers' goroutines take turns on st
	st        *stream
	misrouted atomic.Int64
}

// handler checks a delivery from queue q: it must carry q as its target.
func (t *topoReceiver) handler(q int) func([]byte) {
	return func(b []byte) {
		if len(b) < topoHeader || binary.LittleEndian.Uint32(b[headerSize:]) != uint32(q) {
			t.misrouted.Add(1)
			return
		}
		t.mu.Lock()
		t.st.record(b, -1)
		t.mu.Unlock()
	}
}

// topoDeclare declares queues 0..n-1 of r and binds each with its keys,
// on one channel per worker connection, each waiting for every reply. It
// marks what it declared in declared, for the cleanup, and returns the
// time from the first declare to the last bind-ok.
func topoDeclare(ctx context.Context, r *run, workers []*amqp.Connection, declared []bool) (time.Duration, error) {
	n := len(declared)
	var next, queues, bindings atomic.Int64
	stopProgress := r.topoProgress("declared", &queues, &bindings, n)
	defer stopProgress()
	start := time.Now()
	err := onWorkerChannels(workers, func(ch *amqp.Channel) error {
		for ctx.Err() == nil {
			i := int(next.Add(1) - 1)
			if i >= n {
				return nil
			}
			name := r.topoQueue(i)
			if _, err := ch.QueueDeclare(name, false, false, false, false, nil); err != nil {
				err = fmt.Errorf("queue.declare %s (after %d queues): %w", name, queues.Load(), err)
				next.Store(int64(n)) // stop the others
				return err
			}
			declared[i] = true
			queues.Add(1)
			for _, key := range topoBindings(i) {
				if err := ch.QueueBind(name, key, "amq.topic", false, nil); err != nil {
					err = fmt.Errorf("queue.bind %s to amq.topic with %q (after %d bindings): %w", name, key, bindings.Load(), err)
					next.Store(int64(n))
					return err
				}
				bindings.Add(1)
			}
		}
		return nil
	})
	d := time.Since(start)
	if err != nil {
		return d, err
	}
	return d, ctx.Err()
}

// topoDeleteSync: topoDelete waits for the reply to every this many
// deletes; the others it sends with no-wait. A failed one closes the
// channel, which the next wait reports.
const topoDeleteSync = 100

// topoDelete deletes the queues marked in declared, on a new channel per
// worker connection, in parallel. It is cleanup, not measured: it
// pipelines.
func topoDelete(r *run, workers []*amqp.Connection, declared []bool) error {
	var todo []int
	for i, ok := range declared {
		if ok {
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	var next, deleted atomic.Int64
	var none atomic.Int64
	stopProgress := r.topoProgress("deleted", &deleted, &none, len(todo))
	defer stopProgress()
	err := onWorkerChannels(workers, func(ch *amqp.Channel) error {
		for {
			k := int(next.Add(topoDeleteSync) - topoDeleteSync)
			if k >= len(todo) {
				return nil
			}
			batch := todo[k:min(k+topoDeleteSync, len(todo))]
			for j, i := range batch {
				name := r.topoQueue(i)
				if _, err := ch.QueueDelete(name, false, false, j < len(batch)-1); err != nil {
					return fmt.Errorf("queue.delete %s: %w", name, err)
				}
			}
			deleted.Add(int64(len(batch)))
		}
	})
	if err != nil {
		return fmt.Errorf("%d of %d queues deleted: %w", deleted.Load(), len(todo), err)
	}
	return nil
}

// onWorkerChannels runs work on a new channel of each worker connection,
// all in parallel, and returns their errors joined, in worker order.
func onWorkerChannels(workers []*amqp.Connection, work func(ch *amqp.Channel) error) error {
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	for w, conn := range workers {
		wg.Go(func() {
			ch, err := conn.Channel()
			if err != nil {
				errs[w] = fmt.Errorf("amqp channel: %w", err)
				return
			}
			defer ch.Close()
			errs[w] = work(ch)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// topoProgress prints a line on cfg.progress every second with the queues
// (and bindings) done so far, until the returned stop is called.
func (r *run) topoProgress(verb string, queues, bindings *atomic.Int64, n int) (stop func()) {
	return r.everySecond(func(elapsed, _ time.Duration) string {
		line := fmt.Sprintf("ferrybench: %s %s %4.0fs  %s %d of %d queues", r.label(), r.cfg.broker, elapsed.Seconds(), verb, queues.Load(), n)
		if b := bindings.Load(); b > 0 {
			line += fmt.Sprintf(", %d bindings", b)
		}
		return line
	})
}
