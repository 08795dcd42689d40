package mqtt

// Wills (section 3.1.2.5).

import (
	"slices"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
	mqtttopic "github.com/ferrymq/ferrymq/mqtt/topic"
)

// TestWill: when a client's socket dies without DISCONNECT, its will is
// published (section 3.1.2.5) through core: an MQTT subscriber and an AMQP
// queue bound to amq.topic both receive it.
func TestWill(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	ch := b.amqpChannel(t)
	watcher := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "will-watcher"})
	watcher.SubscribeAt(t, 1, "will/#")
	_, d := mqtttest.AMQPSubscribe(t, ch, "will.#")
	for _, v := range []int{4, 5} {
		t.Run(mqtttest.VersionName(v), func(t *testing.T) {
			topic, payload := "will/"+mqtttest.VersionName(v)+"/gone", "bye from "+mqtttest.VersionName(v)
			id := "willer-" + mqtttest.VersionName(v)
			if v == 5 {
				c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, Will: &paho.WillMessage{Topic: topic, QoS: 1, Payload: []byte(payload)}})
				c.Conn.Close()
			} else {
				c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Will: &mqtttest.V3Will{Topic: topic, QoS: 1, Payload: payload}})
				c.KillConn(t)
			}
			if m := watcher.Next(t, "will at the MQTT subscriber"); m.Topic != topic || string(m.Payload) != payload {
				t.Errorf("MQTT subscriber got %q %q, want will %q %q", m.Topic, m.Payload, topic, payload)
			}
			m := mqtttest.WaitFor(t, d, mqtttest.Wait, "will at the AMQP queue")
			if m.RoutingKey != mqtttopic.RoutingKey(topic) || string(m.Body) != payload || m.DeliveryMode != amqp091.Persistent {
				t.Errorf("AMQP got key %q body %q mode %d, want %q %q persistent (QoS 1 will)", m.RoutingKey, m.Body, m.DeliveryMode, mqtttopic.RoutingKey(topic), payload)
			}
		})
	}
}

func willDelayProp(s uint32) []byte { return append([]byte{0x18}, u32(s)...) }

// kill closes the client's socket without DISCONNECT.
func (c *rawClient) kill(t testing.TB) {
	t.Helper()
	c.conn.Close()
	<-c.done
}

// TestWillDelayCancelledByReconnect: a client that reconnects, resuming
// its session, before its will delay has passed has no will sent
// [MQTT-3.1.3-9]; one with the same delay whose client stays away has it
// sent. The second client goes away after the first, so when its will
// arrives the first one's delay has passed too. The delay is the time the
// reconnect may take: a few seconds, not one, for a loaded machine.
func TestWillDelayCancelledByReconnect(t *testing.T) {
	const delay = 5 // seconds
	b := startTestBroker(t, testBrokerOpts{})
	watcher := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "watcher"})
	watcher.subscribe(t, 0, rawSub{Filter: "wills/#", Opts: 1})
	will := func(who string) *rawWill {
		return &rawWill{Topic: "wills/" + who, Payload: who, QoS: 1, Props: willDelayProp(delay)}
	}
	back := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "back", SessionExpiry: 60, Will: will("back")})
	back.kill(t)
	dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "back", SessionExpiry: 60, Resume: true})
	away := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "away", SessionExpiry: 60, Will: will("away")})
	away.kill(t)
	if got, _ := watcher.until(t, "away"); len(got) > 0 {
		t.Fatalf("wills of clients back in time published: %v", got)
	}
}

// TestWillOnTakeover: when a new connection takes a client id's session
// over, the old connection's will is published unless the session goes on
// within its will delay [MQTT-3.1.4-3], and before the new connection's
// CONNACK: a message the new connection publishes first comes after it.
// A clean start ends the session, so the will goes out whatever its delay.
func TestWillOnTakeover(t *testing.T) {
	tests := []struct {
		name     string
		version  byte
		delay    uint32 // will delay (MQTT 5)
		clean    bool   // the new connection's clean start
		wantWill bool
	}{
		{"3.1.1 resumed", 4, 0, false, true},
		{"3.1.1 clean", 4, 0, true, true},
		{"5 no delay, resumed", 5, 0, false, true},
		{"5 delay, resumed", 5, 60, false, false},
		{"5 delay, clean start", 5, 60, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := startTestBroker(t, testBrokerOpts{})
			watcher := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "watcher"})
			watcher.subscribe(t, 0, rawSub{Filter: "to/#", Opts: 1})
			w := &rawWill{Topic: "to/will", Payload: "will", QoS: 1}
			o := rawOpts{Version: tc.version, ClientID: "dev", Resume: true, Will: w}
			if tc.version == 5 {
				w.Props = willDelayProp(tc.delay)
				o.SessionExpiry = 600
			}
			dialRaw(t, b.MQTTAddr, o)
			o.Will, o.Resume = nil, !tc.clean
			next := dialRaw(t, b.MQTTAddr, o)
			next.publish(t, "to/after", 1, "after", nil)
			got, _ := watcher.until(t, "after")
			var payloads []string
			for _, p := range got {
				payloads = append(payloads, p.Payload)
			}
			var want []string
			if tc.wantWill {
				want = []string{"will"}
			}
			if !slices.Equal(payloads, want) {
				t.Fatalf("before the new connection's first message: %q, want %q", payloads, want)
			}
		})
	}
}

// TestWillProperties: a will's MQTT 5 properties reach a subscriber as
// the client gave them (section 3.1.3.2): payload format, content type,
// response topic, correlation data, user properties in order with
// repeats, and the message expiry interval.
func TestWillProperties(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	watcher := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "watcher"})
	watcher.subscribe(t, 0, rawSub{Filter: "wp/#", Opts: 1})
	var props []byte
	props = append(props, 0x01, 1)                                // payload format: UTF-8
	props = append(append(props, 0x02), u32(3600)...)             // message expiry
	props = append(append(props, 0x03), mqttStr("text/plain")...) // content type
	props = append(append(props, 0x08), mqttStr("wp/reply")...)   // response topic
	props = append(append(props, 0x09), mqttStr("\x00\x01cd")...) // correlation data (binary)
	props = append(append(append(props, 0x26), mqttStr("k")...), mqttStr("1")...)
	props = append(append(append(props, 0x26), mqttStr("k")...), mqttStr("2")...)
	props = append(append(append(props, 0x26), mqttStr("j")...), mqttStr("3")...)
	c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "wp", Will: &rawWill{Topic: "wp/will", Payload: "gone", QoS: 1, Props: props}})
	c.kill(t)
	p := watcher.nextPub(t, "will")
	if p.Topic != "wp/will" || p.Payload != "gone" {
		t.Fatalf("got %q %q, want the will", p.Topic, p.Payload)
	}
	ints := func(id byte) int { v, _ := p.Props.get(id); return v }
	if v := ints(0x01); v != 1 {
		t.Errorf("payload format %d, want 1", v)
	}
	if v := ints(0x02); v < 3590 || v > 3600 {
		t.Errorf("message expiry %d, want about 3600", v)
	}
	strs := p.Props.strs
	for id, want := range map[byte][]string{0x03: {"text/plain"}, 0x08: {"wp/reply"}, 0x09: {"\x00\x01cd"}, 0x26: {"k=1", "k=2", "j=3"}} {
		if !slices.Equal(strs[id], want) {
			t.Errorf("property %#x: %q, want %q", id, strs[id], want)
		}
	}
}
