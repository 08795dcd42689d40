package mqtt

// Topic aliases (MQTT 5, section 3.3.2.3.4) from the client.

import (
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
	mqtttopic "github.com/ferrymq/ferrymq/mqtt/topic"
)

// TestTopicAlias: an MQTT 5 publisher sets a Topic Alias with a topic
// name and then sends the alias alone; the server must accept every alias
// up to the Topic Alias Maximum it announced [MQTT-3.3.2-12] and deliver
// each publish to the topic the alias stands for, to MQTT and AMQP
// subscribers, without passing the alias on to a subscriber that allowed
// none [MQTT-3.3.2-11]. Mappings do not outlive the connection
// [MQTT-3.3.2-7]: an alias alone on a new connection names no topic.
func TestTopicAlias(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	ch := b.amqpChannel(t)
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "alias-pub"})
	p := pub.Connack.Properties
	if p == nil || p.TopicAliasMaximum == nil || *p.TopicAliasMaximum < 2 {
		// Without it a client may send no alias at all [MQTT-3.2.2-18];
		// the mapping is still checked below, as the broker accepts them.
		var got any = "absent"
		if p != nil && p.TopicAliasMaximum != nil {
			got = *p.TopicAliasMaximum
		}
		t.Errorf("CONNACK Topic Alias Maximum %v, want >= 2: absent or 0 forbids the client any alias [MQTT-3.2.2-18]", got)
	}
	sub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "alias-sub"})
	sub.SubscribeAt(t, 1, "alias/#")
	_, d := mqtttest.AMQPSubscribe(t, ch, "alias.#")

	steps := []struct {
		topic string // sent with the alias; "" sends the alias alone
		alias uint16
		want  string
	}{
		{"alias/a", 1, "alias/a"},
		{"", 1, "alias/a"},
		{"alias/b", 2, "alias/b"},
		{"", 2, "alias/b"},
		{"", 1, "alias/a"},
		{"alias/c", 1, "alias/c"}, // a new topic remaps alias 1
		{"", 1, "alias/c"},
		{"alias/b", 0, "alias/b"}, // no alias
		{"", 2, "alias/b"},
	}
	for i, st := range steps {
		pk := &paho.Publish{Topic: st.topic, QoS: 1, Payload: []byte(fmt.Sprint(i))}
		if st.alias > 0 {
			pk.Properties = &paho.PublishProperties{TopicAlias: new(st.alias)}
		}
		pub.PublishAcked(t, pk)
		m := sub.Next(t, fmt.Sprintf("publish %d (%q alias %d)", i, st.topic, st.alias))
		if m.Topic != st.want || string(m.Payload) != fmt.Sprint(i) {
			t.Errorf("publish %d (%q alias %d): delivered %q %q, want %q", i, st.topic, st.alias, m.Topic, m.Payload, st.want)
		}
		if m.Properties != nil && m.Properties.TopicAlias != nil {
			t.Errorf("publish %d: delivered with Topic Alias %d to a client whose Topic Alias Maximum is 0 [MQTT-3.3.2-11]", i, *m.Properties.TopicAlias)
		}
		a := mqtttest.WaitFor(t, d, mqtttest.Wait, fmt.Sprintf("AMQP delivery of publish %d", i))
		if a.RoutingKey != mqtttopic.RoutingKey(st.want) || string(a.Body) != fmt.Sprint(i) {
			t.Errorf("publish %d: AMQP got key %q body %q, want %q", i, a.RoutingKey, a.Body, mqtttopic.RoutingKey(st.want))
		}
	}

	t.Run("not-carried-to-a-new-connection", func(t *testing.T) {
		// Everything routed in the vhost from here on reaches this queue.
		_, all := mqtttest.AMQPSubscribe(t, ch, "#")
		fresh := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "alias-pub-2"})
		fresh.publish(t, "", 1, "stale alias", append([]byte{propTopicAlias}, u16(1)...))
		// Handled (acknowledged or refused) before the sentinel is sent.
		if ack, ok := fresh.awaitOrClose(t, typPuback, -1, "answer to the alias-only publish"); ok {
			t.Logf("the alias-only publish was acknowledged: % x", ack.body)
		} else {
			t.Logf("the connection was closed (DISCONNECT %d; -1: none)", fresh.waitClosed(t, 0))
		}
		pub.Send(t, "alias/sentinel", 1, "sentinel")
		if m := sub.Next(t, "sentinel"); string(m.Payload) != "sentinel" {
			t.Errorf("MQTT subscriber got %q %q: a Topic Alias mapping of another connection was used [MQTT-3.3.2-7]", m.Topic, m.Payload)
		}
		for _, m := range mqtttest.AMQPUntil(t, all, "sentinel") {
			t.Errorf("routed %q with routing key %q: an alias with no mapping names no topic [MQTT-3.3.2-7], and a topic name is at least one character [MQTT-4.7.3-1]", m.Body, m.RoutingKey)
		}
	})
}
