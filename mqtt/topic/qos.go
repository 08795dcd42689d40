package topic

import "github.com/ferrymq/ferrymq/core"

// QoSHeader carries the QoS an MQTT message was published with through
// AMQP, as RabbitMQ's MQTT plugin names it; delivery mode alone cannot
// tell QoS 1 from 2.
const QoSHeader = "x-mqtt-publish-qos"

// MessageQoS is the MQTT QoS a message was published with: its
// x-mqtt-publish-qos, else 1 if persistent and 0 if not.
func MessageQoS(m *core.Message) byte {
	if v, ok := core.IntArg(m.Properties.Headers[QoSHeader]); ok && v >= 0 && v <= 2 {
		return byte(v)
	}
	if m.Properties.Persistent() {
		return 1
	}
	return 0
}
