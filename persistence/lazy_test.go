package persistence

import (
	"bytes"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// testDeadline bounds every wait of these tests: generous, because the
// machine may be loaded; the held-back commits they wait for take
// milliseconds.
const testDeadline = 20 * time.Second

// commitEvents reports each commit of s (before it writes), with its time.
func commitEvents(s *Store) <-chan time.Time {
	c := make(chan time.Time, 1024)
	hook := func() error {
		select {
		case c <- time.Now():
		default:
		}
		return nil
	}
	s.testCommitHook.Store(&hook)
	return c
}

// lazyEvents reports each time the writer holds a batch back.
func lazyEvents(s *Store) <-chan struct{} {
	c := make(chan struct{}, 1)
	hook := func() {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	s.testLazyHook.Store(&hook)
	return c
}

// fillQueue stores queue q with n messages (ids and seqs 1..n) and waits
// for them.
func fillQueue(t testing.TB, s *Store, n int, body []byte) {
	t.Helper()
	if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})); err != nil {
		t.Fatal(err)
	}
	var pos uint64
	for i := uint64(1); i <= uint64(n); i++ {
		pos = s.Enqueue("/", "q", i, &core.Message{ID: i, RoutingKey: "q", Body: body,
			Properties: core.Properties{DeliveryMode: 2}}, 0)
	}
	if err := s.Wait(pos); err != nil {
		t.Fatal(err)
	}
}

// removeAll removes messages 1..n of queue q, waiting for none of them,
// and returns the last position.
func removeAll(s *Store, n int) uint64 {
	var pos uint64
	for i := uint64(1); i <= uint64(n); i++ {
		pos = s.Remove("/", "q", i, i)
	}
	return pos
}

// awaitTaken waits, on commit events, until the writer has taken position
// pos into a commit, which no waiter asked for: a waiter registered after
// that only waits for the commit in flight.
func awaitTaken(t *testing.T, s *Store, commits <-chan time.Time, pos uint64) time.Time {
	t.Helper()
	deadline := time.After(testDeadline)
	for {
		select {
		case at := <-commits:
			s.mu.Lock()
			taken := s.taken
			s.mu.Unlock()
			if taken >= pos {
				return at
			}
		case <-deadline:
			t.Fatalf("position %d not committed within %v without a waiter", pos, testDeadline)
		}
	}
}

func awaitEvent[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(testDeadline):
		t.Fatalf("%s: nothing within %v", what, testDeadline)
		panic("unreachable")
	}
}

// TestLazyCommitWithoutWaiter: appends no one waits for are committed on
// their own, no sooner than CommitDelay after the first of them (they are
// held back to share the fsync) and without any Notify or Wait.
func TestLazyCommitWithoutWaiter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		delay  time.Duration // Options.CommitDelay
		remove bool          // Removes of stored messages; else Enqueues
	}{
		{name: "removes", delay: 50 * time.Millisecond, remove: true},
		{name: "publishes without confirm", delay: 50 * time.Millisecond},
		{name: "default delay", remove: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 100
			s := open(t, t.TempDir(), Options{NoSync: true, CommitDelay: tc.delay})
			defer closeStore(t, s)
			if tc.remove {
				fillQueue(t, s, n, []byte("m"))
			} else if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})); err != nil {
				t.Fatal(err)
			}
			commits := commitEvents(s)
			start := time.Now()
			var last uint64
			if tc.remove {
				last = removeAll(s, n)
			} else {
				for i := uint64(1); i <= n; i++ {
					last = s.Enqueue("/", "q", i, plainMessage(i, 0, "no confirm"), 0)
				}
			}
			at := awaitTaken(t, s, commits, last)
			if err := s.Wait(last); err != nil {
				t.Fatal(err)
			}
			if held := at.Sub(start); held < tc.delay {
				t.Errorf("committed %v after the first append, before the delay of %v", held, tc.delay)
			}
			refs, bodies := countKeys(t, s, kindRef), countKeys(t, s, kindMessage)
			if want := map[bool]int{true: 0, false: n}[tc.remove]; refs != want || bodies != want {
				t.Errorf("%d references and %d bodies stored, want %d", refs, bodies, want)
			}
		})
	}
}

// TestLazyCommitWakes: whatever waits for a held-back position (Notify,
// Wait, a Release of the Hold in front of it) is told at once: the delay
// is an hour here, so only the wake-up can commit. A Notify for a position
// committed already is told too, and does not end the hold-back.
func TestLazyCommitWakes(t *testing.T) {
	const n = 50
	tells := func(s *Store, pos uint64) <-chan error {
		c := make(chan error, 1)
		s.Notify(pos, syncFunc(func(_ uint64, err error) { c <- err }))
		return c
	}
	for _, tc := range []struct {
		name string
		// wake registers the waiter for the held-back batch ending at
		// last, or for the committed position old, and returns what it
		// is told.
		wake func(s *Store, old, last uint64) <-chan error
		// held: the batch is still held back after the waiter was told.
		held bool
	}{
		{name: "notify", wake: func(s *Store, _, last uint64) <-chan error { return tells(s, last) }},
		{name: "notify first of batch", wake: func(s *Store, old, _ uint64) <-chan error { return tells(s, old+1) }},
		{name: "wait", wake: func(s *Store, _, last uint64) <-chan error {
			c := make(chan error, 1)
			go func() { c <- s.Wait(last) }()
			return c
		}},
		{name: "notify committed position", held: true, wake: func(s *Store, old, _ uint64) <-chan error {
			return tells(s, old)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, t.TempDir(), Options{NoSync: true, CommitDelay: time.Hour})
			defer closeStore(t, s)
			fillQueue(t, s, n, []byte("m"))
			s.mu.Lock()
			old := s.synced
			s.mu.Unlock()
			lazy := lazyEvents(s)
			last := removeAll(s, n)
			awaitEvent(t, lazy, "the writer holding the Removes back")
			if err := awaitEvent(t, tc.wake(s, old, last), "waiter told"); err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			synced := s.synced
			s.mu.Unlock()
			if held := synced < last; held != tc.held {
				t.Errorf("after the waiter was told: synced %d, last %d; want held back %v", synced, last, tc.held)
			}
		})
	}
}

// TestLazyCommitRelease: a waiter behind a Hold is told once the Hold is
// released, though what it waits for would otherwise be held back an hour.
func TestLazyCommitRelease(t *testing.T) {
	s := open(t, t.TempDir(), Options{NoSync: true, CommitDelay: time.Hour})
	defer closeStore(t, s)
	fillQueue(t, s, 2, []byte("m"))
	lazy := lazyEvents(s)
	s.Remove("/", "q", 1, 1)
	awaitEvent(t, lazy, "the writer holding the Remove back")
	token := s.Hold()
	held := s.Remove("/", "q", 2, 2)
	told := make(chan error, 1)
	s.Notify(held, syncFunc(func(_ uint64, err error) { told <- err }))
	select {
	case err := <-told:
		t.Fatalf("told %v while the Hold keeps its position back", err)
	default:
	}
	s.Release(token)
	if err := awaitEvent(t, told, "waiter behind the released Hold"); err != nil {
		t.Fatal(err)
	}
}

// TestLazyCommitBounds: a batch no one waits for is committed at once when
// it reaches lazyMaxOps ops or lazyMaxBytes of bodies, in one commit.
func TestLazyCommitBounds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		body   int
		remove bool
	}{
		{name: "ops", n: lazyMaxOps, body: 1, remove: true},
		{name: "bytes", n: lazyMaxBytes / (64 << 10), body: 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, t.TempDir(), Options{NoSync: true, CommitDelay: time.Hour})
			defer closeStore(t, s)
			body := bytes.Repeat([]byte("b"), tc.body)
			var last uint64
			if tc.remove {
				fillQueue(t, s, tc.n, body)
			} else if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})); err != nil {
				t.Fatal(err)
			}
			commits := commitEvents(s)
			before := s.commits.Load()
			if tc.remove {
				last = removeAll(s, tc.n)
			} else {
				for i := uint64(1); i <= uint64(tc.n); i++ {
					last = s.Enqueue("/", "q", i, &core.Message{ID: i, Body: body, Properties: core.Properties{DeliveryMode: 2}}, 0)
				}
			}
			awaitTaken(t, s, commits, last)
			if err := s.Wait(last); err != nil {
				t.Fatal(err)
			}
			if c := s.commits.Load() - before; c != 1 {
				t.Errorf("%d commits for %d ops held back, want 1", c, tc.n)
			}
		})
	}
}

// TestLazyCommitClose: Close commits what is held back, at once, and the
// store reopens clean (nothing redelivered, nothing left).
func TestLazyCommitClose(t *testing.T) {
	const n = 100
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true, CommitDelay: time.Hour})
	fillQueue(t, s, 2*n, []byte("m"))
	lazy := lazyEvents(s)
	removeAll(s, n)
	awaitEvent(t, lazy, "the writer holding the Removes back")
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	if err := awaitEvent(t, closed, "Close"); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{NoSync: true})
	defer closeStore(t, s)
	got := recoverAll(t, s)
	ms := got.messages["//q"]
	if len(ms) != n || ms[0].ID != n+1 {
		t.Fatalf("after Close: %d messages, first %v; want %d from id %d", len(ms), ms[:min(1, len(ms))], n, n+1)
	}
	for _, m := range ms {
		if m.Delivered {
			t.Fatalf("message %d comes back redelivered after a clean Close", m.ID)
		}
	}
}

// BenchmarkRemoveCommits is a bridge drain's acks as the store sees them:
// Removes no one waits for, arriving in settles of 25 every millisecond
// (25k msg/s), with real fsyncs. It reports commits per 10,000 Removes and
// the process's CPU per Remove, with commits at once (eager, before lazy
// commits) and held back (the default delay).
func BenchmarkRemoveCommits(b *testing.B) {
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{{"eager", -1}, {"lazy", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			s := open(b, b.TempDir(), Options{GCInterval: -1, CommitDelay: tc.delay})
			defer closeStore(b, s)
			fillQueue(b, s, b.N, make([]byte, 16))
			commits := s.commits.Load()
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			cpu := cpuTime()
			b.ResetTimer()
			var last uint64
			for i := 1; i <= b.N; i++ {
				last = s.Remove("/", "q", uint64(i), uint64(i))
				if i%25 == 0 {
					<-tick.C
				}
			}
			if err := s.Wait(last); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(s.commits.Load()-commits)*10000/float64(b.N), "commits/10k")
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/remove")
		})
	}
}
