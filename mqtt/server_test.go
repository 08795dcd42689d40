package mqtt

import (
	"testing"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestMQTTAndAMQPBothWays is a smoke test of the listener on core: MQTT
// to MQTT, MQTT to AMQP and AMQP to MQTT, with a dot in a topic level.
func TestMQTTAndAMQPBothWays(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	sub := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "sub"})
	sub.SubscribeAt(t, 1, "sensors/+/temp.c")
	_, ds := mqtttest.AMQPSubscribe(t, b.amqpChannel(t), "sensors.*.temp/c")

	pub := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "pub"})
	pub.Send(t, "sensors/7/temp.c", 1, false, "21.5")
	if m := mqtttest.FromV3(sub.Next(t, "MQTT delivery")); m != (mqtttest.Msg{Topic: "sensors/7/temp.c", Payload: "21.5", QoS: 1}) {
		t.Fatalf("MQTT got %+v", m)
	}
	d := mqtttest.WaitFor(t, ds, mqtttest.Wait, "AMQP delivery")
	if d.RoutingKey != "sensors.7.temp/c" || string(d.Body) != "21.5" || d.DeliveryMode != 2 {
		t.Fatalf("AMQP got %q %q mode %d", d.RoutingKey, d.Body, d.DeliveryMode)
	}
	mqtttest.NewAMQPPublisher(t, b.URL).Send(t, "sensors.8.temp/c", false, "19")
	if m := mqtttest.FromV3(sub.Next(t, "AMQP->MQTT delivery")); m != (mqtttest.Msg{Topic: "sensors/8/temp.c", Payload: "19", QoS: 0}) {
		t.Fatalf("MQTT got %+v from AMQP", m)
	}
}

// TestDollarTopicsNotRouted: a client's publish to a $ topic is
// acknowledged but reaches no one, not even a $SYS/# subscriber
// [MQTT-4.7.2-1]; the next publish does.
func TestDollarTopicsNotRouted(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	sub := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "dollar-sub"})
	sub.SubscribeAt(t, 1, "$SYS/#", "after")
	pub := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "dollar-pub"})
	for _, topic := range []string{"$SYS/broker/x", "after"} {
		pub.Send(t, topic, 1, false, "x")
	}
	if m := sub.Next(t, "delivery"); m.Topic() != "after" {
		t.Fatalf("subscriber got %q first, want \"after\"", m.Topic())
	}
}
