package core

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMemoryBudget is how many bytes of stored message bodies a broker
// keeps in memory before it pages new ones out to the store.
const DefaultMemoryBudget = 256 << 20

// memBudget is the broker-wide allowance for bodies of stored messages held
// in memory, and what the memory limit (Broker.WatchMemory) needs on the
// publish path. Paging keeps a queue of a million persistent messages at a
// few tens of bytes each instead of its bodies' size (RabbitMQ's lazy/CQv2
// queues).
type memBudget struct {
	limit    int64 // <= 0: never page out
	resident atomic.Int64

	// transientQueues is how many queues hold transient messages, which
	// have nowhere else to live than memory: under the memory alarm a
	// queue over its share of the memory limit refuses more
	// (Queue.enqueue).
	transientQueues atomic.Int64
	// alarm is set while the memory alarm is raised, high is the memory
	// limit while one is watched (0: none).
	alarm atomic.Bool
	high  atomic.Int64
}

// over reports whether holding n more bytes would exceed the budget.
func (m *memBudget) over(n int64) bool {
	return m.limit > 0 && m.resident.Load()+n > m.limit
}

// transientShareExceeded reports whether a queue holding held bytes of
// transient messages has more than its share of the memory limit while
// the memory alarm is raised: the limit split evenly between the queues
// that hold transient messages.
func (m *memBudget) transientShareExceeded(held int64) bool {
	if !m.alarm.Load() {
		return false
	}
	n := max(m.transientQueues.Load(), 1)
	return held >= m.high.Load()/n
}

// MemoryInUse is how much memory the broker holds, as the Go runtime
// accounts it (runtime/metrics): the heap that was live at the last
// collection, plus goroutine stacks and the runtime's own memory. Garbage
// not yet collected is left out, so that the reading follows what the
// broker keeps (queued messages, partly received bodies, connections'
// buffers), not when the collector last ran.
func MemoryInUse() int64 {
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	metrics.Read(s)
	v := func(i int) int64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(s[i].Value.Uint64())
	}
	live, total := v(0), v(1)
	heap := v(2) + v(3) + v(4) + v(5) // all of the heap but stacks
	return live + max(total-heap, 0)
}

// MemoryLimit configures Broker.WatchMemory.
type MemoryLimit struct {
	// High is the memory high watermark in bytes (RabbitMQ's
	// vm_memory_high_watermark): above it the memory alarm is raised.
	High int64
	// Low is where the alarm clears again [90 % of High], so that a
	// broker at its limit does not block and unblock on every reading.
	Low int64
	// Interval is the time between readings [250ms].
	Interval time.Duration
	// Read returns the memory in use [MemoryInUse].
	Read func() int64
}

// DefaultMemoryCheckInterval is MemoryLimit.Interval's default.
const DefaultMemoryCheckInterval = 250 * time.Millisecond

// gcEvery is how many readings apart the watch collects garbage while the
// memory alarm is raised (see memWatch.gc): a second at the default
// interval.
const gcEvery = 4

// memWatch is a running WatchMemory.
type memWatch struct {
	b *Broker
	l MemoryLimit
	// gc collects garbage while the alarm is raised (runtime.GC with the
	// runtime's own reading), every gcEvery readings: publishers are held
	// then, so little is allocated and the collector may not run for
	// minutes, and the live heap would still read as it was when the
	// alarm was raised however much consumers have drained since.
	gc      func()
	sinceGC int // readings since gc; check's goroutine only
	mu      sync.Mutex
	timer   Timer
	stopped bool
	raised  bool
}

// WatchMemory reads the broker's memory every l.Interval and raises the
// memory alarm (AlarmMemory) when it is above l.High, clearing it once it
// is below l.Low: publishers on both protocols are held back meanwhile
// (see Block), and queues holding more than their share of l.High in
// transient messages refuse more. Both crossings are logged at WARN. The
// returned function stops the readings and clears the alarm.
func (b *Broker) WatchMemory(l MemoryLimit) (stop func()) {
	if l.Low <= 0 || l.Low > l.High {
		l.Low = l.High / 10 * 9
	}
	if l.Interval <= 0 {
		l.Interval = DefaultMemoryCheckInterval
	}
	w := &memWatch{b: b, l: l}
	if l.Read == nil {
		w.l.Read, w.gc = MemoryInUse, runtime.GC
	}
	b.mem.high.Store(l.High)
	w.check()
	return w.stop
}

// check takes one reading, raises or clears the alarm, and arms the next.
func (w *memWatch) check() {
	used := w.l.Read()
	if w.gc != nil && w.b.mem.alarm.Load() && used >= w.l.Low {
		if w.sinceGC++; w.sinceGC >= gcEvery {
			w.sinceGC = 0
			w.gc()
			used = w.l.Read()
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	b, l := w.b, w.l
	switch {
	case !w.raised && used > l.High:
		w.raised = true
		b.log.Warn("memory alarm raised: above the memory limit, publishers blocked",
			"used_bytes", used, "limit_bytes", l.High, "clears_below_bytes", l.Low)
		b.mem.alarm.Store(true)
		b.Block(AlarmMemory, fmt.Sprintf("memory in use %s above the limit of %s", sizeText(used), sizeText(l.High)))
	case w.raised && used < l.Low:
		w.raised = false
		b.log.Warn("memory alarm cleared: below the low mark, publishers unblocked",
			"used_bytes", used, "limit_bytes", l.High, "low_bytes", l.Low)
		b.mem.alarm.Store(false)
		b.Unblock(AlarmMemory)
	}
	w.timer = b.clock.AfterFunc(l.Interval, w.check)
}

func (w *memWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
	}
	w.b.mem.high.Store(0)
	if w.raised {
		w.b.mem.alarm.Store(false)
		w.b.Unblock(AlarmMemory)
	}
}

// sizeText writes n bytes in MiB, as the alarm's reason shows it.
func sizeText(n int64) string {
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}
