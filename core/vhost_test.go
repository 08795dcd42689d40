package core

import (
	"fmt"
	"strings"
	"testing"
)

func TestRoutingEveryKind(t *testing.T) {
	cases := []struct {
		kind    string
		bindKey string
		args    Table
		key     string
		headers Table
		routed  bool
	}{
		{"direct", "k", nil, "k", nil, true},
		{"direct", "k", nil, "other", nil, false},
		{"fanout", "ignored", nil, "anything", nil, true},
		{"topic", "a.*.c", nil, "a.b.c", nil, true},
		{"topic", "a.#", nil, "a", nil, true},
		{"topic", "a.*", nil, "b.x", nil, false},
		{"headers", "", Table{"x-match": "all", "h": "v"}, "", Table{"h": "v"}, true},
		{"headers", "", Table{"x-match": "any", "h": "v", "g": "w"}, "", Table{"g": "w"}, true},
		{"headers", "", Table{"h": "v"}, "", Table{"h": "nope"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.kind+"/"+tc.key, func(t *testing.T) {
			v, _ := newTestBroker(t)
			declareX(t, v, "x", tc.kind, nil)
			// Two queues bound alike both get a copy (anti-pattern 1).
			for _, q := range []string{"q1", "q2"} {
				declareQ(t, v, q, nil)
				bindQ(t, v, q, "x", tc.bindKey, tc.args)
			}
			res := publish(t, v, "x", tc.key, "m", withHeaders(tc.headers))
			want := 0
			if tc.routed {
				want = 2
			}
			if res.Routed != want {
				t.Fatalf("routed = %d, want %d", res.Routed, want)
			}
			for _, q := range []string{"q1", "q2"} {
				if n, _ := v.Queue(q).Counts(); int(n) != want/2 {
					t.Errorf("%s holds %d messages, want %d", q, n, want/2)
				}
			}
		})
	}
}

func TestDefaultExchangeAndPredeclared(t *testing.T) {
	v, _ := newTestBroker(t)
	declareQ(t, v, "q", nil)
	if res := publish(t, v, "", "q", "m"); res.Routed != 1 {
		t.Fatalf("default exchange routed %d", res.Routed)
	}
	if res := publish(t, v, "", "absent", "m"); res.Routed != 0 {
		t.Fatalf("default exchange to absent queue routed %d", res.Routed)
	}
	for _, x := range []string{"amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"} {
		if err := v.DeclareExchange(ExchangeDecl{Name: x, Passive: true}); err != nil {
			t.Errorf("%s: %v", x, err)
		}
	}
	// Redeclaring a pre-declared exchange equivalently is allowed.
	if err := v.DeclareExchange(ExchangeDecl{Name: "amq.topic", Kind: "topic", Durable: true}); err != nil {
		t.Errorf("redeclare amq.topic: %v", err)
	}
}

func TestExchangeToExchange(t *testing.T) {
	v, _ := newTestBroker(t)
	declareX(t, v, "a", "fanout", nil)
	declareX(t, v, "b", "direct", nil)
	declareX(t, v, "c", "topic", nil)
	declareQ(t, v, "qb", nil)
	declareQ(t, v, "qc", nil)
	for _, e := range []struct{ dst, src, key string }{
		{"b", "a", ""}, {"c", "a", ""}, {"c", "b", "k"}, {"a", "c", "#"}, // a->c->a is a cycle
	} {
		if err := v.BindExchange(e.dst, e.src, e.key, nil); err != nil {
			t.Fatal(err)
		}
	}
	bindQ(t, v, "qb", "b", "k", nil)
	bindQ(t, v, "qc", "c", "k", nil)
	bindQ(t, v, "qc", "c", "#", nil) // second path to the same queue
	res := publish(t, v, "a", "k", "m")
	if res.Routed != 2 {
		t.Fatalf("routed = %d, want 2 (each queue once)", res.Routed)
	}
	for _, q := range []string{"qb", "qc"} {
		if n, _ := v.Queue(q).Counts(); n != 1 {
			t.Errorf("%s holds %d, want 1", q, n)
		}
	}
	if err := v.UnbindExchange("c", "a", "", nil); err != nil {
		t.Fatal(err)
	}
	if err := v.UnbindExchange("b", "a", "", nil); err != nil {
		t.Fatal(err)
	}
	if res := publish(t, v, "a", "k", "m"); res.Routed != 0 {
		t.Fatalf("after unbind routed = %d", res.Routed)
	}
	// Deleting a destination exchange removes the bindings to it.
	if err := v.DeleteExchange("c", false); err != nil {
		t.Fatal(err)
	}
	if err := v.BindExchange("b", "a", "", nil); err != nil {
		t.Fatal(err)
	}
	if res := publish(t, v, "a", "k", "m"); res.Routed != 1 {
		t.Fatalf("routed = %d, want 1", res.Routed)
	}
}

func TestAlternateExchange(t *testing.T) {
	v, _ := newTestBroker(t)
	declareX(t, v, "ae2", "fanout", nil)
	declareX(t, v, "ae1", "direct", Table{"alternate-exchange": "ae2"})
	declareX(t, v, "x", "direct", Table{"alternate-exchange": "ae1"})
	declareX(t, v, "loop1", "direct", Table{"alternate-exchange": "loop2"})
	declareX(t, v, "loop2", "direct", Table{"alternate-exchange": "loop1"})
	declareX(t, v, "dangling", "direct", Table{"alternate-exchange": "nowhere"})
	declareQ(t, v, "direct", nil)
	declareQ(t, v, "ae1q", nil)
	declareQ(t, v, "ae2q", nil)
	bindQ(t, v, "direct", "x", "k", nil)
	bindQ(t, v, "ae1q", "ae1", "k1", nil)
	bindQ(t, v, "ae2q", "ae2", "", nil)

	cases := []struct{ x, key, want string }{
		{"x", "k", "direct"},
		{"x", "k1", "ae1q"},
		{"x", "zzz", "ae2q"},
		{"loop1", "k", ""},
		{"dangling", "k", ""},
	}
	for _, tc := range cases {
		res := publish(t, v, tc.x, tc.key, tc.x+"/"+tc.key)
		if tc.want == "" {
			if res.Routed != 0 {
				t.Errorf("%s/%s routed %d", tc.x, tc.key, res.Routed)
			}
			continue
		}
		if got := getAll(v.Queue(tc.want)); !equalStrings(got, []string{tc.x + "/" + tc.key}) {
			t.Errorf("%s/%s: %s got %v", tc.x, tc.key, tc.want, got)
		}
	}
}

func TestInternalExchange(t *testing.T) {
	v, _ := newTestBroker(t)
	if err := v.DeclareExchange(ExchangeDecl{Name: "int", Kind: "fanout", Internal: true}); err != nil {
		t.Fatal(err)
	}
	declareX(t, v, "front", "fanout", nil)
	declareQ(t, v, "q", nil)
	bindQ(t, v, "q", "int", "", nil)
	if err := v.BindExchange("int", "front", "", nil); err != nil {
		t.Fatal(err)
	}
	_, err := v.Publish(&Message{Exchange: "int"})
	wantErr(t, err, CodeAccessRefused, "cannot publish to internal exchange 'int' in vhost '/'")
	if res := publish(t, v, "front", "", "m"); res.Routed != 1 {
		t.Fatalf("via e2e routed %d", res.Routed)
	}
}

func TestTopologyErrors(t *testing.T) {
	v, _ := newTestBroker(t)
	declareX(t, v, "x", "direct", Table{"alternate-exchange": "ae"})
	declareX(t, v, "h", "headers", nil)
	declareQ(t, v, "q", nil)
	if _, err := v.DeclareQueue(QueueDecl{Name: "excl", Exclusive: true, Owner: 7}); err != nil {
		t.Fatal(err)
	}
	locked := "cannot obtain exclusive access to locked queue 'excl' in vhost '/'. It could be originally declared " +
		"on another connection or the exclusive property value does not match that of the original declaration."
	cases := []struct {
		name string
		err  error
		code int
		text string
	}{
		{"exchange passive absent", v.DeclareExchange(ExchangeDecl{Name: "nx", Passive: true}),
			CodeNotFound, "no exchange 'nx' in vhost '/'"},
		{"exchange passive default", v.DeclareExchange(ExchangeDecl{Name: "", Passive: true}),
			CodeAccessRefused, "operation not permitted on the default exchange"},
		{"exchange default", v.DeclareExchange(ExchangeDecl{Name: "", Kind: "direct"}),
			CodeAccessRefused, "operation not permitted on the default exchange"},
		{"exchange reserved", v.DeclareExchange(ExchangeDecl{Name: "amq.new", Kind: "direct"}),
			CodeAccessRefused, "exchange name 'amq.new' contains reserved prefix 'amq.*'"},
		{"exchange kind", v.DeclareExchange(ExchangeDecl{Name: "y", Kind: "x-weird"}),
			CodeCommandInvalid, "unknown exchange type 'x-weird'"},
		{"exchange kind differs", v.DeclareExchange(ExchangeDecl{Name: "x", Kind: "topic"}),
			CodePreconditionFailed, "inequivalent arg 'type' for exchange 'x' in vhost '/': received 'topic' but current is 'direct'"},
		{"exchange durable differs", v.DeclareExchange(ExchangeDecl{Name: "x", Kind: "direct", Durable: true, Arguments: Table{"alternate-exchange": "ae"}}),
			CodePreconditionFailed, "inequivalent arg 'durable' for exchange 'x' in vhost '/': received 'true' but current is 'false'"},
		{"exchange AE differs", v.DeclareExchange(ExchangeDecl{Name: "x", Kind: "direct"}),
			CodePreconditionFailed, "inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': received none but current is the value 'ae' of type 'longstr'"},
		{"exchange AE type", v.DeclareExchange(ExchangeDecl{Name: "z", Kind: "direct", Arguments: Table{"alternate-exchange": int32(1)}}),
			CodePreconditionFailed, "invalid type 'signedint' for arg 'alternate-exchange' in exchange 'z' in vhost '/'"},
		{"delete default", v.DeleteExchange("", false),
			CodeAccessRefused, "operation not permitted on the default exchange"},
		{"delete system", v.DeleteExchange("amq.direct", false),
			CodeAccessRefused, "deletion of system exchange 'amq.direct' in vhost '/' not allowed"},
		{"bind default", v.BindQueue("q", "", "q", nil, 0),
			CodeAccessRefused, "operation not permitted on the default exchange"},
		{"unbind default", v.UnbindQueue("q", "", "q", nil, 0),
			CodeAccessRefused, "operation not permitted on the default exchange"},
		{"bind no exchange", v.BindQueue("nq", "nx", "k", nil, 0),
			CodeNotFound, "no exchange 'nx' in vhost '/'"},
		{"bind no queue", v.BindQueue("nq", "x", "k", nil, 0),
			CodeNotFound, "no queue 'nq' in vhost '/'"},
		{"bind exclusive", v.BindQueue("excl", "x", "k", nil, 8),
			CodeResourceLocked, locked},
		{"bind bad x-match", v.BindQueue("q", "h", "", Table{"x-match": "some"}, 0),
			CodePreconditionFailed, `Invalid x-match field value <<"some">>; expected all, any, all-with-x, or any-with-x`},
		{"e2e default dest", v.BindExchange("", "x", "k", nil),
			CodeAccessRefused, "operation not permitted on the default exchange"},
		{"e2e no source", v.BindExchange("x", "nx", "k", nil),
			CodeNotFound, "no exchange 'nx' in vhost '/'"},
		{"e2e no dest", v.BindExchange("nx", "x", "k", nil),
			CodeNotFound, "no exchange 'nx' in vhost '/'"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.err, tc.code, tc.text) })
	}
	if err := v.UnbindQueue("q", "x", "never-bound", nil, 0); err != nil {
		t.Errorf("unbinding an absent binding: %v", err)
	}
	if err := v.DeleteExchange("never-declared", false); err != nil {
		t.Errorf("deleting an absent exchange: %v", err)
	}
	bindQ(t, v, "q", "x", "k", nil)
	wantErr(t, v.DeleteExchange("x", true), CodePreconditionFailed, "exchange 'x' in vhost '/' in use")
	if err := v.DeleteExchange("x", false); err != nil {
		t.Fatal(err)
	}
	if err := v.DeclareExchange(ExchangeDecl{Name: "x", Passive: true}); err == nil {
		t.Fatal("exchange survived deletion")
	}
}

func TestAutoDeleteExchange(t *testing.T) {
	v, _ := newTestBroker(t)
	ad := func(name string) {
		if err := v.DeclareExchange(ExchangeDecl{Name: name, Kind: "direct", AutoDelete: true}); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(name string) bool { return v.exchange(name) != nil }
	declareQ(t, v, "q1", nil)
	declareQ(t, v, "q2", nil)

	ad("byUnbind")
	bindQ(t, v, "q1", "byUnbind", "a", nil)
	bindQ(t, v, "q1", "byUnbind", "b", nil)
	if err := v.UnbindQueue("q1", "byUnbind", "a", nil, 0); err != nil || !exists("byUnbind") {
		t.Fatalf("deleted before its last binding went (err %v)", err)
	}
	if err := v.UnbindQueue("q1", "byUnbind", "b", nil, 0); err != nil || exists("byUnbind") {
		t.Fatalf("auto-delete exchange kept after last unbind (err %v)", err)
	}

	ad("byQueueDelete")
	bindQ(t, v, "q2", "byQueueDelete", "a", nil)
	if _, err := v.DeleteQueue("q2", false, false, 0); err != nil || exists("byQueueDelete") {
		t.Fatalf("auto-delete exchange kept after its queue was deleted (err %v)", err)
	}

	ad("src")
	declareX(t, v, "dst", "fanout", nil)
	if err := v.BindExchange("dst", "src", "", nil); err != nil {
		t.Fatal(err)
	}
	if err := v.DeleteExchange("dst", false); err != nil || exists("src") {
		t.Fatalf("auto-delete source kept after its destination exchange was deleted (err %v)", err)
	}
	ad("never-bound")
	if !exists("never-bound") {
		t.Fatal("an auto-delete exchange that never had a binding must stay")
	}
}

func TestQueueDeclareRules(t *testing.T) {
	v, _ := newTestBroker(t)
	if _, err := v.DeclareQueue(QueueDecl{Name: "q", Durable: true, Arguments: Table{"x-message-ttl": int32(1000)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.DeclareQueue(QueueDecl{Name: "excl", Exclusive: true, Owner: 1}); err != nil {
		t.Fatal(err)
	}
	locked := "cannot obtain exclusive access to locked queue 'excl' in vhost '/'. It could be originally declared " +
		"on another connection or the exclusive property value does not match that of the original declaration."
	decl := func(d QueueDecl) error { _, err := v.DeclareQueue(d); return err }
	ttl := func(val any) Table { return Table{"x-message-ttl": val} }
	cases := []struct {
		name string
		d    QueueDecl
		code int
		text string
	}{
		{"passive absent", QueueDecl{Name: "nq", Passive: true}, CodeNotFound, "no queue 'nq' in vhost '/'"},
		{"passive other owner", QueueDecl{Name: "excl", Passive: true, Owner: 2}, CodeResourceLocked, locked},
		{"redeclare other owner", QueueDecl{Name: "excl", Exclusive: true, Owner: 2}, CodeResourceLocked, locked},
		{"redeclare not exclusive", QueueDecl{Name: "excl", Owner: 1}, CodeResourceLocked, locked},
		{"reserved", QueueDecl{Name: "amq.q"}, CodeAccessRefused, "queue name 'amq.q' contains reserved prefix 'amq.*'"},
		{"durable differs", QueueDecl{Name: "q", Arguments: ttl(int32(1000))}, CodePreconditionFailed,
			"inequivalent arg 'durable' for queue 'q' in vhost '/': received 'false' but current is 'true'"},
		{"auto-delete differs", QueueDecl{Name: "q", Durable: true, AutoDelete: true, Arguments: ttl(int32(1000))}, CodePreconditionFailed,
			"inequivalent arg 'auto_delete' for queue 'q' in vhost '/': received 'true' but current is 'false'"},
		{"ttl differs", QueueDecl{Name: "q", Durable: true, Arguments: ttl(int32(2000))}, CodePreconditionFailed,
			"inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '2000' but current is '1000'"},
		{"ttl missing", QueueDecl{Name: "q", Durable: true}, CodePreconditionFailed,
			"inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received none but current is the value '1000' of type 'signedint'"},
		{"ttl as string", QueueDecl{Name: "q", Durable: true, Arguments: ttl("1000")}, CodePreconditionFailed,
			"inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '1000' but current is '1000'"},
		{"bad ttl type", QueueDecl{Name: "n", Arguments: ttl("1")}, CodePreconditionFailed,
			"invalid arg 'x-message-ttl' for queue 'n' in vhost '/': {unacceptable_type,longstr}"},
		{"negative ttl", QueueDecl{Name: "n", Arguments: ttl(int64(-1))}, CodePreconditionFailed,
			"invalid arg 'x-message-ttl' for queue 'n' in vhost '/': {value_negative,-1}"},
		{"huge ttl", QueueDecl{Name: "n", Arguments: ttl(int64(1) << 40)}, CodePreconditionFailed,
			"invalid arg 'x-message-ttl' for queue 'n' in vhost '/': {value_too_big,1099511627776}"},
		{"zero expires", QueueDecl{Name: "n", Arguments: Table{"x-expires": int32(0)}}, CodePreconditionFailed,
			"invalid arg 'x-expires' for queue 'n' in vhost '/': {value_zero,0}"},
		{"bad max-length", QueueDecl{Name: "n", Arguments: Table{"x-max-length": int8(-2)}}, CodePreconditionFailed,
			"invalid arg 'x-max-length' for queue 'n' in vhost '/': {value_negative,-2}"},
		{"bad max-priority", QueueDecl{Name: "n", Arguments: Table{"x-max-priority": int32(256)}}, CodePreconditionFailed,
			"invalid arg 'x-max-priority' for queue 'n' in vhost '/': {max_value_exceeded,256}"},
		{"bad overflow", QueueDecl{Name: "n", Arguments: Table{"x-overflow": "drop-tail"}}, CodePreconditionFailed,
			"invalid arg 'x-overflow' for queue 'n' in vhost '/': invalid_overflow"},
		{"dlrk without dlx", QueueDecl{Name: "n", Arguments: Table{"x-dead-letter-routing-key": "k"}}, CodePreconditionFailed,
			"invalid arg 'x-dead-letter-routing-key' for queue 'n' in vhost '/': routing_key_but_no_dlx_defined"},
		{"dlx type", QueueDecl{Name: "n", Arguments: Table{"x-dead-letter-exchange": int16(3)}}, CodePreconditionFailed,
			"invalid type 'short' for arg 'x-dead-letter-exchange' in queue 'n' in vhost '/'"},
		{"sac type", QueueDecl{Name: "n", Arguments: Table{"x-single-active-consumer": "yes"}}, CodePreconditionFailed,
			"invalid arg 'x-single-active-consumer' for queue 'n' in vhost '/': {unacceptable_type,longstr}"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, decl(tc.d), tc.code, tc.text) })
	}
	// Integer widths are one type class: int64 1000 is equivalent to int32 1000.
	if err := decl(QueueDecl{Name: "q", Durable: true, Arguments: ttl(int64(1000))}); err != nil {
		t.Errorf("equivalent redeclare: %v", err)
	}
	if err := decl(QueueDecl{Name: "excl", Exclusive: true, Owner: 1}); err != nil {
		t.Errorf("owner redeclare: %v", err)
	}
	if v.Queue("n") != nil {
		t.Error("a refused declaration created the queue")
	}
}

func TestServerNamedQueue(t *testing.T) {
	v, _ := newTestBroker(t)
	seen := map[string]bool{}
	for range 100 {
		info, err := v.DeclareQueue(QueueDecl{Exclusive: true, Owner: 1})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(info.Name, "amq.gen-") || len(info.Name) != len("amq.gen-")+22 || seen[info.Name] {
			t.Fatalf("bad or repeated server name %q", info.Name)
		}
		seen[info.Name] = true
		if res := publish(t, v, "", info.Name, "m"); res.Routed != 1 {
			t.Fatalf("server-named queue not reachable by default exchange")
		}
	}
	v.ReleaseOwner(1)
	for name := range seen {
		if v.Queue(name) != nil {
			t.Fatalf("exclusive queue %s survived ReleaseOwner", name)
		}
	}
}

func TestDeleteAndPurge(t *testing.T) {
	v, _ := newTestBroker(t)
	declareX(t, v, "x", "fanout", nil)
	q := declareQ(t, v, "q", nil)
	bindQ(t, v, "q", "x", "", nil)
	for range 3 {
		publish(t, v, "x", "", "m")
	}
	c, s := consume(t, q, ConsumeOptions{Prefetch: 1})
	if got := len(s.take()); got != 1 {
		t.Fatalf("delivered %d, want 1", got)
	}
	_, err := v.DeleteQueue("q", true, false, 0)
	wantErr(t, err, CodePreconditionFailed, "queue 'q' in vhost '/' in use")
	_, err = v.DeleteQueue("q", false, true, 0)
	wantErr(t, err, CodePreconditionFailed, "queue 'q' in vhost '/' not empty")
	_, err = v.PurgeQueue("nq", 0)
	wantErr(t, err, CodeNotFound, "no queue 'nq' in vhost '/'")
	if n, err := v.PurgeQueue("q", 0); err != nil || n != 2 {
		t.Fatalf("purge = %d, %v; want 2 (unacked not purged)", n, err)
	}
	publish(t, v, "x", "", "m")
	if n, err := v.DeleteQueue("q", false, false, 0); err != nil || n != 1 {
		t.Fatalf("delete = %d, %v; want 1", n, err)
	}
	if s.cancelled != 1 {
		t.Fatalf("consumer notified %d times, want 1", s.cancelled)
	}
	q.Settle(c, []uint64{1}, Ack) // a no-op now
	if res := publish(t, v, "x", "", "m"); res.Routed != 0 {
		t.Fatal("binding survived queue deletion")
	}
	if n, err := v.DeleteQueue("q", false, false, 0); err != nil || n != 0 {
		t.Fatalf("deleting an absent queue = %d, %v", n, err)
	}
	c.Cancel() // after deletion: nothing happens
}

func TestExclusiveQueueAccess(t *testing.T) {
	v, _ := newTestBroker(t)
	if _, err := v.DeclareQueue(QueueDecl{Name: "e", Exclusive: true, Owner: 1}); err != nil {
		t.Fatal(err)
	}
	q := v.Queue("e")
	if err := q.CheckAccess(1); err != nil {
		t.Fatal(err)
	}
	locked := "cannot obtain exclusive access to locked queue 'e' in vhost '/'. It could be originally declared " +
		"on another connection or the exclusive property value does not match that of the original declaration."
	wantErr(t, q.CheckAccess(2), CodeResourceLocked, locked)
	_, err := v.PurgeQueue("e", 2)
	wantErr(t, err, CodeResourceLocked, locked)
	_, err = v.DeleteQueue("e", false, false, 2)
	wantErr(t, err, CodeResourceLocked, locked)
	v.ReleaseOwner(2)
	if v.Queue("e") == nil {
		t.Fatal("another owner's release deleted the queue")
	}
	v.ReleaseOwner(1)
	if v.Queue("e") != nil {
		t.Fatal("queue survived its owner")
	}
}

func TestInvalidExpiration(t *testing.T) {
	v, _ := newTestBroker(t)
	declareQ(t, v, "q", nil)
	cases := []struct{ exp, text string }{
		{"abc", "invalid expiration 'abc': no_integer"},
		{"", "invalid expiration '': no_integer"},
		{"10x", `invalid expiration '10x': {leftover_string,"x"}`},
		{"-5", "invalid expiration '-5': {value_negative,-5}"},
		{"4294967296", "invalid expiration '4294967296': {value_too_big,4294967296}"},
	}
	for _, tc := range cases {
		m := &Message{Exchange: "", RoutingKey: "q"}
		withExpiration(tc.exp)(m)
		_, err := v.Publish(m)
		wantErr(t, err, CodePreconditionFailed, tc.text)
	}
	_, err := v.Publish(&Message{Exchange: "nx"})
	wantErr(t, err, CodeNotFound, "no exchange 'nx' in vhost '/'")
	if n, _ := v.Queue("q").Counts(); n != 0 {
		t.Fatalf("refused publishes enqueued %d", n)
	}
}

func TestBrokerVHostsAndClose(t *testing.T) {
	clk := newManualClock()
	b := NewBroker(Options{Clock: clk})
	if b.VHost("/") == nil || b.VHost("other") != nil {
		t.Fatal("NewBroker must create exactly the vhost /")
	}
	v := b.AddVHost("other")
	if b.AddVHost("other") != v || v.Name() != "other" {
		t.Fatal("AddVHost is not idempotent")
	}
	declareQ(t, v, "q", Table{"x-expires": int32(1000), "x-message-ttl": int32(500)})
	publish(t, v, "", "q", "m")
	if clk.pending() != 2 {
		t.Fatalf("%d timers pending, want 2 (x-expires, TTL)", clk.pending())
	}
	b.Close()
	if clk.pending() != 0 {
		t.Fatalf("%d timers left after Close", clk.pending())
	}
	NewBroker(Options{}).Close() // zero Options are valid
}

func TestWideFanoutDedup(t *testing.T) {
	v, _ := newTestBroker(t)
	declareX(t, v, "fan", "fanout", nil)
	declareX(t, v, "mirror", "fanout", nil)
	if err := v.BindExchange("mirror", "fan", "", nil); err != nil {
		t.Fatal(err)
	}
	const n = 3 * linearDedupMax
	for i := range n {
		name := fmt.Sprint("q", i)
		declareQ(t, v, name, nil)
		bindQ(t, v, name, "fan", "a", nil)
		bindQ(t, v, name, "fan", "b", nil) // a second binding, same queue
		bindQ(t, v, name, "mirror", "", nil)
	}
	for round := range 3 { // the pooled router must come back clean
		if res := publish(t, v, "fan", "", "m"); res.Routed != n {
			t.Fatalf("round %d: routed %d, want %d", round, res.Routed, n)
		}
	}
	for i := range n {
		if got, _ := v.Queue(fmt.Sprint("q", i)).Counts(); got != 3 {
			t.Fatalf("q%d holds %d, want 3", i, got)
		}
	}
}
