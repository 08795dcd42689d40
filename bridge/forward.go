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

// maxOutQoS caps what a link publishes upstream at QoS 1. The link's
// guarantee is at least once: after a lost connection it sends what was
// not confirmed again, under new packet ids, on a session the upstream
// kept. A QoS 2 publish cut off after its PUBREC leaves its packet id
// held in that session, and a later message given the same id would be
// taken for a resend and never routed [MQTT-4.3.3]: QoS 2 would lose what
// QoS 1 only duplicates.
const maxOutQoS = 1

// outSink hands the store-and-forward queue's deliveries to the forwarding
// loop and settles them once the upstream has answered. The consumer's
// prefetch equals the channel's capacity, so a send never finds it full;
// past windowBytes in flight it refuses, and the queue holds its
// deliveries until a settle resumes the consumer.
//
// The upstream's answers are settled in batches (flush): one
// Queue.Settle, so one lock and one dispatch, per run of answers instead
// of one per message.
type outSink struct {
	ch chan core.Delivery
	// gone is closed when the queue is deleted under the consumer (an
	// administrator's queue.delete): the link then remakes it.
	gone     chan struct{}
	goneOnce sync.Once
	r        *runner // counters; nil in tests

	mu      sync.Mutex
	bytes   int // bodies delivered and not yet settled
	refused bool

	bmu      sync.Mutex  // the batch: answers not yet settled
	q        *core.Queue // of the deliveries published (one consumer's)
	cons     *core.Consumer
	inflight int      // published, no answer yet
	acks     []uint64 // confirmed upstream, or refused for good
	refusedN int      // of acks, those refused for good
	requeues []uint64 // not confirmed: back to the queue, in their place
	batchLen int      // bodies' bytes of acks and requeues

	fmu          sync.Mutex // held by one flush at a time, over its Settle calls
	fAcks, fReqs []uint64   // the flushing batch; guarded by fmu, reused
}

// maxBatch bounds the answers a flush settles at once, so a steady stream
// of confirms does not hold acks back for long.
const maxBatch = 256

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

// settle acks or requeues d at once, and resumes deliveries the window
// refused; for deliveries never published (loops cut, no rule, the link
// going down).
func (s *outSink) settle(d core.Delivery, how core.Outcome) {
	d.Queue.Settle(d.Consumer, []uint64{d.Seq}, how)
	s.release(d.Consumer, len(d.Msg.Body))
}

// release takes n settled bytes off the window and resumes the consumer
// if the window had refused a delivery and now has room.
func (s *outSink) release(c *core.Consumer, n int) {
	s.mu.Lock()
	s.bytes -= n
	resume := s.refused && s.bytes < windowBytes
	if resume {
		s.refused = false
	}
	s.mu.Unlock()
	if resume {
		c.Resume()
	}
}

// ticket names one published delivery to the sink that settles it. It is
// a value: an upstream keeps it with its own record of the publish, so a
// publish costs no closure.
type ticket struct {
	s    *outSink
	seq  uint64
	size int
}

// published records that d is about to be handed to the upstream.
func (s *outSink) published(d core.Delivery) ticket {
	s.bmu.Lock()
	s.q, s.cons = d.Queue, d.Consumer
	s.inflight++
	s.bmu.Unlock()
	if s.r != nil {
		s.r.flying.Add(1)
	}
	return ticket{s: s, seq: d.Seq, size: len(d.Msg.Body)}
}

// done reports the upstream's answer for t: nil when it confirmed the
// message, an errRefused when it never will (the message is acked and
// counted), else the reason it did not (the message goes back to the
// queue in its place). Each ticket is done exactly once, in any order.
// The answer is settled at the next flush, which comes by itself when
// nothing else is in flight or the batch is full; an upstream calls
// flush before it waits for more answers.
func (t ticket) done(err error) {
	s := t.s
	s.bmu.Lock()
	switch {
	case err == nil:
		s.acks = append(s.acks, t.seq)
	case errors.Is(err, errRefused):
		s.acks = append(s.acks, t.seq)
		s.refusedN++
	default:
		s.requeues = append(s.requeues, t.seq)
	}
	s.batchLen += t.size
	s.inflight--
	now := s.inflight == 0 || len(s.acks)+len(s.requeues) >= maxBatch
	s.bmu.Unlock()
	if now {
		s.flush()
	}
}

// flush settles the answers reported so far: one Queue.Settle for the
// acks, one for the requeues (core puts requeued messages back in their
// order whatever order they come in). The runner's flying count drops
// only once they are settled, so the next connection never sends a
// message before one older that was requeued late.
func (s *outSink) flush() {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.bmu.Lock()
	if len(s.acks)+len(s.requeues) == 0 {
		s.bmu.Unlock()
		return
	}
	q, cons := s.q, s.cons
	acks, reqs, n, refused := s.acks, s.requeues, s.batchLen, s.refusedN
	s.acks, s.requeues, s.batchLen, s.refusedN = s.fAcks[:0], s.fReqs[:0], 0, 0
	s.bmu.Unlock()
	if len(acks) > 0 {
		q.Settle(cons, acks, core.Ack)
	}
	if len(reqs) > 0 {
		q.Settle(cons, reqs, core.Requeue)
	}
	if s.r != nil {
		s.r.forwarded.Add(uint64(len(acks) - refused))
		s.r.refused.Add(uint64(refused))
		s.r.flying.Add(-int64(len(acks) + len(reqs)))
	}
	s.fAcks, s.fReqs = acks, reqs
	s.release(cons, n)
}

// flusher is an upstream's confirming goroutine's note of the sink it
// last reported to: it flushes that sink before waiting for more answers,
// and when the answers move on to another sink (forward restarted after
// its queue was deleted).
type flusher struct{ s *outSink }

func (f *flusher) done(t ticket, err error) {
	if f.s != t.s {
		f.flush()
		f.s = t.s
	}
	t.done(err)
}

func (f *flusher) flush() {
	if f.s != nil {
		f.s.flush()
		f.s = nil
	}
}

// Cancelled implements core.DeliverySink: core calls it only when the
// queue was deleted.
func (s *outSink) Cancelled(*core.Consumer) { s.goneOnce.Do(func() { close(s.gone) }) }

// errRefused is wrapped by an upstream's answer that refuses a message
// for good: sent again it would be refused again, and would hold back
// every message behind it on every reconnect. The link acks it here,
// counts it (Status.Refused) and logs it, as Mosquitto's bridge drops a
// publish its remote refuses.
var errRefused = errors.New("bridge: upstream refused the message for good")

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
	sink := &outSink{ch: ds, gone: make(chan struct{}), r: r}
	cons, err := r.queue.Load().Consume(core.ConsumeOptions{Tag: "bridge-" + r.l.Name, Prefetch: uint32(r.l.Window), Protocol: "bridge"}, sink)
	if err != nil {
		return err
	}
	defer func() {
		cons.Cancel()
		for {
			select {
			case d := <-ds:
				sink.settle(d, core.Requeue)
			default:
				return
			}
		}
	}()
	var rt routeCache
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
				sink.settle(d, core.Requeue)
				return errLost
			default:
			}
			m := d.Msg
			if via(m, r.m.opts.Node) {
				r.loops.Add(1)
				sink.settle(d, core.Ack)
				continue
			}
			remote, qos, ok := rt.lookup(r.l.out, m.RoutingKey)
			if !ok {
				sink.settle(d, core.Ack)
				continue
			}
			up.publish(remote, m, min(qos, topic.MessageQoS(m), maxOutQoS), sink.published(d))
		}
	}
}

// routeCache remembers the last routing key forward mapped: a backlog is
// mostly runs of one topic, and mapping costs a conversion and a match.
type routeCache struct {
	key, remote string
	qos         byte
	ok, valid   bool
}

func (c *routeCache) lookup(rules []Topic, key string) (string, byte, bool) {
	if !c.valid || c.key != key {
		c.key, c.valid = key, true
		c.remote, c.qos, c.ok = remoteTopic(rules, topic.Name(key))
	}
	return c.remote, c.qos, c.ok
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
