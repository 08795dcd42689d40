package persistence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/ferrymq/ferrymq/core"
)

// maxKeySeen is the longest committed key of the store holding a value:
// the markers of keys rewritten from the legacy form keep their old keys.
func maxKeySeen(t testing.TB, s *Store) int {
	t.Helper()
	n := 0
	if err := s.read(nil, true, func(key, val []byte) error {
		if len(val) > 0 {
			n = max(n, len(key))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// longish returns a name of n bytes starting with prefix; names that share
// their first 32 bytes differ only in their hash.
func longish(prefix string, n int) string {
	return prefix + strings.Repeat("x", n-len(prefix))
}

// TestLongNames: names of any length (MQTT client ids, topics and filters
// up to 65,535 bytes; vhosts) are stored with keys of bounded size and come
// back whole, through a restart, and delete like any other.
func TestLongNames(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})

	vhost := longish("vhost/\x00", 300)
	queue := longish("mqtt-subscription-", 65535)
	queue2 := longish("mqtt-subscription-", 65534) // same first 32 bytes
	exchange := longish("ex\x01", 256)
	filter := longish("a.b.", 65535)
	filter2 := longish("a.b.", 65000)
	topic := longish("t/", 65535)
	topic2 := longish("t/", 60000)
	short := "short"

	s.PutExchange(vhost, core.ExchangeDecl{Name: exchange, Kind: "topic", Durable: true})
	s.PutExchange(vhost, core.ExchangeDecl{Name: short, Kind: "topic", Durable: true})
	for _, q := range []string{queue, queue2, short} {
		s.PutQueue(core.QueueRecord{VHost: vhost, Name: q, Arguments: core.Table{"x-expires": int64(1000)}})
	}
	bindings := []core.BindingRecord{
		{Source: exchange, Destination: queue, RoutingKey: filter, Arguments: core.Table{"x-mqtt-qos": int8(1)}},
		{Source: short, Destination: queue, RoutingKey: filter2},
		{Source: short, Destination: queue2, RoutingKey: filter},
		{Source: short, Destination: short, RoutingKey: short},
		{Source: short, Destination: exchange, ToExchange: true, RoutingKey: "#"},
	}
	for _, b := range bindings {
		s.PutBinding(vhost, b)
	}
	for i := range uint64(3) {
		s.Enqueue(vhost, queue, i+1, plainMessage(10+i, 0, "m"), 0)
		s.Enqueue(vhost, queue2, i+1, plainMessage(10+i, 0, "m"), 0)
	}
	s.Delivered(vhost, queue, 2)
	s.Remove(vhost, queue2, 1, 10)
	r1, r2 := retainedMsg(20, "t", "one"), retainedMsg(21, "t", "two")
	s.PutRetained(vhost, topic, r1)
	if err := putRetained(s, vhost, topic2, r2); err != nil {
		t.Fatal(err)
	}
	if n := maxKeySeen(t, s); n > 1024 {
		t.Errorf("longest key %d bytes, want at most 1024", n)
	}
	closeStore(t, s)

	s = open(t, dir, Options{NoSync: true})
	got := recoverAll(t, s)
	for _, q := range []string{queue, queue2, short} {
		if _, ok := got.queues[vhost+"/"+q]; !ok {
			t.Errorf("queue of %d bytes missing after restart", len(q))
		}
	}
	if len(got.queues) != 3 || len(got.exchanges) != 2 || len(got.bindings) != len(bindings) {
		t.Errorf("after restart: %d queues, %d exchanges, %d bindings; want 3, 2, %d",
			len(got.queues), len(got.exchanges), len(got.bindings), len(bindings))
	}
	var want []string
	for _, b := range bindings {
		want = append(want, fmt.Sprintf("%s %s->%s e=%v rk=%q args=%v", vhost, b.Source, b.Destination, b.ToExchange, b.RoutingKey, b.Arguments))
	}
	slices.Sort(want)
	if !slices.Equal(got.bindings, want) {
		t.Error("bindings with long names do not come back as written")
	}
	m1, m2 := got.messages[vhost+"/"+queue], got.messages[vhost+"/"+queue2]
	if len(m1) != 3 || !m1[1].Delivered || m1[2].Delivered || len(m2) != 2 || m2[0].Seq != 2 {
		t.Errorf("messages: %+v and %+v; want seqs 1-3 (1-2 delivered) and 2-3", m1, m2)
	}
	checkRetained(t, s, []retainedEntry{{vhost, topic, r1}, {vhost, topic2, r2}})

	// Deleting works through the hashed keys: the queue's references and
	// bindings, the exchange's bindings, the retained message.
	s.DeleteQueue(vhost, queue)
	s.DeleteExchange(vhost, exchange)
	s.DeleteBinding(vhost, bindings[2])
	if err := s.Wait(s.DeleteRetained(vhost, topic)); err != nil {
		t.Fatal(err)
	}
	closeStore(t, s)
	s = open(t, dir, Options{NoSync: true})
	defer closeStore(t, s)
	got = recoverAll(t, s)
	if _, ok := got.queues[vhost+"/"+queue]; ok || len(got.queues) != 2 || len(got.exchanges) != 1 {
		t.Errorf("after deletes: %d queues, %d exchanges; want 2, 1 (the long ones gone)", len(got.queues), len(got.exchanges))
	}
	if len(got.bindings) != 1 || !strings.Contains(got.bindings[0], "short->short") {
		t.Errorf("bindings after deletes: %d, want short->short alone", len(got.bindings))
	}
	if n := countKeys(t, s, kindRef); n != 2 {
		t.Errorf("%d references left, want queue2's 2", n)
	}
	checkRetained(t, s, []retainedEntry{{vhost, topic2, r2}})
}

// legacyName is appendName as it was before hashed names: every name as it
// is, escaped.
func legacyName(b []byte, s string) []byte { return append(appendEscaped(b, s), 0x00) }

func legacyEntityKey(kind byte, vhost, name string) []byte {
	return legacyName(legacyName([]byte{kind, '/'}, vhost), name)
}

// TestLegacyLongKeys: a store written before hashed names, holding long
// names as they are (up to what Badger took), is read whole, and Open
// rewrites its keys into the hashed form, so that a later delete is not
// undone at the next start by the old key.
func TestLegacyLongKeys(t *testing.T) {
	dir := t.TempDir()
	closeStore(t, open(t, dir, Options{NoSync: true}))

	queue := longish("mqtt-subscription-old", 60000)
	topic := longish("old/", 50000)
	filter := longish("old.", 4000)
	vhost := "/"
	b := core.BindingRecord{Source: "amq.topic", Destination: queue, RoutingKey: filter}
	msg := plainMessage(5, 0, "kept")
	rmsg := retainedMsg(6, "old", "retained")
	// Written as the ferrymq of the previous session did.
	db, err := badger.OpenManaged(badgerOptions(dir, true, &badgerLogger{l: testLogger(t)}))
	if err != nil {
		t.Fatal(err)
	}
	wb := db.NewWriteBatchAt(db.MaxVersion() + 1)
	set := func(key, val []byte) {
		if err := wb.Set(key, val); err != nil {
			t.Fatal(err)
		}
	}
	qval, _ := encodeQueue(nil, &core.QueueRecord{})
	set(legacyEntityKey(kindQueue, vhost, queue), qval)
	bval, _ := encodeBinding(nil, &b)
	bkey := legacyName(legacyName(legacyName([]byte("b/"), vhost), b.Source), "q")
	bkey = legacyName(legacyName(bkey, b.Destination), b.RoutingKey)
	hkey := bindingKey(nil, vhost, &b, bval[1:])
	set(append(bkey, hkey[len(hkey)-8:]...), bval) // the same hash of the arguments
	mval, _ := encodeMessage(nil, msg)
	set(messageKey(nil, msg.ID), mval)
	for seq := range uint64(2) {
		key := binary.BigEndian.AppendUint64(legacyEntityKey(kindRef, vhost, queue), seq+1)
		set(key, encodeRef(nil, ref{id: msg.ID, size: len(msg.Body)}))
	}
	set(legacyEntityKey(kindDelivered, vhost, queue), encodeDelivered(nil, 1))
	rval, _ := encodeRetained(nil, rmsg)
	set(legacyEntityKey(kindRetained, vhost, topic), rval)
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := open(t, dir, Options{NoSync: true})
	got := recoverAll(t, s)
	if _, ok := got.queues[vhost+"/"+queue]; !ok || len(got.queues) != 1 {
		t.Fatalf("legacy queue not read: %d queues", len(got.queues))
	}
	if ms := got.messages[vhost+"/"+queue]; len(ms) != 2 || !ms[0].Delivered || ms[1].Delivered {
		t.Errorf("legacy references: %+v; want seqs 1 (delivered) and 2", ms)
	}
	if len(got.bindings) != 1 || !strings.Contains(got.bindings[0], filter) {
		t.Errorf("legacy binding not read: %d bindings", len(got.bindings))
	}
	checkRetained(t, s, []retainedEntry{{vhost, topic, rmsg}})
	if l, err := s.Load(msg.ID); err != nil || string(l.Body) != "kept" {
		t.Errorf("Load: %v, %v", l, err)
	}

	// Deleted through the new keys; the old ones must not come back.
	s.DeleteQueue(vhost, queue)
	if err := s.Wait(s.DeleteRetained(vhost, topic)); err != nil {
		t.Fatal(err)
	}
	closeStore(t, s)
	s = open(t, dir, Options{NoSync: true})
	defer closeStore(t, s)
	got = recoverAll(t, s)
	if len(got.queues) != 0 || len(got.bindings) != 0 || len(got.messages) != 0 {
		t.Errorf("after delete and restart: %d queues, %d bindings, %v", len(got.queues), len(got.bindings), got.messages)
	}
	checkRetained(t, s, nil)
	if n := countKeys(t, s, kindRef) + countKeys(t, s, kindDelivered) + countKeys(t, s, kindMessage); n != 0 {
		t.Errorf("%d references, delivered marks and bodies left", n)
	}
	if n := maxKeySeen(t, s); n > 1024 {
		t.Errorf("a key of %d bytes is left", n)
	}
}

// TestRefusedWriteFailsOnlyItsOp: a write Badger would refuse (here a value
// larger than a value-log file) fails the op that made it, never the batch
// nor the ones after it: no commit failure, no retry, no OnError.
func TestRefusedWriteFailsOnlyItsOp(t *testing.T) {
	old := testBadgerOptions
	testBadgerOptions = func(o badger.Options) badger.Options { return o.WithValueLogFileSize(1 << 20) }
	t.Cleanup(func() { testBadgerOptions = old })
	var onError atomic.Int32
	s := open(t, t.TempDir(), Options{NoSync: true, OnError: func(error) { onError.Add(1) }})
	// Held, so that the refused write shares its batch with good ones.
	entered, release := blockCommits(s)
	first := s.PutQueue(core.QueueRecord{VHost: "/", Name: "before"})
	<-entered
	huge := core.ExchangeDecl{Name: "huge", Kind: "direct", Arguments: core.Table{"x": strings.Repeat("v", 2<<20)}}
	bad := s.PutExchange("/", huge)
	good := s.PutQueue(core.QueueRecord{VHost: "/", Name: "after"})
	release()
	if err := s.Wait(first); err != nil {
		t.Fatalf("op before: %v", err)
	}
	if err := s.Wait(bad); !errors.Is(err, ErrRefused) || !errors.Is(err, core.ErrStoreRefused) {
		t.Fatalf("refused op: %v, want ErrRefused, a core.ErrStoreRefused", err)
	}
	_ = good // in the refused op's batch: told its error too (see tell)
	if err := s.Wait(s.PutQueue(core.QueueRecord{VHost: "/", Name: "later"})); err != nil {
		t.Fatalf("op in a later batch: %v", err)
	}
	if n := onError.Load(); n != 0 {
		t.Errorf("OnError called %d times: a refused write is no store failure", n)
	}
	got := recoverAll(t, s)
	if _, ok := got.exchanges["/huge"]; ok || len(got.queues) != 3 {
		t.Errorf("exchanges %v, %d queues; want no huge, 3 queues", got.exchanges, len(got.queues))
	}
}

// TestLongAndShortNamesInOneBatch: records with plain and hashed keys,
// interleaved in one batch, each come back as written (the writer's
// scratch buffers must not alias).
func TestLongAndShortNamesInOneBatch(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})
	entered, release := blockCommits(s)
	s.PutQueue(core.QueueRecord{VHost: "/", Name: "first"})
	<-entered
	var names []string
	for i := range 4 {
		short, long := fmt.Sprint("short-", i), longish(fmt.Sprint("mqtt-subscription-", i, "-"), 65535)
		names = append(names, short, long)
		for _, n := range []string{short, long} {
			s.PutQueue(core.QueueRecord{VHost: "/", Name: n, Arguments: core.Table{"x-mqtt-owner": "guest"}})
			s.TouchQueue("/", n, int64(i+1))
			s.PutExchange("/", core.ExchangeDecl{Name: n, Kind: "topic"})
			s.PutBinding("/", core.BindingRecord{Source: "amq.topic", Destination: n, RoutingKey: n})
			s.PutRetained("/", n, retainedMsg(uint64(10+i), "t", n[:5]))
			// A message with a long routing key grows the value buffer.
			m := plainMessage(uint64(100+2*i+len(n)%2), 0, "m")
			m.RoutingKey = long
			s.Enqueue("/", n, 1, m, 0)
		}
	}
	last := s.PutQueue(core.QueueRecord{VHost: "/", Name: "last"})
	release()
	if err := s.Wait(last); err != nil {
		t.Fatal(err)
	}
	closeStore(t, s)
	s = open(t, dir, Options{NoSync: true})
	defer closeStore(t, s)
	got := recoverAll(t, s)
	for i, n := range names {
		q, ok := got.queues["//"+n]
		if !ok || q.LastUsed != int64(i/2+1) || q.Arguments["x-mqtt-owner"] != "guest" {
			t.Errorf("queue %d (%d bytes): %v %+v", i, len(n), ok, q.Arguments)
		}
		if _, ok := got.exchanges["//"+n]; !ok {
			t.Errorf("exchange %d (%d bytes) missing", i, len(n))
		}
	}
	if len(got.bindings) != len(names) || len(retainedAll(t, s)) != len(names) {
		t.Errorf("%d bindings, %d retained; want %d each", len(got.bindings), len(retainedAll(t, s)), len(names))
	}
}
