package persistence

import (
	"errors"
	"sync"
	"testing"

	"github.com/ferrymq/ferrymq/core"
)

// TestStats checks the figures behind the store metrics: every commit is
// counted once in Commits and in both histograms, the batch sizes add up
// to the ops appended, a failed commit counts as an error only, and GC
// passes are counted.
func TestStats(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true, GCInterval: -1})
	defer closeStore(t, s)
	if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	const goroutines, each = 8, 50
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				n := uint64(g*each + i + 1)
				if err := s.Wait(s.Enqueue("/", "q", n, plainMessage(n, 0, "x"), 0)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	commits := st.Commits - before.Commits
	if commits == 0 || st.BatchOps.Count != st.Commits || st.CommitSeconds.Count != st.Commits {
		t.Fatalf("commits %d, batch-size count %d, commit-time count %d: want equal and > 0",
			st.Commits, st.BatchOps.Count, st.CommitSeconds.Count)
	}
	if ops := st.BatchOps.Sum - before.BatchOps.Sum; ops != goroutines*each {
		t.Errorf("batch sizes add up to %v ops, want %d", ops, goroutines*each)
	}
	var inBuckets uint64
	for _, n := range st.BatchOps.Buckets {
		inBuckets += n
	}
	if inBuckets != st.BatchOps.Count { // no batch is above 8192 ops here
		t.Errorf("batch-size buckets hold %d, count is %d", inBuckets, st.BatchOps.Count)
	}
	if st.CommitSeconds.Sum <= 0 {
		t.Errorf("commit time sum %v, want > 0", st.CommitSeconds.Sum)
	}
	if st.VLogBytes <= 0 {
		t.Errorf("value-log size %d, want > 0", st.VLogBytes)
	}
	t.Logf("%d ops in %d commits; lsm %d B, vlog %d B", goroutines*each, commits, st.LSMBytes, st.VLogBytes)

	injected := errors.New("injected")
	hook := func() error { return injected }
	s.testCommitHook.Store(&hook)
	if err := s.Wait(s.Enqueue("/", "q", 1000, plainMessage(1000, 0, "x"), 0)); !errors.Is(err, injected) {
		t.Fatalf("Wait: %v, want the injected error", err)
	}
	s.testCommitHook.Store(nil)
	if after := s.Stats(); after.CommitErrors == 0 || after.Commits != st.Commits {
		t.Errorf("after a failed commit: %d errors, %d commits (was %d); want > 0 errors, commits unchanged",
			after.CommitErrors, after.Commits, st.Commits)
	}
	s.collect()
	if got := s.Stats().GCRuns; got != 1 {
		t.Errorf("GC runs %d, want 1", got)
	}
}
