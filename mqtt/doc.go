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
//
// # Locks
//
// Four locks per connection, in this order (a goroutine holding one may
// take only those after it):
//
//  1. the locks core calls in with: a queue's lock (sink.Deliver) and the
//     session's acknowledgement queue (core.SyncQueue, session.releaseAcks);
//  2. session.mu: subscriptions, in-flight deliveries and the output
//     buffer (a core.Outbox); session.drained waits on it;
//  3. client.turn's own lock, held only while the write turn changes hands;
//  4. client.mu: the close cause, the will and the session pointer
//     (a failed store closes a 3.1.1 client from releaseAcks, under 1).
//
// The write turn (writeTurn) is not a lock but a token, held across a
// socket write so that packets never interleave. Its holder takes no lock
// (the WebSocket connection's, inside Write, aside), and under session.mu,
// and so under a queue's lock, the turn is only ever tried, never waited
// for: a client that does not read stalls its writers, never core. A
// direct write that got only part of a packet out passes the turn to the
// writer goroutine with the rest (session.signalLocked), which releases it.
// The server's own locks (Server.mu, the poller's, the $SYS publisher's
// sysState.mu) are leaves; the retained index's is held over the store's
// append of a retained message. The $SYS publisher (sys.go) publishes
// holding none of them, and reads the connections' counters, atomics,
// under Server.mu alone. core's
// package doc has the whole table, with core's locks.
package mqtt
