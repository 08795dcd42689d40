package amqp

import (
	"sync"

	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// channel is one AMQP channel. Fields above mu are owned by the
// connection's reader goroutine; those below it are shared with the
// goroutines core delivers on (DeliverySink.Deliver) and guarded by mu.
//
// Lock order: a queue's lock -> channel.mu -> outbound.mu. The reader never
// calls into core while holding mu.
type channel struct {
	c  *conn
	id uint16

	// closing is set once channel.close was sent: everything but
	// channel.close and channel.close-ok is dropped until close-ok.
	closing   bool
	content   content
	lastQueue string      // the queue-name shortcut for "" (RabbitMQ's most recently declared queue)
	prefetch  uint32      // basic.qos global=false: applies to consumers created after it
	limit     *core.Limit // basic.qos global=true: shared by all consumers of the channel
	confirm   confirms
	tx        *txState // non-nil after tx.select
	listed    listed   // what the operations API shows of the above
	scratch   struct { // reused by decode
		publish wire.BasicPublish
		ack     wire.BasicAck
	}

	mu          sync.Mutex
	closed      bool // the channel is gone: refuse deliveries
	paused      bool // channel.flow active=false
	nextTag     uint64
	unacked     ledger
	consumers   map[string]*sink
	flowBlocked []*core.Consumer // refused while paused; resumed by flow active=true
	// deleting is set while this channel runs a queue.delete: the
	// basic.cancel notifications it causes wait in heldCancels until the
	// queue.delete-ok is out, the order RabbitMQ keeps and clients expect.
	deleting    bool
	heldCancels []string
}

// content is a basic.publish being assembled from its header and body
// frames.
type content struct {
	active    bool // a basic.publish arrived; header and body frames follow
	gotHeader bool
	publish   wire.BasicPublish
	props     core.Properties
	size      uint64
	body      []byte
}

func newChannel(c *conn, id uint16) *channel {
	return &channel{
		c:         c,
		id:        id,
		limit:     core.NewLimit(0),
		consumers: make(map[string]*sink),
	}
}

// handleFrame handles one frame for this channel. A returned error is a
// connection error; channel errors are handled here (channel.close).
func (ch *channel) handleFrame(f wire.Frame) error {
	if ch.closing {
		return ch.handleWhileClosing(f)
	}
	var err error
	var m wire.Method
	switch f.Type {
	case wire.FrameMethod:
		if ch.content.active {
			return newError(wire.UnexpectedFrame, "expected content header for class 60, got non content header frame instead")
		}
		m, err = ch.decode(f.Payload)
		if err != nil {
			return err
		}
		err = ch.handleMethod(m)
	case wire.FrameHeader:
		if !ch.content.active || ch.content.gotHeader {
			return newError(wire.UnexpectedFrame, "unexpected content header frame on channel %d", ch.id)
		}
		m = &ch.content.publish
		err = ch.handleHeader(f.Payload)
	case wire.FrameBody:
		if !ch.content.active || !ch.content.gotHeader {
			return newError(wire.UnexpectedFrame, "unexpected content body frame on channel %d", ch.id)
		}
		m = &ch.content.publish
		err = ch.handleBody(f.Payload)
	}
	if err == nil {
		return nil
	}
	e := asAMQPError(err, m)
	if e.hard() {
		return e
	}
	ch.fail(e)
	return nil
}

// decode decodes a method frame. basic.publish and basic.ack, which come
// once per message, are decoded into structs the channel reuses: the
// handlers copy what they keep.
func (ch *channel) decode(payload []byte) (wire.Method, error) {
	if len(payload) >= 4 && payload[0] == 0 && payload[1] == byte(wire.ClassBasic) && payload[2] == 0 {
		var m interface {
			wire.Method
			Decode([]byte) error
		}
		switch payload[3] {
		case 40:
			m = &ch.scratch.publish
		case 80:
			m = &ch.scratch.ack
		}
		if m != nil {
			if err := m.Decode(payload[4:]); err != nil {
				return nil, asAMQPError(err, m)
			}
			return m, nil
		}
	}
	return wire.DecodeMethod(payload)
}

// handleWhileClosing answers the peer's side of a channel close we
// started.
func (ch *channel) handleWhileClosing(f wire.Frame) error {
	if f.Type != wire.FrameMethod {
		return nil
	}
	m, err := wire.DecodeMethod(f.Payload)
	if err != nil {
		return err
	}
	switch m.(type) {
	case *wire.ChannelClose:
		// Both sides closed at once: answer and wait for our close-ok.
		ch.c.out.writeMethod(ch.id, &wire.ChannelCloseOk{})
	case *wire.ChannelCloseOk:
		delete(ch.c.channels, ch.id)
	}
	return nil
}

// fail closes the channel with a channel error.
func (ch *channel) fail(e *amqpError) {
	ch.c.srv.log.Debug("amqp: channel error", "peer", ch.c.name, "channel", ch.id, "code", e.code, "text", e.text)
	ch.closing = true
	ch.content = content{}
	ch.flushAcks()
	ch.c.out.writeMethod(ch.id, &wire.ChannelClose{ReplyCode: e.code, ReplyText: e.text, ClassID: e.classID, MethodID: e.methodID})
	ch.shutdown()
}

// shutdown ends the channel in core: consumers are cancelled, then every
// unsettled delivery (including acks held by an open transaction) is
// requeued with redelivered set, as RabbitMQ does on channel close.
func (ch *channel) shutdown() {
	ch.mu.Lock()
	if ch.closed {
		ch.mu.Unlock()
		return
	}
	ch.closed = true
	ch.c.access.CloseChannel()
	if ch.confirm.q != nil {
		ch.confirm.q.Close()
	}
	consumers := ch.consumers
	ch.consumers = nil
	ch.flowBlocked = nil
	un := ch.unacked.takeAll(nil)
	ch.mu.Unlock()
	// After mu: listing holds chanList.mu while it takes each channel's mu.
	ch.c.listedChans.remove(ch)
	for _, s := range consumers {
		s.cons.Cancel()
	}
	if ch.tx != nil {
		for _, a := range ch.tx.acks {
			un = append(un, a.ps...)
		}
		ch.tx = nil
	}
	settle(un, core.Requeue)
}

func (ch *channel) handleMethod(m wire.Method) error {
	switch m := m.(type) {
	case *wire.ChannelClose:
		ch.flushAcks()
		ch.shutdown()
		ch.c.out.writeMethod(ch.id, &wire.ChannelCloseOk{})
		delete(ch.c.channels, ch.id)
		return nil
	case *wire.ChannelCloseOk:
		return nil // not closing: nothing to confirm; RabbitMQ ignores it too
	case *wire.ChannelOpen:
		return newError(wire.ChannelError, "second 'channel.open' seen")
	case *wire.ChannelFlow:
		ch.flow(m.Active)
		ch.c.out.writeMethod(ch.id, &wire.ChannelFlowOk{Active: m.Active})
		return nil
	case *wire.ChannelFlowOk:
		return nil // the server never sends channel.flow

	case *wire.ExchangeDeclare:
		return ch.exchangeDeclare(m)
	case *wire.ExchangeDelete:
		if err := ch.checkExchangeDelete(m.Exchange); err != nil {
			return err
		}
		if err := ch.c.vhost.DeleteExchange(m.Exchange, m.IfUnused); err != nil {
			return err
		}
		return ch.reply(m.NoWait, &wire.ExchangeDeleteOk{})
	case *wire.ExchangeBind:
		if err := ch.checkBinding(core.KindExchange, m.Destination, m.Source, m.RoutingKey); err != nil {
			return err
		}
		if err := ch.c.vhost.BindExchange(m.Destination, m.Source, m.RoutingKey, m.Arguments); err != nil {
			if storeRefused(err) {
				ch.c.vhost.UnbindExchange(m.Destination, m.Source, m.RoutingKey, m.Arguments)
			}
			return err
		}
		return ch.reply(m.NoWait, &wire.ExchangeBindOk{})
	case *wire.ExchangeUnbind:
		if err := ch.checkBinding(core.KindExchange, m.Destination, m.Source, m.RoutingKey); err != nil {
			return err
		}
		if err := ch.c.vhost.UnbindExchange(m.Destination, m.Source, m.RoutingKey, m.Arguments); err != nil {
			return err
		}
		return ch.reply(m.NoWait, &wire.ExchangeUnbindOk{})

	case *wire.QueueDeclare:
		return ch.queueDeclare(m)
	case *wire.QueueBind:
		return ch.queueBind(m.Queue, m.Exchange, m.RoutingKey, m.Arguments, true, m.NoWait)
	case *wire.QueueUnbind:
		return ch.queueBind(m.Queue, m.Exchange, m.RoutingKey, m.Arguments, false, false)
	case *wire.QueuePurge:
		name, err := ch.queueName(m.Queue)
		if err != nil {
			return err
		}
		if err := ch.checkQueueUse(name, core.Read); err != nil {
			return err
		}
		n, err := ch.c.vhost.PurgeQueue(name, ch.c.id)
		if err != nil {
			return err
		}
		return ch.reply(m.NoWait, &wire.QueuePurgeOk{MessageCount: n})
	case *wire.QueueDelete:
		name, err := ch.queueName(m.Queue)
		if err != nil {
			return err
		}
		if err := ch.checkQueueUse(name, core.Configure); err != nil {
			return err
		}
		return ch.deleteQueue(name, m)

	case *wire.BasicQos:
		return ch.qos(m)
	case *wire.BasicConsume:
		return ch.consume(m)
	case *wire.BasicCancel:
		ch.cancel(m.ConsumerTag)
		return ch.reply(m.NoWait, &wire.BasicCancelOk{ConsumerTag: m.ConsumerTag})
	case *wire.BasicPublish:
		return ch.startPublish(m)
	case *wire.BasicGet:
		return ch.get(m)
	case *wire.BasicAck:
		return ch.settle(m.DeliveryTag, m.Multiple, core.Ack)
	case *wire.BasicReject:
		return ch.settle(m.DeliveryTag, false, rejectOutcome(m.Requeue))
	case *wire.BasicNack:
		return ch.settle(m.DeliveryTag, m.Multiple, rejectOutcome(m.Requeue))
	case *wire.BasicRecover:
		if err := ch.recover(m.Requeue); err != nil {
			return err
		}
		ch.c.out.writeMethod(ch.id, &wire.BasicRecoverOk{})
		return nil
	case *wire.BasicRecoverAsync:
		return ch.recover(m.Requeue)

	case *wire.ConfirmSelect:
		if ch.tx != nil {
			return newError(wire.PreconditionFailed, "cannot switch from tx to confirm mode")
		}
		if !ch.confirm.on {
			ch.confirm.on = true
			ch.listed.confirm.Store(true)
			ch.confirm.q = core.NewSyncQueue(ch.c.srv.broker, ch.releaseConfirms)
		}
		return ch.reply(m.NoWait, &wire.ConfirmSelectOk{})
	case *wire.TxSelect:
		if ch.confirm.on {
			return newError(wire.PreconditionFailed, "cannot switch from confirm to tx mode")
		}
		if ch.tx == nil {
			ch.tx = &txState{}
			ch.listed.tx.Store(true)
		}
		ch.c.out.writeMethod(ch.id, &wire.TxSelectOk{})
		return nil
	case *wire.TxCommit:
		return ch.commit()
	case *wire.TxRollback:
		return ch.rollback()
	}
	cid, mid := m.ID()
	return newError(wire.CommandInvalid, "method %s not allowed from the client", wire.MethodName(cid, mid))
}

// reply sends m unless the client asked for no-wait.
// deleteQueue is queue.delete. Consumers of the queue on this channel are
// told with basic.cancel after the queue.delete-ok, as RabbitMQ does: a
// client that takes the cancel first would find its consumer gone while
// the delete it asked for is still pending.
func (ch *channel) deleteQueue(name string, m *wire.QueueDelete) error {
	ch.mu.Lock()
	ch.deleting = true
	ch.mu.Unlock()
	n, err := ch.c.vhost.DeleteQueue(name, m.IfUnused, m.IfEmpty, ch.c.id)
	ch.mu.Lock()
	ch.deleting = false
	tags := ch.heldCancels
	ch.heldCancels = nil
	ch.mu.Unlock()
	if err == nil && !m.NoWait {
		ch.c.out.writeMethod(ch.id, &wire.QueueDeleteOk{MessageCount: n})
	}
	for _, tag := range tags {
		ch.c.out.writeMethod(ch.id, &wire.BasicCancel{ConsumerTag: tag, NoWait: true})
	}
	return err
}

func (ch *channel) reply(noWait bool, m wire.Method) error {
	if !noWait {
		ch.c.out.writeMethod(ch.id, m)
	}
	return nil
}

func rejectOutcome(requeue bool) core.Outcome {
	if requeue {
		return core.Requeue
	}
	return core.Reject
}

// queueName expands RabbitMQ's shortcut: "" names the queue most recently
// declared on this channel.
func (ch *channel) queueName(name string) (string, error) {
	if name != "" {
		return name, nil
	}
	if ch.lastQueue == "" {
		return "", newError(wire.NotFound, "no previously declared queue")
	}
	return ch.lastQueue, nil
}

// queue resolves a queue the channel may consume from or get.
func (ch *channel) queue(name string) (*core.Queue, error) {
	name, err := ch.queueName(name)
	if err != nil {
		return nil, err
	}
	if err := ch.checkQueueUse(name, core.Read); err != nil {
		return nil, err
	}
	q := ch.c.vhost.Queue(name)
	if q == nil {
		return nil, newError(wire.NotFound, "no queue '%s' in vhost '%s'", name, ch.c.vhost.Name())
	}
	if err := q.CheckAccess(ch.c.id); err != nil {
		return nil, err
	}
	return q, nil
}

func (ch *channel) exchangeDeclare(m *wire.ExchangeDeclare) error {
	if err := ch.checkExchangeDeclare(m); err != nil {
		return err
	}
	err := ch.c.vhost.DeclareExchange(core.ExchangeDecl{
		Name: m.Exchange, Kind: m.Type,
		Durable: m.Durable, AutoDelete: m.AutoDelete, Internal: m.Internal, Passive: m.Passive,
		Arguments: m.Arguments,
	})
	if err != nil {
		if storeRefused(err) {
			ch.c.vhost.DeleteExchange(m.Exchange, false)
		}
		return err
	}
	return ch.reply(m.NoWait, &wire.ExchangeDeclareOk{})
}

func (ch *channel) queueDeclare(m *wire.QueueDeclare) error {
	name := m.Queue
	if name == "" && m.Passive {
		var err error
		if name, err = ch.queueName(""); err != nil {
			return err
		}
	}
	serverNamed := false
	if !m.Passive {
		if name == "" {
			name, serverNamed = core.ServerQueueName(), true
		} else if core.IsReservedName(name) {
			// RabbitMQ's check_name comes before the permission check.
			return newError(wire.AccessRefused, "queue name '%s' contains reserved prefix 'amq.*'", name)
		}
		if err := ch.checkQueueDeclare(name, m.Arguments); err != nil {
			return err
		}
	}
	info, err := ch.c.vhost.DeclareQueue(core.QueueDecl{
		Name: name, Durable: m.Durable, Exclusive: m.Exclusive, AutoDelete: m.AutoDelete, Passive: m.Passive,
		Arguments: m.Arguments, Owner: ch.c.id, ServerNamed: serverNamed,
	})
	if err != nil {
		if storeRefused(err) {
			ch.c.vhost.DeleteQueue(name, false, false, ch.c.id)
		}
		return err
	}
	ch.lastQueue = info.Name
	return ch.reply(m.NoWait, &wire.QueueDeclareOk{Queue: info.Name, MessageCount: info.Messages, ConsumerCount: info.Consumers})
}

func (ch *channel) queueBind(queue, exchange, key string, args core.Table, bind, noWait bool) error {
	if queue == "" && key == "" {
		// RabbitMQ: with both empty, the last declared queue's name is also
		// the routing key.
		key = ch.lastQueue
	}
	queue, err := ch.queueName(queue)
	if err != nil {
		return err
	}
	if err := ch.checkBinding(core.KindQueue, queue, exchange, key); err != nil {
		return err
	}
	v := ch.c.vhost
	if bind {
		if err := v.BindQueue(queue, exchange, key, args, ch.c.id); err != nil {
			if storeRefused(err) {
				v.UnbindQueue(queue, exchange, key, args, ch.c.id)
			}
			return err
		}
		return ch.reply(noWait, &wire.QueueBindOk{})
	}
	if err := v.UnbindQueue(queue, exchange, key, args, ch.c.id); err != nil {
		return err
	}
	return ch.reply(false, &wire.QueueUnbindOk{})
}

// flow pauses (active=false) or resumes deliveries to this channel's
// consumers. RabbitMQ 3.x refuses active=false; the spec asks for it and
// amqp091-go's suite tests it, so it is implemented.
func (ch *channel) flow(active bool) {
	ch.mu.Lock()
	ch.paused = !active
	var resume []*core.Consumer
	if active {
		resume, ch.flowBlocked = ch.flowBlocked, nil
	}
	ch.mu.Unlock()
	for _, c := range resume {
		c.Resume()
	}
}
