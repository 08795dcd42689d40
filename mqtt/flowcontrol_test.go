package mqtt

// Flow control (section 4.9): Receive Maximum in both directions.

import (
	"fmt"
	"testing"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestReceiveMaximum: the server "MUST NOT send more than Receive
// Maximum QoS 1 and QoS 2 PUBLISH packets for which it has not received
// PUBACK, PUBCOMP, or PUBREC with a Reason Code of 128 or greater"
// [MQTT-3.3.4-9]; the send quota grows back only with those (section 4.9,
// [MQTT-4.9.0-2]). What is not sent waits in the session queue, where
// AMQP sees it, and nothing is lost.
func TestReceiveMaximum(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{Durable: true})
	qw := newQueueWatch(t, b)
	apub := mqtttest.NewAMQPPublisher(t, b.URL)

	t.Run("qos1", func(t *testing.T) {
		const rm, n = 5, 20
		const id = "rm-qos1"
		c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: id, ReceiveMaximum: rm})
		c.subscribe(t, 0, rawSub{"rm/qos1", 1})
		for i := range n {
			apub.Send(t, "rm.qos1", true, fmt.Sprint(i))
		}
		r := &inOrder{c: c}
		r.read(t, rm)
		qw.waitReady(t, sessionQueue(id), n-rm, "with the Receive Maximum in flight")
		c.ping(t)
		if k := len(c.pubs); k > 0 {
			t.Fatalf("%d PUBLISH packets beyond the Receive Maximum of %d [MQTT-3.3.4-9]", k, rm)
		}
		// Each PUBACK gives one slot back: two acknowledged, two more sent.
		r.ackOldest(t)
		r.ackOldest(t)
		r.read(t, 2)
		qw.waitReady(t, sessionQueue(id), n-rm-2, "after two PUBACKs")
		for r.got < n {
			r.ackOldest(t)
			r.read(t, 1)
		}
		for _, pid := range r.inflight {
			c.ack(t, 0x40, pid)
		}
		qw.waitReady(t, sessionQueue(id), 0, "after all")
	})

	t.Run("qos2-slot-held-until-pubcomp", func(t *testing.T) {
		const rm, n = 2, 4
		const id = "rm-qos2"
		c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: id, ReceiveMaximum: rm})
		c.subscribe(t, 0, rawSub{"rm/qos2", 2})
		pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "rm-qos2-pub"})
		for i := range n {
			pub.Send(t, "rm/qos2", 2, fmt.Sprint(i))
		}
		seen := map[string]int{}
		var first []rawPublish
		for range rm {
			p := c.nextPub(t, "QoS 2 message")
			seen[p.Payload]++
			first = append(first, p)
		}
		// PUBREC with 0x00 does not give the slot back; PUBCOMP will.
		for _, p := range first {
			c.ack(t, 0x50, p.ID)
			c.await(t, typPubrel, int(p.ID), "PUBREL")
		}
		c.ping(t)
		if k, waiting := len(c.pubs), qw.ready(t, sessionQueue(id)); k > 0 || waiting != n-rm {
			t.Errorf("with %d QoS 2 deliveries PUBREC'd but not PUBCOMP'd, %d more PUBLISH arrived and %d of %d stay queued; want 0 and %d [MQTT-3.3.4-9, section 4.9]",
				rm, k, waiting, n-rm, n-rm)
		}
		for _, p := range first {
			c.ack(t, 0x70, p.ID)
		}
		for len(seen) < n {
			p := c.nextPub(t, fmt.Sprintf("QoS 2 message %d of %d", len(seen)+1, n))
			seen[p.Payload]++
			c.ack(t, 0x50, p.ID)
			c.await(t, typPubrel, int(p.ID), "PUBREL")
			c.ack(t, 0x70, p.ID)
		}
		for i := range n {
			if seen[fmt.Sprint(i)] != 1 {
				t.Errorf("message %d received %d times, want once (%v)", i, seen[fmt.Sprint(i)], seen)
			}
		}
	})

	t.Run("one-limit-for-all-subscriptions", func(t *testing.T) {
		// Receive Maximum counts every QoS > 0 PUBLISH of the connection,
		// whichever subscription (here a plain one and a shared one)
		// it is sent for.
		const rm = 3
		const id = "rm-shared"
		c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: id, ReceiveMaximum: rm})
		c.subscribe(t, 0, rawSub{"rm/plain", 1})
		c.subscribe(t, 0, rawSub{"$share/rmg/rm/shared", 1})
		for i := range rm {
			apub.Send(t, "rm.plain", true, fmt.Sprint("plain ", i))
		}
		for i := range rm {
			apub.Send(t, "rm.shared", true, fmt.Sprint("shared ", i))
		}
		seen := map[string]int{}
		var ids []uint16
		for range rm {
			p := c.nextPub(t, "message")
			seen[p.Payload]++
			ids = append(ids, p.ID)
		}
		c.ping(t)
		// ferrymq's queue of the shared group, named after group and filter.
		waiting := qw.ready(t, sessionQueue(id)) + qw.ready(t, "mqtt-shared-rmg-rm.shared")
		if k := len(c.pubs); k > 0 || waiting != rm {
			t.Errorf("Receive Maximum %d over two subscriptions: %d more PUBLISH in flight, %d messages queued; want 0 and %d [MQTT-3.3.4-9]", rm, k, waiting, rm)
		}
		for _, pid := range ids {
			c.ack(t, 0x40, pid)
		}
		for len(seen) < 2*rm {
			p := c.nextPub(t, fmt.Sprintf("message %d of %d", len(seen)+1, 2*rm))
			seen[p.Payload]++
			c.ack(t, 0x40, p.ID)
		}
		for p, k := range seen {
			if k != 1 {
				t.Errorf("%q received %d times", p, k)
			}
		}
	})
}

// TestServerReceiveMaximum: a client may have as many QoS 1 publishes
// unacknowledged as the Receive Maximum the server announced
// ([MQTT-3.3.4-7] bounds the client, not less). It sends exactly that many
// in one write without reading, to a topic bound to a durable queue so
// that each PUBACK waits for the store; all are acknowledged with success
// and stored, none refused. (Sending more than the limit is not tested:
// whether the server has answered enough of them to stay under it when
// the next one arrives depends on timing.)
func TestServerReceiveMaximum(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{Durable: true})
	ch := b.amqpChannel(t)
	const queue = "srm-durable"
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, "srm.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "srm-pub"})
	rm, ok := c.Props.get(propReceiveMaximum)
	if !ok {
		rm = 65535 // absent means 65,535 (section 3.2.2.3.3)
	}
	t.Logf("server Receive Maximum %d", rm)
	var buf []byte
	pending := make(map[uint16]bool, rm)
	for i := range rm {
		pk, id := c.publishPacket("srm/t", 1, fmt.Sprint(i), nil)
		buf = append(buf, pk...)
		pending[id] = true
	}
	c.write(t, buf)
	for len(pending) > 0 {
		p := c.await(t, typPuback, -1, fmt.Sprintf("PUBACK (%d of %d outstanding)", len(pending), rm))
		pid := uint16(p.id())
		if !pending[pid] {
			t.Fatalf("PUBACK for packet identifier %d, not outstanding", pid)
		}
		delete(pending, pid)
		if len(p.body) > 2 && p.body[2] >= 0x80 {
			t.Errorf("PUBACK %d: reason %#x", pid, p.body[2])
		}
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != rm {
		t.Errorf("%s holds %d messages, want all %d acknowledged", queue, q.Messages, rm)
	}
}

// TestPrefetchCapsInflight: max_inflight_messages (Config.Prefetch) caps
// the QoS 1 deliveries to a client awaiting its PUBACK, below a larger
// MQTT 5 Receive Maximum and for 3.1.1, which has none: with Prefetch 3
// and 10 messages queued, a subscriber that acknowledges nothing gets
// exactly 3; each PUBACK lets exactly one more go.
func TestPrefetchCapsInflight(t *testing.T) {
	const prefetch, n = 3, 10
	b := startTestBroker(t, testBrokerOpts{MQTT: Config{Prefetch: prefetch}})
	qw := newQueueWatch(t, b)
	for _, o := range []rawOpts{
		{Version: 4, ClientID: "pf-v3"},
		{Version: 5, ClientID: "pf-v5", ReceiveMaximum: 100},
	} {
		t.Run(o.ClientID, func(t *testing.T) {
			topic := "pf/" + o.ClientID
			c := dialRaw(t, b.MQTTAddr, o)
			c.subscribe(t, 0, rawSub{topic, 1})
			pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: o.ClientID + "-pub"})
			for i := range n {
				pub.Send(t, topic, 1, fmt.Sprint(i))
			}
			q := b.Core.VHost("/").Queue(sessionQueue(o.ClientID))
			r := &inOrder{c: c}
			// held checks that exactly prefetch deliveries are out and
			// the rest wait in the session queue.
			held := func(when string) {
				t.Helper()
				qw.waitReady(t, sessionQueue(o.ClientID), n-r.got, when)
				c.ping(t)
				if k, st := len(c.pubs), q.Stats(); k > 0 || st.Unacked != prefetch {
					t.Fatalf("%s: %d more PUBLISH, %d unacknowledged; want 0 and max_inflight_messages %d", when, k, st.Unacked, prefetch)
				}
			}
			r.read(t, prefetch)
			held("none acknowledged")
			r.ackOldest(t)
			r.read(t, 1)
			held("after one PUBACK")
			for r.got < n {
				r.ackOldest(t)
				r.read(t, 1)
			}
			for _, id := range r.inflight {
				c.ack(t, 0x40, id)
			}
			c.ping(t)
		})
	}
}

// inOrder reads a raw client's QoS 1 deliveries of messages published with
// payloads "0", "1", ...: each must come in order, once, and stays in
// inflight until ackOldest sends its PUBACK.
type inOrder struct {
	c        *rawClient
	got      int
	inflight []uint16
}

func (r *inOrder) read(t *testing.T, k int) {
	t.Helper()
	for range k {
		p := r.c.nextPub(t, fmt.Sprintf("message %d", r.got))
		if p.Payload != fmt.Sprint(r.got) || p.QoS != 1 || p.Dup {
			t.Fatalf("got %+v, want message %d at QoS 1, in order, once", p, r.got)
		}
		r.got++
		r.inflight = append(r.inflight, p.ID)
	}
}

func (r *inOrder) ackOldest(t *testing.T) {
	t.Helper()
	r.c.ack(t, 0x40, r.inflight[0])
	r.inflight = r.inflight[1:]
}
