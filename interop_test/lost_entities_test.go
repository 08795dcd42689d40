package interop_test

// Entities an administrator deletes under their owner (issue 15 item 6):
// a bridge's store-and-forward queue and an MQTT session's queue. The
// owner notices, logs the loss at WARN, makes the queue again and goes
// on; nothing reconnects in a loop.

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestBridgeQueueDeleted: for each upstream kind, an administrator deletes
// the link's queue bridge.upstream with AMQP queue.delete, first while the
// link is connected, then while the upstream is down. Each time the edge
// logs the loss at WARN and remakes the queue (with its binding), and the
// link forwards what is published afterwards, in order; the link connects
// once per upstream start, not in a loop.
func TestBridgeQueueDeleted(t *testing.T) {
	const n = 200
	for _, scheme := range []string{"amqp", "mqtt", "mqtt3"} {
		t.Run(scheme, func(t *testing.T) {
			upAddr := freePort(t)
			listen := "--amqp-listen"
			if scheme != "amqp" {
				listen = "--mqtt-listen"
			}
			up := StartBroker(t, "--node-name", "up", listen, upAddr)
			ch := upstreamQueue(t, up, "landing", "sensors.#")
			edge := StartBroker(t, "--node-name", "edge", "--bridge-url", scheme+"://guest:guest@"+upAddr+"/",
				"--bridge-topic", "sensors/#")
			_, admin := dialBroker(t, edge)

			publishAMQP(t, edge, "sensors.x", 0, n)
			checkOnceInOrder(t, collectOnce(t, ch, "landing", n, 30*time.Second), 0, n)

			// Deleted under the connected link.
			if _, err := admin.QueueDelete("bridge.upstream", false, false, false); err != nil {
				t.Fatalf("queue.delete bridge.upstream: %v", err)
			}
			waitLog(t, edge, "bridge queue was deleted")
			if _, err := admin.QueueDeclarePassive("bridge.upstream", true, false, false, false, nil); err != nil {
				t.Fatalf("bridge.upstream not made again: %v", err)
			}
			publishAMQP(t, edge, "sensors.x", n, n)
			checkOnceInOrder(t, collectOnce(t, ch, "landing", n, 30*time.Second), n, n)

			// Deleted while the upstream is down: made again at once, so
			// the link buffers what comes meanwhile.
			upDir := up.DataDir
			if err := up.Stop(t); err != nil {
				t.Fatal(err)
			}
			waitLog(t, edge, "connected=false")
			_, admin = dialBroker(t, edge)
			if _, err := admin.QueueDelete("bridge.upstream", false, false, false); err != nil {
				t.Fatalf("queue.delete bridge.upstream: %v", err)
			}
			deadline := time.Now().Add(20 * time.Second)
			for strings.Count(edge.Output(), "bridge queue was deleted") < 2 {
				if time.Now().After(deadline) {
					t.Fatal("second deletion not logged")
				}
				time.Sleep(20 * time.Millisecond)
			}
			publishAMQP(t, edge, "sensors.x", 2*n, n)
			up = StartBroker(t, "--node-name", "up", listen, upAddr, "--data-dir", upDir)
			_, ch = dialBroker(t, up)
			checkOnceInOrder(t, collect(t, ch, "landing", n, 60*time.Second), 2*n, n)

			out := edge.Output()
			if c := strings.Count(out, "bridge connected"); c > 3 {
				t.Errorf("the link connected %d times for 2 upstream starts: a reconnect loop", c)
			}
			t.Logf("link connects: %d; WARN lines: %d", strings.Count(out, "bridge connected"),
				strings.Count(out, "bridge queue was deleted"))
		})
	}
}

// TestMQTTSessionQueueDeleted: a persistent session's queue
// mqtt-subscription-<id>qos1 (or, for a QoS 0 subscription, qos0) deleted
// by an administrator, while the client is away and while it is connected. The session did not survive, so the
// next CONNACK says session present 0 [MQTT-3.2.2-4] (and a connected MQTT
// 5 client first gets DISCONNECT 0x98 Administrative action); the loss is
// logged at WARN and counted once in ferrymq_mqtt_sessions_lost_total.
// The subscriptions are not restored by the broker: they lived as the
// deleted queue's bindings, and session present 0 is what tells a client
// to subscribe again. After it does, delivery works.
func TestMQTTSessionQueueDeleted(t *testing.T) {
	for _, v := range []int{4, 5} {
		for _, live := range []bool{false, true} {
			for _, qos := range []byte{1, 0} {
				name := fmt.Sprintf("%s-qos%d-away", mqtttest.VersionName(v), qos)
				if live {
					name = fmt.Sprintf("%s-qos%d-connected", mqtttest.VersionName(v), qos)
				}
				t.Run(name, func(t *testing.T) { testSessionQueueDeleted(t, v, live, qos, name) })
			}
		}
	}
}

func testSessionQueueDeleted(t *testing.T, v int, live bool, qos byte, name string) {
	b := StartBroker(t)
	id := "lost-" + name
	filter := "lost/" + name + "/#"
	topic := "lost/" + name + "/cmd"
	c1 := connectSession(t, b, v, id)
	c1.sub(filter, qos)
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id + "-pub"})
	if !live {
		c1.leave()
	}
	for i := range 5 {
		pub.Send(t, topic, 1, fmt.Sprint(i))
	}
	_, admin := dialBroker(t, b)
	queue := fmt.Sprintf("mqtt-subscription-%sqos%d", id, qos)
	if _, err := admin.QueueDelete(queue, false, false, false); err != nil {
		t.Fatalf("queue.delete %s: %v", queue, err)
	}
	if live {
		waitLog(t, b, "session's queue was deleted")
		if v == 5 {
			d := mqtttest.WaitFor(t, c1.v5.Disconnects, 20*time.Second, "DISCONNECT after the queue was deleted")
			if d.ReasonCode != 0x98 {
				t.Errorf("DISCONNECT reason %#x, want 0x98 Administrative action", d.ReasonCode)
			}
		}
	}
	c2 := connectSession(t, b, v, id)
	if c2.present {
		t.Fatalf("CONNACK session present 1 after the session's queue %s was deleted, want 0", queue)
	}
	waitLog(t, b, "session's queue was deleted")
	if n := metricValue(t, b, "ferrymq_mqtt_sessions_lost_total"); n != 1 {
		t.Errorf("ferrymq_mqtt_sessions_lost_total %v, want 1", n)
	}
	marker := "mqtt-subscription-" + id + "qos1"
	if _, err := admin.QueueDeclarePassive(marker, true, false, false, false, nil); err != nil {
		t.Errorf("session queue %s not made again on reconnect: %v", marker, err)
	}
	c2.sub(filter, qos)
	pub.Send(t, topic, 1, "after")
	if m := c2.next("message after subscribing again"); m.Payload != "after" {
		t.Fatalf("first message after subscribing again: %+v, want \"after\" (the queued ones went with the queue)", m)
	}
}

// metricValue returns the value of the unlabelled series name in b's
// /metrics, or fails.
func metricValue(t *testing.T, b *Broker, name string) float64 {
	t.Helper()
	code, body := apiCall(t, b, "guest", "guest", "GET", "/metrics", nil)
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("/metrics: %q: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// sessionClient is a persistent-session client of either MQTT version.
type sessionClient struct {
	present bool
	v5      *mqtttest.V5Client // nil for 3.1.1
	sub     func(filter string, qos byte)
	next    func(what string) mqtttest.Msg
	leave   func() // a clean DISCONNECT
}

// connectSession connects a persistent session (3.1.1 clean session 0;
// 5.0 clean start 0 with an expiry of an hour).
func connectSession(t *testing.T, b *Broker, v int, id string) *sessionClient {
	t.Helper()
	if v == 5 {
		c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, Resume: true, SessionExpiry: 3600})
		return &sessionClient{
			present: c.Connack.SessionPresent, v5: c,
			sub:   func(f string, qos byte) { c.SubscribeAt(t, qos, f) },
			next:  func(w string) mqtttest.Msg { return mqtttest.FromV5(c.Next(t, w)) },
			leave: func() { c.Disconnect(&paho.Disconnect{ReasonCode: 0}) },
		}
	}
	c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Persistent: true})
	return &sessionClient{
		present: c.SessionPresent,
		sub:     func(f string, qos byte) { c.SubscribeAt(t, qos, f) },
		next:    func(w string) mqtttest.Msg { return mqtttest.FromV3(c.Next(t, w)) },
		leave:   func() { c.Disconnect(250) },
	}
}

// collectOnce is collect on a consumer of its own that it cancels, so that
// the next call gets every message after.
func collectOnce(t *testing.T, ch *amqp.Channel, queue string, want int, deadline time.Duration) []uint64 {
	t.Helper()
	tag := fmt.Sprintf("collect-%d", time.Now().UnixNano())
	ds, err := ch.Consume(queue, tag, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Cancel(tag, false)
	var got []uint64
	timeout := time.After(deadline)
	for len(got) < want {
		select {
		case d := <-ds:
			got = append(got, binary.BigEndian.Uint64(d.Body))
		case <-timeout:
			t.Fatalf("received %d of %d messages", len(got), want)
		}
	}
	return got
}
