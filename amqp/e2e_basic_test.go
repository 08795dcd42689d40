package amqp_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

func TestE2ERoundRobin(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	pub := openChannel(t, conn)
	q := declareQueue(t, pub, "rr", nil)
	c1 := consume(t, openChannel(t, conn), q, true, nil)
	c2 := consume(t, openChannel(t, conn), q, true, nil)
	const n = 10
	for i := range n {
		publishBody(t, pub, "", q, fmt.Sprint(i))
	}
	got := map[string]int{}
	var n1, n2 int
	deadline := time.After(waitTimeout)
	for n1+n2 < n {
		select {
		case d := <-c1:
			n1++
			got[string(d.Body)]++
		case d := <-c2:
			n2++
			got[string(d.Body)]++
		case <-deadline:
			t.Fatalf("got %d+%d of %d deliveries", n1, n2, n)
		}
	}
	if n1 != n/2 || n2 != n/2 {
		t.Errorf("consumers got %d and %d messages, want %d each (round-robin)", n1, n2, n/2)
	}
	for i := range n {
		if got[fmt.Sprint(i)] != 1 {
			t.Errorf("message %d delivered %d times, want once", i, got[fmt.Sprint(i)])
		}
	}
}

func TestE2EConsumerPriorities(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	pub := openChannel(t, conn)

	t.Run("higher priority gets everything while it has room", func(t *testing.T) {
		q := declareQueue(t, pub, "prio-all", nil)
		low := consume(t, openChannel(t, conn), q, true, amqp091.Table{"x-priority": int32(1)})
		high := consume(t, openChannel(t, conn), q, true, amqp091.Table{"x-priority": int32(10)})
		for i := range 5 {
			publishBody(t, pub, "", q, fmt.Sprint(i))
		}
		recvN(t, high, 5)
		expectNoDelivery(t, low, "low-priority consumer while the high-priority one had room")
	})

	t.Run("lower priority gets the overflow of a full higher one", func(t *testing.T) {
		q := declareQueue(t, pub, "prio-overflow", nil)
		hch := openChannel(t, conn)
		if err := hch.Qos(1, 0, false); err != nil {
			t.Fatalf("qos: %v", err)
		}
		high := consume(t, hch, q, false, amqp091.Table{"x-priority": int32(10)})
		low := consume(t, openChannel(t, conn), q, true, amqp091.Table{"x-priority": int32(-5)})
		for i := range 3 {
			publishBody(t, pub, "", q, fmt.Sprint("m", i))
		}
		h := recv(t, high)
		if string(h.Body) != "m0" {
			t.Fatalf("high-priority consumer got %q first, want m0", h.Body)
		}
		if got := bodies(recvN(t, low, 2)); !slices.Equal(got, []string{"m1", "m2"}) {
			t.Fatalf("low-priority consumer got %q, want [m1 m2]", got)
		}
		if err := h.Ack(false); err != nil {
			t.Fatalf("ack: %v", err)
		}
		publishBody(t, pub, "", q, "m3")
		if d := recv(t, high); string(d.Body) != "m3" {
			t.Fatalf("high-priority consumer with room again got %q, want m3", d.Body)
		}
	})
}

func TestE2EExclusiveConsumer(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	setup := openChannel(t, conn)
	for _, tc := range []struct {
		name                 string
		firstExcl, secondExc bool
	}{
		{"exclusive then any", true, false},
		{"exclusive then exclusive", true, true},
		{"shared then exclusive", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := declareQueue(t, setup, "excl-consumer-"+strings.ReplaceAll(tc.name, " ", "-"), nil)
			if _, err := openChannel(t, conn).Consume(q, "first", false, tc.firstExcl, false, false, nil); err != nil {
				t.Fatalf("first consume: %v", err)
			}
			ch := openChannel(t, conn)
			_, err := ch.Consume(q, "second", false, tc.secondExc, false, false, nil)
			e := wantAMQPError(t, err, amqp091.AccessRefused)
			wantReplyText(t, e, fmt.Sprintf("queue '%s' in vhost '/' in exclusive use", q))
			assertConnUsable(t, conn)
		})
	}
}

// TestE2EPrefetchPerConsumer: basic.qos global=false limits each consumer
// (RabbitMQ's per_consumer_qos).
func TestE2EPrefetchPerConsumer(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	pub := openChannel(t, conn)
	q := declareQueue(t, pub, "prefetch", nil)
	ch := openChannel(t, conn)
	if err := ch.Qos(1, 0, false); err != nil {
		t.Fatalf("qos: %v", err)
	}
	c1 := consumeTag(t, ch, q, "c1", false, nil)
	for i := range 2 {
		publishBody(t, pub, "", q, fmt.Sprint("m", i))
	}
	d1 := recv(t, c1)
	if n := readyCount(t, pub, q); n != 1 {
		t.Fatalf("%d messages ready, want 1 held back by prefetch 1", n)
	}
	expectNoDelivery(t, c1, "second delivery beyond prefetch 1")

	// A second consumer on the same channel has its own prefetch of 1.
	c2 := consumeTag(t, ch, q, "c2", false, nil)
	d2 := recv(t, c2)
	if string(d2.Body) != "m1" {
		t.Fatalf("second consumer got %q, want m1", d2.Body)
	}
	publishBody(t, pub, "", q, "m2")
	if n := readyCount(t, pub, q); n != 1 {
		t.Fatalf("%d messages ready with both consumers full, want 1", n)
	}
	if err := d1.Ack(false); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if d := recv(t, c1); string(d.Body) != "m2" {
		t.Fatalf("after ack c1 got %q, want m2", d.Body)
	}
}

// TestE2EPrefetchGlobal: basic.qos global=true limits the whole channel,
// across consumers and queues.
func TestE2EPrefetchGlobal(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	pub := openChannel(t, conn)
	qa := declareQueue(t, pub, "global-a", nil)
	qb := declareQueue(t, pub, "global-b", nil)
	ch := openChannel(t, conn)
	if err := ch.Qos(1, 0, true); err != nil {
		t.Fatalf("qos: %v", err)
	}
	ca := consume(t, ch, qa, false, nil)
	cb := consume(t, ch, qb, false, nil)
	publishBody(t, pub, "", qa, "a")
	publishBody(t, pub, "", qb, "b")
	var first amqp091.Delivery
	select {
	case first = <-ca:
	case first = <-cb:
	case <-time.After(waitTimeout):
		t.Fatalf("no delivery within %v", waitTimeout)
	}
	if n := readyCount(t, pub, qa) + readyCount(t, pub, qb); n != 1 {
		t.Fatalf("%d messages ready across the two queues, want 1 held back by the channel prefetch of 1", n)
	}
	expectNoDelivery(t, ca, "channel prefetch 1 exceeded")
	expectNoDelivery(t, cb, "channel prefetch 1 exceeded")
	if err := first.Ack(false); err != nil {
		t.Fatalf("ack: %v", err)
	}
	var second amqp091.Delivery
	if string(first.Body) == "a" {
		second = recv(t, cb)
	} else {
		second = recv(t, ca)
	}
	if string(second.Body) == string(first.Body) {
		t.Fatalf("got %q twice", first.Body)
	}
}

func TestE2EBasicGet(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	q := declareQueue(t, ch, "get-q", nil)
	getEmpty(t, ch, q)
	for _, b := range []string{"one", "two"} {
		publishBody(t, ch, "", q, b)
	}
	d1 := get(t, ch, q, false)
	if string(d1.Body) != "one" || d1.MessageCount != 1 || d1.Redelivered {
		t.Fatalf("get-ok %q message-count %d redelivered %v, want \"one\", 1, false", d1.Body, d1.MessageCount, d1.Redelivered)
	}
	if d1.RoutingKey != q || d1.Exchange != "" {
		t.Errorf("get-ok exchange/key %q/%q, want \"\"/%q", d1.Exchange, d1.RoutingKey, q)
	}
	d2 := get(t, ch, q, true)
	if string(d2.Body) != "two" || d2.MessageCount != 0 {
		t.Fatalf("get-ok %q message-count %d, want \"two\", 0", d2.Body, d2.MessageCount)
	}
	if d2.DeliveryTag <= d1.DeliveryTag {
		t.Errorf("delivery tags %d then %d, want increasing", d1.DeliveryTag, d2.DeliveryTag)
	}
	getEmpty(t, ch, q)
	if err := d1.Ack(false); err != nil {
		t.Fatalf("ack: %v", err)
	}
	// The ack was applied: closing the channel requeues nothing.
	if err := ch.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if n := readyCount(t, openChannel(t, conn), q); n != 0 {
		t.Fatalf("%d messages ready after ack, want 0", n)
	}
}

func TestE2EAckMultiple(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	pub := openChannel(t, conn)
	q := declareQueue(t, pub, "ack-multi", nil)
	ch := openChannel(t, conn)
	ds := consume(t, ch, q, false, nil)
	for i := range 5 {
		publishBody(t, pub, "", q, fmt.Sprint("m", i))
	}
	got := recvN(t, ds, 5)
	// Ack m1 alone, then everything up to m3 at once: m4 stays unacked.
	if err := ch.Ack(got[1].DeliveryTag, false); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if err := ch.Ack(got[3].DeliveryTag, true); err != nil {
		t.Fatalf("ack multiple: %v", err)
	}
	if err := ch.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if n := readyCount(t, pub, q); n != 1 {
		t.Fatalf("%d messages requeued on close, want 1 (m4)", n)
	}
	if d := get(t, pub, q, true); string(d.Body) != "m4" || !d.Redelivered {
		t.Fatalf("requeued %q redelivered=%v, want m4 redelivered", d.Body, d.Redelivered)
	}
}

func TestE2ENackMultipleRequeue(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	pub := openChannel(t, conn)
	q := declareQueue(t, pub, "nack-multi", nil)
	ch := openChannel(t, conn)
	ds := consume(t, ch, q, false, nil)
	for i := range 3 {
		publishBody(t, pub, "", q, fmt.Sprint("m", i))
	}
	first := recvN(t, ds, 3)
	for _, d := range first {
		if d.Redelivered {
			t.Fatalf("first delivery of %q marked redelivered", d.Body)
		}
	}
	if err := ch.Nack(first[2].DeliveryTag, true, true); err != nil {
		t.Fatalf("nack: %v", err)
	}
	again := recvN(t, ds, 3)
	if got := bodies(again); !slices.Equal(got, []string{"m0", "m1", "m2"}) {
		t.Fatalf("redelivered %q, want [m0 m1 m2] in their original order", got)
	}
	for _, d := range again {
		if !d.Redelivered {
			t.Errorf("requeued %q not marked redelivered", d.Body)
		}
		if d.DeliveryTag <= first[2].DeliveryTag {
			t.Errorf("redelivery of %q reuses delivery tag %d", d.Body, d.DeliveryTag)
		}
	}
	if err := ch.Ack(again[2].DeliveryTag, true); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if n := readyCount(t, pub, q); n != 0 {
		t.Fatalf("%d ready after ack, want 0", n)
	}
}

func TestE2ERejectWithoutDeadLetterExchange(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	q := declareQueue(t, ch, "reject-drop", nil)
	publishBody(t, ch, "", q, "m")
	if err := get(t, ch, q, false).Reject(false); err != nil {
		t.Fatalf("reject: %v", err)
	}
	if err := ch.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if n := readyCount(t, openChannel(t, conn), q); n != 0 {
		t.Fatalf("%d messages after reject requeue=false without a DLX, want 0 (dropped)", n)
	}
}

func TestE2EUnknownDeliveryTag(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	setup := openChannel(t, conn)
	q := declareQueue(t, setup, "tags", nil)
	for _, tc := range []struct {
		name   string
		settle func(t *testing.T, ch *amqp091.Channel) uint64 // returns the bad tag
	}{
		{"ack never delivered", func(t *testing.T, ch *amqp091.Channel) uint64 {
			ch.Ack(99, false)
			return 99
		}},
		{"ack twice", func(t *testing.T, ch *amqp091.Channel) uint64 {
			publishBody(t, ch, "", q, "m")
			d := get(t, ch, q, false)
			ch.Ack(d.DeliveryTag, false)
			ch.Ack(d.DeliveryTag, false)
			return d.DeliveryTag
		}},
		{"ack of an auto-ack delivery", func(t *testing.T, ch *amqp091.Channel) uint64 {
			publishBody(t, ch, "", q, "m")
			d := get(t, ch, q, true)
			ch.Ack(d.DeliveryTag, false)
			return d.DeliveryTag
		}},
		{"nack never delivered", func(t *testing.T, ch *amqp091.Channel) uint64 {
			ch.Nack(7, false, true)
			return 7
		}},
		{"reject never delivered", func(t *testing.T, ch *amqp091.Channel) uint64 {
			ch.Reject(8, false)
			return 8
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := openChannel(t, conn)
			closed := notifyChannelClose(ch)
			tag := tc.settle(t, ch)
			e := waitClosedWith(t, closed, amqp091.PreconditionFailed, "channel")
			wantReplyText(t, e, fmt.Sprintf("unknown delivery tag %d", tag))
			assertConnUsable(t, conn)
		})
	}
}

func TestE2ERecover(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	pub := openChannel(t, conn)
	q := declareQueue(t, pub, "recover", nil)
	ch := openChannel(t, conn)
	ds := consume(t, ch, q, false, nil)
	publishBody(t, pub, "", q, "a")
	publishBody(t, pub, "", q, "b")
	recvN(t, ds, 2)
	if err := ch.Recover(true); err != nil {
		t.Fatalf("basic.recover: %v", err)
	}
	again := recvN(t, ds, 2)
	if got := bodies(again); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("recovered %q, want [a b]", got)
	}
	for _, d := range again {
		if !d.Redelivered {
			t.Errorf("recovered %q not marked redelivered", d.Body)
		}
	}
}

func TestE2ERequeueOnClose(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	observer := dial(t, url)
	och := openChannel(t, observer)
	for _, tc := range []struct {
		name  string
		close func(conn *amqp091.Connection, ch *amqp091.Channel) error
	}{
		{"channel close", func(_ *amqp091.Connection, ch *amqp091.Channel) error { return ch.Close() }},
		{"connection close", func(conn *amqp091.Connection, _ *amqp091.Channel) error { return conn.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := declareQueue(t, och, "requeue-"+strings.ReplaceAll(tc.name, " ", "-"), nil)
			for i := range 3 {
				publishBody(t, och, "", q, fmt.Sprint("m", i))
			}
			conn := dial(t, url)
			ch := openChannel(t, conn)
			ds := consume(t, ch, q, false, nil)
			got := recvN(t, ds, 3)
			if err := got[0].Ack(false); err != nil {
				t.Fatalf("ack: %v", err)
			}
			if err := tc.close(conn, ch); err != nil {
				t.Fatalf("close: %v", err)
			}
			eventually(t, waitTimeout, "unacked messages requeued", func() bool { return readyCount(t, och, q) == 2 })
			for _, want := range []string{"m1", "m2"} {
				d := get(t, och, q, true)
				if string(d.Body) != want || !d.Redelivered {
					t.Fatalf("got %q redelivered=%v, want %s redelivered", d.Body, d.Redelivered, want)
				}
			}
		})
	}
}

func TestE2EMandatoryReturn(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch, confirms, returns := confirmChannel(t, conn, 4)
	q := declareQueue(t, ch, "mandatory-q", nil)
	for _, tc := range []struct {
		name, exchange, key string
		mandatory, returned bool
	}{
		{"mandatory no binding", "amq.direct", "nowhere", true, true},
		{"mandatory no queue of that name", "", "no-such-queue", true, true},
		{"mandatory routed", "", q, true, false},
		{"not mandatory no route", "amq.direct", "nowhere", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte("body of " + tc.name)
			publishFlags(t, ch, tc.exchange, tc.key, tc.mandatory, false, amqp091.Publishing{Body: body, MessageId: "id-1"})
			c := waitConfirm(t, confirms)
			if !c.Ack {
				t.Fatalf("confirm %+v, want an ack (routed or not)", c)
			}
			// basic.return goes out before the ack, so it has been
			// dispatched by the time the confirm arrived.
			select {
			case r := <-returns:
				if !tc.returned {
					t.Fatalf("unexpected basic.return %d %q", r.ReplyCode, r.ReplyText)
				}
				if r.ReplyCode != amqp091.NoRoute || r.ReplyText != "NO_ROUTE" {
					t.Errorf("basic.return %d %q, want 312 \"NO_ROUTE\"", r.ReplyCode, r.ReplyText)
				}
				if r.Exchange != tc.exchange || r.RoutingKey != tc.key || !bytes.Equal(r.Body, body) || r.MessageId != "id-1" {
					t.Errorf("basic.return of %q/%q %q (id %q), want the message as published", r.Exchange, r.RoutingKey, r.Body, r.MessageId)
				}
			default:
				if tc.returned {
					t.Fatalf("no basic.return before the confirm")
				}
			}
		})
	}
	// Outside confirm mode too.
	plain := openChannel(t, conn)
	plainReturns := plain.NotifyReturn(make(chan amqp091.Return, 1))
	publishFlags(t, plain, "amq.topic", "no.route", true, false, amqp091.Publishing{Body: []byte("x")})
	select {
	case r := <-plainReturns:
		if r.ReplyCode != amqp091.NoRoute {
			t.Fatalf("basic.return %d, want 312", r.ReplyCode)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("no basic.return within %v", waitTimeout)
	}
}

func TestE2EPublisherConfirms(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	const n = 200
	ch, confirms, _ := confirmChannel(t, conn, n)
	q := declareQueue(t, ch, "confirmed", nil)
	for i := range n {
		if i%2 == 0 {
			publishBody(t, ch, "", q, fmt.Sprint(i))
		} else {
			publishBody(t, ch, "amq.direct", "unroutable", fmt.Sprint(i))
		}
	}
	for i := 1; i <= n; i++ {
		c := waitConfirm(t, confirms)
		if c.DeliveryTag != uint64(i) || !c.Ack {
			t.Fatalf("confirm %+v, want ack of %d (routed and unroutable alike)", c, i)
		}
	}
	if got := readyCount(t, ch, q); got != n/2 {
		t.Fatalf("%d messages routed, want %d", got, n/2)
	}
	// Deferred confirmations match their own publish.
	dc, err := ch.PublishWithDeferredConfirm("", q, false, false, amqp091.Publishing{Body: []byte("deferred")})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case <-dc.Done():
		if !dc.Acked() {
			t.Fatalf("deferred confirm nacked")
		}
	case <-time.After(waitTimeout):
		t.Fatalf("no deferred confirm within %v", waitTimeout)
	}
}

func TestE2ETransactions(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	observer := openChannel(t, conn)

	t.Run("publishes are invisible until commit", func(t *testing.T) {
		q := declareQueue(t, observer, "tx-commit", nil)
		ch := openChannel(t, conn)
		if err := ch.Tx(); err != nil {
			t.Fatalf("tx.select: %v", err)
		}
		publishBody(t, ch, "", q, "a")
		publishBody(t, ch, "", q, "b")
		// A round trip on the tx channel first, so the publishes were read.
		if n := readyCount(t, ch, q); n != 0 {
			t.Fatalf("%d messages visible before commit", n)
		}
		if err := ch.TxCommit(); err != nil {
			t.Fatalf("tx.commit: %v", err)
		}
		if n := readyCount(t, observer, q); n != 2 {
			t.Fatalf("%d messages after commit, want 2", n)
		}
		// The channel stays transactional: the next batch waits for its own commit.
		publishBody(t, ch, "", q, "c")
		if n := readyCount(t, ch, q); n != 2 {
			t.Fatalf("%d messages before the second commit, want 2", n)
		}
		if err := ch.TxCommit(); err != nil {
			t.Fatalf("tx.commit: %v", err)
		}
		if got := bodies([]amqp091.Delivery{get(t, observer, q, true), get(t, observer, q, true), get(t, observer, q, true)}); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Fatalf("committed %q, want [a b c]", got)
		}
	})

	t.Run("rollback discards publishes", func(t *testing.T) {
		q := declareQueue(t, observer, "tx-rollback", nil)
		ch := openChannel(t, conn)
		if err := ch.Tx(); err != nil {
			t.Fatalf("tx.select: %v", err)
		}
		publishBody(t, ch, "", q, "discarded")
		if err := ch.TxRollback(); err != nil {
			t.Fatalf("tx.rollback: %v", err)
		}
		if err := ch.TxCommit(); err != nil {
			t.Fatalf("tx.commit: %v", err)
		}
		if n := readyCount(t, observer, q); n != 0 {
			t.Fatalf("%d messages after rollback and an empty commit, want 0", n)
		}
	})

	for _, tc := range []struct {
		name      string
		finish    func(ch *amqp091.Channel) error
		wantReady int // after the tx channel closes
	}{
		{"acks are applied on commit", (*amqp091.Channel).TxCommit, 0},
		{"acks are discarded on rollback", (*amqp091.Channel).TxRollback, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := declareQueue(t, observer, "tx-ack-"+strings.ReplaceAll(tc.name, " ", "-"), nil)
			publishBody(t, observer, "", q, "m")
			ch := openChannel(t, conn)
			if err := ch.Tx(); err != nil {
				t.Fatalf("tx.select: %v", err)
			}
			d := get(t, ch, q, false)
			if err := d.Ack(false); err != nil {
				t.Fatalf("ack: %v", err)
			}
			if err := tc.finish(ch); err != nil {
				t.Fatalf("finish: %v", err)
			}
			// Closing the channel requeues whatever is still unacked.
			if err := ch.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if n := readyCount(t, observer, q); n != tc.wantReady {
				t.Fatalf("%d messages ready after the tx channel closed, want %d", n, tc.wantReady)
			}
		})
	}

	t.Run("commit without select", func(t *testing.T) {
		ch := openChannel(t, conn)
		e := wantAMQPError(t, ch.TxCommit(), amqp091.PreconditionFailed)
		wantReplyText(t, e, "channel is not transactional")
		assertConnUsable(t, conn)
	})
}

func TestE2EConfirmTxExclusive(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	for _, tc := range []struct {
		name  string
		first func(*amqp091.Channel) error
		then  func(*amqp091.Channel) error
		text  string
	}{
		{"confirm on a tx channel", (*amqp091.Channel).Tx,
			func(ch *amqp091.Channel) error { return ch.Confirm(false) }, "cannot switch from tx to confirm mode"},
		{"tx on a confirm channel", func(ch *amqp091.Channel) error { return ch.Confirm(false) },
			(*amqp091.Channel).Tx, "cannot switch from confirm to tx mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := openChannel(t, conn)
			if err := tc.first(ch); err != nil {
				t.Fatalf("first mode: %v", err)
			}
			e := wantAMQPError(t, tc.then(ch), amqp091.PreconditionFailed)
			wantReplyText(t, e, tc.text)
			assertConnUsable(t, conn)
		})
	}
}

func TestE2EConsumerCancelNotify(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	q := declareQueue(t, ch, "cancel-notify", nil)
	cancels := ch.NotifyCancel(make(chan string, 1))
	ds := consumeTag(t, ch, q, "watched", false, nil)
	if _, err := openChannel(t, conn).QueueDelete(q, false, false, false); err != nil {
		t.Fatalf("queue.delete: %v", err)
	}
	select {
	case tag := <-cancels:
		if tag != "watched" {
			t.Fatalf("basic.cancel for %q, want watched", tag)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("no basic.cancel within %v of deleting the queue", waitTimeout)
	}
	select {
	case _, ok := <-ds:
		if ok {
			t.Fatalf("delivery after the consumer was cancelled")
		}
	case <-time.After(waitTimeout):
		t.Fatalf("client did not close the consumer's delivery channel")
	}
	// The channel itself is fine.
	declareQueue(t, ch, "", nil)
}

// TestE2EQueueDeleteOkBeforeCancel: queue.delete of a queue with consumers
// on the deleting channel answers queue.delete-ok before the basic.cancel
// notifications, as RabbitMQ does (a Node.js client's test depends on it).
// A raw client reads the frames in the order they are written.
func TestE2EQueueDeleteOkBeforeCancel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		tags   []string
		noWait bool
	}{
		{name: "one consumer", tags: []string{"c1"}},
		{name: "three consumers", tags: []string{"c1", "c2", "c3"}},
		{name: "nowait", tags: []string{"c1", "c2"}, noWait: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, _, _ := startServer(t, amqp.Config{})
			c := rawDial(t, hostPort(t, url))
			c.handshake(nil)
			c.sendMethod(1, &wire.ChannelOpen{})
			expectMethod[*wire.ChannelOpenOk](c)
			c.sendMethod(1, &wire.QueueDeclare{Queue: "doomed"})
			expectMethod[*wire.QueueDeclareOk](c)
			for _, tag := range tc.tags {
				c.sendMethod(1, &wire.BasicConsume{Queue: "doomed", ConsumerTag: tag})
				expectMethod[*wire.BasicConsumeOk](c)
			}
			c.sendMethod(1, &wire.QueueDelete{Queue: "doomed", NoWait: tc.noWait})
			if !tc.noWait {
				expectMethod[*wire.QueueDeleteOk](c)
			}
			got := make(map[string]bool)
			for range tc.tags {
				got[expectMethod[*wire.BasicCancel](c).ConsumerTag] = true
			}
			for _, tag := range tc.tags {
				if !got[tag] {
					t.Fatalf("no basic.cancel for %q (got %v)", tag, got)
				}
			}
			// The channel is still usable.
			c.sendMethod(1, &wire.QueueDeclare{Queue: "doomed"})
			expectMethod[*wire.QueueDeclareOk](c)
		})
	}
}

// TestE2EChannelFlow: channel.flow active=false from the client pauses
// deliveries to the channel, active=true resumes them (AMQP 0-9-1 §1.5.2.3).
// Note: RabbitMQ itself answers active=false with 540 NOT_IMPLEMENTED
// "active=false" (a connection error); ferrymq implements the spec instead.
func TestE2EChannelFlow(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	pub := openChannel(t, conn)
	q := declareQueue(t, pub, "flow", nil)
	ch := openChannel(t, conn)
	ds := consume(t, ch, q, true, nil)
	publishBody(t, pub, "", q, "before")
	if d := recv(t, ds); string(d.Body) != "before" {
		t.Fatalf("got %q", d.Body)
	}
	if err := ch.Flow(false); err != nil {
		t.Fatalf("channel.flow false: %v", err)
	}
	for i := range 3 {
		publishBody(t, pub, "", q, fmt.Sprint("paused", i))
	}
	if n := readyCount(t, pub, q); n != 3 {
		t.Fatalf("%d messages held while flow is off, want 3", n)
	}
	expectNoDelivery(t, ds, "channel.flow active=false")
	// Other channels are unaffected.
	other := declareQueue(t, pub, "flow-other", nil)
	ods := consume(t, openChannel(t, conn), other, true, nil)
	publishBody(t, pub, "", other, "unaffected")
	recv(t, ods)

	if err := ch.Flow(true); err != nil {
		t.Fatalf("channel.flow true: %v", err)
	}
	if got := bodies(recvN(t, ds, 3)); !slices.Equal(got, []string{"paused0", "paused1", "paused2"}) {
		t.Fatalf("after flow on got %q", got)
	}
}

func TestE2EMaxMessageSize(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{MaxMessageSize: 1024})
	conn := dial(t, url)
	setup := openChannel(t, conn)
	q := declareQueue(t, setup, "size-limited", nil)
	for _, tc := range []struct {
		size int
		ok   bool
	}{
		{0, true},
		{1024, true},
		{1025, false},
		{200 << 10, false}, // spans several frames
	} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			ch := openChannel(t, conn)
			closed := notifyChannelClose(ch)
			publish(t, ch, "", q, amqp091.Publishing{Body: bytes.Repeat([]byte{'x'}, tc.size)})
			if tc.ok {
				if d := get(t, ch, q, true); len(d.Body) != tc.size {
					t.Fatalf("got %d bytes back, want %d", len(d.Body), tc.size)
				}
				return
			}
			e := waitClosedWith(t, closed, amqp091.PreconditionFailed, "channel publishing an oversized message")
			wantReplyText(t, e, fmt.Sprintf("message size %d is larger than configured max size 1024", tc.size))
			if n := readyCount(t, setup, q); n != 0 {
				t.Fatalf("oversized message was enqueued (%d ready)", n)
			}
			assertConnUsable(t, conn)
		})
	}
}

func TestE2EImmediateNotImplemented(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	closed := notifyConnClose(conn)
	ch := openChannel(t, conn)
	q := declareQueue(t, ch, "", nil)
	publishFlags(t, ch, "", q, false, true, amqp091.Publishing{Body: []byte("now!")})
	e := waitClosedWith(t, closed, amqp091.NotImplemented, "connection")
	wantReplyText(t, e, "immediate=true")
}

// TestE2EPropertiesRoundTrip: every basic property and every field-table
// type survives publish -> deliver and publish -> get-ok unchanged.
func TestE2EPropertiesRoundTrip(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	ts := time.Unix(1700000000, 0)
	headers := amqp091.Table{
		"bool":         true,
		"false":        false,
		"int8":         int8(-8),
		"uint8":        uint8(8),
		"int16":        int16(-16),
		"uint16":       uint16(16),
		"int32":        int32(-32),
		"uint32":       uint32(32),
		"int64":        int64(-1 << 40),
		"float32":      float32(3.5),
		"float64":      float64(6.25),
		"decimal":      amqp091.Decimal{Scale: 2, Value: 12345},
		"string":       "héllo",
		"empty-string": "",
		"bytes":        []byte{0, 1, 2, 0xff},
		"timestamp":    ts,
		"void":         nil,
		"array":        []any{int32(1), "two", true, amqp091.Table{"k": "v"}, []any{int64(3)}, nil},
		"empty-array":  []any{},
		"table":        amqp091.Table{"nested": amqp091.Table{"deep": int32(1), "list": []any{"x"}}},
		"empty-table":  amqp091.Table{},
	}
	msg := amqp091.Publishing{
		Headers:         headers,
		ContentType:     "application/json",
		ContentEncoding: "gzip",
		DeliveryMode:    amqp091.Persistent,
		Priority:        7,
		CorrelationId:   "corr-1",
		ReplyTo:         "reply-q",
		Expiration:      "600000",
		MessageId:       "msg-1",
		Timestamp:       ts,
		Type:            "order.created",
		UserId:          "guest",
		AppId:           "e2e",
		Body:            []byte(`{"ok":true}`),
	}
	check := func(t *testing.T, d amqp091.Delivery) {
		t.Helper()
		for _, f := range []struct {
			name      string
			got, want any
		}{
			{"content-type", d.ContentType, msg.ContentType},
			{"content-encoding", d.ContentEncoding, msg.ContentEncoding},
			{"delivery-mode", d.DeliveryMode, msg.DeliveryMode},
			{"priority", d.Priority, msg.Priority},
			{"correlation-id", d.CorrelationId, msg.CorrelationId},
			{"reply-to", d.ReplyTo, msg.ReplyTo},
			{"expiration", d.Expiration, msg.Expiration},
			{"message-id", d.MessageId, msg.MessageId},
			{"type", d.Type, msg.Type},
			{"user-id", d.UserId, msg.UserId},
			{"app-id", d.AppId, msg.AppId},
			{"body", string(d.Body), string(msg.Body)},
		} {
			if f.got != f.want {
				t.Errorf("%s = %#v, want %#v", f.name, f.got, f.want)
			}
		}
		if !d.Timestamp.Equal(ts) {
			t.Errorf("timestamp = %v, want %v", d.Timestamp, ts)
		}
		for k, want := range headers {
			got, ok := d.Headers[k]
			if !ok {
				t.Errorf("header %q missing", k)
				continue
			}
			if !fieldEqual(got, want) {
				t.Errorf("header %q = %#v (%T), want %#v (%T)", k, got, got, want, want)
			}
		}
		if len(d.Headers) != len(headers) {
			t.Errorf("got %d headers, want %d: %v", len(d.Headers), len(headers), d.Headers)
		}
	}
	t.Run("get", func(t *testing.T) {
		q := declareQueue(t, ch, "props-get", nil)
		publish(t, ch, "", q, msg)
		check(t, get(t, ch, q, true))
	})
	t.Run("deliver", func(t *testing.T) {
		q := declareQueue(t, ch, "props-deliver", nil)
		publish(t, ch, "", q, msg)
		cch := openChannel(t, conn)
		check(t, recv(t, consume(t, cch, q, true, nil)))
	})
	t.Run("no properties", func(t *testing.T) {
		q := declareQueue(t, ch, "props-none", nil)
		publish(t, ch, "", q, amqp091.Publishing{Body: []byte("bare")})
		d := get(t, ch, q, true)
		if d.ContentType != "" || d.Headers != nil || d.DeliveryMode != 0 || d.Priority != 0 || !d.Timestamp.IsZero() {
			t.Errorf("bare message gained properties: %+v", d)
		}
	})
}

func TestE2EUserIDValidation(t *testing.T) {
	t.Parallel()
	users := core.DefaultUsers()
	addUser(t, users, "alice", "pw")
	url, _, _ := startServer(t, amqp.Config{Auth: core.NewAuth(users), LoginFailureDelay: time.Millisecond})
	for _, tc := range []struct {
		user, userID string
		ok           bool
	}{
		{"guest", "guest", true},
		{"guest", "", true},
		{"alice", "alice", true},
		{"guest", "alice", false},
		{"alice", "guest", false},
		{"guest", "Guest", false},
	} {
		t.Run(tc.user+" as "+tc.userID, func(t *testing.T) {
			pw := map[string]string{"guest": "guest", "alice": "pw"}[tc.user]
			conn := dial(t, withCreds(t, url, tc.user, pw, "/"))
			ch := openChannel(t, conn)
			q := declareQueue(t, ch, "", nil)
			closed := notifyChannelClose(ch)
			publish(t, ch, "", q, amqp091.Publishing{UserId: tc.userID, Body: []byte("m")})
			if tc.ok {
				if d := get(t, ch, q, true); d.UserId != tc.userID {
					t.Fatalf("user-id %q delivered as %q", tc.userID, d.UserId)
				}
				return
			}
			e := waitClosedWith(t, closed, amqp091.PreconditionFailed, "channel publishing a foreign user-id")
			wantReplyText(t, e, fmt.Sprintf("user_id property set to '%s' but authenticated user was '%s'", tc.userID, tc.user))
			assertConnUsable(t, conn)
		})
	}
}

// TestE2EBodies: bodies from empty to several MiB, around the frame-size
// boundaries, through both delivery paths.
func TestE2EBodies(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	q := declareQueue(t, ch, "bodies", nil)
	ds := consume(t, openChannel(t, conn), declareQueue(t, ch, "bodies-consumed", nil), true, nil)
	const payloadMax = 131072 - wire.FrameOverhead
	for _, size := range []int{0, 1, payloadMax - 1, payloadMax, payloadMax + 1, 2 * payloadMax, 1 << 20, 5<<20 + 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			body := make([]byte, size)
			for i := range body {
				body[i] = byte(i*31 + i>>8)
			}
			publish(t, ch, "", q, amqp091.Publishing{Body: body})
			if d := get(t, ch, q, true); !bytes.Equal(d.Body, body) {
				t.Fatalf("get: %d bytes back, want %d identical", len(d.Body), size)
			}
			publish(t, ch, "", "bodies-consumed", amqp091.Publishing{Body: body})
			if d := recv(t, ds); !bytes.Equal(d.Body, body) {
				t.Fatalf("deliver: %d bytes back, want %d identical", len(d.Body), size)
			}
		})
	}
}

// TestE2EServerConsumerTag: basic.consume with an empty tag gets a server
// generated "amq.ctag-" tag (amqp091-go always sends its own, hence raw).
func TestE2EServerConsumerTag(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	declareQueue(t, openChannel(t, dial(t, url)), "ctag-q", nil)
	c := rawDial(t, hostPort(t, url))
	c.handshake(nil)
	c.sendMethod(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](c)
	tags := map[string]bool{}
	for range 2 {
		c.sendMethod(1, &wire.BasicConsume{Queue: "ctag-q"})
		ok := expectMethod[*wire.BasicConsumeOk](c)
		if !strings.HasPrefix(ok.ConsumerTag, "amq.ctag-") {
			t.Fatalf("server-generated consumer tag %q, want prefix amq.ctag-", ok.ConsumerTag)
		}
		if tags[ok.ConsumerTag] {
			t.Fatalf("consumer tag %q generated twice", ok.ConsumerTag)
		}
		tags[ok.ConsumerTag] = true
	}
}

// TestE2EConfirmsRaw checks the confirms as sent on the wire, which
// amqp091-go hides behind its resequencing: publishes written in one batch
// are each settled exactly once, by acks and nacks that may use multiple.
func TestE2EConfirmsRaw(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	setup := openChannel(t, dial(t, url))
	declareQueue(t, setup, "raw-confirm", nil)
	declareQueue(t, setup, "raw-confirm-limited", amqp091.Table{"x-max-length": int32(3), "x-overflow": "reject-publish"})

	c := rawDial(t, hostPort(t, url))
	tune := c.handshake(nil)
	c.sendMethod(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](c)
	c.sendMethod(1, &wire.ConfirmSelect{})
	expectMethod[*wire.ConfirmSelectOk](c)

	// Tags 1-10 to a plain queue, 11-20 to a queue that takes 3 and refuses
	// the rest, all in one write.
	const n = 20
	want := make([]string, n+1)
	var batch []byte
	for i := 1; i <= n; i++ {
		q, outcome := "raw-confirm", "ack"
		if i > 10 {
			q = "raw-confirm-limited"
			if i > 13 {
				outcome = "nack"
			}
		}
		want[i] = outcome
		body := []byte(fmt.Sprint("m", i))
		batch = wire.AppendMethodFrame(batch, 1, &wire.BasicPublish{RoutingKey: q})
		batch = wire.AppendContentHeaderFrame(batch, 1, wire.ClassBasic, uint64(len(body)), &core.Properties{})
		batch = wire.AppendBodyFrames(batch, 1, body, tune.FrameMax)
	}
	c.write(batch)

	got := make([]string, n+1)
	settled, multiples := 0, 0
	settle := func(tag uint64, multiple bool, outcome string) {
		t.Helper()
		if tag == 0 || tag > n {
			t.Fatalf("%s of tag %d, published only 1..%d", outcome, tag, n)
		}
		if got[tag] != "" {
			t.Fatalf("%s of tag %d, already settled by %s", outcome, tag, got[tag])
		}
		lo := tag
		if multiple {
			multiples++
			lo = 1
		}
		for i := lo; i <= tag; i++ {
			if got[i] == "" {
				got[i] = outcome
				settled++
			}
		}
	}
	for settled < n {
		_, m := c.readMethod()
		switch m := m.(type) {
		case *wire.BasicAck:
			settle(m.DeliveryTag, m.Multiple, "ack")
		case *wire.BasicNack:
			settle(m.DeliveryTag, m.Multiple, "nack")
		default:
			t.Fatalf("got %T %+v while waiting for confirms", m, m)
		}
	}
	for i := 1; i <= n; i++ {
		if got[i] != want[i] {
			t.Errorf("tag %d settled by %s, want %s", i, got[i], want[i])
		}
	}
	t.Logf("%d publishes settled, %d confirms with multiple=true", n, multiples)
}
