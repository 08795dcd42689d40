package mqtt

import (
	"sync"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// RetainStore keeps retained messages across restarts. persistence.Store
// implements it; nil keeps them in memory only.
type RetainStore interface {
	// PutRetained replaces the retained message of a topic and returns
	// once it is on disk.
	PutRetained(vhost, topic string, msg *core.Message) error
	// DeleteRetained removes a topic's retained message (a retained
	// publish with an empty payload) and returns once that is on disk.
	DeleteRetained(vhost, topic string) error
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

func (r *retainedIndex) put(vhost, topic string, msg *core.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.vhosts[vhost]
	if m == nil {
		m = make(map[string]*core.Message)
		r.vhosts[vhost] = m
	}
	m[topic] = msg
}

// delete removes a topic's retained message and reports whether there was
// one.
func (r *retainedIndex) delete(vhost, topic string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.vhosts[vhost][topic]
	delete(r.vhosts[vhost], topic)
	return ok
}

func (r *retainedIndex) has(vhost, topic string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.vhosts[vhost][topic]
	return ok
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
// clears it), on disk first when there is a store.
func (s *Server) retain(vhost, topic string, msg *core.Message) error {
	if len(msg.Body) == 0 {
		// Clearing a topic that retains nothing writes nothing: the
		// store keeps a marker per deleted topic.
		if !s.retained.has(vhost, topic) {
			return nil
		}
		if s.cfg.Retained != nil {
			if err := s.cfg.Retained.DeleteRetained(vhost, topic); err != nil {
				return err
			}
		}
		s.retained.delete(vhost, topic)
		return nil
	}
	if s.cfg.Retained != nil {
		if err := s.cfg.Retained.PutRetained(vhost, topic, msg); err != nil {
			return err
		}
	}
	s.retained.put(vhost, topic, msg)
	return nil
}
