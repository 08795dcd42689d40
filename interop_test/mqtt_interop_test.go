package interop_test

// MQTT <-> AMQP through one core, with the real binary: paho.golang (MQTT 5),
// paho.mqtt.golang (MQTT 3.1.1) and amqp091-go. Contract under test
// (issue 4): MQTT publishes go to amq.topic; topic "/" <-> routing key ".",
// and a "." inside a level <-> "/"; filters "+" <-> "*", "#" <-> "#"; QoS 0
// is a transient message, QoS 1 and 2 persistent with x-mqtt-publish-qos;
// AMQP -> MQTT delivers min(subscription QoS, 1 if persistent else 0).
//
// Absence ("this must not arrive") is checked without sleeping: after the
// messages under test the same publisher sends a sentinel that the same
// receiver matches, and everything received before the sentinel is what was
// delivered. That relies on one publisher's messages reaching one
// subscription queue (mqtt-subscription-<id>qos1, or one AMQP queue) in
// order, which core's FIFO queues give.

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"

	mqtttopic "github.com/ferrymq/ferrymq/mqtt/topic"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

func TestMQTTHarnessReadyLine(t *testing.T) {
	for _, tc := range []struct {
		line, proto, addr string
		ok                bool
	}{
		{`time=2026-01-02T03:04:05.000Z level=INFO msg="listener ready" proto=amqp addr=127.0.0.1:40123` + "\n", "amqp", "127.0.0.1:40123", true},
		{`level=INFO msg="listener ready" proto=mqtt addr=127.0.0.1:1883 extra=1`, "mqtt", "127.0.0.1:1883", true},
		{`level=INFO msg="listener ready" proto=mqtt-ws addr="[::1]:8083" path=/mqtt`, "mqtt-ws", "[::1]:8083", true},
		{`level=INFO msg="listener ready" proto=amqp`, "", "", false},
		{`level=INFO msg="listener ready" proto=amqp addr=`, "", "", false},
		{`level=INFO msg="store open" dir=/tmp/x`, "", "", false},
	} {
		proto, addr, ok := parseReadyLine(tc.line)
		if proto != tc.proto || addr != tc.addr || ok != tc.ok {
			t.Errorf("parseReadyLine(%q) = %q, %q, %v; want %q, %q, %v", tc.line, proto, addr, ok, tc.proto, tc.addr, tc.ok)
		}
	}
}

// TestMQTTToAMQP: an MQTT publish at each QoS, from both protocol versions,
// reaches an AMQP queue bound to amq.topic, as a transient message for QoS 0
// and a persistent one with x-mqtt-publish-qos for QoS 1 and 2.
func TestMQTTToAMQP(t *testing.T) {
	b := StartBroker(t)
	_, ch := dialBroker(t, b)
	for _, v := range []int{4, 5} {
		for qos := byte(0); qos <= 2; qos++ {
			name := fmt.Sprintf("%s-qos%d", mqtttest.VersionName(v), qos)
			t.Run(name, func(t *testing.T) {
				topic, key := "m2a/"+name+"/temp", "m2a."+name+".temp"
				_, d := mqtttest.AMQPSubscribe(t, ch, key)
				c := mqtttest.Connect(t, b.MQTTAddr, v, "m2a-"+name)
				c.SendMsg(t, topic, qos, false, "hello "+name)

				m := mqtttest.WaitFor(t, d, mqtttest.Wait, "AMQP delivery of the MQTT publish")
				if string(m.Body) != "hello "+name || m.Exchange != "amq.topic" || m.RoutingKey != key {
					t.Fatalf("got body %q exchange %q key %q; want %q, amq.topic, %q", m.Body, m.Exchange, m.RoutingKey, "hello "+name, key)
				}
				wantMode := uint8(amqp.Persistent)
				if qos == 0 {
					wantMode = amqp.Transient
				}
				if m.DeliveryMode != wantMode {
					t.Errorf("delivery_mode %d, want %d for QoS %d", m.DeliveryMode, wantMode, qos)
				}
				h, present := m.Headers["x-mqtt-publish-qos"]
				n, isInt := headerInt(h)
				switch {
				case qos > 0 && !present:
					t.Errorf("no x-mqtt-publish-qos header for QoS %d (headers %v)", qos, m.Headers)
				case present && (!isInt || n != int64(qos)):
					t.Errorf("x-mqtt-publish-qos = %#v (%T), want integer %d", h, h, qos)
				}
			})
		}
	}
}

// TestMQTTFromAMQP: an AMQP publish to amq.topic reaches MQTT subscribers of
// both versions at QoS min(subscription QoS, 1 if persistent else 0).
func TestMQTTFromAMQP(t *testing.T) {
	b := StartBroker(t)
	pub := mqtttest.NewAMQPPublisher(t, b.URL)
	for _, v := range []int{4, 5} {
		for sub := byte(0); sub <= 2; sub++ {
			for _, persistent := range []bool{false, true} {
				var want byte
				mode := "transient"
				if persistent {
					want, mode = min(sub, 1), "persistent"
				}
				name := fmt.Sprintf("%s-sub%d-%s", mqtttest.VersionName(v), sub, mode)
				t.Run(name, func(t *testing.T) {
					topic := "a2m/" + name
					c := mqtttest.Connect(t, b.MQTTAddr, v, "a2m-"+name)
					c.SubscribeAt(t, sub, topic)
					pub.Send(t, mqtttopic.RoutingKey(topic), persistent, "from amqp "+name)
					m := c.NextMsg(t, "MQTT delivery of the AMQP publish")
					if m.Topic != topic || m.Payload != "from amqp "+name || m.QoS != want || m.Retain {
						t.Fatalf("got %+v; want topic %q payload %q QoS %d, not retained", m, topic, "from amqp "+name, want)
					}
				})
			}
		}
	}
}

// endpoint kinds for the routing tables: an MQTT 5 client, an MQTT 3.1.1
// client, or AMQP (a queue bound to amq.topic, or a publisher to it).
const (
	kindMQTT5   = "mqtt5"
	kindMQTT311 = "mqtt311"
	kindAMQP    = "amqp"
)

// startSender returns a function that publishes payload under name: a topic
// at QoS 1 for MQTT, a routing key of amq.topic (persistent) for AMQP.
func startSender(t *testing.T, b *Broker, kind, id string) func(name, payload string) {
	t.Helper()
	switch kind {
	case kindAMQP:
		p := mqtttest.NewAMQPPublisher(t, b.URL)
		return func(key, payload string) { p.Send(t, key, true, payload) }
	case kindMQTT5:
		c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id})
		return func(topic, payload string) { c.Send(t, topic, 1, payload) }
	default:
		c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id})
		return func(topic, payload string) { c.Send(t, topic, 1, false, payload) }
	}
}

// startReceiver subscribes to filter at QoS 1 (MQTT) or binds a queue with
// it (AMQP), and returns a function that collects the names (topics, or
// routing keys) delivered before a message with payload sentinel.
func startReceiver(t *testing.T, b *Broker, kind, id, filter string) func(sentinel string) []string {
	t.Helper()
	switch kind {
	case kindAMQP:
		_, ch := dialBroker(t, b)
		_, d := mqtttest.AMQPSubscribe(t, ch, filter)
		return func(sentinel string) []string {
			var names []string
			for _, m := range mqtttest.AMQPUntil(t, d, sentinel) {
				names = append(names, m.RoutingKey)
			}
			return names
		}
	default:
		v := 5
		if kind == kindMQTT311 {
			v = 4
		}
		c := mqtttest.Connect(t, b.MQTTAddr, v, id)
		c.SubscribeAt(t, 1, filter)
		return func(sentinel string) []string {
			var names []string
			for _, m := range mqtttest.UntilMsg(t, c, sentinel) {
				names = append(names, m.Topic)
			}
			return names
		}
	}
}

// TestMQTTWildcards: "+" and "#" filters, for MQTT subscribers and as AMQP
// bindings ("*", "#"), with messages from MQTT and AMQP publishers.
func TestMQTTWildcards(t *testing.T) {
	b := StartBroker(t)
	cases := []struct {
		filter string
		topics []string // published in this order
		want   []string // the matching ones, in order
	}{
		{"wc1/+/temp", []string{"wc1/a/temp", "wc1/a/b/temp", "wc1/temp", "wc1/b/temp", "wc1/a/hum"}, []string{"wc1/a/temp", "wc1/b/temp"}},
		// "#" matches the parent level too [MQTT-4.7.1-2].
		{"wc2/#", []string{"wc2", "wc2x/a", "wc2/a", "other/wc2", "wc2/a/b/c"}, []string{"wc2", "wc2/a", "wc2/a/b/c"}},
		{"+/wc3/+", []string{"x/wc3/y", "wc3/y", "x/wc3", "x/wc3/y/z", "x/y/wc3/z"}, []string{"x/wc3/y"}},
		{"wc4/+/#", []string{"wc4", "wc4/a", "wc4/a/b", "wc5/a/b", "wc4/a/b/c"}, []string{"wc4/a", "wc4/a/b", "wc4/a/b/c"}},
	}
	for _, recv := range []string{kindMQTT5, kindMQTT311, kindAMQP} {
		for _, send := range []string{kindMQTT5, kindMQTT311, kindAMQP} {
			if recv == kindAMQP && send == kindAMQP {
				continue // AMQP's own topic exchange: the amqp091 suite's job
			}
			for i, tc := range cases {
				name := fmt.Sprintf("%s-to-%s-%d", send, recv, i+1)
				t.Run(name, func(t *testing.T) {
					filter, wantNames := tc.filter, slices.Clone(tc.want)
					if recv == kindAMQP {
						filter = mqtttopic.BindingKey(filter)
						for j := range wantNames {
							wantNames[j] = mqtttopic.RoutingKey(wantNames[j])
						}
					}
					collect := startReceiver(t, b, recv, "wc-sub-"+name, filter)
					publish := startSender(t, b, send, "wc-pub-"+name)
					as := func(topic string) string { // the name the publisher uses
						if send == kindAMQP {
							return mqtttopic.RoutingKey(topic)
						}
						return topic
					}
					for _, topic := range tc.topics {
						publish(as(topic), topic)
					}
					publish(as(tc.want[0]), "sentinel")
					if got := collect("sentinel"); !slices.Equal(got, wantNames) {
						t.Fatalf("filter %q received %q, want %q", filter, got, wantNames)
					}
				})
			}
		}
	}
}

// TestMQTTDotsInTopics: a "." inside an MQTT topic level travels as "/" in
// the AMQP routing key and back, so "a/b.c" <-> "a.b/c" exactly.
func TestMQTTDotsInTopics(t *testing.T) {
	b := StartBroker(t)
	cases := []struct {
		name     string
		send     string // kind of publisher
		pubName  string // topic or routing key published
		sentinel string // topic or routing key the receiver matches
		recv     string // kind of receiver
		filter   string // MQTT filter or AMQP binding key
		want     []string
	}{
		{"mqtt-dot-to-amqp-slash", kindMQTT5, "dots1/b.c", "dots1/b.c", kindAMQP, "dots1.b/c", []string{"dots1.b/c"}},
		{"mqtt-dot-is-not-amqp-level", kindMQTT5, "dots2/b.c", "dots2/b/c", kindAMQP, "dots2.b.c", nil},
		{"mqtt-dot-in-one-amqp-word", kindMQTT311, "dots3/b.c", "dots3/x", kindAMQP, "dots3.*", []string{"dots3.b/c"}},
		{"mqtt-dots-at-level-edges", kindMQTT5, "dots4/.lead/trail.", "dots4/.lead/trail.", kindAMQP, "dots4./lead.trail/", []string{"dots4./lead.trail/"}},
		{"amqp-slash-to-mqtt-dot", kindAMQP, "dots5.x/y", "dots5.x/y", kindMQTT5, "dots5/x.y", []string{"dots5/x.y"}},
		{"amqp-slash-to-mqtt-plus", kindAMQP, "dots6.x/y", "dots6.z", kindMQTT311, "dots6/+", []string{"dots6/x.y"}},
		{"amqp-slash-is-not-mqtt-level", kindAMQP, "dots7.x/y", "dots7.x.y", kindMQTT5, "dots7/x/y", nil},
		{"mqtt-dots-to-mqtt", kindMQTT311, "dots8/v1.2/temp", "dots8/v1.2/hum", kindMQTT5, "dots8/v1.2/+", []string{"dots8/v1.2/temp"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			collect := startReceiver(t, b, tc.recv, "dots-sub-"+tc.name, tc.filter)
			publish := startSender(t, b, tc.send, "dots-pub-"+tc.name)
			publish(tc.pubName, "payload")
			publish(tc.sentinel, "sentinel")
			if got := collect("sentinel"); !slices.Equal(got, tc.want) {
				t.Fatalf("%s published %q; %s with %q received %q, want %q", tc.send, tc.pubName, tc.recv, tc.filter, got, tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestMQTTProperties: MQTT 5 publish properties <-> AMQP basic properties
// and headers, and MQTT 5 -> MQTT 5 unchanged [MQTT-3.3.2-4, -15, -16, -17,
// -18, -20]. The AMQP side is RabbitMQ's: content type <-> content_type,
// correlation data <-> correlation_id (x-correlation-id when not a short
// string), response topic <-> x-reply-to-topic holding the routing-key form
// of the topic, user properties <-> headers, expiry s <-> expiration ms.
func TestMQTTProperties(t *testing.T) {
	b := StartBroker(t)
	_, ch := dialBroker(t, b)
	v5 := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "props-pub"})

	t.Run("mqtt5-to-amqp", func(t *testing.T) {
		_, d := mqtttest.AMQPSubscribe(t, ch, "props.m2a.#")
		long := strings.Repeat("c", 300)
		for _, tc := range []struct {
			name  string
			props *paho.PublishProperties
			check func(t *testing.T, m amqp.Delivery)
		}{
			{"all", &paho.PublishProperties{
				ContentType: "application/json", CorrelationData: []byte("req-42"), ResponseTopic: "replies/client.7",
				PayloadFormat: ptr[byte](1), MessageExpiry: ptr[uint32](60),
				User: paho.UserProperties{{Key: "k1", Value: "v1"}, {Key: "k2", Value: "v2"}},
			}, func(t *testing.T, m amqp.Delivery) {
				if m.ContentType != "application/json" {
					t.Errorf("content_type %q, want application/json", m.ContentType)
				}
				if m.CorrelationId != "req-42" {
					t.Errorf("correlation_id %q, want req-42", m.CorrelationId)
				}
				if m.Expiration != "60000" {
					t.Errorf("expiration %q, want \"60000\" (60 s in ms)", m.Expiration)
				}
				for k, want := range map[string]string{"x-reply-to-topic": "replies.client/7", "k1": "v1", "k2": "v2"} {
					if got, ok := m.Headers[k].(string); !ok || got != want {
						t.Errorf("header %s = %#v, want string %q", k, m.Headers[k], want)
					}
				}
			}},
			{"binary-correlation", &paho.PublishProperties{CorrelationData: []byte{0xff, 0xfe, 0, 1}}, func(t *testing.T, m amqp.Delivery) {
				checkCorrelationHeader(t, m, []byte{0xff, 0xfe, 0, 1})
			}},
			{"long-correlation", &paho.PublishProperties{CorrelationData: []byte(long)}, func(t *testing.T, m amqp.Delivery) {
				checkCorrelationHeader(t, m, []byte(long))
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				v5.PublishAcked(t, &paho.Publish{Topic: "props/m2a/" + tc.name, QoS: 1, Payload: []byte(`{"t":21.5}`), Properties: tc.props})
				m := mqtttest.WaitFor(t, d, mqtttest.Wait, "AMQP delivery")
				if m.RoutingKey != "props.m2a."+tc.name {
					t.Fatalf("routing key %q, want %q", m.RoutingKey, "props.m2a."+tc.name)
				}
				tc.check(t, m)
			})
		}
	})

	t.Run("amqp-to-mqtt5", func(t *testing.T) {
		sub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "props-a2m"})
		sub.SubscribeAt(t, 1, "props/a2m/#")
		pub := mqtttest.NewAMQPPublisher(t, b.URL)
		for _, tc := range []struct {
			name  string
			msg   amqp.Publishing
			check func(t *testing.T, p *paho.PublishProperties)
		}{
			{"all", amqp.Publishing{
				ContentType: "text/plain", CorrelationId: "abc-1", Expiration: "30000",
				Headers: amqp.Table{"x-reply-to-topic": "replies.svc/1", "k": "v"},
			}, func(t *testing.T, p *paho.PublishProperties) {
				if p.ContentType != "text/plain" {
					t.Errorf("content type %q, want text/plain", p.ContentType)
				}
				if string(p.CorrelationData) != "abc-1" {
					t.Errorf("correlation data %q, want abc-1", p.CorrelationData)
				}
				if p.ResponseTopic != "replies/svc.1" {
					t.Errorf("response topic %q, want replies/svc.1 (x-reply-to-topic replies.svc/1 mapped back)", p.ResponseTopic)
				}
				if got := p.User.Get("k"); got != "v" {
					t.Errorf("user property k = %q, want v (user properties %v)", got, p.User)
				}
				// Expiry counts down while the message waits [MQTT-3.3.2-6].
				if p.MessageExpiry == nil || *p.MessageExpiry == 0 || *p.MessageExpiry > 30 {
					t.Errorf("message expiry %v, want 1..30 s from expiration 30000 ms", p.MessageExpiry)
				}
			}},
			{"correlation-header", amqp.Publishing{Headers: amqp.Table{"x-correlation-id": []byte{0xff, 0, 1}}},
				func(t *testing.T, p *paho.PublishProperties) {
					if !bytes.Equal(p.CorrelationData, []byte{0xff, 0, 1}) {
						t.Errorf("correlation data % x, want ff 00 01 from header x-correlation-id", p.CorrelationData)
					}
				}},
			// RabbitMQ writes x-correlation-id as a longstr, which AMQP
			// clients read and relay as a string.
			{"correlation-header-longstr", amqp.Publishing{Headers: amqp.Table{"x-correlation-id": "relayed-" + strings.Repeat("r", 300)}},
				func(t *testing.T, p *paho.PublishProperties) {
					if want := "relayed-" + strings.Repeat("r", 300); string(p.CorrelationData) != want {
						t.Errorf("correlation data %q, want the x-correlation-id longstr %q", p.CorrelationData, want)
					}
				}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.msg.DeliveryMode = amqp.Persistent
				tc.msg.Body = []byte("body " + tc.name)
				pub.PublishAcked(t, "props.a2m."+tc.name, tc.msg)
				m := sub.Next(t, "MQTT delivery")
				if m.Topic != "props/a2m/"+tc.name || string(m.Payload) != "body "+tc.name {
					t.Fatalf("got topic %q payload %q", m.Topic, m.Payload)
				}
				if m.Properties == nil {
					t.Fatal("no properties")
				}
				tc.check(t, m.Properties)
			})
		}
	})

	t.Run("mqtt5-to-mqtt5", func(t *testing.T) {
		sub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "props-m2m"})
		sub.SubscribeAt(t, 1, "props/m2m/#")
		corr := []byte{0, 1, 2, 0xff}
		for _, tc := range []struct {
			name  string
			props *paho.PublishProperties
		}{
			{"all", &paho.PublishProperties{
				PayloadFormat: ptr[byte](1), ContentType: "application/json", CorrelationData: corr,
				ResponseTopic: "replies/client.7", MessageExpiry: ptr[uint32](60),
				User: paho.UserProperties{{Key: "k1", Value: "v1"}, {Key: "k2", Value: "v2"}},
			}},
			// The order of user properties, repeated keys included, is kept
			// [MQTT-3.3.2-18] and [MQTT-3.3.2-17].
			{"user-property-order", &paho.PublishProperties{
				User: paho.UserProperties{{Key: "z", Value: "1"}, {Key: "a", Value: "2"}, {Key: "z", Value: "3"}},
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				v5.PublishAcked(t, &paho.Publish{Topic: "props/m2m/" + tc.name, QoS: 1, Payload: []byte("héllo"), Properties: tc.props})
				m := sub.Next(t, "MQTT delivery")
				p, w := m.Properties, tc.props
				if p == nil {
					t.Fatal("no properties")
				}
				if (w.PayloadFormat == nil) != (p.PayloadFormat == nil) || (w.PayloadFormat != nil && *w.PayloadFormat != *p.PayloadFormat) {
					t.Errorf("payload format %v, want %v [MQTT-3.3.2-4]", p.PayloadFormat, w.PayloadFormat)
				}
				if p.ContentType != w.ContentType || p.ResponseTopic != w.ResponseTopic || !bytes.Equal(p.CorrelationData, w.CorrelationData) {
					t.Errorf("content type %q response topic %q correlation % x; want %q %q % x",
						p.ContentType, p.ResponseTopic, p.CorrelationData, w.ContentType, w.ResponseTopic, w.CorrelationData)
				}
				if w.MessageExpiry != nil && (p.MessageExpiry == nil || *p.MessageExpiry == 0 || *p.MessageExpiry > *w.MessageExpiry) {
					t.Errorf("message expiry %v, want 1..%d [MQTT-3.3.2-6]", p.MessageExpiry, *w.MessageExpiry)
				}
				if !slices.Equal(p.User, w.User) {
					t.Errorf("user properties %v, want %v in this order", p.User, w.User)
				}
			})
		}
	})
}

func checkCorrelationHeader(t *testing.T, m amqp.Delivery, want []byte) {
	t.Helper()
	if m.CorrelationId != "" {
		t.Errorf("correlation_id %q, want none: the correlation data is not a short UTF-8 string", m.CorrelationId)
	}
	got, ok := headerBytes(m.Headers["x-correlation-id"])
	if !ok || !bytes.Equal(got, want) {
		t.Errorf("header x-correlation-id = %#v, want bytes % x", m.Headers["x-correlation-id"], want)
	}
}

// TestMQTTAuth: MQTT clients log in as the AMQP users; "vhost:user" selects
// a vhost; a wrong password is refused with CONNACK 0x86 (5.0, section
// 3.2.2.2) or return code 0x05 (3.1.1, section 3.2.2.3).
func TestMQTTAuth(t *testing.T) {
	b := StartBroker(t)
	_, ch := dialBroker(t, b)
	cases := []struct {
		name       string
		v          int
		user, pass string
		want       int // CONNACK code; -1: any refusal
	}{
		{"wrong-password", 5, "guest", "wrong", 0x86},
		{"unknown-user", 5, "nobody", "guest", 0x86},
		{"vhost-user-wrong-password", 5, "/:guest", "wrong", 0x86},
		{"vhost-user", 5, "/:guest", "guest", 0},
		{"unknown-vhost", 5, "no-such-vhost:guest", "guest", -1},
		{"wrong-password", 4, "guest", "wrong", 0x05},
		{"unknown-user", 4, "nobody", "guest", 0x05},
		{"vhost-user", 4, "/:guest", "guest", 0},
		{"unknown-vhost", 4, "no-such-vhost:guest", "guest", -1},
	}
	for _, tc := range cases {
		name := mqtttest.VersionName(tc.v) + "-" + tc.name
		t.Run(name, func(t *testing.T) {
			var code int
			var err error
			var c mqtttest.Endpoint
			if tc.v == 5 {
				var v5c *mqtttest.V5Client
				var ca *paho.Connack
				v5c, ca, err = mqtttest.DialV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "auth-" + name, Username: tc.user, Password: tc.pass})
				if ca != nil {
					code = int(ca.ReasonCode)
				} else if err != nil {
					code = -2 // no CONNACK at all
				}
				c = v5c
			} else {
				var v3c *mqtttest.V3Client
				var rc byte
				v3c, rc, err = mqtttest.DialV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "auth-" + name, Username: tc.user, Password: tc.pass})
				code = int(rc)
				c = v3c
			}
			switch {
			case tc.want == 0 && err != nil:
				t.Fatalf("connect as %q: %v (code %#x), want success", tc.user, err, code)
			case tc.want == 0:
				// Logged in to vhost "/": the publish reaches its amq.topic.
				_, d := mqtttest.AMQPSubscribe(t, ch, "auth."+name)
				c.SendMsg(t, "auth/"+name, 1, false, "in vhost /")
				if m := mqtttest.WaitFor(t, d, mqtttest.Wait, "AMQP delivery in vhost /"); string(m.Body) != "in vhost /" {
					t.Fatalf("body %q", m.Body)
				}
			case err == nil:
				t.Fatalf("connect as %q with password %q succeeded, want refusal %#x", tc.user, tc.pass, tc.want)
			case code == -2:
				t.Fatalf("connect as %q: connection failed without CONNACK: %v; want CONNACK %#x", tc.user, err, tc.want)
			case tc.want == -1:
				if code == 0 {
					t.Fatalf("connect as %q failed (%v) with code 0", tc.user, err)
				}
				t.Logf("refused with %#x", code)
			case code != tc.want:
				t.Fatalf("connect as %q: refused with %#x, want %#x", tc.user, code, tc.want)
			}
		})
	}
}

// TestMQTTSubscriptionQueues: an MQTT client's subscriptions are core queues
// named as RabbitMQ names them, visible to AMQP with queue.declare passive.
func TestMQTTSubscriptionQueues(t *testing.T) {
	b := StartBroker(t)
	c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "visible"})
	c.SubscribeAt(t, 0, "vis/zero")
	c.SubscribeAt(t, 1, "vis/one")
	c.SubscribeAt(t, 2, "vis/two") // QoS 2 shares the qos1 queue
	for _, q := range []string{"mqtt-subscription-visibleqos0", "mqtt-subscription-visibleqos1"} {
		_, ch := dialBroker(t, b) // a failed passive declare closes the channel
		got, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
		if err != nil {
			t.Errorf("queue.declare passive %q: %v", q, err)
			continue
		}
		t.Logf("%s: %d messages, %d consumers", got.Name, got.Messages, got.Consumers)
	}
	// The bindings are the mapped filters: an AMQP publish to each topic
	// reaches the client once, through its queue.
	pub := mqtttest.NewAMQPPublisher(t, b.URL)
	for _, topic := range []string{"vis/zero", "vis/one", "vis/two"} {
		pub.Send(t, mqtttopic.RoutingKey(topic), true, topic)
		if m := c.Next(t, topic); m.Topic != topic || string(m.Payload) != topic {
			t.Fatalf("got %q %q, want %q", m.Topic, m.Payload, topic)
		}
	}
}

// TestMQTTWebSocket: MQTT over WebSocket at /mqtt with subprotocol "mqtt"
// (section 6), with paho.mqtt.golang's ws:// transport and with paho.golang
// over a gorilla/websocket connection; messages cross to AMQP both ways.
func TestMQTTWebSocket(t *testing.T) {
	b := StartBroker(t)
	_, ch := dialBroker(t, b)
	pub := mqtttest.NewAMQPPublisher(t, b.URL)
	big := strings.Repeat("0123456789abcdef", 8<<10) // 128 KiB: many frames
	for _, tc := range []struct {
		name    string
		connect func(t *testing.T) mqtttest.Endpoint
	}{
		{"paho.mqtt.golang", func(t *testing.T) mqtttest.Endpoint {
			return mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "ws-v3", URL: "ws://" + b.MQTTWSAddr + "/mqtt"})
		}},
		{"paho.golang", func(t *testing.T) mqtttest.Endpoint {
			return mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "ws-v5", Conn: dialWS(t, b.MQTTWSAddr)})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "ws/" + strings.ReplaceAll(tc.name, ".", "-")
			_, d := mqtttest.AMQPSubscribe(t, ch, mqtttopic.RoutingKey(topic))
			c := tc.connect(t)
			c.SubscribeAt(t, 1, topic)
			for _, payload := range []string{"small", big} {
				c.SendMsg(t, topic, 1, false, payload)
				if m := c.NextMsg(t, "own message over WebSocket"); m.Topic != topic || m.Payload != payload {
					t.Fatalf("got topic %q and %d bytes, want %q and %d bytes", m.Topic, len(m.Payload), topic, len(payload))
				}
				if m := mqtttest.WaitFor(t, d, mqtttest.Wait, "AMQP delivery"); string(m.Body) != payload {
					t.Fatalf("AMQP got %d bytes, want %d", len(m.Body), len(payload))
				}
			}
			pub.Send(t, mqtttopic.RoutingKey(topic), true, "from amqp")
			if m := c.NextMsg(t, "AMQP publish over WebSocket"); m.Topic != topic || m.Payload != "from amqp" || m.QoS != 1 {
				t.Fatalf("got %+v", m)
			}
		})
	}
}
