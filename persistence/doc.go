// Package persistence is the Badger-backed store of durable exchanges,
// queues and bindings, of persistent messages and of retained MQTT
// messages: it implements core.Store and core.Recovery (and
// mqtt.RetainStore, see retained.go), so that they survive a restart, a
// kill -9 or a power cut, and confirms and PUBACKs leave only once what
// they confirm is on disk.
//
// # Group commit
//
// Core appends every change (PutQueue, Enqueue, Remove, ...) with its
// queue locks held; an append only adds to an in-memory log and returns its
// position. One writer goroutine takes everything appended so far, applies
// it in order to one Badger write batch and commits it with one fsync
// (Badger's SyncWrites: the value log and the memtable WAL are msynced
// before the batch completes), then tells every waiter (Notify, Wait) whose
// position it covered. Publishers that confirm concurrently therefore share
// fsyncs: the more there are, the more each fsync carries.
//
// A batch no one waits for is held back instead: when the writer wakes and
// no waiter is at a position it has not taken (the acks of a bridge drain
// or of consumers, Removes nobody waits for; publishes without a confirm),
// it waits up to Options.CommitDelay (5 ms by default) or until the log
// holds 4096 ops or 1 MiB of message bodies, so that one fsync carries a
// burst of acks instead of each settle paying its own. A Notify or Wait for
// a position not yet taken, the Release of a Hold, Close and either bound
// end the wait at once, so a confirm or PUBACK, which registers its waiter
// right after its append, waits no longer than before. Nothing anyone was
// told is durable is held back: what a crash in the delay loses is acks,
// whose messages come back redelivered (RabbitMQ does not fsync acks at
// all), and publishes no one was promised.
//
// An op the store can never write (a message over MaxMessageSize, a
// record Badger would refuse) is checked before any of it reaches the
// batch, writes nothing, and fails alone: only the waiters at its
// position are told ErrTooLarge or ErrRefused, and the failure log
// (core.FailureLog) remembers the position for waiters that come later.
// Ops before and after it in the same commit succeed. The positions of a
// publish (a retained copy, then an Enqueue per durable queue, all of one
// message id) are one operation: a refused write of a message fails its
// later positions too, in whichever commit they land, so its publisher is
// never told it is stored.
//
// A failed commit
// (a full disk, an I/O error) is reported to its waiters and to
// Options.OnError, and retried with the next batch until it succeeds.
//
// A Hold (core.Store.Hold) keeps the writer from taking the log past the
// position before it until Release: core holds while it moves a message
// from a queue to its dead-letter queues, so that the Remove and the
// Enqueues commit in one batch and no crash loses the message.
//
// # Crashes
//
// Delivered marks are not synced one by one: they ride along with the next
// commit, or with Close. The key !running, synced at Open and deleted by a
// clean Close, tells the next Open whether marks may have been lost; if so
// every message a queue holds comes back redelivered, as from RabbitMQ's
// classic queues after an unclean shutdown.
//
// # Layout
//
// A message is written once, under its id, however many queues it was
// routed to; each queue holds a small reference (seq, id, size, priority,
// deadline) that recovery reads without touching the body. The writer
// counts references in memory and deletes a body with its last reference.
// Bodies go to Badger's value log, which background GC reclaims after acks;
// everything else stays in the LSM tree. See codec.go for the keys and
// badger.go for the tuning (a million queued 1 KiB messages hold some
// 100-200 MiB of anonymous memory).
//
// # Badger's value-log GC
//
// GC writes a value it moves back under its old version; a later compaction
// can drop the newer tombstone above it and so bring a deleted key back.
// Deleted exchanges, queues, bindings and retained messages are therefore
// written as empty values, which no compaction drops, and message bodies
// that come back are deleted again by a sweep after each GC and at Open.
package persistence
