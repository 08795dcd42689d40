package mqtt

// Helpers for the protocol tests on mqtttest's clients and the raw client.
//
// The tests assert what the MQTT 3.1.1 and 5.0 standards say, citing
// statement ids: 5.0's unless marked (3.1.1).
//
// As in interop_test, absence is shown with a sentinel published after
// the messages under test into the same subscription queue: what came
// before the sentinel is all that was sent. Flow control is shown from
// the AMQP side too: the session's queue, declared passively, holds the
// messages the broker must not send yet.

import (
	"errors"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// subscribeV5 subscribes with full subscription options and fails the
// test unless every filter is granted; it returns the SUBACK codes.
func subscribeV5(t testing.TB, c *mqtttest.V5Client, props *paho.SubscribeProperties, subs ...paho.SubscribeOptions) []byte {
	t.Helper()
	sa, err := c.Subscribe(mqtttest.Ctx(t), &paho.Subscribe{Properties: props, Subscriptions: subs})
	if err != nil {
		t.Fatalf("subscribe %+v: %v", subs, err)
	}
	return sa.Reasons
}

// barrier returns once the broker has processed everything c sent before:
// packets of a connection are handled in order, and the UNSUBSCRIBE of a
// filter c never subscribed changes nothing but is still answered
// [MQTT-3.10.4-5]. The broker sends a new subscription's retained
// messages after its SUBACK, so a test that publishes after a SUBSCRIBE
// calls barrier first to keep its sentinel behind them.
func barrier(t testing.TB, c *mqtttest.V5Client) {
	t.Helper()
	if _, err := c.Unsubscribe(mqtttest.Ctx(t), &paho.Unsubscribe{Topics: []string{"barrier/none"}}); err != nil {
		t.Fatalf("barrier: %v", err)
	}
}

// queueWatch reads queue depths over AMQP: queue.declare passive reports
// the ready messages, not those delivered and unacknowledged.
type queueWatch struct{ conn *amqp091.Connection }

func newQueueWatch(t testing.TB, b *testBroker) queueWatch {
	t.Helper()
	return queueWatch{b.amqpConn(t)}
}

func (w queueWatch) ready(t testing.TB, queue string) int {
	t.Helper()
	ch, err := w.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		t.Fatalf("queue.declare passive %q: %v", queue, err)
	}
	return q.Messages
}

// waitReady polls queue until it holds want ready messages, failing the
// test at once if it holds fewer (the callers' counts only fall) or if it
// still holds more after mqtttest.Wait.
func (w queueWatch) waitReady(t testing.TB, queue string, want int, what string) {
	t.Helper()
	deadline := time.NewTimer(mqtttest.Wait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		n := w.ready(t, queue)
		switch {
		case n == want:
			return
		case n < want:
			t.Fatalf("%s: %s holds %d ready messages, want %d", what, queue, n, want)
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: %s still holds %d ready messages after %v, want %d", what, queue, n, mqtttest.Wait, want)
		}
	}
}

// waitGone polls until queue no longer exists (queue.declare passive
// fails with 404), failing the test after mqtttest.Wait.
func (w queueWatch) waitGone(t testing.TB, queue, what string) {
	t.Helper()
	deadline := time.NewTimer(mqtttest.Wait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ch, err := w.conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		_, err = ch.QueueDeclarePassive(queue, false, false, false, false, nil)
		ch.Close()
		var aerr *amqp091.Error
		if errors.As(err, &aerr) && aerr.Code == amqp091.NotFound {
			return
		}
		if err != nil {
			t.Fatalf("%s: queue.declare passive %q: %v", what, queue, err)
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: %s still exists after %v", what, queue, mqtttest.Wait)
		}
	}
}

func sessionQueue(clientID string) string { return "mqtt-subscription-" + clientID + "qos1" }

func payloads(ps []rawPublish) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Payload)
	}
	return out
}
