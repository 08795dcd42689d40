package mqtt

import (
	"errors"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// subscribe makes each filter a binding of a core queue: the session's
// qos0 queue for QoS 0 subscriptions, its qos1 queue for QoS 1 and 2, or
// a queue per shared group, whose members compete for its messages. It
// returns the SUBACK reason codes and the retained messages owed.
func (s *session) subscribe(filters packets.Subscriptions) ([]byte, []replay) {
	codes := make([]byte, len(filters))
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		// Taken over: the queues are the new connection's now.
		for i := range codes {
			codes[i] = s.failure(packets.ErrUnspecifiedError)
		}
		return codes, nil
	}
	var replays []replay
	for i, f := range filters {
		code, r, err := s.subscribeOne(f)
		if err != nil {
			s.srv.log.Debug("mqtt: subscribe failed", "client", s.clientID, "filter", f.Filter, "err", err)
		}
		codes[i] = code
		if r != nil {
			replays = append(replays, *r)
		}
	}
	return codes, replays
}

func (s *session) failure(code packets.Code) byte {
	if s.version < 5 {
		return packets.ErrUnspecifiedError.Code // 0x80 is 3.1.1's one failure code
	}
	return code.Code
}

// storeFailure is the SUBACK code of a subscription that failed on err:
// in MQTT 5, 0x83 if the store refused its write for good, else 0x80 (see
// storeReason); 0x80 in 3.1.1.
func (s *session) storeFailure(err error) byte {
	if s.version < 5 {
		return packets.ErrUnspecifiedError.Code
	}
	return storeReason(err)
}

// storeFailed reports whether err is core's refusal of a change whose
// store write failed (541, with the store's error as its cause). Core
// has made the change in memory all the same: whoever made it takes it
// back, so that memory agrees with the disk and with what the client was
// told.
func storeFailed(err error) bool {
	var ce *core.Error
	return errors.As(err, &ce) && ce.Code == core.CodeInternalError && ce.Err != nil
}

func (s *session) subscribeOne(f packets.Subscription) (byte, *replay, error) {
	if !topic.ValidFilter(f.Filter) {
		return s.failure(packets.ErrTopicFilterInvalid), nil, nil
	}
	group, filter, shared := topic.Shared(f.Filter)
	if shared && f.NoLocal {
		return s.failure(packets.ErrProtocolViolationInvalidSharedNoLocal), nil, nil // [MQTT-3.8.3-4]
	}
	qos := min(f.Qos, 2)
	queue, durable, acks := s.queueName(qos), s.persistent, qos > 0
	if shared {
		queue, durable, acks = sharedQueueName(group, filter), s.persistent, true
	}
	if err := s.checkSubscribe(queue, filter); err != nil {
		s.srv.log.Warn("mqtt: subscribe refused", "client", s.clientID, "user", s.access.Principal().Name, "filter", f.Filter, "err", err)
		return s.failure(packets.ErrNotAuthorized), nil, nil
	}
	exchange := s.srv.exchangeFor(filter)
	if exchange == SysExchange {
		if err := ensureSysExchange(s.vhost); err != nil {
			return s.failure(packets.ErrUnspecifiedError), nil, err
		}
	}
	if err := s.ensureQueue(queue, durable, shared); err != nil {
		return s.storeFailure(err), nil, err
	}
	// One binding per filter: a new subscription replaces the old one,
	// which may be in the other QoS queue. A shared group's bindings are
	// all its members': only this member's own entry goes.
	var had bool
	var old []core.Binding
	if shared {
		had = s.dropSub(queue, f.Filter)
	} else {
		old = s.filterBindings(f.Filter)
		had = len(old) > 0
	}
	args := core.Table{argFilter: f.Filter, argQoS: int8(qos)}
	if f.NoLocal {
		args[argNoLocal] = true
	}
	if f.RetainAsPublished {
		args[argRAP] = true
	}
	if f.Identifier > 0 {
		args[argSubID] = int32(f.Identifier)
	}
	if shared {
		if err := s.vhost.BindQueue(queue, exchange, topic.BindingKey(filter), args, 0); err != nil {
			if storeFailed(err) {
				s.vhost.UnbindQueue(queue, exchange, topic.BindingKey(filter), args, 0)
			}
			return s.storeFailure(err), nil, err
		}
	} else {
		// The old binding goes and the new one comes in one step: a
		// client subscribing again (every reconnect) misses nothing
		// published meanwhile.
		if err := s.vhost.ReplaceQueueBindings(old, queue, exchange, topic.BindingKey(filter), args); err != nil {
			if storeFailed(err) {
				// The old bindings are gone, on disk too: so is the
				// subscription, as the SUBACK says.
				s.vhost.UnbindQueue(queue, exchange, topic.BindingKey(filter), args, 0)
				s.forgetSub(f.Filter)
			}
			return s.storeFailure(err), nil, err
		}
		s.forgetSub(f.Filter)
	}
	if shared {
		if err := s.joinGroup(queue, args); err != nil {
			return s.failure(packets.ErrUnspecifiedError), nil, err
		}
	}
	s.mu.Lock()
	if s.subs == nil {
		s.subs = make(map[string][]subscription)
	}
	s.subs[queue] = append(s.subs[queue], subscriptionFrom(args))
	s.mu.Unlock()
	if err := s.consume(queue, min(qos, 1), acks); err != nil {
		return s.failure(packets.ErrUnspecifiedError), nil, err
	}
	// Retained messages: on every subscribe (handling 0), only on a new
	// one (1), never (2); never for shared subscriptions [MQTT-3.8.4-4].
	if shared || f.RetainHandling == 2 || (f.RetainHandling == 1 && had) {
		return qos, nil, nil
	}
	return qos, &replay{filter: filter, queue: queue}, nil
}

// ensureQueue declares a session queue unless it exists (then as it is:
// a resumed session keeps its queue's durability).
func (s *session) ensureQueue(name string, durable, shared bool) error {
	if s.vhost.Queue(name) != nil {
		return nil
	}
	args := core.Table{}
	if !shared {
		args[argOwner] = s.access.Principal().Name
	}
	if durable && s.version == level5 && s.expiry > 0 && s.expiry <= maxQueueExpiry {
		args["x-expires"] = int64(s.expiry) * 1000
	}
	// A shared group's queue goes with its last consumer, unless a
	// persistent session declared it: then it keeps the group's messages
	// while every member is away, and across a restart.
	_, err := s.vhost.DeclareQueue(core.QueueDecl{Name: name, Durable: durable, AutoDelete: shared && !durable, Arguments: args})
	if storeFailed(err) {
		// Not on disk: not in memory either, so that the next CONNECT or
		// SUBSCRIBE declares it again rather than finding it.
		s.vhost.DeleteQueue(name, false, false, 0)
	}
	return err
}

// unbind removes the binding of a filter from the session's queues and
// reports whether there was one.
func (s *session) unbind(full string) bool {
	old := s.filterBindings(full)
	for _, b := range old {
		s.vhost.UnbindQueue(b.Destination, b.Source, b.RoutingKey, b.Arguments, 0)
	}
	s.forgetSub(full)
	return len(old) > 0
}

// filterQueues are the queues a filter's binding may be on.
func (s *session) filterQueues(full string) []string {
	if group, filter, shared := topic.Shared(full); shared {
		return []string{sharedQueueName(group, filter)}
	}
	return []string{s.queueName(0), s.queueName(1)}
}

// filterBindings returns the bindings of a filter on the session's queues.
func (s *session) filterBindings(full string) []core.Binding {
	var out []core.Binding
	for _, queue := range s.filterQueues(full) {
		for _, b := range s.vhost.QueueBindings(queue) {
			if b.Arguments[argFilter] == full && (b.Source == s.srv.cfg.Exchange || b.Source == SysExchange) {
				out = append(out, b)
			}
		}
	}
	return out
}

// forgetSub removes a filter from the session's own subscription lists.
func (s *session) forgetSub(full string) {
	for _, queue := range s.filterQueues(full) {
		s.mu.Lock()
		if old, ok := s.subs[queue]; ok {
			subs := old[:0]
			for _, sub := range old {
				if sub.full != full {
					subs = append(subs, sub)
				}
			}
			s.subs[queue] = subs
		}
		s.mu.Unlock()
	}
}

// dropSub removes a subscription from the session's own list for queue
// and reports whether it was there.
func (s *session) dropSub(queue, full string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.subs[queue]
	if !ok {
		return false
	}
	subs := old[:0]
	for _, sub := range old {
		if sub.full != full {
			subs = append(subs, sub)
		}
	}
	s.subs[queue] = subs
	return len(subs) < len(old)
}

// unsubscribe removes filters and returns the UNSUBACK reason codes.
func (s *session) unsubscribe(filters packets.Subscriptions) []byte {
	codes := make([]byte, len(filters))
	for i, f := range filters {
		found := false
		if group, filter, shared := topic.Shared(f.Filter); shared {
			found = s.leaveGroup(sharedQueueName(group, filter), f.Filter)
		} else {
			found = s.unbind(f.Filter)
		}
		if !found {
			codes[i] = packets.CodeNoSubscriptionExisted.Code
		}
	}
	return codes
}

// leaveGroup ends this member's part in a shared subscription: it stops
// competing for the group's queue and forgets its durable membership. The
// group's bindings are all its members' and stay: an auto-delete group
// queue goes with its last consumer. It reports whether it was a member.
func (s *session) leaveGroup(queue, full string) bool {
	if !s.dropSub(queue, full) {
		return false
	}
	s.forgetGroup(queue, full)
	s.mu.Lock()
	c := s.cons[queue]
	if len(s.subs[queue]) == 0 {
		delete(s.cons, queue)
	} else {
		c = nil
	}
	s.mu.Unlock()
	if c != nil {
		c.Cancel()
	}
	return true
}

// subscriptionFrom reads a subscription back from its binding arguments.
func subscriptionFrom(args core.Table) subscription {
	full, _ := args[argFilter].(string)
	_, filter, _ := topic.Shared(full)
	qos, _ := core.IntArg(args[argQoS])
	id, _ := core.IntArg(args[argSubID])
	noLocal, _ := args[argNoLocal].(bool)
	rap, _ := args[argRAP].(bool)
	return subscription{filter: filter, full: full, qos: byte(qos), noLocal: noLocal, rap: rap, id: int(id)}
}

// restore rebuilds a resumed session's subscriptions from its queues'
// bindings and starts consuming them. It reports whether there was a
// session to resume.
func (s *session) restore() (bool, error) {
	present := false
	for qos := byte(0); qos <= 1; qos++ {
		queue := s.queueName(qos)
		if s.vhost.Queue(queue) == nil {
			continue
		}
		present = true
		var subs []subscription
		for _, b := range s.vhost.QueueBindings(queue) {
			if f, ok := b.Arguments[argFilter].(string); ok && !strings.HasPrefix(f, "$share/") {
				subs = append(subs, subscriptionFrom(b.Arguments))
			}
		}
		s.mu.Lock()
		if s.subs == nil {
			s.subs = make(map[string][]subscription)
		}
		s.subs[queue] = subs
		s.mu.Unlock()
		if err := s.consume(queue, qos, qos > 0); err != nil {
			return present, err
		}
		if qos == 1 {
			if err := s.restoreGroups(); err != nil {
				return present, err
			}
		}
	}
	return present, nil
}

// replayRetained enqueues the retained messages matching a new
// subscription into its queue, marked (Exchange "") so that they are
// delivered with RETAIN set.
func (s *session) replayRetained(rs []replay) {
	for _, r := range rs {
		retained := s.srv.retained.matching
		if isSysFilter(r.filter) {
			retained = func(_, filter string) []*core.Message { return s.srv.sysMatching(filter) }
		}
		for _, m := range retained(s.vhost.Name(), r.filter) {
			c := *m
			c.ID, c.Exchange, c.Published, c.Origin = 0, "", m.Published, 0
			if _, err := s.vhost.EnqueueTo(r.queue, &c); err != nil {
				s.srv.log.Debug("mqtt: retained replay failed", "client", s.clientID, "queue", r.queue, "err", err)
			}
		}
	}
}

// deleteQueues removes a non-persistent session's queues.
func (s *session) deleteQueues() {
	for qos := byte(0); qos <= 1; qos++ {
		s.vhost.DeleteQueue(s.queueName(qos), false, false, 0)
	}
}
