package interop_test

// MQTT state that outlives the broker process: retained messages and
// persistent sessions across a restart of the binary. The MQTT protocol
// tests that need no restart run in process, in package mqtt.

import (
	"fmt"
	"maps"
	"net/url"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// retainedFor subscribes a new client of version v to filter at QoS 1 and
// returns the n retained messages it is sent, as topic -> payload, failing
// the test if one is not flagged retained (section 3.3.1.3: messages sent
// for a new subscription have RETAIN 1) or comes twice.
func retainedFor(t *testing.T, b *Broker, v int, id, filter string, n int) map[string]string {
	t.Helper()
	c := mqtttest.Connect(t, b.MQTTAddr, v, id)
	c.SubscribeAt(t, 1, filter)
	got := make(map[string]string, n)
	for range n {
		m := c.NextMsg(t, fmt.Sprintf("retained message %d of %d for %q (have %v)", len(got)+1, n, filter, got))
		if !m.Retain {
			t.Errorf("%q: message %+v not flagged retained", filter, m)
		}
		if _, dup := got[m.Topic]; dup {
			t.Errorf("%q: retained message of %q sent twice", filter, m.Topic)
		}
		got[m.Topic] = m.Payload
	}
	return got
}

// checkCleared subscribes to topic, which has no retained message, then
// publishes a non-retained sentinel to it: the sentinel must be the first
// message, so no retained one came [MQTT-3.3.1-6] (5.0) / [MQTT-3.3.1-10]
// (3.1.1). The retained messages of a subscription are sent as it is made,
// before the SUBACK returns here, and the sentinel is published after.
func checkCleared(t *testing.T, b *Broker, pub *mqtttest.V5Client, id, topic string) {
	t.Helper()
	c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id})
	c.SubscribeAt(t, 1, topic)
	pub.Send(t, topic, 1, "sentinel")
	if m := c.Next(t, "sentinel"); string(m.Payload) != "sentinel" || m.Retain {
		t.Fatalf("first message for cleared %q: %q retain=%v, want the non-retained sentinel", topic, m.Payload, m.Retain)
	}
}

// waitOffline waits until the broker lists the MQTT session of id (vhost
// /) as disconnected. A client returns from Disconnect once its
// DISCONNECT is written, before the broker has read it: until it has, the
// session's subscriptions still deliver to that connection, so a message
// published meanwhile may go out to it instead of waiting in the queue.
func waitOffline(t *testing.T, b *Broker, id string) {
	t.Helper()
	deadline := time.Now().Add(mgmtWait)
	for {
		var s struct {
			Connected bool `json:"connected"`
		}
		apiJSON(t, b, "GET", "/api/mqtt/sessions/%2F/"+url.PathEscape(id), nil, &s)
		if !s.Connected {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("MQTT session %q still connected %v after its DISCONNECT", id, mgmtWait)
		}
		time.Sleep(20 * time.Millisecond) // polling the API, not synchronising
	}
}

// TestMQTTRetained: retained messages from MQTT and from AMQP (header
// x-mqtt-retain) reach new subscribers of exact and wildcard filters, of
// both versions; an empty retained publish clears one; and they survive a
// restart.
func TestMQTTRetained(t *testing.T) {
	b := StartBroker(t)
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "ret-pub"})
	for topic, payload := range map[string]string{"ret/a/temp": "21", "ret/b/temp": "22", "ret/a/hum": "50"} {
		pub.PublishAcked(t, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(payload)})
	}
	mqtttest.NewAMQPPublisher(t, b.URL).PublishAcked(t, "ret.c.temp", amqp.Publishing{
		DeliveryMode: amqp.Persistent, Headers: amqp.Table{"x-mqtt-retain": true}, Body: []byte("23"),
	})

	type retainedCase struct {
		filter string
		want   map[string]string
	}
	check := func(t *testing.T, b *Broker, stage string, cases []retainedCase) {
		for _, v := range []int{4, 5} {
			for i, tc := range cases {
				t.Run(fmt.Sprintf("%s-%s-%d", stage, mqtttest.VersionName(v), i), func(t *testing.T) {
					id := fmt.Sprintf("ret-%s-%s-%d", stage, mqtttest.VersionName(v), i)
					if got := retainedFor(t, b, v, id, tc.filter, len(tc.want)); !maps.Equal(got, tc.want) {
						t.Fatalf("%q got retained %v, want %v", tc.filter, got, tc.want)
					}
				})
			}
		}
	}
	check(t, b, "set", []retainedCase{
		{"ret/a/temp", map[string]string{"ret/a/temp": "21"}},
		{"ret/c/temp", map[string]string{"ret/c/temp": "23"}}, // set by AMQP
		{"ret/+/temp", map[string]string{"ret/a/temp": "21", "ret/b/temp": "22", "ret/c/temp": "23"}},
		{"+/+/hum", map[string]string{"ret/a/hum": "50"}},
		{"ret/#", map[string]string{"ret/a/temp": "21", "ret/b/temp": "22", "ret/a/hum": "50", "ret/c/temp": "23"}},
	})

	// An empty retained payload clears the topic's retained message.
	pub.PublishAcked(t, &paho.Publish{Topic: "ret/b/temp", QoS: 1, Retain: true})
	checkCleared(t, b, pub, "ret-cleared", "ret/b/temp")

	b = restart(t, b)
	pub = mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "ret-pub2"})
	check(t, b, "restarted", []retainedCase{
		{"ret/c/temp", map[string]string{"ret/c/temp": "23"}},
		{"ret/+/temp", map[string]string{"ret/a/temp": "21", "ret/c/temp": "23"}},
		{"ret/#", map[string]string{"ret/a/temp": "21", "ret/a/hum": "50", "ret/c/temp": "23"}},
	})
	checkCleared(t, b, pub, "ret-cleared2", "ret/b/temp")
}

// TestMQTTPersistentSession: a persistent session (3.1.1 clean session 0;
// 5.0 session expiry > 0) keeps its QoS 1 subscription and the messages
// published while it is offline in its durable queue
// mqtt-subscription-<id>qos1, across a broker restart; on reconnect the
// CONNACK says session present [MQTT-3.2.2-2] and the messages come, each
// once.
func TestMQTTPersistentSession(t *testing.T) {
	const n = 10
	for _, v := range []int{4, 5} {
		t.Run(mqtttest.VersionName(v), func(t *testing.T) {
			b := StartBroker(t)
			id := "persist-" + mqtttest.VersionName(v)
			topic := "persist/" + mqtttest.VersionName(v) + "/cmd"
			if v == 5 {
				c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, SessionExpiry: 3600})
				c.SubscribeAt(t, 1, "persist/"+mqtttest.VersionName(v)+"/#")
				if err := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
					t.Fatalf("disconnect: %v", err)
				}
			} else {
				c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Persistent: true})
				c.SubscribeAt(t, 1, "persist/"+mqtttest.VersionName(v)+"/#")
				c.Disconnect(250)
			}
			// The messages below must wait in the session's queue, not go
			// out to the connection that is closing.
			waitOffline(t, b, id)

			pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id + "-pub"})
			for i := range n {
				pub.Send(t, topic, 1, fmt.Sprint(i))
			}
			_, ch := dialBroker(t, b)
			queue := "mqtt-subscription-" + id + "qos1"
			q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
			if err != nil {
				t.Fatalf("queue.declare passive %q while the client is offline: %v", queue, err)
			}
			if q.Messages != n {
				t.Errorf("%s holds %d messages while the client is offline, want %d", queue, q.Messages, n)
			}

			b = restart(t, b)

			var next func(what string) mqtttest.Msg
			var present bool
			if v == 5 {
				c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, Resume: true, SessionExpiry: 3600})
				present = c.Connack.SessionPresent
				next = func(what string) mqtttest.Msg { return mqtttest.FromV5(c.Next(t, what)) }
			} else {
				c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Persistent: true})
				present = c.SessionPresent
				next = func(what string) mqtttest.Msg { return mqtttest.FromV3(c.Next(t, what)) }
			}
			if !present {
				t.Errorf("CONNACK session present = 0 after the restart, want 1 [MQTT-3.2.2-2]")
			}
			for i := range n {
				m := next(fmt.Sprintf("queued message %d of %d after the restart", i+1, n))
				if m.Topic != topic || m.Payload != fmt.Sprint(i) || m.QoS != 1 {
					t.Fatalf("queued message %d: got %+v, want payload %d on %q at QoS 1", i, m, i, topic)
				}
			}
			// The subscription itself survived, and nothing comes twice.
			mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id + "-pub2"}).Send(t, topic, 1, "sentinel")
			if m := next("sentinel after the queued messages"); m.Payload != "sentinel" {
				t.Fatalf("after the %d queued messages got %+v, want the sentinel", n, m)
			}
		})
	}
}
