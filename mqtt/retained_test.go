package mqtt

// Retained messages and the subscription options about them: Retain As
// Published and Retain Handling (MQTT 5 section 3.8.3.1).

import (
	"fmt"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestRetainAsPublished: a retained publish forwarded to an existing
// subscription has RETAIN 0 unless the subscription has Retain As
// Published, which keeps the publisher's flag ([MQTT-3.3.1-12, -13];
// 3.1.1: [MQTT-3.3.1-9], always 0). A retained message sent because a
// subscription was just made has RETAIN 1 (5.0 section 3.3.1.3; 3.1.1
// [MQTT-3.3.1-8]).
func TestRetainAsPublished(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{Durable: true})
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "rap-pub"})
	cases := []struct {
		name string
		v    int
		rap  bool
	}{
		{"mqtt311", 4, false},
		{"mqtt5-rap0", 5, false},
		{"mqtt5-rap1", 5, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			topic := "rap/" + tc.name
			subscribe := func(id string) mqtttest.Endpoint {
				if tc.v == 4 {
					c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id})
					c.SubscribeAt(t, 1, topic)
					return c
				}
				c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id})
				subscribeV5(t, c, nil, paho.SubscribeOptions{Topic: topic, QoS: 1, RetainAsPublished: tc.rap})
				barrier(t, c)
				return c
			}
			live := subscribe("rap-live-" + tc.name)
			pub.PublishAcked(t, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte("retained")})
			pub.Send(t, topic, 1, "plain")
			if m := live.NextMsg(t, "live retained publish"); m.Payload != "retained" || m.Retain != tc.rap {
				t.Errorf("live retained publish: got %+v, want RETAIN %v", m, tc.rap)
			}
			if m := live.NextMsg(t, "live plain publish"); m.Payload != "plain" || m.Retain {
				t.Errorf("live non-retained publish: got %+v, want RETAIN false", m)
			}

			late := subscribe("rap-late-" + tc.name)
			if m := late.NextMsg(t, "retained message for a new subscription"); m.Payload != "retained" || !m.Retain {
				t.Errorf("retained message sent for a new subscription: got %+v, want RETAIN true", m)
			}
			pub.Send(t, topic, 1, "after")
			if m := late.NextMsg(t, "live publish after the replay"); m.Payload != "after" || m.Retain {
				t.Errorf("after the replay: got %+v, want \"after\" with RETAIN false", m)
			}
		})
	}
}

// TestRetainHandling: Retain Handling 0 sends the retained messages on
// every subscribe, a re-subscription included ([MQTT-3.3.1-9],
// [MQTT-3.8.4-4]); 1 only if the subscription did not exist
// [MQTT-3.3.1-10], and a subscription of a resumed session exists; 2 never
// [MQTT-3.3.1-11].
func TestRetainHandling(t *testing.T) {
	const id = "rh-sub"
	b := startTestBroker(t, testBrokerOpts{Durable: true})
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "rh-pub"})
	pub.PublishAcked(t, &paho.Publish{Topic: "rh/t", QoS: 1, Retain: true, Payload: []byte("kept")})
	c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, SessionExpiry: 300})
	steps := []struct {
		name      string
		filter    string
		handling  byte
		replay    bool
		reconnect bool // resume the session first
	}{
		{"2-new", "rh/t", 2, false, false},
		{"1-existing", "rh/t", 1, false, false},
		{"1-new", "rh/+", 1, true, false},
		{"0-existing", "rh/+", 0, true, false},
		{"2-existing", "rh/+", 2, false, false},
		{"1-existing-in-resumed-session", "rh/+", 1, false, true},
		{"0-existing-in-resumed-session", "rh/t", 0, true, false},
	}
	parent := t // the resumed connection outlives its step
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.reconnect {
				if err := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
					t.Fatalf("disconnect: %v", err)
				}
				c = mqtttest.ConnectV5(parent, b.MQTTAddr, mqtttest.V5Options{ClientID: id, Resume: true, SessionExpiry: 300})
				if !c.Connack.SessionPresent {
					t.Fatalf("CONNACK session present 0 on resuming, want 1 [MQTT-3.2.2-3]")
				}
			}
			subscribeV5(t, c, nil, paho.SubscribeOptions{Topic: st.filter, QoS: 1, RetainHandling: st.handling})
			barrier(t, c)
			sentinel := fmt.Sprintf("sentinel %d", i)
			pub.Send(t, "rh/t", 1, sentinel)
			var got []*paho.Publish
			for _, m := range c.Until(t, sentinel) {
				// A resumed session resends what was not acknowledged
				// before the disconnect [MQTT-4.4.0-1]: paho acknowledges
				// after handing a message over, so an earlier sentinel
				// may come again, with DUP.
				if m.Duplicate() && strings.HasPrefix(string(m.Payload), "sentinel ") {
					continue
				}
				got = append(got, m)
			}
			switch {
			case st.replay && (len(got) != 1 || string(got[0].Payload) != "kept" || !got[0].Retain):
				t.Errorf("Retain Handling %d on %q: got %s, want the retained message once, RETAIN 1", st.handling, st.filter, mqtttest.V5Topics(got))
			case !st.replay && len(got) > 0:
				t.Errorf("Retain Handling %d on %q: got %s, want no retained message", st.handling, st.filter, mqtttest.V5Topics(got))
			}
		})
	}
}

// TestRetainedBeforeLaterPublish: the retained messages a SUBSCRIBE owes
// come before any message published after the client got its SUBACK, as
// from Mosquitto; and never before the SUBACK itself.
func TestRetainedBeforeLaterPublish(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "order-pub"})
	pub.PublishAcked(t, &paho.Publish{Topic: "order/retained", QoS: 1, Retain: true, Payload: []byte("retained")})
	for i := range 50 {
		sub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: fmt.Sprintf("order-sub-%d", i)})
		sub.SubscribeAt(t, 0, "order/#")
		// Acknowledged (QoS 1), so that the broker has routed it before the
		// next round's subscriber subscribes: a QoS 0 PUBLISH is only
		// written to the socket, and one the broker reads late (a loaded
		// machine) reaches the next subscriber too, rightly, before its
		// retained message.
		pub.PublishAcked(t, &paho.Publish{Topic: "order/live", QoS: 1, Payload: []byte(fmt.Sprint("live-", i))})
		if m := sub.NextMsg(t, "first message"); m.Payload != "retained" {
			t.Fatalf("round %d: first message %+v, want the retained one", i, m)
		}
	}
}
