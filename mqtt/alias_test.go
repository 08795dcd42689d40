package mqtt

// Topic aliases the server sets on what it sends (section 3.3.2.3.4).

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"
)

func aliasMaxProp(n uint16) []byte { return append([]byte{propTopicAliasMax}, u16(n)...) }

// TestServerTopicAliases: a client with a Topic Alias Maximum above 0
// gets each topic once with an alias and thereafter the alias alone
// [MQTT-3.3.2-9] ... [MQTT-3.3.2-12], never an alias above its maximum
// (topics past it come in full), and none at all with a maximum of 0.
func TestServerTopicAliases(t *testing.T) {
	tests := []struct {
		aliasMax uint16
		aliased  int // how many of the three topics get an alias
	}{{0, 0}, {2, 2}, {10, 3}}
	for _, tc := range tests {
		t.Run(fmt.Sprint("max ", tc.aliasMax), func(t *testing.T) {
			b := startTestBroker(t, testBrokerOpts{})
			var props []byte
			if tc.aliasMax > 0 {
				props = aliasMaxProp(tc.aliasMax)
			}
			c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "alias", Props: props, AutoAck: true})
			c.subscribe(t, 0, rawSub{Filter: "dev/#", Opts: 1})
			pub := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "apub"})
			topics := []string{"dev/a/temp", "dev/b/temp", "dev/c/temp"}
			for round := range 3 {
				for _, topic := range topics {
					pub.publish(t, topic, 1, fmt.Sprint(round), nil)
				}
			}
			known := map[int]string{}
			withAlias := map[string]bool{}
			for i := range 3 * len(topics) {
				p := c.nextPub(t, "delivery")
				want := topics[i%len(topics)]
				a, hasAlias := p.Props.get(propTopicAlias)
				topic := p.Topic
				switch {
				case hasAlias && (a < 1 || a > int(tc.aliasMax)):
					t.Fatalf("alias %d outside 1..%d", a, tc.aliasMax)
				case hasAlias && topic != "":
					known[a] = topic
					withAlias[topic] = true
				case hasAlias:
					topic = known[a]
				}
				if topic != want {
					t.Fatalf("delivery %d: topic %q (alias %d), want %q", i, p.Topic, a, want)
				}
				if i >= len(topics) && withAlias[want] && p.Topic != "" {
					t.Fatalf("delivery %d: %q sent in full again after its alias", i, want)
				}
			}
			if len(withAlias) != tc.aliased {
				t.Fatalf("%d topics aliased, want %d", len(withAlias), tc.aliased)
			}
		})
	}
}

// TestServerTopicAliasBytes measures what aliases save on a realistic
// device stream: a gateway subscribed to the telemetry of 20 sensors,
// each reading a short JSON document on a topic of some 50 bytes, 2,000
// readings at QoS 0. It counts the bytes of the PUBLISH packets the
// gateway receives with a Topic Alias Maximum of 0 and of 20.
func TestServerTopicAliasBytes(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	const sensors, readings = 20, 2000
	received := func(aliasMax uint16) int {
		id := fmt.Sprint("gateway", aliasMax)
		conn, err := net.DialTimeout("tcp", b.MQTTAddr, mqttWait)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(4 * mqttWait))
		props := []byte{}
		if aliasMax > 0 {
			props = aliasMaxProp(aliasMax)
		}
		conn.Write(connectPkt("MQTT", 5, 0xC2, 60, props, mqttStr(id), mqttStr("guest"), mqttStr("guest")))
		conn.Write(mqttPkt(0x82, u16(1), []byte{0}, mqttStr("site/#"), []byte{0}))
		r := bufio.NewReader(conn)
		for _, want := range []byte{0x20, 0x90} {
			if first, body, err := readMQTTPacket(r); err != nil || first != want {
				t.Fatalf("got %#x % x (%v), want %#x", first, body, err, want)
			}
		}
		pub := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "sensors" + id})
		for i := range readings {
			s := i % sensors
			topic := fmt.Sprintf("site/berlin-07/building-2/floor-4/sensor-%03d/temperature", s)
			pub.publish(t, topic, 0, fmt.Sprintf(`{"t":%.1f,"ts":%d}`, 20+float64(i%50)/10, 1733400000+i), nil)
		}
		total := 0
		for range readings {
			first, body, err := readMQTTPacket(r)
			if err != nil || first>>4 != typPublish {
				t.Fatalf("gateway: %#x %v", first, err)
			}
			total += 1 + len(mqttVarint(len(body))) + len(body)
		}
		return total
	}
	full, aliased := received(0), received(sensors)
	saved := 100 * float64(full-aliased) / float64(full)
	t.Logf("%d readings from %d sensors: %d bytes without topic aliases, %d with (%.1f%% saved, %.1f bytes per message)",
		readings, sensors, full, aliased, saved, float64(full-aliased)/readings)
	if saved < 30 {
		t.Fatalf("aliases saved %.1f%%, want well over 30%% on this stream", saved)
	}
}
