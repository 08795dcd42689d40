package mqtt

// Flow control (section 4.9): Receive Maximum in both directions.

import (
	"fmt"
	"testing"
)

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
