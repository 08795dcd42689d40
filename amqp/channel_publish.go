package amqp

import (
	"sync"

	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// confirms is a channel's publisher-confirm state.
//
// A message that reached no durable queue is confirmed once routed; acks
// for those are coalesced into one basic.ack multiple=true per read batch.
// A message stored for a durable queue is confirmed only when the store has
// synced it: its confirm waits in a FIFO until the store calls Synced. While
// anything waits there, later confirms queue behind it, because an ack with
// multiple=true must not cover a message that is not yet on disk.
type confirms struct {
	on      bool
	nextSeq uint64 // sequence number of the last publish
	// ackFrom..ackTo are confirmed but not yet sent; 0 = none. Everything
	// before ackFrom has been sent. Reader only.
	ackFrom, ackTo uint64
	dirty          bool // on the connection's list of channels to flush

	mu       sync.Mutex // guards the fields below; Synced runs on the store's goroutine
	waiting  []waitingConfirm
	notified bool // a Store.Notify is outstanding
	closed   bool // the channel is gone: drop confirms
}

type waitingConfirm struct {
	seq, pos uint64 // pos 0: nothing to wait for, only ordering
	ack      bool
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
	res, err := ch.publish(msg, mandatory)
	if err != nil {
		return err
	}
	if ch.confirm.on {
		ch.confirm.nextSeq++
		ch.confirmed(ch.confirm.nextSeq, !res.Rejected, res.Pos)
	}
	return nil
}

// publish routes msg and returns it to the publisher if mandatory and
// unroutable.
func (ch *channel) publish(msg *core.Message, mandatory bool) (core.PublishResult, error) {
	res, err := ch.c.vhost.Publish(msg)
	if err != nil {
		return res, err
	}
	if mandatory && res.Routed == 0 && !res.Rejected {
		ch.c.out.writeContent(ch.id, &wire.BasicReturn{
			ReplyCode: wire.NoRoute, ReplyText: "NO_ROUTE", Exchange: msg.Exchange, RoutingKey: msg.RoutingKey,
		}, msg)
	}
	return res, nil
}

// confirmed records the outcome of publish seq, durable at store position
// pos (0: nothing stored).
func (ch *channel) confirmed(seq uint64, ack bool, pos uint64) {
	c := &ch.confirm
	c.mu.Lock()
	if pos != 0 || len(c.waiting) > 0 {
		ch.flushAcks() // everything before seq goes out first
		c.waiting = append(c.waiting, waitingConfirm{seq: seq, pos: pos, ack: ack})
		notify := !c.notified
		c.notified = true
		c.mu.Unlock()
		if notify {
			ch.c.srv.broker.NotifySynced(pos, ch)
		}
		return
	}
	c.mu.Unlock()
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

// Synced implements core.SyncWaiter: the store has made everything up to
// pos durable, or failed to (err), and the confirms waiting for it go out;
// a failed write is a nack. It runs on the store's goroutine.
func (ch *channel) Synced(pos uint64, err error) {
	c := &ch.confirm
	c.mu.Lock()
	c.notified = false
	if c.closed {
		c.waiting = nil
		c.mu.Unlock()
		return
	}
	n := 0
	var ackTo, ackFrom uint64
	flush := func() {
		if ackTo != 0 {
			ch.c.out.writeMethod(ch.id, &wire.BasicAck{DeliveryTag: ackTo, Multiple: ackTo > ackFrom})
			ackFrom, ackTo = 0, 0
		}
	}
	for _, w := range c.waiting {
		if w.pos > pos {
			break
		}
		n++
		if w.ack && (err == nil || w.pos == 0) {
			if ackFrom == 0 {
				ackFrom = w.seq
			}
			ackTo = w.seq
			continue
		}
		flush()
		ch.c.out.writeMethod(ch.id, &wire.BasicNack{DeliveryTag: w.seq})
	}
	flush()
	c.waiting = c.waiting[:copy(c.waiting, c.waiting[n:])]
	var next uint64
	if len(c.waiting) > 0 {
		next = c.waiting[len(c.waiting)-1].pos
		c.notified = true
	}
	c.mu.Unlock()
	if next != 0 {
		ch.c.srv.broker.NotifySynced(next, ch)
	}
}

// closeConfirms drops confirms still waiting for the store: the channel is
// gone, and its id may be reused by a new channel.
func (ch *channel) closeConfirms() {
	ch.confirm.mu.Lock()
	ch.confirm.closed = true
	ch.confirm.waiting = nil
	ch.confirm.mu.Unlock()
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
	var pos uint64
	for _, p := range tx.publishes {
		res, err := ch.publish(p.msg, p.mandatory)
		if err != nil {
			return err
		}
		pos = max(pos, res.Pos)
	}
	for _, a := range tx.acks {
		settle(a.ps, a.o)
	}
	// commit-ok promises the persistent messages are on disk.
	if err := ch.c.srv.broker.WaitSynced(pos); err != nil {
		return newError(wire.InternalError, "store: %v", err)
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
