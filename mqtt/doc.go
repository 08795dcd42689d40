// Package mqtt will hold ferrymq's MQTT listener: a mochi-mqtt server wired to
// the shared core through one hook, so MQTT and AMQP clients exchange
// messages through the same exchanges and queues. A later issue fills it in.
package mqtt
