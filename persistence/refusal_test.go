package persistence

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt"
	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// The protocol tests of a refused write live here, not in mqtt or amqp,
// because only this package's test seams make the store refuse on demand:
// testBadgerOptions shrinks the value-log file to 1 MiB, so that a value
// over 1 MiB is refused as one over 64 MiB is in production (a message
// body, with --max-message-size raised past MaxMessageSize), and
// testAppendHook pads the records of entities named with refuseMarker
// past that limit (a queue, exchange or binding the store cannot hold; in
// production keys are bounded and records small, so only this failpoint
// reaches that path), and the retained messages of topics named so.

// refuseMarker in a queue's or exchange's name, a binding's routing key or
// a retained message's topic makes the store refuse its record.
const refuseMarker = "refuse-me"

// storeRefusing opens a store that refuses every value over 1 MiB, and
// every record of an entity named with refuseMarker.
func storeRefusing(t *testing.T) *Store {
	t.Helper()
	old := testBadgerOptions
	testBadgerOptions = func(o badger.Options) badger.Options { return o.WithValueLogFileSize(1 << 20) }
	t.Cleanup(func() { testBadgerOptions = old })
	s := open(t, t.TempDir(), Options{NoSync: true})
	pad := strings.Repeat("p", 2<<20)
	padded := func(args core.Table) core.Table {
		// A copy: core holds the original.
		args = maps.Clone(args)
		if args == nil {
			args = core.Table{}
		}
		args["x-pad"] = pad
		return args
	}
	hook := func(o *op) {
		if o.kind == opPutRetained && strings.Contains(o.name, refuseMarker) {
			// A will's payload has at most 65,535 bytes.
			m := *o.msg
			m.Body = []byte(pad)
			o.msg = &m
		}
		switch r := o.rec.(type) {
		case *core.QueueRecord:
			if strings.Contains(r.Name, refuseMarker) {
				c := *r
				c.Arguments = padded(r.Arguments)
				o.rec = &c
			}
		case *core.ExchangeDecl:
			if strings.Contains(r.Name, refuseMarker) {
				c := *r
				c.Arguments = padded(r.Arguments)
				o.rec = &c
			}
		case *core.BindingRecord:
			if strings.Contains(r.RoutingKey, refuseMarker) {
				c := *r
				c.Arguments = padded(r.Arguments)
				o.rec = &c
			}
		}
	}
	s.testAppendHook.Store(&hook)
	return s
}

// refusalBroker is a core broker on s with both protocols on free ports.
type refusalBroker struct {
	core     *core.Broker
	amqpURL  string
	mqttAddr string
}

func serveBoth(t *testing.T, s *Store) *refusalBroker {
	t.Helper()
	br := serveAMQP(t, s)
	m, err := mqtt.NewServer(br.core, mqtt.Config{Auth: core.NewAuth(core.DefaultUsers()), Retained: s, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go m.Serve(mln)
	// Cleanups run last first: MQTT stops before the AMQP server and the
	// broker serveAMQP stops.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		m.Shutdown(ctx)
	})
	return &refusalBroker{core: br.core, amqpURL: br.url, mqttAddr: mln.Addr().String()}
}

// confirmWitness publishes persistent messages to a durable queue with
// publisher confirms, one at a time, on its own connection, for as long
// as the test runs: a store that one client's bad write stopped shows up
// as confirms that no longer come.
type confirmWitness struct {
	acked, nacked atomic.Int64
	failed        chan error
	seenNacked    int64 // nacks check has reported
}

func startConfirmWitness(t *testing.T, url string) *confirmWitness {
	t.Helper()
	ch := amqpChannel(t, url)
	if _, err := ch.QueueDeclare("witness", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 1))
	ctx, cancel := context.WithCancel(context.Background())
	w := &confirmWitness{failed: make(chan error, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			err := ch.PublishWithContext(ctx, "", "witness", false, false, amqp091.Publishing{
				DeliveryMode: amqp091.Persistent, Body: []byte(fmt.Sprint(i)),
			})
			if err != nil {
				if ctx.Err() == nil {
					w.failed <- fmt.Errorf("witness publish %d: %w", i, err)
				}
				return
			}
			select {
			case c := <-confirms:
				if c.Ack {
					w.acked.Add(1)
				} else {
					// The witness's message is stored: a nack is an
					// innocent batch-mate of a refused op failed with it
					// (check fails the test).
					w.nacked.Add(1)
				}
			case <-time.After(20 * time.Second):
				w.failed <- fmt.Errorf("witness message %d: no confirm within 20 s", i)
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		t.Logf("witness: %d acked, %d nacked", w.acked.Load(), w.nacked.Load())
		if n := w.nacked.Load(); n != 0 {
			t.Errorf("witness: %d innocent messages nacked", n)
		}
	})
	return w
}

// startPubackWitness is startConfirmWitness for an MQTT 5 publisher: QoS 1
// messages, one at a time, to a durable queue (declared and bound on ch),
// each of which must get PUBACK 0, never 0x83.
func startPubackWitness(t *testing.T, addr string, ch *amqp091.Channel) *confirmWitness {
	t.Helper()
	if _, err := ch.QueueDeclare("witness-mqtt", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("witness-mqtt", "witness.mqtt", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	c := mqtttest.ConnectV5(t, addr, mqtttest.V5Options{ClientID: "witness-mqtt"})
	ctx, cancel := context.WithCancel(context.Background())
	w := &confirmWitness{failed: make(chan error, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
			res, err := c.Publish(pctx, &paho.Publish{Topic: "witness/mqtt", QoS: 1, Payload: []byte(fmt.Sprint(i))})
			pcancel()
			switch {
			case ctx.Err() != nil:
				return
			case res == nil:
				w.failed <- fmt.Errorf("mqtt witness message %d: no PUBACK: %v", i, err)
				return
			case res.ReasonCode != 0:
				w.nacked.Add(1) // check fails the test
			default:
				w.acked.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		t.Logf("mqtt witness: %d acked, %d failed", w.acked.Load(), w.nacked.Load())
		if n := w.nacked.Load(); n != 0 {
			t.Errorf("mqtt witness: %d innocent messages failed", n)
		}
	})
	return w
}

// check waits for three more acks, and fails the test if any confirm was
// a nack.
func (w *confirmWitness) check(t *testing.T) {
	t.Helper()
	if n := w.nacked.Load(); n > w.seenNacked {
		t.Errorf("witness: %d innocent messages nacked (failed with another client's refused op)", n-w.seenNacked)
		w.seenNacked = n
	}
	from := w.acked.Load()
	deadline := time.Now().Add(20 * time.Second)
	for w.acked.Load() < from+3 {
		select {
		case err := <-w.failed:
			t.Fatal(err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("witness confirms stuck at %d for 20 s", w.acked.Load())
		}
	}
}

// amqpCode is the reply code of a channel or connection close, -1 if err
// is none.
func amqpCode(err error) int {
	var ae *amqp091.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return -1
}

// TestRefusedWriteFailsOnlyItsOperation: a write the store refuses for
// good (issue 15, item 1) fails the one operation that made it, with that
// protocol's error for it, and nothing else: the same connection goes on,
// and an AMQP publisher on another connection keeps getting its confirms
// throughout. One row per packet or method that writes to the store.
func TestRefusedWriteFailsOnlyItsOperation(t *testing.T) {
	s := storeRefusing(t)
	b := serveBoth(t, s)
	w := startConfirmWitness(t, b.amqpURL)
	w.check(t)

	// A durable queue holds what MQTT publishes on big/#, so that QoS 1
	// and 2 messages are stored; no one consumes it.
	keeper := amqpChannel(t, b.amqpURL)
	mw := startPubackWitness(t, b.mqttAddr, keeper)
	mw.check(t)
	if _, err := keeper.QueueDeclare("big-keeper", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := keeper.QueueBind("big-keeper", "big.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	kept := func(t *testing.T) int {
		t.Helper()
		q, err := keeper.QueueDeclarePassive("big-keeper", true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return q.Messages
	}
	big := strings.Repeat("b", 2<<20) // over the 1 MiB value limit once stored

	// pub5 publishes a QoS 1 or 2 message and returns the reason code of
	// its PUBACK or PUBREC (PUBCOMP: 0).
	pub5 := func(t *testing.T, c *mqtttest.V5Client, topic string, qos byte, retain bool, payload string) byte {
		t.Helper()
		res, err := c.Publish(mqtttest.Ctx(t), &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte(payload)})
		if res == nil {
			t.Fatalf("publish to %s at QoS %d: no acknowledgement: %v", topic, qos, err)
		}
		return res.ReasonCode
	}
	// pub3 publishes with a 3.1.1 client: the store's refusal cannot be
	// told, so the PUBACK (PUBCOMP) comes and the connection stays, and
	// the message is routed all the same.
	pub3 := func(t *testing.T, qos byte, retain bool) {
		t.Helper()
		c := mqtttest.ConnectV3(t, b.mqttAddr, mqtttest.V3Options{ClientID: fmt.Sprint("pub3-", qos, retain)})
		before := kept(t)
		topic := "big/v3"
		if retain {
			topic = "retained/v3"
		}
		c.Send(t, topic, qos, retain, big)
		if !c.IsConnectionOpen() {
			t.Fatal("3.1.1 publisher disconnected for a message the store refused")
		}
		c.Send(t, "big/v3", qos, false, "small")
		if got, want := kept(t), before+2; !retain && got != want {
			t.Errorf("big-keeper holds %d messages, want %d: the refused message is routed", got, want)
		}
	}

	rows := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"mqtt5 CONNECT persistent session: CONNACK 0x85", func(t *testing.T) {
			id := refuseMarker + "-connect5"
			for range 2 { // the first leaves nothing behind
				_, ca, err := mqtttest.DialV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: id, SessionExpiry: 3600})
				if err == nil || ca == nil || ca.ReasonCode != 0x85 {
					t.Fatalf("CONNACK %+v, %v; want 0x85", ca, err)
				}
			}
			// A clean session stores nothing: it connects.
			mqtttest.ConnectV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: id})
		}},
		{"mqtt311 CONNECT clean session 0: CONNACK 0x02", func(t *testing.T) {
			id := refuseMarker + "-connect3"
			_, rc, err := mqtttest.DialV3(t, b.mqttAddr, mqtttest.V3Options{ClientID: id, Persistent: true})
			if err == nil || rc != 0x02 {
				t.Fatalf("CONNACK return code %#x, %v; want 0x02 identifier rejected", rc, err)
			}
			mqtttest.ConnectV3(t, b.mqttAddr, mqtttest.V3Options{ClientID: id})
		}},
		{"mqtt5 SUBSCRIBE durable: SUBACK 0x83", func(t *testing.T) {
			c := mqtttest.ConnectV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: "sub5", SessionExpiry: 3600})
			sa, err := c.Subscribe(mqtttest.Ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
				{Topic: refuseMarker + "/v5", QoS: 1}, {Topic: "ok/v5", QoS: 1},
			}})
			if sa == nil || len(sa.Reasons) != 2 || sa.Reasons[0] != 0x83 || sa.Reasons[1] != 1 {
				t.Fatalf("SUBACK %+v, %v; want [0x83 1]", sa, err)
			}
			// The refused subscription is not there, the other one is.
			c.Send(t, refuseMarker+"/v5", 1, "not subscribed")
			c.Send(t, "ok/v5", 1, "subscribed")
			if m := c.Next(t, "message on ok/v5"); string(m.Payload) != "subscribed" {
				t.Fatalf("got %q on %s", m.Payload, m.Topic)
			}
		}},
		{"mqtt311 SUBSCRIBE durable: SUBACK 0x80", func(t *testing.T) {
			c := mqtttest.ConnectV3(t, b.mqttAddr, mqtttest.V3Options{ClientID: "sub3", Persistent: true})
			tok := c.SubscribeMultiple(map[string]byte{refuseMarker + "/v3": 1, "ok/v3": 1}, nil)
			mqtttest.WaitToken(t, tok, "subscribe")
			got := tok.(*mqtt3.SubscribeToken).Result()
			if got[refuseMarker+"/v3"] != 0x80 || got["ok/v3"] != 1 {
				t.Fatalf("SUBACK %v; want 0x80 for the refused filter, 1 for the other", got)
			}
			c.SubscribeAt(t, 1, "ok2/v3") // the connection goes on
		}},
		{"mqtt5 PUBLISH QoS 1: PUBACK 0x83", func(t *testing.T) {
			c := mqtttest.ConnectV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: "pub5-1"})
			if rc := pub5(t, c, "big/v5", 1, false, big); rc != 0x83 {
				t.Fatalf("PUBACK %#x, want 0x83", rc)
			}
			if rc := pub5(t, c, "big/v5", 1, false, "small"); rc != 0 {
				t.Fatalf("next PUBACK %#x, want 0", rc)
			}
		}},
		{"mqtt5 PUBLISH QoS 2: PUBREC 0x83", func(t *testing.T) {
			c := mqtttest.ConnectV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: "pub5-2"})
			for range 2 { // the packet id is free again, as the exchange ended
				if rc := pub5(t, c, "big/v5", 2, false, big); rc != 0x83 {
					t.Fatalf("PUBREC %#x, want 0x83", rc)
				}
			}
			before := kept(t)
			if rc := pub5(t, c, "big/v5", 2, false, "small"); rc != 0 {
				t.Fatalf("next PUBCOMP %#x, want 0", rc)
			}
			if got := kept(t); got != before+1 {
				t.Fatalf("big-keeper holds %d messages, want %d", got, before+1)
			}
		}},
		{"mqtt311 PUBLISH QoS 1: PUBACK, connection kept", func(t *testing.T) { pub3(t, 1, false) }},
		{"mqtt311 PUBLISH QoS 2: PUBREC, connection kept", func(t *testing.T) { pub3(t, 2, false) }},
		{"mqtt5 retained PUBLISH: PUBACK 0x83", func(t *testing.T) {
			c := mqtttest.ConnectV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: "retain5"})
			if rc := pub5(t, c, "retained/v5", 1, true, big); rc != 0x83 {
				t.Fatalf("PUBACK %#x, want 0x83", rc)
			}
			if rc := pub5(t, c, "retained/v5", 1, true, "small"); rc >= 0x80 {
				t.Fatalf("next PUBACK %#x", rc)
			}
		}},
		{"mqtt311 retained PUBLISH: PUBACK, connection kept", func(t *testing.T) { pub3(t, 1, true) }},
		{"mqtt5 retained will: routed, not stored", func(t *testing.T) {
			sub := mqtttest.ConnectV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: "will-watcher"})
			sub.SubscribeAt(t, 1, "will/#")
			c := mqtttest.ConnectV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: "will5", Will: &paho.WillMessage{
				Topic: "will/" + refuseMarker, QoS: 1, Retain: true, Payload: []byte("gone"),
			}})
			c.Conn.Close() // no DISCONNECT: the will is due
			// No one acknowledges a will: the store's refusal is logged,
			// and the will is routed all the same.
			if m := sub.Next(t, "the will"); string(m.Payload) != "gone" {
				t.Fatalf("will %q", m.Payload)
			}
		}},
		{"amqp exchange.declare durable: channel.close 541", func(t *testing.T) {
			conn, ch := amqpConnChannel(t, b.amqpURL)
			name := refuseMarker + "-x"
			err := ch.ExchangeDeclare(name, "direct", true, false, false, false, nil)
			checkChannelOnly(t, conn, err, 541)
			ch2, _ := conn.Channel()
			if err := ch2.ExchangeDeclarePassive(name, "direct", true, false, false, false, nil); amqpCode(err) != 404 {
				t.Fatalf("passive declare after the refusal: %v, want 404 (nothing left behind)", err)
			}
		}},
		{"amqp queue.declare durable: channel.close 541", func(t *testing.T) {
			conn, ch := amqpConnChannel(t, b.amqpURL)
			name := refuseMarker + "-q"
			_, err := ch.QueueDeclare(name, true, false, false, false, nil)
			checkChannelOnly(t, conn, err, 541)
			ch2, _ := conn.Channel()
			if _, err := ch2.QueueDeclarePassive(name, true, false, false, false, nil); amqpCode(err) != 404 {
				t.Fatalf("passive declare after the refusal: %v, want 404 (nothing left behind)", err)
			}
		}},
		{"amqp queue.bind durable: channel.close 541", func(t *testing.T) {
			conn, ch := amqpConnChannel(t, b.amqpURL)
			err := ch.QueueBind("big-keeper", refuseMarker+"-key", "amq.direct", false, nil)
			checkChannelOnly(t, conn, err, 541)
			// Unbound again: a mandatory publish to the key comes back.
			ch2, _ := conn.Channel()
			returns := ch2.NotifyReturn(make(chan amqp091.Return, 1))
			if err := ch2.PublishWithContext(mqtttest.Ctx(t), "amq.direct", refuseMarker+"-key", true, false, amqp091.Publishing{Body: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			mqtttest.WaitFor(t, returns, mqtttest.Wait, "basic.return of the unbound key")
		}},
		{"amqp exchange.bind durable: channel.close 541", func(t *testing.T) {
			conn, ch := amqpConnChannel(t, b.amqpURL)
			if err := ch.ExchangeDeclare("ok-x", "topic", true, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
			err := ch.ExchangeBind("ok-x", refuseMarker+"-key", "amq.topic", false, nil)
			checkChannelOnly(t, conn, err, 541)
		}},
		{"amqp basic.publish persistent with confirms: basic.nack", func(t *testing.T) {
			_, ch := amqpConnChannel(t, b.amqpURL)
			if err := ch.Confirm(false); err != nil {
				t.Fatal(err)
			}
			confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 2))
			for i, body := range []string{big, "small"} {
				if err := ch.PublishWithContext(mqtttest.Ctx(t), "", "big-keeper", false, false, amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte(body)}); err != nil {
					t.Fatal(err)
				}
				c := mqtttest.WaitFor(t, confirms, mqtttest.Wait, "confirm")
				if c.Ack != (i == 1) {
					t.Fatalf("message %d: ack %v; want a nack for the refused one, then an ack", i, c.Ack)
				}
			}
		}},
		{"amqp basic.publish persistent without confirms: not reported, routed", func(t *testing.T) {
			_, ch := amqpConnChannel(t, b.amqpURL)
			before := kept(t)
			if err := ch.PublishWithContext(mqtttest.Ctx(t), "", "big-keeper", false, false, amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte(big)}); err != nil {
				t.Fatal(err)
			}
			// The channel goes on (a synchronous method answers), and the
			// message is queued, though not stored: as in RabbitMQ, a
			// publisher without confirms is not told about its message.
			if _, err := ch.QueueDeclarePassive("big-keeper", true, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
			if got := kept(t); got != before+1 {
				t.Fatalf("big-keeper holds %d messages, want %d", got, before+1)
			}
		}},
		{"amqp tx.commit of a persistent publish: channel.close 541", func(t *testing.T) {
			conn, ch := amqpConnChannel(t, b.amqpURL)
			if err := ch.Tx(); err != nil {
				t.Fatal(err)
			}
			if err := ch.PublishWithContext(mqtttest.Ctx(t), "", "big-keeper", false, false, amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte(big)}); err != nil {
				t.Fatal(err)
			}
			checkChannelOnly(t, conn, ch.TxCommit(), 541)
		}},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			r.run(t)
			w.check(t)
			mw.check(t)
		})
	}
}

func amqpConnChannel(t *testing.T, url string) (*amqp091.Connection, *amqp091.Channel) {
	t.Helper()
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return conn, ch
}

// checkChannelOnly checks that err is a channel.close with code, and that
// the connection is still open: a new channel on it works.
func checkChannelOnly(t *testing.T, conn *amqp091.Connection, err error, code int) {
	t.Helper()
	var ae *amqp091.Error
	if !errors.As(err, &ae) || ae.Code != code {
		t.Fatalf("got %v, want a close with %d", err, code)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("a new channel after the refusal: %v (the connection was closed)", err)
	}
	if _, err := ch.QueueDeclarePassive("big-keeper", true, false, false, false, nil); err != nil {
		t.Fatalf("the connection after the refusal: %v", err)
	}
}

// TestStoreOutageFailsInFlight: a commit that fails (a full disk, an I/O
// error) is an outage, not the fault of the operations in it: they get
// the protocols' general failure, unlike a refusal (see
// TestRefusedWriteFailsOnlyItsOperation), and the store writes them once
// it works again. The disk alarm that holds publishers during an outage
// is the broker's (cmd/ferrymq wires Options.OnError to it) and is tested
// with it; here nothing holds them, so each operation meets a failing
// commit.
func TestStoreOutageFailsInFlight(t *testing.T) {
	s := open(t, t.TempDir(), Options{NoSync: true})
	var failing atomic.Bool
	injected := errors.New("injected: disk I/O error")
	hook := func() error {
		if failing.Load() {
			return injected
		}
		return nil
	}
	s.testCommitHook.Store(&hook)
	b := serveBoth(t, s)
	// outage runs op while every commit fails, then lets the store
	// recover and checks that it did.
	outage := func(t *testing.T, op func()) {
		t.Helper()
		failing.Store(true)
		defer failing.Store(false)
		op()
		failing.Store(false)
		_, ch := amqpConnChannel(t, b.amqpURL)
		if _, err := ch.QueueDeclare("after-outage", true, false, false, false, nil); err != nil {
			t.Fatalf("durable declare once the store works again: %v", err)
		}
	}
	pubSub := mqtttest.ConnectV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: "outage-keeper", SessionExpiry: 3600})
	pubSub.SubscribeAt(t, 1, "big/#") // a durable queue: QoS 1 messages are stored

	rows := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"mqtt5 PUBLISH QoS 1: PUBACK 0x80", func(t *testing.T) {
			c := mqtttest.ConnectV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: "out-pub5"})
			outage(t, func() {
				res, err := c.Publish(mqtttest.Ctx(t), &paho.Publish{Topic: "big/out5", QoS: 1, Payload: []byte("x")})
				if res == nil || res.ReasonCode != 0x80 {
					t.Errorf("PUBACK %+v, %v; want 0x80", res, err)
				}
			})
		}},
		{"mqtt311 PUBLISH QoS 1: disconnected, to publish again", func(t *testing.T) {
			c := mqtttest.ConnectV3(t, b.mqttAddr, mqtttest.V3Options{ClientID: "out-pub3"})
			outage(t, func() {
				tok := c.Publish("big/out3", 1, false, "x")
				if !tok.WaitTimeout(mqtttest.Wait) {
					t.Fatal("no outcome of the publish")
				}
				if tok.Error() == nil || c.IsConnectionOpen() {
					t.Errorf("publish: %v, connection open %v; want it closed without PUBACK", tok.Error(), c.IsConnectionOpen())
				}
			})
		}},
		{"mqtt5 CONNECT persistent session: CONNACK 0x88", func(t *testing.T) {
			outage(t, func() {
				_, ca, err := mqtttest.DialV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: "out-connect5", SessionExpiry: 3600})
				if err == nil || ca == nil || ca.ReasonCode != 0x88 {
					t.Errorf("CONNACK %+v, %v; want 0x88 server unavailable", ca, err)
				}
			})
			mqtttest.ConnectV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: "out-connect5", SessionExpiry: 3600})
		}},
		{"mqtt311 CONNECT clean session 0: CONNACK 0x03", func(t *testing.T) {
			outage(t, func() {
				_, rc, err := mqtttest.DialV3(t, b.mqttAddr, mqtttest.V3Options{ClientID: "out-connect3", Persistent: true})
				if err == nil || rc != 0x03 {
					t.Errorf("CONNACK return code %#x, %v; want 0x03 server unavailable", rc, err)
				}
			})
			mqtttest.ConnectV3(t, b.mqttAddr, mqtttest.V3Options{ClientID: "out-connect3", Persistent: true})
		}},
		{"mqtt5 SUBSCRIBE durable: SUBACK 0x80", func(t *testing.T) {
			c := mqtttest.ConnectV5(t, b.mqttAddr, mqtttest.V5Options{ClientID: "out-sub5", SessionExpiry: 3600})
			outage(t, func() {
				sa, err := c.Subscribe(mqtttest.Ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "out/v5", QoS: 1}}})
				if sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 0x80 {
					t.Errorf("SUBACK %+v, %v; want [0x80]", sa, err)
				}
			})
			c.SubscribeAt(t, 1, "out/v5")
		}},
		{"amqp queue.declare durable: connection.close 541", func(t *testing.T) {
			conn, ch := amqpConnChannel(t, b.amqpURL)
			outage(t, func() {
				_, err := ch.QueueDeclare("out-q", true, false, false, false, nil)
				if amqpCode(err) != 541 {
					t.Errorf("declare: %v, want 541", err)
				}
				// A connection error, as RabbitMQ's 541: the server is at
				// fault, not this channel's operation.
				if _, err := conn.Channel(); err == nil {
					t.Error("the connection is still open")
				}
			})
		}},
		{"amqp basic.publish persistent with confirms: basic.nack", func(t *testing.T) {
			_, ch := amqpConnChannel(t, b.amqpURL)
			if _, err := ch.QueueDeclare("out-confirms", true, false, false, false, nil); err != nil {
				t.Fatal(err)
			}
			if err := ch.Confirm(false); err != nil {
				t.Fatal(err)
			}
			confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 1))
			outage(t, func() {
				if err := ch.PublishWithContext(mqtttest.Ctx(t), "", "out-confirms", false, false, amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte("x")}); err != nil {
					t.Fatal(err)
				}
				if c := mqtttest.WaitFor(t, confirms, mqtttest.Wait, "confirm"); c.Ack {
					t.Error("ack during the outage, want a nack")
				}
			})
		}},
	}
	for _, r := range rows {
		t.Run(r.name, r.run)
	}
}
