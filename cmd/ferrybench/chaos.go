package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pahomqtt "github.com/eclipse/paho.mqtt.golang"
	amqp "github.com/rabbitmq/amqp091-go"
)

// chaosSoak is issue 15's chaos soak: ferrybench starts a ferrymq of its
// own (--edge-bin, with --broker-args) and runs mixed load against it for
// --duration while killing it with SIGKILL at random intervals (mean
// --kill-every) and starting it again on the same data directory and
// ports:
//
//   - MQTT QoS 1 and QoS 2 publishers, each into a persistent-session
//     subscriber of the same QoS (the QoS 1 one slow);
//   - an AMQP publisher with confirms (persistent messages, a durable
//     queue) and a slow AMQP consumer acking each message;
//   - an MQTT QoS 1 publisher whose topic a bridge link forwards to an
//     upstream ferrymq (never killed) through a proxy that cuts the uplink
//     every few seconds, and a subscriber there.
//
// Every client reconnects on its own and publishers send again what was
// not acknowledged, in order. At the end it checks, per stream: every
// acknowledged message arrived (duplicates are allowed: at least once), the
// first arrivals came in publish order, and the broker's peak RSS stayed
// under --max-rss (when set).
func chaosSoak(ctx context.Context, r *run, res *result) error {
	bin := r.cfg.edgeBin
	dir, err := os.MkdirTemp("", "ferrybench-chaos-")
	if err != nil {
		return err
	}
	failed := true
	defer func() {
		if failed {
			r.warn("broker logs and data kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	c := &chaos{r: r, dir: dir, bin: bin, rate: r.cfg.chaosRate}

	if err := os.Mkdir(filepath.Join(dir, "up"), 0o755); err != nil {
		return err
	}
	up, err := startFerrymq(ctx, bin, filepath.Join(dir, "up"), "--node-name", "chaos-up", "--http-listen", "")
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	defer up.stop(10 * time.Second)
	upMQTT := strings.TrimPrefix(up.mqttURL, "tcp://")
	proxy, err := newFlapProxy(upMQTT)
	if err != nil {
		return err
	}
	defer proxy.close()

	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	c.amqpAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	c.mqttAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])
	c.args = []string{"--node-name", "chaos", "--http-listen", "",
		"--amqp-listen", c.amqpAddr, "--mqtt-listen", c.mqttAddr, "--data-dir", filepath.Join(dir, "data"),
		"--bridge-url", "mqtt://guest:guest@" + proxy.addr() + "/", "--bridge-topic", "chaos/bridge/#"}
	c.args = append(c.args, strings.Fields(r.cfg.brokerArgs)...)
	if err := c.start(ctx); err != nil {
		return err
	}
	defer func() { c.broker.Load().stop(10 * time.Second) }()

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	goRun := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	id := r.id
	streams := []*seqTracker{
		newSeqTracker("mqtt-qos1 (slow subscriber)"), newSeqTracker("mqtt-qos2"),
		newSeqTracker("amqp-confirms (slow consumer)"), newSeqTracker("bridge (flapping uplink)"),
	}
	q1, q2, aq, br := streams[0], streams[1], streams[2], streams[3]
	// Subscribers first, so that their sessions and queues exist before
	// anything is published.
	ready := make(chan struct{}, 4)
	goRun(func() {
		c.mqttSubscribe(cctx, c.addr, id+"-sub1", "chaos/"+id+"/q1", 1, time.Millisecond, q1, ready)
	})
	goRun(func() { c.mqttSubscribe(cctx, c.addr, id+"-sub2", "chaos/"+id+"/q2", 2, 0, q2, ready) })
	goRun(func() {
		c.mqttSubscribe(cctx, func() string { return upMQTT }, id+"-upsub", "chaos/bridge/"+id, 1, 0, br, ready)
	})
	goRun(func() { c.amqpConsume(cctx, "chaos-"+id, time.Millisecond, aq, ready) })
	for range 4 {
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			return errors.New("subscribers not ready within 30 s")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var pubs sync.WaitGroup
	goPub := func(f func()) {
		pubs.Add(1)
		go func() { defer pubs.Done(); f() }()
	}
	pctx, stopPubs := context.WithCancel(cctx)
	defer stopPubs()
	goPub(func() { c.mqttPublish(pctx, cctx, id+"-pub1", "chaos/"+id+"/q1", 1, q1) })
	goPub(func() { c.mqttPublish(pctx, cctx, id+"-pub2", "chaos/"+id+"/q2", 2, q2) })
	goPub(func() { c.mqttPublish(pctx, cctx, id+"-pubb", "chaos/bridge/"+id, 1, br) })
	goPub(func() { c.amqpPublish(pctx, cctx, "chaos-"+id, aq) })
	go proxy.flap(cctx)

	// Kill at random intervals until the soak's end.
	start := time.Now()
	end := start.Add(r.cfg.duration)
	kills := 0
	progress := r.everySecond(func(elapsed, _ time.Duration) string {
		var parts []string
		for _, s := range streams {
			parts = append(parts, s.summary())
		}
		return fmt.Sprintf("%s: %d kills, %d flaps; %s", elapsed.Round(time.Second), kills, proxy.flaps.Load(), strings.Join(parts, "; "))
	})
	for {
		wait := time.Duration((0.5 + rand.Float64()) * float64(r.cfg.killEvery))
		if need := r.cfg.minKills - kills; need > 0 {
			// Random waits and slow restarts may leave too little time
			// for the kills asked for: the rest are spread over what is
			// left, with a share after the last one for its restart.
			wait = min(wait, time.Until(end)/time.Duration(need+1))
		}
		if time.Now().Add(wait).After(end) {
			break
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			progress()
			return ctx.Err()
		}
		if err := c.kill(); err != nil {
			progress()
			return err
		}
		kills++
		if err := c.start(ctx); err != nil {
			progress()
			return fmt.Errorf("restart after kill %d: %w", kills, err)
		}
	}
	select {
	case <-time.After(time.Until(end)):
	case <-ctx.Done():
	}
	soak := time.Since(start)
	// Publishers stop and finish their windows; then every acknowledged
	// message must arrive.
	stopPubs()
	pubs.Wait()
	drainErr := waitTrackers(ctx, streams, r.cfg.drainIdle+60*time.Second)
	if drainErr != nil {
		// Stuck in a queue, or gone? Ask the broker.
		var left []string
		for _, q := range []string{"mqtt-subscription-" + id + "-sub1qos1", "mqtt-subscription-" + id + "-sub2qos1", "chaos-" + id} {
			if conn, ch, err := c.amqpChannel(""); err == nil {
				if qi, err := ch.QueueDeclarePassive(q, true, false, false, false, nil); err == nil {
					left = append(left, fmt.Sprintf("%s: %d ready, %d consumers", q, qi.Messages, qi.Consumers))
				} else {
					left = append(left, fmt.Sprintf("%s: %v", q, err))
				}
				conn.Close()
			}
		}
		drainErr = fmt.Errorf("%w (%s)", drainErr, strings.Join(left, "; "))
	}
	progress()
	cancel()
	wg.Wait()
	proxy.close()

	c.samplePeak()
	peak := c.peakKiB.Load()
	res.Publishers, res.Consumers = 4, 4
	res.Seconds = soak.Seconds()
	res.RSSKiB = peak
	var problems []string
	for _, s := range streams {
		st := s.stats()
		res.Published += st.sent
		res.Confirmed += st.acked
		res.Expected += st.acked
		res.Received += st.got
		res.Dup += st.dup
		res.Lost += st.lost
		res.LostConfirmed += st.lost
		if st.lost > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d acknowledged messages lost (first %d)", s.name, st.lost, st.firstLost))
		}
		if st.disorder > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d messages out of order (%s)", s.name, st.disorder, st.firstDisorder))
		}
		if st.acked == 0 {
			problems = append(problems, s.name+": nothing was acknowledged")
		}
	}
	res.MsgPerSec = float64(res.Received) / soak.Seconds()
	r.warn("soak %s, %d SIGKILLs survived, %d uplink flaps, broker peak RSS %.0f MiB", soak.Round(time.Second), kills, proxy.flaps.Load(), float64(peak)/1024)
	if lim := r.cfg.maxRSSMiB; lim > 0 && peak > int64(lim)*1024 {
		problems = append(problems, fmt.Sprintf("broker peak RSS %.0f MiB over --max-rss %d MiB", float64(peak)/1024, lim))
	}
	if drainErr != nil {
		problems = append(problems, drainErr.Error())
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	failed = false
	return nil
}

// chaos is the broker under test across its restarts.
type chaos struct {
	r        *run
	dir, bin string
	args     []string
	rate     int // messages per second per publisher
	amqpAddr string
	mqttAddr string
	broker   atomic.Pointer[brokerProc]
	sampler  *sampler
	starts   int
	peakKiB  atomic.Int64
}

func (c *chaos) addr() string { return c.mqttAddr }

// start starts the broker on the same data directory and ports.
func (c *chaos) start(ctx context.Context) error {
	c.starts++
	logDir := filepath.Join(c.dir, fmt.Sprintf("run%03d", c.starts))
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	var b *brokerProc
	var err error
	// A port of the killed process may linger a moment.
	for range 20 {
		if b, err = startFerrymq(ctx, c.bin, logDir, c.args...); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	c.broker.Store(b)
	c.sampler = startSampler(b.pid)
	return nil
}

// samplePeak folds the running broker's peak RSS into peakKiB.
func (c *chaos) samplePeak() {
	if s := c.sampler; s != nil {
		s.sample()
		peak, _, _, _ := s.finish()
		c.peakKiB.Store(max(c.peakKiB.Load(), peak))
		c.sampler = nil
	}
}

// kill ends the broker with SIGKILL and records its peak RSS.
func (c *chaos) kill() error {
	b := c.broker.Load()
	c.samplePeak()
	if !b.running() {
		return fmt.Errorf("ferrymq exited on its own; see %s", b.logPath)
	}
	if err := syscall.Kill(b.pid, syscall.SIGKILL); err != nil {
		return err
	}
	<-b.exited
	return nil
}

// seqTracker follows one stream: what its publisher got acknowledged and
// what its consumer received.
type seqTracker struct {
	name string

	mu            sync.Mutex
	sent          int64
	acked         map[int64]bool
	seen          map[int64]bool
	maxSeen       int64
	dup, disorder int64
	firstDisorder string
	lastProgress  time.Time
}

func newSeqTracker(name string) *seqTracker {
	return &seqTracker{name: name, acked: map[int64]bool{}, seen: map[int64]bool{}, maxSeen: -1, lastProgress: time.Now()}
}

func (t *seqTracker) sentNew() {
	t.mu.Lock()
	t.sent++
	t.mu.Unlock()
}

func (t *seqTracker) ack(seq int64) {
	t.mu.Lock()
	t.acked[seq] = true
	t.mu.Unlock()
}

// recv records an arrival: a duplicate, or a first arrival, which must
// come after every earlier first arrival of a lower number.
func (t *seqTracker) recv(body []byte) {
	if len(body) < 8 {
		return
	}
	seq := int64(binary.BigEndian.Uint64(body))
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastProgress = time.Now()
	if t.seen[seq] {
		t.dup++
		return
	}
	t.seen[seq] = true
	if seq < t.maxSeen {
		if t.disorder == 0 {
			t.firstDisorder = fmt.Sprintf("%d after %d", seq, t.maxSeen)
		}
		t.disorder++
	}
	t.maxSeen = max(t.maxSeen, seq)
}

type trackerStats struct {
	sent, acked, got, dup, disorder, lost int64
	firstLost                             int64
	firstDisorder                         string
}

func (t *seqTracker) stats() trackerStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := trackerStats{sent: t.sent, acked: int64(len(t.acked)), got: int64(len(t.seen)), dup: t.dup,
		disorder: t.disorder, firstDisorder: t.firstDisorder, firstLost: -1}
	for seq := range t.acked {
		if !t.seen[seq] {
			st.lost++
			if st.firstLost < 0 || seq < st.firstLost {
				st.firstLost = seq
			}
		}
	}
	return st
}

func (t *seqTracker) summary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("%s %d/%d", strings.Fields(t.name)[0], len(t.seen), len(t.acked))
}

// waitTrackers waits until every acknowledged message of every stream
// arrived, or nothing arrived for idle.
func waitTrackers(ctx context.Context, ts []*seqTracker, idle time.Duration) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		done := true
		var stalled []string
		for _, t := range ts {
			st := t.stats()
			if st.lost > 0 {
				done = false
				t.mu.Lock()
				since := time.Since(t.lastProgress)
				t.mu.Unlock()
				if since > idle {
					stalled = append(stalled, fmt.Sprintf("%s: %d acknowledged messages missing, nothing arrived for %s", t.name, st.lost, idle))
				}
			}
		}
		if done {
			return nil
		}
		if len(stalled) > 0 {
			return errors.New(strings.Join(stalled, "; "))
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// seqBody is a message body carrying seq.
func seqBody(seq int64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(seq))
	return b
}

// pacer spaces a publisher's messages to rate per second, in bursts of
// 10 ms.
type pacer struct {
	rate  int
	start time.Time
	n     int
}

func (p *pacer) wait(ctx context.Context) {
	if p.rate <= 0 {
		return
	}
	if p.start.IsZero() {
		p.start = time.Now()
	}
	p.n++
	due := p.start.Add(time.Duration(p.n) * time.Second / time.Duration(p.rate))
	if d := time.Until(due); d > 10*time.Millisecond {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
}

// chaosWindow is how many messages a chaos publisher has unacknowledged.
const chaosWindow = 100

// mqttConnect connects a paho.mqtt.golang 3.1.1 client; lost is closed
// when the connection ends.
func mqttConnect(addr, id string, clean bool, handler pahomqtt.MessageHandler) (pahomqtt.Client, chan struct{}, error) {
	lost := make(chan struct{})
	var once sync.Once
	o := pahomqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetUsername("guest").SetPassword("guest").
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
		SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second).SetKeepAlive(5 * time.Second).
		SetMaxResumePubInFlight(chaosWindow).
		SetConnectionLostHandler(func(pahomqtt.Client, error) { once.Do(func() { close(lost) }) })
	if handler != nil {
		o.SetDefaultPublishHandler(handler)
	}
	cl := pahomqtt.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		cl.Disconnect(0)
		return nil, nil, fmt.Errorf("mqtt connect %s: %v", addr, tok.Error())
	}
	return cl, lost, nil
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// seqSource hands a chaos publisher the sequence numbers to send: first
// those a lost connection left unacknowledged, in order, then new ones,
// paced, until pctx ends.
type seqSource struct {
	next    int64
	pending []int64 // sorted
	p       *pacer
	t       *seqTracker
}

// take returns the next number to send, or false when there is none.
func (s *seqSource) take(pctx context.Context) (int64, bool) {
	switch {
	case len(s.pending) > 0:
		seq := s.pending[0]
		s.pending = s.pending[1:]
		return seq, true
	case pctx.Err() == nil:
		seq := s.next
		s.next++
		s.t.sentNew()
		s.p.wait(pctx)
		return seq, true
	}
	return 0, false
}

// again queues seq to be sent again, in order among the others.
func (s *seqSource) again(seq int64) {
	i, _ := slices.BinarySearch(s.pending, seq)
	s.pending = slices.Insert(s.pending, i, seq)
}

// mqttPublish publishes numbered messages at qos until pctx ends, then
// until every one sent is acknowledged (or ctx ends). After a lost
// connection it sends again, in order, every message not acknowledged.
func (c *chaos) mqttPublish(pctx, ctx context.Context, id, topic string, qos byte, t *seqTracker) {
	src := &seqSource{p: &pacer{rate: c.rate}, t: t}
	for ctx.Err() == nil && (pctx.Err() == nil || len(src.pending) > 0) {
		cl, lost, err := mqttConnect(c.mqttAddr, id, true, nil)
		if err != nil {
			pause(ctx, 200*time.Millisecond)
			continue
		}
		type flight struct {
			seq int64
			tok pahomqtt.Token
		}
		var win []flight
		ok := true
		waitOldest := func() bool {
			f := win[0]
			select {
			case <-f.tok.Done():
			case <-lost:
				return false
			case <-time.After(20 * time.Second):
				return false
			}
			if f.tok.Error() != nil {
				return false
			}
			t.ack(f.seq)
			win = win[1:]
			return true
		}
		for ok && ctx.Err() == nil {
			seq, more := src.take(pctx)
			if !more {
				break
			}
			win = append(win, flight{seq, cl.Publish(topic, qos, false, seqBody(seq))})
			if len(win) >= chaosWindow {
				ok = waitOldest()
			}
		}
		for ok && len(win) > 0 {
			ok = waitOldest()
		}
		for _, f := range win {
			select {
			case <-f.tok.Done():
				if f.tok.Error() == nil {
					t.ack(f.seq)
					continue
				}
			default:
			}
			src.again(f.seq)
		}
		cl.Disconnect(0)
		if !ok {
			pause(ctx, 100*time.Millisecond)
		}
	}
}

// mqttSubscribe keeps a persistent session subscribed to filter, recording
// what arrives; slow is spent on each message before it is acknowledged.
func (c *chaos) mqttSubscribe(ctx context.Context, addr func() string, id, filter string, qos byte, slow time.Duration, t *seqTracker, ready chan<- struct{}) {
	first := true
	for ctx.Err() == nil {
		cl, lost, err := mqttConnect(addr(), id, false, func(_ pahomqtt.Client, m pahomqtt.Message) {
			t.recv(m.Payload())
			if slow > 0 {
				time.Sleep(slow)
			}
		})
		if err != nil {
			pause(ctx, 200*time.Millisecond)
			continue
		}
		tok := cl.Subscribe(filter, qos, nil)
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			cl.Disconnect(0)
			pause(ctx, 200*time.Millisecond)
			continue
		}
		if first {
			first = false
			ready <- struct{}{}
		}
		select {
		case <-lost:
		case <-ctx.Done():
		}
		cl.Disconnect(0)
	}
}

// amqpPublish publishes persistent numbered messages to a durable queue
// with confirms, as mqttPublish does over MQTT.
func (c *chaos) amqpPublish(pctx, ctx context.Context, queue string, t *seqTracker) {
	src := &seqSource{p: &pacer{rate: c.rate}, t: t}
	for ctx.Err() == nil && (pctx.Err() == nil || len(src.pending) > 0) {
		conn, ch, err := c.amqpChannel(queue)
		if err != nil {
			pause(ctx, 200*time.Millisecond)
			continue
		}
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, chaosWindow+1))
		if err := ch.Confirm(false); err != nil {
			conn.Close()
			continue
		}
		var win []int64 // the seqs published on this channel: delivery tag i+1
		confirmed := 0
		ok := true
		waitOne := func() bool {
			select {
			case cf, open := <-confirms:
				if !open || !cf.Ack {
					return false
				}
				// One confirmation per tag (the client splits multiple
				// ones), in order.
				t.ack(win[cf.DeliveryTag-1])
				confirmed++
				return true
			case <-time.After(20 * time.Second):
				return false
			}
		}
		sent := 0
		for ok && ctx.Err() == nil {
			seq, more := src.take(pctx)
			if !more {
				break
			}
			win = append(win, seq)
			if err := ch.PublishWithContext(ctx, "", queue, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: seqBody(seq)}); err != nil {
				ok = false
				break
			}
			sent++
			if sent-confirmed >= chaosWindow {
				ok = waitOne()
			}
		}
		for ok && sent > confirmed {
			ok = waitOne()
		}
		for _, seq := range win {
			if !t.isAcked(seq) {
				src.again(seq)
			}
		}
		conn.Close()
		if !ok {
			pause(ctx, 100*time.Millisecond)
		}
	}
}

func (t *seqTracker) isAcked(seq int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.acked[seq]
}

// amqpChannel connects and declares the durable queue.
func (c *chaos) amqpChannel(queue string) (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.DialConfig("amqp://guest:guest@"+c.amqpAddr+"/", amqp.Config{Heartbeat: 5 * time.Second,
		Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err == nil && queue != "" {
		_, err = ch.QueueDeclare(queue, true, false, false, false, nil)
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, ch, nil
}

// amqpConsume consumes the queue with manual acks and a prefetch of 50,
// spending slow on each message.
func (c *chaos) amqpConsume(ctx context.Context, queue string, slow time.Duration, t *seqTracker, ready chan<- struct{}) {
	first := true
	for ctx.Err() == nil {
		conn, ch, err := c.amqpChannel(queue)
		if err != nil {
			pause(ctx, 200*time.Millisecond)
			continue
		}
		var ds <-chan amqp.Delivery
		if err = ch.Qos(50, 0, false); err == nil {
			ds, err = ch.Consume(queue, "", false, false, false, false, nil)
		}
		if err != nil {
			conn.Close()
			pause(ctx, 200*time.Millisecond)
			continue
		}
		if first {
			first = false
			ready <- struct{}{}
		}
	loop:
		for {
			select {
			case d, open := <-ds:
				if !open {
					break loop
				}
				t.recv(d.Body)
				if slow > 0 {
					time.Sleep(slow)
				}
				if d.Ack(false) != nil {
					break loop
				}
			case <-ctx.Done():
				break loop
			}
		}
		conn.Close()
	}
}

// flapProxy forwards TCP to an upstream and now and then cuts every
// connection and refuses new ones for a while: a flapping uplink.
type flapProxy struct {
	ln     net.Listener
	target string
	flaps  atomic.Int64
	down   atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newFlapProxy(target string) (*flapProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &flapProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.accept()
	return p, nil
}

func (p *flapProxy) addr() string { return p.ln.Addr().String() }

func (p *flapProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			c.Close()
			continue
		}
		u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(u, c)
		go pipe(c, u)
	}
}

// flap cuts the uplink every 2-6 s for 0.3-1.5 s until ctx ends.
func (p *flapProxy) flap(ctx context.Context) {
	for {
		pause(ctx, time.Duration(2000+rand.IntN(4000))*time.Millisecond)
		if ctx.Err() != nil {
			return
		}
		p.down.Store(true)
		p.cut()
		p.flaps.Add(1)
		pause(ctx, time.Duration(300+rand.IntN(1200))*time.Millisecond)
		p.down.Store(false)
	}
}

func (p *flapProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *flapProxy) close() {
	p.ln.Close()
	p.down.Store(true)
	p.cut()
}
