package amqp_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
)

func TestE2EQueueServerNamed(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	ch := openChannel(t, dial(t, url))
	seen := map[string]bool{}
	for range 3 {
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			t.Fatalf("declare: %v", err)
		}
		if !strings.HasPrefix(q.Name, "amq.gen-") {
			t.Fatalf("server-named queue %q does not start with amq.gen-", q.Name)
		}
		if seen[q.Name] {
			t.Fatalf("server-named queue %q handed out twice", q.Name)
		}
		seen[q.Name] = true
		// The name works everywhere a client name does.
		publishBody(t, ch, "", q.Name, "m")
		if n := readyCount(t, ch, q.Name); n != 1 {
			t.Fatalf("queue %s has %d messages, want 1", q.Name, n)
		}
	}
}

// TestE2EQueueDeclareOk: declare-ok carries the ready-message and consumer
// counts, for a redeclaration and a passive declare alike.
func TestE2EQueueDeclareOk(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	q := declareQueue(t, ch, "counted", nil)
	for i := range 3 {
		publishBody(t, ch, "", q, fmt.Sprint(i))
	}
	consume(t, openChannel(t, conn), declareQueue(t, ch, "consumed", nil), false, nil)
	for _, passive := range []bool{false, true} {
		var got amqp091.Queue
		var err error
		if passive {
			got, err = ch.QueueDeclarePassive(q, false, false, false, false, nil)
		} else {
			got, err = ch.QueueDeclare(q, false, false, false, false, nil)
		}
		if err != nil {
			t.Fatalf("declare (passive %v): %v", passive, err)
		}
		if got.Messages != 3 || got.Consumers != 0 {
			t.Errorf("declare-ok (passive %v) = %+v, want 3 messages, 0 consumers", passive, got)
		}
	}
	if n := consumerCount(t, ch, "consumed"); n != 1 {
		t.Errorf("consumer count %d, want 1", n)
	}
}

func TestE2EQueueChannelErrors(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	setup := openChannel(t, conn)
	declareQueue(t, setup, "plain", nil)
	declareQueue(t, setup, "limited", amqp091.Table{"x-max-length": int32(10)})
	declareQueue(t, setup, "in-use", nil)
	consume(t, openChannel(t, conn), "in-use", false, nil)
	declareQueue(t, setup, "full", nil)
	publishBody(t, setup, "", "full", "m")

	for _, tc := range []struct {
		name string
		op   func(ch *amqp091.Channel) error
		code int
		text []string
	}{
		{"passive declare of a missing queue", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclarePassive("missing", false, false, false, false, nil)
			return err
		}, amqp091.NotFound, []string{"no queue 'missing' in vhost '/'"}},
		{"declare amq. name", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("amq.mine", false, false, false, false, nil)
			return err
		}, amqp091.AccessRefused, []string{"queue name 'amq.mine' contains reserved prefix 'amq.*'"}},
		{"redeclare durable", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("plain", true, false, false, false, nil)
			return err
		}, amqp091.PreconditionFailed, []string{"inequivalent arg 'durable' for queue 'plain' in vhost '/': received 'true' but current is 'false'"}},
		{"redeclare auto-delete", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("plain", false, true, false, false, nil)
			return err
		}, amqp091.PreconditionFailed, []string{"inequivalent arg 'auto_delete'"}},
		{"redeclare with another x-max-length", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("limited", false, false, false, false, amqp091.Table{"x-max-length": int32(11)})
			return err
		}, amqp091.PreconditionFailed, []string{"inequivalent arg 'x-max-length' for queue 'limited'"}},
		{"redeclare without x-max-length", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("limited", false, false, false, false, nil)
			return err
		}, amqp091.PreconditionFailed, []string{"inequivalent arg 'x-max-length'"}},
		{"delete if-unused with a consumer", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDelete("in-use", true, false, false)
			return err
		}, amqp091.PreconditionFailed, []string{"queue 'in-use' in vhost '/' in use"}},
		{"delete if-empty with a message", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDelete("full", false, true, false)
			return err
		}, amqp091.PreconditionFailed, []string{"queue 'full' in vhost '/' not empty"}},
		{"purge a missing queue", func(ch *amqp091.Channel) error {
			_, err := ch.QueuePurge("missing", false)
			return err
		}, amqp091.NotFound, nil},
		{"consume from a missing queue", func(ch *amqp091.Channel) error {
			_, err := ch.Consume("missing", "", false, false, false, false, nil)
			return err
		}, amqp091.NotFound, nil},
		{"get from a missing queue", func(ch *amqp091.Channel) error {
			_, _, err := ch.Get("missing", false)
			return err
		}, amqp091.NotFound, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := openChannel(t, conn)
			e := wantAMQPError(t, tc.op(ch), tc.code)
			wantReplyText(t, e, tc.text...)
			assertConnUsable(t, conn)
		})
	}
	// The refused deletes deleted nothing.
	for _, q := range []string{"in-use", "full"} {
		if !queueExists(t, conn, q) {
			t.Errorf("queue %s deleted by a refused conditional delete", q)
		}
	}
}

func TestE2EQueueInvalidArgs(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	for i, tc := range []struct {
		args amqp091.Table
		text string // after "invalid arg '<key>' for queue '<q>' in vhost '/': "
	}{
		{amqp091.Table{"x-max-length": "abc"}, "{unacceptable_type,longstr}"},
		{amqp091.Table{"x-max-length": int32(-1)}, "{value_negative,-1}"},
		{amqp091.Table{"x-max-length-bytes": "10"}, "{unacceptable_type,longstr}"},
		{amqp091.Table{"x-message-ttl": int32(-5)}, "{value_negative,-5}"},
		{amqp091.Table{"x-message-ttl": "10"}, "{unacceptable_type,longstr}"},
		{amqp091.Table{"x-expires": int32(0)}, "{value_zero,0}"},
		{amqp091.Table{"x-overflow": "bogus"}, "invalid_overflow"},
		{amqp091.Table{"x-max-priority": int32(256)}, "{max_value_exceeded,256}"},
		{amqp091.Table{"x-dead-letter-routing-key": "rk"}, "routing_key_but_no_dlx_defined"},
		{amqp091.Table{"x-single-active-consumer": "yes"}, "{unacceptable_type,longstr}"},
	} {
		var key string
		for k := range tc.args {
			key = k
		}
		t.Run(fmt.Sprintf("%s=%v", key, tc.args[key]), func(t *testing.T) {
			ch := openChannel(t, conn)
			name := fmt.Sprintf("bad-args-%d", i)
			_, err := ch.QueueDeclare(name, false, false, false, false, tc.args)
			e := wantAMQPError(t, err, amqp091.PreconditionFailed)
			wantReplyText(t, e, fmt.Sprintf("invalid arg '%s' for queue '%s' in vhost '/': %s", key, name, tc.text))
			assertConnUsable(t, conn)
			if queueExists(t, conn, name) {
				t.Fatalf("queue %s created despite invalid arguments", name)
			}
		})
	}
	// A dead-letter-exchange of the wrong type is refused with the
	// channel's own wording.
	ch := openChannel(t, conn)
	_, err := ch.QueueDeclare("bad-dlx", false, false, false, false, amqp091.Table{"x-dead-letter-exchange": int32(1)})
	e := wantAMQPError(t, err, amqp091.PreconditionFailed)
	wantReplyText(t, e, "x-dead-letter-exchange")
	assertConnUsable(t, conn)
}

// TestE2EExclusiveQueue: an exclusive queue is usable only by its
// connection (405 RESOURCE_LOCKED elsewhere) and goes with it.
func TestE2EExclusiveQueue(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	owner := dial(t, url)
	other := dial(t, url)
	och := openChannel(t, owner)
	if _, err := och.QueueDeclare("excl", false, false, true, false, nil); err != nil {
		t.Fatalf("declare exclusive: %v", err)
	}
	declareExchange(t, och, "excl-x", "fanout", nil)

	for _, tc := range []struct {
		name string
		op   func(ch *amqp091.Channel) error
	}{
		{"declare exclusive", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("excl", false, false, true, false, nil)
			return err
		}},
		{"declare non-exclusive", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("excl", false, false, false, false, nil)
			return err
		}},
		{"passive declare", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclarePassive("excl", false, false, false, false, nil)
			return err
		}},
		{"consume", func(ch *amqp091.Channel) error {
			_, err := ch.Consume("excl", "", false, false, false, false, nil)
			return err
		}},
		{"get", func(ch *amqp091.Channel) error {
			_, _, err := ch.Get("excl", false)
			return err
		}},
		{"bind", func(ch *amqp091.Channel) error { return ch.QueueBind("excl", "", "excl-x", false, nil) }},
		{"purge", func(ch *amqp091.Channel) error {
			_, err := ch.QueuePurge("excl", false)
			return err
		}},
		{"delete", func(ch *amqp091.Channel) error {
			_, err := ch.QueueDelete("excl", false, false, false)
			return err
		}},
	} {
		t.Run("other connection "+tc.name, func(t *testing.T) {
			ch := openChannel(t, other)
			e := wantAMQPError(t, tc.op(ch), amqp091.ResourceLocked)
			wantReplyText(t, e, "cannot obtain exclusive access to locked queue 'excl' in vhost '/'")
			assertConnUsable(t, other)
		})
	}

	// The owner can do all of it.
	bindQueue(t, och, "excl", "", "excl-x", nil)
	publishBody(t, och, "excl-x", "", "mine")
	if d := get(t, och, "excl", true); string(d.Body) != "mine" {
		t.Fatalf("owner got %q", d.Body)
	}
	consume(t, openChannel(t, owner), "excl", false, nil)

	// Closing the owner deletes the queue.
	if err := owner.Close(); err != nil {
		t.Fatalf("close owner: %v", err)
	}
	eventually(t, waitTimeout, "exclusive queue deleted after its connection closed", func() bool {
		return !queueExists(t, other, "excl")
	})
	// And the name is free again for another connection.
	if _, err := openChannel(t, other).QueueDeclare("excl", false, false, true, false, nil); err != nil {
		t.Fatalf("redeclare by another connection after the owner left: %v", err)
	}
}

func TestE2EAutoDeleteQueue(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	if _, err := ch.QueueDeclare("auto", false, true, false, false, nil); err != nil {
		t.Fatalf("declare: %v", err)
	}
	// Without ever having had a consumer it stays.
	if !queueExists(t, conn, "auto") {
		t.Fatalf("auto-delete queue without consumers vanished")
	}
	ch1, ch2 := openChannel(t, conn), openChannel(t, conn)
	consumeTag(t, ch1, "auto", "c1", false, nil)
	consumeTag(t, ch2, "auto", "c2", false, nil)
	if err := ch1.Cancel("c1", false); err != nil {
		t.Fatalf("cancel c1: %v", err)
	}
	if n := consumerCount(t, ch, "auto"); n != 1 {
		t.Fatalf("after one of two cancels the queue has %d consumers, want 1 (and must exist)", n)
	}
	if err := ch2.Cancel("c2", false); err != nil {
		t.Fatalf("cancel c2: %v", err)
	}
	eventually(t, waitTimeout, "auto-delete queue deleted after its last consumer cancelled", func() bool {
		return !queueExists(t, conn, "auto")
	})
}

func TestE2EQueuePurge(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	q := declareQueue(t, ch, "purged", nil)
	for i := range 4 {
		publishBody(t, ch, "", q, fmt.Sprint(i))
	}
	// One delivered but unacked: purge leaves it alone.
	getter := openChannel(t, conn)
	get(t, getter, q, false)
	n, err := ch.QueuePurge(q, false)
	if err != nil {
		t.Fatalf("purge: %v", err)
	}
	if n != 3 {
		t.Fatalf("purge returned %d, want 3 (ready messages only)", n)
	}
	if n := readyCount(t, ch, q); n != 0 {
		t.Fatalf("%d messages ready after purge", n)
	}
	if err := getter.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if n := readyCount(t, ch, q); n != 1 {
		t.Fatalf("%d messages ready after the unacked one's channel closed, want 1", n)
	}
	if n, err := ch.QueuePurge(q, false); err != nil || n != 1 {
		t.Fatalf("second purge = %d, %v; want 1", n, err)
	}
}

func TestE2EQueueDelete(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	q := declareQueue(t, ch, "doomed", nil)
	declareExchange(t, ch, "doomed-x", "fanout", nil)
	bindQueue(t, ch, q, "", "doomed-x", nil)
	for i := range 3 {
		publishBody(t, ch, "", q, fmt.Sprint(i))
	}
	n, err := ch.QueueDelete(q, true, false, false) // if-unused: no consumers, fine
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	if n != 3 {
		t.Fatalf("delete-ok message count %d, want 3", n)
	}
	if queueExists(t, conn, q) {
		t.Fatalf("queue exists after delete")
	}
	// Deleting a missing queue succeeds with 0, as in RabbitMQ.
	if n, err := ch.QueueDelete("never-declared", false, false, false); err != nil || n != 0 {
		t.Fatalf("delete of a missing queue = %d, %v; want 0, nil", n, err)
	}
	// if-empty on an empty queue succeeds; the binding went with the queue.
	q2 := declareQueue(t, ch, "doomed", nil)
	if _, err := ch.QueueDelete(q2, false, true, false); err != nil {
		t.Fatalf("delete if-empty of an empty queue: %v", err)
	}
	q3 := declareQueue(t, ch, "doomed", nil)
	publishBody(t, ch, "doomed-x", "", "m")
	if n := readyCount(t, ch, q3); n != 0 {
		t.Fatalf("a recreated queue got %d messages through its predecessor's binding", n)
	}
}

// deadLetterQueue declares name and a consumer on it.
func deadLetterQueue(t *testing.T, conn *amqp091.Connection, name string) <-chan amqp091.Delivery {
	t.Helper()
	ch := openChannel(t, conn)
	declareQueue(t, ch, name, nil)
	return consume(t, ch, name, true, nil)
}

// checkDeath checks the newest x-death entry of a dead-lettered delivery and
// the x-first-death-* headers.
func checkDeath(t *testing.T, d amqp091.Delivery, reason, queue, exchange string, keys []string, count int64) {
	t.Helper()
	e := xDeath(t, d, 0)
	if e["reason"] != reason || e["queue"] != queue || e["exchange"] != exchange {
		t.Errorf("x-death reason/queue/exchange = %v/%v/%v, want %s/%s/%q", e["reason"], e["queue"], e["exchange"], reason, queue, exchange)
	}
	if c, ok := e["count"].(int64); !ok || c != count {
		t.Errorf("x-death count = %#v, want int64(%d)", e["count"], count)
	}
	var want []any
	for _, k := range keys {
		want = append(want, k)
	}
	if !fieldEqual(e["routing-keys"], want) {
		t.Errorf("x-death routing-keys = %#v, want %#v", e["routing-keys"], want)
	}
	if ts, ok := e["time"].(time.Time); !ok {
		t.Errorf("x-death time = %#v, want a timestamp", e["time"])
	} else if d := time.Since(ts); d < -time.Minute || d > time.Minute {
		t.Errorf("x-death time %v is not close to now", ts)
	}
	if d.Headers["x-first-death-reason"] != reason && count == 1 {
		t.Errorf("x-first-death-reason = %#v, want %s", d.Headers["x-first-death-reason"], reason)
	}
	if d.Headers["x-first-death-queue"] != queue && count == 1 {
		t.Errorf("x-first-death-queue = %#v, want %s", d.Headers["x-first-death-queue"], queue)
	}
}

func TestE2EMessageTTL(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	dead := deadLetterQueue(t, conn, "ttl-dlq")
	ch := openChannel(t, conn)
	for _, tc := range []struct {
		queue string
		ttl   int32
	}{
		{"ttl-50ms", 50},
		{"ttl-0", 0}, // no consumer: expires at once
	} {
		t.Run(tc.queue, func(t *testing.T) {
			declareQueue(t, ch, tc.queue, amqp091.Table{
				"x-message-ttl":             tc.ttl,
				"x-dead-letter-exchange":    "",
				"x-dead-letter-routing-key": "ttl-dlq",
			})
			publish(t, ch, "", tc.queue, amqp091.Publishing{Body: []byte("expire-me"), Headers: amqp091.Table{"mine": "kept"}})
			d := recv(t, dead)
			if string(d.Body) != "expire-me" {
				t.Fatalf("dead letter %q", d.Body)
			}
			if d.RoutingKey != "ttl-dlq" {
				t.Errorf("dead letter routing key %q, want the x-dead-letter-routing-key ttl-dlq", d.RoutingKey)
			}
			if d.Headers["mine"] != "kept" {
				t.Errorf("original header lost: %v", d.Headers)
			}
			checkDeath(t, d, "expired", tc.queue, "", []string{tc.queue}, 1)
			if n := readyCount(t, ch, tc.queue); n != 0 {
				t.Fatalf("%d messages left in %s after expiry", n, tc.queue)
			}
		})
	}
}

func TestE2EMessageTTLWithConsumer(t *testing.T) {
	t.Parallel()
	// A message within its TTL is delivered normally; TTL 0 with a waiting
	// consumer is delivered ("now or never").
	url, _, _ := startServer(t, amqp.Config{})
	ch := openChannel(t, dial(t, url))
	q := declareQueue(t, ch, "ttl-live", amqp091.Table{"x-message-ttl": int32(0)})
	deliveries := consume(t, ch, q, true, nil)
	publishBody(t, ch, "", q, "now")
	if d := recv(t, deliveries); string(d.Body) != "now" {
		t.Fatalf("got %q", d.Body)
	}
}

func TestE2EPerMessageExpiration(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	dead := deadLetterQueue(t, conn, "exp-dlq")
	ch := openChannel(t, conn)
	q := declareQueue(t, ch, "exp-q", amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "exp-dlq"})
	publish(t, ch, "", q, amqp091.Publishing{Body: []byte("short"), Expiration: "50"})
	d := recv(t, dead)
	if string(d.Body) != "short" {
		t.Fatalf("dead letter %q", d.Body)
	}
	checkDeath(t, d, "expired", q, "", []string{q}, 1)
	if e := xDeath(t, d, 0); e["original-expiration"] != "50" {
		t.Errorf("x-death original-expiration = %#v, want \"50\"", e["original-expiration"])
	}
	if d.Expiration != "" {
		t.Errorf("dead letter keeps expiration %q, want it removed", d.Expiration)
	}

	// A message with a long expiration stays.
	publish(t, ch, "", q, amqp091.Publishing{Body: []byte("long"), Expiration: "600000"})
	if got := get(t, ch, q, true); string(got.Body) != "long" || got.Expiration != "600000" {
		t.Fatalf("got %q expiration %q, want \"long\" with expiration 600000", got.Body, got.Expiration)
	}

	// An invalid expiration is a 406 channel error.
	bad := openChannel(t, conn)
	closed := notifyChannelClose(bad)
	publish(t, bad, "", q, amqp091.Publishing{Body: []byte("bad"), Expiration: "abc"})
	e := waitClosedWith(t, closed, amqp091.PreconditionFailed, "channel publishing expiration \"abc\"")
	wantReplyText(t, e, "invalid expiration 'abc': no_integer")
	assertConnUsable(t, conn)
}

// TestE2EQueueExpires: an unused queue with x-expires is deleted. The check
// reads the broker directly: a passive declare counts as a use and would
// keep restarting the interval.
func TestE2EQueueExpires(t *testing.T) {
	t.Parallel()
	url, _, broker := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	// From before the declare, where the server starts the interval: timed
	// from after the declares and the consume, a test goroutine held up
	// there for 100 ms would see the queue go early.
	start := time.Now()
	declareQueue(t, ch, "idle", amqp091.Table{"x-expires": int32(200)})
	// busy gets its consumer within its interval. A test goroutine held up
	// longer than that between the declare and the consume finds it gone,
	// rightly, and tries again; a consume refused sooner is a failure.
	for {
		declared := time.Now()
		declareQueue(t, ch, "busy", amqp091.Table{"x-expires": int32(200)})
		_, err := openChannel(t, conn).Consume("busy", "", false, false, false, false, nil)
		if err == nil {
			break
		}
		if took := time.Since(declared); took < 200*time.Millisecond {
			t.Fatalf("basic.consume %v after declaring busy: %v", took, err)
		}
		wantAMQPError(t, err, amqp091.NotFound)
	}
	vh := broker.VHost("/")
	eventually(t, waitTimeout, "queue with x-expires 200ms deleted", func() bool { return vh.Queue("idle") == nil })
	if elapsed := time.Since(start); elapsed < 200*time.Millisecond {
		t.Errorf("queue deleted %v after its declare was sent, before its 200ms x-expires", elapsed)
	}
	if queueExists(t, conn, "idle") {
		t.Fatalf("expired queue still visible to clients")
	}
	// A queue with a consumer is in use and does not expire.
	if vh.Queue("busy") == nil {
		t.Fatalf("queue with a consumer expired")
	}
}

func TestE2EMaxLength(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	for _, tc := range []struct {
		name    string
		args    amqp091.Table
		publish []string
		keep    []string
		dropped []string
	}{
		{"x-max-length drop-head", amqp091.Table{"x-max-length": int32(2)},
			[]string{"m1", "m2", "m3", "m4"}, []string{"m3", "m4"}, []string{"m1", "m2"}},
		{"x-max-length explicit drop-head", amqp091.Table{"x-max-length": int64(1), "x-overflow": "drop-head"},
			[]string{"m1", "m2"}, []string{"m2"}, []string{"m1"}},
		{"x-max-length 0", amqp091.Table{"x-max-length": int32(0)},
			[]string{"m1"}, nil, []string{"m1"}},
		{"x-max-length-bytes", amqp091.Table{"x-max-length-bytes": int32(10)},
			[]string{"aaaaa", "bbbbb", "ccccc"}, []string{"bbbbb", "ccccc"}, []string{"aaaaa"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := strings.ReplaceAll(tc.name, " ", "_")
			dlq := q + "-dlq"
			dead := deadLetterQueue(t, conn, dlq)
			args := amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
			for k, v := range tc.args {
				args[k] = v
			}
			declareQueue(t, ch, q, args)
			for _, b := range tc.publish {
				publishBody(t, ch, "", q, b)
			}
			if n := readyCount(t, ch, q); n != len(tc.keep) {
				t.Fatalf("queue holds %d messages, want %d", n, len(tc.keep))
			}
			for _, want := range tc.keep {
				if d := get(t, ch, q, true); string(d.Body) != want {
					t.Fatalf("got %q, want %q (the newest are kept, in order)", d.Body, want)
				}
			}
			got := recvN(t, dead, len(tc.dropped))
			if !slices.Equal(bodies(got), tc.dropped) {
				t.Fatalf("dead-lettered %q, want %q", bodies(got), tc.dropped)
			}
			for _, d := range got {
				checkDeath(t, d, "maxlen", q, "", []string{q}, 1)
			}
		})
	}
}

func TestE2EOverflowRejectPublish(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	for _, tc := range []struct {
		overflow   string
		deadLetter bool
	}{
		{"reject-publish", false},
		{"reject-publish-dlx", true},
	} {
		t.Run(tc.overflow, func(t *testing.T) {
			q, dlq := "rp-"+tc.overflow, "rp-"+tc.overflow+"-dlq"
			ch, confirms, _ := confirmChannel(t, conn, 3)
			declareQueue(t, ch, dlq, nil)
			declareQueue(t, ch, q, amqp091.Table{
				"x-max-length": int32(1), "x-overflow": tc.overflow,
				"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq,
			})
			for _, b := range []string{"first", "second", "third"} {
				publishBody(t, ch, "", q, b)
			}
			for i, wantAck := range []bool{true, false, false} {
				c := waitConfirm(t, confirms)
				if c.DeliveryTag != uint64(i+1) || c.Ack != wantAck {
					t.Fatalf("confirm %+v, want tag %d ack=%v", c, i+1, wantAck)
				}
			}
			if n := readyCount(t, ch, q); n != 1 {
				t.Fatalf("queue holds %d, want 1", n)
			}
			if d := get(t, ch, q, true); string(d.Body) != "first" {
				t.Fatalf("queue kept %q, want the first (oldest) message", d.Body)
			}
			if !tc.deadLetter {
				if n := readyCount(t, ch, dlq); n != 0 {
					t.Fatalf("reject-publish dead-lettered %d refused messages, want none", n)
				}
				return
			}
			eventually(t, waitTimeout, "refused messages dead-lettered", func() bool { return readyCount(t, ch, dlq) == 2 })
			for _, want := range []string{"second", "third"} {
				d := get(t, ch, dlq, true)
				if string(d.Body) != want {
					t.Fatalf("dead-lettered %q, want %q", d.Body, want)
				}
				checkDeath(t, d, "maxlen", q, "", []string{q}, 1)
			}
		})
	}
}

func TestE2EDeadLetterOnReject(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	declareExchange(t, ch, "dl-src", "direct", nil)
	declareExchange(t, ch, "dlx", "fanout", nil)
	dead := deadLetterQueue(t, conn, "dl-dead")
	bindQueue(t, ch, "dl-dead", "", "dlx", nil)
	work := declareQueue(t, ch, "dl-work", amqp091.Table{"x-dead-letter-exchange": "dlx"})
	bindQueue(t, ch, work, "rk", "dl-src", nil)

	wch := openChannel(t, conn)
	deliveries := consume(t, wch, work, false, nil)
	for _, tc := range []struct {
		name   string
		settle func(d amqp091.Delivery) error
	}{
		{"reject", func(d amqp091.Delivery) error { return d.Reject(false) }},
		{"nack", func(d amqp091.Delivery) error { return d.Nack(false, false) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			publish(t, ch, "dl-src", "rk", amqp091.Publishing{Body: []byte(tc.name), Headers: amqp091.Table{"h": "v"}})
			if err := tc.settle(recv(t, deliveries)); err != nil {
				t.Fatalf("settle: %v", err)
			}
			d := recv(t, dead)
			if string(d.Body) != tc.name {
				t.Fatalf("dead letter %q, want %q", d.Body, tc.name)
			}
			if d.Exchange != "dlx" || d.RoutingKey != "rk" {
				t.Errorf("dead letter via %q/%q, want dlx with the original key rk", d.Exchange, d.RoutingKey)
			}
			if d.Headers["h"] != "v" {
				t.Errorf("original header lost: %v", d.Headers)
			}
			checkDeath(t, d, "rejected", work, "dl-src", []string{"rk"}, 1)
			if d.Headers["x-first-death-exchange"] != "dl-src" {
				t.Errorf("x-first-death-exchange = %#v, want dl-src", d.Headers["x-first-death-exchange"])
			}
		})
	}
	// reject with requeue=true does not dead-letter.
	publishBody(t, ch, "dl-src", "rk", "requeued")
	first := recv(t, deliveries)
	if err := first.Reject(true); err != nil {
		t.Fatalf("reject requeue: %v", err)
	}
	again := recv(t, deliveries)
	if string(again.Body) != "requeued" || !again.Redelivered {
		t.Fatalf("got %q redelivered=%v, want the requeued message redelivered", again.Body, again.Redelivered)
	}
	if err := again.Ack(false); err != nil {
		t.Fatalf("ack: %v", err)
	}
	expectNoDelivery(t, dead, "requeue=true")
}

// TestE2EDeadLetterCount: a message rejected into a queue that dead-letters
// back to itself gets one x-death entry whose count grows.
func TestE2EDeadLetterCount(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	ch := openChannel(t, dial(t, url))
	q := declareQueue(t, ch, "loop", amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "loop"})
	deliveries := consume(t, ch, q, false, nil)
	publishBody(t, ch, "", q, "boomerang")
	d := recv(t, deliveries)
	if _, ok := d.Headers["x-death"]; ok {
		t.Fatalf("fresh message has x-death: %v", d.Headers)
	}
	for count := int64(1); count <= 3; count++ {
		if err := d.Reject(false); err != nil {
			t.Fatalf("reject: %v", err)
		}
		d = recv(t, deliveries)
		deaths, _ := d.Headers["x-death"].([]any)
		if len(deaths) != 1 {
			t.Fatalf("after %d rejections x-death has %d entries, want 1: %#v", count, len(deaths), d.Headers["x-death"])
		}
		checkDeath(t, d, "rejected", q, "", []string{q}, count)
	}
	if err := d.Ack(false); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

func TestE2EMaxPriority(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	ch := openChannel(t, dial(t, url))
	q := declareQueue(t, ch, "prio", amqp091.Table{"x-max-priority": int32(10)})
	for _, m := range []struct {
		body string
		prio uint8
	}{{"p1", 1}, {"p5a", 5}, {"p9", 9}, {"p0", 0}, {"p5b", 5}, {"p20", 20}, {"none", 0}} {
		publish(t, ch, "", q, amqp091.Publishing{Body: []byte(m.body), Priority: m.prio})
	}
	// Higher first, FIFO within a priority; above x-max-priority counts as
	// the maximum.
	want := []string{"p20", "p9", "p5a", "p5b", "p1", "p0", "none"}
	got := bodies(recvN(t, consume(t, ch, q, true, nil), len(want)))
	if !slices.Equal(got, want) {
		t.Fatalf("delivery order %q, want %q", got, want)
	}
}

func TestE2ESingleActiveConsumer(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	pub := openChannel(t, conn)
	q := declareQueue(t, pub, "sac", amqp091.Table{"x-single-active-consumer": true})
	ch1, ch2 := openChannel(t, conn), openChannel(t, conn)
	first := consumeTag(t, ch1, q, "first", true, nil)
	second := consumeTag(t, ch2, q, "second", true, nil)
	for i := range 6 {
		publishBody(t, pub, "", q, fmt.Sprint("a", i))
	}
	// All six go to the first consumer; round-robin would have split them.
	if got := bodies(recvN(t, first, 6)); !slices.Equal(got, []string{"a0", "a1", "a2", "a3", "a4", "a5"}) {
		t.Fatalf("active consumer got %q", got)
	}
	expectNoDelivery(t, second, "inactive single-active consumer")

	if err := ch1.Cancel("first", false); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	for i := range 3 {
		publishBody(t, pub, "", q, fmt.Sprint("b", i))
	}
	if got := bodies(recvN(t, second, 3)); !slices.Equal(got, []string{"b0", "b1", "b2"}) {
		t.Fatalf("second consumer got %q after the first cancelled", got)
	}
}
