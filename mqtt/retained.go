package mqtt

import (
	"strings"
	"sync"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// RetainStore keeps retained messages across restarts. persistence.Store
// implements it; nil keeps them in memory only. It must be the Store of
// the broker the Server serves: the positions it returns are the
// broker's, which acknowledgements wait for (core.Broker.NotifySynced).
type RetainStore interface {
	// PutRetained appends the replacement of a topic's retained message
	// to the store's log and returns its position, without waiting for
	// the disk. An error refuses a message the store can never hold.
	PutRetained(vhost, topic string, msg *core.Message) (uint64, error)
	// DeleteRetained appends the removal of a topic's retained message (a
	// retained publish with an empty payload) and returns its position.
	DeleteRetained(vhost, topic string) uint64
	// RetainedMessages calls fn for every stored retained message.
	RetainedMessages(fn func(vhost, topic string, msg *core.Message) error) error
}

// retainedIndex holds every vhost's retained messages in memory, for
// replay to new subscriptions; the RetainStore holds them on disk.
type retainedIndex struct {
	mu     sync.RWMutex
	vhosts map[string]map[string]*core.Message // vhost -> MQTT topic -> message
}

func (r *retainedIndex) init() { r.vhosts = make(map[string]map[string]*core.Message) }

func (r *retainedIndex) putLocked(vhost, topic string, msg *core.Message) {
	m := r.vhosts[vhost]
	if m == nil {
		m = make(map[string]*core.Message)
		r.vhosts[vhost] = m
	}
	m[topic] = msg
}

// matching returns the retained messages whose topics match filter.
func (r *retainedIndex) matching(vhost, filter string) []*core.Message {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*core.Message
	for name, msg := range r.vhosts[vhost] {
		if topic.Match(filter, name) {
			out = append(out, msg)
		}
	}
	return out
}

// retain records msg as the retained message of its topic (an empty body
// clears it) and returns the store position at which that is durable (0:
// nothing to wait for). It does not wait for it: it runs inside core's
// Publish for AMQP publishers, where nothing may block, and an MQTT
// publisher's PUBACK waits for the position in order with the others. The
// message is replayed to new subscriptions at once, as a queued message is
// delivered before it is durable. The index and the store's log change
// under one lock, so that they agree on which of two concurrent retains
// of a topic came last. msg must be stamped (core.VHost.Stamp): the store
// reads it after retain returns, and Publish must not write it then.
func (s *Server) retain(vhost, topic string, msg *core.Message) (uint64, error) {
	r := &s.retained
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(msg.Body) == 0 {
		// Clearing a topic that retains nothing writes nothing: the
		// store keeps a marker per deleted topic.
		if _, ok := r.vhosts[vhost][topic]; !ok {
			return 0, nil
		}
		var pos uint64
		if s.cfg.Retained != nil {
			pos = s.cfg.Retained.DeleteRetained(vhost, topic)
		}
		delete(r.vhosts[vhost], topic)
		return pos, nil
	}
	var pos uint64
	if s.cfg.Retained != nil {
		p, err := s.cfg.Retained.PutRetained(vhost, topic, msg)
		if err != nil {
			return 0, err
		}
		pos = p
	}
	r.putLocked(vhost, topic, msg)
	return pos, nil
}

// vhostDeleted forgets a deleted vhost's retained messages, in the store
// too, and the sessions remembered in it that no connection holds (the
// connections in it are closing and end their own).
func (s *Server) vhostDeleted(vhost string) {
	r := &s.retained
	r.mu.Lock()
	if s.cfg.Retained != nil {
		for name := range r.vhosts[vhost] {
			s.cfg.Retained.DeleteRetained(vhost, name)
		}
	}
	delete(r.vhosts, vhost)
	r.mu.Unlock()
	prefix := vhost + "\x00"
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, st := range s.sessions {
		if strings.HasPrefix(key, prefix) && st.live == nil {
			if st.will != nil {
				st.will.Stop()
			}
			delete(s.sessions, key)
		}
	}
}
