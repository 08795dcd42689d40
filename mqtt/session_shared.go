package mqtt

import (
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// membersExchange records which persistent sessions belong to which
// shared subscription groups, so that a session resumed after a broker
// restart competes for its groups' queues again. A membership is a binding
// from it to the member's qos1 queue, keyed by the group's queue name and
// carrying the subscription's arguments: durable like the session's queue,
// and gone with it. The exchange is internal (nothing publishes to it), so
// these bindings route nothing.
const membersExchange = "mqtt.shared-members"

// joinGroup records a persistent session's membership of the group whose
// queue is queue; args are the subscription's binding arguments. A session
// that is not persistent keeps its memberships in memory only.
func (s *session) joinGroup(queue string, args core.Table) error {
	if !s.persistent {
		return nil
	}
	err := s.vhost.DeclareExchange(core.ExchangeDecl{Name: membersExchange, Kind: "direct", Durable: true, Internal: true})
	if err != nil {
		return err
	}
	own := s.queueName(1)
	if err := s.ensureQueue(own, true, false); err != nil {
		return err
	}
	s.forgetGroup(queue, args[argFilter])
	return s.vhost.BindQueue(own, membersExchange, queue, args, 0)
}

// forgetGroup removes the durable record of a membership, if any.
func (s *session) forgetGroup(queue string, full any) {
	own := s.queueName(1)
	for _, b := range s.vhost.QueueBindings(own) {
		if b.Source == membersExchange && b.RoutingKey == queue && b.Arguments[argFilter] == full {
			s.vhost.UnbindQueue(own, b.Source, b.RoutingKey, b.Arguments, 0)
		}
	}
}

// restoreGroups rejoins the shared subscription groups recorded for a
// resumed session (see joinGroup): a group's queue and its binding are
// declared again if they are gone (a group whose every member left keeps
// nothing), and the session consumes it.
func (s *session) restoreGroups() error {
	for _, b := range s.vhost.QueueBindings(s.queueName(1)) {
		if b.Source != membersExchange {
			continue
		}
		sub := subscriptionFrom(b.Arguments)
		queue := b.RoutingKey
		if err := s.ensureQueue(queue, true, true); err != nil {
			return err
		}
		args := make(core.Table, len(b.Arguments))
		for k, v := range b.Arguments {
			args[k] = v
		}
		if err := s.vhost.BindQueue(queue, s.srv.exchangeFor(sub.filter), topic.BindingKey(sub.filter), args, 0); err != nil {
			return err
		}
		s.mu.Lock()
		if s.subs == nil {
			s.subs = make(map[string][]subscription)
		}
		s.subs[queue] = append(s.subs[queue], sub)
		s.mu.Unlock()
		if err := s.consume(queue, 1, true); err != nil {
			return err
		}
	}
	return nil
}
