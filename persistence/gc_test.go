package persistence

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/ferrymq/ferrymq/core"
)

func vlogFiles(t testing.TB, dir string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// sweep waits for the orphan sweep that collect requested: each batch
// sweeps a chunk, so it commits batches until the sweep is done.
func sweep(t testing.TB, s *Store, done uint64) {
	t.Helper()
	for i := 0; s.sweeps.Load() == done; i++ {
		if i == 1000 {
			t.Fatal("orphan sweep did not finish")
		}
		if err := s.Wait(s.TouchQueue("/", "q", 0)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestValueLogGC churns messages, and queues with arguments big enough
// for the value log, until compaction has told Badger which value-log
// files are mostly garbage. Then GC must give files back; nothing deleted
// may come back, at once or after a restart (Badger's GC writes moved
// values back under their old versions, which a later compaction can
// expose: see markerKind); and a message enqueued before the churn, still
// referenced, must survive the move and the restart.
func TestValueLogGC(t *testing.T) {
	// 1 MiB files and memtables, so that a few MiB of churn fill several
	// value-log files and compact.
	testBadgerOptions = func(o badger.Options) badger.Options {
		return o.WithValueLogFileSize(1 << 20).WithMemTableSize(1 << 20).
			WithBaseTableSize(256 << 10).WithBaseLevelSize(1 << 20)
	}
	defer func() { testBadgerOptions = nil }()
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true, GCInterval: -1})
	s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
	keep := richMessage(1, "enqueued before the churn, never acked")
	s.Enqueue("/", "q", 1, keep, 0)

	body := make([]byte, 1024)
	bigArgs := core.Table{"x-padding": strings.Repeat("p", 600)}
	const perRound, maxRounds = 2000, 30
	next := uint64(2)
	rewritten, before, after, round := 0, 0, 0, 0
	for ; round < maxRounds && rewritten == 0; round++ {
		tmp := fmt.Sprintf("tmp-%d", round)
		s.PutQueue(core.QueueRecord{VHost: "/", Name: tmp, Arguments: bigArgs})
		s.PutExchange("/", core.ExchangeDecl{Name: tmp, Kind: "topic", Durable: true, Arguments: bigArgs})
		s.PutBinding("/", core.BindingRecord{Source: tmp, Destination: tmp, RoutingKey: "#", Arguments: bigArgs})
		first := next
		var pos uint64
		for ; next < first+perRound; next++ {
			pos = s.Enqueue("/", "q", next, &core.Message{ID: next, Body: body, Properties: core.Properties{DeliveryMode: 2}}, 0)
		}
		// Committed before they are removed: an Enqueue and its Remove in
		// one batch would write nothing at all.
		if err := s.Wait(pos); err != nil {
			t.Fatal(err)
		}
		s.DeleteExchange("/", tmp)
		s.DeleteQueue("/", tmp)
		for id := first; id < next; id++ {
			pos = s.Remove("/", "q", id, id)
		}
		if err := s.Wait(pos); err != nil {
			t.Fatal(err)
		}
		before = vlogFiles(t, dir)
		sweeps := s.sweeps.Load()
		rewritten = s.collect()
		if rewritten > 0 {
			sweep(t, s, sweeps)
		}
		after = vlogFiles(t, dir)
	}
	if rewritten == 0 {
		// Background compaction has not caught up (slow under -race):
		// flush the memtables (a restart) and compact everything, which
		// gives GC its discard statistics.
		closeStore(t, s)
		s = open(t, dir, Options{NoSync: true, GCInterval: -1})
		if err := s.db.Flatten(2); err != nil {
			t.Fatal(err)
		}
		before = vlogFiles(t, dir)
		sweeps := s.sweeps.Load()
		if rewritten = s.collect(); rewritten > 0 {
			sweep(t, s, sweeps)
		}
		after = vlogFiles(t, dir)
	}
	if rewritten == 0 {
		t.Fatalf("value-log GC rewrote nothing after %d messages enqueued and acked", next-2)
	}
	t.Logf("after %d rounds, GC rewrote %d files: %d value-log files -> %d", round, rewritten, before, after)
	if after >= before {
		t.Errorf("GC rewrote %d files but %d value-log files remain of %d", rewritten, after, before)
	}
	check := func(when string) {
		t.Helper()
		if n := countKeys(t, s, kindMessage); n != 1 {
			t.Errorf("%s: %d message bodies stored, want 1 (deleted ones came back)", when, n)
		}
		got := recoverAll(t, s)
		if len(got.queues) != 1 || len(got.exchanges) != 0 || len(got.bindings) != 0 {
			t.Errorf("%s: deleted topology came back: %d queues, exchanges %v, bindings %q",
				when, len(got.queues), got.exchanges, got.bindings)
		}
		m, err := s.Load(1)
		if err != nil {
			t.Fatalf("%s: Load of the live message: %v", when, err)
		}
		sameMessage(t, m, keep)
	}
	check("after GC")
	closeStore(t, s)
	s = open(t, dir, Options{NoSync: true, GCInterval: -1})
	defer closeStore(t, s)
	check("after GC and a restart")
}
