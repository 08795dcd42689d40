package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	pahomqtt "github.com/eclipse/paho.mqtt.golang"
	amqp "github.com/rabbitmq/amqp091-go"
)

// bridgeDrain measures how fast a ferrymq edge's bridge link empties a
// backlog into the broker under test, the upstream: the case of an edge
// gateway whose uplink comes back after an outage. An edge ferrymq is
// started with a link of the given kind (amqp, mqtt, mqtt3) to an address
// where nothing answers; --messages (default 100,000) QoS 1 messages are
// published to the edge and PUBACKed (held in its durable bridge queue);
// the edge is stopped and started again with the link pointing at the
// upstream, so it connects at once. The rate is messages over the time
// from the link's first delivery to the moment the edge's queue holds
// nothing ready, so the edge's restart does not count. Order and loss are
// checked from a sequence number in each body, by a subscriber on the
// upstream during the drain or, with --drain-subscriber none, after it
// (AMQP) or not at all (MQTT: nothing holds the messages upstream).
func bridgeDrain(kind string) func(ctx context.Context, r *run, res *result) error {
	return func(ctx context.Context, r *run, res *result) error {
		n := r.cfg.messages
		if n <= 0 {
			n = 100_000
		}
		res.Publishers, res.Consumers = 1, 1
		upAddr, err := upstreamAddr(r.cfg, kind)
		if err != nil {
			return err
		}
		sub, err := subscribeUpstream(r, kind, n)
		if err != nil {
			return err
		}
		defer sub.close()

		dir, err := os.MkdirTemp("", "ferrybench-edge-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		// Nothing listens on a port just released: the link retries
		// while the backlog builds up.
		down, err := freePort()
		if err != nil {
			return err
		}
		// pprof on a free port, so that runs side by side do not collide.
		debug, err := freePort()
		if err != nil {
			return err
		}
		link := func(addr string) []string {
			return []string{"--node-name", "edge-" + r.id,
				"--bridge-url", fmt.Sprintf("%s://guest:guest@%s/", kind, addr), "--bridge-topic", r.topic() + "/#",
				"--bridge-max-messages", fmt.Sprint(n + 1), "--debug-listen", fmt.Sprintf("127.0.0.1:%d", debug)}
		}
		edge, err := startFerrymq(ctx, r.cfg.edgeBin, dir, link(fmt.Sprintf("127.0.0.1:%d", down))...)
		if err != nil {
			return fmt.Errorf("edge: %w", err)
		}
		pubStart := time.Now()
		err = publishBacklog(edge.mqttURL, r.topic()+"/x", r.size, n)
		edge.stop(30 * time.Second)
		if err != nil {
			return fmt.Errorf("edge: %w", err)
		}
		res.Published, res.Confirmed = n, n
		res.PubPerSec = float64(n) / time.Since(pubStart).Seconds()

		edge, err = startFerrymq(ctx, r.cfg.edgeBin, dir, link(upAddr)...)
		if err != nil {
			return fmt.Errorf("edge restart: %w", err)
		}
		fmt.Fprintf(os.Stderr, "ferrybench: edge draining; its pprof: http://127.0.0.1:%d/debug/pprof/\n", debug)
		defer edge.stop(30 * time.Second)
		edgeCPU, sampled := startSampler(edge.pid), time.Now()
		// The upstream and this process (the subscriber) share the cores
		// with the edge: their CPU per message says which of the three
		// caps the drain.
		var upCPU *sampler
		if r.cfg.pid > 0 {
			upCPU = startSampler(r.cfg.pid)
		}
		self := startSampler(0)
		watch, empty := watchBacklog(ctx, edge.amqpURL, "bridge.upstream", n)
		if sub.later {
			// Nothing reads upstream while the edge drains: wait for the
			// edge's queue to empty, then check what the upstream holds.
			select {
			case <-empty:
			case <-ctx.Done():
			}
		} else {
			err = sub.wait(ctx, r.cfg.drainIdle+30*time.Second)
		}
		_, _, cpu, _ := edgeCPU.finish()
		_, _, res.ClientCPUPct, _ = self.finish()
		if upCPU != nil {
			res.RSSKiB, res.RSSEndKiB, res.CPUPct, _ = upCPU.finish()
		}
		elapsed := time.Since(sampled).Seconds()
		startup, drained := watch()
		if sub.later && sub.start != nil {
			// Read back what the upstream holds, after the drain.
			if err = sub.start(); err == nil {
				err = sub.wait(ctx, r.cfg.drainIdle+30*time.Second)
			}
		}
		first, last, got, dup, disorder := sub.stats()
		if sub.later && sub.start == nil && drained > 0 {
			got = n // not checked upstream; the edge acks only what the upstream confirmed
		}
		res.Expected, res.Received, res.Dup = n, got, dup
		res.Lost = n - got
		res.LostConfirmed = res.Lost
		var delivered float64
		if !sub.later && got > 1 {
			delivered = float64(got-1) / last.Sub(first).Seconds()
		}
		// The drain is the edge's: from its link's first delivery until
		// its queue held nothing ready, the upstream having acknowledged
		// all but at most a window (2048) of the messages; the edge's
		// start-up (opening the store) is reported apart. What a live
		// subscriber saw is the upstream's delivery, which may be slower
		// (Mosquitto sends 20 at a time to a QoS 1 subscriber), and is
		// reported beside it.
		if drained > 0 {
			res.Seconds = drained.Seconds()
			res.MsgPerSec = float64(n) / res.Seconds
		} else if delivered > 0 {
			res.Seconds = last.Sub(first).Seconds()
			res.MsgPerSec = delivered
		}
		if got > 0 {
			// CPU per message holds on a busy machine, where the rate does not.
			perMsg := func(pct float64) float64 { return pct / 100 * elapsed / float64(got) * 1e6 }
			who := fmt.Sprintf("subscriber (ferrybench): %.0f %%, %.1f µs per message, received %.0f msg/s", res.ClientCPUPct, perMsg(res.ClientCPUPct), delivered)
			switch {
			case sub.later && sub.start != nil:
				who = "no subscriber during the drain, the upstream's queue checked after it"
			case sub.later:
				who = "no subscriber: not checked upstream"
			}
			r.warn("edge start-up %.2f s, then drain; edge ferrymq (start-up and drain): %.0f %% of a core, %.1f µs CPU per message; upstream %s: %.0f %%, %.1f µs per message; %s",
				startup.Seconds(), cpu, perMsg(cpu), r.cfg.broker, res.CPUPct, perMsg(res.CPUPct), who)
		}
		if disorder > 0 {
			return fmt.Errorf("%d messages arrived upstream out of order", disorder)
		}
		return err
	}
}

// upstreamAddr is the host:port of the broker under test for a link kind.
func upstreamAddr(cfg *config, kind string) (string, error) {
	raw := cfg.mqttURL
	if kind == "amqp" {
		raw = cfg.amqpURL
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("bridge-drain-%s needs the upstream's URL, got %q", kind, raw)
	}
	return u.Host, nil
}

// publishBacklog publishes n QoS 1 messages of size bytes (a sequence
// number first) to the edge and returns once all are PUBACKed.
func publishBacklog(mqttURL, topic string, size int, n int64) error {
	t, err := parseMQTTURL(mqttURL)
	if err != nil {
		return err
	}
	o := pahomqtt.NewClientOptions().AddBroker("tcp://" + t.addr).SetClientID("ferrybench-backlog").
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(false).SetWriteTimeout(30 * time.Second)
	c := pahomqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		return fmt.Errorf("mqtt connect %s: %v", t.addr, tok.Error())
	}
	defer c.Disconnect(250)
	tokens := make(chan pahomqtt.Token, 1000)
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		for tok := range tokens {
			if !tok.WaitTimeout(60*time.Second) || tok.Error() != nil {
				errc <- fmt.Errorf("publish not acknowledged: %v", tok.Error())
				for range tokens {
				}
				return
			}
		}
	}()
	for seq := int64(0); seq < n; seq++ {
		b := make([]byte, max(size, 8))
		binary.BigEndian.PutUint64(b, uint64(seq))
		tokens <- c.Publish(topic, 1, false, b)
	}
	close(tokens)
	return <-errc
}

// drainSub counts what reaches the upstream: distinct sequence numbers,
// duplicates, and arrivals below the highest seen (out of order).
type drainSub struct {
	want  int64
	close func()
	// later: nothing reads during the drain (--drain-subscriber none);
	// start, if set, begins reading what the upstream holds afterwards.
	later bool
	start func() error

	mu           sync.Mutex
	seen         []bool
	got, dup     int64
	disorder     int64
	next         int64 // highest sequence number seen + 1
	first, last  time.Time
	done         chan struct{}
	once         sync.Once
	lastProgress atomic.Int64
}

func (s *drainSub) record(body []byte) {
	if len(body) < 8 {
		return
	}
	seq := int64(binary.BigEndian.Uint64(body))
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq < 0 || seq >= s.want {
		return
	}
	if s.got == 0 {
		s.first = now
	}
	s.last = now
	s.lastProgress.Store(now.UnixNano())
	if s.seen[seq] {
		s.dup++
		return
	}
	if seq < s.next {
		s.disorder++
	}
	s.seen[seq] = true
	s.next = max(s.next, seq+1)
	s.got++
	if s.got == s.want {
		s.once.Do(func() { close(s.done) })
	}
}

// wait returns when every message arrived, or with an error once nothing
// arrived for idle.
func (s *drainSub) wait(ctx context.Context, idle time.Duration) error {
	s.lastProgress.Store(time.Now().UnixNano())
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if time.Since(time.Unix(0, s.lastProgress.Load())) > idle {
				s.mu.Lock()
				got := s.got
				s.mu.Unlock()
				return fmt.Errorf("received %d of %d; nothing for %s", got, s.want, idle)
			}
		}
	}
}

func (s *drainSub) stats() (first, last time.Time, got, dup, disorder int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, s.last, s.got, s.dup, s.disorder
}

// subscribeUpstream subscribes on the broker under test to what the edge
// forwards: an AMQP queue bound to amq.topic for an amqp link, an MQTT
// QoS 1 subscription otherwise.
func subscribeUpstream(r *run, kind string, n int64) (*drainSub, error) {
	s := &drainSub{want: n, seen: make([]bool, n), done: make(chan struct{}), later: r.cfg.drainSub == "none"}
	if kind == "amqp" {
		conn, err := dialAMQP(r.cfg, true)
		if err != nil {
			return nil, err
		}
		a, err := newAMQPAdmin(conn)
		if err != nil {
			conn.Close()
			return nil, err
		}
		q := "ferrybench-drain-" + r.id
		if err := a.queue(q, false); err == nil {
			err = a.bind(q, "ferrybench."+r.id+".#", "amq.topic")
		}
		if err != nil {
			conn.Close()
			return nil, err
		}
		var c *amqpConsumer
		s.start = func() error {
			c, err = startAMQPConsumer(r, conn, q, r.cfg.ackEvery, s.record)
			return err
		}
		s.close = func() {
			if c != nil {
				c.stop()
			}
			a.close(r)
			conn.Close()
		}
		if s.later {
			return s, nil
		}
		if err := s.start(); err != nil {
			conn.Close()
			return nil, err
		}
		return s, nil
	}
	if s.later {
		s.close = func() {}
		return s, nil
	}
	m, err := dialMQTT(r.cfg, "ferrybench-drain-"+r.id, true, func(error) {})
	if err != nil {
		return nil, err
	}
	if err := m.subscribe(r.topic()+"/#", 1, s.record); err != nil {
		m.close()
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("upstream subscribe: %w", err)
		}
		return nil, err
	}
	s.close = m.close
	return s, nil
}

// watchBacklog polls an edge's bridge queue from now on. Its stop function
// ends the polling and reports how long the edge took, from now, to start
// forwarding (its first delivery to the link took the queue's ready count
// below n) and then to drain (the queue held no ready message); a zero
// drain means it never did. empty is closed when polling ends.
func watchBacklog(ctx context.Context, amqpURL, queue string, n int64) (stop func() (startup, drain time.Duration), empty <-chan struct{}) {
	start := time.Now()
	quit := make(chan struct{})
	type took struct{ startup, drain time.Duration }
	done := make(chan took, 1)
	emptied := make(chan struct{})
	go func() {
		var t took
		defer func() { done <- t; close(emptied) }()
		conn, err := amqp.Dial(amqpURL)
		if err != nil {
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
			if err != nil {
				return
			}
			if t.startup == 0 && int64(q.Messages) < n {
				t.startup = time.Since(start)
			}
			if q.Messages == 0 {
				t.drain = time.Since(start) - t.startup
				return
			}
		}
	}()
	var once sync.Once
	var t took
	return func() (time.Duration, time.Duration) {
		once.Do(func() {
			close(quit)
			t = <-done
		})
		return t.startup, t.drain
	}, emptied
}
