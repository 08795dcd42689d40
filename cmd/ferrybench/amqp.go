package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// dialAMQP connects to cfg.amqpURL; batch selects a batchConn (throughput
// runs) over a plain connection (latency runs).
func dialAMQP(cfg *config, batch bool) (*amqp.Connection, error) {
	batch = batch && !cfg.plainConns
	conn, err := amqp.DialConfig(cfg.amqpURL, amqp.Config{
		Heartbeat:       10 * time.Second,
		Locale:          "en_US",
		TLSClientConfig: cfg.tlsConfig,
		Dial: func(network, addr string) (net.Conn, error) {
			// amqp091-go runs TLS itself (TLSClientConfig) over this
			// connection for an amqps:// URL.
			c, err := dialTCP(addr, nil, batch)
			if err != nil {
				return nil, err
			}
			// As amqp091-go's DefaultDial: a deadline for the handshake,
			// cleared once the connection is open.
			if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("amqp: %w", err)
	}
	return conn, nil
}

// amqpConsumer consumes one queue with manual acks: every ackEvery
// deliveries it acks them all at once (multiple=true), and it acks the rest
// when stopped.
type amqpConsumer struct {
	ch       *amqp.Channel
	stopping chan struct{}
	finished chan struct{}
}

func startAMQPConsumer(r *run, conn *amqp.Connection, queue string, ackEvery int, handle func(body []byte)) (*amqpConsumer, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqp consumer channel: %w", err)
	}
	if err := ch.Qos(r.cfg.prefetch, 0, false); err != nil {
		return nil, fmt.Errorf("amqp basic.qos: %w", err)
	}
	dels, err := ch.Consume(queue, "ferrybench-"+queue, false, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("amqp basic.consume %s: %w", queue, err)
	}
	c := &amqpConsumer{ch: ch, stopping: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(c.finished)
		pending, last := 0, uint64(0)
		for {
			select {
			case d, ok := <-dels:
				if !ok {
					r.fail(fmt.Errorf("amqp consumer of %s: channel closed by the broker", queue))
					return
				}
				handle(d.Body)
				pending, last = pending+1, d.DeliveryTag
				if pending >= ackEvery {
					if err := ch.Ack(last, true); err != nil {
						r.fail(fmt.Errorf("amqp basic.ack: %w", err))
						return
					}
					pending = 0
				}
			case <-c.stopping:
				if pending > 0 {
					_ = ch.Ack(last, true)
				}
				return
			}
		}
	}()
	return c, nil
}

// stop acks what is left and closes the consumer's channel. After stop, the
// handler is no longer called.
func (c *amqpConsumer) stop() {
	close(c.stopping)
	<-c.finished
	_ = c.ch.Close()
}

// amqpPublish publishes p's messages on a new channel of conn. With confirm,
// at most cfg.window messages are unconfirmed at once, and it waits for the
// last confirms. Without, a clean channel.close at the end tells that the
// broker took every message (it answers close-ok after handling the
// publishes before it), so they all count as confirmed.
func amqpPublish(ctx context.Context, r *run, p *publisher, conn *amqp.Connection, exchange, key string, persistent, confirm bool) error {
	return amqpPublishTo(ctx, r, p, conn, exchange, func([]byte, uint32) string { return key }, persistent, confirm)
}

// amqpPublishTo is amqpPublish with a routing key per message: route gets
// each body, its header written, and its sequence number, may write into
// the rest of the body, and returns the key.
func amqpPublishTo(ctx context.Context, r *run, p *publisher, conn *amqp.Connection, exchange string, route func(body []byte, seq uint32) string, persistent, confirm bool) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqp publisher channel: %w", err)
	}
	msg := amqp.Publishing{DeliveryMode: amqp.Transient}
	if persistent {
		msg.DeliveryMode = amqp.Persistent
	}
	var inflight chan struct{}
	var listenerDone chan struct{}
	if confirm {
		if err := ch.Confirm(false); err != nil {
			return fmt.Errorf("amqp confirm.select: %w", err)
		}
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, r.cfg.window+1))
		inflight = make(chan struct{}, r.cfg.window)
		listenerDone = make(chan struct{})
		go func() {
			defer close(listenerDone)
			for c := range confirms {
				<-inflight
				if c.Ack {
					p.ack(uint32(c.DeliveryTag - 1))
				} else {
					p.nacks.Add(1)
				}
			}
		}()
	}
	err = r.publishLoop(p, r.share(int(p.id)), true, func(body []byte, seq uint32) error {
		if confirm {
			select {
			case inflight <- struct{}{}:
			case <-listenerDone:
				return errors.New("channel closed while waiting for confirms")
			}
		}
		key := route(body, seq)
		msg.Body = body
		return ch.PublishWithContext(ctx, exchange, key, false, false, msg)
	})
	if err != nil {
		return err
	}
	if confirm {
		deadline := time.Now().Add(30 * time.Second)
		for p.confirmed.Load()+p.nacks.Load() < p.published.Load() {
			if time.Now().After(deadline) {
				_ = ch.Close()
				return fmt.Errorf("publisher %d: %d of %d confirms still missing after 30 s",
					p.id, p.published.Load()-p.confirmed.Load()-p.nacks.Load(), p.published.Load())
			}
			select {
			case <-listenerDone:
				return fmt.Errorf("publisher %d: channel closed with %d confirms missing",
					p.id, p.published.Load()-p.confirmed.Load()-p.nacks.Load())
			case <-time.After(time.Millisecond):
			}
		}
		if n := p.nacks.Load(); n > 0 {
			r.warn("publisher %d: %d messages nacked by the broker", p.id, n)
		}
	}
	if err := ch.Close(); err != nil {
		return fmt.Errorf("publisher %d: amqp channel.close: %w", p.id, err)
	}
	if confirm {
		<-listenerDone
	} else {
		p.allAcked = true
	}
	return nil
}

// amqpAdmin declares and deletes what a run uses, on its own channel; the
// deletes run in reverse order at cleanup.
type amqpAdmin struct {
	ch      *amqp.Channel
	cleanup []func() error
}

func newAMQPAdmin(conn *amqp.Connection) (*amqpAdmin, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqp admin channel: %w", err)
	}
	return &amqpAdmin{ch: ch}, nil
}

func (a *amqpAdmin) queue(name string, durable bool) error {
	if _, err := a.ch.QueueDeclare(name, durable, false, false, false, nil); err != nil {
		return fmt.Errorf("amqp queue.declare %s: %w", name, err)
	}
	a.cleanup = append(a.cleanup, func() error {
		_, err := a.ch.QueueDelete(name, false, false, false)
		return err
	})
	return nil
}

func (a *amqpAdmin) exchange(name, kind string) error {
	if err := a.ch.ExchangeDeclare(name, kind, false, false, false, false, nil); err != nil {
		return fmt.Errorf("amqp exchange.declare %s: %w", name, err)
	}
	a.cleanup = append(a.cleanup, func() error { return a.ch.ExchangeDelete(name, false, false) })
	return nil
}

func (a *amqpAdmin) bind(queue, key, exchange string) error {
	if err := a.ch.QueueBind(queue, key, exchange, false, nil); err != nil {
		return fmt.Errorf("amqp queue.bind %s to %s: %w", queue, exchange, err)
	}
	return nil
}

// close deletes everything declared, newest first, and reports the first
// failure as a warning on r: a leftover queue does not change the result.
func (a *amqpAdmin) close(r *run) {
	for i := len(a.cleanup) - 1; i >= 0; i-- {
		if err := a.cleanup[i](); err != nil {
			r.warn("cleanup: %v", err)
			break
		}
	}
	_ = a.ch.Close()
}

// amqpConns dials n connections; closeAll closes them.
func amqpConns(cfg *config, n int, batch bool) ([]*amqp.Connection, error) {
	var conns []*amqp.Connection
	for range n {
		c, err := dialAMQP(cfg, batch)
		if err != nil {
			closeAMQP(conns)
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeAMQP(conns []*amqp.Connection) {
	for _, c := range conns {
		_ = c.Close()
	}
}
