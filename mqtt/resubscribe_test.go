package mqtt

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestResubscribeLosesNothing: a client subscribing again to a filter it
// has (as clients do after every reconnect) while a publisher streams QoS 1
// messages to it gets every message the publisher had PUBACKed. The old
// binding was removed before the new one was made, and what was published
// in between routed to no queue: acknowledged and lost, found by the chaos
// soak (issue 15 item 9). Also when the QoS changes, which moves the
// binding to the session's other queue.
func TestResubscribeLosesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		qos  []byte // the QoS of each subscribe in turn
	}{
		{"same-qos", []byte{1, 1, 1, 1}},
		{"qos-changes", []byte{1, 2, 1, 2}},
		{"qos2", []byte{2, 2, 2, 2}},
		{"qos0-1", []byte{0, 1, 0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startTestBroker(t, testBrokerOpts{})
			topic := "resub/" + tc.name
			sub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "resub-" + tc.name, SessionExpiry: 600, Buffer: 1 << 16})
			sub.SubscribeAt(t, tc.qos[0], topic)
			pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "resub-pub-" + tc.name})

			stop := make(chan struct{})
			var wg sync.WaitGroup
			var sent atomic.Int64
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					pub.Send(t, topic, 1, fmt.Sprint(sent.Load()))
					sent.Add(1)
				}
			}()
			for round := range 50 {
				// Some messages between two subscribes, each time.
				for want := sent.Load() + 5; sent.Load() < want; {
					runtime.Gosched()
				}
				sub.SubscribeAt(t, tc.qos[round%len(tc.qos)], topic)
			}
			close(stop)
			wg.Wait()
			pub.Send(t, topic, 1, "end")

			seen := map[string]bool{}
			deadline := time.After(20 * time.Second)
			for !seen["end"] {
				select {
				case m := <-sub.Msgs:
					seen[string(m.Payload)] = true
				case <-deadline:
					t.Fatalf("no end sentinel within 20 s (%d of %d seen)", len(seen), sent.Load())
				}
			}
			n := sent.Load()
			for i := range n {
				if !seen[fmt.Sprint(i)] {
					t.Fatalf("message %d of %d was PUBACKed but never delivered across 50 resubscribes", i, n)
				}
			}
			t.Logf("%d messages across 50 resubscribes, all delivered", n)
		})
	}
}
