package amqp

import (
	"crypto/rand"
	"encoding/base64"

	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// sink is one basic.consume: core delivers to it and it writes
// basic.deliver frames to the connection.
type sink struct {
	ch    *channel
	tag   string
	noAck bool
	// ready and cons are guarded by ch.mu. Until consume-ok is written,
	// deliveries are refused, so none can overtake it; the queue keeps them
	// and Resume dispatches once ready.
	ready bool
	cons  *core.Consumer
	// For listing only (the operations API).
	prefetch  uint32
	exclusive bool
	args      core.Table
}

// Deliver implements core.DeliverySink. It runs with the queue's lock
// held, on whichever goroutine dispatches.
func (s *sink) Deliver(d core.Delivery) bool {
	ch := s.ch
	ch.mu.Lock()
	if ch.closed || !s.ready {
		ch.mu.Unlock()
		return false
	}
	if ch.paused {
		ch.flowBlocked = append(ch.flowBlocked, d.Consumer)
		ch.mu.Unlock()
		return false
	}
	o := &ch.c.out
	o.mu.Lock()
	if o.closed || o.box.Full() {
		if !o.closed {
			o.box.Refuse(d.Consumer)
		}
		o.mu.Unlock()
		ch.mu.Unlock()
		return false
	}
	ch.nextTag++
	n := len(o.box.Buf)
	o.box.Buf = wire.AppendDeliver(o.box.Buf, ch.id, s.tag, ch.nextTag, d.Redelivered,
		d.Msg.Exchange, d.Msg.RoutingKey, &d.Msg.Properties, d.Msg.Body, o.frameMax)
	o.signalLocked(n)
	o.mu.Unlock()
	if !s.noAck {
		ch.unacked.add(pending{tag: ch.nextTag, q: d.Queue, cons: d.Consumer, seq: d.Seq})
	}
	ch.mu.Unlock()
	return true
}

// Cancelled implements core.DeliverySink: the queue was deleted. The client
// is told with a server-sent basic.cancel (consumer_cancel_notify).
func (s *sink) Cancelled(*core.Consumer) {
	ch := s.ch
	ch.mu.Lock()
	if ch.closed || ch.consumers[s.tag] != s {
		ch.mu.Unlock()
		return
	}
	delete(ch.consumers, s.tag)
	if ch.deleting {
		ch.heldCancels = append(ch.heldCancels, s.tag)
		ch.mu.Unlock()
		return
	}
	ch.mu.Unlock()
	ch.c.out.writeMethod(ch.id, &wire.BasicCancel{ConsumerTag: s.tag, NoWait: true})
}

func (ch *channel) qos(m *wire.BasicQos) error {
	if m.PrefetchSize != 0 {
		return newError(wire.NotImplemented, "prefetch_size!=0 (%d)", m.PrefetchSize)
	}
	if m.Global {
		ch.limit.SetMax(uint32(m.PrefetchCount))
		ch.listed.global.Store(uint32(m.PrefetchCount))
	} else {
		ch.prefetch = uint32(m.PrefetchCount)
		ch.listed.prefetch.Store(ch.prefetch)
	}
	ch.c.out.writeMethod(ch.id, &wire.BasicQosOk{})
	return nil
}

func (ch *channel) consume(m *wire.BasicConsume) error {
	q, err := ch.queue(m.Queue)
	if err != nil {
		return err
	}
	tag := m.ConsumerTag
	if tag == "" {
		tag = consumerTag()
	}
	ch.mu.Lock()
	_, dup := ch.consumers[tag]
	ch.mu.Unlock()
	if dup {
		return newError(wire.NotAllowed, "attempt to reuse consumer tag '%s'", tag)
	}
	var priority int32
	if v, ok := m.Arguments["x-priority"]; ok {
		p, ok := core.IntArg(v)
		if !ok {
			return newError(wire.PreconditionFailed, "invalid arg 'x-priority' for consumer '%s': unacceptable type", tag)
		}
		priority = int32(p)
	}
	s := &sink{ch: ch, tag: tag, noAck: m.NoAck, prefetch: ch.prefetch, exclusive: m.Exclusive, args: m.Arguments}
	cons, err := q.Consume(core.ConsumeOptions{
		Tag: tag, NoAck: m.NoAck, Exclusive: m.Exclusive, Priority: priority,
		Prefetch: ch.prefetch, Shared: ch.limit, Owner: ch.c.id, Arguments: m.Arguments, Protocol: "amqp",
	}, s)
	if err != nil {
		return err
	}
	if !m.NoWait {
		ch.c.out.writeMethod(ch.id, &wire.BasicConsumeOk{ConsumerTag: tag})
	}
	ch.mu.Lock()
	s.ready, s.cons = true, cons
	ch.consumers[tag] = s
	ch.mu.Unlock()
	cons.Resume()
	return nil
}

// cancel ends a consumer; an unknown tag is not an error (RabbitMQ).
func (ch *channel) cancel(tag string) {
	ch.mu.Lock()
	s := ch.consumers[tag]
	delete(ch.consumers, tag)
	ch.mu.Unlock()
	if s != nil {
		s.cons.Cancel()
	}
}

func (ch *channel) get(m *wire.BasicGet) error {
	q, err := ch.queue(m.Queue)
	if err != nil {
		return err
	}
	d, ok := q.Get(m.NoAck)
	if !ok {
		ch.c.out.writeMethod(ch.id, &wire.BasicGetEmpty{})
		return nil
	}
	remaining, _ := q.Counts() // before ch.mu: a queue lock is never taken inside it
	ch.mu.Lock()
	ch.nextTag++
	tag := ch.nextTag
	if !m.NoAck {
		ch.unacked.add(pending{tag: tag, q: q, seq: d.Seq})
	}
	// Written under ch.mu so that delivery tags reach the client in order.
	ch.c.out.writeContent(ch.id, &wire.BasicGetOk{
		DeliveryTag: tag, Redelivered: d.Redelivered, Exchange: d.Msg.Exchange, RoutingKey: d.Msg.RoutingKey,
		MessageCount: remaining,
	}, d.Msg)
	ch.mu.Unlock()
	return nil
}

// settle handles basic.ack, basic.nack and basic.reject.
func (ch *channel) settle(tag uint64, multiple bool, o core.Outcome) error {
	var buf [8]pending
	ch.mu.Lock()
	ps, ok := ch.unacked.take(tag, multiple, buf[:0])
	ch.mu.Unlock()
	if !ok {
		return newError(wire.PreconditionFailed, "unknown delivery tag %d", tag)
	}
	if ch.tx != nil {
		ch.tx.acks = append(ch.tx.acks, txSettle{ps: append([]pending(nil), ps...), o: o})
		return nil
	}
	settle(ps, o)
	return nil
}

// recover is basic.recover: requeue=true puts every unacked delivery of the
// channel back, marked redelivered. requeue=false (redeliver to the same
// consumer) is refused as RabbitMQ does.
func (ch *channel) recover(requeue bool) error {
	if !requeue {
		return newError(wire.NotImplemented, "requeue=false")
	}
	ch.mu.Lock()
	ps := ch.unacked.takeAll(nil)
	ch.mu.Unlock()
	settle(ps, core.Requeue)
	return nil
}

// consumerTag returns a server-generated tag as RabbitMQ makes them.
func consumerTag() string {
	var b [16]byte
	rand.Read(b[:])
	return "amq.ctag-" + base64.RawURLEncoding.EncodeToString(b[:])
}
