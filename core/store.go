package core

// Store keeps what must survive a restart: durable exchanges, queues and
// bindings, and persistent messages (delivery-mode 2) on durable queues.
// Core defines it and calls it; the persistence package implements it.
// Transient messages and non-durable entities never reach it.
//
// Every change is an append to the store's log and returns its position;
// positions grow by one per append. The store commits the log in batches,
// one fsync for many appends (group commit), and reports progress through
// Notify and Wait. Core appends a queue's operations while holding that
// queue's lock, in the order it performs them, so appends must not block
// and must not call back into core; replaying the log in position order
// rebuilds the state.
type Store interface {
	// PutExchange records a durable exchange (created or redeclared).
	PutExchange(vhost string, d ExchangeDecl) uint64
	// DeleteExchange forgets an exchange.
	DeleteExchange(vhost, name string) uint64
	// PutQueue records a durable queue.
	PutQueue(r QueueRecord) uint64
	// TouchQueue records that a queue was last used at lastUsed (Clock,
	// UnixNano), so that x-expires keeps counting across a restart.
	TouchQueue(vhost, name string, lastUsed int64) uint64
	// DeleteQueue forgets a queue and every message reference it holds;
	// message bodies no other queue references are deleted with it.
	DeleteQueue(vhost, name string) uint64
	// PutBinding records a binding whose source and destination are both
	// durable.
	PutBinding(vhost string, b BindingRecord) uint64
	// DeleteBinding forgets a binding.
	DeleteBinding(vhost string, b BindingRecord) uint64

	// Enqueue records that queue holds msg at position seq of its own
	// order. The message (properties and body) is written once, keyed by
	// msg.ID, however many queues reference it.
	Enqueue(vhost, queue string, seq uint64, msg *Message, deadline int64) uint64
	// Remove records that queue no longer holds seq (acked, rejected,
	// expired, dropped, purged). A body left without references is deleted.
	Remove(vhost, queue string, seq, msgID uint64) uint64
	// Delivered records that seq has been handed to a consumer, so that it
	// comes back with redelivered set after a restart. It need not be
	// synced before anything is acknowledged.
	Delivered(vhost, queue string, seq uint64)
	// Hold keeps everything appended from now on out of any commit until
	// Release(token): what is appended in between commits in one batch
	// with what follows it, or not at all. Core holds while it moves a
	// message from a queue to its dead-letter targets (the Remove and the
	// Enqueues), so that no crash leaves the message in neither. A hold
	// must be short, and its holder must not wait for the store.
	Hold() (token uint64)
	// Release ends the Hold that returned token.
	Release(token uint64)
	// LoadBatch reads messages back by id: ones paged out of memory, or
	// recovered at start-up. For each i it sets either msgs[i] to the
	// message ids[i] (errs[i] nil) or errs[i] to why it cannot be read
	// (msgs[i] nil: not stored, damaged); ids, msgs and errs have the same
	// length, ids need not be sorted, and the store keeps none of them.
	// Core reads the next window of a delivering queue's paged-out
	// messages in one call (a few hundred ids, bounded in bytes), so that
	// the store can serve them with one read; a message appended and not
	// yet committed must be found all the same. It is called with a queue
	// lock held, and must not block on the store's commits.
	LoadBatch(ids []uint64, msgs []*Message, errs []error)

	// Notify calls w.Synced once every append up to pos is on disk, or has
	// failed, from the store's own goroutine. A waiter is called once per
	// Notify.
	Notify(pos uint64, w SyncWaiter)
	// Wait blocks until pos is on disk and returns the error that kept it
	// from getting there, if any.
	Wait(pos uint64) error
}

// SyncWaiter is told when a log position is durable.
type SyncWaiter interface {
	// Synced reports that every append up to pos is on disk (err nil) or
	// that writing them failed (a full disk): the caller must then refuse
	// what depended on them (publisher nack, MQTT reason code). It runs on
	// the store's goroutine and must not block.
	Synced(pos uint64, err error)
}

// QueueRecord is a durable queue as stored.
type QueueRecord struct {
	VHost      string
	Name       string
	AutoDelete bool
	Arguments  Table
	LastUsed   int64 // Clock time (UnixNano) of the last use, for x-expires
}

// BindingRecord is a durable binding as stored.
type BindingRecord struct {
	Source      string
	Destination string
	ToExchange  bool // Destination is an exchange (exchange.bind)
	RoutingKey  string
	Arguments   Table
}

// StoredMessage is one message reference read back from the store at
// start-up: the message itself stays on disk until a consumer needs it.
type StoredMessage struct {
	Seq       uint64
	ID        uint64 // Message.ID, for Store.LoadBatch
	Size      int    // body bytes, for x-max-length-bytes
	Priority  uint8
	Deadline  int64 // Clock time (UnixNano) of expiry; 0 = never
	Delivered bool  // handed to a consumer before the restart: redelivered
}

// Recovery is what a Store read back at start-up, for Broker.Recover.
type Recovery interface {
	// Exchanges, Queues and Bindings call fn for every stored entity.
	Exchanges(fn func(vhost string, d ExchangeDecl) error) error
	Queues(fn func(r QueueRecord) error) error
	Bindings(fn func(vhost string, b BindingRecord) error) error
	// Messages calls fn for every message reference of a queue in seq
	// order, without reading the bodies.
	Messages(vhost, queue string, fn func(m StoredMessage) error) error
	// MaxMessageID is the largest Message.ID stored, so new ids do not
	// collide with recovered ones.
	MaxMessageID() uint64
}
