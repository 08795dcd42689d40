package mqtt

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// alarmWait bounds every wait for something that should happen promptly:
// mqtttest.Wait, as everywhere in these tests.
const alarmWait = mqtttest.Wait

// dialPaho connects an MQTT 5 client (paho.golang) to addr with cp; its
// incoming publishes and the server's DISCONNECT go to the returned
// channels.
func dialPaho(t *testing.T, addr string, cp *paho.Connect) (*paho.Client, <-chan *paho.Publish, <-chan *paho.Disconnect) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan *paho.Publish, 16)
	gone := make(chan *paho.Disconnect, 1)
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { gone <- d },
	})
	ctx, cancel := context.WithTimeout(context.Background(), alarmWait)
	defer cancel()
	if _, err := c.Connect(ctx, cp); err != nil {
		t.Fatalf("connect %s: %v", cp.ClientID, err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c, msgs, gone
}

// TestPublisherHeldByAlarm: while a resource alarm is in effect, an MQTT
// publisher's PUBACK (QoS 1) or PUBREC (QoS 2) is withheld and its
// message not routed; once the last alarm clears the publish goes through
// and is acknowledged. A subscriber keeps working meanwhile.
func TestPublisherHeldByAlarm(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(map[byte]string{1: "qos1 PUBACK", 2: "qos2 PUBREC"}[qos], func(t *testing.T) {
			srv, addr := newTestServer(t, Config{})
			b := srv.broker
			sub, got, _ := dialPaho(t, addr, &paho.Connect{ClientID: "sub", KeepAlive: 30, CleanStart: true})
			pub, _, _ := dialPaho(t, addr, &paho.Connect{ClientID: "pub", KeepAlive: 30, CleanStart: true})
			ctx, cancel := context.WithTimeout(context.Background(), alarmWait)
			defer cancel()

			b.Block(core.AlarmDisk, "low disk")
			b.Block(core.AlarmMemory, "low memory")
			// Subscribing is not publishing: it works under the alarm.
			if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "alarm/t", QoS: qos}}}); err != nil {
				t.Fatalf("subscribe while blocked: %v", err)
			}
			acked := make(chan error, 1)
			go func() {
				_, err := pub.Publish(ctx, &paho.Publish{Topic: "alarm/t", QoS: qos, Payload: []byte("held")})
				acked <- err
			}()
			// Negative checks (not synchronisation): while blocked the
			// publish is neither acknowledged nor routed.
			select {
			case err := <-acked:
				t.Fatalf("publish acknowledged (err %v) while alarms are in effect", err)
			case m := <-got:
				t.Fatalf("publish %q delivered while alarms are in effect", m.Payload)
			case <-time.After(300 * time.Millisecond):
			}
			b.Unblock(core.AlarmDisk)
			select {
			case err := <-acked:
				t.Fatalf("publish acknowledged (err %v) while the memory alarm is in effect", err)
			case <-time.After(100 * time.Millisecond):
			}

			b.Unblock(core.AlarmMemory)
			select {
			case err := <-acked:
				if err != nil {
					t.Fatalf("publish after the alarms cleared: %v", err)
				}
			case <-time.After(alarmWait):
				t.Fatalf("no acknowledgement within %v of the alarms clearing", alarmWait)
			}
			select {
			case m := <-got:
				if string(m.Payload) != "held" {
					t.Fatalf("delivered %q, want the held message", m.Payload)
				}
			case <-time.After(alarmWait):
				t.Fatalf("held message not delivered within %v of the alarms clearing", alarmWait)
			}
		})
	}
}

// TestHeldPublisherKeepsConnection: the silence of a publisher held by an
// alarm is the server's doing, so Keep Alive does not close it: a client
// with a 1 s Keep Alive (closed after 1.5 s of silence otherwise) is still
// connected well after that, and gets its PUBACK once the alarm clears.
func TestHeldPublisherKeepsConnection(t *testing.T) {
	srv, addr := newTestServer(t, Config{})
	c := dialRaw(t, addr, rawOpts{Version: 4, ClientID: "held", KeepAlive: 1})
	srv.broker.Block(core.AlarmDisk, "low disk")
	id := c.publish(t, "held/t", 1, "x", nil)
	// Negative check (not synchronisation): twice the Keep Alive limit
	// passes without the server closing the connection or acknowledging.
	select {
	case <-c.done:
		t.Fatalf("held publisher disconnected (%v)", c.err)
	case p := <-c.ctrl:
		t.Fatalf("got %v while the alarm is in effect", p)
	case <-time.After(3 * time.Second):
	}
	srv.broker.Unblock(core.AlarmDisk)
	c.await(t, typPuback, int(id), "PUBACK after the alarm cleared")
}
