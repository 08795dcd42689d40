package core

import (
	"log/slog"
	"sync"
	"sync/atomic"
)

// Options configure a Broker. Zero values are valid (SystemClock,
// slog.Default(), no store, DefaultMemoryBudget).
type Options struct {
	Clock  Clock
	Logger *slog.Logger
	// Store keeps durable entities and persistent messages; nil keeps
	// everything in memory.
	Store Store
	// MemoryBudget is how many bytes of stored message bodies stay in
	// memory before new ones are paged out to the Store; 0 means
	// DefaultMemoryBudget, negative never pages.
	MemoryBudget int64
	// MaxConnections is the node's connection limit (RabbitMQ's
	// connection_max) over all protocols; 0: none.
	MaxConnections int
}

// Broker is the set of virtual hosts of one server. It is safe for concurrent use.
type Broker struct {
	clock  Clock
	log    *slog.Logger
	store  Store
	mem    memBudget
	hooks  atomic.Pointer[[]PublishHook] // copy on write
	alarms alarms

	mu     sync.RWMutex
	vhosts map[string]*VHost // guarded by mu
	// deletedHooks run after DeleteVHost; guarded by mu.
	deletedHooks []func(vhost string)

	// connMu guards the connection registry and the limit counters
	// (VHost.conns too). It is taken alone.
	connMu   sync.Mutex
	conns    map[*Access]struct{}
	byName   map[string]*Access // by ConnInfo.Name, for the operations API
	users    map[string]*userConns
	maxConns int
}

// NewBroker returns a broker holding the vhost "/".
func NewBroker(opts Options) *Broker {
	b := &Broker{
		clock: opts.Clock, log: opts.Logger, store: opts.Store, vhosts: make(map[string]*VHost),
		conns: make(map[*Access]struct{}), byName: make(map[string]*Access), users: make(map[string]*userConns), maxConns: opts.MaxConnections,
	}
	switch {
	case opts.MemoryBudget == 0:
		b.mem.limit = DefaultMemoryBudget
	case opts.MemoryBudget > 0:
		b.mem.limit = opts.MemoryBudget
	}
	if b.clock == nil {
		b.clock = SystemClock{}
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.AddVHost("/")
	return b
}

// VHost returns the named vhost, or nil if absent.
func (b *Broker) VHost(name string) *VHost {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.vhosts[name]
}

// AddVHost returns the named vhost, creating it with the default exchange and
// the pre-declared amq.* exchanges if it does not exist.
func (b *Broker) AddVHost(name string) *VHost {
	b.mu.Lock()
	defer b.mu.Unlock()
	if v := b.vhosts[name]; v != nil {
		return v
	}
	v := newVHost(b, name)
	b.vhosts[name] = v
	return v
}

// Close stops every timer (TTL, x-expires) of every vhost. The broker must
// not be used afterwards.
func (b *Broker) Close() {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, v := range b.vhosts {
		v.close()
	}
}

// NotifySynced calls w.Synced once store position pos (from
// PublishResult.Pos) is durable. Without a store nothing is ever pending
// and it is not called.
func (b *Broker) NotifySynced(pos uint64, w SyncWaiter) {
	if b.store != nil {
		b.store.Notify(pos, w)
	}
}

// WaitSynced blocks until store position pos is durable.
func (b *Broker) WaitSynced(pos uint64) error {
	if b.store == nil || pos == 0 {
		return nil
	}
	return b.store.Wait(pos)
}

// ResidentBytes reports how many bytes of stored message bodies are held
// in memory (the figure the memory budget limits).
func (b *Broker) ResidentBytes() int64 { return b.mem.resident.Load() }

// PublishHook sees every message a client publishes through Publish,
// before it is routed. It returns keep false to drop the message (it then
// counts as published and routed nowhere), and pos, a position of the
// broker's Store that the publish must also wait for before it is
// acknowledged (0: none); Publish folds it into PublishResult.Pos. The
// MQTT listener keeps AMQP-published messages marked x-mqtt-retain as
// retained; the bridge drops messages that already passed through this
// node. A hook runs on the publisher's goroutine, inside Publish, and must
// not block: one that writes to the store appends and returns the
// position rather than waiting for it. It must not modify msg.
type PublishHook func(vhost string, msg *Message) (keep bool, pos uint64)

// OnVHostDeleted installs fn, called on DeleteVHost's goroutine once a
// vhost and its entities are gone, for what other packages keep per vhost
// (the MQTT listener's retained messages and remembered sessions).
func (b *Broker) OnVHostDeleted(fn func(vhost string)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.deletedHooks = append(b.deletedHooks, fn)
}

// AddPublishHook installs h after the hooks already installed.
func (b *Broker) AddPublishHook(h PublishHook) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var hs []PublishHook
	if old := b.hooks.Load(); old != nil {
		hs = append(hs, *old...)
	}
	hs = append(hs, h)
	b.hooks.Store(&hs)
}
