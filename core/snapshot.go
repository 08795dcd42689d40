package core

import (
	"slices"
	"strings"
)

// Listing for the operations API and definitions export. Each call copies
// what it lists under the vhost's topology read lock (and a queue's own
// lock for its figures), so it never blocks publishers for longer than a
// map walk, and is never called on a per-message path.

// VHostNames returns the names of the vhosts, sorted.
func (b *Broker) VHostNames() []string {
	b.mu.RLock()
	out := make([]string, 0, len(b.vhosts))
	for n := range b.vhosts {
		out = append(out, n)
	}
	b.mu.RUnlock()
	slices.Sort(out)
	return out
}

// ExchangeSnapshot describes one exchange.
type ExchangeSnapshot struct {
	Name                          string // "" for the default exchange
	Kind                          string
	Durable, AutoDelete, Internal bool
	Arguments                     Table
}

// ExchangeList returns the vhost's exchanges, the default one included,
// sorted by name.
func (v *VHost) ExchangeList() []ExchangeSnapshot {
	v.mu.RLock()
	out := make([]ExchangeSnapshot, 0, len(v.exchanges))
	for _, x := range v.exchanges {
		out = append(out, x.snapshot())
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b ExchangeSnapshot) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Exchange returns the named exchange's description.
func (v *VHost) Exchange(name string) (ExchangeSnapshot, bool) {
	x := v.exchange(name)
	if x == nil {
		return ExchangeSnapshot{}, false
	}
	return x.snapshot(), true
}

func (x *exchange) snapshot() ExchangeSnapshot {
	return ExchangeSnapshot{Name: x.name, Kind: x.kind, Durable: x.durable, AutoDelete: x.autoDelete, Internal: x.internal, Arguments: x.args}
}

// QueueList returns the vhost's queues sorted by name.
func (v *VHost) QueueList() []*Queue {
	v.mu.RLock()
	out := make([]*Queue, 0, len(v.queues))
	for _, q := range v.queues {
		out = append(out, q)
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Queue) int { return strings.Compare(a.name, b.name) })
	return out
}

// QueueCount returns how many queues the vhost has.
func (v *VHost) QueueCount() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.queues)
}

// ExchangeCount returns how many exchanges the vhost has, the default
// one included.
func (v *VHost) ExchangeCount() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.exchanges)
}

// QueueSnapshot describes one queue for the operations API: its
// declaration, its figures and its counters now.
type QueueSnapshot struct {
	Name, VHost                    string
	Durable, Exclusive, AutoDelete bool
	Arguments                      Table
	Owner                          uint64 // the exclusive owner's connection id; 0: none
	QueueStats
	Counters MessageCounters
}

// Snapshot returns the queue's declaration, figures and counters, read
// under the queue's lock.
func (q *Queue) Snapshot() QueueSnapshot {
	q.mu.Lock()
	defer q.mu.Unlock()
	return QueueSnapshot{
		Name: q.name, VHost: q.vhost.name, Durable: q.durable, Exclusive: q.exclusive, AutoDelete: q.autoDelete,
		Arguments: q.args, Owner: q.owner,
		QueueStats: QueueStats{Messages: q.ready, Bytes: q.readyBytes, Unacked: len(q.unacked), Consumers: len(q.consumers), Dropped: q.dropped},
		Counters:   q.counters,
	}
}

// BindingList returns copies of every binding of the vhost (Target nil),
// by source exchange, in no particular order within one source.
func (v *VHost) BindingList() []Binding {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []Binding
	names := make([]string, 0, len(v.exchanges))
	for n := range v.exchanges {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		x := v.exchanges[n]
		if x.m == nil {
			continue
		}
		x.mu.RLock()
		x.m.each(func(b *Binding) {
			c := *b
			c.Target = nil
			out = append(out, c)
		})
		x.mu.RUnlock()
	}
	return out
}
