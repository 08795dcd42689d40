package bridge

import (
	"bytes"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/packets"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// TestAppendPublish: the link's own PUBLISH encoding reads back, with
// paho.golang's decoder, as the message it was made from, the node added
// to the via header, and the body the last bytes.
func TestAppendPublish(t *testing.T) {
	long := strings.Repeat("x", 300) // lengths past one VBI byte
	huge := strings.Repeat("h", maxString+1)
	for _, tc := range []struct {
		name string
		m    core.Message
		qos  byte
		via  string
	}{
		{"bare QoS 1", core.Message{Body: []byte("hello")}, 1, "edge"},
		{"QoS 0 no id", core.Message{Body: []byte{}}, 0, "edge"},
		{"properties", core.Message{Body: []byte(long), Properties: core.Properties{
			ContentType: "text/plain", CorrelationID: "c-1",
			Headers: core.Table{"k": "v", "n": int32(7), ViaHeader: "far"}}}, 1, "far,edge"},
		{"long header", core.Message{Body: bytes.Repeat([]byte{0}, 20000), Properties: core.Properties{
			Headers: core.Table{long: long}}}, 1, "edge"},
		// Past an MQTT string's 65,535 bytes: left out, not a packet
		// whose lengths wrap.
		{"header value too long", core.Message{Body: []byte("b"), Properties: core.Properties{
			Headers: core.Table{"big": huge, "k": "v"}}}, 1, "edge"},
		{"header key too long", core.Message{Body: []byte("b"), Properties: core.Properties{
			Headers: core.Table{huge: "v", "k": "v"}}}, 1, "edge"},
		{"via list full", core.Message{Body: []byte("b"), Properties: core.Properties{
			Headers: core.Table{ViaHeader: huge[:maxString-2]}}}, 1, "edge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := appendPublish(nil, "a/b/"+tc.name, &tc.m, tc.qos, 513, "edge")
			cp, err := packets.ReadPacket(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			p, ok := cp.Content.(*packets.Publish)
			if !ok {
				t.Fatalf("read %T, want a PUBLISH", cp.Content)
			}
			wantID := uint16(513)
			if tc.qos == 0 {
				wantID = 0
			}
			if p.Topic != "a/b/"+tc.name || p.QoS != tc.qos || p.PacketID != wantID || !bytes.Equal(p.Payload, tc.m.Body) {
				t.Fatalf("read topic %q qos %d id %d body %d bytes", p.Topic, p.QoS, p.PacketID, len(p.Payload))
			}
			if p.Properties.ContentType != tc.m.Properties.ContentType || string(p.Properties.CorrelationData) != tc.m.Properties.CorrelationID {
				t.Fatalf("content type %q correlation %q", p.Properties.ContentType, p.Properties.CorrelationData)
			}
			got := map[string]string{}
			for _, u := range p.Properties.User {
				got[u.Key] = u.Value
			}
			want := map[string]string{ViaHeader: tc.via}
			for k, v := range tc.m.Properties.Headers {
				if s, ok := v.(string); ok && k != ViaHeader && len(k) <= maxString && len(s) <= maxString {
					want[k] = s
				}
			}
			if !maps.Equal(got, want) {
				t.Fatalf("user properties %v, want %v", got, want)
			}
		})
	}
}

// TestMQTT5LinkQoS: an MQTT 5 link forwards more messages than its
// window, in order, each leaving the local queue once the upstream
// acknowledged it; a rule at QoS 2 publishes at QoS 1 (maxOutQoS).
func TestMQTT5LinkQoS(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprint("QoS ", qos), func(t *testing.T) {
			up := startUpstream(t, "127.0.0.1:0")
			upV := up.sink(t)
			m, local, _ := startLink(t, Link{Name: "up", URL: "mqtt://u:right@" + up.addr, Window: 16,
				Topics: []Topic{{Pattern: "t/#", QoS: &qos}}})
			const n = 500
			for i := range n {
				msg := &core.Message{Exchange: "amq.topic", RoutingKey: "t.x", Body: []byte(fmt.Sprint(i)),
					Properties: core.Properties{Headers: core.Table{topic.QoSHeader: int8(2)}}}
				if _, err := local.VHost("/").Publish(msg); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "forwarded upstream", func() bool { return upV.Queue("sink").Stats().Messages >= n })
			waitFor(t, "backlog gone", func() bool { s := m.Status()[0]; return s.Backlog == 0 && s.Forwarded == n })
			for i := range n {
				d, ok := upV.Queue("sink").Get(true)
				if !ok || string(d.Msg.Body) != fmt.Sprint(i) {
					t.Fatalf("upstream message %d: %v (ok %v)", i, d.Msg, ok)
				}
				if got := topic.MessageQoS(d.Msg); got != maxOutQoS {
					t.Fatalf("upstream message %d at QoS %d, want %d", i, got, maxOutQoS)
				}
			}
		})
	}
}

// TestMQTT5LinkRefusedForGood: a message the upstream refuses for good is
// acked here and counted, and the messages behind it go on over the same
// connection; sent again, it would be refused on every reconnect and hold
// them back. Refused: by PUBACK 0x87 (the link's user may not write its
// topic), and before it is sent, for being over the upstream's Maximum
// Packet Size (which would close the connection).
func TestMQTT5LinkRefusedForGood(t *testing.T) {
	big := bytes.Repeat([]byte("b"), 8<<10)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, up *testUpstream)
		bad   func(key string, body []byte) (string, []byte) // the message made refused
	}{
		{"topic not authorized", func(t *testing.T, up *testUpstream) {
			if err := up.users.SetTopicPermissions("u", "/", core.TopicPermissions{Exchange: "amq.topic", Write: `^t\.ok$`, Read: ".*"}); err != nil {
				t.Fatal(err)
			}
		}, func(_ string, body []byte) (string, []byte) { return "t.deny", body }},
		{"over Maximum Packet Size", func(t *testing.T, up *testUpstream) {
			up.stop()
			up.maxPacket = 4 << 10
			up.serve(t, "127.0.0.1:0")
		}, func(key string, _ []byte) (string, []byte) { return key, big }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, "127.0.0.1:0")
			tc.setup(t, up)
			upV := up.sink(t)
			m, local, _ := startLink(t, Link{Name: "up", URL: "mqtt://u:right@" + up.addr, Window: 16,
				Topics: []Topic{{Pattern: "t/#"}}})
			const n = 100 // every third one refused
			var ok []string
			for i := range n {
				key, body := "t.ok", []byte(fmt.Sprint(i))
				if i%3 == 1 {
					key, body = tc.bad(key, body)
				} else {
					ok = append(ok, string(body))
				}
				msg := &core.Message{Exchange: "amq.topic", RoutingKey: key, Body: body,
					Properties: core.Properties{Headers: core.Table{topic.QoSHeader: int8(1)}}}
				if _, err := local.VHost("/").Publish(msg); err != nil {
					t.Fatal(err)
				}
			}
			refused := uint64(n - len(ok))
			waitFor(t, "backlog gone", func() bool {
				s := m.Status()[0]
				return s.Backlog == 0 && s.Forwarded == uint64(len(ok)) && s.Refused == refused
			})
			if s := m.Status()[0]; s.LastError != "" || !s.Connected {
				t.Fatalf("the link lost its connection over a refusal: connected %v, last error %q", s.Connected, s.LastError)
			}
			for i, want := range ok {
				d, got := upV.Queue("sink").Get(true)
				if !got || string(d.Msg.Body) != want {
					t.Fatalf("upstream message %d: %v (ok %v), want body %s", i, d.Msg, got, want)
				}
			}
			if _, extra := upV.Queue("sink").Get(true); extra {
				t.Fatal("a refused message reached the upstream")
			}
		})
	}
}
