package persistence

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// BenchmarkEnqueueSync is confirmed persistent publishing as core drives
// it: each appender Enqueues a 1 KiB message on a durable queue and waits
// for the fsync that covers it, the way a publisher confirm does. msg/s is
// the store's synced throughput; allocs/op counts every allocation of the
// process (appender, writer and Badger) per message.
//
// commit=eager commits at once whatever waits (CommitDelay < 0), as the
// writer did before lazy commits; commit=lazy is the default: the waiter
// must wake the writer, and confirms must not get slower for it.
// sync=false skips the fsync (NoSync), leaving the CPU cost of the append,
// the writer and the waiter's release, which an fsync's latency on a busy
// disk hides.
func BenchmarkEnqueueSync(b *testing.B) {
	for _, bc := range []struct {
		commit    string
		delay     time.Duration
		appenders int
		noSync    bool
	}{
		{"eager", -1, 1, false}, {"lazy", 0, 1, false}, {"eager", -1, 32, false}, {"lazy", 0, 32, false}, {"lazy", 0, 256, false},
		{"eager", -1, 1, true}, {"lazy", 0, 32, true},
	} {
		appenders := bc.appenders
		name := fmt.Sprintf("commit=%s/appenders=%d", bc.commit, appenders)
		if bc.noSync {
			name += "/sync=false"
		}
		b.Run(name, func(b *testing.B) {
			s := open(b, b.TempDir(), Options{GCInterval: -1, CommitDelay: bc.delay, NoSync: bc.noSync})
			defer closeStore(b, s)
			if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})); err != nil {
				b.Fatal(err)
			}
			body := make([]byte, 1024)
			var seq atomic.Uint64
			commits := s.commits.Load()
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			var next atomic.Int64
			for range appenders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						n := seq.Add(1)
						m := &core.Message{ID: n, RoutingKey: "q", Body: body, Properties: core.Properties{DeliveryMode: 2}}
						if err := s.Wait(s.Enqueue("/", "q", n, m, 0)); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msg/s")
			b.ReportMetric(float64(b.N)/float64(s.commits.Load()-commits), "msg/fsync")
		})
	}
}

// BenchmarkMillion fills a queue with a million persistent 1 KiB messages
// (the paging scenario), then reopens the store and recovers it. It
// reports the process's resident memory after each phase, split as
// /proc/self/status does: anonymous (Go heap, Badger's memtables and
// caches) and file-backed (mmapped value-log and table pages, which the
// kernel reclaims under pressure). Run it with -benchtime=1x.
func BenchmarkMillion(b *testing.B) {
	const total, batch = 1_000_000, 1000
	dir := b.TempDir()
	body := make([]byte, 1024)
	for range b.N {
		s := open(b, dir, Options{GCInterval: -1})
		if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for i := uint64(1); i <= total; i += batch {
			var pos uint64
			for j := i; j < i+batch; j++ {
				m := &core.Message{ID: j, RoutingKey: "q", Body: body, Properties: core.Properties{DeliveryMode: 2}}
				pos = s.Enqueue("/", "q", j, m, 0)
			}
			if err := s.Wait(pos); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(time.Since(start).Seconds(), "fill-s")
		reportRSS(b, "filled")
		closeStore(b, s)

		start = time.Now()
		s = open(b, dir, Options{GCInterval: -1})
		n := 0
		if err := s.Messages("/", "q", func(core.StoredMessage) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != total {
			b.Fatalf("recovered %d messages, want %d", n, total)
		}
		b.ReportMetric(time.Since(start).Seconds(), "recover-s")
		reportRSS(b, "recovered")

		start = time.Now()
		for id := uint64(1); id <= total; id++ {
			if _, err := s.Load(id); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(time.Since(start).Seconds(), "load-all-s")
		reportRSS(b, "loaded")
		closeStore(b, s)
	}
}

func reportRSS(b *testing.B, phase string) {
	runtime.GC()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Logf("no /proc: %v", err)
		return
	}
	for _, line := range strings.Split(string(status), "\n") {
		for _, field := range []string{"VmRSS", "RssAnon", "RssFile"} {
			if rest, ok := strings.CutPrefix(line, field+":"); ok {
				var kb float64
				fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb)
				b.ReportMetric(kb/1024, phase+"-"+field+"-MiB")
			}
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), phase+"-heap-MiB")
}

// BenchmarkLoadWindow reads back a window of 256 paged-out messages, as a
// queue draining a backlog does: one Load per id against one LoadBatch.
// The messages are committed and in a table file (the store was reopened),
// as after an outage. ns/msg is the cost per message read.
func BenchmarkLoadWindow(b *testing.B) {
	const window = 256
	for _, size := range []int{16, 1024} {
		dir := b.TempDir()
		s := open(b, dir, Options{GCInterval: -1})
		if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})); err != nil {
			b.Fatal(err)
		}
		body := make([]byte, size)
		ids := make([]uint64, window)
		var pos uint64
		for i := range ids {
			ids[i] = uint64(i + 1)
			m := &core.Message{ID: ids[i], RoutingKey: "q", Body: body, Properties: core.Properties{DeliveryMode: 2}}
			pos = s.Enqueue("/", "q", ids[i], m, 0)
		}
		if err := s.Wait(pos); err != nil {
			b.Fatal(err)
		}
		closeStore(b, s)
		s = open(b, dir, Options{GCInterval: -1})
		msgs, errs := make([]*core.Message, window), make([]error, window)
		b.Run(fmt.Sprintf("size=%d/load-per-id", size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, id := range ids {
					if _, err := s.Load(id); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*window), "ns/msg")
		})
		b.Run(fmt.Sprintf("size=%d/load-batch", size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.LoadBatch(ids, msgs, errs)
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*window), "ns/msg")
		})
		closeStore(b, s)
	}
}
