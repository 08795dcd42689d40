package interop_test

import (
	"strings"
	"testing"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestSysTopicsFromBinary: the binary's --sys-interval reaches the MQTT
// listener: a 3.1.1 client (paho.mqtt.golang) subscribed to $SYS/# gets
// the version, retained, and uptime again at the next interval.
func TestSysTopicsFromBinary(t *testing.T) {
	b := StartBroker(t, "--sys-interval", "1")
	c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "sys-watcher"})
	c.SubscribeAt(t, 0, "$SYS/#")
	var version string
	uptimes := 0
	for version == "" || uptimes < 2 {
		m := c.Next(t, "$SYS messages")
		switch m.Topic() {
		case "$SYS/broker/version":
			version = string(m.Payload())
			if !m.Retained() {
				t.Errorf("$SYS/broker/version without RETAIN")
			}
		case "$SYS/broker/uptime":
			uptimes++
		}
	}
	if !strings.HasPrefix(version, "ferrymq version ") {
		t.Errorf("$SYS/broker/version = %q", version)
	}
}
