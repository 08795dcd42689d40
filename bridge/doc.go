// Package bridge links a ferrymq broker to upstream brokers (AMQP 0-9-1,
// MQTT 5, MQTT 3.1.1) with durable store-and-forward.
//
// An outbound link consumes a durable local queue, bridge.<name>, bound to
// the local topics it forwards; a message leaves that queue only when the
// upstream confirmed it (publisher confirm, PUBACK), so nothing is lost
// across link drops and restarts, and a message not confirmed is sent
// again in its place, keeping order. The queue's length limits are the
// link's disk budget. An inbound link subscribes upstream with a session
// that outlives the link and acks each message only once it is durable
// here. Every message crossing a bridge carries the node names it came
// through (ViaHeader), so brokers bridged both ways never echo.
package bridge
