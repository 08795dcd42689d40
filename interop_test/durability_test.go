package interop_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func dialBroker(t *testing.T, b *Broker) (*amqp.Connection, *amqp.Channel) {
	t.Helper()
	conn, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatalf("dial %s: %v", b.URL, err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return conn, ch
}

// restart stops b (SIGTERM) and starts a broker on the same data directory.
func restart(t *testing.T, b *Broker, args ...string) *Broker {
	t.Helper()
	if err := b.Stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, b.Output())
	}
	return StartBroker(t, append([]string{"--data-dir", b.DataDir}, args...)...)
}

// confirmWait bounds the wait for one publisher confirm of a persistent
// message: an fsync away, which a loaded machine's disk (a test writing
// a gigabyte, say) can hold for seconds.
const confirmWait = 30 * time.Second

// publisher streams messages with publisher confirms, at most window in
// flight, and records which sequence numbers were confirmed.
type publisher struct {
	ch        *amqp.Channel
	confirms  chan amqp.Confirmation
	inflight  int
	window    int
	nextTag   uint64
	confirmed []uint64 // body sequence numbers, in confirm order
	pending   map[uint64]uint64
}

func newPublisher(t *testing.T, ch *amqp.Channel, window int) *publisher {
	t.Helper()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return &publisher{ch: ch, confirms: ch.NotifyPublish(make(chan amqp.Confirmation, window)), window: window, pending: map[uint64]uint64{}}
}

// publish sends body-numbered message seq; it returns false if the
// connection failed (the broker was killed).
func (p *publisher) publish(exchange, key string, seq uint64, size int) bool {
	for p.inflight >= p.window {
		if !p.await(confirmWait) {
			return false
		}
	}
	body := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(body, seq)
	err := p.ch.PublishWithContext(context.Background(), exchange, key, false, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent, Body: body,
	})
	if err != nil {
		return false
	}
	p.nextTag++
	p.pending[p.nextTag] = seq
	p.inflight++
	return true
}

// await takes one confirm, waiting up to d for it (d == 0: only one
// already received). It returns false on timeout, nack or a closed
// connection.
func (p *publisher) await(d time.Duration) bool {
	var c amqp.Confirmation
	var ok bool
	if d == 0 {
		select {
		case c, ok = <-p.confirms:
		default:
			return false
		}
	} else {
		select {
		case c, ok = <-p.confirms:
		case <-time.After(d):
			return false
		}
	}
	if !ok || !c.Ack {
		return false
	}
	p.confirmed = append(p.confirmed, p.pending[c.DeliveryTag])
	delete(p.pending, c.DeliveryTag)
	p.inflight--
	return true
}

// drain consumes every message of queue with basic.get and returns the
// body sequence numbers and redelivered flags.
func drain(t *testing.T, ch *amqp.Channel, queue string) (seqs []uint64, redelivered []bool) {
	t.Helper()
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatalf("get from %s: %v", queue, err)
		}
		if !ok {
			return seqs, redelivered
		}
		seqs = append(seqs, binary.BigEndian.Uint64(d.Body))
		redelivered = append(redelivered, d.Redelivered)
	}
}

// TestRestartKeepsDurableState: durable exchanges, queues (with
// arguments), bindings (exchange-to-exchange too) and persistent messages
// survive a restart, in order, with redelivered set on the ones delivered
// but not acked; transient queues and messages do not.
func TestRestartKeepsDurableState(t *testing.T) {
	b := StartBroker(t)
	_, ch := dialBroker(t, b)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ch.ExchangeDeclare("dx", "topic", true, false, false, false, nil))
	must(ch.ExchangeDeclare("tx", "topic", false, false, false, false, nil))
	_, err := ch.QueueDeclare("dq", true, false, false, false, amqp.Table{"x-max-length": int32(1000)})
	must(err)
	_, err = ch.QueueDeclare("tq", false, false, false, false, nil)
	must(err)
	must(ch.QueueBind("dq", "a.#", "dx", false, nil))
	must(ch.ExchangeBind("dx", "a.z", "amq.topic", false, nil))

	p := newPublisher(t, ch, 100)
	for i := range uint64(50) {
		if !p.publish("dx", "a.b", i, 16) {
			t.Fatal("publish failed")
		}
	}
	for p.inflight > 0 {
		if !p.await(confirmWait) {
			t.Fatal("confirm missing")
		}
	}
	// Transient messages in the durable queue, and anything in tq, go.
	must(ch.PublishWithContext(context.Background(), "", "dq", false, false, amqp.Publishing{Body: []byte("transient-x")}))
	must(ch.PublishWithContext(context.Background(), "", "tq", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("gone")}))
	// Deliver three without acking them.
	for range 3 {
		if _, ok, err := ch.Get("dq", false); err != nil || !ok {
			t.Fatalf("get: ok=%v err=%v", ok, err)
		}
	}

	b2 := restart(t, b)
	_, ch2 := dialBroker(t, b2)
	must(ch2.ExchangeDeclarePassive("dx", "topic", true, false, false, false, nil))
	if err := ch2.ExchangeDeclarePassive("tx", "topic", false, false, false, false, nil); err == nil {
		t.Fatal("transient exchange tx survived the restart")
	}
	_, ch2 = dialBroker(t, b2)
	if _, err := ch2.QueueDeclarePassive("tq", false, false, false, false, nil); err == nil {
		t.Fatal("transient queue tq survived the restart")
	}
	_, ch2 = dialBroker(t, b2)
	// The arguments came back: redeclaring with other ones is refused.
	if _, err := ch2.QueueDeclare("dq", true, false, false, false, amqp.Table{"x-max-length": int32(5)}); err == nil {
		t.Fatal("dq accepted inequivalent x-max-length after restart: arguments lost")
	}
	_, ch2 = dialBroker(t, b2)
	// Binding amq.topic -> dx -> dq still routes.
	must(ch2.PublishWithContext(context.Background(), "amq.topic", "a.z", false, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent, Body: binary.BigEndian.AppendUint64(nil, 1000),
	}))
	seqs, redelivered := drain(t, ch2, "dq")
	want := make([]uint64, 0, 51)
	for i := range uint64(50) {
		want = append(want, i)
	}
	want = append(want, 1000)
	if fmt.Sprint(seqs) != fmt.Sprint(want) {
		t.Fatalf("after restart dq holds %v\nwant %v", seqs, want)
	}
	for i, r := range redelivered {
		if r != (i < 3) {
			t.Fatalf("message %d redelivered=%v, want %v", i, r, i < 3)
		}
	}
}

// TestCrashRedelivers: messages delivered and not acked before a kill -9
// come back with redelivered set, whether a consumer or basic.get took
// them. Delivered marks are not synced per delivery (they ride along with
// group commits), so after a crash the broker, like RabbitMQ's classic
// queues after an unclean shutdown, reports every message it recovers as
// redelivered; after a clean stop only the delivered ones are (see
// TestRestartKeepsDurableState).
func TestCrashRedelivers(t *testing.T) {
	for _, tc := range []struct {
		name string
		take func(t *testing.T, ch *amqp.Channel) // delivers message 0 without acking it
	}{
		{"consumer", func(t *testing.T, ch *amqp.Channel) {
			if err := ch.Qos(1, 0, false); err != nil {
				t.Fatal(err)
			}
			ds, err := ch.Consume("rd", "", false, false, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case d := <-ds:
				if binary.BigEndian.Uint64(d.Body) != 0 || d.Redelivered {
					t.Fatalf("first delivery: body %x redelivered=%v", d.Body, d.Redelivered)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no delivery")
			}
		}},
		{"basic.get", func(t *testing.T, ch *amqp.Channel) {
			d, ok, err := ch.Get("rd", false)
			if err != nil || !ok || binary.BigEndian.Uint64(d.Body) != 0 || d.Redelivered {
				t.Fatalf("get: ok=%v err=%v", ok, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := StartBroker(t)
			_, ch := dialBroker(t, b)
			if _, err := ch.QueueDeclare("rd", true, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
			p := newPublisher(t, ch, 10)
			for i := range uint64(3) {
				if !p.publish("", "rd", i, 16) {
					t.Fatal("publish failed")
				}
			}
			for p.inflight > 0 {
				if !p.await(confirmWait) {
					t.Fatal("confirm missing")
				}
			}
			tc.take(t, ch)
			b.Kill(t)

			b = StartBroker(t, "--data-dir", b.DataDir)
			_, ch = dialBroker(t, b)
			seqs, redelivered := drain(t, ch, "rd")
			if fmt.Sprint(seqs) != "[0 1 2]" {
				t.Fatalf("after the crash rd holds %v, want [0 1 2]", seqs)
			}
			for i, r := range redelivered {
				if !r {
					t.Errorf("message %d redelivered=false after a crash", i)
				}
			}
		})
	}
}

// TestCrashKeepsConfirmedMessages kills the broker with SIGKILL while a
// publisher streams persistent messages with confirms, at several points,
// and checks after each restart that every confirmed message is there
// exactly once, in order.
func TestCrashKeepsConfirmedMessages(t *testing.T) {
	b := StartBroker(t)
	_, ch := dialBroker(t, b)
	if _, err := ch.QueueDeclare("crash", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	var next uint64
	var confirmed []uint64
	for round, killAfter := range []int{500, 3000, 9000} {
		_, ch := dialBroker(t, b)
		p := newPublisher(t, ch, 1000)
		for len(p.confirmed) < killAfter {
			if !p.publish("", "crash", next, 64) {
				t.Fatalf("round %d: publish %d failed before the kill", round, next)
			}
			next++
		}
		b.Kill(t)
		// Whatever confirms were already read off the socket count too.
		for p.await(0) {
		}
		confirmed = append(confirmed, p.confirmed...)
		b = StartBroker(t, "--data-dir", b.DataDir)
		t.Logf("round %d: killed after %d confirms (%d published)", round, len(p.confirmed), next)
	}
	_, ch = dialBroker(t, b)
	got, _ := drain(t, ch, "crash")
	seen := make(map[uint64]int, len(got))
	for i, s := range got {
		seen[s]++
		if i > 0 && s <= got[i-1] {
			t.Fatalf("out of order after crashes: %d after %d", s, got[i-1])
		}
	}
	missing := 0
	for _, s := range confirmed {
		if seen[s] != 1 {
			missing++
			if missing < 10 {
				t.Errorf("confirmed message %d present %d times, want exactly 1", s, seen[s])
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d confirmed messages lost or duplicated", missing, len(confirmed))
	}
	t.Logf("%d confirmed, %d recovered (unconfirmed ones may or may not survive)", len(confirmed), len(got))
}

// memory is a process's resident memory from /proc: anon is what the
// process itself holds (heap, stacks); file is file-backed pages mapped in,
// here Badger's memory-mapped value log, which the kernel reclaims under
// pressure. VmRSS is their sum.
type memory struct{ anon, file int64 }

func readMemory(t *testing.T, pid int) memory {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read /proc status: %v", err)
	}
	var m memory
	for _, line := range strings.Split(string(data), "\n") {
		name, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "RssAnon":
			dst = &m.anon
		case "RssFile":
			dst = &m.file
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		*dst = kb << 10
	}
	return m
}

func (m memory) String() string {
	return fmt.Sprintf("RSS %d MiB (anonymous %d MiB, file-backed %d MiB)", (m.anon+m.file)>>20, m.anon>>20, m.file>>20)
}

// TestPagingBoundsMemory: a million persistent 1 KiB messages in a queue
// with no consumer stay on disk beyond the memory budget: the memory the
// broker holds itself (anonymous RSS) stays far below the 1 GiB the bodies
// take, before and after a restart, and recovery takes seconds. The
// file-backed part of RSS is Badger's memory-mapped value log: page cache
// the kernel reclaims, logged but not limited here.
func TestPagingBoundsMemory(t *testing.T) {
	const n, size = 1_000_000, 1024
	const limit = 768 << 20
	b := StartBroker(t, "--memory-budget", strconv.Itoa(64<<20))
	_, ch := dialBroker(t, b)
	if _, err := ch.QueueDeclare("big", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, ch, 2000)
	start := time.Now()
	for i := range uint64(n) {
		if !p.publish("", "big", i, size) {
			t.Fatalf("publish %d failed", i)
		}
	}
	for p.inflight > 0 {
		if !p.await(confirmWait) {
			t.Fatal("confirm missing")
		}
	}
	t.Logf("published %d confirmed persistent %d-byte messages in %v (%.0f msg/s)",
		n, size, time.Since(start), float64(n)/time.Since(start).Seconds())
	mem := readMemory(t, b.Cmd.Process.Pid)
	t.Logf("with %d messages queued: %v", n, mem)
	if mem.anon > limit {
		t.Fatalf("anonymous RSS %d MiB with %d queued messages, want under %d MiB", mem.anon>>20, n, limit>>20)
	}

	// Recovery is the new process's start to its listeners; the clean
	// stop before it is timed apart.
	start = time.Now()
	if err := b.Stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, b.Output())
	}
	stopped := time.Since(start)
	start = time.Now()
	b2 := StartBroker(t, "--data-dir", b.DataDir, "--memory-budget", strconv.Itoa(64<<20))
	recovery := time.Since(start)
	_, ch2 := dialBroker(t, b2)
	q, err := ch2.QueueDeclarePassive("big", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	mem = readMemory(t, b2.Cmd.Process.Pid)
	t.Logf("stop in %v; restart with %d messages: %v; %v", stopped, q.Messages, recovery, mem)
	if q.Messages != n {
		t.Fatalf("recovered %d messages, want %d", q.Messages, n)
	}
	if mem.anon > limit {
		t.Fatalf("anonymous RSS %d MiB after recovering %d messages, want under %d MiB", mem.anon>>20, n, limit>>20)
	}
	if recovery > 30*time.Second {
		t.Fatalf("recovery of %d messages took %v, want seconds", n, recovery)
	}
	for i := range uint64(100) {
		d, ok, err := ch2.Get("big", true)
		if err != nil || !ok || binary.BigEndian.Uint64(d.Body) != i || len(d.Body) != size {
			t.Fatalf("message %d after restart: ok=%v err=%v", i, ok, err)
		}
	}
}

// TestDiskFullBlocksPublishers: when the store cannot write (free disk
// below --disk-free-limit, here set above what any disk has), a persistent
// publish is not confirmed, the client gets connection.blocked, and nothing
// acknowledged is lost: the messages confirmed before are all there.
func TestDiskFullBlocksPublishers(t *testing.T) {
	b := StartBroker(t)
	_, ch := dialBroker(t, b)
	if _, err := ch.QueueDeclare("full", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, ch, 10)
	for i := range uint64(10) {
		p.publish("", "full", i, 16)
	}
	for p.inflight > 0 {
		if !p.await(confirmWait) {
			t.Fatal("confirm missing before the disk filled")
		}
	}

	const oneExbibyte = 1 << 60
	b = restart(t, b, "--disk-free-limit", strconv.Itoa(oneExbibyte))
	conn, ch := dialBroker(t, b)
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	err := ch.PublishWithContext(context.Background(), "", "full", false, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent, Body: binary.BigEndian.AppendUint64(nil, 99),
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-confirms:
		if c.Ack {
			t.Fatal("a publish the store could not write was acked")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no nack for a publish the store could not write")
	}
	select {
	case bl := <-blocked:
		if !bl.Active || !strings.Contains(bl.Reason, "disk") {
			t.Fatalf("connection.blocked %+v, want active with a disk reason", bl)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection.blocked while the store cannot write")
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}

	b = restart(t, b)
	_, ch = dialBroker(t, b)
	got, _ := drain(t, ch, "full")
	if len(got) < 10 || fmt.Sprint(got[:10]) != fmt.Sprint([]uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Fatalf("after the disk-full episode the queue holds %v, want the 10 confirmed messages first", got)
	}
}
