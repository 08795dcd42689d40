package mqtt

// Message expiry (MQTT 5 section 3.3.2.3.3).

import (
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestMessageExpiry: a message published with Message Expiry Interval
// 1 s to an offline persistent session expires in its queue: "If the
// Message Expiry Interval has passed and the Server has not managed to
// start onward delivery to a matching subscriber, then it MUST delete the
// copy of the message for that subscriber" [MQTT-3.3.2-5]. One published
// with an interval still running is delivered with the time it waited
// taken off [MQTT-3.3.2-6].
func TestMessageExpiry(t *testing.T) {
	const id = "me-sub"
	b := startTestBroker(t, testBrokerOpts{Durable: true})
	qw := newQueueWatch(t, b)
	c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, SessionExpiry: 300})
	c.SubscribeAt(t, 1, "me/t")
	if err := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	// Offline before the publish: until the broker has read the
	// DISCONNECT, the subscription may still deliver to the closing
	// connection, which starts onward delivery (no expiry then).
	waitCond(t, "me-sub offline", func() bool { return !findSession(t, b.MQTT, id).Connected })
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "me-pub"})
	sent := time.Now()
	pub.PublishAcked(t, &paho.Publish{Topic: "me/t", QoS: 1, Payload: []byte("short"),
		Properties: &paho.PublishProperties{MessageExpiry: new(uint32(1))}})
	if n := qw.ready(t, sessionQueue(id)); n != 1 && time.Since(sent) < time.Second {
		t.Fatalf("%s holds %d messages right after the publish, want 1", sessionQueue(id), n)
	}
	qw.waitReady(t, sessionQueue(id), 0, "the message expiring")
	pub.PublishAcked(t, &paho.Publish{Topic: "me/t", QoS: 1, Payload: []byte("long"),
		Properties: &paho.PublishProperties{MessageExpiry: new(uint32(3600))}})

	c = mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, Resume: true, SessionExpiry: 300})
	m := c.Next(t, "the unexpired message")
	if string(m.Payload) != "long" {
		t.Fatalf("first message after reconnecting: %q, want \"long\" (\"short\" expired) [MQTT-3.3.2-5]", m.Payload)
	}
	if p := m.Properties; p == nil || p.MessageExpiry == nil || *p.MessageExpiry == 0 || *p.MessageExpiry > 3600 {
		t.Errorf("Message Expiry Interval of the delivery: %+v, want 1..3600 [MQTT-3.3.2-6]", p)
	}
}
