package persistence

import (
	"fmt"

	"github.com/ferrymq/ferrymq/core"
)

// Retained MQTT messages: the Store implements mqtt.RetainStore (the
// package does not import mqtt; cmd wires them together). A retained
// message is one record per topic, t/<vhost>\x00<topic>, holding the whole
// message in the codec of queued messages (exchange, routing key,
// properties byte-exact, body, published time) and its id. Puts and
// deletes go through the same log and group commit as everything else, so
// concurrent retained publishes share fsyncs with each other and with
// queued messages.

// PutRetained appends the replacement of the retained message of topic in
// vhost with msg and returns its log position, for Wait and Notify: like
// every append it does not wait for the disk, so a publish hook may call
// it. A message whose body alone exceeds MaxMessageSize is refused at once
// with ErrTooLarge; one that cannot be stored for another reason (a
// property that cannot be encoded) fails the waiters of its position.
// msg must not be modified afterwards.
func (s *Store) PutRetained(vhost, topic string, msg *core.Message) (uint64, error) {
	if len(msg.Body) > MaxMessageSize {
		return 0, fmt.Errorf("%w: retained message of topic '%s' in vhost '%s' has a body of %d bytes, limit %d",
			ErrTooLarge, topic, vhost, len(msg.Body), MaxMessageSize)
	}
	return s.append(op{kind: opPutRetained, vhost: vhost, name: topic, msg: msg}), nil
}

// DeleteRetained appends the removal of the retained message of topic in
// vhost, if any, and returns its log position. The deletion is written as
// a marker (see markerKind), so that value-log GC can never bring the
// message back; a topic that never had one gets a marker too.
func (s *Store) DeleteRetained(vhost, topic string) uint64 {
	return s.append(op{kind: opDeleteRetained, vhost: vhost, name: topic})
}

// RetainedMessages calls fn for every retained message committed, in key
// order (by vhost, then topic). An error from fn stops the iteration and
// is returned as is. fn may call PutRetained and DeleteRetained, but must
// not call Close.
func (s *Store) RetainedMessages(fn func(vhost, topic string, msg *core.Message) error) error {
	err := s.read(kindPrefix(kindRetained), true, func(key, val []byte) error {
		if len(val) == 0 {
			return nil // deleted
		}
		vhost, topic, m, err := decodeRetained(key, val)
		if err != nil {
			return err
		}
		if err := fn(vhost, topic, m); err != nil {
			return callerError{err}
		}
		return nil
	})
	return unwrapCaller(err, "retained messages")
}
