package persistence

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/ferrymq/ferrymq/core"
)

// retainedEntry is one message RetainedMessages returned.
type retainedEntry struct {
	vhost, topic string
	msg          *core.Message
}

func retainedAll(t testing.TB, s *Store) []retainedEntry {
	t.Helper()
	var got []retainedEntry
	if err := s.RetainedMessages(func(vhost, topic string, m *core.Message) error {
		got = append(got, retainedEntry{vhost, topic, m})
		return nil
	}); err != nil {
		t.Fatalf("RetainedMessages: %v", err)
	}
	return got
}

// checkRetained compares what the store holds with want, in any order.
func checkRetained(t testing.TB, s *Store, want []retainedEntry) {
	t.Helper()
	got := retainedAll(t, s)
	key := func(e retainedEntry) string { return e.vhost + "\x00\x00" + e.topic }
	byKey := make(map[string]*core.Message, len(got))
	for _, e := range got {
		if _, dup := byKey[key(e)]; dup {
			t.Errorf("retained message of %q %q returned twice", e.vhost, e.topic)
		}
		byKey[key(e)] = e.msg
	}
	for _, w := range want {
		m, ok := byKey[key(w)]
		if !ok {
			t.Errorf("retained message of %q %q missing", w.vhost, w.topic)
			continue
		}
		delete(byKey, key(w))
		sameMessage(t, m, w.msg)
	}
	for k, m := range byKey {
		vhost, topic, _ := strings.Cut(k, "\x00\x00")
		t.Errorf("unexpected retained message of %q %q: id %d, %d body bytes %.16q", vhost, topic, m.ID, len(m.Body), m.Body)
	}
}

func retainedMsg(id uint64, topic, body string) *core.Message {
	return &core.Message{ID: id, Exchange: "amq.topic", RoutingKey: strings.ReplaceAll(topic, "/", "."),
		Body: []byte(body), Properties: core.Properties{DeliveryMode: 2}}
}

func TestRetained(t *testing.T) {
	type step struct {
		del          bool
		vhost, topic string
		msg          *core.Message
	}
	put := func(vhost, topic string, m *core.Message) step { return step{vhost: vhost, topic: topic, msg: m} }
	del := func(vhost, topic string) step { return step{del: true, vhost: vhost, topic: topic} }
	odd := "odd\x00topic\x01"
	m1, m2, m3 := retainedMsg(1, "a", "one"), retainedMsg(2, "a", "two"), retainedMsg(3, "a", "three")
	rich := richMessage(40, "rich properties")
	big := retainedMsg(50, "big", strings.Repeat("b", 256<<10))
	empty := retainedMsg(60, "e", "")
	tests := []struct {
		name  string
		steps []step
		want  []retainedEntry
	}{
		{"put", []step{put("/", "a", m1)}, []retainedEntry{{"/", "a", m1}}},
		{"replace", []step{put("/", "a", m1), put("/", "a", m2)}, []retainedEntry{{"/", "a", m2}}},
		{"delete", []step{put("/", "a", m1), del("/", "a")}, nil},
		{"delete then put again", []step{put("/", "a", m1), del("/", "a"), put("/", "a", m3)}, []retainedEntry{{"/", "a", m3}}},
		{"delete of a topic never retained", []step{del("/", "nothing")}, nil},
		{"properties and headers round-trip", []step{put("/", "rich", rich)}, []retainedEntry{{"/", "rich", rich}}},
		{"large body", []step{put("/", "big", big)}, []retainedEntry{{"/", "big", big}}},
		{"empty body", []step{put("/", "e", empty)}, []retainedEntry{{"/", "e", empty}}},
		{"vhosts, prefixes and odd names are distinct",
			[]step{
				put("/", "a", m1), put("/", "a/b", m2), put("v", "a", m3), put("/a", "", rich),
				put(odd, odd, big), put("odd", "odd", empty),
				del("/", "a"),
			},
			[]retainedEntry{{"/", "a/b", m2}, {"v", "a", m3}, {"/a", "", rich}, {odd, odd, big}, {"odd", "odd", empty}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, Options{NoSync: true})
			for _, st := range tt.steps {
				var err error
				if st.del {
					err = deleteRetained(s, st.vhost, st.topic)
				} else {
					err = putRetained(s, st.vhost, st.topic, st.msg)
				}
				if err != nil {
					t.Fatalf("step %+v: %v", st, err)
				}
			}
			checkRetained(t, s, tt.want)
			closeStore(t, s)

			s = open(t, dir, Options{NoSync: true})
			defer closeStore(t, s)
			checkRetained(t, s, tt.want)
			// The ids of the retained messages are stored ones: new ids
			// must not collide with them.
			var wantMax uint64
			for _, w := range tt.want {
				wantMax = max(wantMax, w.msg.ID)
			}
			if got := s.MaxMessageID(); got != wantMax {
				t.Errorf("MaxMessageID after reopen = %d, want %d", got, wantMax)
			}
		})
	}
}

// TestRetainedSameBatch puts and deletes topics within one commit: the
// overlay's last word must be what is written.
func TestRetainedSameBatch(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})
	if err := putRetained(s, "/", "old", retainedMsg(1, "old", "on disk before the batch")); err != nil {
		t.Fatal(err)
	}
	entered, release := blockCommits(s)
	first := s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
	<-entered // the writer holds the PutQueue batch; what follows is one batch
	kept := retainedMsg(3, "kept", "replaced in the batch")
	s.append(op{kind: opPutRetained, vhost: "/", name: "gone", msg: retainedMsg(2, "gone", "put and deleted")})
	s.append(op{kind: opDeleteRetained, vhost: "/", name: "gone"})
	s.append(op{kind: opDeleteRetained, vhost: "/", name: "old"})
	s.append(op{kind: opPutRetained, vhost: "/", name: "kept", msg: retainedMsg(4, "kept", "first")})
	last := s.append(op{kind: opPutRetained, vhost: "/", name: "kept", msg: kept})
	before := s.commits.Load()
	release()
	if err := s.Wait(first); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(last); err != nil {
		t.Fatal(err)
	}
	if n := s.commits.Load() - before; n != 1 {
		t.Errorf("%d commits after release, want 1", n)
	}
	want := []retainedEntry{{"/", "kept", kept}}
	checkRetained(t, s, want)
	closeStore(t, s)
	s = open(t, dir, Options{NoSync: true})
	defer closeStore(t, s)
	checkRetained(t, s, want)
}

func TestRetainedErrors(t *testing.T) {
	s := open(t, t.TempDir(), Options{NoSync: true})
	good := richMessage(1, "stays")
	if err := putRetained(s, "/", "t", good); err != nil {
		t.Fatal(err)
	}

	// A message that cannot be stored fails its put, and the previous
	// retained message stays.
	bad := retainedMsg(2, "t", "x")
	bad.Properties.Headers = core.Table{"ch": make(chan int)}
	if err := putRetained(s, "/", "t", bad); err == nil {
		t.Error("PutRetained of a message with a channel in its headers succeeded")
	}
	checkRetained(t, s, []retainedEntry{{"/", "t", good}})
	// The store goes on.
	if err := putRetained(s, "/", "u", retainedMsg(3, "u", "after")); err != nil {
		t.Fatalf("PutRetained after a failed one: %v", err)
	}

	// An error from the callback comes back as is and stops the iteration.
	stop := errors.New("stop")
	calls := 0
	err := s.RetainedMessages(func(string, string, *core.Message) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("RetainedMessages with a failing callback: %v after %d calls, want %v after 1", err, calls, stop)
	}

	closeStore(t, s)
	if err := putRetained(s, "/", "t", good); !errors.Is(err, ErrClosed) {
		t.Errorf("PutRetained after Close: %v, want ErrClosed", err)
	}
	if err := deleteRetained(s, "/", "t"); !errors.Is(err, ErrClosed) {
		t.Errorf("DeleteRetained after Close: %v, want ErrClosed", err)
	}
	if err := s.RetainedMessages(func(string, string, *core.Message) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("RetainedMessages after Close: %v, want ErrClosed", err)
	}
}

// TestRetainedGroupCommit: retained publishes on many connections share
// fsyncs, as confirms of queued messages do.
func TestRetainedGroupCommit(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer closeStore(t, s)
	const goroutines, each = 32, 30
	before := s.commits.Load()
	body := bytes.Repeat([]byte("r"), 512)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	want := make([]retainedEntry, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("sensors/%d", g)
			for i := range each {
				m := &core.Message{ID: uint64(g*each + i + 1), Exchange: "amq.topic", RoutingKey: topic, Body: body,
					Properties: core.Properties{DeliveryMode: 2, Headers: core.Table{"i": int32(i)}}}
				if i%5 == 4 {
					if err := deleteRetained(s, "/", topic); err != nil {
						errs <- err
						return
					}
					continue
				}
				if err := putRetained(s, "/", topic, m); err != nil {
					errs <- err
					return
				}
				want[g] = retainedEntry{"/", topic, m}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	commits := s.commits.Load() - before
	ops := uint64(goroutines * each)
	t.Logf("%d synced retained puts and deletes in %d commits (%.1f per fsync)", ops, commits, float64(ops)/float64(commits))
	if commits*4 > ops {
		t.Errorf("%d commits for %d retained puts and deletes: they are not sharing fsyncs", commits, ops)
	}
	if each%5 == 0 {
		want = nil // every goroutine's last op was a delete
	}
	checkRetained(t, s, want)
}

// TestRetainedDeletedStaysDeletedAfterGC builds the sequence in which
// Badger's value-log GC brings a tombstoned key back (see markerKind): a
// retained message lives at the bottom level of the LSM tree, in a
// value-log file that is mostly garbage; it is deleted, and the deletion
// is flushed to a level-0 table; GC looks the message up at its own
// version, finds it live and writes it back (at that version) into the
// memtable; a compaction then merges the deletion with the old value at
// the bottom level. A tombstone would be dropped there, exposing the copy
// GC wrote; the marker is kept.
func TestRetainedDeletedStaysDeletedAfterGC(t *testing.T) {
	// Small files and memtables. Level 0 is compacted from 2 tables on
	// (so that one flushed table stays there until Flatten), and never
	// stalls the writer.
	testBadgerOptions = func(o badger.Options) badger.Options {
		return o.WithValueLogFileSize(1 << 20).WithMemTableSize(1 << 20).
			WithBaseTableSize(256 << 10).WithBaseLevelSize(1 << 20).
			WithNumLevelZeroTables(2).WithNumLevelZeroTablesStall(50)
	}
	defer func() { testBadgerOptions = nil }()
	dir := t.TempDir()
	opts := Options{NoSync: true, GCInterval: -1}
	s := open(t, dir, opts)
	wait := func(pos uint64) {
		t.Helper()
		if err := s.Wait(pos); err != nil {
			t.Fatal(err)
		}
	}
	// reopen flushes the memtable to a level-0 table.
	reopen := func() {
		t.Helper()
		closeStore(t, s)
		s = open(t, dir, opts)
	}
	flatten := func() {
		t.Helper()
		if err := s.db.Flatten(1); err != nil {
			t.Fatal(err)
		}
	}
	// settle brings everything committed down to the bottom level,
	// dropping old versions (which tells GC what is garbage): Flatten
	// compacts only when more than one level holds tables or level 0
	// holds more than NumLevelZeroTables.
	settle := func() {
		t.Helper()
		for range 3 {
			wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "filler"}))
			reopen()
		}
		flatten()
	}
	wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"}))

	const nGone = 8
	kept := richMessage(1000, strings.Repeat("k", 2048))
	for i := range nGone {
		m := retainedMsg(uint64(100+i), "gone", strings.Repeat("g", 2048))
		if err := putRetained(s, "/", fmt.Sprintf("gone/%d", i), m); err != nil {
			t.Fatal(err)
		}
	}
	if err := putRetained(s, "/", "kept", kept); err != nil {
		t.Fatal(err)
	}
	// Garbage after them in the value log: 3 MiB of bodies, enqueued,
	// then acked.
	body := make([]byte, 1024)
	const garbage = 3 << 10
	var pos uint64
	for id := uint64(1); id <= garbage; id++ {
		pos = s.Enqueue("/", "q", id, &core.Message{ID: id, Body: body}, 0)
	}
	wait(pos)
	for id := uint64(1); id <= garbage; id++ {
		pos = s.Remove("/", "q", id, id)
	}
	wait(pos)
	settle()

	for i := range nGone {
		if err := deleteRetained(s, "/", fmt.Sprintf("gone/%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	reopen() // the deletions go to a level-0 table, above the old values

	sweeps := s.sweeps.Load()
	if s.collect() == 0 {
		t.Fatal("value-log GC rewrote nothing")
	}
	sweep(t, s, sweeps)
	// The deletions meet the old values at the bottom level; GC's copies
	// are in the memtable, above them.
	flatten()

	want := []retainedEntry{{"/", "kept", kept}}
	checkRetained(t, s, want)
	settle()
	checkRetained(t, s, want)
	if got := s.MaxMessageID(); got != kept.ID {
		t.Errorf("MaxMessageID after reopen = %d, want %d (the kept retained message)", got, kept.ID)
	}
	closeStore(t, s)
}

// TestRetainedKeyOrder: RetainedMessages goes by vhost, then topic.
func TestRetainedKeyOrder(t *testing.T) {
	s := open(t, t.TempDir(), Options{NoSync: true})
	defer closeStore(t, s)
	names := [][2]string{{"b", "a"}, {"a", "b/c"}, {"a", "b"}, {"a\x00", "a"}, {"a", "a\x01"}, {"ab", ""}}
	for i, n := range names {
		if err := putRetained(s, n[0], n[1], retainedMsg(uint64(i+1), n[1], "x")); err != nil {
			t.Fatal(err)
		}
	}
	var got [][2]string
	for _, e := range retainedAll(t, s) {
		got = append(got, [2]string{e.vhost, e.topic})
	}
	want := slices.Clone(names)
	slices.SortFunc(want, func(a, b [2]string) int {
		if c := strings.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	})
	if !slices.Equal(got, want) {
		t.Errorf("order %q, want %q", got, want)
	}
}

// putRetained and deleteRetained append and wait, as a publisher's
// acknowledgement does.
func putRetained(s *Store, vhost, topic string, msg *core.Message) error {
	pos, err := s.PutRetained(vhost, topic, msg)
	if err != nil {
		return err
	}
	return s.Wait(pos)
}

func deleteRetained(s *Store, vhost, topic string) error {
	return s.Wait(s.DeleteRetained(vhost, topic))
}

// TestRetainedAppendsDoNotWait: PutRetained and DeleteRetained return
// while a commit is in flight (core's publish hooks call them and must not
// block), their positions become durable with the next commit, and a body
// the store can never hold is refused at once.
func TestRetainedAppendsDoNotWait(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})
	entered, release := blockCommits(s)
	defer release()
	first := s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
	<-entered // the writer is stuck in the PutQueue commit
	put, err := s.PutRetained("/", "a", retainedMsg(1, "a", "kept"))
	if err != nil {
		t.Fatal(err)
	}
	del := s.DeleteRetained("/", "b")
	if put <= first || del <= put {
		t.Fatalf("positions %d, %d after %d: want them in append order", put, del, first)
	}
	huge := retainedMsg(2, "c", "")
	huge.Body = make([]byte, MaxMessageSize+1)
	if _, err := s.PutRetained("/", "c", huge); !errors.Is(err, ErrTooLarge) {
		t.Errorf("PutRetained of a %d-byte body: %v, want ErrTooLarge", len(huge.Body), err)
	}
	release()
	if err := s.Wait(del); err != nil {
		t.Fatal(err)
	}
	closeStore(t, s)
	s = open(t, dir, Options{NoSync: true})
	defer closeStore(t, s)
	checkRetained(t, s, []retainedEntry{{"/", "a", retainedMsg(1, "a", "kept")}})
}
