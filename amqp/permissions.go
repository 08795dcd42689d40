package amqp

import (
	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// RabbitMQ's access-control table, method by method (rabbit_channel): each
// check runs before core acts, in RabbitMQ's order, so a refusal is the
// same 403 ACCESS_REFUSED reply RabbitMQ gives, whether or not the entity
// exists.

func (ch *channel) check(kind, name string, perm core.Permission) error {
	return ch.c.access.Check(ch.c.ctx, kind, name, perm)
}

// checkExchangeDeclare: configure on the exchange; a new exchange with an
// alternate exchange also needs read on itself and write on the AE.
func (ch *channel) checkExchangeDeclare(m *wire.ExchangeDeclare) error {
	if m.Passive || m.Exchange == "" {
		return nil // no permission needed; core refuses the default exchange
	}
	if err := ch.check(core.KindExchange, m.Exchange, core.Configure); err != nil {
		return err
	}
	ae, ok := m.Arguments["alternate-exchange"].(string)
	if !ok || ch.c.vhost.HasExchange(m.Exchange) {
		return nil
	}
	if err := ch.check(core.KindExchange, m.Exchange, core.Read); err != nil {
		return err
	}
	return ch.check(core.KindExchange, ae, core.Write)
}

// checkExchangeDelete: configure on the exchange; "" and amq.* are core's
// to refuse first.
func (ch *channel) checkExchangeDelete(name string) error {
	if name == "" || core.IsReservedName(name) {
		return nil
	}
	return ch.check(core.KindExchange, name, core.Configure)
}

// checkBinding: write on the destination (queue or exchange), read on the
// source exchange, and topic read on the binding key if the source is a
// topic exchange.
func (ch *channel) checkBinding(destKind, dest, source, key string) error {
	if err := ch.check(destKind, dest, core.Write); err != nil {
		return err
	}
	if source == "" {
		return nil // core refuses binding to the default exchange
	}
	if err := ch.check(core.KindExchange, source, core.Read); err != nil {
		return err
	}
	return ch.c.access.CheckTopic(ch.c.ctx, source, key, core.Read)
}

// checkQueueDeclare: configure on the queue (server-named ones by their
// generated name); a new queue with a dead-letter exchange also needs read
// on itself and write on the DLX.
func (ch *channel) checkQueueDeclare(name string, args core.Table) error {
	if err := ch.check(core.KindQueue, name, core.Configure); err != nil {
		return err
	}
	dlx, ok := args["x-dead-letter-exchange"].(string)
	if !ok || ch.c.vhost.Queue(name) != nil {
		return nil
	}
	if err := ch.check(core.KindQueue, name, core.Read); err != nil {
		return err
	}
	return ch.check(core.KindExchange, dlx, core.Write)
}

// checkQueueUse: perm on the queue, and the queue must not be another's
// internal queue (an MQTT client's session, a bridge's).
func (ch *channel) checkQueueUse(name string, perm core.Permission) error {
	if err := ch.check(core.KindQueue, name, perm); err != nil {
		return err
	}
	return ch.c.access.CheckInternalQueue(name)
}

// checkPublish: write on the exchange, and topic write on the routing key
// if it is a topic exchange.
func (ch *channel) checkPublish(exchange, key string) error {
	if err := ch.check(core.KindExchange, exchange, core.Write); err != nil {
		return err
	}
	return ch.c.access.CheckTopic(ch.c.ctx, exchange, key, core.Write)
}
