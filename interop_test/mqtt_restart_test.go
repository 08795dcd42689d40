package interop_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// restartHow stops a broker (SIGTERM, or kill -9) and starts another on
// its data directory.
var restartHow = []struct {
	name    string
	restart func(t *testing.T, b *Broker) *Broker
}{
	{"clean restart", func(t *testing.T, b *Broker) *Broker { return restart(t, b) }},
	{"kill -9", func(t *testing.T, b *Broker) *Broker {
		b.Kill(t)
		return StartBroker(t, "--data-dir", b.DataDir)
	}},
}

// Raw MQTT 3.1.1 framing, for a client whose acknowledgements the test
// controls.

// wireStr is a two-byte length and the bytes of s.
func wireStr(s string) []byte {
	return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...)
}

// wirePkt is a packet with first byte first and the parts as its body.
func wirePkt(first byte, parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	out := []byte{first}
	for n := len(body); ; {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		out = append(out, c)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

// readWirePacket reads one packet: its first byte and its body.
func readWirePacket(r *bufio.Reader) (byte, []byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(c&0x7f) * mul
		mul *= 128
		if c&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("remaining length over four bytes")
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return first, body, err
}

// rawPersistentConnect connects an MQTT 3.1.1 client with Clean Session 0
// over a raw socket and returns its CONNACK's session present flag.
func rawPersistentConnect(t *testing.T, addr, clientID string) (net.Conn, *bufio.Reader, bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, mqtttest.Wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	vh := append(wireStr("MQTT"), 4, 0xC0, 0, 60) // username, password, clean session 0
	if _, err := conn.Write(wirePkt(0x10, vh, wireStr(clientID), wireStr("guest"), wireStr("guest"))); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(mqtttest.Wait))
	r := bufio.NewReader(conn)
	first, body, err := readWirePacket(r)
	if err != nil || first != 0x20 || len(body) != 2 || body[1] != 0 {
		t.Fatalf("CONNACK: %#x % x %v", first, body, err)
	}
	return conn, r, body[0]&1 == 1
}

// receivedPublish is a PUBLISH a raw client received.
type receivedPublish struct {
	dup     bool
	qos     byte
	id      uint16
	topic   string
	payload string
}

// readPublishes reads n PUBLISH packets (MQTT 3.1.1) within the deadline.
func readPublishes(t *testing.T, conn net.Conn, r *bufio.Reader, n int) []receivedPublish {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(3 * mqtttest.Wait))
	var out []receivedPublish
	for len(out) < n {
		first, body, err := readWirePacket(r)
		if err != nil {
			t.Fatalf("after %d of %d PUBLISHes: %v", len(out), n, err)
		}
		if first>>4 != 3 {
			t.Fatalf("packet %#x, want PUBLISH", first)
		}
		p := receivedPublish{dup: first&0x08 != 0, qos: first >> 1 & 3}
		tl := int(body[0])<<8 | int(body[1])
		p.topic, body = string(body[2:2+tl]), body[2+tl:]
		if p.qos > 0 {
			p.id, body = uint16(body[0])<<8|uint16(body[1]), body[2:]
		}
		p.payload = string(body)
		out = append(out, p)
	}
	return out
}

// ackPublish acknowledges a received PUBLISH: PUBACK for QoS 1; PUBREC,
// the server's PUBREL, then PUBCOMP for QoS 2.
func ackPublish(t *testing.T, conn net.Conn, r *bufio.Reader, p receivedPublish) {
	t.Helper()
	id := []byte{byte(p.id >> 8), byte(p.id)}
	if p.qos == 1 {
		if _, err := conn.Write(wirePkt(0x40, id)); err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := conn.Write(wirePkt(0x50, id)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(mqtttest.Wait))
	if first, body, err := readWirePacket(r); err != nil || first != 0x62 || !bytes.Equal(body, id) {
		t.Fatalf("after PUBREC %d: packet %#x % x (%v), want its PUBREL", p.id, first, body, err)
	}
	if _, err := conn.Write(wirePkt(0x70, id)); err != nil {
		t.Fatal(err)
	}
}

// TestMQTTInflightIDsSurviveRestart: QoS 1 and 2 deliveries a persistent
// session had not acknowledged when the broker stopped or was killed are
// sent again, on resume, with DUP set and the packet ids they had
// [MQTT-4.4.0-1].
func TestMQTTInflightIDsSurviveRestart(t *testing.T) {
	const n = 5
	for _, qos := range []byte{1, 2} {
		for _, how := range restartHow {
			t.Run(fmt.Sprintf("QoS %d %s", qos, how.name), func(t *testing.T) {
				b := StartBroker(t)
				id := "inflight-ids"
				conn, r, _ := rawPersistentConnect(t, b.MQTTAddr, id)
				if _, err := conn.Write(wirePkt(0x82, []byte{0, 1}, wireStr("ids/#"), []byte{qos})); err != nil {
					t.Fatal(err)
				}
				if first, body, err := readWirePacket(r); err != nil || first != 0x90 || body[2] != qos {
					t.Fatalf("SUBACK: %#x % x %v", first, body, err)
				}
				pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id + "-pub"})
				// A few delivered and acknowledged first, so that the ids in
				// flight are not the ones a fresh count would hand out.
				for i := range 3 {
					pub.Send(t, "ids/t", qos, fmt.Sprint("acked-", i))
					ackPublish(t, conn, r, readPublishes(t, conn, r, 1)[0])
				}
				// The PINGRESP says the broker has read the acknowledgements
				// before it: their removals are in the store ahead of the
				// messages below, committed with them, so that the kill
				// cannot bring an acknowledged one back.
				if _, err := conn.Write(wirePkt(0xC0)); err != nil {
					t.Fatal(err)
				}
				conn.SetReadDeadline(time.Now().Add(mqtttest.Wait))
				if first, body, err := readWirePacket(r); err != nil || first != 0xD0 {
					t.Fatalf("after the acknowledgements: packet %#x % x (%v), want PINGRESP", first, body, err)
				}
				for i := range n {
					pub.Send(t, "ids/t", qos, fmt.Sprint(i)) // returns once acknowledged: stored
				}
				ids := make(map[string]uint16, n)
				for _, p := range readPublishes(t, conn, r, n) {
					if p.dup || p.qos != qos {
						t.Fatalf("first delivery %+v: want QoS %d without DUP", p, qos)
					}
					ids[p.payload] = p.id
				}
				conn.Close() // never acknowledged

				b = how.restart(t, b)
				conn, r, present := rawPersistentConnect(t, b.MQTTAddr, id)
				if !present {
					t.Fatal("CONNACK session present = 0 after the restart")
				}
				again := readPublishes(t, conn, r, n)
				for _, p := range again {
					want, ok := ids[p.payload]
					if !ok {
						t.Fatalf("resent %+v: not one of the unacknowledged messages %v", p, ids)
					}
					if !p.dup || p.id != want || p.qos != qos {
						t.Errorf("resent %q: DUP=%v packet id %d QoS %d, want DUP, packet id %d, QoS %d", p.payload, p.dup, p.id, p.qos, want, qos)
					}
					delete(ids, p.payload)
				}
				for _, p := range again {
					ackPublish(t, conn, r, p)
				}
				// Acknowledged now: a sentinel is all that comes next.
				mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id + "-pub2"}).Send(t, "ids/t", qos, "sentinel")
				if p := readPublishes(t, conn, r, 1)[0]; p.payload != "sentinel" || p.dup {
					t.Fatalf("after acknowledging the resent messages got %+v, want the sentinel", p)
				}
			})
		}
	}
}

// TestMQTTSharedSubscriptionSurvivesRestart: a persistent session's
// shared subscription keeps its group's queue durable: messages published
// while the member is away and the broker restarts (cleanly or killed)
// reach it on resume, and the subscription still routes new ones.
func TestMQTTSharedSubscriptionSurvivesRestart(t *testing.T) {
	const n = 5
	for _, how := range restartHow {
		t.Run(how.name, func(t *testing.T) {
			b := StartBroker(t)
			id := "shared-persistent"
			c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Persistent: true})
			c.SubscribeAt(t, 1, "$share/grp/jobs/#")
			c.Disconnect(250)

			pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id + "-pub"})
			for i := range n {
				pub.Send(t, "jobs/x", 1, fmt.Sprint(i))
			}

			b = how.restart(t, b)
			c = mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Persistent: true})
			if !c.SessionPresent {
				t.Error("CONNACK session present = 0 after the restart")
			}
			got := make(map[string]bool, n)
			for range n {
				m := c.Next(t, fmt.Sprintf("group message %d of %d after the restart", len(got)+1, n))
				if m.Topic() != "jobs/x" || got[string(m.Payload())] {
					t.Fatalf("got %q on %q (have %v)", m.Payload(), m.Topic(), got)
				}
				got[string(m.Payload())] = true
			}
			mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id + "-pub2"}).Send(t, "jobs/x", 1, "sentinel")
			if m := c.Next(t, "sentinel after the restart"); string(m.Payload()) != "sentinel" {
				t.Fatalf("got %q, want the sentinel", m.Payload())
			}
		})
	}
}
