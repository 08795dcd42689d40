package core

import (
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestWatchMemory steps a memory reading up and down across the limit:
// the memory alarm is raised above High, stays raised down to Low (the
// hysteresis), clears below it, and is visible in Alarms and Blocked
// meanwhile; stopping the watch clears it.
func TestWatchMemory(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name     string
		readings []int64 // one per interval, the first at WatchMemory
		raised   []bool  // the alarm after each reading
		stopped  bool    // after the last reading, stop: cleared
	}{
		{"below the limit", []int64{10 * mib, 99 * mib, 100 * mib}, []bool{false, false, false}, false},
		{"above, then below the low mark", []int64{50 * mib, 101 * mib, 95 * mib, 91 * mib, 89 * mib, 95 * mib},
			[]bool{false, true, true, true, false, false}, false},
		{"above at the first reading", []int64{200 * mib, 150 * mib, 10 * mib}, []bool{true, true, false}, false},
		{"stopped while raised", []int64{200 * mib}, []bool{true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newManualClock()
			b := NewBroker(Options{Clock: clock})
			defer b.Close()
			var i atomic.Int64
			read := func() int64 { return tt.readings[min(int(i.Load()), len(tt.readings)-1)] }
			stop := b.WatchMemory(MemoryLimit{High: 100 * mib, Interval: time.Second, Read: read})
			defer stop()
			for n, want := range tt.raised {
				if n > 0 {
					i.Store(int64(n))
					clock.Advance(time.Second)
				}
				gate, reason := b.Blocked()
				alarms := b.Alarms()
				got := slices.ContainsFunc(alarms, func(a Alarm) bool { return a.Resource == AlarmMemory })
				if got != want || (gate != nil) != want {
					t.Fatalf("reading %d (%d MiB): alarm %v, blocked %v (%q), want %v", n, tt.readings[n]/mib, got, gate != nil, reason, want)
				}
				if want && !strings.Contains(reason, "above the limit of 100 MiB") {
					t.Fatalf("reason %q does not say the limit", reason)
				}
			}
			if tt.stopped {
				stop()
				if gate, _ := b.Blocked(); gate != nil || len(b.Alarms()) != 0 {
					t.Fatalf("stopping the watch left the memory alarm raised: %v", b.Alarms())
				}
			}
		})
	}
}

// TestMemoryAlarmRefusesTransient: under the memory alarm a queue holding
// more than its share of the limit in transient messages refuses more it
// cannot deliver at once (the publisher is told, as by reject-publish);
// a queue under its share, and every queue once the alarm clears, takes
// them.
func TestMemoryAlarmRefusesTransient(t *testing.T) {
	clock := newManualClock()
	b := NewBroker(Options{Clock: clock})
	defer b.Close()
	v := b.VHost("/")
	big := declareQ(t, v, "big", nil)
	declareQ(t, v, "small", nil)
	var used atomic.Int64
	stop := b.WatchMemory(MemoryLimit{High: 1000, Interval: time.Second, Read: used.Load})
	defer stop()
	for range 8 {
		publish(t, v, "", "big", strings.Repeat("x", 100))
	}
	publish(t, v, "", "small", "s")
	used.Store(2000)
	clock.Advance(time.Second)
	if gate, _ := b.Blocked(); gate == nil {
		t.Fatal("memory alarm not raised")
	}
	// Two queues hold transient messages: a share is 500 bytes. big holds 800.
	if res := publish(t, v, "", "big", "more"); !res.Rejected {
		t.Fatalf("a queue over its share took a transient message under the memory alarm: %+v", res)
	}
	if res := publish(t, v, "", "small", "more"); res.Rejected {
		t.Fatalf("a queue under its share refused a transient message: %+v", res)
	}
	if st := big.Stats(); st.Messages != 8 || st.Discarded != 1 {
		t.Fatalf("big: %+v, want 8 messages and 1 discarded", st)
	}
	used.Store(0)
	clock.Advance(time.Second)
	if res := publish(t, v, "", "big", "more"); res.Rejected {
		t.Fatalf("refused once the alarm cleared: %+v", res)
	}
}

// TestBacklogLimit: messages beyond a queue's backlog limit that cannot be
// delivered at once are dropped and counted (QoS 0, transient), paged out
// to the store (persistent, durable queue) or kept in memory (persistent,
// queue in memory only: the memory limit bounds them); those a consumer
// takes at once never count.
func TestBacklogLimit(t *testing.T) {
	tests := []struct {
		name       string
		limit      BacklogLimit
		durable    bool
		persistent bool
		wantReady  int
		wantDisc   uint64
		wantRej    int // publishes the publisher was told were refused
		wantResid  int64
	}{
		{"messages, drop all", BacklogLimit{Messages: 3, DropAll: true}, true, true, 3, 7, 0, 30},
		{"messages, transient dropped", BacklogLimit{Messages: 3}, false, false, 3, 7, 0, 0},
		{"bytes, transient dropped", BacklogLimit{Bytes: 25}, false, false, 2, 8, 0, 0},
		{"persistent paged out", BacklogLimit{Messages: 3}, true, true, 10, 0, 0, 30},
		{"persistent kept in memory", BacklogLimit{Messages: 3}, false, true, 10, 0, 0, 0},
		{"no limit", BacklogLimit{}, false, false, 10, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newStoreBroker(t, newMemStore(), newManualClock(), -1)
			var q *Queue
			if tt.durable {
				q = declareDurable(t, v, "s", nil)
			} else {
				q = declareQ(t, v, "s", nil)
			}
			q.SetBacklogLimit(tt.limit)
			rej := 0
			for range 10 {
				var opts []pubOpt
				if tt.persistent {
					opts = append(opts, persistent)
				}
				if publish(t, v, "", "s", "0123456789", opts...).Rejected {
					rej++
				}
			}
			st := q.Stats()
			if st.Messages != tt.wantReady || st.Discarded != tt.wantDisc || rej != tt.wantRej {
				t.Fatalf("ready %d, discarded %d, refused %d; want %d, %d, %d", st.Messages, st.Discarded, rej, tt.wantReady, tt.wantDisc, tt.wantRej)
			}
			if got := v.broker.ResidentBytes(); got != tt.wantResid {
				t.Fatalf("resident stored bytes %d, want %d (the rest paged out)", got, tt.wantResid)
			}
			// A consumer that keeps up takes everything: nothing waits,
			// nothing is dropped.
			_, sink := consume(t, q, ConsumeOptions{NoAck: true})
			if got := len(sink.take()); got != tt.wantReady {
				t.Fatalf("consumer got %d, want the %d queued", got, tt.wantReady)
			}
			for range 10 {
				publish(t, v, "", "s", "0123456789")
			}
			if got := len(sink.take()); got != 10 || q.Stats().Discarded != tt.wantDisc {
				t.Fatalf("consumer keeping up got %d of 10, discarded %d (want %d)", got, q.Stats().Discarded, tt.wantDisc)
			}
		})
	}
}
