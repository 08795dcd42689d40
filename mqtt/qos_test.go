package mqtt

// Quality of service between MQTT clients of both versions.

import (
	"fmt"
	"testing"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestQoS: MQTT -> MQTT delivers at min(publish QoS, subscription QoS)
// [MQTT-3.8.4-8] (5.0) / section 3.8.4 (3.1.1), between both versions.
func TestQoS(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{Durable: true})
	for _, pv := range []int{4, 5} {
		for _, sv := range []int{4, 5} {
			pair := mqtttest.VersionName(pv) + "-to-" + mqtttest.VersionName(sv)
			t.Run(pair, func(t *testing.T) {
				pub := mqtttest.Connect(t, b.MQTTAddr, pv, "qos-pub-"+pair)
				sub := mqtttest.Connect(t, b.MQTTAddr, sv, "qos-sub-"+pair)
				for pq := byte(0); pq <= 2; pq++ {
					for sq := byte(0); sq <= 2; sq++ {
						topic := fmt.Sprintf("qos/%s/pub%d/sub%d", pair, pq, sq)
						sub.SubscribeAt(t, sq, topic)
						pub.SendMsg(t, topic, pq, false, topic)
						m := sub.NextMsg(t, topic)
						if m.Topic != topic || m.Payload != topic || m.QoS != min(pq, sq) {
							t.Errorf("published at QoS %d, subscribed at %d: got %+v, want QoS %d", pq, sq, m, min(pq, sq))
						}
					}
				}
			})
		}
	}
}

// TestQoS2ExactlyOnce: a stream of QoS 2 publishes reaches a QoS 2
// subscriber as QoS 2, each message exactly once and in order (one publisher,
// one topic: an ordered topic, section 4.6).
func TestQoS2ExactlyOnce(t *testing.T) {
	const n = 200
	b := startTestBroker(t, testBrokerOpts{Durable: true})
	for _, pv := range []int{4, 5} {
		for _, sv := range []int{4, 5} {
			pair := mqtttest.VersionName(pv) + "-to-" + mqtttest.VersionName(sv)
			t.Run(pair, func(t *testing.T) {
				pub := mqtttest.Connect(t, b.MQTTAddr, pv, "eo-pub-"+pair)
				sub := mqtttest.Connect(t, b.MQTTAddr, sv, "eo-sub-"+pair)
				topic := "eo/" + pair
				sub.SubscribeAt(t, 2, topic)
				for i := range n {
					pub.SendMsg(t, topic, 2, false, fmt.Sprint(i))
				}
				pub.SendMsg(t, topic, 2, false, "end")
				got := mqtttest.UntilMsg(t, sub, "end")
				if len(got) != n {
					t.Errorf("received %d messages before the sentinel, want %d", len(got), n)
				}
				for i, m := range got {
					if m.Payload != fmt.Sprint(i) || m.QoS != 2 {
						t.Fatalf("message %d: %+v; want payload %d at QoS 2 (each exactly once, in order)", i, m, i)
					}
				}
			})
		}
	}
}
