// Package mqtt is ferrymq's MQTT 3.1.1 and 5 listener (TCP and WebSocket)
// on the shared core: MQTT topics are routing keys on amq.topic, each
// session's subscriptions are bindings of its core queues, so MQTT and
// AMQP clients exchange messages through the same exchanges and queues.
//
// mochi-mqtt's packets package is the codec and validator; connections,
// sessions, QoS state, retained messages and wills are this package's.
// A connection idle for a moment gives up its goroutine and read buffer
// and waits in an epoll set (Linux), so a fleet of mostly quiet devices
// costs a few kilobytes per connection.
package mqtt
