// Package topic is how MQTT addresses messages on ferrymq's AMQP model:
// topic names as routing keys on amq.topic, topic filters as binding keys,
// filter syntax and matching [MQTT-4.7], and the QoS a message was
// published with as it travels in AMQP headers.
//
// It is pure and imports only core, so that the bridge and tests can map
// topics the way the MQTT listener does without importing the listener.
package topic
