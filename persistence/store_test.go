package persistence

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/core/msgcodec"
)

// testLogger reports the store's warnings and errors in the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func open(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	// Close is idempotent: this one only matters when a test stops early,
	// so that Badger's goroutines do not outlive it (and log into it).
	t.Cleanup(func() { s.Close() })
	return s
}

func closeStore(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// richHeaders holds every field type of core.Table, nested.
func richHeaders() core.Table {
	return core.Table{
		"bool":    true,
		"int8":    int8(-8),
		"uint8":   uint8(200),
		"int16":   int16(-1600),
		"uint16":  uint16(60000),
		"int32":   int32(-320000),
		"uint32":  uint32(4000000000),
		"int64":   int64(-6400000000),
		"float32": float32(3.25),
		"float64": float64(-6.125),
		"decimal": core.Decimal{Scale: 2, Value: 12345},
		"string":  "héllo",
		"bytes":   []byte{0, 1, 2, 255},
		"time":    time.Unix(1700000000, 0).UTC(),
		"nil":     nil,
		"array":   []any{int32(1), "two", []any{false}, core.Table{"k": int64(3)}},
		"table": core.Table{
			"nested": core.Table{"deep": "yes", "n": int16(7)},
			"x-death": []any{core.Table{
				"count": int64(1), "reason": "rejected", "queue": "q",
				"time": time.Unix(1600000000, 0).UTC(), "routing-keys": []any{"rk"},
			}},
		},
	}
}

func richMessage(id uint64, body string) *core.Message {
	return &core.Message{
		ID:         id,
		Exchange:   "amq.topic",
		RoutingKey: "a.b.c",
		Published:  time.Unix(1700000000, 123456789),
		Body:       []byte(body),
		Properties: core.Properties{
			ContentType:     "application/json",
			ContentEncoding: "gzip",
			Headers:         richHeaders(),
			DeliveryMode:    2,
			Priority:        7,
			CorrelationID:   "corr",
			ReplyTo:         "amq.rabbitmq.reply-to",
			Expiration:      "60000",
			MessageID:       "mid-1",
			Timestamp:       time.Unix(1700000001, 0).UTC(),
			Type:            "t",
			UserID:          "guest",
			AppID:           "app",
			ClusterID:       "",
			// ClusterID present but empty: the flag must survive.
			Flags: core.FlagClusterID,
		},
	}
}

func plainMessage(id uint64, prio uint8, body string) *core.Message {
	return &core.Message{ID: id, RoutingKey: "q", Body: []byte(body),
		Properties: core.Properties{DeliveryMode: 2, Priority: prio}}
}

func encodeProps(t testing.TB, m *core.Message) []byte {
	t.Helper()
	b, err := msgcodec.AppendProperties(nil, &m.Properties)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameMessage checks a loaded message against the one stored, properties
// byte for byte in their encoding.
func sameMessage(t testing.TB, got, want *core.Message) {
	t.Helper()
	if got.ID != want.ID || got.Exchange != want.Exchange || got.RoutingKey != want.RoutingKey {
		t.Errorf("message %d: got id %d exchange %q key %q, want %d %q %q",
			want.ID, got.ID, got.Exchange, got.RoutingKey, want.ID, want.Exchange, want.RoutingKey)
	}
	if !got.Published.Equal(want.Published) {
		t.Errorf("message %d: published %v, want %v", want.ID, got.Published, want.Published)
	}
	if !bytes.Equal(got.Body, want.Body) {
		t.Errorf("message %d: body %q, want %q", want.ID, got.Body, want.Body)
	}
	if g, w := encodeProps(t, got), encodeProps(t, want); !bytes.Equal(g, w) {
		t.Errorf("message %d: properties differ on the wire:\n got %x\nwant %x", want.ID, g, w)
	}
	if got.Properties.Flags != want.Properties.Flags|msgcodec.PropertyFlags(&want.Properties) {
		t.Errorf("message %d: flags %#x, want %#x", want.ID, got.Properties.Flags, msgcodec.PropertyFlags(&want.Properties))
	}
}

// recovered is everything a Recovery returns.
type recovered struct {
	exchanges map[string]core.ExchangeDecl // vhost/name
	queues    map[string]core.QueueRecord
	bindings  []string
	messages  map[string][]core.StoredMessage // vhost/queue
	maxID     uint64
}

func recoverAll(t testing.TB, s *Store) recovered {
	t.Helper()
	r := recovered{exchanges: map[string]core.ExchangeDecl{}, queues: map[string]core.QueueRecord{}, messages: map[string][]core.StoredMessage{}}
	if err := s.Exchanges(func(vhost string, d core.ExchangeDecl) error {
		r.exchanges[vhost+"/"+d.Name] = d
		return nil
	}); err != nil {
		t.Fatalf("Exchanges: %v", err)
	}
	if err := s.Queues(func(q core.QueueRecord) error {
		r.queues[q.VHost+"/"+q.Name] = q
		return nil
	}); err != nil {
		t.Fatalf("Queues: %v", err)
	}
	if err := s.Bindings(func(vhost string, b core.BindingRecord) error {
		r.bindings = append(r.bindings, fmt.Sprintf("%s %s->%s e=%v rk=%q args=%v", vhost, b.Source, b.Destination, b.ToExchange, b.RoutingKey, b.Arguments))
		return nil
	}); err != nil {
		t.Fatalf("Bindings: %v", err)
	}
	slices.Sort(r.bindings)
	for k, q := range r.queues {
		if err := s.Messages(q.VHost, q.Name, func(m core.StoredMessage) error {
			r.messages[k] = append(r.messages[k], m)
			return nil
		}); err != nil {
			t.Fatalf("Messages: %v", err)
		}
	}
	r.maxID = s.MaxMessageID()
	return r
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})

	// A name with NUL and 0x01 checks the key escaping.
	odd := "odd\x00name\x01"
	exchanges := []struct {
		vhost string
		d     core.ExchangeDecl
	}{
		{"/", core.ExchangeDecl{Name: "ex.topic", Kind: "topic", Durable: true}},
		{"/", core.ExchangeDecl{Name: "ex.alt", Kind: "fanout", Durable: true, AutoDelete: true, Internal: true,
			Arguments: core.Table{"alternate-exchange": "ae", "x-n": int32(5)}}},
		{"other", core.ExchangeDecl{Name: odd, Kind: "headers", Durable: true}},
	}
	for _, x := range exchanges {
		s.PutExchange(x.vhost, x.d)
	}
	queues := []core.QueueRecord{
		{VHost: "/", Name: "q1", Arguments: core.Table{"x-message-ttl": int32(60000), "x-dead-letter-exchange": "dlx"}, LastUsed: 10},
		{VHost: "/", Name: "q2", AutoDelete: true, LastUsed: 20},
		{VHost: "other", Name: odd, LastUsed: 30},
		{VHost: "other", Name: "odd", LastUsed: 40}, // a prefix of odd's name
	}
	for _, q := range queues {
		s.PutQueue(q)
	}
	s.TouchQueue("/", "q1", 1234)
	bindings := []struct {
		vhost string
		b     core.BindingRecord
	}{
		{"/", core.BindingRecord{Source: "ex.topic", Destination: "q1", RoutingKey: "a.*"}},
		{"/", core.BindingRecord{Source: "ex.topic", Destination: "q1", RoutingKey: "a.*", Arguments: core.Table{"x-match": "all"}}},
		{"/", core.BindingRecord{Source: "ex.topic", Destination: "ex.alt", ToExchange: true, RoutingKey: "#"}},
		{"other", core.BindingRecord{Source: odd, Destination: odd, RoutingKey: odd}},
	}
	for _, b := range bindings {
		s.PutBinding(b.vhost, b.b)
	}
	gone := core.BindingRecord{Source: "ex.topic", Destination: "q2", RoutingKey: "gone"}
	s.PutBinding("/", gone)
	s.DeleteBinding("/", gone)

	msgs := []*core.Message{
		richMessage(101, "first body"),
		plainMessage(102, 0, ""),
		plainMessage(103, 9, "three"),
		plainMessage(104, 1, strings.Repeat("x", 4096)),
		plainMessage(105, 2, "five"),
	}
	for i, m := range msgs {
		s.Enqueue("/", "q1", uint64(i+1), m, int64(1000*(i+1)))
	}
	s.Enqueue("other", odd, 1, msgs[4], 0)
	s.Enqueue("other", "odd", 7, msgs[3], 0)
	s.Delivered("/", "q1", 1)
	s.Delivered("/", "q1", 2)
	s.Delivered("/", "q1", 1) // lower: ignored
	last := s.Remove("/", "q1", 3, 103)
	if err := s.Wait(last); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	closeStore(t, s)

	s = open(t, dir, Options{})
	defer closeStore(t, s)
	got := recoverAll(t, s)

	if len(got.exchanges) != len(exchanges) {
		t.Errorf("got %d exchanges, want %d: %v", len(got.exchanges), len(exchanges), got.exchanges)
	}
	for _, x := range exchanges {
		if g := got.exchanges[x.vhost+"/"+x.d.Name]; !reflect.DeepEqual(g, x.d) {
			t.Errorf("exchange %q: got %+v, want %+v", x.d.Name, g, x.d)
		}
	}
	queues[0].LastUsed = 1234
	if len(got.queues) != len(queues) {
		t.Errorf("got %d queues, want %d", len(got.queues), len(queues))
	}
	for _, q := range queues {
		if g := got.queues[q.VHost+"/"+q.Name]; !reflect.DeepEqual(g, q) {
			t.Errorf("queue %q: got %+v, want %+v", q.Name, g, q)
		}
	}
	var wantBindings []string
	for _, b := range bindings {
		wantBindings = append(wantBindings, fmt.Sprintf("%s %s->%s e=%v rk=%q args=%v", b.vhost, b.b.Source, b.b.Destination, b.b.ToExchange, b.b.RoutingKey, b.b.Arguments))
	}
	slices.Sort(wantBindings)
	if !slices.Equal(got.bindings, wantBindings) {
		t.Errorf("bindings:\n got %q\nwant %q", got.bindings, wantBindings)
	}

	wantQ1 := []core.StoredMessage{
		{Seq: 1, ID: 101, Size: len("first body"), Priority: 7, Deadline: 1000, Delivered: true},
		{Seq: 2, ID: 102, Size: 0, Priority: 0, Deadline: 2000, Delivered: true},
		{Seq: 4, ID: 104, Size: 4096, Priority: 1, Deadline: 4000},
		{Seq: 5, ID: 105, Size: 4, Priority: 2, Deadline: 5000},
	}
	if g := got.messages["//q1"]; !reflect.DeepEqual(g, wantQ1) {
		t.Errorf("q1 messages:\n got %+v\nwant %+v", g, wantQ1)
	}
	if g := got.messages["other/"+odd]; len(g) != 1 || g[0].ID != 105 {
		t.Errorf("%q messages: %+v, want message 105 only", odd, g)
	}
	if g := got.messages["other/odd"]; len(g) != 1 || g[0].ID != 104 || g[0].Seq != 7 {
		t.Errorf("odd messages: %+v, want message 104 at 7 only", g)
	}
	if len(got.messages["//q2"]) != 0 {
		t.Errorf("q2 messages: %+v, want none", got.messages["//q2"])
	}
	if got.maxID != 105 {
		t.Errorf("MaxMessageID = %d, want 105", got.maxID)
	}
	for _, m := range msgs {
		l, err := s.Load(m.ID)
		if m.ID == 103 {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("Load(103) after its only Remove: %v, %v; want ErrNotFound", l, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Load(%d): %v", m.ID, err)
		}
		sameMessage(t, l, m)
	}
}

// countKeys counts the committed keys of one kind.
func countKeys(t testing.TB, s *Store, kind byte) int {
	t.Helper()
	n := 0
	if err := s.read(kindPrefix(kind), false, func([]byte, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOneBodyManyQueues(t *testing.T) {
	s := open(t, t.TempDir(), Options{NoSync: true})
	defer closeStore(t, s)
	for _, q := range []string{"a", "b", "c"} {
		s.PutQueue(core.QueueRecord{VHost: "/", Name: q})
	}
	m := plainMessage(1, 0, "shared")
	var pos uint64
	for _, q := range []string{"a", "b", "c"} {
		pos = s.Enqueue("/", q, 1, m, 0)
	}
	if err := s.Wait(pos); err != nil {
		t.Fatal(err)
	}
	if n := countKeys(t, s, kindMessage); n != 1 {
		t.Fatalf("%d bodies for one message in 3 queues, want 1", n)
	}
	if n := countKeys(t, s, kindRef); n != 3 {
		t.Fatalf("%d references, want 3", n)
	}
	steps := []struct {
		queue      string
		wantBodies int
	}{{"a", 1}, {"b", 1}, {"c", 0}}
	for _, st := range steps {
		if err := s.Wait(s.Remove("/", st.queue, 1, 1)); err != nil {
			t.Fatal(err)
		}
		if n := countKeys(t, s, kindMessage); n != st.wantBodies {
			t.Fatalf("after Remove from %s: %d bodies, want %d", st.queue, n, st.wantBodies)
		}
	}
	if _, err := s.Load(1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load after the last Remove: %v, want ErrNotFound", err)
	}
	// A stray second Remove must not disturb anything.
	if err := s.Wait(s.Remove("/", "c", 1, 1)); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteQueue(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})
	s.PutExchange("/", core.ExchangeDecl{Name: "x", Kind: "direct", Durable: true})
	for _, q := range []string{"qa", "qb"} {
		s.PutQueue(core.QueueRecord{VHost: "/", Name: q})
		s.PutBinding("/", core.BindingRecord{Source: "x", Destination: q, RoutingKey: "k"})
	}
	shared := plainMessage(1, 0, "shared")
	only := plainMessage(2, 0, "only in qa")
	s.Enqueue("/", "qa", 1, shared, 0)
	s.Enqueue("/", "qb", 1, shared, 0)
	s.Enqueue("/", "qa", 2, only, 0)
	s.Delivered("/", "qa", 2)
	if err := s.Wait(s.Enqueue("/", "qa", 3, plainMessage(3, 0, "three"), 0)); err != nil {
		t.Fatal(err)
	}
	// In the same batch as the delete: an Enqueue the delete must cover.
	s.Enqueue("/", "qa", 4, plainMessage(4, 0, "four"), 0)
	if err := s.Wait(s.DeleteQueue("/", "qa")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(1); err != nil {
		t.Errorf("shared body after deleting one of its queues: %v", err)
	}
	for _, id := range []uint64{2, 3, 4} {
		if _, err := s.Load(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Load(%d) of a body only the deleted queue held: %v, want ErrNotFound", id, err)
		}
	}
	if n := countKeys(t, s, kindRef); n != 1 {
		t.Errorf("%d references left, want 1 (qb's)", n)
	}
	if n := countKeys(t, s, kindDelivered); n != 0 {
		t.Errorf("%d delivered marks left, want 0", n)
	}
	// Removes after the delete (late acks) are ignored.
	if err := s.Wait(s.Remove("/", "qa", 1, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(1); err != nil {
		t.Errorf("shared body after a late Remove from the deleted queue: %v", err)
	}
	closeStore(t, s)

	s = open(t, dir, Options{NoSync: true})
	defer closeStore(t, s)
	got := recoverAll(t, s)
	if _, ok := got.queues["//qa"]; ok || len(got.queues) != 1 {
		t.Errorf("queues after DeleteQueue: %v", got.queues)
	}
	want := []string{`/ x->qb e=false rk="k" args=map[]`}
	if !slices.Equal(got.bindings, want) {
		t.Errorf("bindings after DeleteQueue: %q, want %q", got.bindings, want)
	}
	if len(got.messages["//qb"]) != 1 {
		t.Errorf("qb messages: %+v", got.messages["//qb"])
	}
}

func TestDeleteExchange(t *testing.T) {
	s := open(t, t.TempDir(), Options{NoSync: true})
	defer closeStore(t, s)
	s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
	for _, x := range []string{"src", "mid", "keep"} {
		s.PutExchange("/", core.ExchangeDecl{Name: x, Kind: "direct", Durable: true})
	}
	s.PutBinding("/", core.BindingRecord{Source: "src", Destination: "q", RoutingKey: "1"})
	s.PutBinding("/", core.BindingRecord{Source: "keep", Destination: "mid", ToExchange: true, RoutingKey: "2"})
	if err := s.Wait(s.PutBinding("/", core.BindingRecord{Source: "mid", Destination: "q", RoutingKey: "3"})); err != nil {
		t.Fatal(err)
	}
	s.PutBinding("/", core.BindingRecord{Source: "src", Destination: "q", RoutingKey: "same batch"})
	s.DeleteExchange("/", "src")
	if err := s.Wait(s.DeleteExchange("/", "mid")); err != nil {
		t.Fatal(err)
	}
	got := recoverAll(t, s)
	if len(got.bindings) != 0 {
		t.Errorf("bindings left after deleting their exchanges: %q", got.bindings)
	}
	if len(got.exchanges) != 1 {
		t.Errorf("exchanges: %v, want keep only", got.exchanges)
	}
}

// blockCommits makes the writer wait in its next commit until release is
// called: what is appended meanwhile lands in one later batch.
func blockCommits(s *Store) (entered <-chan struct{}, release func()) {
	in := make(chan struct{}, 1)
	gate := make(chan struct{})
	var once sync.Once
	hook := func() error {
		select {
		case in <- struct{}{}:
		default:
		}
		<-gate
		return nil
	}
	s.testCommitHook.Store(&hook)
	return in, func() { once.Do(func() { close(gate) }) }
}

func TestEnqueueRemoveSameBatchWritesNothing(t *testing.T) {
	s := open(t, t.TempDir(), Options{NoSync: true})
	defer closeStore(t, s)
	entered, release := blockCommits(s)
	defer release()
	first := s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
	<-entered // the writer holds the PutQueue batch
	m := plainMessage(1, 0, "short-lived")
	s.Enqueue("/", "q", 1, m, 0)
	last := s.Remove("/", "q", 1, 1)
	before := s.commits.Load()
	release()
	if err := s.Wait(first); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(last); err != nil {
		t.Fatal(err)
	}
	if n := s.commits.Load() - before; n != 0 {
		t.Errorf("%d commits after release, want none: the Enqueue and Remove in one batch cancel out", n)
	}
	if n := countKeys(t, s, kindMessage) + countKeys(t, s, kindRef); n != 0 {
		t.Errorf("%d message or reference keys written, want none", n)
	}
}

func TestLoadUncommitted(t *testing.T) {
	s := open(t, t.TempDir(), Options{NoSync: true})
	defer closeStore(t, s)
	if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})); err != nil {
		t.Fatal(err)
	}
	entered, release := blockCommits(s)
	defer release()
	m := richMessage(42, "paged out before its write finished")
	pos := s.Enqueue("/", "q", 1, m, 0)
	<-entered
	got, err := s.Load(42)
	if err != nil || got != m {
		t.Fatalf("Load of an uncommitted message: %p, %v; want the appended message %p", got, err, m)
	}
	release()
	if err := s.Wait(pos); err != nil {
		t.Fatal(err)
	}
	got, err = s.Load(42)
	if err != nil {
		t.Fatal(err)
	}
	if got == m {
		t.Error("Load after the commit still returns the appended message: pending not released")
	}
	sameMessage(t, got, m)
}

// recordingWaiter checks, when told, that its position is committed and
// visible to readers.
type recordingWaiter struct {
	s     *Store
	key   []byte
	calls atomic.Int32
	bad   atomic.Pointer[string]
}

func (w *recordingWaiter) Synced(pos uint64, err error) {
	w.calls.Add(1)
	fail := func(f string, a ...any) { msg := fmt.Sprintf(f, a...); w.bad.Store(&msg) }
	if err != nil {
		fail("pos %d: %v", pos, err)
		return
	}
	w.s.mu.Lock()
	synced := w.s.synced
	w.s.mu.Unlock()
	if synced < pos {
		fail("pos %d told before the store synced it (synced %d)", pos, synced)
	}
	found := false
	_ = w.s.read(w.key, false, func([]byte, []byte) error { found = true; return nil })
	if !found {
		fail("pos %d told before its reference is readable", pos)
	}
}

func TestNotifyAfterCommit(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})); err != nil {
		t.Fatal(err)
	}
	const n = 200
	waiters := make([]*recordingWaiter, n)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 4 {
				seq := uint64(i + 1)
				pos := s.Enqueue("/", "q", seq, plainMessage(seq, 0, "m"), 0)
				w := &recordingWaiter{s: s, key: refKey(nil, "/", "q", seq)}
				waiters[i] = w
				s.Notify(pos, w)
			}
		}()
	}
	wg.Wait()
	// Notify for a position committed long ago is still told, once.
	old := &recordingWaiter{s: s, key: refKey(nil, "/", "q", 1)}
	if err := s.Wait(s.Remove("/", "q", 999, 999)); err != nil {
		t.Fatal(err)
	}
	s.Notify(1, old)
	closeStore(t, s)
	for i, w := range append(waiters, old) {
		if c := w.calls.Load(); c != 1 {
			t.Errorf("waiter %d told %d times, want once", i, c)
		}
		if b := w.bad.Load(); b != nil {
			t.Errorf("waiter %d: %s", i, *b)
		}
	}
}

func TestWaitOrder(t *testing.T) {
	s := open(t, t.TempDir(), Options{NoSync: true})
	defer closeStore(t, s)
	entered, release := blockCommits(s)
	first := s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
	<-entered
	// Positions appended while a commit is in flight are not synced by it.
	second := s.Enqueue("/", "q", 1, plainMessage(1, 0, "x"), 0)
	var order []uint64
	var mu sync.Mutex
	done := make(chan struct{})
	for _, p := range []uint64{second, first} {
		s.Notify(p, syncFunc(func(pos uint64, err error) {
			mu.Lock()
			order = append(order, pos)
			if len(order) == 2 {
				close(done)
			}
			mu.Unlock()
		}))
	}
	release()
	<-done
	if !slices.Equal(order, []uint64{first, second}) {
		t.Errorf("told in order %v, want %v", order, []uint64{first, second})
	}
}

type syncFunc func(pos uint64, err error)

func (f syncFunc) Synced(pos uint64, err error) { f(pos, err) }

func TestGroupCommit(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer closeStore(t, s)
	if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})); err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 32, 50
	before := s.commits.Load()
	var wg sync.WaitGroup
	var seq atomic.Uint64
	body := bytes.Repeat([]byte("x"), 1024)
	errs := make(chan error, goroutines)
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				n := seq.Add(1)
				m := &core.Message{ID: n, Body: body, Properties: core.Properties{DeliveryMode: 2}}
				if err := s.Wait(s.Enqueue("/", "q", n, m, 0)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	commits := s.commits.Load() - before
	appends := uint64(goroutines * each)
	t.Logf("%d synced appends in %d commits (%.1f per fsync)", appends, commits, float64(appends)/float64(commits))
	if commits*4 > appends {
		t.Errorf("%d commits for %d appends: publishers are not sharing fsyncs", commits, appends)
	}
}

func TestCommitFailureIsRetried(t *testing.T) {
	dir := t.TempDir()
	var (
		mu       sync.Mutex
		reported []error
		failing  = true
	)
	diskErr := errors.New("injected: no space left on device")
	s := open(t, dir, Options{NoSync: true, OnError: func(err error) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}})
	if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})); err != nil {
		t.Fatal(err)
	}
	hook := func() error {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return diskErr
		}
		return nil
	}
	s.testCommitHook.Store(&hook)
	m1 := plainMessage(1, 0, "during the outage")
	if err := s.Wait(s.Enqueue("/", "q", 1, m1, 0)); !errors.Is(err, diskErr) {
		t.Fatalf("Wait during a failing commit: %v, want %v", err, diskErr)
	}
	if got, err := s.Load(1); err != nil || got != m1 {
		t.Fatalf("Load of a message whose commit failed: %v, %v", got, err)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	if err := s.Wait(s.Enqueue("/", "q", 2, plainMessage(2, 0, "after"), 0)); err != nil {
		t.Fatalf("Wait after recovery: %v", err)
	}
	closeStore(t, s)
	mu.Lock()
	if len(reported) < 2 || !errors.Is(reported[0], diskErr) || reported[len(reported)-1] != nil {
		t.Errorf("OnError calls: %v; want the failure, then nil", reported)
	}
	mu.Unlock()

	s = open(t, dir, Options{NoSync: true})
	defer closeStore(t, s)
	got := recoverAll(t, s)
	if ms := got.messages["//q"]; len(ms) != 2 {
		t.Errorf("after reopening: %+v; want both messages (the failed batch is retried)", ms)
	}
}

func TestDeliveredWrittenOnClose(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})
	s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
	for i := uint64(1); i <= 3; i++ {
		s.Enqueue("/", "q", i, plainMessage(i, 0, "m"), 0)
	}
	if err := s.Wait(3); err != nil {
		t.Fatal(err)
	}
	before := s.commits.Load()
	s.Delivered("/", "q", 2) // rides with the next commit: there is none before Close
	if err := s.Wait(3); err != nil {
		t.Fatal(err)
	}
	if n := s.commits.Load() - before; n != 0 {
		t.Errorf("Delivered alone caused %d commits", n)
	}
	closeStore(t, s)
	s = open(t, dir, Options{NoSync: true})
	defer closeStore(t, s)
	var delivered []bool
	_ = s.Messages("/", "q", func(m core.StoredMessage) error { delivered = append(delivered, m.Delivered); return nil })
	if !slices.Equal(delivered, []bool{true, true, false}) {
		t.Errorf("delivered flags after a clean restart: %v", delivered)
	}
}

func TestAfterClose(t *testing.T) {
	s := open(t, t.TempDir(), Options{NoSync: true})
	pos := s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
	closeStore(t, s)
	if err := s.Wait(pos); err != nil {
		t.Errorf("Wait for a position committed by Close: %v", err)
	}
	late := s.Enqueue("/", "q", 1, plainMessage(1, 0, "late"), 0)
	if err := s.Wait(late); !errors.Is(err, ErrClosed) {
		t.Errorf("Wait after Close: %v, want ErrClosed", err)
	}
	done := make(chan error, 1)
	s.Notify(late, syncFunc(func(_ uint64, err error) { done <- err }))
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("Notify after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Load(1); err == nil {
		t.Error("Load after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestOpenRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) string
		want  string
	}{
		{"file instead of directory", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "data")
			if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, "not a directory"},
		{"garbage MANIFEST", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("this is not a manifest"), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "manifest"},
		{"truncated MANIFEST of a real store", func(t *testing.T) string {
			dir := t.TempDir()
			s := open(t, dir, Options{NoSync: true})
			s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"}))
			closeStore(t, s)
			if err := os.Truncate(filepath.Join(dir, "MANIFEST"), 3); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "manifest"},
		{"non-empty directory without a store", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "holds no store"},
		{"Badger store of someone else", func(t *testing.T) string {
			dir := t.TempDir()
			db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("k"), []byte("v")) }); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "not a ferrymq store"},
		{"store of a later format", func(t *testing.T) string {
			dir := t.TempDir()
			closeStore(t, open(t, dir, Options{NoSync: true}))
			db, err := badger.OpenManaged(badger.DefaultOptions(dir).WithLogger(nil))
			if err != nil {
				t.Fatal(err)
			}
			wb := db.NewWriteBatchAt(db.MaxVersion() + 1)
			if err := wb.Set(formatKey, []byte{formatVersion + 1}); err != nil {
				t.Fatal(err)
			}
			if err := wb.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			return dir
		}, fmt.Sprintf("store format %d; this ferrymq reads format %d", formatVersion+1, formatVersion)},
		{"locked by another Store", func(t *testing.T) string {
			dir := t.TempDir()
			s := open(t, dir, Options{NoSync: true})
			t.Cleanup(func() { closeStore(t, s) })
			return dir
		}, "lock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.setup(t)
			s, err := Open(dir, Options{NoSync: true, Logger: testLogger(t)})
			if err == nil {
				s.Close()
				t.Fatalf("Open(%s) succeeded", dir)
			}
			if !strings.Contains(err.Error(), dir) {
				t.Errorf("error does not name the path %s: %v", dir, err)
			}
			if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tt.want)) {
				t.Errorf("error does not say %q: %v", tt.want, err)
			}
			t.Log(err)
		})
	}
}

func TestOpenCreates(t *testing.T) {
	for _, name := range []string{"missing/nested", "empty"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), name)
			if name == "empty" {
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			s := open(t, dir, Options{NoSync: true})
			closeStore(t, s)
			s = open(t, dir, Options{NoSync: true}) // and reopens what it created
			closeStore(t, s)
		})
	}
}

// TestDiskFreeLimitFloor: a disk free limit below DefaultDiskFreeLimit is
// raised to it and said at WARN (with --disk-free-limit 1, a full disk
// ended in a SIGBUS inside Badger's value-log write); 0 is the default, a
// larger one is kept, a negative one disables the check.
func TestDiskFreeLimitFloor(t *testing.T) {
	for _, c := range []struct {
		asked, want int64
		warn        bool
	}{
		{0, DefaultDiskFreeLimit, false},
		{1, DefaultDiskFreeLimit, true},
		{DefaultDiskFreeLimit - 1, DefaultDiskFreeLimit, true},
		{DefaultDiskFreeLimit, DefaultDiskFreeLimit, false},
		{1 << 40, 1 << 40, false},
		{-1, 0, false},
	} {
		t.Run(fmt.Sprint(c.asked), func(t *testing.T) {
			var logs bytes.Buffer
			s := open(t, t.TempDir(), Options{NoSync: true, DiskFreeLimit: c.asked, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			defer closeStore(t, s)
			if s.diskFreeLimit != c.want {
				t.Errorf("disk free limit %d, want %d", s.diskFreeLimit, c.want)
			}
			if warned := strings.Contains(logs.String(), "disk free limit raised"); warned != c.warn {
				t.Errorf("WARN logged: %v, want %v:\n%s", warned, c.warn, logs.String())
			}
		})
	}
}
