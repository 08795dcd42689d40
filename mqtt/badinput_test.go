package mqtt

// Bad input on a raw TCP socket: the broker closes the connection, after a
// DISCONNECT with the right reason code if it sends one (MQTT 5, section
// 4.13.1: "it SHOULD send a DISCONNECT packet containing the Reason Code
// before closing"; 0x81 or 0x82 "unless a more specific Reason Code has been
// defined"), never sends DISCONNECT to a 3.1.1 client (server DISCONNECT does
// not exist in 3.1.1), and keeps serving everyone else.

import (
	"bufio"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// publish0 is a QoS 0 PUBLISH of payload to topic for protocol level v.
func publish0(v byte, topic, payload string) []byte {
	if v == 5 {
		return mqttPkt(0x30, mqttStr(topic), []byte{0}, []byte(payload))
	}
	return mqttPkt(0x30, mqttStr(topic), []byte(payload))
}

// subscribeRaw is a SUBSCRIBE with first byte first, packet id 1 and the
// given payload.
func subscribeRaw(v byte, first byte, payload []byte) []byte {
	if v == 5 {
		return mqttPkt(first, []byte{0, 1, 0}, payload)
	}
	return mqttPkt(first, []byte{0, 1}, payload)
}

func TestBadInput(t *testing.T) {
	const (
		malformed  = 0x81
		protocol   = 0x82
		topicName  = 0x90
		tooLarge   = 0x95
		notChecked = -1
	)
	b := startTestBroker(t, testBrokerOpts{})
	// A client that stays connected throughout and must keep working.
	control := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "bad-input-control"})
	control.SubscribeAt(t, 1, "bad/control")
	var maxPacket uint32 // announced in CONNACK; 0: none
	if p := control.Connack.Properties; p != nil && p.MaximumPacketSize != nil {
		maxPacket = *p.MaximumPacketSize
	}

	cases := []struct {
		name     string
		versions []byte // protocol levels to run with
		packet   func(v byte) []byte
		code     int // MQTT 5 DISCONNECT reason code, if one is sent
	}{
		// [MQTT-3.3.1-4]: both QoS bits set is a Malformed Packet.
		{"publish-qos-3", []byte{4, 5}, func(v byte) []byte {
			if v == 5 {
				return mqttPkt(0x36, mqttStr("a"), []byte{0, 1, 0}, []byte("x"))
			}
			return mqttPkt(0x36, mqttStr("a"), []byte{0, 1}, []byte("x"))
		}, malformed},
		// Section 1.5.5 (5.0) / 2.2.3 (3.1.1): Remaining Length takes at
		// most four bytes. Read as five, these would claim 256 MiB.
		{"remaining-length-5-bytes", []byte{4, 5}, func(byte) []byte { return []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x00} }, malformed},
		// Section 3.2.2.3.6: a packet over the Maximum Packet Size the
		// server announced in CONNACK is closed with 0x95 Packet too large,
		// without waiting for its body. Packet size counts every byte
		// [section 2.1.4], so remaining length = maximum is one over.
		{"packet-too-large", []byte{4, 5}, func(byte) []byte {
			return append([]byte{0x30}, mqttVarint(int(maxPacket))...)
		}, tooLarge},
		// [MQTT-3.8.1-1]: SUBSCRIBE fixed-header flags must be 0010.
		{"subscribe-reserved-flags", []byte{4, 5}, func(v byte) []byte {
			return subscribeRaw(v, 0x80, append(mqttStr("a"), 0))
		}, malformed},
		// A string longer than the packet holding it.
		{"topic-past-packet-end", []byte{4, 5}, func(byte) []byte { return []byte{0x30, 0x03, 0x00, 0x10, 'a'} }, malformed},
		// A property length past the end of the packet.
		{"properties-past-packet-end", []byte{5}, func(byte) []byte { return mqttPkt(0x30, mqttStr("a"), []byte{0x10}) }, malformed},
		// [MQTT-3.8.3-2] (5.0), [MQTT-3.8.3-3] (3.1.1): SUBSCRIBE without a
		// topic filter.
		{"subscribe-without-filters", []byte{4, 5}, func(v byte) []byte { return subscribeRaw(v, 0x82, nil) }, protocol},
		// [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error.
		{"second-connect", []byte{4, 5}, func(v byte) []byte { return rawConnectPacket(v, "bad-second-connect") }, protocol},
		// [MQTT-3.3.2-2]: no wildcards in a PUBLISH topic name; 0x90 Topic
		// Name invalid is the specific reason code.
		{"publish-topic-plus", []byte{4, 5}, func(v byte) []byte { return publish0(v, "a/+/b", "x") }, topicName},
		{"publish-topic-hash", []byte{4, 5}, func(v byte) []byte { return publish0(v, "a/#", "x") }, topicName},
		// [MQTT-1.5.4-1] (5.0), [MQTT-1.5.3-1] (3.1.1): ill-formed UTF-8,
		// including encoded surrogates, makes a Malformed Packet.
		{"publish-topic-bad-utf8", []byte{4, 5}, func(v byte) []byte { return publish0(v, "a/\x80b", "x") }, malformed},
		{"publish-topic-utf8-surrogate", []byte{4, 5}, func(v byte) []byte { return publish0(v, "a/\xed\xa0\x80", "x") }, malformed},
		// [MQTT-1.5.4-2] (5.0), [MQTT-1.5.3-2] (3.1.1): no U+0000.
		{"publish-topic-nul", []byte{4, 5}, func(v byte) []byte { return publish0(v, "a/\x00b", "x") }, malformed},
		{"subscribe-filter-bad-utf8", []byte{4, 5}, func(v byte) []byte {
			return subscribeRaw(v, 0x82, append(mqttStr("a/\xc3\x28"), 0))
		}, malformed},
	}

	round := 0
	for _, tc := range cases {
		for _, v := range tc.versions {
			t.Run(mqtttest.VersionName(int(v))+"-"+tc.name, func(t *testing.T) {
				if tc.code == tooLarge && maxPacket == 0 {
					t.Fatal("the broker announced no Maximum Packet Size [MQTT-3.2.2-15]")
				}
				conn, r := rawConnect(t, b.MQTTAddr, v, "bad-"+tc.name)
				if _, err := conn.Write(tc.packet(v)); err != nil {
					t.Fatalf("write: %v", err)
				}
				code, err := readUntilClosed(conn, r)
				switch {
				case errors.Is(err, os.ErrDeadlineExceeded):
					t.Errorf("connection still open %v after the bad packet", mqtttest.Wait)
				case v == 5 && code >= 0 && tc.code != notChecked && code != tc.code:
					t.Errorf("DISCONNECT reason %#x, want %#x", code, tc.code)
				case v == 5 && code < 0:
					t.Logf("closed without DISCONNECT (%v)", err)
				case v == 4 && code >= 0:
					t.Errorf("DISCONNECT %#x sent to an MQTT 3.1.1 client, which has no server DISCONNECT", code)
				}
				// The broker still serves: the control client and a new one.
				// (A crash would end this test binary.)
				round++
				payload := "still here " + string(rune('A'+round%26))
				control.Send(t, "bad/control", 1, payload)
				if m := control.Next(t, "control round trip"); string(m.Payload) != payload {
					t.Fatalf("control client got %q, want %q", m.Payload, payload)
				}
				rawConnect(t, b.MQTTAddr, v, "bad-after-"+tc.name)
			})
		}
	}

	// A packet before CONNECT [MQTT-3.1.0-1]: closed, whatever the version.
	t.Run("publish-before-connect", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", b.MQTTAddr, mqtttest.Wait)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write(publish0(4, "a", "x")); err != nil {
			t.Fatal(err)
		}
		if _, err := readUntilClosed(conn, bufio.NewReader(conn)); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connection still open %v after a PUBLISH before CONNECT", mqtttest.Wait)
		}
	})
}

// readUntilClosed reads packets until the connection fails or mqtttest.Wait
// passes. It returns the reason code of a DISCONNECT received (-1: none)
// and the read error, os.ErrDeadlineExceeded if the connection stayed open.
func readUntilClosed(conn net.Conn, r *bufio.Reader) (int, error) {
	conn.SetReadDeadline(time.Now().Add(mqtttest.Wait))
	code := -1
	for {
		first, body, err := readMQTTPacket(r)
		if err != nil {
			return code, err
		}
		if first == 0xe0 {
			code = 0 // a DISCONNECT without reason code means 0x00
			if len(body) > 0 {
				code = int(body[0])
			}
		}
	}
}
