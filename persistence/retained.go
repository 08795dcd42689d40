package persistence

import "github.com/ferrymq/ferrymq/core"

// Retained MQTT messages: the Store implements mqtt.RetainStore (the
// package does not import mqtt; cmd wires them together). A retained
// message is one record per topic, t/<vhost>\x00<topic>, holding the whole
// message in the codec of queued messages (exchange, routing key,
// properties byte-exact, body, published time) and its id. Puts and
// deletes go through the same log and group commit as everything else, so
// concurrent retained publishes share fsyncs with each other and with
// queued messages.

// PutRetained replaces the retained message of topic in vhost with msg and
// returns once that is on disk (nil), or the error of the commit (or of
// this message: ErrTooLarge, properties that cannot be encoded), or
// ErrClosed. msg must not be modified before PutRetained returns; it is
// not retained by the store after that.
func (s *Store) PutRetained(vhost, topic string, msg *core.Message) error {
	return s.Wait(s.append(op{kind: opPutRetained, vhost: vhost, name: topic, msg: msg}))
}

// DeleteRetained removes the retained message of topic in vhost, if any,
// and returns once that is on disk. The deletion is written as a marker
// (see markerKind), so that value-log GC can never bring the message back;
// a topic that never had one gets a marker too.
func (s *Store) DeleteRetained(vhost, topic string) error {
	return s.Wait(s.append(op{kind: opDeleteRetained, vhost: vhost, name: topic}))
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
