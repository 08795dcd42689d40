package interop_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// storeWitness publishes persistent messages to a durable queue with
// publisher confirms, one at a time, for as long as the test runs, and
// counts the confirms: a store that one client stopped shows up as a nack,
// or as a confirm that does not come.
type storeWitness struct {
	confirmed atomic.Int64
	failed    chan error // the first failure
	stop      context.CancelFunc
	done      chan struct{}
}

func startStoreWitness(t *testing.T, b *Broker) *storeWitness {
	t.Helper()
	_, ch := dialBroker(t, b)
	if _, err := ch.QueueDeclare("witness", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	ctx, cancel := context.WithCancel(context.Background())
	w := &storeWitness{failed: make(chan error, 1), stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		fail := func(err error) {
			select {
			case w.failed <- err:
			default:
			}
		}
		for i := 0; ctx.Err() == nil; i++ {
			err := ch.PublishWithContext(ctx, "", "witness", false, false, amqp.Publishing{
				DeliveryMode: amqp.Persistent, Body: []byte(fmt.Sprint(i)),
			})
			if err != nil {
				if ctx.Err() == nil {
					fail(fmt.Errorf("witness publish %d: %w", i, err))
				}
				return
			}
			select {
			case c := <-confirms:
				if !c.Ack {
					fail(fmt.Errorf("witness message %d nacked", i))
					return
				}
				w.confirmed.Add(1)
			case <-time.After(15 * time.Second):
				fail(fmt.Errorf("witness message %d: no confirm within 15 s", i))
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	return w
}

// check fails the test if the witness failed, and waits for it to get
// three more confirms; it also declares a durable queue, which needs a
// store write of its own.
func (w *storeWitness) check(t *testing.T, b *Broker, step string) {
	t.Helper()
	from := w.confirmed.Load()
	deadline := time.Now().Add(20 * time.Second)
	for w.confirmed.Load() < from+3 {
		select {
		case err := <-w.failed:
			t.Fatalf("after %s: %v", step, err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: witness confirms stuck at %d for 20 s", step, w.confirmed.Load())
		}
	}
	_, ch := dialBroker(t, b)
	name := "durable-after-" + strings.ReplaceAll(step, " ", "-")
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		t.Fatalf("after %s: durable queue.declare: %v", step, err)
	}
}

// TestLongNamesDoNotStopTheStore sends the four packets that used to stop
// every durable write (issue 15, item 1): a CONNECT with clean session 0 and
// a 65,535-byte client id, a persistent QoS 1 subscription to a 65,000-byte
// filter, a retained publish on a 65,000-byte topic and a retained will on
// one. Each is legal MQTT, and each now works: the store writes long names
// hashed into its keys. Throughout, an AMQP publisher keeps getting its
// confirms and durable declares keep working; after a restart the
// retained messages and the sessions are still there.
func TestLongNamesDoNotStopTheStore(t *testing.T) {
	b := StartBroker(t)
	w := startStoreWitness(t, b)
	w.check(t, b, "start")

	longID := "id-" + strings.Repeat("c", 65535-3)
	filter := "filter/" + strings.Repeat("f", 65000-7)
	retainedTopic := "retained/" + strings.Repeat("r", 65000-9)
	willTopic := "will/" + strings.Repeat("w", 65000-5)

	// 1. MQTT 3.1.1, clean session 0, a 65,535-byte client id: the session
	// and its queue are stored.
	c1 := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: longID, Persistent: true})
	c1.SubscribeAt(t, 1, "long/id")
	w.check(t, b, "a 65535-byte client id")
	c1.Disconnect(100)
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "pub"})
	pub.Send(t, "long/id", 1, "while away")
	c1 = mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: longID, Persistent: true})
	if !c1.SessionPresent {
		t.Fatal("the 65,535-byte client id's session is not present on reconnect")
	}
	if m := c1.Next(t, "message queued for the long client id"); string(m.Payload()) != "while away" {
		t.Fatalf("long client id got %q", m.Payload())
	}

	// 2. A persistent QoS 1 subscription to a 65,000-byte filter.
	sub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "long-filter", SessionExpiry: 3600})
	sub.SubscribeAt(t, 1, filter)
	w.check(t, b, "a 65000-byte filter")
	pub.Send(t, filter, 1, "to the long filter")
	if m := sub.Next(t, "message on the 65,000-byte filter"); string(m.Payload) != "to the long filter" {
		t.Fatalf("long filter got %q", m.Payload)
	}

	// 3. A retained publish on a 65,000-byte topic: PUBACK success.
	pub.PublishAcked(t, &paho.Publish{Topic: retainedTopic, QoS: 1, Retain: true, Payload: []byte("retained")})
	w.check(t, b, "a retained 65000-byte topic")

	// 4. A retained will on a 65,000-byte topic, published when its client
	// goes away without DISCONNECT.
	willer := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "willer",
		Will: &mqtttest.V3Will{Topic: willTopic, Payload: "will", QoS: 1, Retain: true}})
	watch := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "watch"})
	watch.SubscribeAt(t, 1, "will/#")
	willer.KillConn(t)
	if m := watch.Next(t, "the will"); m.Topic != willTopic {
		t.Fatalf("will on a %d-byte topic, want %d", len(m.Topic), len(willTopic))
	}
	w.check(t, b, "a retained will on a 65000-byte topic")

	// Everything stored comes back after a restart.
	w.stop()
	<-w.done
	b = restart(t, b)
	w = startStoreWitness(t, b)
	late := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "late"})
	late.SubscribeAt(t, 1, "retained/#", "will/#")
	got := map[string]string{}
	for range 2 {
		m := late.Next(t, "retained message after the restart")
		if !m.Retain {
			t.Errorf("message on a %d-byte topic not flagged retained", len(m.Topic))
		}
		got[m.Topic] = string(m.Payload)
	}
	if got[retainedTopic] != "retained" || got[willTopic] != "will" {
		t.Errorf("retained after restart: %d topics, want the retained publish and the will", len(got))
	}
	c1 = mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: longID, Persistent: true})
	if !c1.SessionPresent {
		t.Error("the 65,535-byte client id's session is gone after the restart")
	}
	sub = mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "long-filter", SessionExpiry: 3600, Resume: true})
	if !sub.Connack.SessionPresent {
		t.Error("the 65,000-byte filter's session is gone after the restart")
	}
	pub = mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "pub"})
	pub.Send(t, filter, 1, "after restart")
	if m := sub.Next(t, "message on the long filter after the restart"); string(m.Payload) != "after restart" {
		t.Fatalf("long filter after restart got %q", m.Payload)
	}
	w.check(t, b, "restart")
}
