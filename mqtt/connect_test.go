package mqtt

// Connections: keepalive, session takeover and the CONNACK, each asserted
// as the MQTT 3.1.1 and 5.0 standards word it (statement ids are 5.0's
// unless marked 3.1.1).

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestKeepalive: a client that connects with Keep Alive 1 s and then
// sends nothing is disconnected "as if the network had failed" once one
// and a half times the Keep Alive has passed ([MQTT-3.1.2-24], in both
// versions' lists; 5.0 section 3.1.2.10), and its will is then published
// [MQTT-3.1.2-8].
func TestKeepalive(t *testing.T) {
	const keepalive = 1 // seconds
	const slack = time.Second
	b := startTestBroker(t, testBrokerOpts{})
	watcher := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "ka-watcher"})
	watcher.SubscribeAt(t, 1, "ka/#")
	for _, v := range []byte{4, 5} {
		t.Run(mqtttest.VersionName(int(v)), func(t *testing.T) {
			topic := "ka/" + mqtttest.VersionName(int(v)) + "/gone"
			c := dialRaw(t, b.MQTTAddr, rawOpts{
				Version: v, ClientID: "ka-" + mqtttest.VersionName(int(v)), KeepAlive: keepalive,
				Will: &rawWill{Topic: topic, Payload: "bye", QoS: 1},
			})
			ka := time.Duration(keepalive) * time.Second
			if sk, ok := c.Props.get(propServerKeepAlive); ok {
				// The client must use the server's value [MQTT-3.2.2-21].
				if sk == 0 {
					t.Fatal("CONNACK Server Keep Alive 0: no keepalive to test")
				}
				ka = time.Duration(sk) * time.Second
			}
			code := c.waitClosed(t, mqtttest.Wait)
			silent, sinceConnack := c.closedAt.Sub(c.ConnectSent), c.closedAt.Sub(c.ConnackAt)
			t.Logf("closed %v after the CONNECT, %v after the CONNACK", silent, sinceConnack)
			if limit := ka*3/2 + slack; sinceConnack > limit {
				t.Errorf("closed %v after the CONNACK, want within 1.5 x Keep Alive (%v) + %v", sinceConnack, ka*3/2, slack)
			}
			// A client silent for less than its Keep Alive keeps to
			// (3.1.1) [MQTT-3.1.2-23] / [MQTT-3.1.2-22]: closing it is too
			// early. (mochi closes at Keep Alive + Keep Alive/2 in whole
			// seconds, which is exactly 1 s here.)
			if silent < ka {
				t.Errorf("closed %v after the CONNECT, before the Keep Alive (%v) had passed", silent, ka)
			}
			switch {
			case v == 4 && code >= 0:
				t.Errorf("DISCONNECT %#x sent to an MQTT 3.1.1 client (3.1.1 has no server DISCONNECT, section 3.14)", code)
			case v == 5 && code >= 0 && code != 0x8D:
				t.Errorf("DISCONNECT reason %#x, want 0x8D Keep Alive timeout if any (Table 3.10)", code)
			}
			if m := watcher.Next(t, "the will of the silent client"); m.Topic != topic || string(m.Payload) != "bye" {
				t.Errorf("watcher got %q %q, want the will %q \"bye\"", m.Topic, m.Payload, topic)
			}
		})
	}
}

// TestSessionTakeover: a second connection with the same client id
// takes the session over. The first is disconnected ([MQTT-3.1.4-3]:
// DISCONNECT 0x8E Session taken over; 3.1.1 [MQTT-3.1.4-2]: closed, and
// 3.1.1 has no server DISCONNECT). The QoS 1 messages the first had not
// acknowledged are sent again to the second with DUP set [MQTT-3.3.1-1]
// and their original packet identifiers [MQTT-4.4.0-1], in order
// [MQTT-4.6.0-5]; the acknowledged one is not, and nothing is lost.
func TestSessionTakeover(t *testing.T) {
	const unacked = 4
	b := startTestBroker(t, testBrokerOpts{Durable: true})
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "to-pub"})
	for _, v := range []byte{4, 5} {
		t.Run(mqtttest.VersionName(int(v)), func(t *testing.T) {
			id := "to-" + mqtttest.VersionName(int(v))
			topic := "to/" + mqtttest.VersionName(int(v))
			first := rawOpts{Version: v, ClientID: id}
			if v == 5 {
				first.SessionExpiry = 300
			} else {
				first.Resume = true // Clean Session 0: a persistent session
			}
			a := dialRaw(t, b.MQTTAddr, first)
			if codes := a.subscribe(t, 0, rawSub{topic, 1}); !slices.Equal(codes, []byte{1}) {
				t.Fatalf("SUBACK %v, want [1]", codes)
			}
			// One message acknowledged (the PINGRESP shows the PUBACK was
			// processed), so that the identifiers of the rest do not start at 1.
			pub.Send(t, topic, 1, "acked")
			m := a.nextPub(t, "the acknowledged message")
			a.ack(t, 0x40, m.ID)
			a.ping(t)
			var sent []rawPublish
			for i := range unacked {
				pub.Send(t, topic, 1, fmt.Sprint(i))
				m := a.nextPub(t, fmt.Sprintf("unacknowledged message %d", i))
				if m.Payload != fmt.Sprint(i) || m.QoS != 1 || m.Dup {
					t.Fatalf("first connection got %+v, want payload %d at QoS 1 without DUP", m, i)
				}
				sent = append(sent, m)
			}

			var next func(what string) (payload string, qos byte, dup bool, pid uint16)
			var present bool
			if v == 5 {
				c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, Resume: true, SessionExpiry: 300})
				present = c.Connack.SessionPresent
				next = func(what string) (string, byte, bool, uint16) {
					p := c.Next(t, what)
					return string(p.Payload), p.QoS, p.Duplicate(), p.PacketID
				}
			} else {
				c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Persistent: true})
				present = c.SessionPresent
				next = func(what string) (string, byte, bool, uint16) {
					m := c.Next(t, what)
					return string(m.Payload()), m.Qos(), m.Duplicate(), m.MessageID()
				}
			}
			code := a.waitClosed(t, mqtttest.Wait)
			switch {
			case v == 5 && code != 0x8E:
				t.Errorf("first connection: DISCONNECT reason %d, want 0x8E Session taken over [MQTT-3.1.4-3] (-1: none)", code)
			case v == 4 && code >= 0:
				t.Errorf("first connection: DISCONNECT %#x sent to an MQTT 3.1.1 client (3.1.1 has no server DISCONNECT, section 3.14)", code)
			}
			if !present {
				t.Errorf("CONNACK session present 0 on taking over a live session, want 1 [MQTT-3.2.2-3] / (3.1.1) [MQTT-3.2.2-2]")
			}
			for i, orig := range sent {
				payload, qos, dup, pid := next(fmt.Sprintf("redelivery %d of %d", i+1, len(sent)))
				if payload != orig.Payload || qos != 1 {
					t.Fatalf("redelivery %d: payload %q QoS %d, want %q at QoS 1, in the original order", i, payload, qos, orig.Payload)
				}
				if !dup {
					t.Errorf("redelivery of %q: DUP 0, want 1 [MQTT-3.3.1-1]", payload)
				}
				if pid != orig.ID {
					t.Errorf("redelivery of %q: packet identifier %d, want the original %d [MQTT-4.4.0-1]", payload, pid, orig.ID)
				}
			}
			pub.Send(t, topic, 1, "sentinel")
			if payload, _, _, _ := next("sentinel"); payload != "sentinel" {
				t.Errorf("after the redeliveries got %q, want the sentinel (the acknowledged message must not come again)", payload)
			}
		})
	}
}

// TestConnack: Session Present is 0 for a clean start ([MQTT-3.2.2-2];
// 3.1.1 [MQTT-3.2.2-1]) and on resuming a session that does not exist; it
// is 1 on resuming one that does ([MQTT-3.2.2-3]; 3.1.1 [MQTT-3.2.2-2,
// -3]), even with no subscriptions: the Session State includes "the
// existence of a Session, even if the rest of the Session State is empty"
// (section 4.1; 3.1.1 section 3.1.2.4). A clean start discards the old
// session and its subscriptions ([MQTT-3.1.2-4]; 3.1.1 [MQTT-3.1.2-6]),
// and a 3.1.1 clean session ends with its connection. An MQTT 5 CONNACK
// announces the server's Maximum Packet Size.
func TestConnack(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{Durable: true})
	qw := newQueueWatch(t, b)
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "ca-pub"})
	type step struct {
		clean     bool
		present   bool
		subscribe bool // subscribe to <topic>/t
		gone      bool // check that <topic>/t is no longer subscribed
	}
	cases := []struct {
		v     int
		steps []step
	}{
		// MQTT 5, always with Session Expiry 300 s.
		{5, []step{
			{clean: true, present: false},
			{clean: false, present: true, subscribe: true}, // empty, but there
			{clean: false, present: true},
			{clean: true, present: false, gone: true},
			{clean: false, present: true}, // the new, empty, session
		}},
		{4, []step{
			{clean: false, present: false}, // no session yet
			{clean: false, present: true, subscribe: true},
			{clean: false, present: true},
			{clean: true, present: false, gone: true},
			{clean: false, present: false}, // the clean session ended with its connection
		}},
	}
	for _, tc := range cases {
		t.Run(mqtttest.VersionName(tc.v), func(t *testing.T) {
			id := "ca-" + mqtttest.VersionName(tc.v)
			topic := "ca/" + mqtttest.VersionName(tc.v)
			for i, st := range tc.steps {
				var present bool
				var ep mqtttest.Endpoint
				var disconnect func()
				var sync func()
				if tc.v == 5 {
					c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, Resume: !st.clean, SessionExpiry: 300})
					present, ep = c.Connack.SessionPresent, c
					disconnect = func() { c.Disconnect(&paho.Disconnect{ReasonCode: 0}) }
					sync = func() { barrier(t, c) }
					if i == 0 {
						if p := c.Connack.Properties; p == nil || p.MaximumPacketSize == nil || *p.MaximumPacketSize == 0 {
							t.Errorf("CONNACK announces no Maximum Packet Size (properties %+v)", p)
						} else {
							t.Logf("CONNACK Maximum Packet Size %d", *p.MaximumPacketSize)
						}
					}
				} else {
					c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Persistent: !st.clean})
					present, ep = c.SessionPresent, c
					disconnect = func() { c.Disconnect(250) }
					sync = func() {}
				}
				if present != st.present {
					t.Errorf("step %d (clean %v): CONNACK session present %v, want %v", i, st.clean, present, st.present)
				}
				if st.subscribe {
					ep.SubscribeAt(t, 1, topic+"/t")
				}
				if st.gone {
					ep.SubscribeAt(t, 1, topic+"/s")
					sync()
					pub.Send(t, topic+"/t", 1, "for the old subscription")
					pub.Send(t, topic+"/s", 1, "sentinel")
					if got := mqtttest.UntilMsg(t, ep, "sentinel"); len(got) > 0 {
						t.Errorf("step %d: after a clean start the old subscription still delivers %v", i, got)
					}
				}
				disconnect()
				if tc.v == 4 && st.clean {
					// The next CONNECT must come after the broker has
					// ended this session, whose queue then goes.
					qw.waitGone(t, sessionQueue(id), "end of the clean session")
				}
			}
		})
	}

	t.Run("mqtt311-takeover-of-a-clean-session", func(t *testing.T) {
		// A clean session "lasts as long as the Network Connection. State
		// data associated with this Session MUST NOT be reused in any
		// subsequent Session" (3.1.1 [MQTT-3.1.2-6]), a session that takes
		// over its live connection included.
		const id = "ca-takeover"
		a := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id})
		a.SubscribeAt(t, 1, "ca/tk/t")
		c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Persistent: true})
		if c.SessionPresent {
			t.Errorf("CONNACK session present 1 on taking over a clean session, want 0 (3.1.1 [MQTT-3.2.2-3])")
		}
		c.SubscribeAt(t, 1, "ca/tk/s")
		pub.Send(t, "ca/tk/t", 1, "for the clean session's subscription")
		pub.Send(t, "ca/tk/s", 1, "sentinel")
		if got := mqtttest.UntilMsg(t, c, "sentinel"); len(got) > 0 {
			t.Errorf("the clean session's subscription was carried over: got %v (3.1.1 [MQTT-3.1.2-6])", got)
		}
	})
}

// connectPkt is a CONNECT built field by field: props nil for 3.x, else
// the MQTT 5 properties (without their length).
func connectPkt(name string, level, flags byte, keepalive uint16, props []byte, payload ...[]byte) []byte {
	vh := append(mqttStr(name), level, flags)
	vh = append(vh, u16(keepalive)...)
	if props != nil {
		vh = append(vh, withLen(props)...)
	}
	return mqttPkt(0x10, vh, bytes.Join(payload, nil))
}

// connectReply sends pkt on a new connection and returns the CONNACK's
// body, or nil if the server closed the connection without one. A
// refusal must be followed by the server closing the connection.
func connectReply(t *testing.T, addr string, pkt []byte) []byte {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, mqttWait)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(mqttWait))
	if _, err := conn.Write(pkt); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	first, body, err := readMQTTPacket(r)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("neither CONNACK nor close within %v", mqttWait)
	}
	if err != nil {
		return nil // closed
	}
	if first != 0x20 {
		t.Fatalf("first packet %#x % x, want CONNACK", first, body)
	}
	if len(body) >= 2 && body[1] != 0 {
		if _, _, err := readMQTTPacket(r); err == nil {
			t.Fatalf("connection still open after refusing CONNACK % x", body)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection not closed within %v of refusing CONNACK % x", mqttWait, body)
		}
	}
	return body
}

// TestConnectValidation: each CONNECT gets the answer its protocol
// version prescribes: a 3.x client a 3.1.1 return code or, for a
// malformed CONNECT, no CONNACK at all; an MQTT 5 client a reason code.
// The server has max keepalive 30 s.
func TestConnectValidation(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{MQTT: Config{MaxKeepalive: 30}})
	guest := [][]byte{mqttStr("guest"), mqttStr("guest")}
	id := func(s string) [][]byte { return append([][]byte{mqttStr(s)}, guest...) }
	const userPass, clean = 0xC0, 0x02
	ka := uint16(10)
	v5 := func(props ...byte) []byte { return append([]byte{}, props...) }
	const closed = -1
	tests := []struct {
		name string
		pkt  []byte
		want int // CONNACK reason code, or closed: no CONNACK
		// exact is the whole CONNACK body expected, where it matters.
		exact []byte
		ska   int // MQTT 5 Server Keep Alive expected; 0: none
	}{
		{"3.1.1 accepted", connectPkt("MQTT", 4, userPass|clean, ka, nil, id("ok311")...), 0, nil, 0},
		{"3.1.1 empty id without clean session [MQTT-3.1.3-8]", connectPkt("MQTT", 4, userPass, ka, nil, id("")...), 0x02, []byte{0, 2}, 0},
		{"3.1.1 empty id with clean session", connectPkt("MQTT", 4, userPass|clean, ka, nil, id("")...), 0, nil, 0},
		{"3.1 accepted, 23-byte id", connectPkt("MQIsdp", 3, userPass|clean, ka, nil, id(strings.Repeat("i", 23))...), 0, nil, 0},
		{"3.1 empty id", connectPkt("MQIsdp", 3, userPass|clean, ka, nil, id("")...), 0x02, []byte{0, 2}, 0},
		{"3.1 24-byte id", connectPkt("MQIsdp", 3, userPass|clean, ka, nil, id(strings.Repeat("i", 24))...), 0x02, []byte{0, 2}, 0},
		{"level 6 [MQTT-3.1.2-2]", connectPkt("MQTT", 6, userPass|clean, ka, nil, id("l6")...), 0x01, []byte{0, 1}, 0},
		{"level 2", connectPkt("MQTT", 2, userPass|clean, ka, nil, id("l2")...), 0x01, []byte{0, 1}, 0},
		{"MQIsdp with level 4", connectPkt("MQIsdp", 4, userPass|clean, ka, nil, id("mq4")...), 0x01, []byte{0, 1}, 0},
		{"level 6 with MQTT 5 properties", connectPkt("MQTT", 6, userPass|clean, ka, v5(), id("l6v5")...), 0x01, []byte{0, 1}, 0},
		{"unknown protocol name [MQTT-3.1.2-1]", connectPkt("MQTX", 4, userPass|clean, ka, nil, id("name")...), closed, nil, 0},
		{"3.1.1 reserved flag [MQTT-3.1.2-3]", connectPkt("MQTT", 4, userPass|clean|1, ka, nil, id("rsv")...), closed, nil, 0},
		{"3.1.1 password without user name [MQTT-3.1.2-22]", connectPkt("MQTT", 4, 0x40|clean, ka, nil, mqttStr("pw"), mqttStr("guest")), closed, nil, 0},
		{"3.1.1 user name not UTF-8 [MQTT-1.5.3-1]", connectPkt("MQTT", 4, userPass|clean, ka, nil, mqttStr("utf"), mqttStr("gu\xffst"), mqttStr("guest")), closed, nil, 0},
		{"3.1.1 user name with U+0000", connectPkt("MQTT", 4, userPass|clean, ka, nil, mqttStr("nul"), mqttStr("gu\x00st"), mqttStr("guest")), closed, nil, 0},
		{"3.1.1 keep alive over max_keepalive", connectPkt("MQTT", 4, userPass|clean, 60, nil, id("ka60")...), 0x02, []byte{0, 2}, 0},
		{"3.1.1 keep alive 0 with max_keepalive", connectPkt("MQTT", 4, userPass|clean, 0, nil, id("ka0")...), 0x02, []byte{0, 2}, 0},
		{"3.1.1 keep alive at max_keepalive", connectPkt("MQTT", 4, userPass|clean, 30, nil, id("ka30")...), 0, nil, 0},
		{"5 accepted", connectPkt("MQTT", 5, userPass|clean, ka, v5(), id("ok5")...), 0, nil, 0},
		{"5 reserved flag", connectPkt("MQTT", 5, userPass|clean|1, ka, v5(), id("rsv5")...), 0x81, nil, 0},
		{"5 user name not UTF-8", connectPkt("MQTT", 5, userPass|clean, ka, v5(), mqttStr("utf5"), mqttStr("gu\xffst"), mqttStr("guest")), 0x81, nil, 0},
		// MQTT 5 allows a password without a user name (section 3.1.2.9).
		{"5 password without user name", connectPkt("MQTT", 5, 0x40|clean, ka, v5(), mqttStr("pw5"), mqttStr("x")), 0, nil, 0},
		{"5 authentication method (section 4.12)", connectPkt("MQTT", 5, userPass|clean, ka, v5(append([]byte{0x15}, mqttStr("SCRAM-SHA-1")...)...), id("auth5")...), 0x8C, nil, 0},
		{"5 maximum packet size 0 [MQTT-3.1.2-24]", connectPkt("MQTT", 5, userPass|clean, ka, v5(propMaxPacketSize, 0, 0, 0, 0), id("mps0")...), 0x82, nil, 0},
		{"5 receive maximum 0", connectPkt("MQTT", 5, userPass|clean, ka, v5(propReceiveMaximum, 0, 0), id("rm0")...), 0x82, nil, 0},
		{"5 maximum packet size 128 is not 0", connectPkt("MQTT", 5, userPass|clean, ka, v5(propMaxPacketSize, 0, 0, 0, 128), id("mps128")...), 0, nil, 0},
		{"5 keep alive over max_keepalive [MQTT-3.2.2-21]", connectPkt("MQTT", 5, userPass|clean, 60, v5(), id("ka60v5")...), 0, nil, 30},
		{"5 keep alive 0 with max_keepalive", connectPkt("MQTT", 5, userPass|clean, 0, v5(), id("ka0v5")...), 0, nil, 30},
		{"5 keep alive under max_keepalive", connectPkt("MQTT", 5, userPass|clean, 30, v5(), id("ka30v5")...), 0, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := connectReply(t, b.MQTTAddr, tc.pkt)
			if tc.want == closed {
				if body != nil {
					t.Fatalf("got CONNACK % x, want the connection closed without one", body)
				}
				return
			}
			if len(body) < 2 {
				t.Fatalf("got CONNACK % x, want reason %#x", body, tc.want)
			}
			if int(body[1]) != tc.want {
				t.Fatalf("CONNACK reason %#x, want %#x (% x)", body[1], tc.want, body)
			}
			if tc.exact != nil && !bytes.Equal(body, tc.exact) {
				t.Fatalf("CONNACK body % x, want % x", body, tc.exact)
			}
			if tc.pkt[8] != 5 || body[1] != 0 { // level byte of a 4-character name
				return
			}
			props, _, err := readProps(body[2:])
			if err != nil {
				t.Fatal(err)
			}
			ska, ok := props.get(propServerKeepAlive)
			if got := map[bool]int{true: ska}[ok]; got != tc.ska {
				t.Fatalf("Server Keep Alive %d (present %v), want %d", ska, ok, tc.ska)
			}
		})
	}
}

// TestServerKeepAliveEnforced: a client given a shorter Server Keep Alive
// than it asked for is held to it: silent for 1.5 times that, it is
// disconnected with 0x8D [MQTT-3.1.2-22].
func TestServerKeepAliveEnforced(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{MQTT: Config{MaxKeepalive: 1}})
	c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "ska", KeepAlive: 600})
	if ska, _ := c.Props.get(propServerKeepAlive); ska != 1 {
		t.Fatalf("Server Keep Alive %d, want 1", ska)
	}
	if rc := c.waitClosed(t, mqttWait); rc != 0x8D {
		t.Fatalf("closed with DISCONNECT %#x, want 0x8D", rc)
	}
	if d := c.closedAt.Sub(c.ConnackAt); d > 5*time.Second {
		t.Fatalf("closed %v after CONNACK, want about 1.5 s", d)
	}
}
