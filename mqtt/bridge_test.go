package mqtt

// A Mosquitto bridge connecting in: protocol level 3 or 4 with the bridge
// bit (0x83, 0x84), Mosquitto's try_private.

import (
	"fmt"
	"testing"
)

// TestBridgeProtocolLevel: a client connecting with level 0x83 or 0x84 is
// accepted as the 3.1 or 3.1.1 client it is, and treated as a bridge, as
// Mosquitto treats one: its own messages do not come back to it, and
// every message reaches it with RETAIN as published, so that the broker
// at its other end keeps retained messages too. An ordinary client
// subscribed alike gets both messages, RETAIN cleared on live ones.
func TestBridgeProtocolLevel(t *testing.T) {
	for _, level := range []byte{0x83, 0x84} {
		t.Run(fmt.Sprintf("%#x", level), func(t *testing.T) {
			b := startTestBroker(t, testBrokerOpts{})
			name := "MQTT"
			if level == 0x83 {
				name = "MQIsdp"
			}
			bridge := dialRaw(t, b.MQTTAddr, rawOpts{Version: 4, Name: name, Level: level, ClientID: "edge", Resume: true, AutoAck: true})
			bridge.subscribe(t, 0, rawSub{Filter: "br/#", Opts: 1})
			plain := dialRaw(t, b.MQTTAddr, rawOpts{Version: 4, ClientID: "plain", AutoAck: true})
			plain.subscribe(t, 0, rawSub{Filter: "br/#", Opts: 1})
			// The retained replays owed to the subscriptions (none) are done
			// once the PINGRESPs are back.
			bridge.ping(t)
			plain.ping(t)

			for _, c := range []*rawClient{bridge, plain} {
				id := c.newID()
				c.write(t, mqttPkt(0x33, mqttStr(map[*rawClient]string{bridge: "br/from-edge", plain: "br/from-core"}[c]), u16(id), []byte("m")))
				c.await(t, typPuback, int(id), "PUBACK")
			}
			plain.publish(t, "br/end", 1, "end", nil)

			got, _ := bridge.until(t, "end")
			if len(got) != 1 || got[0].Topic != "br/from-core" || !got[0].Retain {
				t.Fatalf("bridge got %+v, want only br/from-core with RETAIN", got)
			}
			got, _ = plain.until(t, "end")
			if len(got) != 2 || got[0].Retain || got[1].Retain {
				t.Fatalf("plain client got %+v, want both messages without RETAIN", got)
			}
		})
	}
}
