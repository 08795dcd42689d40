package amqp_test

import (
	"fmt"
	"slices"
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
)

func TestE2EExchangeDeclareKinds(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	for _, kind := range []string{"direct", "fanout", "topic", "headers"} {
		for _, flags := range []struct{ durable, autoDelete bool }{{false, false}, {true, false}, {false, true}} {
			name := fmt.Sprintf("x-%s-%v-%v", kind, flags.durable, flags.autoDelete)
			t.Run(name, func(t *testing.T) {
				if err := ch.ExchangeDeclare(name, kind, flags.durable, flags.autoDelete, false, false, nil); err != nil {
					t.Fatalf("declare: %v", err)
				}
				// An equivalent redeclaration and a passive one succeed.
				if err := ch.ExchangeDeclare(name, kind, flags.durable, flags.autoDelete, false, false, nil); err != nil {
					t.Fatalf("redeclare: %v", err)
				}
				if err := ch.ExchangeDeclarePassive(name, kind, flags.durable, flags.autoDelete, false, false, nil); err != nil {
					t.Fatalf("passive declare: %v", err)
				}
			})
		}
	}
	// The pre-declared exchanges exist in every vhost.
	for _, name := range []string{"amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"} {
		if !exchangeExists(t, conn, name) {
			t.Errorf("pre-declared exchange %s is missing", name)
		}
	}
}

// TestE2EExchangeChannelErrors: refusals that close the channel, with
// RabbitMQ's codes and texts; the connection stays usable after each.
func TestE2EExchangeChannelErrors(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	setup := openChannel(t, conn)
	declareExchange(t, setup, "ex-direct", "direct", nil)
	declareExchange(t, setup, "ex-ae", "direct", amqp091.Table{"alternate-exchange": "somewhere"})
	declareExchange(t, setup, "ex-used", "fanout", nil)
	q := declareQueue(t, setup, "ex-used-q", nil)
	bindQueue(t, setup, q, "", "ex-used", nil)

	for _, tc := range []struct {
		name string
		op   func(ch *amqp091.Channel) error
		code int
		text []string
	}{
		{"redeclare with another type", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("ex-direct", "fanout", false, false, false, false, nil)
		}, amqp091.PreconditionFailed, []string{"inequivalent arg 'type' for exchange 'ex-direct' in vhost '/': received 'fanout' but current is 'direct'"}},
		{"redeclare durable", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("ex-direct", "direct", true, false, false, false, nil)
		}, amqp091.PreconditionFailed, []string{"inequivalent arg 'durable'"}},
		{"redeclare auto-delete", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("ex-direct", "direct", false, true, false, false, nil)
		}, amqp091.PreconditionFailed, []string{"inequivalent arg 'auto_delete'"}},
		{"redeclare internal", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("ex-direct", "direct", false, false, true, false, nil)
		}, amqp091.PreconditionFailed, []string{"inequivalent arg 'internal'"}},
		{"redeclare another alternate-exchange", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("ex-ae", "direct", false, false, false, false, amqp091.Table{"alternate-exchange": "elsewhere"})
		}, amqp091.PreconditionFailed, []string{"inequivalent arg 'alternate-exchange'"}},
		{"passive declare of a missing exchange", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclarePassive("ex-missing", "direct", false, false, false, false, nil)
		}, amqp091.NotFound, []string{"no exchange 'ex-missing' in vhost '/'"}},
		{"declare amq. name", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("amq.custom", "direct", false, false, false, false, nil)
		}, amqp091.AccessRefused, []string{"exchange name 'amq.custom' contains reserved prefix 'amq.*'"}},
		{"declare the default exchange", func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("", "direct", true, false, false, false, nil)
		}, amqp091.AccessRefused, []string{"operation not permitted on the default exchange"}},
		{"delete amq.direct", func(ch *amqp091.Channel) error {
			return ch.ExchangeDelete("amq.direct", false, false)
		}, amqp091.AccessRefused, nil},
		{"delete if-unused with bindings", func(ch *amqp091.Channel) error {
			return ch.ExchangeDelete("ex-used", true, false)
		}, amqp091.PreconditionFailed, []string{"exchange 'ex-used' in vhost '/' in use"}},
		{"bind to a missing exchange", func(ch *amqp091.Channel) error {
			return ch.QueueBind(q, "k", "ex-missing", false, nil)
		}, amqp091.NotFound, []string{"no exchange 'ex-missing' in vhost '/'"}},
		{"bind a missing queue", func(ch *amqp091.Channel) error {
			return ch.QueueBind("q-missing", "k", "ex-direct", false, nil)
		}, amqp091.NotFound, []string{"no queue 'q-missing' in vhost '/'"}},
		{"bind to the default exchange", func(ch *amqp091.Channel) error {
			return ch.QueueBind(q, "k", "", false, nil)
		}, amqp091.AccessRefused, nil},
		{"exchange-bind a missing source", func(ch *amqp091.Channel) error {
			return ch.ExchangeBind("ex-direct", "k", "ex-missing", false, nil)
		}, amqp091.NotFound, nil},
		{"headers binding with a bad x-match", func(ch *amqp091.Channel) error {
			return ch.QueueBind(q, "", "amq.headers", false, amqp091.Table{"x-match": "some"})
		}, amqp091.PreconditionFailed, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := openChannel(t, conn)
			e := wantAMQPError(t, tc.op(ch), tc.code)
			wantReplyText(t, e, tc.text...)
			if !ch.IsClosed() {
				t.Errorf("channel still open after a %d channel error", tc.code)
			}
			assertConnUsable(t, conn)
		})
	}
	// Nothing above changed the exchanges.
	if err := setup.ExchangeDeclarePassive("ex-used", "fanout", false, false, false, false, nil); err != nil {
		t.Fatalf("ex-used: %v", err)
	}
}

// TestE2EExchangeUnknownKind: an unknown exchange type is a connection
// error, 503 COMMAND_INVALID, as in RabbitMQ.
func TestE2EExchangeUnknownKind(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	closed := notifyConnClose(conn)
	ch := openChannel(t, conn)
	err := ch.ExchangeDeclare("ex-odd", "x-no-such-type", false, false, false, false, nil)
	e := wantAMQPError(t, err, amqp091.CommandInvalid)
	wantReplyText(t, e, "unknown exchange type 'x-no-such-type'")
	waitClosedWith(t, closed, amqp091.CommandInvalid, "connection")
	// The server is fine: a new connection works.
	assertConnUsable(t, dial(t, url))
}

func TestE2EExchangeDelete(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)

	declareExchange(t, ch, "del-plain", "direct", nil)
	if err := ch.ExchangeDelete("del-plain", false, false); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if exchangeExists(t, conn, "del-plain") {
		t.Fatalf("exchange still exists after delete")
	}
	// Deleting a missing exchange succeeds, as in RabbitMQ.
	if err := ch.ExchangeDelete("del-never-declared", false, false); err != nil {
		t.Fatalf("delete of a missing exchange: %v", err)
	}
	// if-unused succeeds on an exchange without bindings.
	declareExchange(t, ch, "del-unused", "fanout", nil)
	if err := ch.ExchangeDelete("del-unused", true, false); err != nil {
		t.Fatalf("delete if-unused of an unused exchange: %v", err)
	}
	// Deleting an exchange removes its bindings: a new exchange of the same
	// name routes nowhere.
	q := declareQueue(t, ch, "del-q", nil)
	declareExchange(t, ch, "del-bound", "fanout", nil)
	bindQueue(t, ch, q, "", "del-bound", nil)
	if err := ch.ExchangeDelete("del-bound", false, false); err != nil {
		t.Fatalf("delete: %v", err)
	}
	declareExchange(t, ch, "del-bound", "fanout", nil)
	publishBody(t, ch, "del-bound", "", "m")
	if n := readyCount(t, ch, q); n != 0 {
		t.Fatalf("queue got %d messages through a binding of a deleted exchange", n)
	}
}

func TestE2EExchangeAutoDelete(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	if err := ch.ExchangeDeclare("auto-x", "direct", false, true, false, false, nil); err != nil {
		t.Fatalf("declare: %v", err)
	}
	q1 := declareQueue(t, ch, "auto-q1", nil)
	q2 := declareQueue(t, ch, "auto-q2", nil)
	bindQueue(t, ch, q1, "a", "auto-x", nil)
	bindQueue(t, ch, q2, "b", "auto-x", nil)
	if err := ch.QueueUnbind(q1, "a", "auto-x", nil); err != nil {
		t.Fatalf("unbind: %v", err)
	}
	if !exchangeExists(t, conn, "auto-x") {
		t.Fatalf("auto-delete exchange deleted while it still has a binding")
	}
	if err := ch.QueueUnbind(q2, "b", "auto-x", nil); err != nil {
		t.Fatalf("unbind: %v", err)
	}
	if exchangeExists(t, conn, "auto-x") {
		t.Fatalf("auto-delete exchange still exists after its last binding went")
	}
}

func TestE2EExchangeToExchangeBinding(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	ch := openChannel(t, dial(t, url))
	declareExchange(t, ch, "e2e-src", "topic", nil)
	declareExchange(t, ch, "e2e-dst", "fanout", nil)
	q := declareQueue(t, ch, "e2e-q", nil)
	bindQueue(t, ch, q, "", "e2e-dst", nil)
	if err := ch.ExchangeBind("e2e-dst", "a.*", "e2e-src", false, nil); err != nil {
		t.Fatalf("exchange.bind: %v", err)
	}

	publishBody(t, ch, "e2e-src", "a.b", "routed")
	publishBody(t, ch, "e2e-src", "x.y", "not routed")
	if n := readyCount(t, ch, q); n != 1 {
		t.Fatalf("queue has %d messages, want 1 (only a.b matches a.*)", n)
	}
	d := get(t, ch, q, true)
	if string(d.Body) != "routed" || d.Exchange != "e2e-src" || d.RoutingKey != "a.b" {
		t.Fatalf("got %q via %q/%q, want \"routed\" with its original exchange e2e-src and key a.b", d.Body, d.Exchange, d.RoutingKey)
	}

	if err := ch.ExchangeUnbind("e2e-dst", "a.*", "e2e-src", false, nil); err != nil {
		t.Fatalf("exchange.unbind: %v", err)
	}
	publishBody(t, ch, "e2e-src", "a.b", "after unbind")
	if n := readyCount(t, ch, q); n != 0 {
		t.Fatalf("queue has %d messages after exchange.unbind, want 0", n)
	}

	// A cycle of exchange bindings delivers once and terminates.
	declareExchange(t, ch, "cycle-a", "fanout", nil)
	declareExchange(t, ch, "cycle-b", "fanout", nil)
	cq := declareQueue(t, ch, "cycle-q", nil)
	for _, b := range [][2]string{{"cycle-b", "cycle-a"}, {"cycle-a", "cycle-b"}} {
		if err := ch.ExchangeBind(b[0], "", b[1], false, nil); err != nil {
			t.Fatalf("exchange.bind %s <- %s: %v", b[0], b[1], err)
		}
	}
	bindQueue(t, ch, cq, "", "cycle-a", nil)
	bindQueue(t, ch, cq, "", "cycle-b", nil)
	publishBody(t, ch, "cycle-a", "", "once")
	if n := readyCount(t, ch, cq); n != 1 {
		t.Fatalf("queue reachable twice through a cycle has %d messages, want exactly 1", n)
	}
}

func TestE2EAlternateExchange(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	declareExchange(t, ch, "ae", "fanout", nil)
	aeQ := declareQueue(t, ch, "ae-q", nil)
	bindQueue(t, ch, aeQ, "", "ae", nil)
	declareExchange(t, ch, "main", "direct", amqp091.Table{"alternate-exchange": "ae"})
	mainQ := declareQueue(t, ch, "main-q", nil)
	bindQueue(t, ch, mainQ, "k", "main", nil)

	publishBody(t, ch, "main", "k", "routed")
	publishBody(t, ch, "main", "nowhere", "unroutable")
	if n := readyCount(t, ch, mainQ); n != 1 {
		t.Fatalf("main queue has %d messages, want 1", n)
	}
	if n := readyCount(t, ch, aeQ); n != 1 {
		t.Fatalf("alternate exchange queue has %d messages, want 1 (the unroutable one)", n)
	}
	d := get(t, ch, aeQ, true)
	if string(d.Body) != "unroutable" || d.Exchange != "main" || d.RoutingKey != "nowhere" {
		t.Fatalf("alternate got %q via %q/%q, want \"unroutable\" via main/nowhere", d.Body, d.Exchange, d.RoutingKey)
	}

	// A mandatory message taken by the alternate exchange counts as routed:
	// no basic.return, and the confirm is an ack.
	cch, confirms, returns := confirmChannel(t, conn, 1)
	publishFlags(t, cch, "main", "nowhere", true, false, amqp091.Publishing{Body: []byte("mandatory")})
	if c := waitConfirm(t, confirms); !c.Ack {
		t.Fatalf("confirm %+v, want ack", c)
	}
	select {
	case r := <-returns:
		t.Fatalf("got basic.return %d %q for a message the alternate exchange took", r.ReplyCode, r.ReplyText)
	default:
	}
}

func TestE2EInternalExchange(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	if err := ch.ExchangeDeclare("internal-x", "fanout", false, false, true, false, nil); err != nil {
		t.Fatalf("declare internal: %v", err)
	}
	q := declareQueue(t, ch, "internal-q", nil)
	bindQueue(t, ch, q, "", "internal-x", nil)
	declareExchange(t, ch, "front", "fanout", nil)
	if err := ch.ExchangeBind("internal-x", "", "front", false, nil); err != nil {
		t.Fatalf("exchange.bind: %v", err)
	}
	// Reachable through an exchange binding...
	publishBody(t, ch, "front", "", "via front")
	if n := readyCount(t, ch, q); n != 1 {
		t.Fatalf("queue behind internal exchange has %d messages, want 1", n)
	}
	// ...but not by direct publishing.
	pub := openChannel(t, conn)
	closed := notifyChannelClose(pub)
	publishBody(t, pub, "internal-x", "", "direct")
	e := waitClosedWith(t, closed, amqp091.AccessRefused, "channel publishing to an internal exchange")
	wantReplyText(t, e, "cannot publish to internal exchange 'internal-x' in vhost '/'")
	assertConnUsable(t, conn)
}

// TestE2EPublishToMissingExchange: 404 channel error.
func TestE2EPublishToMissingExchange(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	ch := openChannel(t, conn)
	closed := notifyChannelClose(ch)
	publishBody(t, ch, "no-such-exchange", "", "m")
	e := waitClosedWith(t, closed, amqp091.NotFound, "channel")
	wantReplyText(t, e, "no exchange 'no-such-exchange' in vhost '/'")
	assertConnUsable(t, conn)
}

type routeBinding struct {
	queue string // local name; the test prefixes it
	key   string
	args  amqp091.Table
}

type routeCase struct {
	key     string
	headers amqp091.Table
	want    []string // queues (local names) that get exactly one copy
}

// runRouting declares a fresh exchange of kind and one queue per distinct
// binding queue for each case, publishes once and checks which queues got
// the message: exactly one copy each, none elsewhere.
func runRouting(t *testing.T, kind string, bindings []routeBinding, cases []routeCase) {
	t.Helper()
	url, _, _ := startServer(t, amqp.Config{})
	ch := openChannel(t, dial(t, url))
	var queues []string
	for _, b := range bindings {
		if !slices.Contains(queues, b.queue) {
			queues = append(queues, b.queue)
		}
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%d:%q:%v", i, tc.key, tc.headers), func(t *testing.T) {
			x := fmt.Sprintf("%s-%d", kind, i)
			declareExchange(t, ch, x, kind, nil)
			for _, q := range queues {
				declareQueue(t, ch, x+"-"+q, nil)
			}
			for _, b := range bindings {
				bindQueue(t, ch, x+"-"+b.queue, b.key, x, b.args)
			}
			publish(t, ch, x, tc.key, amqp091.Publishing{Headers: tc.headers, Body: []byte("m")})
			var got []string
			for _, q := range queues {
				switch n := readyCount(t, ch, x+"-"+q); n {
				case 0:
				case 1:
					got = append(got, q)
				default:
					t.Errorf("queue %s got %d copies, want at most 1", q, n)
					got = append(got, q)
				}
			}
			want := slices.Clone(tc.want)
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("routed to %v, want %v", got, want)
			}
		})
	}
}

func TestE2ERoutingDirect(t *testing.T) {
	t.Parallel()
	runRouting(t, "direct", []routeBinding{
		{queue: "k1", key: "k"},
		{queue: "k2", key: "k"}, // every queue bound with the key gets a copy
		{queue: "other", key: "other"},
		{queue: "two-keys", key: "k"},
		{queue: "two-keys", key: "k2"},
		{queue: "empty", key: ""},
	}, []routeCase{
		{key: "k", want: []string{"k1", "k2", "two-keys"}},
		{key: "k2", want: []string{"two-keys"}},
		{key: "other", want: []string{"other"}},
		{key: "", want: []string{"empty"}},
		{key: "K", want: nil}, // keys are case-sensitive
		{key: "nomatch", want: nil},
	})
}

func TestE2ERoutingFanout(t *testing.T) {
	t.Parallel()
	runRouting(t, "fanout", []routeBinding{
		{queue: "a", key: "x"},
		{queue: "b", key: ""},
		{queue: "c", key: "#"},
	}, []routeCase{
		{key: "anything", want: []string{"a", "b", "c"}},
		{key: "", want: []string{"a", "b", "c"}},
	})
}

func TestE2ERoutingTopic(t *testing.T) {
	t.Parallel()
	runRouting(t, "topic", []routeBinding{
		{queue: "a.*.c", key: "a.*.c"},
		{queue: "a.#", key: "a.#"},
		{queue: "#", key: "#"},
		{queue: "*.b.*", key: "*.b.*"},
		{queue: "a.b.c", key: "a.b.c"},
		{queue: "a.#.c", key: "a.#.c"},
		{queue: "*", key: "*"},
		{queue: "#.c", key: "#.c"},
		{queue: "a.*", key: "a.*"},
		{queue: "#.#", key: "#.#"},
		{queue: "multi", key: "a.b.c"}, // one queue, two bindings that both match
		{queue: "multi", key: "a.#"},
	}, []routeCase{
		{key: "a.b.c", want: []string{"a.*.c", "a.#", "#", "*.b.*", "a.b.c", "a.#.c", "#.c", "#.#", "multi"}},
		{key: "a.c", want: []string{"a.#", "#", "a.#.c", "#.c", "a.*", "#.#", "multi"}},
		{key: "a", want: []string{"a.#", "#", "*", "#.#", "multi"}},
		{key: "a.x.y.c", want: []string{"a.#", "#", "a.#.c", "#.c", "#.#", "multi"}},
		{key: "b.b.b", want: []string{"#", "*.b.*", "#.#"}},
		{key: "c", want: []string{"#", "*", "#.c", "#.#"}},
		{key: "a..c", want: []string{"a.*.c", "a.#", "#", "a.#.c", "#.c", "#.#", "multi"}},
		{key: "", want: []string{"#", "#.#"}},
		{key: "x.a.b.c", want: []string{"#", "#.c", "#.#"}},
	})
}

func TestE2ERoutingHeaders(t *testing.T) {
	t.Parallel()
	runRouting(t, "headers", []routeBinding{
		{queue: "all-ab", args: amqp091.Table{"x-match": "all", "a": "1", "b": "2"}},
		{queue: "any-ab", args: amqp091.Table{"x-match": "any", "a": "1", "b": "2"}},
		{queue: "default-a", args: amqp091.Table{"a": "1"}}, // no x-match = all
		{queue: "all-empty", args: amqp091.Table{"x-match": "all"}},
		{queue: "any-empty", args: amqp091.Table{"x-match": "any"}},
		{queue: "void-c", args: amqp091.Table{"x-match": "all", "c": nil}},
		{queue: "all-x", args: amqp091.Table{"x-match": "all", "x-k": "v"}}, // x- keys ignored by all
		{queue: "all-with-x", args: amqp091.Table{"x-match": "all-with-x", "x-k": "v"}},
		{queue: "any-with-x", args: amqp091.Table{"x-match": "any-with-x", "x-k": "v", "a": "9"}},
		{queue: "int-n", args: amqp091.Table{"x-match": "all", "n": int32(5)}},
	}, []routeCase{
		{key: "ignored", headers: amqp091.Table{"a": "1", "b": "2"}, want: []string{"all-ab", "any-ab", "default-a", "all-empty", "all-x"}},
		{headers: amqp091.Table{"a": "1"}, want: []string{"any-ab", "default-a", "all-empty", "all-x"}},
		{headers: amqp091.Table{"b": "2", "c": "anything"}, want: []string{"any-ab", "all-empty", "void-c", "all-x"}},
		{headers: nil, want: []string{"all-empty", "all-x"}},
		{headers: amqp091.Table{"x-k": "v"}, want: []string{"all-empty", "all-x", "all-with-x", "any-with-x"}},
		{headers: amqp091.Table{"a": "2"}, want: []string{"all-empty", "all-x"}},
		{headers: amqp091.Table{"a": "9"}, want: []string{"all-empty", "all-x", "any-with-x"}},
		{headers: amqp091.Table{"n": int32(5)}, want: []string{"all-empty", "all-x", "int-n"}},
		{headers: amqp091.Table{"c": nil}, want: []string{"all-empty", "all-x", "void-c"}},
	})
}
