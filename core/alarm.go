package core

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Resources of the alarms the broker knows, as RabbitMQ names them.
const (
	// AlarmDisk is raised while the store cannot write: free disk space
	// under its limit, or a failing disk.
	AlarmDisk = "disk"
	// AlarmMemory is raised while the broker uses more memory than its
	// high watermark.
	AlarmMemory = "memory"
)

// Alarm is a resource alarm in effect. While any alarm is in effect the
// protocol servers stop taking publishes, as RabbitMQ's resource alarms
// do: AMQP connections get connection.blocked and their readers pause at
// the next publish; MQTT clients' readers pause at the next PUBLISH, so
// its PUBACK or PUBREC waits. Consumers keep draining queues meanwhile.
type Alarm struct {
	Resource string    // AlarmDisk, AlarmMemory
	Reason   string    // what raised it, for logs and connection.blocked
	Since    time.Time // when it was raised (the broker's Clock)
}

// alarms is the broker's set of alarms in effect. Each resource is raised
// and cleared on its own: publishing resumes once the last one clears.
type alarms struct {
	// gate is non-nil while an alarm is in effect; publishers read it
	// without a lock on every publish.
	gate atomic.Pointer[blockGate]

	mu       sync.Mutex
	raised   map[string]Alarm
	watchers map[int]func(blocked bool, reason string)
	nextID   int
}

// blockGate is one period of alarms: open is closed when the last alarm
// clears. reason names the alarms in effect when it was read.
type blockGate struct {
	open   chan struct{}
	reason string
}

// Block raises the alarm of resource (AlarmDisk, AlarmMemory, ...) with
// reason, or updates the reason of one already raised. The first alarm
// blocks publishers and tells the watchers (WatchAlarms).
func (b *Broker) Block(resource, reason string) {
	a := &b.alarms
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.raised == nil {
		a.raised = make(map[string]Alarm)
	}
	al, ok := a.raised[resource]
	if !ok {
		al = Alarm{Resource: resource, Since: b.clock.Now()}
	}
	al.Reason = reason
	a.raised[resource] = al
	g := a.gate.Load()
	if g == nil {
		g = &blockGate{open: make(chan struct{})}
	} else {
		// A new gate with the same channel: readers of the old one keep a
		// consistent reason.
		g = &blockGate{open: g.open}
	}
	g.reason = a.reasonLocked()
	first := a.gate.Swap(g) == nil
	if first {
		b.log.Warn("resource alarm: publishers blocked", "resource", resource, "reason", reason)
		for _, w := range a.watchers {
			w(true, g.reason)
		}
	}
}

// Unblock clears the alarm of resource. Clearing the last one lets
// publishers go on and tells the watchers; clearing one not raised does
// nothing.
func (b *Broker) Unblock(resource string) {
	a := &b.alarms
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.raised[resource]; !ok {
		return
	}
	delete(a.raised, resource)
	g := a.gate.Load()
	if len(a.raised) > 0 {
		a.gate.Store(&blockGate{open: g.open, reason: a.reasonLocked()})
		return
	}
	a.gate.Store(nil)
	close(g.open)
	b.log.Info("resource alarms cleared: publishers unblocked", "resource", resource)
	for _, w := range a.watchers {
		w(false, "")
	}
}

// reasonLocked joins the reasons of the alarms in effect, by resource.
func (a *alarms) reasonLocked() string {
	rs := make([]string, 0, len(a.raised))
	for _, r := range slices.Sorted(maps.Keys(a.raised)) {
		rs = append(rs, a.raised[r].Reason)
	}
	return strings.Join(rs, "; ")
}

// Alarms returns the alarms in effect, by resource; none when publishing
// is not blocked.
func (b *Broker) Alarms() []Alarm {
	a := &b.alarms
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Alarm, 0, len(a.raised))
	for _, al := range a.raised {
		out = append(out, al)
	}
	slices.SortFunc(out, func(x, y Alarm) int { return strings.Compare(x.Resource, y.Resource) })
	return out
}

// Blocked reports whether publishing is blocked by an alarm: if so it
// returns a channel closed once every alarm has cleared, and the reasons
// of the alarms in effect; else a nil channel. It is cheap enough to ask
// before every publish.
func (b *Broker) Blocked() (<-chan struct{}, string) {
	if g := b.alarms.gate.Load(); g != nil {
		return g.open, g.reason
	}
	return nil, ""
}

// WatchAlarms calls fn when publishing becomes blocked (true, with the
// reasons of the alarms) and when it is unblocked again (false). fn runs
// on the goroutine that raised or cleared the alarm, one call at a time
// and in order, with the alarms' lock held: it must not block and must
// not call Block or Unblock. The returned function stops the calls.
func (b *Broker) WatchAlarms(fn func(blocked bool, reason string)) (stop func()) {
	a := &b.alarms
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.watchers == nil {
		a.watchers = make(map[int]func(bool, string))
	}
	id := a.nextID
	a.nextID++
	a.watchers[id] = fn
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		delete(a.watchers, id)
	}
}
