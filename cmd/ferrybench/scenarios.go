package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// scenario is one benchmark; each run of it uses fresh queue, exchange,
// topic and client names (run.id) and deletes what it declared.
type scenario struct {
	name string
	size int // default body size in bytes
	amqp bool
	mqtt bool
	tls  bool // runs over --amqps-url / --mqtts-url
	http bool // needs --http-url, the management API
	// explicit: not part of all; runs only when named (chaos-soak starts
	// and kills a broker of its own for --duration).
	explicit bool
	unit     string // what msg_per_sec counts
	what     string
	run      func(ctx context.Context, r *run, res *result) error
}

// The scenarios of issue 6's table, in its order.
var scenarios = []*scenario{
	{name: "amqp-1to1", size: 16, amqp: true, unit: "msg/s",
		what: "AMQP 1 publisher -> 1 consumer, transient, manual ack, prefetch 1000",
		run:  amqpQueueRun("", false, false, false)},
	{name: "amqp-confirm-persistent", size: 1024, amqp: true, unit: "msg/s",
		what: "AMQP publisher confirms (1000 in flight), persistent messages, durable queue, consumer acking",
		run:  amqpQueueRun("", true, true, true)},
	{name: "amqp-fanout10", size: 16, amqp: true, unit: "deliveries/s",
		what: "AMQP 1 publisher -> fanout exchange -> 10 queues, one consumer each",
		run:  amqpFanout(10)},
	{name: "mqtt-qos0-1to1", size: 16, mqtt: true, unit: "msg/s",
		what: "MQTT 1 publisher -> 1 subscriber, QoS 0",
		run:  mqttRun(1, 0)},
	{name: "mqtt-qos1-1to1", size: 16, mqtt: true, unit: "msg/s",
		what: "MQTT 1 publisher -> 1 subscriber, QoS 1 (window of PUBACKs)",
		run:  mqttRun(1, 1)},
	{name: "mqtt-fanin-100", size: 16, mqtt: true, unit: "msg/s",
		what: "MQTT 100 publishers -> 1 subscriber (wildcard), QoS 1",
		run:  mqttRun(100, 1)},
	{name: "mqtt-to-amqp-qos0", size: 16, amqp: true, mqtt: true, unit: "msg/s",
		what: "MQTT publisher (QoS 0) -> amq.topic -> AMQP consumer",
		run:  mqttToAMQP(0)},
	{name: "mqtt-to-amqp-qos1", size: 16, amqp: true, mqtt: true, unit: "msg/s",
		what: "MQTT publisher (QoS 1) -> amq.topic -> AMQP consumer",
		run:  mqttToAMQP(1)},
	{name: "amqp-to-mqtt-qos0", size: 16, amqp: true, mqtt: true, unit: "msg/s",
		what: "AMQP publisher -> amq.topic -> MQTT subscriber (QoS 0)",
		run:  amqpToMQTT(0)},
	{name: "amqp-to-mqtt-qos1", size: 16, amqp: true, mqtt: true, unit: "msg/s",
		what: "AMQP publisher with confirms -> amq.topic -> MQTT subscriber (QoS 1)",
		run:  amqpToMQTT(1)},
	{name: "latency-amqp", size: 16, amqp: true, unit: "round trips/s",
		what: "AMQP one message at a time: publish, wait for the delivery, repeat",
		run:  latencyAMQP},
	{name: "latency-mqtt-qos0", size: 16, mqtt: true, unit: "round trips/s",
		what: "MQTT QoS 0 one message at a time: publish, wait for the delivery, repeat",
		run:  latencyMQTT},
	{name: "idle-mqtt-conns", size: 0, mqtt: true, unit: "connections/s",
		what: "N idle MQTT connections (--conns): broker RSS per connection",
		run:  idleMQTT},
	{name: "tls-handshakes", size: 0, tls: true, unit: "handshakes/s",
		what: "full TLS handshakes (TCP connect, handshake, close) from 8 goroutines, against --mqtts-url, else --amqps-url",
		run:  tlsHandshakes},
	{name: "amqp-1to1-tls", size: 16, amqp: true, tls: true, unit: "msg/s",
		what: "amqp-1to1 over TLS (--amqps-url)",
		run:  amqpQueueRun("", false, false, false)},
	{name: "mqtt-qos1-1to1-tls", size: 16, mqtt: true, tls: true, unit: "msg/s",
		what: "mqtt-qos1-1to1 over TLS (--mqtts-url)",
		run:  mqttRun(1, 1)},
	{name: "idle-mqtt-conns-tls", size: 0, mqtt: true, tls: true, unit: "connections/s",
		what: "idle-mqtt-conns over TLS (--mqtts-url): broker RSS per idle TLS connection",
		run:  idleMQTT},
	{name: "amqp-topology-10k", size: 16, amqp: true, unit: "msg/s",
		what: "AMQP --queues queues, 10 topic bindings each on amq.topic: declare+bind time, broker RSS per queue, then routing (1 publisher with confirms -> 200 of the queues, one consumer each)",
		run:  amqpTopology},
	{name: "chaos-soak", size: 16, explicit: true, unit: "msg/s",
		what: "mixed load (MQTT QoS 1/2 persistent sessions, AMQP confirms, a bridge over a flapping uplink, slow consumers) on a ferrymq of its own (--edge-bin) killed with SIGKILL every ~--kill-every for --duration; fails if an acknowledged message is lost, order breaks, or RSS passes --max-rss",
		run:  chaosSoak},
	{name: mgmtQueuesName, size: 0, amqp: true, http: true, unit: "GET/s",
		what: "AMQP --queues queues (10,000), then GET /api/queues?page=1&page_size=100 50 times on the management API (--http-url): p50 and p99 (target < 100 ms), and the size of /metrics",
		run:  mgmtQueues},
	{name: "mem-transient-flood", size: 64 << 10, explicit: true, unit: "msg/s",
		what: "an AMQP publisher floods a queue without consumers with --messages transient messages (default 3 GiB of bodies) against a ferrymq of its own (--edge-bin) with --memory-limit 512MiB: it must get connection.blocked, and the broker's peak RSS stay under --max-rss (default 1024 MiB)",
		run:  memTransientFlood},
	{name: "mqtt-stalled-subscriber", size: 1024, explicit: true, unit: "msg/s",
		what: "an MQTT subscriber (persistent session, QoS 0) stops reading while a publisher floods its topic with QoS 0 messages for --duration, on a ferrymq of its own (--edge-bin): the broker's peak RSS must stay under --max-rss (default 512 MiB)",
		run:  mqttStalledSubscriber},
	{name: "amqp-confirm-topic", size: 16, amqp: true, explicit: true, unit: "msg/s",
		what: "as amqp-confirm-persistent, through amq.topic with a routing key, as a bridge link publishes: what the upstream itself takes of the messages a bridge-drain-amqp sends it",
		run:  amqpQueueRun("amq.topic", true, true, true)},
	{name: "bridge-drain-amqp", size: 16, amqp: true, unit: "msg/s",
		what: "an edge ferrymq's AMQP bridge link drains a backlog of --messages (100,000) QoS 1 messages into this broker after an outage; an AMQP consumer receives them",
		run:  bridgeDrain("amqp")},
	{name: "bridge-drain-mqtt5", size: 16, mqtt: true, unit: "msg/s",
		what: "as bridge-drain-amqp over an MQTT 5 link (mqtt://); an MQTT QoS 1 subscriber receives them",
		run:  bridgeDrain("mqtt")},
	{name: "bridge-drain-mqtt3", size: 16, mqtt: true, unit: "msg/s",
		what: "as bridge-drain-amqp over an MQTT 3.1.1 link (mqtt3://); an MQTT QoS 1 subscriber receives them",
		run:  bridgeDrain("mqtt3")},
}

func findScenario(name string) *scenario {
	for _, s := range scenarios {
		if s.name == name {
			return s
		}
	}
	return nil
}

// Names in the AMQP and MQTT namespaces of a run.
func (r *run) topic() string      { return "ferrybench/" + r.id }
func (r *run) routingKey() string { return "ferrybench." + r.id }

// amqpQueueRun: one publisher, one queue, one consumer. The publisher
// sends to the default exchange, or, when exchange is not "", to exchange
// with the run's routing key, to which the queue is bound.
func amqpQueueRun(exchange string, durable, persistent, confirm bool) func(context.Context, *run, *result) error {
	return func(ctx context.Context, r *run, res *result) error {
		r.addPublishers(1)
		st := r.addStream("consumer")
		conns, err := amqpConns(r.cfg, 2, true)
		if err != nil {
			return err
		}
		defer closeAMQP(conns)
		admin, err := newAMQPAdmin(conns[0])
		if err != nil {
			return err
		}
		defer admin.close(r)
		q := r.id
		if err := admin.queue(q, durable); err != nil {
			return err
		}
		key := q
		if exchange != "" {
			key = r.routingKey()
			if err := admin.bind(q, key, exchange); err != nil {
				return err
			}
		}
		c, err := startAMQPConsumer(r, conns[0], q, r.cfg.ackEvery, func(b []byte) { st.record(b, -1) })
		if err != nil {
			return err
		}
		defer c.stop()
		r.measure(ctx, res, func(p *publisher) error {
			return amqpPublish(ctx, r, p, conns[1], exchange, key, persistent, confirm)
		})
		return nil
	}
}

// amqpFanout: one publisher to a fanout exchange bound to n queues, each
// with a consumer on its own connection.
func amqpFanout(n int) func(context.Context, *run, *result) error {
	return func(ctx context.Context, r *run, res *result) error {
		r.addPublishers(1)
		conns, err := amqpConns(r.cfg, n+1, true)
		if err != nil {
			return err
		}
		defer closeAMQP(conns)
		admin, err := newAMQPAdmin(conns[0])
		if err != nil {
			return err
		}
		defer admin.close(r)
		ex := r.id + "-fanout"
		if err := admin.exchange(ex, amqp.ExchangeFanout); err != nil {
			return err
		}
		for i := range n {
			q := fmt.Sprintf("%s-%d", r.id, i)
			if err := admin.queue(q, false); err != nil {
				return err
			}
			if err := admin.bind(q, "", ex); err != nil {
				return err
			}
			st := r.addStream(q)
			c, err := startAMQPConsumer(r, conns[i], q, r.cfg.ackEvery, func(b []byte) { st.record(b, -1) })
			if err != nil {
				return err
			}
			defer c.stop()
		}
		r.measure(ctx, res, func(p *publisher) error {
			return amqpPublish(ctx, r, p, conns[n], ex, "", false, false)
		})
		return nil
	}
}

// mqttRun: pubs publishers, each on its own topic under the run's, to one
// subscriber of the run's topic (or of topic/+ for several publishers).
func mqttRun(pubs int, qos byte) func(context.Context, *run, *result) error {
	return func(ctx context.Context, r *run, res *result) error {
		r.addPublishers(pubs)
		r.lossyOK = qos == 0
		st := r.addStream("subscriber")
		subs, err := mqttClients(r, r.id+"-sub", 1, true)
		if err != nil {
			return err
		}
		defer closeMQTT(subs)
		filter := r.topic()
		if pubs > 1 {
			filter += "/+"
		}
		if err := subs[0].subscribe(filter, qos, func(b []byte) { st.record(b, -1) }); err != nil {
			return err
		}
		clients, err := mqttClients(r, r.id+"-pub", pubs, true)
		if err != nil {
			return err
		}
		defer closeMQTT(clients)
		window := max(1, r.cfg.window/pubs)
		r.measure(ctx, res, func(p *publisher) error {
			topic := r.topic()
			if pubs > 1 {
				topic = fmt.Sprintf("%s/%d", topic, p.id)
			}
			return clients[p.id].publishLoop(r, p, r.share(int(p.id)), topic, qos, window)
		})
		return nil
	}
}

// mqttToAMQP: an MQTT publisher to the run's topic; an AMQP queue bound to
// amq.topic with the matching routing key.
func mqttToAMQP(qos byte) func(context.Context, *run, *result) error {
	return func(ctx context.Context, r *run, res *result) error {
		r.addPublishers(1)
		r.lossyOK = qos == 0
		st := r.addStream("amqp consumer")
		conns, err := amqpConns(r.cfg, 1, true)
		if err != nil {
			return err
		}
		defer closeAMQP(conns)
		admin, err := newAMQPAdmin(conns[0])
		if err != nil {
			return err
		}
		defer admin.close(r)
		q := r.id
		if err := admin.queue(q, false); err != nil {
			return err
		}
		if err := admin.bind(q, r.routingKey(), "amq.topic"); err != nil {
			return err
		}
		c, err := startAMQPConsumer(r, conns[0], q, r.cfg.ackEvery, func(b []byte) { st.record(b, -1) })
		if err != nil {
			return err
		}
		defer c.stop()
		pubs, err := mqttClients(r, r.id+"-pub", 1, true)
		if err != nil {
			return err
		}
		defer closeMQTT(pubs)
		r.measure(ctx, res, func(p *publisher) error {
			return pubs[0].publishLoop(r, p, r.share(0), r.topic(), qos, r.cfg.window)
		})
		return nil
	}
}

// amqpToMQTT: an AMQP publisher to amq.topic (with confirms for QoS 1); an
// MQTT subscriber of the matching topic.
func amqpToMQTT(qos byte) func(context.Context, *run, *result) error {
	return func(ctx context.Context, r *run, res *result) error {
		r.addPublishers(1)
		r.lossyOK = qos == 0
		st := r.addStream("mqtt subscriber")
		subs, err := mqttClients(r, r.id+"-sub", 1, true)
		if err != nil {
			return err
		}
		defer closeMQTT(subs)
		if err := subs[0].subscribe(r.topic(), qos, func(b []byte) { st.record(b, -1) }); err != nil {
			return err
		}
		conns, err := amqpConns(r.cfg, 1, true)
		if err != nil {
			return err
		}
		defer closeAMQP(conns)
		// QoS 1 needs persistent messages: ferrymq delivers a transient
		// AMQP message at QoS 0 (topic.MessageQoS), which a subscriber
		// that falls behind by max_queued_messages loses, as Mosquitto.
		r.measure(ctx, res, func(p *publisher) error {
			return amqpPublish(ctx, r, p, conns[0], "amq.topic", r.routingKey(), qos == 1, qos == 1)
		})
		return nil
	}
}

// latencyWarmup round trips open each latency run and are not counted in
// its percentiles.
const latencyWarmup = 200

// latencyLoop publishes one message, waits for got, and repeats. The
// receiver records each latency as time since sentAt.
func (r *run) latencyLoop(ctx context.Context, res *result, sentAt *atomic.Int64, got <-chan struct{}, publish func([]byte) error) {
	st := r.streams[0]
	body := make([]byte, r.size)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	r.measure(ctx, res, func(p *publisher) error {
		limit := r.share(0)
		for seq := uint32(0); !r.stopPub.Load() && (limit == 0 || int64(seq) < limit+latencyWarmup); seq++ {
			putHeader(body, seq, 0, r.nowUs())
			sentAt.Store(int64(time.Since(r.base)))
			if err := publish(body); err != nil {
				return err
			}
			p.published.Add(1)
			timer.Reset(5 * time.Second)
			select {
			case <-got:
			case <-timer.C:
				return fmt.Errorf("message %d not delivered within 5 s", seq)
			case <-ctx.Done():
				return ctx.Err()
			}
			if seq == latencyWarmup-1 {
				// The receiver sent on got after its last write to st.lat.
				st.lat = histogram{}
			}
		}
		p.allAcked = true
		return nil
	})
}

// latencyReceiver returns the handler that records a latency and wakes the
// publisher.
func latencyReceiver(r *run, sentAt *atomic.Int64, got chan<- struct{}) func([]byte) {
	st := r.streams[0]
	return func(b []byte) {
		st.record(b, int64(time.Since(r.base))-sentAt.Load())
		select {
		case got <- struct{}{}:
		default:
		}
	}
}

func latencyAMQP(ctx context.Context, r *run, res *result) error {
	r.addPublishers(1)
	r.addStream("consumer")
	conns, err := amqpConns(r.cfg, 2, false)
	if err != nil {
		return err
	}
	defer closeAMQP(conns)
	admin, err := newAMQPAdmin(conns[0])
	if err != nil {
		return err
	}
	defer admin.close(r)
	q := r.id
	if err := admin.queue(q, false); err != nil {
		return err
	}
	var sentAt atomic.Int64
	got := make(chan struct{}, 1)
	c, err := startAMQPConsumer(r, conns[0], q, 1, latencyReceiver(r, &sentAt, got))
	if err != nil {
		return err
	}
	defer c.stop()
	ch, err := conns[1].Channel()
	if err != nil {
		return fmt.Errorf("amqp publisher channel: %w", err)
	}
	defer ch.Close()
	r.latencyLoop(ctx, res, &sentAt, got, func(body []byte) error {
		return ch.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{Body: body})
	})
	return nil
}

func latencyMQTT(ctx context.Context, r *run, res *result) error {
	r.addPublishers(1)
	r.addStream("subscriber")
	subs, err := mqttClients(r, r.id+"-sub", 1, false)
	if err != nil {
		return err
	}
	defer closeMQTT(subs)
	var sentAt atomic.Int64
	got := make(chan struct{}, 1)
	if err := subs[0].subscribe(r.topic(), 0, latencyReceiver(r, &sentAt, got)); err != nil {
		return err
	}
	pubs, err := mqttClients(r, r.id+"-pub", 1, false)
	if err != nil {
		return err
	}
	defer closeMQTT(pubs)
	r.latencyLoop(ctx, res, &sentAt, got, func(body []byte) error {
		return pubs[0].publishOne(r.topic(), body)
	})
	return nil
}

// runScenario runs sc once and returns its result; it never panics on a
// broker failure, it records it.
func runScenario(ctx context.Context, cfg *config, sc *scenario, size int) result {
	if sc.tls {
		cfg = cfg.tlsVariant()
	}
	r := newRun(cfg, sc, size)
	res := result{Scenario: sc.name, Broker: cfg.broker, Size: size}
	err := sc.run(ctx, r, &res)
	r.closing.Store(true)
	r.fail(err)
	if len(r.streams) > 0 {
		r.verify(&res)
	}
	r.finish(&res)
	return res
}
