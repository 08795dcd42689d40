package amqp

import (
	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// confirms is a channel's publisher-confirm state. Acks are not written
// one per publish: consecutive ones are coalesced into a single
// basic.ack multiple=true when the reader is about to block on the socket.
type confirms struct {
	on      bool
	nextSeq uint64 // sequence number of the last publish
	// ackFrom..ackTo are confirmed but not yet sent; 0 = none. Everything
	// before ackFrom has been sent.
	ackFrom, ackTo uint64
	dirty          bool // on the connection's list of channels to flush
}

// txState holds what a transaction has not committed yet.
type txState struct {
	publishes []txPublish
	acks      []txSettle
}

type txPublish struct {
	msg       *core.Message
	mandatory bool
}

type txSettle struct {
	ps []pending
	o  core.Outcome
}

// startPublish begins assembling a message; its header and body frames
// follow.
func (ch *channel) startPublish(m *wire.BasicPublish) error {
	if m.Immediate {
		return newError(wire.NotImplemented, "immediate=true")
	}
	ch.content = content{active: true, publish: *m}
	return nil
}

func (ch *channel) handleHeader(payload []byte) error {
	classID, size, props, err := wire.DecodeContentHeader(payload)
	if err != nil {
		return err
	}
	if classID != wire.ClassBasic {
		return newError(wire.UnexpectedFrame, "content header for class %d, expected %d", classID, wire.ClassBasic)
	}
	if max := ch.c.srv.cfg.MaxMessageSize; size > uint64(max) {
		ch.content.active = false
		return newError(wire.PreconditionFailed, "message size %d is larger than configured max size %d", size, max)
	}
	c := &ch.content
	c.gotHeader, c.props, c.size = true, props, size
	if size == 0 {
		return ch.completePublish()
	}
	c.body = make([]byte, 0, size)
	return nil
}

func (ch *channel) handleBody(payload []byte) error {
	c := &ch.content
	if uint64(len(c.body))+uint64(len(payload)) > c.size {
		return newError(wire.FrameError, "content body exceeds the %d bytes its header announced", c.size)
	}
	c.body = append(c.body, payload...)
	if uint64(len(c.body)) == c.size {
		return ch.completePublish()
	}
	return nil
}

// completePublish routes a fully assembled message, or holds it for
// tx.commit.
func (ch *channel) completePublish() error {
	c := ch.content
	ch.content = content{}
	if uid := c.props.UserID; uid != "" && uid != ch.c.user.Name {
		return newError(wire.PreconditionFailed, "user_id property set to '%s' but authenticated user was '%s'", uid, ch.c.user.Name)
	}
	msg := &core.Message{
		Exchange:   c.publish.Exchange,
		RoutingKey: c.publish.RoutingKey,
		Properties: c.props,
		Body:       c.body,
	}
	if ch.tx != nil {
		ch.tx.publishes = append(ch.tx.publishes, txPublish{msg: msg, mandatory: c.publish.Mandatory})
		return nil
	}
	if !ch.c.waitUnblocked() {
		return nil
	}
	return ch.route(msg, c.publish.Mandatory)
}

// route publishes msg through core, returns it if mandatory and unroutable,
// and confirms it in confirm mode: a nack if a queue refused it
// (x-overflow reject-publish), else an ack, as RabbitMQ.
func (ch *channel) route(msg *core.Message, mandatory bool) error {
	res, err := ch.c.vhost.Publish(msg)
	if err != nil {
		return err
	}
	if mandatory && res.Routed == 0 && !res.Rejected {
		ch.c.out.writeContent(ch.id, &wire.BasicReturn{
			ReplyCode: wire.NoRoute, ReplyText: "NO_ROUTE", Exchange: msg.Exchange, RoutingKey: msg.RoutingKey,
		}, msg)
	}
	if ch.confirm.on {
		ch.confirm.nextSeq++
		ch.confirmed(ch.confirm.nextSeq, !res.Rejected)
	}
	return nil
}

// confirmed records the outcome of publish seq. Acks wait for flushAcks; a
// nack is written at once, after the acks before it.
func (ch *channel) confirmed(seq uint64, ack bool) {
	c := &ch.confirm
	if !ack {
		ch.flushAcks()
		ch.c.out.writeMethod(ch.id, &wire.BasicNack{DeliveryTag: seq})
		return
	}
	if c.ackFrom == 0 {
		c.ackFrom = seq
	}
	c.ackTo = seq
	if !c.dirty {
		c.dirty = true
		ch.c.confirmDirty = append(ch.c.confirmDirty, ch)
	}
}

// flushAcks writes the coalesced acks.
func (ch *channel) flushAcks() {
	c := &ch.confirm
	if c.ackFrom == 0 {
		return
	}
	ch.c.out.writeMethod(ch.id, &wire.BasicAck{DeliveryTag: c.ackTo, Multiple: c.ackTo > c.ackFrom})
	c.ackFrom, c.ackTo = 0, 0
}

func (ch *channel) commit() error {
	if ch.tx == nil {
		return newError(wire.PreconditionFailed, "channel is not transactional")
	}
	tx := ch.tx
	ch.tx = &txState{}
	if len(tx.publishes) > 0 && !ch.c.waitUnblocked() {
		return nil
	}
	for _, p := range tx.publishes {
		if err := ch.route(p.msg, p.mandatory); err != nil {
			return err
		}
	}
	for _, a := range tx.acks {
		settle(a.ps, a.o)
	}
	ch.c.out.writeMethod(ch.id, &wire.TxCommitOk{})
	return nil
}

func (ch *channel) rollback() error {
	if ch.tx == nil {
		return newError(wire.PreconditionFailed, "channel is not transactional")
	}
	tx := ch.tx
	ch.tx = &txState{}
	var ps []pending
	for _, a := range tx.acks {
		ps = append(ps, a.ps...)
	}
	ch.mu.Lock()
	ch.unacked.restore(ps)
	ch.mu.Unlock()
	ch.c.out.writeMethod(ch.id, &wire.TxRollbackOk{})
	return nil
}
