//go:build realbrokers

package interop_test

// A Mosquitto bridge connecting in: Debian's Mosquitto with a `connection`
// to the ferrymq binary, the way an edge gateway bridges into a central
// broker (issue 13 item 2).

import (
	"fmt"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestRealMosquittoBridgeIn: Mosquitto bridges to ferrymq over MQTT 3.1.1,
// with try_private true (it connects with protocol level 0x84, the bridge
// bit) and false (0x04). Messages cross both ways, each once and in order.
// With try_private, ferrymq treats the connection as a bridge, as
// Mosquitto would: a topic bridged both ways does not echo a message back
// to the side it came from, and a retained message published on ferrymq
// reaches Mosquitto retained (RETAIN as published), so that Mosquitto's
// own new subscribers get it. Without try_private a topic bridged both
// ways would loop (3.1.1 has no no-local), so that run bridges each
// direction on its own topics only.
func TestRealMosquittoBridgeIn(t *testing.T) {
	const n = 200
	for _, private := range []bool{true, false} {
		t.Run(fmt.Sprint("try_private ", private), func(t *testing.T) {
			fm := StartBroker(t)
			conf := []string{
				"connection ferrymq",
				"address " + fm.MQTTAddr,
				"bridge_protocol_version mqttv311",
				fmt.Sprint("try_private ", private),
				"remote_clientid edge-gateway",
				"remote_username guest",
				"remote_password guest",
				"cleansession true",
				"notifications false",
				"restart_timeout 1",
				"topic up/# out 1",
				"topic down/# in 1",
			}
			if private {
				conf = append(conf, "topic both/# both 1")
			}
			m := StartMosquitto(t, conf...)

			// Mosquitto -> ferrymq.
			central := mqtttest.ConnectV5(t, fm.MQTTAddr, mqtttest.V5Options{ClientID: "central", Buffer: n + 100})
			central.SubscribeAt(t, 1, "up/#")
			device := mosquittoV5(t, m, mqtttest.V5Options{ClientID: "device"})
			waitInbound(t, "Mosquitto -> ferrymq", central.Msgs, func(p *paho.Publish) bool { return string(p.Payload) == probe },
				func() { device.Send(t, "up/probe", 1, probe) })
			publishSeqs(t, m.Addr, "sensor", "up/hall/temp", 0, n, 16)
			got := receiveSeqs(t, "ferrymq subscriber", central.Msgs, topicSeq(t, "up/hall/temp"), n, realWait)
			logDups(t, "up", checkOnceInOrder(t, got, 0, n))

			// ferrymq -> Mosquitto.
			local := mosquittoV5(t, m, mqtttest.V5Options{ClientID: "local", Buffer: n + 100})
			local.SubscribeAt(t, 1, "down/#")
			commander := mqtttest.ConnectV5(t, fm.MQTTAddr, mqtttest.V5Options{ClientID: "commander"})
			waitInbound(t, "ferrymq -> Mosquitto", local.Msgs, func(p *paho.Publish) bool { return string(p.Payload) == probe },
				func() { commander.Send(t, "down/probe", 1, probe) })
			publishSeqs(t, fm.MQTTAddr, "controller", "down/valve/7", 0, n, 16)
			got = receiveSeqs(t, "Mosquitto subscriber", local.Msgs, topicSeq(t, "down/valve/7"), n, realWait)
			logDups(t, "down", checkOnceInOrder(t, got, 0, n))
			if !private {
				return
			}

			// Both ways on one topic: no echo. A message from Mosquitto's
			// side goes to ferrymq and would come back on the bridge's own
			// connection ahead of the sentinel that ferrymq's side sends
			// after it has arrived there.
			edgeSide := mosquittoV5(t, m, mqtttest.V5Options{ClientID: "edge-side", Buffer: 100})
			edgeSide.SubscribeAt(t, 1, "both/#")
			centralSide := mqtttest.ConnectV5(t, fm.MQTTAddr, mqtttest.V5Options{ClientID: "central-side", Buffer: 100})
			centralSide.SubscribeAt(t, 1, "both/#")
			waitInbound(t, "both, Mosquitto -> ferrymq", centralSide.Msgs, func(p *paho.Publish) bool { return string(p.Payload) == probe },
				func() { device.Send(t, "both/probe", 1, probe) })
			device.Send(t, "both/edge", 1, "from-edge")
			// waitInbound may have sent more than one probe: the later
			// ones can arrive after the one it saw.
			p := centralSide.Next(t, "the edge's message at ferrymq")
			for string(p.Payload) == probe {
				p = centralSide.Next(t, "the edge's message at ferrymq")
			}
			if string(p.Payload) != "from-edge" {
				t.Fatalf("ferrymq side got %q, want from-edge", p.Payload)
			}
			centralSide.PublishAcked(t, &paho.Publish{Topic: "both/r", QoS: 1, Retain: true, Payload: []byte("kept")})
			commander.Send(t, "both/end", 1, "end")
			var edgeGot []string
			for _, p := range edgeSide.Until(t, "end") {
				if string(p.Payload) != probe {
					edgeGot = append(edgeGot, string(p.Payload))
				}
			}
			if strings.Join(edgeGot, ",") != "from-edge,kept" {
				t.Fatalf("Mosquitto side got %q, want from-edge once (no echo) then kept", edgeGot)
			}
			late := mosquittoV5(t, m, mqtttest.V5Options{ClientID: "late"})
			late.SubscribeAt(t, 1, "both/r")
			if p := late.Next(t, "retained message at Mosquitto"); string(p.Payload) != "kept" || !p.Retain {
				t.Fatalf("Mosquitto's new subscriber got %q retain %v, want kept retained", p.Payload, p.Retain)
			}
		})
	}
}
