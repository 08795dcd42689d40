package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/bridge/batchconn"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// amqpUpstream is an AMQP 0-9-1 upstream: one channel in confirm mode
// publishes (confirms pipelined, at most Window pending), another
// consumes the inbound queue with manual acks.
type amqpUpstream struct {
	l       *link
	node    string
	conn    *amqp091.Connection
	pub     *amqp091.Channel
	gone    chan struct{}
	deliver func(string, *core.Message, func())
	viaOnly amqp091.Table // the headers of a message without any: never written

	mu      sync.Mutex   // serialises publishes so tags follow call order
	pending []pendingPub // awaiting their confirm, in tag order; from head
	head    int
	dead    bool
	cause   error
}

// pendingPub is a publish awaiting its confirm.
type pendingPub struct {
	tag uint64
	t   ticket
}

// take removes the publish of tag from pending; u.mu is held. amqp091-go
// delivers confirms in tag order, so it is the oldest but for a publish
// that failed locally.
func (u *amqpUpstream) takeLocked(tag uint64) (ticket, bool) {
	p := u.pending[u.head:]
	i := 0
	if len(p) == 0 || p[0].tag != tag {
		i = slices.IndexFunc(p, func(e pendingPub) bool { return e.tag == tag })
		if i < 0 {
			return ticket{}, false
		}
	}
	t := p[i].t
	if i == 0 {
		p[0] = pendingPub{}
		u.head++
	} else {
		copy(p[i:], p[i+1:])
		u.pending = u.pending[:len(u.pending)-1]
	}
	switch {
	case u.head == len(u.pending):
		u.pending, u.head = u.pending[:0], 0
	case u.head >= 1024 && 2*u.head >= len(u.pending):
		n := copy(u.pending, u.pending[u.head:])
		clear(u.pending[n:])
		u.pending, u.head = u.pending[:n], 0
	}
	return t, true
}

func dialAMQP(ctx context.Context, l *link, node string, deliver func(string, *core.Message, func())) (upstream, error) {
	cfg := amqp091.Config{
		Properties: amqp091.Table{"connection_name": "ferrymq bridge " + l.Name},
		// amqp091-go flushes every publish: coalesce them (batchconn).
		Dial: func(network, addr string) (net.Conn, error) {
			c, err := net.DialTimeout(network, addr, 30*time.Second)
			if err != nil {
				return nil, err
			}
			// As amqp091-go's DefaultDial: a deadline for the handshake,
			// which the client clears once the connection is open.
			if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
				c.Close()
				return nil, err
			}
			return batchconn.New(c), nil
		},
	}
	if l.secure {
		tc, err := l.tlsConfig()
		if err != nil {
			return nil, err
		}
		cfg.TLSClientConfig = tc
	}
	u := *l.url
	u.Scheme = map[bool]string{true: "amqps", false: "amqp"}[l.secure]
	type result struct {
		c   *amqp091.Connection
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := amqp091.DialConfig(u.String(), cfg)
		res <- result{c, err}
	}()
	var conn *amqp091.Connection
	select {
	case r := <-res:
		if r.err != nil {
			var ae *amqp091.Error
			if errors.As(r.err, &ae) && ae.Code == amqp091.AccessRefused {
				return nil, fmt.Errorf("bridge: upstream refused the login (check the user and password in the bridge URL, and the user's access to the vhost): %w", r.err)
			}
			return nil, fmt.Errorf("bridge: AMQP connect: %w", r.err)
		}
		conn = r.c
	case <-ctx.Done():
		go func() {
			if r := <-res; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
	up := &amqpUpstream{l: l, node: node, deliver: deliver, conn: conn, gone: make(chan struct{}),
		viaOnly: amqp091.Table{ViaHeader: node}}
	pub, err := conn.Channel()
	if err == nil {
		err = pub.Confirm(false)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	up.pub = pub
	confirms := pub.NotifyPublish(make(chan amqp091.Confirmation, l.Window))
	closed := conn.NotifyClose(make(chan *amqp091.Error, 1))
	go up.confirmLoop(confirms, closed)
	return up, nil
}

// confirmLoop calls done for each confirm; on a nack or when the
// connection ends, the message is reported failed so it is sent again.
func (u *amqpUpstream) confirmLoop(confirms <-chan amqp091.Confirmation, closed <-chan *amqp091.Error) {
	defer func() {
		if e, ok := <-closed; ok && e != nil {
			u.mu.Lock()
			u.cause = e
			u.mu.Unlock()
		}
	}()
	var f flusher
	for {
		var c amqp091.Confirmation
		var ok bool
		select {
		case c, ok = <-confirms:
		default:
			// Nothing more ready: settle what came before waiting.
			f.flush()
			c, ok = <-confirms
		}
		if !ok {
			break
		}
		u.mu.Lock()
		t, found := u.takeLocked(c.DeliveryTag)
		u.mu.Unlock()
		if !found {
			continue
		}
		if c.Ack {
			f.done(t, nil)
		} else {
			f.done(t, errors.New("bridge: upstream nacked a message"))
		}
	}
	f.flush()
	u.fail()
}

// fail reports every unconfirmed message lost, in publish order, and marks
// the connection gone.
func (u *amqpUpstream) fail() {
	u.mu.Lock()
	if u.dead {
		u.mu.Unlock()
		return
	}
	u.dead = true
	pending := u.pending[u.head:]
	u.pending, u.head = nil, 0
	close(u.gone)
	u.mu.Unlock()
	var f flusher
	for _, p := range pending {
		f.done(p.t, errLost)
	}
	f.flush()
}

func (u *amqpUpstream) publish(name string, m *core.Message, qos byte, t ticket) {
	p := &m.Properties
	pub := amqp091.Publishing{
		ContentType: p.ContentType, ContentEncoding: p.ContentEncoding, DeliveryMode: p.DeliveryMode,
		Priority: p.Priority, CorrelationId: p.CorrelationID, ReplyTo: p.ReplyTo, Expiration: p.Expiration,
		MessageId: p.MessageID, Timestamp: p.Timestamp, Type: p.Type, AppId: p.AppID,
		Headers: u.headers(p.Headers), Body: m.Body,
	}
	if qos > 0 {
		pub.DeliveryMode = amqp091.Persistent
	}
	u.mu.Lock()
	if u.dead {
		u.mu.Unlock()
		t.done(errLost)
		return
	}
	tag := u.pub.GetNextPublishSeqNo()
	u.pending = append(u.pending, pendingPub{tag, t})
	err := u.pub.PublishWithContext(context.Background(), u.l.Exchange, topic.RoutingKey(name), false, false, pub)
	if err != nil {
		u.takeLocked(tag)
	}
	u.mu.Unlock()
	if err != nil {
		t.done(err)
		u.conn.Close()
	}
}

// headers converts a message's headers for amqp091-go, with this node
// added to ViaHeader. A message without headers of its own, the usual
// case, gets one table made at dial time: amqp091-go only reads it.
func (u *amqpUpstream) headers(h core.Table) amqp091.Table {
	if len(h) == 0 {
		return u.viaOnly
	}
	t := make(amqp091.Table, len(h)+1)
	for k, v := range h {
		t[k] = toAMQP(v)
	}
	if v, _ := h[ViaHeader].(string); v != "" {
		t[ViaHeader] = v + "," + u.node
	} else {
		t[ViaHeader] = u.node
	}
	return t
}

// subscribe consumes the inbound queue: the link's Queue, or a durable
// queue of the bridge's own bound to the inbound patterns, so that the
// upstream keeps messages while the link is down.
func (u *amqpUpstream) subscribe(rules []Topic) error {
	ch, err := u.conn.Channel()
	if err != nil {
		return err
	}
	queue := u.l.Queue
	if queue == "" {
		queue = "ferrymq-bridge-" + u.node + "-" + u.l.Name
		if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
			return err
		}
		for _, t := range rules {
			if err := ch.QueueBind(queue, topic.BindingKey(t.RemotePrefix+t.Pattern), u.l.Exchange, false, nil); err != nil {
				return err
			}
		}
	}
	if err := ch.Qos(u.l.Window, 0, false); err != nil {
		return err
	}
	ds, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	go func() {
		for d := range ds {
			u.deliver(topic.Name(d.RoutingKey), fromAMQP(&d), func() { d.Ack(false) })
		}
	}()
	return nil
}

// fromAMQP converts an upstream delivery into a local message.
func fromAMQP(d *amqp091.Delivery) *core.Message {
	h, _ := fromAMQPValue(d.Headers).(core.Table)
	return &core.Message{
		Properties: core.Properties{
			ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, Headers: h, DeliveryMode: d.DeliveryMode,
			Priority: d.Priority, CorrelationID: d.CorrelationId, ReplyTo: d.ReplyTo, Expiration: d.Expiration,
			MessageID: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, AppID: d.AppId,
		},
		Body: d.Body,
	}
}

func (u *amqpUpstream) lost() <-chan struct{} { return u.gone }

func (u *amqpUpstream) lostCause() error {
	<-u.gone
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cause
}

func (u *amqpUpstream) close() {
	u.conn.Close()
	u.fail()
}

// toAMQP and fromAMQPValue convert field values between core's types and
// amqp091-go's (nested tables and decimals differ; the rest are shared).
func toAMQP(v any) any {
	switch x := v.(type) {
	case core.Table:
		t := make(amqp091.Table, len(x))
		for k, e := range x {
			t[k] = toAMQP(e)
		}
		return t
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = toAMQP(e)
		}
		return a
	case core.Decimal:
		return amqp091.Decimal{Scale: x.Scale, Value: x.Value}
	}
	return v
}

func fromAMQPValue(v any) any {
	switch x := v.(type) {
	case amqp091.Table:
		t := make(core.Table, len(x))
		for k, e := range x {
			t[k] = fromAMQPValue(e)
		}
		return t
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = fromAMQPValue(e)
		}
		return a
	case amqp091.Decimal:
		return core.Decimal{Scale: x.Scale, Value: x.Value}
	}
	return v
}
