package persistence

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/ferrymq/ferrymq/core"
)

// stepper steps the writer's commits: each commit waits in the commit hook
// until the test lets it go, so that the test decides which appends share
// a commit.
type stepper struct {
	s       *Store
	entered chan struct{}
	tokens  chan struct{}
}

// stepCommits holds the writer in a first commit (of a queue record of its
// own) and returns the stepper; the appends made until next are taken
// together by the commit after it.
func stepCommits(t *testing.T, s *Store) *stepper {
	t.Helper()
	st := &stepper{s: s, entered: make(chan struct{}, 1), tokens: make(chan struct{})}
	hook := func() error { st.entered <- struct{}{}; <-st.tokens; return nil }
	s.testCommitHook.Store(&hook)
	first := s.PutQueue(core.QueueRecord{VHost: "/", Name: "step"})
	go s.Wait(first)
	<-st.entered
	t.Cleanup(st.finish)
	return st
}

// next lets the commit held go, and waits for the writer to hold the next
// one: everything appended before next.
func (st *stepper) next() {
	st.tokens <- struct{}{}
	<-st.entered
}

// finish lets the commit held go and commits the rest unstepped.
func (st *stepper) finish() {
	if st.s.testCommitHook.Load() == nil {
		return
	}
	st.s.testCommitHook.Store(nil)
	st.tokens <- struct{}{}
}

// outcomes collects what a SyncQueue released, by item.
type outcomes struct {
	mu  sync.Mutex
	got map[string]error
	all chan struct{}
	n   int
}

func (o *outcomes) release(items []string, err error, _ bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, it := range items {
		o.got[it] = err
	}
	if len(o.got) == o.n {
		close(o.all)
	}
}

// TestRefusalFailsOnlyItsOperation: a write the store refuses fails the
// one operation that made it, all of its positions and only them. The
// commits are stepped, so that a refused op has innocent ops before and
// after it in its commit, and a publish's positions (its retained copy,
// refused, and its Enqueue, which fits) land in two commits. Each outcome
// is checked three ways: Wait per position, the failure log, and a
// SyncQueue (a publisher's confirms) releasing them all at once.
func TestRefusalFailsOnlyItsOperation(t *testing.T) {
	s := storeRefusing(t)
	b := core.NewBroker(core.Options{Logger: testLogger(t), Store: s})
	t.Cleanup(b.Close)
	s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
	if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q2"})); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("b", 2<<20) // over the 1 MiB value limit
	var nextID uint64 = 1 << 40
	msg := func(body string) *core.Message {
		nextID++
		return &core.Message{ID: nextID, Exchange: "amq.topic", RoutingKey: "k", Body: []byte(body)}
	}
	seq := uint64(0)
	enqueueTo := func(queue string, m *core.Message) uint64 {
		seq++
		return s.Enqueue("/", queue, seq, m, 0)
	}
	enqueue := func(m *core.Message) uint64 { return enqueueTo("q", m) }
	retain := func(topic string, m *core.Message) uint64 {
		t.Helper()
		pos, err := s.PutRetained("/", topic, m)
		if err != nil {
			t.Fatal(err)
		}
		return pos
	}

	type step struct {
		name    string
		refused bool
		pos     uint64
	}
	var steps []*step
	add := func(name string, refused bool, pos uint64) {
		steps = append(steps, &step{name: name, refused: refused, pos: pos})
	}

	st := stepCommits(t, s)
	// Commit A: refusals between innocent ops of every kind.
	add("A: enqueue before", false, enqueue(msg("a1")))
	add("A: refused enqueue", true, enqueue(msg(big)))
	add("A: enqueue after", false, enqueue(msg("a2")))
	two := msg(big) // one publish routed to two queues: both refused
	add("A: refused publish, first queue", true, enqueue(two))
	add("A: exchange after", false, s.PutExchange("/", core.ExchangeDecl{Name: "x-ok", Kind: "direct", Durable: true}))
	add("A: refused publish, second queue", true, enqueueTo("q2", two))
	add("A: refused queue record", true, s.PutQueue(core.QueueRecord{VHost: "/", Name: "q-" + refuseMarker}))
	add("A: binding after", false, s.PutBinding("/", core.BindingRecord{Source: "x-ok", Destination: "q", RoutingKey: "k"}))
	// A retained publish whose retained copy is refused (the failpoint
	// pads it; the message itself fits): its Enqueue, in the same commit,
	// fails with it.
	same := msg("fits")
	add("A: refused retained copy", true, retain("t/"+refuseMarker, same))
	add("A: enqueue of the innocent next to it", false, enqueue(msg("a3")))
	add("A: enqueue of the same publish", true, enqueue(same))
	add("A: enqueue last", false, enqueue(msg("a4")))
	// The same, with the writer committing between the retained copy and
	// the Enqueue: the Enqueue lands in the next commit, alone of its
	// publish there, and still fails.
	split := msg("fits too")
	add("A: refused retained copy, enqueue in the next commit", true, retain("t2/"+refuseMarker, split))
	add("A: retained after", false, retain("t3", msg("small")))
	st.next()
	// Commit B.
	add("B: enqueue before", false, enqueue(msg("b1")))
	add("B: enqueue of the publish refused in commit A", true, enqueue(split))
	add("B: enqueue after", false, enqueue(msg("b2")))
	st.finish()

	o := &outcomes{got: map[string]error{}, all: make(chan struct{}), n: len(steps)}
	q := core.NewSyncQueue(b, o.release)
	for _, sp := range steps {
		q.Add(sp.pos, sp.name)
	}
	last := steps[len(steps)-1].pos
	if err := s.Wait(last); err != nil {
		t.Fatalf("Wait(%d), the last innocent op: %v", last, err)
	}
	<-o.all

	var failed []uint64
	for _, sp := range steps {
		werr := s.Wait(sp.pos)
		o.mu.Lock()
		qerr := o.got[sp.name]
		o.mu.Unlock()
		for _, c := range []struct {
			how string
			err error
		}{{"Wait", werr}, {"SyncQueue", qerr}} {
			switch {
			case sp.refused && !errors.Is(c.err, core.ErrStoreRefused):
				t.Errorf("%s (pos %d): %s: %v, want a refusal", sp.name, sp.pos, c.how, c.err)
			case !sp.refused && c.err != nil:
				t.Errorf("%s (pos %d): %s: %v, want durable (an innocent batch-mate failed)", sp.name, sp.pos, c.how, c.err)
			}
		}
		if sp.refused {
			failed = append(failed, sp.pos)
		}
	}
	var logged []uint64
	for _, f := range s.FailedBetween(steps[0].pos, last) {
		for p := f.From; p <= f.To; p++ {
			logged = append(logged, p)
		}
	}
	if fmt.Sprint(logged) != fmt.Sprint(failed) {
		t.Errorf("failure log holds positions %v, want exactly the refused ops' %v", logged, failed)
	}
}
