package interop_test

// Cross-protocol no-loss tests (issue 4): many MQTT publishers into one
// durable AMQP queue, and one AMQP publisher with confirms out to many MQTT
// subscribers; every message arrives exactly once.

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// noLossTimeout bounds each no-loss test's traffic, start to finish.
const noLossTimeout = 3 * time.Minute

// TestMQTTNoLossMQTTToAMQP: 100 MQTT 5 clients publish 1,000 QoS 1 messages
// each to sensors/<client>/temp; an AMQP consumer on a durable queue bound
// to amq.topic with sensors.# receives all 100,000 exactly once.
func TestMQTTNoLossMQTTToAMQP(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 100 clients x 1,000 messages take seconds; make test and CI run it")
	}
	const clients, perClient, lanes = 100, 1000, 4 // lanes: concurrent publishes per client
	const total = clients * perClient
	b := StartBroker(t)
	conn := dial(t, b)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	const queue = "noloss-sensors"
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, "sensors.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(4000, 0, false); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}

	pubs := make([]*mqtttest.V5Client, clients)
	for i := range pubs {
		pubs[i] = mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: fmt.Sprintf("sensor-%03d", i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), noLossTimeout)
	defer cancel()
	start := time.Now()
	failed := make(chan error, clients*lanes)
	var wg sync.WaitGroup
	for i, c := range pubs {
		topic := fmt.Sprintf("sensors/%03d/temp", i)
		for lane := range lanes {
			wg.Go(func() {
				for seq := lane; seq < perClient; seq += lanes {
					payload := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(i)), uint32(seq))
					pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
					if err == nil && pr != nil && pr.ReasonCode >= 0x80 {
						err = fmt.Errorf("PUBACK reason %#x", pr.ReasonCode)
					}
					if err != nil {
						failed <- fmt.Errorf("client %d message %d: %w", i, seq, err)
						return
					}
				}
			})
		}
	}
	published := make(chan struct{})
	go func() { wg.Wait(); close(published) }()

	var seen [clients][perClient]bool
	received, dups := 0, 0
	for received < total {
		select {
		case d, ok := <-deliveries:
			if !ok {
				t.Fatalf("consumer closed after %d of %d messages", received, total)
			}
			if len(d.Body) != 8 {
				t.Fatalf("unexpected %d-byte body %q with key %q", len(d.Body), d.Body, d.RoutingKey)
			}
			c, seq := binary.BigEndian.Uint32(d.Body), binary.BigEndian.Uint32(d.Body[4:])
			if c >= clients || seq >= perClient || d.RoutingKey != fmt.Sprintf("sensors.%03d.temp", c) {
				t.Fatalf("unexpected message client %d seq %d key %q", c, seq, d.RoutingKey)
			}
			if seen[c][seq] {
				if dups++; dups <= 10 {
					t.Errorf("client %d message %d delivered twice", c, seq)
				}
				continue
			}
			seen[c][seq] = true
			if received++; received%1000 == 0 {
				if err := d.Ack(true); err != nil {
					t.Fatal(err)
				}
			}
		case err := <-failed:
			t.Fatalf("publish failed after %d messages received: %v", received, err)
		case <-ctx.Done():
			t.Fatalf("received %d of %d messages within %v (%d duplicates)", received, total, noLossTimeout, dups)
		}
	}
	elapsed := time.Since(start)
	select {
	case <-published:
	case err := <-failed:
		t.Fatal(err)
	case <-ctx.Done():
		t.Fatal("all messages arrived but not every PUBACK did")
	}
	t.Logf("%d MQTT QoS 1 messages from %d clients to one durable AMQP queue in %v (%.0f msg/s)",
		total, clients, elapsed, float64(total)/elapsed.Seconds())

	// A late duplicate would sit ahead of a sentinel sent now.
	pubs[0].Send(t, "sensors/sentinel", 1, "sentinel")
	for {
		d := mqtttest.WaitFor(t, deliveries, mqtttest.Wait, "sentinel")
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
		if string(d.Body) == "sentinel" {
			break
		}
		dups++
		t.Errorf("late duplicate %x with key %q", d.Body, d.RoutingKey)
	}
	if dups > 0 {
		t.Fatalf("%d duplicates", dups)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 0 {
		t.Fatalf("%d messages left in %s after all were received", q.Messages, queue)
	}
}

// TestMQTTNoLossAMQPToMQTT: an AMQP publisher with confirms publishes 1,000
// persistent messages to amq.topic; 100 MQTT 5 QoS 1 subscribers each
// receive every one exactly once, at QoS 1.
func TestMQTTNoLossAMQPToMQTT(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 100,000 deliveries take seconds; make test and CI run it")
	}
	const subscribers, n = 100, 1000
	b := StartBroker(t)
	subs := make([]*mqtttest.V5Client, subscribers)
	for i := range subs {
		subs[i] = mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: fmt.Sprintf("cmd-sub-%03d", i), Buffer: n + 1})
		subs[i].SubscribeAt(t, 1, "cmds/#")
	}

	start := time.Now()
	deadline := start.Add(noLossTimeout)
	var wg sync.WaitGroup
	for i, c := range subs {
		wg.Go(func() {
			timer := time.NewTimer(time.Until(deadline))
			defer timer.Stop()
			seen := make([]bool, n)
			got := 0
			for {
				select {
				case m := <-c.Msgs:
					if len(m.Payload) < 8 || m.Topic != "cmds/all" || m.QoS != 1 {
						t.Errorf("subscriber %d: unexpected message on %q at QoS %d: %x", i, m.Topic, m.QoS, m.Payload)
						return
					}
					seq := binary.BigEndian.Uint64(m.Payload)
					if seq == n { // the sentinel, published after all n
						if got != n {
							t.Errorf("subscriber %d: %d of %d messages before the sentinel", i, got, n)
						}
						return
					}
					if seq > n || seen[seq] {
						t.Errorf("subscriber %d: message %d unexpected or twice", i, seq)
						return
					}
					seen[seq] = true
					got++
				case <-timer.C:
					t.Errorf("subscriber %d: %d of %d messages within %v", i, got, n, noLossTimeout)
					return
				}
			}
		})
	}

	_, ch := dialBroker(t, b)
	p := newPublisher(t, ch, 500)
	for seq := range uint64(n + 1) { // seq n is the sentinel
		if !p.publish("amq.topic", "cmds.all", seq, 16) {
			t.Fatalf("publish %d failed", seq)
		}
	}
	for p.inflight > 0 {
		if !p.await(confirmWait) {
			t.Fatalf("confirm missing (%d confirmed)", len(p.confirmed))
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d persistent AMQP messages to %d MQTT QoS 1 subscribers (%d deliveries) in %v (%.0f deliveries/s)",
		n, subscribers, n*subscribers, elapsed, float64(n*subscribers)/elapsed.Seconds())
}
