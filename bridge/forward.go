package bridge

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// windowBytes bounds the bodies a link holds between the queue and the
// upstream's confirm, so a window of large messages cannot take the
// broker's memory: a link may still have one message over it in flight.
const windowBytes = 64 << 20

// outSink hands the store-and-forward queue's deliveries to the forwarding
// loop. The consumer's prefetch equals the channel's capacity, so a send
// never finds it full; past windowBytes in flight it refuses, and the
// queue holds its deliveries until settle resumes the consumer.
type outSink struct {
	ch chan core.Delivery
	// gone is closed when the queue is deleted under the consumer (an
	// administrator's queue.delete): the link then remakes it.
	gone     chan struct{}
	goneOnce sync.Once

	mu      sync.Mutex
	bytes   int // bodies delivered and not yet settled
	refused bool
	cons    *core.Consumer
}

func (s *outSink) Deliver(d core.Delivery) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bytes >= windowBytes {
		s.refused = true
		return false
	}
	select {
	case s.ch <- d:
		s.bytes += len(d.Msg.Body)
		return true
	default:
		return false
	}
}

// settle acks or requeues d, and resumes deliveries the window refused.
func (s *outSink) settle(d core.Delivery, how core.Outcome) {
	d.Queue.Settle(d.Consumer, []uint64{d.Seq}, how)
	s.mu.Lock()
	s.bytes -= len(d.Msg.Body)
	resume := s.refused && s.bytes < windowBytes
	if resume {
		s.refused = false
	}
	s.mu.Unlock()
	if resume {
		d.Consumer.Resume()
	}
}

// Cancelled implements core.DeliverySink: core calls it only when the
// queue was deleted.
func (s *outSink) Cancelled(*core.Consumer) { s.goneOnce.Do(func() { close(s.gone) }) }

// errLost is what done reports for messages the upstream never confirmed.
var errLost = errors.New("bridge: connection to the upstream lost")

// errQueueLost is what forward returns when the store-and-forward queue
// was deleted under it: the runner remakes the queue and goes on.
var errQueueLost = errors.New("bridge: store-and-forward queue deleted")

// errClosed is the cause of a connection the bridge closed itself.
var errClosed = errors.New("bridge: link stopped")

// forward sends the store-and-forward queue upstream, at most Window
// messages awaiting confirmation, and acks each locally only once the
// upstream confirmed it. When the connection fails, what was not
// confirmed goes back to the queue at its original place, so the next
// connection sends it again, in order: at least once, order kept.
func (r *runner) forward(ctx context.Context, up upstream) error {
	if err := r.ensureQueue(); err != nil {
		return err
	}
	ds := make(chan core.Delivery, r.l.Window)
	sink := &outSink{ch: ds, gone: make(chan struct{})}
	cons, err := r.queue.Load().Consume(core.ConsumeOptions{Tag: "bridge-" + r.l.Name, Prefetch: uint32(r.l.Window), Protocol: "bridge"}, sink)
	if err != nil {
		return err
	}
	requeue := func(d core.Delivery) { sink.settle(d, core.Requeue) }
	ack := func(d core.Delivery) { sink.settle(d, core.Ack) }
	defer func() {
		cons.Cancel()
		for {
			select {
			case d := <-ds:
				requeue(d)
			default:
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-up.lost():
			return errLost
		case <-sink.gone:
			// What is in flight still completes upstream; its settles
			// are no-ops on the deleted queue.
			return errQueueLost
		case d := <-ds:
			select {
			case <-up.lost():
				requeue(d)
				return errLost
			default:
			}
			m := d.Msg
			if via(m, r.m.opts.Node) {
				r.loops.Add(1)
				ack(d)
				continue
			}
			remote, qos, ok := remoteTopic(r.l.out, topic.Name(m.RoutingKey))
			if !ok {
				ack(d)
				continue
			}
			r.flying.Add(1)
			up.publish(remote, m, min(qos, topic.MessageQoS(m)), func(err error) {
				defer r.flying.Add(-1)
				if err != nil {
					requeue(d)
					return
				}
				r.forwarded.Add(1)
				ack(d)
			})
		}
	}
}

// remoteTopic maps a local topic by the first outbound rule it matches.
func remoteTopic(rules []Topic, local string) (string, byte, bool) {
	for _, t := range rules {
		if topic.Match(t.LocalPrefix+t.Pattern, local) {
			return t.RemotePrefix + strings.TrimPrefix(local, t.LocalPrefix), t.qos(), true
		}
	}
	return "", 0, false
}

// localTopic maps an upstream topic by the first inbound rule it matches;
// a topic no rule matches (an AMQP upstream queue's) keeps its name.
func localTopic(rules []Topic, remote string) string {
	for _, t := range rules {
		if topic.Match(t.RemotePrefix+t.Pattern, remote) {
			return t.LocalPrefix + strings.TrimPrefix(remote, t.RemotePrefix)
		}
	}
	return remote
}

// inbound publishes an upstream's messages locally and acks each upstream
// once it is durable here (in order, as the clients require), so a crash
// or a full disk costs a redelivery, never a message.
type inbound struct {
	r    *runner
	acks *core.SyncQueue[func()]
}

func newInbound(r *runner) *inbound {
	in := &inbound{r: r}
	in.acks = core.NewSyncQueue(r.m.broker, func(acks []func(), err error, _ bool) {
		if err != nil {
			// Not acked: the upstream redelivers them after a reconnect.
			r.log.Error("bridge: inbound messages not stored; the upstream will redeliver them", "err", err)
			return
		}
		for _, ack := range acks {
			ack()
		}
	})
	return in
}

func (in *inbound) deliver(name string, msg *core.Message, ack func()) {
	r := in.r
	if via(msg, r.m.opts.Node) {
		r.loops.Add(1)
		in.acks.Add(0, ack)
		return
	}
	msg.Exchange = localExchange
	msg.RoutingKey = topic.RoutingKey(localTopic(r.l.in, name))
	msg.Origin = r.m.origin
	msg.Properties.Headers = withVia(msg.Properties.Headers, r.m.opts.Node)
	msg.Properties.Flags |= core.FlagHeaders
	res, err := r.m.vhost.Publish(msg)
	if err != nil {
		r.log.Warn("bridge: inbound message not routed", "topic", name, "err", err)
	}
	r.recvd.Add(1)
	in.acks.Add(res.Pos, ack)
}
