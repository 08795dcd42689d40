// Package core is ferrymq's broker: virtual hosts, exchanges, queues,
// bindings, consumers, TTL, dead-lettering, users and resource alarms,
// without sockets or disk. It imports nothing of ferrymq's; amqp, mqtt,
// bridge and persistence build on it.
//
// # What it models
//
// Core is RabbitMQ's model, not a neutral one. A Message carries AMQP
// 0-9-1 basic properties with their presence bits (Properties.Flags), so
// an AMQP message round-trips unchanged; errors are AMQP reply codes
// (CodeNotFound, CodePreconditionFailed, ...) with RabbitMQ's texts; queue
// arguments are RabbitMQ's x-arguments. MQTT is mapped onto it by the mqtt
// package: topics are routing keys on amq.topic, subscriptions are
// bindings of a session's queues, MQTT properties travel as AMQP
// properties and x-mqtt-* headers, and the mqtt package turns core's
// errors into MQTT reason codes.
//
// # Threading
//
// Core has no goroutines of its own for routing or delivery; only timers
// (TTL, x-expires, via Clock) run on their own. VHost.Publish routes and
// enqueues on the caller's goroutine, and dispatch is inline: a queue
// hands a message to its consumers (DeliverySink.Deliver) on whichever
// goroutine enqueued it, acked it (Queue.Settle), resumed a consumer
// (Consumer.Resume) or fired a timer - with the queue's lock held. A sink
// must therefore not block and must not call back into the queue: it
// appends to its connection's Outbox, or returns false to be resumed
// later. Dead letters are republished after the queue's lock is
// released, so no queue lock is held while publishing.
//
// # Durability
//
// With a Store (Options.Store), durable exchanges, queues and bindings and
// persistent messages on durable queues are appended to the store's log,
// under the queue's lock and in the order core applies them; appends
// never block. The store commits batches with one fsync each (group
// commit). Every change returns a log position: PublishResult.Pos is the
// position at which a publish is durable in every durable queue it
// reached and in whatever its publish hooks stored (an MQTT retained
// message), 0 if nothing was stored. An acknowledgement to a publisher
// (AMQP confirm, MQTT PUBACK/PUBREC, a bridge's upstream ack) must wait
// for it: SyncQueue releases acknowledgements in order, each once its
// position is durable (Broker.NotifySynced), and fails them with the
// store's error if the write failed. Consumers may receive a message
// before it is durable, as in RabbitMQ. Topology declarations wait for
// their own positions before they return. Store.Delivered marks are never
// waited for. What no one waits for (acks' Removes, publishes without a
// confirm) the store may hold back a few milliseconds so that it shares an
// fsync; a Notify or Wait commits at once. So an ack can come back as a
// redelivery after a crash, as in RabbitMQ, and anything that must be
// durable before it is told must be waited for.
//
// # Publish hooks
//
// A PublishHook (Broker.AddPublishHook) sees each client publish inside
// VHost.Publish, before routing, on the publisher's goroutine. It must not
// block: a hook that writes to the store appends and returns the position,
// which Publish folds into PublishResult.Pos, so the publisher's
// acknowledgement waits for it instead of the hook.
//
// # Resource alarms
//
// Broker.Block raises an alarm for a resource (AlarmDisk, AlarmMemory);
// each is raised and cleared on its own, and publishing stays blocked
// until the last clears. Broker.Blocked is read before every publish by
// the protocol servers, which then hold the publisher (AMQP:
// connection.blocked, the reader waits; MQTT: the reader waits, so
// PUBACK/PUBREC does); both also stop reading in the middle of a large
// message, since what has arrived of it is memory too. Broker.Alarms
// lists what is in effect. Broker.WatchMemory raises and clears
// AlarmMemory from the Go runtime's reading (MemoryInUse), with a lower
// mark to clear at; under it, a queue holding more than its share of the
// limit in transient messages refuses more it cannot deliver at once.
//
// # Counters
//
// Message counters (stats.go) ride on locks the message path already
// holds: a queue's are plain fields under Queue.mu; a vhost's delivery
// figures are its queues' sums, deleted queues folded in under VHost.mu;
// the one shared write per message is VHost.Publish's atomic add. Readers
// (VHost.Counters, EachQueue) copy the list of queues under VHost.mu held
// for reading, then take each Queue.mu in turn without it.
//
// # Lock order
//
// A lock may be taken while holding one above it in this list, never one
// below it; locks not listed together are never held together. Core's own
// locks, then the sinks' and stores' that core calls into:
//
//	Broker.mu                 vhost map; Close holds it over VHost.mu
//	Broker.connMu             taken alone: the connection registry
//	                          (Connections copies it); the protocol's
//	                          Close and ListChannels callbacks run after
//	                          it is released (amqp: chanList.mu, then each
//	                          channel.mu; mqtt: client.mu, then session.mu)
//	memWatch.mu               the memory limit's reading (WatchMemory);
//	                          held over Block/Unblock
//	Broker.alarms.mu          held while watchers run: amqp Server.mu, then
//	                          outbound.mu (connection.blocked)
//	VHost.mu                  topology (RLock on the publish path)
//	  exchange.mu             binding index
//	    Queue.mu              messages, consumers; held in Deliver, Store appends
//	      Limit.mu            shared prefetch waiters
//	      amqp channel.mu     (Deliver)
//	        amqp outbound.mu
//	      mqtt session.mu     (Deliver)
//	        mqtt writeTurn.mu held only to pass the write turn, never
//	                          across a write; the turn itself is not a lock
//	      Store               appends (persistence.Store.mu, never across
//	                          I/O) and LoadBatch of paged-out bodies (dbMu)
//	SyncQueue.mu              held in release: amqp outbound.mu (confirms),
//	                          mqtt session.mu (PUBACK/PUBREC), then writeTurn.mu;
//	                          and over the store's FailureLog (persistence
//	                          Store.mu, only once the store failed an op)
//	Users.mu                  taken alone
//
// The mqtt package's other locks are leaves, never held while taking
// another: Server.mu (sessions, clients, listeners), client.mu (close
// cause, will), the poller's mu, wsConn's write lock. retainedIndex.mu is
// held over the store append of a retained message (then
// persistence.Store.mu), and is taken inside VHost.Publish by the mqtt
// publish hook, where no core lock is held.
package core
