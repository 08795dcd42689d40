package mqtt

// What the server sends: to shared subscription members, within a
// client's Maximum Packet Size, acknowledgements telling a publisher no
// one subscribed, long topics, and topic aliases.

import (
	"fmt"
	"strings"
	"testing"
)

// unsubscribe sends UNSUBSCRIBE and returns the UNSUBACK reason codes
// (none in 3.1.1).
func (c *rawClient) unsubscribe(t testing.TB, filters ...string) []byte {
	t.Helper()
	id := c.newID()
	body := u16(id)
	if c.version == 5 {
		body = append(body, 0)
	}
	for _, f := range filters {
		body = append(body, mqttStr(f)...)
	}
	c.write(t, mqttPkt(0xA2, body))
	p := c.await(t, typUnsuback, int(id), "UNSUBACK")
	codes := p.body[2:]
	if c.version == 5 {
		_, n, err := readProps(codes)
		if err != nil {
			t.Fatal(err)
		}
		codes = codes[n:]
	}
	return codes
}

// TestSharedUnsubscribe: a member leaving a shared subscription gets
// 0x00 and no more of its messages, while the other member goes on
// getting all of them; leaving again gets 0x11.
func TestSharedUnsubscribe(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	const filter = "$share/g/sh/#"
	var members [2]*rawClient
	for i := range members {
		members[i] = dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: fmt.Sprint("member", i), AutoAck: true})
		members[i].subscribe(t, 0, rawSub{Filter: filter, Opts: 1}, rawSub{Filter: "end", Opts: 1})
	}
	if codes := members[0].unsubscribe(t, filter); len(codes) != 1 || codes[0] != 0 {
		t.Fatalf("UNSUBACK %x, want 00", codes)
	}
	pub := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "shpub"})
	const n = 20
	for i := range n {
		pub.publish(t, "sh/t", 1, fmt.Sprint(i), nil)
		pub.await(t, typPuback, -1, "PUBACK")
	}
	pub.publish(t, "end", 1, "end", nil)
	if got, _ := members[0].until(t, "end"); len(got) != 0 {
		t.Errorf("the member that left got %d messages", len(got))
	}
	if got, _ := members[1].until(t, "end"); len(got) != n {
		t.Errorf("the remaining member got %d messages, want %d", len(got), n)
	}
	if codes := members[0].unsubscribe(t, filter); len(codes) != 1 || codes[0] != 0x11 {
		t.Fatalf("second UNSUBACK %x, want 11", codes)
	}
}

// TestClientMaximumPacketSize: a message whose PUBLISH would exceed the
// client's Maximum Packet Size is not sent to it [MQTT-3.1.2-24]: it is
// dropped for that client [MQTT-3.1.2-25] and counted, and the messages
// around it arrive.
func TestClientMaximumPacketSize(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "small", AutoAck: true, Props: append([]byte{propMaxPacketSize}, u32(256)...)})
	c.subscribe(t, 0, rawSub{Filter: "mps/#", Opts: 1})
	pub := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "mpspub"})
	for _, m := range []string{"before", strings.Repeat("x", 300), "after"} {
		pub.publish(t, "mps/t", 1, m, nil)
	}
	got, _ := c.until(t, "after")
	if len(got) != 1 || got[0].Payload != "before" {
		t.Fatalf("got %v, want only \"before\" ahead of \"after\"", got)
	}
	if n := b.MQTT.Stats().DroppedTooLarge; n != 1 {
		t.Fatalf("DroppedTooLarge %d, want 1", n)
	}
}

// TestNoMatchingSubscribers: an MQTT 5 publisher learns from the PUBACK
// or PUBREC (0x10) that its QoS 1 or 2 message reached no subscriber;
// once someone subscribes, the code is 0x00.
func TestNoMatchingSubscribers(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	pub := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "nmspub"})
	rc := func(qos byte) byte {
		id := pub.publish(t, "nms/t", qos, "x", nil)
		typ := byte(typPuback)
		if qos == 2 {
			typ = typPubrec
		}
		p := pub.await(t, typ, int(id), "acknowledgement")
		if qos == 2 {
			pub.write(t, mqttPkt(0x62, u16(id)))
			pub.await(t, typPubcomp, int(id), "PUBCOMP")
		}
		if len(p.body) < 3 {
			return 0
		}
		return p.body[2]
	}
	for _, qos := range []byte{1, 2} {
		if got := rc(qos); got != 0x10 {
			t.Errorf("QoS %d to no subscriber: reason %#x, want 0x10", qos, got)
		}
	}
	sub := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "nmssub", AutoAck: true})
	sub.subscribe(t, 0, rawSub{Filter: "nms/#", Opts: 2})
	for _, qos := range []byte{1, 2} {
		if got := rc(qos); got != 0 {
			t.Errorf("QoS %d to a subscriber: reason %#x, want 0", qos, got)
		}
	}
}

// TestLongTopics: topic names and filters may be as long as their
// encoding allows, 65,535 bytes [MQTT-1.5.4]: subscribed (plain, shared,
// wildcard), published, retained and delivered, with a store on disk too
// (a persistent session's bindings and the retained message are stored
// under hashed keys); other clients' writes to the store go on.
func TestLongTopics(t *testing.T) {
	long := "long/" + strings.Repeat("level.x/", 8190)
	long += strings.Repeat("y", 65535-len(long))
	shared := "$share/g/" + long[:65535-len("$share/g/")]
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "memory", true: "store"}[durable], func(t *testing.T) {
			b := startTestBroker(t, testBrokerOpts{Durable: durable})
			var expiry uint32
			wantSub := byte(1)
			if durable {
				expiry = 600
			}
			sub := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "longsub", SessionExpiry: expiry, AutoAck: true})
			if codes := sub.subscribe(t, 0, rawSub{Filter: long, Opts: 1}); len(codes) != 1 || codes[0] != wantSub {
				t.Fatalf("SUBACK %x for a %d-byte filter, want %02x", codes, len(long), wantSub)
			}
			// A persistent session's shared group queue is durable too.
			for f, want := range map[string]byte{shared: wantSub, "long/+/#": 1} {
				if codes := sub.subscribe(t, 0, rawSub{Filter: f, Opts: 1}); len(codes) != 1 || codes[0] != want {
					t.Fatalf("SUBACK %x for a %d-byte filter, want %02x", codes, len(f), want)
				}
			}
			pub := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "longpub"})
			for i, topic := range []string{long, shared[len("$share/g/"):]} {
				want := byte(0)
				pk, id := pub.publishPacket(topic, 1, "m", nil)
				if i == 0 {
					pk[0] |= 1 // retained
				}
				pub.write(t, pk)
				if p := pub.await(t, typPuback, int(id), "PUBACK"); (len(p.body) > 2 && p.body[2] != want) || (len(p.body) == 2 && want != 0) {
					t.Fatalf("PUBACK for a %d-byte topic: % x, want reason %#x", len(topic), p.body, want)
				}
			}
			// The first topic matches the plain and the wildcard filter,
			// one delivery from the session's queue; the second the shared
			// and the wildcard one, one from each queue.
			got := map[bool]int{}
			for range 3 {
				p := sub.nextPub(t, "delivery on a long topic")
				got[p.Topic == long]++
			}
			if got[true] != 1 {
				t.Errorf("%d deliveries of the 65,535-byte topic, want 1", got[true])
			}
			if durable {
				// The store still takes other writes.
				other := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "other", SessionExpiry: 600})
				if codes := other.subscribe(t, 0, rawSub{Filter: "short", Opts: 1}); codes[0] != 1 {
					t.Fatalf("SUBACK %x after the long ones", codes)
				}
			}
			late := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "longlate"})
			late.subscribe(t, 0, rawSub{Filter: long, Opts: 0})
			if p := late.nextPub(t, "retained message"); p.Topic != long || !p.Retain {
				t.Fatalf("retained: %d-byte topic, retain %v", len(p.Topic), p.Retain)
			}
		})
	}
}
