package bridge

import (
	"bytes"
	"maps"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/packets"

	"github.com/ferrymq/ferrymq/core"
)

// TestAppendPublish: the link's own PUBLISH encoding reads back, with
// paho.golang's decoder, as the message it was made from, the node added
// to the via header, and the body the last bytes.
func TestAppendPublish(t *testing.T) {
	long := strings.Repeat("x", 300) // lengths past one VBI byte
	for _, tc := range []struct {
		name string
		m    core.Message
		qos  byte
		via  string
	}{
		{"bare QoS 1", core.Message{Body: []byte("hello")}, 1, "edge"},
		{"QoS 0 no id", core.Message{Body: []byte{}}, 0, "edge"},
		{"QoS 2 properties", core.Message{Body: []byte(long), Properties: core.Properties{
			ContentType: "text/plain", CorrelationID: "c-1",
			Headers: core.Table{"k": "v", "n": int32(7), ViaHeader: "far"}}}, 2, "far,edge"},
		{"long header", core.Message{Body: bytes.Repeat([]byte{0}, 20000), Properties: core.Properties{
			Headers: core.Table{long: long}}}, 1, "edge"},
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
				if s, ok := v.(string); ok && k != ViaHeader {
					want[k] = s
				}
			}
			if !maps.Equal(got, want) {
				t.Fatalf("user properties %v, want %v", got, want)
			}
		})
	}
}
