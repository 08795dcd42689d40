package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// ViaHeader lists, comma-separated, the nodes a message has crossed a
// bridge from (an MQTT 5 user property of the same name upstream). A node
// never forwards nor imports a message that lists it, so two brokers
// bridged both ways deliver each message once.
const ViaHeader = "x-ferrymq-via"

// localExchange is where inbound messages are published and outbound
// ones are bound from: the MQTT exchange, so topics mean the same on both
// sides.
const localExchange = "amq.topic"

// Options configure the bridges of a broker.
type Options struct {
	// Node names this broker in ViaHeader; it must differ between bridged
	// brokers.
	Node   string
	VHost  string // local vhost ["/"]
	Logger *slog.Logger
	// StatusInterval is how often each link's status is logged when it
	// changed [30s].
	StatusInterval time.Duration
}

// Manager runs the links of one broker.
type Manager struct {
	broker *core.Broker
	vhost  *core.VHost
	opts   Options
	origin uint64 // Message.Origin of what links publish locally
	links  []*runner
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start validates the links, declares their store-and-forward queues and
// starts them; they connect, and reconnect, on their own.
func Start(b *core.Broker, links []Link, opts Options) (*Manager, error) {
	if opts.Node == "" {
		return nil, errors.New("bridge: the node has no name")
	}
	if strings.Contains(opts.Node, ",") {
		return nil, fmt.Errorf("bridge: node name %q contains a comma", opts.Node)
	}
	if opts.VHost == "" {
		opts.VHost = "/"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StatusInterval == 0 {
		opts.StatusInterval = 30 * time.Second
	}
	v := b.VHost(opts.VHost)
	if v == nil {
		return nil, fmt.Errorf("bridge: no vhost %q", opts.VHost)
	}
	m := &Manager{broker: b, vhost: v, opts: opts, origin: 1<<63 | rand.Uint64()>>1}
	names := map[string]bool{}
	for _, l := range links {
		vl, err := l.validate(opts.Node)
		if err != nil {
			return nil, err
		}
		if names[vl.Name] {
			return nil, fmt.Errorf("bridge %s: defined twice", vl.Name)
		}
		names[vl.Name] = true
		r := &runner{m: m, l: vl, log: opts.Logger.With("bridge", vl.Name)}
		if err := r.declare(); err != nil {
			return nil, err
		}
		m.links = append(m.links, r)
	}
	// A message pushed into this broker by another node's outbound link
	// that already passed through here is a loop: drop it. Without links
	// no message can carry this node's name, and publishes skip the check.
	if len(m.links) > 0 {
		b.AddPublishHook(func(_ string, msg *core.Message) (bool, uint64) {
			return msg.Origin == m.origin || !via(msg, opts.Node), 0
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	for _, r := range m.links {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			r.run(ctx)
		}()
	}
	return m, nil
}

// Close stops every link: unconfirmed outbound messages stay in their
// queues for the next start.
func (m *Manager) Close() {
	if m == nil {
		return
	}
	m.cancel()
	m.wg.Wait()
}

// Status is a link's state, for the log and (later) metrics and the CLI.
type Status struct {
	Name         string
	Upstream     string // the URL without credentials
	Connected    bool
	Backlog      int   // messages waiting in the outbound queue
	BacklogBytes int64 // their body bytes
	Forwarded    uint64
	Received     uint64
	Dropped      uint64 // dropped by a full buffer (overflow drop-oldest)
	LoopsCut     uint64 // messages not forwarded because they had been here
	LastError    string
}

// Status returns every link's status.
func (m *Manager) Status() []Status {
	out := make([]Status, len(m.links))
	for i, r := range m.links {
		out[i] = r.status()
	}
	return out
}

// via reports whether msg has crossed a bridge from node already.
func via(msg *core.Message, node string) bool {
	v, _ := msg.Properties.Headers[ViaHeader].(string)
	for v != "" {
		var n string
		n, v, _ = strings.Cut(v, ",")
		if n == node {
			return true
		}
	}
	return false
}

// withVia returns a copy of msg's headers with node added to ViaHeader.
func withVia(h core.Table, node string) core.Table {
	out := make(core.Table, len(h)+1)
	for k, v := range h {
		out[k] = v
	}
	if v, _ := h[ViaHeader].(string); v != "" {
		out[ViaHeader] = v + "," + node
	} else {
		out[ViaHeader] = node
	}
	return out
}

// runner is one link at run time.
type runner struct {
	m     *Manager
	l     *link
	log   *slog.Logger
	queue *core.Queue // the store-and-forward queue; nil without outbound rules

	connected         atomic.Bool
	forwarded, recvd  atomic.Uint64
	loops             atomic.Uint64
	mu                sync.Mutex
	lastErr           string
	lastLogged        Status
	reportedDropCount uint64
}

// queueName is the link's store-and-forward queue, visible like any queue.
func (r *runner) queueName() string { return "bridge." + r.l.Name }

// declare makes the outbound queue: durable, bounded by the link's budget,
// bound to the local topics of the outbound rules.
func (r *runner) declare() error {
	if len(r.l.out) == 0 {
		return nil
	}
	overflow := "reject-publish"
	if r.l.Overflow == "drop-oldest" {
		overflow = "drop-head"
	}
	args := core.Table{"x-max-length": r.l.MaxMessages, "x-max-length-bytes": r.l.MaxBytes, "x-overflow": overflow}
	name := r.queueName()
	if _, err := r.m.vhost.DeclareQueue(core.QueueDecl{Name: name, Durable: true, Arguments: args}); err != nil {
		var ce *core.Error
		if !errors.As(err, &ce) || ce.Code != core.CodePreconditionFailed {
			return fmt.Errorf("bridge %s: queue %s: %w", r.l.Name, name, err)
		}
		// The budget changed since the queue was made: remake it with
		// its messages would lose them, so keep it and say so.
		r.log.Warn("bridge queue keeps its earlier limits; delete it to apply new ones", "queue", name, "err", err)
	}
	for _, t := range r.l.out {
		if err := r.m.vhost.BindQueue(name, localExchange, topic.BindingKey(t.LocalPrefix+t.Pattern), nil, 0); err != nil {
			return fmt.Errorf("bridge %s: bind %s: %w", r.l.Name, t.Pattern, err)
		}
	}
	r.queue = r.m.vhost.Queue(name)
	return nil
}

func (r *runner) setErr(err error) {
	r.mu.Lock()
	r.lastErr = err.Error()
	r.mu.Unlock()
}

func (r *runner) status() Status {
	u := *r.l.url
	u.User = nil
	s := Status{
		Name: r.l.Name, Upstream: u.String(), Connected: r.connected.Load(),
		Forwarded: r.forwarded.Load(), Received: r.recvd.Load(), LoopsCut: r.loops.Load(),
	}
	if r.queue != nil {
		qs := r.queue.Stats()
		s.Backlog, s.BacklogBytes, s.Dropped = qs.Messages+qs.Unacked, qs.Bytes, qs.Dropped
	}
	r.mu.Lock()
	s.LastError = r.lastErr
	r.mu.Unlock()
	return s
}

// checkDrops logs a warning for every new drop by a full buffer, promptly:
// dropping is the one thing a bridge does to data that must never be
// silent.
func (r *runner) checkDrops() {
	if r.queue == nil {
		return
	}
	dropped := r.queue.Stats().Dropped
	r.mu.Lock()
	n := dropped - r.reportedDropCount
	r.reportedDropCount = dropped
	r.mu.Unlock()
	if n > 0 {
		r.log.Warn("bridge buffer full: oldest messages dropped", "dropped", n, "total_dropped", dropped)
	}
}

// logStatus logs the status if it changed.
func (r *runner) logStatus() {
	s := r.status()
	r.mu.Lock()
	changed := s != r.lastLogged
	r.lastLogged = s
	r.mu.Unlock()
	if changed {
		r.log.Info("bridge status", "upstream", s.Upstream, "connected", s.Connected, "backlog", s.Backlog,
			"backlog_bytes", s.BacklogBytes, "forwarded", s.Forwarded, "received", s.Received,
			"dropped", s.Dropped, "loops_cut", s.LoopsCut, "last_error", s.LastError)
	}
}

// run connects, forwards until the connection is lost, and reconnects
// with backoff, until ctx ends.
func (r *runner) run(ctx context.Context) {
	tick := time.NewTicker(r.m.opts.StatusInterval)
	defer tick.Stop()
	drops := time.NewTicker(time.Second)
	defer drops.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-drops.C:
				r.checkDrops()
			case <-tick.C:
				r.logStatus()
			}
		}
	}()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		up, err := r.dial(ctx)
		if err != nil {
			r.setErr(err)
			r.log.Debug("bridge: connect failed", "err", err, "attempt", attempt)
			select {
			case <-ctx.Done():
			case <-time.After(backoff(attempt, rand.Int64N)):
			}
			continue
		}
		attempt = -1
		r.connected.Store(true)
		r.log.Info("bridge connected", "upstream", r.status().Upstream)
		r.logStatus()
		err = r.serve(ctx, up)
		if errors.Is(err, errLost) {
			if cause := up.lostCause(); cause != nil {
				err = fmt.Errorf("%w: %v", errLost, cause)
			}
		}
		r.connected.Store(false)
		up.close()
		if err != nil && ctx.Err() == nil {
			r.setErr(err)
			r.log.Warn("bridge disconnected", "err", err)
		}
		r.logStatus()
	}
}

func (r *runner) dial(ctx context.Context) (upstream, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var deliver func(string, *core.Message, func())
	if len(r.l.in) > 0 {
		deliver = newInbound(r).deliver
	}
	switch r.l.proto {
	case protoAMQP:
		return dialAMQP(dctx, r.l, r.m.opts.Node, deliver)
	case protoMQTT5:
		return dialMQTT5(dctx, r.l, r.m.opts.Node, deliver, r.log)
	default:
		return dialMQTT3(dctx, r.l, deliver)
	}
}

// upstream is a live connection to the upstream broker.
type upstream interface {
	// publish sends msg to the upstream topic; done is called exactly
	// once, in publish order, when the upstream confirmed it (nil) or it
	// cannot be (the connection was lost).
	publish(topic string, msg *core.Message, qos byte, done func(error))
	// subscribe starts the inbound side. The deliver function given at
	// dial time is called for each message in order, and its ack must be
	// called, in order, once the message is durable here.
	subscribe(rules []Topic) error
	// lost is closed when the connection fails; lostCause then says why
	// (nil if unknown).
	lost() <-chan struct{}
	lostCause() error
	close()
}

// serve runs both directions on one connection until it is lost.
func (r *runner) serve(ctx context.Context, up upstream) error {
	if len(r.l.in) > 0 {
		if err := up.subscribe(r.l.in); err != nil {
			return err
		}
	}
	if r.queue == nil {
		select {
		case <-ctx.Done():
			return nil
		case <-up.lost():
			return errors.New("connection lost")
		}
	}
	return r.forward(ctx, up)
}
