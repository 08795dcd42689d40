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

// Status is a link's state, for the log, the metrics, the management API
// and the CLI. The counters count since the broker started.
type Status struct {
	Name      string
	Upstream  string // the URL without credentials
	Connected bool
	// Paused: an operator paused the link (Manager.Pause); it stays
	// disconnected, its outbound messages wait in its queue, until
	// resumed or the broker restarts.
	Paused       bool
	Backlog      int    // messages in the outbound queue, ready or awaiting the upstream's confirm
	BacklogBytes int64  // their body bytes
	Forwarded    uint64 // messages the upstream confirmed
	Received     uint64 // messages taken in from the upstream
	Dropped      uint64 // dropped by a full buffer (overflow drop-oldest)
	LoopsCut     uint64 // messages not forwarded because they had been here
	// Refused counts messages the upstream refused for good (an MQTT 5
	// PUBACK of 0x83, 0x87, 0x90 or 0x99: not authorized, a topic or
	// payload it will never take; a packet over its Maximum Packet Size;
	// an AMQP channel exception 403 or 406 over the message; an MQTT
	// 3.1.1 upstream closing the connection right after it, three times
	// in a row): acked here and logged, not sent again. See the package
	// doc.
	Refused uint64
	// QueueLost counts the times the store-and-forward queue was found
	// deleted (by an administrator) and made again; LostMessages is the
	// ready messages it held when last seen (each second), which went
	// with it.
	QueueLost    uint64
	LostMessages uint64
	// LastError is the latest failure (connect, or connection lost), kept
	// after the link reconnects; LastErrorAt is when it happened.
	LastError   string
	LastErrorAt time.Time
	// ConnectedAt is when the current connection was made; zero while
	// disconnected.
	ConnectedAt time.Time
	// RateIn and RateOut are messages per second received and forwarded
	// over the last few seconds (rateWindow).
	RateIn, RateOut float64
}

// State is a one-word summary: "running", "connecting" or "paused".
func (s Status) State() string {
	switch {
	case s.Paused:
		return "paused"
	case s.Connected:
		return "running"
	}
	return "connecting"
}

// Status returns every link's status, in configuration order. It is safe
// to call from any goroutine, and on a nil Manager (no bridges).
func (m *Manager) Status() []Status {
	if m == nil {
		return nil
	}
	out := make([]Status, len(m.links))
	for i, r := range m.links {
		out[i] = r.status()
	}
	return out
}

// ErrNoLink is the error of Pause and Resume for a name no link has.
var ErrNoLink = errors.New("bridge: no such link")

func (m *Manager) link(name string) (*runner, error) {
	if m != nil {
		for _, r := range m.links {
			if r.l.Name == name {
				return r, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNoLink, name)
}

// Pause disconnects a link and keeps it disconnected until Resume:
// outbound messages wait in its store-and-forward queue (within its
// limits), inbound ones at the upstream (a persistent session or a
// queue). Messages awaiting the upstream's confirm go back to the queue,
// to be sent again after Resume. Pausing a paused link does nothing. It
// is not remembered across restarts.
func (m *Manager) Pause(name string) error {
	r, err := m.link(name)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if r.paused {
		r.mu.Unlock()
		return nil
	}
	r.paused = true
	r.resumed = make(chan struct{})
	cancel := r.connCancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.log.Info("bridge paused")
	return nil
}

// Resume lets a paused link connect again, at once. Resuming a link that
// is not paused does nothing.
func (m *Manager) Resume(name string) error {
	r, err := m.link(name)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if !r.paused {
		r.mu.Unlock()
		return nil
	}
	r.paused = false
	close(r.resumed)
	r.mu.Unlock()
	r.log.Info("bridge resumed")
	return nil
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
	m   *Manager
	l   *link
	log *slog.Logger
	// queue is the store-and-forward queue, nil without outbound rules;
	// remade (under qmu) if it is deleted.
	queue atomic.Pointer[core.Queue]
	qmu   sync.Mutex

	connected        atomic.Bool
	forwarded, recvd atomic.Uint64
	loops            atomic.Uint64
	refused          atomic.Uint64
	// probe3 finds a message an MQTT 3.1.1 upstream refuses by closing
	// the connection, across connections.
	probe3 closeProbe
	// flying counts publishes not yet settled locally. The next
	// connection waits for them: one requeued late would go out after
	// messages behind it.
	flying      atomic.Int64
	queueLost   atomic.Uint64
	lostMsgs    atomic.Uint64
	lastBacklog atomic.Int64 // ready messages when last looked at (1 s)

	mu                sync.Mutex
	lastErr           string
	lastErrAt         time.Time
	warned            string // the connect error last logged at WARN; "" after a connection
	connectedAt       time.Time
	lastLogged        Status
	reportedDropCount uint64
	samples           [rateWindow]sample // ring, by second; for RateIn and RateOut
	nsamples          int
	paused            bool
	resumed           chan struct{}      // closed by Resume; made by Pause
	connCancel        context.CancelFunc // ends the current connection attempt (Pause)
}

// rateWindow is how many seconds RateIn and RateOut average over, as
// RabbitMQ's default rate interval (5 s).
const rateWindow = 5

// sample is the counters at one time, for rates.
type sample struct {
	at               time.Time
	forwarded, recvd uint64
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
	r.queue.Store(r.m.vhost.Queue(name))
	return nil
}

// setErr records err as the link's last error and reports whether it is
// new: the first connect failure since the link was last connected, or a
// different one. Those are logged at WARN at once; a retry failing the
// same way again is not, so that an operator sees each problem once,
// without a line per retry.
func (r *runner) setErr(err error) (changed bool) {
	text := err.Error()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastErr, r.lastErrAt = text, time.Now()
	changed = text != r.warned
	r.warned = text
	return changed
}

// sampleRates records the counters for RateIn and RateOut; it runs once a
// second.
func (r *runner) sampleRates(now time.Time) {
	r.mu.Lock()
	r.samples[r.nsamples%len(r.samples)] = sample{at: now, forwarded: r.forwarded.Load(), recvd: r.recvd.Load()}
	r.nsamples++
	r.mu.Unlock()
}

// ratesLocked returns messages per second in and out from the oldest
// sample, at most rateWindow seconds old, to the counters now; r.mu is
// held.
func (r *runner) ratesLocked(now time.Time, recvd, forwarded uint64) (in, out float64) {
	if r.nsamples == 0 {
		return 0, 0
	}
	n := len(r.samples)
	oldest := r.samples[max(r.nsamples-n, 0)%n]
	secs := now.Sub(oldest.at).Seconds()
	if secs <= 0 {
		return 0, 0
	}
	return float64(recvd-oldest.recvd) / secs, float64(forwarded-oldest.forwarded) / secs
}

func (r *runner) status() Status {
	u := *r.l.url
	u.User = nil
	s := Status{
		Name: r.l.Name, Upstream: u.String(), Connected: r.connected.Load(),
		Forwarded: r.forwarded.Load(), Received: r.recvd.Load(), LoopsCut: r.loops.Load(), Refused: r.refused.Load(),
		QueueLost: r.queueLost.Load(), LostMessages: r.lostMsgs.Load(),
	}
	if q := r.queue.Load(); q != nil {
		qs := q.Stats()
		s.Backlog, s.BacklogBytes, s.Dropped = qs.Messages+qs.Unacked, qs.Bytes, qs.Dropped
	}
	r.mu.Lock()
	s.LastError, s.LastErrorAt, s.Paused = r.lastErr, r.lastErrAt, r.paused
	if s.Connected {
		s.ConnectedAt = r.connectedAt
	}
	s.RateIn, s.RateOut = r.ratesLocked(time.Now(), s.Received, s.Forwarded)
	r.mu.Unlock()
	return s
}

// checkDrops logs a warning for every new drop by a full buffer, promptly:
// dropping is the one thing a bridge does to data that must never be
// silent.
func (r *runner) checkDrops() {
	q := r.queue.Load()
	if q == nil {
		return
	}
	if r.m.vhost.Queue(r.queueName()) != q {
		// Deleted while no consumer was there to notice (the link is
		// down): buffer again at once, not at the next connection.
		if err := r.ensureQueue(); err != nil {
			r.log.Error("bridge queue deleted and not made again", "queue", r.queueName(), "err", err)
		}
		return
	}
	qs := q.Stats()
	dropped := qs.Dropped
	r.lastBacklog.Store(int64(qs.Messages))
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
	// Rates and times change on their own: what is logged is a change of
	// the rest.
	s.RateIn, s.RateOut, s.ConnectedAt, s.LastErrorAt = 0, 0, time.Time{}, time.Time{}
	r.mu.Lock()
	changed := s != r.lastLogged
	r.lastLogged = s
	r.mu.Unlock()
	if changed {
		r.log.Info("bridge status", "upstream", s.Upstream, "connected", s.Connected, "backlog", s.Backlog,
			"backlog_bytes", s.BacklogBytes, "forwarded", s.Forwarded, "received", s.Received,
			"dropped", s.Dropped, "loops_cut", s.LoopsCut, "refused", s.Refused, "last_error", s.LastError)
	}
}

// run connects, forwards until the connection is lost, and reconnects
// with backoff, until ctx ends.
func (r *runner) run(ctx context.Context) {
	tick := time.NewTicker(r.m.opts.StatusInterval)
	defer tick.Stop()
	drops := time.NewTicker(time.Second)
	defer drops.Stop()
	r.sampleRates(time.Now())
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-drops.C:
				r.checkDrops()
				r.sampleRates(now)
			case <-tick.C:
				r.logStatus()
			}
		}
	}()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if r.waitResumed(ctx) {
			attempt = 0 // an operator resumed it: connect at once
		}
		cctx, cancel := context.WithCancel(ctx)
		if !r.setConnCancel(cancel) {
			cancel() // paused meanwhile
			continue
		}
		up, err := r.dial(cctx)
		if err != nil {
			cancel()
			if r.isPaused() {
				continue
			}
			if r.setErr(err) {
				r.log.Warn("bridge: cannot connect to the upstream; retrying with backoff", "upstream", r.status().Upstream, "err", err, "attempt", attempt+1)
			} else {
				r.log.Debug("bridge: connect failed", "err", err, "attempt", attempt+1)
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff(attempt, rand.Int64N)):
			}
			continue
		}
		r.mu.Lock()
		r.warned, r.connectedAt = "", time.Now()
		r.mu.Unlock()
		r.connected.Store(true)
		r.log.Info("bridge connected", "upstream", r.status().Upstream)
		r.logStatus()
		connectedAt := time.Now()
		// A pause or a stop closes the connection at once: a publish
		// waiting for room upstream (an MQTT 5 Receive Maximum, an AMQP
		// suspect awaiting its confirm) holds serve, and with it Pause
		// and Close, for as long as the upstream withholds its
		// acknowledgements (a memory alarm: until the keep-alive fails).
		var closeOnce sync.Once
		closeUp := func() { closeOnce.Do(up.close) }
		stopClose := context.AfterFunc(cctx, closeUp)
		err = r.serve(cctx, up)
		if time.Since(connectedAt) >= stableAfter {
			// A connection that held resets the backoff; one that failed
			// at once (an upstream that accepts and drops, a local fault)
			// must not turn into a reconnect storm.
			attempt = 0
		}
		if errors.Is(err, errLost) {
			if cause := up.lostCause(); cause != nil {
				err = fmt.Errorf("%w: %v", errLost, cause)
			}
		}
		// Paused or stopping, rather than lost: asked before cancel,
		// which ends cctx whatever happened.
		stopped := cctx.Err() != nil
		r.connected.Store(false)
		stopClose()
		closeUp()
		r.waitFlying()
		cancel()
		if err != nil && !stopped {
			r.setErr(err)
			r.log.Warn("bridge disconnected", "err", err)
		}
		r.logStatus()
		if stopped {
			continue // no backoff
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff(attempt, rand.Int64N)):
		}
	}
}

// waitResumed waits while the link is paused; it reports whether it
// waited.
func (r *runner) waitResumed(ctx context.Context) bool {
	r.mu.Lock()
	paused, resumed := r.paused, r.resumed
	r.mu.Unlock()
	if !paused {
		return false
	}
	select {
	case <-ctx.Done():
	case <-resumed:
	}
	return true
}

// setConnCancel installs what Pause calls to end the connection about to
// be made; false if the link was paused meanwhile.
func (r *runner) setConnCancel(cancel context.CancelFunc) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.paused {
		return false
	}
	r.connCancel = cancel
	return true
}

func (r *runner) isPaused() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.paused
}

// stableAfter is how long a connection must have lasted for the next
// reconnect to start again from the shortest backoff.
const stableAfter = 10 * time.Second

func (r *runner) dial(ctx context.Context) (upstream, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var deliver func(string, *core.Message, func())
	if len(r.l.in) > 0 {
		deliver = newInbound(r).deliver
	}
	switch r.l.proto {
	case protoAMQP:
		return dialAMQP(dctx, r.l, r.m.opts.Node, deliver, r.log)
	case protoMQTT5:
		return dialMQTT5(dctx, r.l, r.m.opts.Node, deliver, r.log)
	default:
		return dialMQTT3(dctx, r.l, deliver, &r.probe3, r.log)
	}
}

// upstream is a live connection to the upstream broker.
type upstream interface {
	// publish sends msg to the upstream topic; t.done is called exactly
	// once when the upstream confirmed it (nil) or it cannot be (the
	// connection was lost). The goroutine reporting confirms flushes
	// their sink (flusher) before it waits for more, so that a run of
	// them is settled at once.
	publish(topic string, msg *core.Message, qos byte, t ticket)
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

// reopener is an upstream whose publishing side can be lost alone, the
// connection standing (an AMQP channel exception over one publish): after
// forward returned errLost, reopen makes it publish again and reports
// true, or reports false if the connection is lost.
type reopener interface {
	reopen() bool
}

// serve runs both directions on one connection until it is lost.
func (r *runner) serve(ctx context.Context, up upstream) error {
	if len(r.l.in) > 0 {
		if err := up.subscribe(r.l.in); err != nil {
			return err
		}
	}
	if r.queue.Load() == nil {
		select {
		case <-ctx.Done():
			return nil
		case <-up.lost():
			return errors.New("connection lost")
		}
	}
	for {
		err := r.forward(ctx, up)
		if errors.Is(err, errQueueLost) {
			// Keep the upstream connection: the queue is made again at
			// the top of forward.
			continue
		}
		if ro, ok := up.(reopener); ok && errors.Is(err, errLost) {
			// The unconfirmed publishes must be back in the queue
			// before the next forward takes its head.
			r.waitFlying()
			if ro.reopen() {
				continue
			}
		}
		return err
	}
}
