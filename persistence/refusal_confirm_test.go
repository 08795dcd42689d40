package persistence

import (
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestRefusedMessageNeverConfirmed: a publisher's confirms wait for one
// store position at a time, the furthest of those pending. A message the
// store refused in one commit, followed by one that commits in the next,
// must still get its nack: before the SyncQueue asked the store's failure
// log (core.FailureLog) per position, the later commit's success
// confirmed both. The commits are stepped by the test's commit hook:
// [dummy] held while x and the refused r are published, then [x, r] held
// while P is published, then [P]. (A marker message of another channel
// may share either commit: it is not confirmed.)
func TestRefusedMessageNeverConfirmed(t *testing.T) {
	old := testBadgerOptions
	testBadgerOptions = func(o badger.Options) badger.Options { return o.WithValueLogFileSize(1 << 20) }
	t.Cleanup(func() { testBadgerOptions = old })
	s := open(t, t.TempDir(), Options{NoSync: true})
	b := serveBoth(t, s)
	conn, ch := amqpConnChannel(t, b.amqpURL)
	if _, err := ch.QueueDeclare("q", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 3))
	// synced returns once every publish sent on the connection before it
	// has been appended: a persistent publish to "marker" on another
	// channel of the same connection, which its one reader handles after
	// them, signals from the append hook.
	if _, err := ch.QueueDeclare("marker", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	markerCh, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	marked := make(chan struct{}, 1)
	appendHook := func(o *op) {
		if o.kind == opEnqueue && o.name == "marker" {
			marked <- struct{}{}
		}
	}
	s.testAppendHook.Store(&appendHook)
	synced := func() {
		t.Helper()
		if err := markerCh.PublishWithContext(mqtttest.Ctx(t), "", "marker", false, false, amqp091.Publishing{DeliveryMode: amqp091.Persistent}); err != nil {
			t.Fatal(err)
		}
		mqtttest.WaitFor(t, marked, mqtttest.Wait, "marker appended")
	}
	entered := make(chan struct{}, 1)
	tokens := make(chan struct{})
	commitHook := func() error { entered <- struct{}{}; <-tokens; return nil }
	s.testCommitHook.Store(&commitHook)
	first := s.PutQueue(core.QueueRecord{VHost: "/", Name: "dummy"})
	go s.Wait(first)
	<-entered // commit 1: [dummy]
	pub := func(body string) {
		t.Helper()
		if err := ch.PublishWithContext(mqtttest.Ctx(t), "", "q", false, false, amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	pub("x")
	pub(strings.Repeat("b", 2<<20)) // r, refused: over the 1 MiB value limit
	synced()
	tokens <- struct{}{}
	<-entered // commit 2: x, r (and the marker)
	pub("P")
	synced()
	tokens <- struct{}{}
	<-entered // commit 3: P
	s.testCommitHook.Store(nil)
	tokens <- struct{}{}
	for i, want := range []bool{true, false, true} {
		c := mqtttest.WaitFor(t, confirms, mqtttest.Wait, "confirm")
		if c.DeliveryTag != uint64(i+1) || c.Ack != want {
			t.Errorf("confirm %d: tag %d ack %v; want tag %d ack %v (x acked, the refused r nacked, P acked)", i, c.DeliveryTag, c.Ack, i+1, want)
		}
	}
}
