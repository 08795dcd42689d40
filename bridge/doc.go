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
//
// # Refused for good, or an outage
//
// A message the upstream will never take must not hold back everything
// behind it, resent on every reconnect; a message the upstream cannot
// take for now must not be dropped. So an outbound link tells the two
// apart. Refused for good, acked here, counted (Status.Refused) and
// logged at WARN (one line per connection, then one each time the count
// doubles): an MQTT 5 PUBACK 0x83, 0x87, 0x90 or 0x99; a packet over an
// MQTT 5 upstream's Maximum Packet Size; a message an MQTT 3.1.1
// upstream closed the connection over, right after its publish, with it
// alone in flight, three times in a row (closeProbe: 3.1.1 has no other
// way to refuse); an AMQP channel exception 403
// ACCESS_REFUSED (the link's user may not write the exchange, or, with
// topic authorisation, the routing key) or 406 PRECONDITION_FAILED (over
// the upstream's max message size, an invalid property). Everything else
// is an outage: the link reconnects with backoff and sends the message
// again, in its place.
//
// An AMQP upstream refuses a publish by closing the channel, and all the
// publishes in flight on it are then unconfirmed, the culprit among them.
// The link opens a new channel on the same connection and sends those
// one at a time, each after the last one's confirm: the one that closes
// the channel alone in flight is the culprit; the link then goes on with
// its full window. Finding it costs a round trip per publish before it,
// and no reconnect.
//
// 404 NOT_FOUND, the exchange missing, is an outage, not a refusal:
// every publish of a link goes to the one exchange, so dropping "the"
// message would drop every message until someone makes the exchange (an
// upstream restarted without its definitions, a definitions import not
// yet run), which is exactly the silent loss a bridge is there to
// prevent. The messages wait here, the link retries with backoff (as a
// RabbitMQ shovel restarts after reconnect_delay), and each disconnect
// says why at WARN.
package bridge
