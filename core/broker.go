package core

import (
	"log/slog"
	"sync"
)

// Options configure a Broker. Zero values are valid (SystemClock, slog.Default()).
type Options struct {
	Clock  Clock
	Logger *slog.Logger
}

// Broker is the set of virtual hosts of one server. It is safe for concurrent use.
type Broker struct {
	clock Clock
	log   *slog.Logger

	mu     sync.RWMutex
	vhosts map[string]*VHost // guarded by mu
}

// NewBroker returns a broker holding the vhost "/".
func NewBroker(opts Options) *Broker {
	b := &Broker{clock: opts.Clock, log: opts.Logger, vhosts: make(map[string]*VHost)}
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
