package amqp

import (
	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// confirms is a channel's publisher-confirm state.
//
// A message stored for a durable queue is confirmed only once the store
// has synced it; a core.SyncQueue holds its confirm until then, and every
// later one behind it, because an ack with multiple=true must not cover a
// message that is not yet on disk. Acks released together are coalesced
// into one basic.ack multiple=true: by the store's goroutine at once, by
// the reader when it is about to block on the socket.
type confirms struct {
	on      bool
	nextSeq uint64                       // sequence number of the last publish
	q       *core.SyncQueue[confirmItem] // made by confirm.select
	dirty   bool                         // on the connection's list of channels to flush; reader only

	// ackFrom..ackTo are released but not yet sent; 0 = none. Everything
	// before ackFrom has been sent. Guarded by q's lock.
	ackFrom, ackTo uint64
}

type confirmItem struct {
	seq uint64
	ack bool // false: nack (refused by x-overflow)
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
	if err := ch.checkPublish(m.Exchange, m.RoutingKey); err != nil {
		return err
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
	// The body's buffer is made when its bytes come (handleBody), not
	// here: a header announcing 16 MiB costs nothing by itself.
	return nil
}

// firstBodyBuf is the least a body buffer grows by: small steps would
// copy a large body many times over.
const firstBodyBuf = 4 << 10

func (ch *channel) handleBody(payload []byte) error {
	c := &ch.content
	have, n := uint64(len(c.body)), uint64(len(payload))
	if have+n > c.size {
		return newError(wire.FrameError, "content body exceeds the %d bytes its header announced", c.size)
	}
	if have+n > uint64(cap(c.body)) {
		if have+n < c.size {
			// A body in several frames grows with what arrived, doubling
			// up to its announced size, so memory follows the bytes
			// received. Under a resource alarm the reader stops here,
			// as it would at the publish: partly received bodies are
			// memory too.
			if !ch.c.waitUnblocked() {
				ch.content = content{} // closing: the rest is ignored
				return nil
			}
		}
		// A body in one frame, the common case, or its last frame: one
		// buffer of the exact size.
		want := c.size
		if have+n < c.size {
			want = min(c.size, max(2*uint64(cap(c.body)), 2*(have+n), firstBodyBuf))
		}
		b := make([]byte, have, want)
		copy(b, c.body)
		c.body = b
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
	if uid := c.props.UserID; uid != "" && uid != ch.c.access.Principal().Name {
		return newError(wire.PreconditionFailed, "user_id property set to '%s' but authenticated user was '%s'", uid, ch.c.access.Principal().Name)
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
		ch.confirm.q.Add(res.Pos, confirmItem{seq: ch.confirm.nextSeq, ack: !res.Rejected})
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

// releaseConfirms is the channel's SyncQueue release: acks are coalesced,
// a nack (or a store failure) is written at once after the acks before it.
// It runs under the queue's lock, on the reader or the store's goroutine.
func (ch *channel) releaseConfirms(items []confirmItem, err error, fromStore bool) {
	c := &ch.confirm
	for _, it := range items {
		if it.ack && err == nil {
			if c.ackFrom == 0 {
				c.ackFrom = it.seq
			}
			c.ackTo = it.seq
			continue
		}
		ch.flushAcksLocked()
		ch.c.out.writeMethod(ch.id, &wire.BasicNack{DeliveryTag: it.seq})
	}
	switch {
	case fromStore:
		ch.flushAcksLocked()
	case c.ackFrom != 0 && !c.dirty:
		c.dirty = true
		ch.c.confirmDirty = append(ch.c.confirmDirty, ch)
	}
}

// flushAcks writes the coalesced acks (reader).
func (ch *channel) flushAcks() {
	if ch.confirm.q != nil {
		ch.confirm.q.Locked(ch.flushAcksLocked)
	}
}

func (ch *channel) flushAcksLocked() {
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
	var positions []uint64
	for _, p := range tx.publishes {
		res, err := ch.publish(p.msg, p.mandatory)
		if err != nil {
			return err
		}
		if res.Pos != 0 {
			positions = append(positions, res.Pos)
		}
	}
	for _, a := range tx.acks {
		settle(a.ps, a.o)
	}
	// commit-ok promises the persistent messages are on disk: each of
	// them, since the store may refuse one in an earlier commit than the
	// last one's. Once the last is synced, the others answer at once.
	for i := range positions {
		p := positions[len(positions)-1-i]
		if err := ch.c.srv.broker.WaitSynced(p); err != nil {
			e := newError(wire.InternalError, "store: %v", err)
			e.channelOnly = storeRefused(err)
			return e
		}
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
