package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
//
// The publishing channel may be closed by the upstream on its own, the
// connection standing: a channel exception caused by one publish. For the
// codes that refuse that message whatever happens (perMessageRefusal) the
// link opens a new channel on the same connection (reopen) and sends the
// publishes that were unconfirmed at the exception one at a time, each
// waiting for its confirm: the one that closes the channel alone in flight
// is the culprit, refused for good (acked here, counted, logged), and the
// link goes on with its full window. Any other channel exception (404: the
// exchange is missing) is handled as the connection lost.
type amqpUpstream struct {
	l          *link
	node       string
	log        *slog.Logger
	conn       *amqp091.Connection
	raw        net.Conn              // conn's transport, for close to cut a stuck write
	connClosed <-chan *amqp091.Error // conn's NotifyClose; read once it failed
	deliver    func(string, *core.Message, func())
	viaOnly    amqp091.Table // the headers of a message without any: never written

	mu   sync.Mutex // serialises publishes so tags follow call order
	idle *sync.Cond // on mu: signalled when nothing is in flight, or pub is gone
	pub  *amqp091.Channel
	// pubGone is closed when pub is lost, alone or with the connection.
	pubGone chan struct{}
	pubDead bool
	dead    bool         // the connection is closed: no channel will be opened
	pending []pendingPub // awaiting their confirm, in tag order; from head
	head    int
	cause   error
	// canReopen: pub was closed by a publish's refusal and the connection
	// stands, so reopen may open another.
	canReopen bool
	// suspects counts the publishes still to send one at a time, to find
	// which one the upstream refused: those unconfirmed when it closed the
	// channel.
	suspects int
	refused  uint64 // messages refused for good on this connection
}

// pendingPub is a publish awaiting its confirm.
type pendingPub struct {
	tag   uint64
	t     ticket
	alone bool // sent as a suspect, nothing else in flight
}

// takeLocked removes the publish of tag from pending; u.mu is held.
// amqp091-go delivers confirms in tag order, so it is the oldest but for a
// publish that failed locally.
func (u *amqpUpstream) takeLocked(tag uint64) (pendingPub, bool) {
	p := u.pending[u.head:]
	i := 0
	if len(p) == 0 || p[0].tag != tag {
		i = slices.IndexFunc(p, func(e pendingPub) bool { return e.tag == tag })
		if i < 0 {
			return pendingPub{}, false
		}
	}
	t := p[i]
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

func dialAMQP(ctx context.Context, l *link, node string, deliver func(string, *core.Message, func()), log *slog.Logger) (upstream, error) {
	var raw net.Conn // set by Dial, read after DialConfig returned
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
			raw = batchconn.New(c)
			return raw, nil
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
	up := &amqpUpstream{l: l, node: node, log: log, deliver: deliver, conn: conn, raw: raw,
		connClosed: conn.NotifyClose(make(chan *amqp091.Error, 1)), viaOnly: amqp091.Table{ViaHeader: node}}
	up.idle = sync.NewCond(&up.mu)
	if err := up.openPub(); err != nil {
		conn.Close()
		return nil, err
	}
	return up, nil
}

// openPub opens the publishing channel in confirm mode and starts its
// confirmLoop.
func (u *amqpUpstream) openPub() error {
	pub, err := u.conn.Channel()
	if err != nil {
		return fmt.Errorf("bridge: open the publishing channel: %w", err)
	}
	if err := pub.Confirm(false); err != nil {
		pub.Close()
		return fmt.Errorf("bridge: confirm mode: %w", err)
	}
	confirms := pub.NotifyPublish(make(chan amqp091.Confirmation, u.l.Window))
	closes := pub.NotifyClose(make(chan *amqp091.Error, 1))
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.dead { // closed meanwhile
		pub.Close()
		return errClosed
	}
	u.pub, u.pubGone, u.pubDead = pub, make(chan struct{}), false
	go u.confirmLoop(confirms, closes)
	return nil
}

// perMessageRefusal reports whether a channel exception of this code
// refuses the publish that caused it whatever happens, so that it is to
// be found and refused for good rather than sent again: 403
// ACCESS_REFUSED (no write access to the exchange, or, with topic
// authorisation, to the routing key) and 406 PRECONDITION_FAILED (over
// the upstream's max message size, an invalid property). 404 NOT_FOUND is
// not one: every publish of a link goes to the same exchange, so it says
// the exchange is missing, maybe not yet made (see the package doc).
func perMessageRefusal(code int) bool {
	return code == amqp091.AccessRefused || code == amqp091.PreconditionFailed
}

// confirmLoop calls done for each confirm on one publishing channel; on a
// nack the message is reported failed so it is sent again. When the
// channel ends it settles what was unconfirmed (channelGone).
func (u *amqpUpstream) confirmLoop(confirms <-chan amqp091.Confirmation, closes <-chan *amqp091.Error) {
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
		p, found := u.takeLocked(c.DeliveryTag)
		if found && p.alone {
			u.suspects--
		}
		if u.head == len(u.pending) {
			u.idle.Broadcast()
		}
		u.mu.Unlock()
		if !found {
			continue
		}
		if c.Ack {
			f.done(p.t, nil)
		} else {
			f.done(p.t, errors.New("bridge: upstream nacked a message"))
		}
	}
	f.flush()
	// amqp091-go hands a channel's exception to its NotifyClose listeners,
	// and a connection's to its own before its channels', before it closes
	// the confirms: both are there to read if they happened.
	var chErr, connErr *amqp091.Error
	select {
	case chErr = <-closes:
	default:
	}
	select {
	case connErr = <-u.connClosed:
	default:
	}
	u.channelGone(chErr, connErr)
}

// channelGone settles the publishes of the channel just closed. After a
// per-message refusal with the connection standing, the publish that was
// alone in flight is the culprit, refused for good; with several in
// flight, all are sent again, one at a time (suspects), on the channel
// reopen makes. Otherwise they are sent again after a reconnect.
func (u *amqpUpstream) channelGone(chErr, connErr *amqp091.Error) {
	u.mu.Lock()
	if u.pubDead {
		u.mu.Unlock()
		return
	}
	u.pubDead = true
	pending := u.pending[u.head:]
	u.pending, u.head = nil, 0
	refusal := chErr != nil && connErr == nil && !u.dead && !u.conn.IsClosed() && perMessageRefusal(chErr.Code)
	var culprit error
	switch {
	case connErr != nil:
		u.cause = connErr
	case refusal && len(pending) == 1 && pending[0].alone:
		culprit = fmt.Errorf("%w: channel.close %d %s", errRefused, chErr.Code, chErr.Reason)
		u.suspects = 0
		u.canReopen = true
	case refusal && len(pending) > 0:
		u.suspects = len(pending)
		u.canReopen = true
	case chErr != nil:
		u.cause = fmt.Errorf("the upstream closed the publishing channel: %w", chErr)
	}
	close(u.pubGone)
	u.idle.Broadcast()
	u.mu.Unlock()
	var f flusher
	for i, p := range pending {
		if i == 0 && culprit != nil {
			// One WARN per connection, then one each time the count
			// doubles: an upstream that denies a topic refuses every
			// message on it.
			u.refused++
			if n := u.refused; n&(n-1) == 0 {
				u.log.Warn("bridge: upstream refused messages for good; acked here, not sent again", "refused", n, "err", culprit)
			}
			f.done(p.t, culprit)
			continue
		}
		f.done(p.t, errLost)
	}
	f.flush()
	if refusal && culprit == nil && len(pending) > 0 {
		u.log.Debug("bridge: the upstream closed the publishing channel over a publish; sending the unconfirmed ones one at a time to find it",
			"unconfirmed", len(pending), "err", chErr)
	}
}

// reopen opens a new publishing channel after a per-message refusal
// closed the last one; false if the connection is lost instead.
func (u *amqpUpstream) reopen() bool {
	u.mu.Lock()
	ok := u.canReopen && !u.dead
	u.canReopen = false
	u.mu.Unlock()
	if !ok {
		return false
	}
	if err := u.openPub(); err != nil {
		u.mu.Lock()
		if u.cause == nil {
			u.cause = err
		}
		u.mu.Unlock()
		return false
	}
	return true
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
	if !u.pubDead {
		u.pubDead = true
		close(u.pubGone)
	}
	u.idle.Broadcast()
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
	// Finding a refused publish: a suspect goes alone, once the one
	// before it is confirmed.
	for u.suspects > 0 && !u.pubDead && u.head < len(u.pending) {
		u.idle.Wait()
	}
	alone := u.suspects > 0
	if u.pubDead {
		u.mu.Unlock()
		t.done(errLost)
		return
	}
	ch := u.pub
	tag := ch.GetNextPublishSeqNo()
	u.pending = append(u.pending, pendingPub{tag, t, alone})
	err := ch.PublishWithContext(context.Background(), u.l.Exchange, topic.RoutingKey(name), false, false, pub)
	if err != nil {
		u.takeLocked(tag)
	}
	u.mu.Unlock()
	if err != nil {
		t.done(err)
		if !ch.IsClosed() {
			// Not the channel's end, which confirmLoop handles: a
			// failure here that would come again on this connection.
			u.conn.Close()
		}
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

// lost is closed when the publishing channel is lost, alone (reopen may
// then open another) or with the connection.
func (u *amqpUpstream) lost() <-chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.pubGone
}

func (u *amqpUpstream) lostCause() error {
	<-u.lost()
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cause
}

// closeGrace is how long close lets the upstream take what is being
// written and answer connection.close.
const closeGrace = 2 * time.Second

func (u *amqpUpstream) close() {
	// An upstream that stopped reading (its memory alarm: connection.blocked)
	// leaves a publish stuck in a write, holding the locks Close needs:
	// the deadline ends that write, and Close with it.
	u.raw.SetDeadline(time.Now().Add(closeGrace))
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
