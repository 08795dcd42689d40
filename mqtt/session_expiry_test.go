package mqtt

// Session expiry (MQTT 5 section 3.1.2.11 and 3.14.2.2.2).

import (
	"testing"
	"time"
)

// disconnect5 sends an MQTT 5 DISCONNECT with reason rc and properties.
func (c *rawClient) disconnect5(t testing.TB, rc byte, props []byte) {
	t.Helper()
	c.write(t, mqttPkt(0xE0, []byte{rc}, withLen(props)))
}

func expiryProp(s uint32) []byte { return append([]byte{propSessionExpiry}, u32(s)...) }

// hasSession reports whether the server keeps a session for clientID in
// the default vhost.
func (b *testBroker) hasSession(clientID string) bool {
	b.MQTT.mu.Lock()
	defer b.MQTT.mu.Unlock()
	_, ok := b.MQTT.sessions["/\x00"+clientID]
	return ok
}

// waitSessionGone waits until the server has ended clientID's session.
func (b *testBroker) waitSessionGone(t testing.TB, clientID string) {
	t.Helper()
	deadline := time.Now().Add(mqttWait)
	for b.hasSession(clientID) {
		if time.Now().After(deadline) {
			t.Fatalf("session %q still there %v later", clientID, mqttWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSessionExpiry: a session whose expiry interval passed while its
// client was away is gone when it comes back: session present 0, and
// what was queued for it is gone with it [MQTT-3.1.2-23]. An interval
// set again at DISCONNECT replaces the CONNECT's [MQTT-3.14.2-2], both
// shorter and longer (the session's queues live exactly as long), and
// setting one at DISCONNECT after CONNECT said 0 is a protocol error.
func TestSessionExpiry(t *testing.T) {
	tests := []struct {
		name            string
		connect, discon uint32 // intervals at CONNECT and DISCONNECT (0: absent at DISCONNECT)
		wantPresent     bool
	}{
		{"expired while disconnected", 1, 0, false},
		{"shortened at DISCONNECT", 600, 1, false},
		{"lengthened at DISCONNECT", 1, 600, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := startTestBroker(t, testBrokerOpts{Durable: true})
			pub := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "pub"})
			c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "exp", SessionExpiry: tc.connect})
			c.subscribe(t, 0, rawSub{Filter: "exp/#", Opts: 1})
			var props []byte
			if tc.discon > 0 {
				props = expiryProp(tc.discon)
			}
			c.disconnect5(t, 0, props)
			c.waitClosed(t, mqttWait)
			pub.publish(t, "exp/queued", 1, "queued", nil)
			pub.await(t, typPuback, -1, "PUBACK")
			// A clock: a session of 1 s that ends after the other's: once it
			// is gone, a 1 s interval of the other has passed too.
			clock := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "clock", SessionExpiry: 1})
			clock.disconnect5(t, 0, nil)
			clock.waitClosed(t, mqttWait)
			b.waitSessionGone(t, "clock")

			c = dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "exp", SessionExpiry: 600, Resume: true})
			if c.SessionPresent != tc.wantPresent {
				t.Fatalf("session present %v, want %v", c.SessionPresent, tc.wantPresent)
			}
			if !tc.wantPresent {
				c.subscribe(t, 0, rawSub{Filter: "exp/#", Opts: 1})
			}
			pub.publish(t, "exp/end", 1, "end", nil)
			got, _ := c.until(t, "end")
			want := 0
			if tc.wantPresent {
				want = 1
			}
			if len(got) != want {
				t.Fatalf("got %d messages before the sentinel (%v), want %d", len(got), got, want)
			}
		})
	}
	t.Run("zero to non-zero at DISCONNECT", func(t *testing.T) {
		b := startTestBroker(t, testBrokerOpts{})
		c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "z2nz"})
		c.disconnect5(t, 0, expiryProp(60))
		if rc := c.waitClosed(t, mqttWait); rc != 0x82 {
			t.Fatalf("DISCONNECT %#x, want 0x82", rc)
		}
		b.waitSessionGone(t, "z2nz")
	})
}
