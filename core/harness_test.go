package core

import (
	"errors"
	"sort"
	"sync"
	"testing"
	"time"
)

// manualClock is a Clock that moves only when Advance is called. Timers due
// by then fire synchronously on the advancing goroutine, in deadline order,
// with Now set to their deadline.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	c       *manualClock
	at      time.Time
	f       func()
	stopped bool // stopped or fired; guarded by c.mu
}

func newManualClock() *manualClock {
	return &manualClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// pending is the number of timers that have neither fired nor been stopped.
func (c *manualClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	for {
		live := c.timers[:0]
		for _, t := range c.timers {
			if !t.stopped {
				live = append(live, t)
			}
		}
		c.timers = live
		sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
		if len(c.timers) == 0 || c.timers[0].at.After(target) {
			break
		}
		t := c.timers[0]
		t.stopped = true
		if t.at.After(c.now) {
			c.now = t.at
		}
		c.mu.Unlock()
		t.f()
		c.mu.Lock()
	}
	c.now = target
	c.mu.Unlock()
}

// recSink records deliveries. refuse makes Deliver return false.
type recSink struct {
	mu        sync.Mutex
	ds        []Delivery
	refuse    bool
	cancelled int
}

func (s *recSink) Deliver(d Delivery) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse {
		return false
	}
	s.ds = append(s.ds, d)
	return true
}

func (s *recSink) Cancelled(*Consumer) {
	s.mu.Lock()
	s.cancelled++
	s.mu.Unlock()
}

func (s *recSink) setRefuse(b bool) {
	s.mu.Lock()
	s.refuse = b
	s.mu.Unlock()
}

// take returns and forgets the deliveries so far.
func (s *recSink) take() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	ds := s.ds
	s.ds = nil
	return ds
}

func bodies(ds []Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d.Msg.Body)
	}
	return out
}

func seqs(ds []Delivery) []uint64 {
	out := make([]uint64, len(ds))
	for i, d := range ds {
		out[i] = d.Seq
	}
	return out
}

func newTestBroker(t testing.TB) (*VHost, *manualClock) {
	t.Helper()
	clk := newManualClock()
	b := NewBroker(Options{Clock: clk})
	t.Cleanup(b.Close)
	return b.VHost("/"), clk
}

func declareQ(t testing.TB, v *VHost, name string, args Table) *Queue {
	t.Helper()
	info, err := v.DeclareQueue(QueueDecl{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("declare queue %q: %v", name, err)
	}
	return v.Queue(info.Name)
}

func declareX(t testing.TB, v *VHost, name, kind string, args Table) {
	t.Helper()
	if err := v.DeclareExchange(ExchangeDecl{Name: name, Kind: kind, Arguments: args}); err != nil {
		t.Fatalf("declare exchange %q: %v", name, err)
	}
}

func bindQ(t testing.TB, v *VHost, q, x, key string, args Table) {
	t.Helper()
	if err := v.BindQueue(q, x, key, args, 0); err != nil {
		t.Fatalf("bind %s->%s %q: %v", x, q, key, err)
	}
}

type pubOpt func(*Message)

func withHeaders(h Table) pubOpt { return func(m *Message) { m.Properties.Headers = h } }

func withExpiration(ms string) pubOpt {
	return func(m *Message) {
		m.Properties.Expiration = ms
		m.Properties.Flags |= FlagExpiration
	}
}

func withPriority(p uint8) pubOpt { return func(m *Message) { m.Properties.Priority = p } }

func publish(t testing.TB, v *VHost, x, key, body string, opts ...pubOpt) PublishResult {
	t.Helper()
	m := &Message{Exchange: x, RoutingKey: key, Body: []byte(body)}
	for _, o := range opts {
		o(m)
	}
	res, err := v.Publish(m)
	if err != nil {
		t.Fatalf("publish to %q %q: %v", x, key, err)
	}
	return res
}

func consume(t testing.TB, q *Queue, opts ConsumeOptions) (*Consumer, *recSink) {
	t.Helper()
	s := &recSink{}
	if opts.Tag == "" {
		opts.Tag = "ctag"
	}
	c, err := q.Consume(opts, s)
	if err != nil {
		t.Fatalf("consume %s: %v", q.Name(), err)
	}
	return c, s
}

// getAll drains q with basic.get (no ack) and returns the bodies.
func getAll(q *Queue) []string {
	var out []string
	for {
		d, ok := q.Get(true)
		if !ok {
			return out
		}
		out = append(out, string(d.Msg.Body))
	}
}

// wantErr checks err is an *Error with code and text.
func wantErr(t testing.TB, err error, code int, text string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v, want %d %q", err, code, text)
	}
	if e.Code != code || e.Text != text {
		t.Fatalf("error = %d %q\n          want %d %q", e.Code, e.Text, code, text)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
