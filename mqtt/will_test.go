package mqtt

// Wills (section 3.1.2.5).

import (
	"testing"

	"github.com/eclipse/paho.golang/paho"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
	mqtttopic "github.com/ferrymq/ferrymq/mqtt/topic"
)

// TestWill: when a client's socket dies without DISCONNECT, its will is
// published (section 3.1.2.5) through core: an MQTT subscriber and an AMQP
// queue bound to amq.topic both receive it.
func TestWill(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	ch := b.amqpChannel(t)
	watcher := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "will-watcher"})
	watcher.SubscribeAt(t, 1, "will/#")
	_, d := mqtttest.AMQPSubscribe(t, ch, "will.#")
	for _, v := range []int{4, 5} {
		t.Run(mqtttest.VersionName(v), func(t *testing.T) {
			topic, payload := "will/"+mqtttest.VersionName(v)+"/gone", "bye from "+mqtttest.VersionName(v)
			id := "willer-" + mqtttest.VersionName(v)
			if v == 5 {
				c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, Will: &paho.WillMessage{Topic: topic, QoS: 1, Payload: []byte(payload)}})
				c.Conn.Close()
			} else {
				c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Will: &mqtttest.V3Will{Topic: topic, QoS: 1, Payload: payload}})
				c.KillConn(t)
			}
			if m := watcher.Next(t, "will at the MQTT subscriber"); m.Topic != topic || string(m.Payload) != payload {
				t.Errorf("MQTT subscriber got %q %q, want will %q %q", m.Topic, m.Payload, topic, payload)
			}
			m := mqtttest.WaitFor(t, d, mqtttest.Wait, "will at the AMQP queue")
			if m.RoutingKey != mqtttopic.RoutingKey(topic) || string(m.Body) != payload || m.DeliveryMode != amqp091.Persistent {
				t.Errorf("AMQP got key %q body %q mode %d, want %q %q persistent (QoS 1 will)", m.RoutingKey, m.Body, m.DeliveryMode, mqtttopic.RoutingKey(topic), payload)
			}
		})
	}
}
