package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// config is one invocation's settings, shared by every run it makes.
type config struct {
	amqpURL     string
	mqttURL     string
	amqpsURL    string      // the TLS scenarios' AMQP URL; empty: skipped
	mqttsURL    string      // the TLS scenarios' MQTT URL (ssl://); empty: skipped
	httpURL     string      // the management API (http://guest:guest@host:port); empty: its scenario is skipped
	tlsConfig   *tls.Config // client side of the TLS scenarios
	mqttVersion int         // 3 (3.1.1, paho.mqtt.golang) or 5 (paho.golang)
	duration    time.Duration
	messages    int64 // per run, over all publishers; 0 = run for duration
	size        int   // body bytes; 0 = the scenario's own default
	pid         int
	broker      string
	window      int   // confirms / QoS 1 publishes in flight per publisher
	prefetch    int   // AMQP consumer prefetch
	ackEvery    int   // AMQP consumer acks with multiple=true every n deliveries
	backlog     int64 // publishers pause while this many messages are published but not yet received
	conns       int   // idle-mqtt-conns
	queues      int   // amqp-topology-10k
	drainIdle   time.Duration
	drainSub    string        // bridge-drain-*: "during" or "none"
	edgeBin     string        // bridge-drain-*, chaos-soak: the ferrymq binary run as the edge / broker under test
	killEvery   time.Duration // chaos-soak: mean time between SIGKILLs
	minKills    int           // chaos-soak: kills made within --duration whatever the random waits
	brokerArgs  string        // chaos-soak: extra ferrymq flags (--memory-limit 512MiB)
	maxRSSMiB   int           // chaos-soak: fail when the broker's peak RSS passes this; 0: not checked
	chaosRate   int           // chaos-soak: messages per second per publisher
	plainConns  bool          // no batchConn: to see how much the client's write coalescing matters
	progress    io.Writer     // nil: no progress lines
	progressTTY bool
}

// result is one run, printed as one JSON line.
type result struct {
	Scenario      string  `json:"scenario"`
	Broker        string  `json:"broker"`
	Size          int     `json:"size"`
	Publishers    int     `json:"publishers,omitempty"`
	Consumers     int     `json:"consumers,omitempty"`
	Published     int64   `json:"published"`
	Confirmed     int64   `json:"confirmed"` // acknowledged by the broker: confirms, PUBACKs, or a clean channel close
	Expected      int64   `json:"expected"`  // deliveries expected over all consumers
	Received      int64   `json:"received"`  // distinct deliveries over all consumers
	Lost          int64   `json:"lost"`
	LostConfirmed int64   `json:"lost_confirmed"`
	Dup           int64   `json:"dup"`
	Unexpected    int64   `json:"unexpected,omitempty"`
	MsgPerSec     float64 `json:"msg_per_sec"` // deliveries per second over all consumers
	PubPerSec     float64 `json:"pub_per_sec"`
	P50us         float64 `json:"p50_us"`
	P99us         float64 `json:"p99_us"`
	Seconds       float64 `json:"seconds"`
	RSSKiB        int64   `json:"rss_kib,omitempty"` // broker's peak VmRSS
	RSSEndKiB     int64   `json:"rss_end_kib,omitempty"`
	// mem-transient-flood: the broker's --memory-limit, and how much was
	// queued when connection.blocked came.
	MemLimitMiB   int64   `json:"memory_limit_mib,omitempty"`
	BlockedAtMiB  float64 `json:"blocked_at_mib,omitempty"`
	CPUPct        float64 `json:"cpu_pct,omitempty"` // broker, percent of one core
	ClientCPUPct  float64 `json:"client_cpu_pct"`
	OtherCPUPct   float64 `json:"other_cpu_pct"` // the rest of the machine: other processes competing for the cores
	Conns         int     `json:"conns,omitempty"`
	RSSPerConnKiB float64 `json:"rss_per_conn_kib,omitempty"`
	Opened        int64   `json:"opened,omitempty"`         // idle-mqtt-conns: connections that got their CONNACK
	OpenSeconds   float64 `json:"open_seconds,omitempty"`   // idle-mqtt-conns: time to open them
	RSSBeforeKiB  int64   `json:"rss_before_kib,omitempty"` // idle-mqtt-conns: broker RSS before the first connection; amqp-topology-10k: before the first queue
	BrokerNoFile  int64   `json:"broker_nofile,omitempty"`  // idle-mqtt-conns: the broker's RLIMIT_NOFILE soft limit
	// amqp-topology-10k: the queues and bindings declared, the time to
	// declare and bind them and to delete them, the broker's RSS after the
	// last binding, and its growth per queue (with its bindings).
	Queues         int     `json:"queues,omitempty"`
	Bindings       int     `json:"bindings,omitempty"`
	DeclareSeconds float64 `json:"declare_seconds,omitempty"`
	DeleteSeconds  float64 `json:"delete_seconds,omitempty"`
	RSSTopoKiB     int64   `json:"rss_topology_kib,omitempty"`
	RSSPerQueueKiB float64 `json:"rss_per_queue_kib,omitempty"`
	// mgmt-queues-10k: the size of one /metrics scrape with the queues.
	MetricsBytes int    `json:"metrics_bytes,omitempty"`
	OK           bool   `json:"ok"`
	Error        string `json:"error,omitempty"`
	Warning      string `json:"warning,omitempty"`
}

// newRunID returns a fresh name part for queues, exchanges, topics and
// client ids: letters and digits only, so it survives the MQTT "/" ↔ AMQP
// "." topic mapping.
func newRunID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "fb" + hex.EncodeToString(b[:])
}

// publisher is one publishing client's bookkeeping.
type publisher struct {
	id        uint16
	published atomic.Int64 // messages handed to the client library

	ackMu     sync.Mutex // guards acks when several goroutines acknowledge
	acks      seqSet     // sequence numbers the broker acknowledged
	allAcked  bool       // every published message was accepted (a clean AMQP channel close)
	nacks     atomic.Int64
	confirmed atomic.Int64 // len(acks), readable while running
}

func (p *publisher) ack(seq uint32) {
	p.ackMu.Lock()
	if !p.acks.add(seq) {
		p.confirmed.Add(1)
	}
	p.ackMu.Unlock()
}

// stream is one receiving end - a consumer or a subscriber. Every message of
// every publisher in the run is expected once on every stream. record is
// called by one goroutine at a time.
type stream struct {
	name string
	base time.Time
	seen []seqSet // by publisher id

	dup, unexpected int64
	lat             histogram

	received atomic.Int64 // distinct messages, readable while running
	lastNs   atomic.Int64 // ns since base of the last receipt
}

// record checks one delivered body. latNs < 0 takes the latency from the
// send time in the body; the latency scenarios pass their own, exact one.
func (s *stream) record(body []byte, latNs int64) {
	now := time.Since(s.base)
	seq, pub, sentUs, ok := readHeader(body)
	if !ok || int(pub) >= len(s.seen) {
		s.unexpected++
		return
	}
	if s.seen[pub].add(seq) {
		s.dup++
		return
	}
	if latNs < 0 {
		latNs = int64(uint32(now/time.Microsecond)-sentUs) * 1000
	}
	s.lat.record(uint64(latNs))
	s.received.Add(1)
	s.lastNs.Store(int64(now))
}

// run is one scenario run against one broker.
type run struct {
	cfg      *config
	scenario *scenario
	id       string
	size     int
	base     time.Time
	pubs     []*publisher
	streams  []*stream
	stopPub  atomic.Bool
	closing  atomic.Bool   // measuring is over: connections closing now are not failures
	pubStart time.Duration // since base: when the publishers started
	lossyOK  bool          // unacknowledged messages may be lost (QoS 0): report, do not fail
	progress func() (pub, recv int64)

	mu      sync.Mutex
	errs    []error
	warning []string
}

func newRun(cfg *config, sc *scenario, size int) *run {
	return &run{cfg: cfg, scenario: sc, id: newRunID(), size: size, base: time.Now()}
}

// fail records an error that makes the run fail; the first one is reported.
func (r *run) fail(err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	r.stopPub.Store(true)
}

func (r *run) warn(format string, args ...any) {
	r.mu.Lock()
	r.warning = append(r.warning, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *run) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.errs...)
}

func (r *run) addPublishers(n int) {
	for i := range n {
		r.pubs = append(r.pubs, &publisher{id: uint16(i)})
	}
}

func (r *run) addStream(name string) *stream {
	s := &stream{name: name, base: r.base, seen: make([]seqSet, len(r.pubs))}
	r.streams = append(r.streams, s)
	return s
}

// nowUs is the send-time stamp for a message header.
func (r *run) nowUs() uint32 { return uint32(time.Since(r.base) / time.Microsecond) }

func (r *run) totalPublished() int64 {
	var n int64
	for _, p := range r.pubs {
		n += p.published.Load()
	}
	return n
}

func (r *run) minReceived() int64 {
	m := int64(-1)
	for _, s := range r.streams {
		if n := s.received.Load(); m < 0 || n < m {
			m = n
		}
	}
	return max(m, 0)
}

func (r *run) totalReceived() int64 {
	var n int64
	for _, s := range r.streams {
		n += s.received.Load()
	}
	return n
}

// waitBacklog pauses a publisher while the slowest stream is more than
// cfg.backlog messages behind: a run measures what the broker sustains, and
// an ever-growing queue would only measure its memory.
func (r *run) waitBacklog() {
	for r.totalPublished()-r.minReceived() > r.cfg.backlog && !r.stopPub.Load() {
		time.Sleep(100 * time.Microsecond)
	}
}

// bodies hands out message bodies. With reuse, every call returns the same
// buffer: for clients that copy or write the body before Publish returns.
// Otherwise each call returns a fresh body cut from a 256 KiB slab, so the
// client may keep it until the broker acknowledged it.
type bodies struct {
	size  int
	reuse bool
	buf   []byte
	slab  []byte
}

func newBodies(size int, reuse bool) *bodies {
	b := &bodies{size: size, reuse: reuse}
	if reuse {
		b.buf = make([]byte, size)
	}
	return b
}

func (b *bodies) next() []byte {
	if b.reuse {
		return b.buf
	}
	if len(b.slab) < b.size {
		b.slab = make([]byte, max(256<<10, b.size))
	}
	out := b.slab[:b.size:b.size]
	b.slab = b.slab[b.size:]
	return out
}

// publishLoop publishes p's messages with send until the run stops or, with
// --messages, until p has published its share. send gets each body with its
// header written; it returns an error to stop p.
func (r *run) publishLoop(p *publisher, limit int64, reuse bool, send func(body []byte, seq uint32) error) error {
	src := newBodies(r.size, reuse)
	for seq := uint32(0); ; seq++ {
		if r.stopPub.Load() || (limit > 0 && int64(seq) >= limit) {
			return nil
		}
		if seq&127 == 0 {
			r.waitBacklog()
		}
		b := src.next()
		putHeader(b, seq, p.id, r.nowUs())
		if err := send(b, seq); err != nil {
			return fmt.Errorf("publisher %d: %w", p.id, err)
		}
		p.published.Add(1)
	}
}

// share is publisher i's part of --messages (0 when running for a duration).
func (r *run) share(i int) int64 {
	if r.cfg.messages <= 0 {
		return 0
	}
	n := int64(len(r.pubs))
	s := r.cfg.messages / n
	if int64(i) < r.cfg.messages%n {
		s++
	}
	return s
}

// publishPhase runs every publisher's loop (each goroutine calls body with
// its publisher) until the duration is over, then waits for them all, which
// includes their final confirms.
func (r *run) publishPhase(ctx context.Context, body func(p *publisher) error) time.Duration {
	start := time.Now()
	r.pubStart = start.Sub(r.base)
	if r.cfg.messages <= 0 {
		t := time.AfterFunc(r.cfg.duration, func() { r.stopPub.Store(true) })
		defer t.Stop()
	}
	stopCtx := context.AfterFunc(ctx, func() { r.stopPub.Store(true) })
	defer stopCtx()
	var wg sync.WaitGroup
	for _, p := range r.pubs {
		wg.Go(func() { r.fail(body(p)) })
	}
	wg.Wait()
	return time.Since(start)
}

// drain waits until every stream has every published message, no message
// arrived for cfg.drainIdle, or ctx is done.
func (r *run) drain(ctx context.Context) {
	want := r.totalPublished()
	last, lastAt := int64(-1), time.Now()
	for ctx.Err() == nil {
		if r.minReceived() >= want {
			return
		}
		got := r.totalReceived()
		if got != last {
			last, lastAt = got, time.Now()
		} else if time.Since(lastAt) > r.cfg.drainIdle {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startProgress prints a progress line on cfg.progress every second until
// the returned stop is called.
func (r *run) startProgress() (stop func()) {
	var lastPub, lastRecv int64
	return r.everySecond(func(elapsed, sinceLast time.Duration) string {
		pub, recv := r.totalPublished(), r.totalReceived()
		if r.progress != nil {
			pub, recv = r.progress()
		}
		dt := sinceLast.Seconds()
		line := fmt.Sprintf("ferrybench: %s %s %4.0fs  published %s (%s/s)  received %s (%s/s now, %s/s so far)",
			r.label(), r.cfg.broker, elapsed.Seconds(),
			human(float64(pub)), human(float64(pub-lastPub)/dt),
			human(float64(recv)), human(float64(recv-lastRecv)/dt), human(float64(recv)/elapsed.Seconds()))
		lastPub, lastRecv = pub, recv
		return line
	})
}

// everySecond prints line() on cfg.progress every second until the
// returned stop is called; on a terminal each line overwrites the last,
// and stop clears it. line gets the time since the start and since the
// previous line.
func (r *run) everySecond(line func(elapsed, sinceLast time.Duration) string) (stop func()) {
	if r.cfg.progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		start := time.Now()
		lastAt := start
		for {
			select {
			case <-done:
				if r.cfg.progressTTY {
					fmt.Fprint(r.cfg.progress, "\r\033[K")
				}
				return
			case now := <-t.C:
				l := line(now.Sub(start), now.Sub(lastAt))
				if r.cfg.progressTTY {
					fmt.Fprint(r.cfg.progress, "\r\033[K"+l)
				} else {
					fmt.Fprintln(r.cfg.progress, l)
				}
				lastAt = now
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (r *run) label() string {
	if r.size != r.scenario.size {
		return fmt.Sprintf("%s(%dB)", r.scenario.name, r.size)
	}
	return r.scenario.name
}

// verify fills the delivery fields of res and fails the run when a
// confirmed message is missing.
func (r *run) verify(res *result) {
	res.Publishers = len(r.pubs)
	res.Consumers = len(r.streams)
	var lat histogram
	var lastNs int64
	for _, p := range r.pubs {
		res.Published += p.published.Load()
		if p.allAcked {
			res.Confirmed += p.published.Load()
		} else {
			res.Confirmed += p.acks.n
		}
	}
	for _, s := range r.streams {
		res.Expected += res.Published
		res.Received += s.received.Load()
		res.Dup += s.dup
		res.Unexpected += s.unexpected
		lat.merge(&s.lat)
		lastNs = max(lastNs, s.lastNs.Load())
		var streamLost, pubsLost int64
		var example string
		for _, p := range r.pubs {
			seen := &s.seen[p.id]
			n := p.published.Load()
			res.Lost += seen.missingBelow(n)
			res.Unexpected += seen.countAbove(n)
			var lostAcked int64
			if p.allAcked {
				lostAcked = seen.missingBelow(n)
			} else {
				lostAcked = p.acks.missingIn(seen)
			}
			if lostAcked == 0 {
				continue
			}
			streamLost += lostAcked
			pubsLost++
			if example == "" {
				example = fmt.Sprintf("publisher %d: first missing sequence numbers %v", p.id, seen.firstMissing(n, 5))
			}
		}
		res.LostConfirmed += streamLost
		if streamLost > 0 && !r.lossyOK { // QoS 0 delivery is at most once
			r.fail(fmt.Errorf("%s: %d confirmed messages of %d publishers never arrived (%s)", s.name, streamLost, pubsLost, example))
		}
	}
	res.P50us = lat.quantile(0.50) / 1000
	res.P99us = lat.quantile(0.99) / 1000
	if span := time.Duration(lastNs) - r.pubStart; lastNs > 0 && span > 0 {
		res.MsgPerSec = float64(res.Received) / span.Seconds()
	}
	switch {
	case res.Lost > 0 && r.lossyOK:
		r.warn("%d messages lost (QoS 0 delivery: allowed)", res.Lost)
	case res.Lost > res.LostConfirmed:
		r.warn("%d unconfirmed messages lost", res.Lost-res.LostConfirmed)
	}
	if res.Dup > 0 {
		r.warn("%d duplicate deliveries", res.Dup)
	}
	if res.Unexpected > 0 {
		r.fail(fmt.Errorf("%d deliveries that no publisher of this run sent", res.Unexpected))
	}
	if res.Received == 0 && res.Published > 0 {
		r.fail(errors.New("no message arrived"))
	}
}

// finish fills the outcome fields of res.
func (r *run) finish(res *result) {
	if err := r.failed(); err != nil {
		res.OK = false
		res.Error = strings.ReplaceAll(err.Error(), "\n", "; ")
	} else {
		res.OK = true
	}
	r.mu.Lock()
	res.Warning = strings.Join(r.warning, "; ")
	r.mu.Unlock()
}

// missingIn counts the members of s that other lacks.
func (s *seqSet) missingIn(other *seqSet) int64 {
	var n int64
	for i, w := range s.words {
		var o uint64
		if i < len(other.words) {
			o = other.words[i]
		}
		n += int64(bits.OnesCount64(w &^ o))
	}
	return n
}

// human formats a rate or count: 1234567 → "1.23M".
func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// measure runs the publish phase and the drain, with progress lines, and
// samples the broker (--pid) and this process meanwhile. Afterwards the
// scenario stops its consumers, then runScenario verifies.
func (r *run) measure(ctx context.Context, res *result, body func(p *publisher) error) {
	var broker *sampler
	if r.cfg.pid > 0 {
		broker = startSampler(r.cfg.pid)
	}
	self := startSampler(0)
	sys0, sysAt, _ := systemBusy()
	stop := r.startProgress()
	pubDur := r.publishPhase(ctx, body)
	r.drain(ctx)
	stop()
	r.closing.Store(true)
	res.Seconds = (time.Since(r.base) - r.pubStart).Seconds()
	if pubDur > 0 {
		res.PubPerSec = float64(r.totalPublished()) / pubDur.Seconds()
	}
	_, _, res.ClientCPUPct, _ = self.finish()
	if broker != nil {
		var err error
		res.RSSKiB, res.RSSEndKiB, res.CPUPct, err = broker.finish()
		if err != nil {
			r.warn("reading /proc/%d: %v", r.cfg.pid, err)
		}
	}
	res.OtherCPUPct = otherCPU(busySince(sys0, sysAt), res)
}

// otherCPU is the machine's CPU use minus the broker's (when sampled) and
// this process's.
func otherCPU(total float64, res *result) float64 {
	if total < 0 {
		return 0
	}
	return max(0, total-res.CPUPct-res.ClientCPUPct)
}
