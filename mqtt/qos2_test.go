package mqtt

// QoS 2 flows (section 4.3.3) and acknowledgements the server does not
// expect (section 4.13).

import (
	"fmt"
	"testing"
	"time"
)

// nextCtrl returns the next control packet in arrival order, stashed ones
// first.
func (c *rawClient) nextCtrl(t testing.TB, what string) rawPacket {
	t.Helper()
	if len(c.stash) > 0 {
		p := c.stash[0]
		c.stash = c.stash[1:]
		return p
	}
	select {
	case p := <-c.ctrl:
		return p
	case <-c.done:
		t.Fatalf("%s: connection closed (%v)", what, c.err)
	case <-time.After(mqttWait):
		t.Fatalf("%s: nothing within %v", what, mqttWait)
	}
	return rawPacket{}
}

// stashed reports whether a control packet of type typ for id was read
// and kept while waiting for another.
func (c *rawClient) stashed(typ byte, id uint16) bool {
	for _, p := range c.stash {
		if p.typ() == typ && p.id() == int(id) {
			return true
		}
	}
	return false
}

// TestQoS2RefusedByPubrec: a PUBREC with a reason code of 0x80 or more
// ends that QoS 2 delivery: no PUBREL follows, and its place in the
// client's Receive Maximum (1 here) is free for the next message.
func TestQoS2RefusedByPubrec(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "q2sub", ReceiveMaximum: 1})
	c.subscribe(t, 0, rawSub{Filter: "q2/#", Opts: 2})
	pub := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "q2pub"})
	for _, m := range []string{"refused", "taken"} {
		pub.write(t, mqttPkt(0x34, mqttStr("q2/t"), u16(pub.newID()), []byte{0}, []byte(m)))
	}
	first := c.nextPub(t, "first QoS 2 delivery")
	if first.Payload != "refused" || first.QoS != 2 {
		t.Fatalf("got %q QoS %d, want \"refused\" QoS 2", first.Payload, first.QoS)
	}
	c.write(t, mqttPkt(0x50, u16(first.ID), []byte{0x80}))
	second := c.nextPub(t, "second delivery, once the refused one freed its place")
	if second.Payload != "taken" {
		t.Fatalf("got %q, want \"taken\"", second.Payload)
	}
	c.ack(t, 0x50, second.ID)
	c.await(t, typPubrel, int(second.ID), "PUBREL of the accepted delivery")
	c.ping(t)
	if c.stashed(typPubrel, first.ID) {
		t.Fatalf("PUBREL %d sent after PUBREC 0x80", first.ID)
	}
	c.ack(t, 0x70, second.ID)
	c.ping(t)
	s := b.MQTT.sessionOf(t, "q2sub")
	s.mu.Lock()
	inFlight, held := len(s.flight), len(s.st.pubrel)
	s.mu.Unlock()
	if inFlight != 0 || held != 0 {
		t.Fatalf("%d deliveries in flight, %d awaiting PUBCOMP; want none", inFlight, held)
	}
}

// sessionOf returns the live session of clientID in the default vhost.
func (s *Server) sessionOf(t testing.TB, clientID string) *session {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sessions["/\x00"+clientID]
	if st == nil || st.live == nil {
		t.Fatalf("no live session for %q", clientID)
	}
	return st.live
}

// TestUnexpectedAcks: a PUBACK, PUBREC or PUBCOMP for a packet identifier
// the server has not in flight, or of the wrong QoS for it, is answered
// as the spec has it (a PUBREC with PUBREL 0x92 in MQTT 5, the others
// ignored) and leaves the session working: the flows in flight complete
// normally and later messages arrive.
func TestUnexpectedAcks(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			b := startTestBroker(t, testBrokerOpts{})
			c := dialRaw(t, b.MQTTAddr, rawOpts{Version: version, ClientID: "ua"})
			c.subscribe(t, 0, rawSub{Filter: "ua/1", Opts: 1}, rawSub{Filter: "ua/2", Opts: 2})
			pub := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "uapub"})

			c.ack(t, 0x40, 999) // PUBACK, nothing in flight
			c.ack(t, 0x70, 998) // PUBCOMP, nothing in flight
			c.ack(t, 0x50, 997) // PUBREC, nothing in flight
			rel := c.await(t, typPubrel, 997, "PUBREL for an unknown PUBREC")
			if version == 5 && (len(rel.body) < 3 || rel.body[2] != 0x92) {
				t.Fatalf("PUBREL % x, want reason 0x92", rel.body)
			}

			pub.publish(t, "ua/2", 2, "two", nil)
			p2 := c.nextPub(t, "QoS 2 delivery")
			c.ack(t, 0x40, p2.ID) // PUBACK for a QoS 2 delivery: ignored
			c.ack(t, 0x70, p2.ID) // PUBCOMP before PUBREC: ignored
			c.ack(t, 0x50, p2.ID)
			rel = c.await(t, typPubrel, int(p2.ID), "PUBREL of the QoS 2 delivery")
			if version == 5 && len(rel.body) > 2 && rel.body[2] != 0 {
				t.Fatalf("PUBREL % x, want success", rel.body)
			}
			c.ack(t, 0x70, p2.ID)

			pub.publish(t, "ua/1", 1, "one", nil)
			p1 := c.nextPub(t, "QoS 1 delivery")
			c.ack(t, 0x50, p1.ID) // PUBREC for a QoS 1 delivery
			c.await(t, typPubrel, int(p1.ID), "PUBREL answering the stray PUBREC")
			c.ack(t, 0x40, p1.ID)

			pub.publish(t, "ua/1", 1, "after", nil)
			if p := c.nextPub(t, "a later message"); p.Payload != "after" || p.Dup {
				t.Fatalf("got %q (dup %v), want \"after\"", p.Payload, p.Dup)
			}
			c.ping(t)
		})
	}
}

// TestInboundQoS2RepliesInOrder: a client pipelining QoS 2 publishes and
// PUBRELs gets its PUBRECs and PUBCOMPs in the order of the packets they
// answer, though each PUBREC waits for the store (the topic is bound to a
// durable queue) and a PUBCOMP waits for nothing [MQTT-4.6.0-3].
func TestInboundQoS2RepliesInOrder(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{Durable: true})
	ch := b.amqpChannel(t)
	if _, err := ch.QueueDeclare("q2-order", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("q2-order", "ord.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "q2ord"})
	const n = 100
	var buf []byte
	var want []string
	var ids []uint16
	for i := range n {
		pk, id := c.publishPacket("ord/t", 2, fmt.Sprint(i), nil)
		buf = append(buf, pk...)
		want = append(want, fmt.Sprintf("PUBREC %d", id))
		ids = append(ids, id)
	}
	c.write(t, buf)
	for i, w := range want {
		if p := c.nextCtrl(t, w); p.typ() != typPubrec || p.id() != int(ids[i]) {
			t.Fatalf("reply %d: %v, want %s", i, p, w)
		}
	}
	// Now each PUBREL is followed by a new publish: their replies must
	// come out interleaved the same way.
	buf, want = nil, nil
	for _, id := range ids {
		buf = append(buf, mqttPkt(0x62, u16(id))...)
		want = append(want, fmt.Sprintf("PUBCOMP %d", id))
		pk, nid := c.publishPacket("ord/t", 2, "again", nil)
		buf = append(buf, pk...)
		want = append(want, fmt.Sprintf("PUBREC %d", nid))
	}
	c.write(t, buf)
	names := map[byte]string{typPubrec: "PUBREC", typPubcomp: "PUBCOMP"}
	for i, w := range want {
		p := c.nextCtrl(t, w)
		if got := fmt.Sprintf("%s %d", names[p.typ()], p.id()); got != w {
			t.Fatalf("reply %d: %s, want %s", i, got, w)
		}
	}
}
