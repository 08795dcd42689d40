package mgmt

import (
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// TestRates: message_stats rates are the counters' growth between two
// samples over the time between them, per queue and per vhost; a queue
// first seen in the later sample has no rate yet.
func TestRates(t *testing.T) {
	b := core.NewBroker(core.Options{})
	defer b.Close()
	s := New(Options{Broker: b})
	v := b.VHost("/")
	if _, err := v.DeclareQueue(core.QueueDecl{Name: "q"}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1000, 0)
	s.sample(t0)
	for range 10 {
		if _, err := v.Publish(&core.Message{RoutingKey: "q", Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		if _, ok := v.Queue("q").Get(true); !ok {
			t.Fatal("get: empty")
		}
	}
	if _, err := v.DeclareQueue(core.QueueDecl{Name: "late"}); err != nil {
		t.Fatal(err)
	}
	s.sample(t0.Add(5 * time.Second))
	for _, tc := range []struct {
		name                string
		got                 counts
		publish, deliverGet float64
	}{
		{"queue q", s.queueRate("/", "q"), 2, 0.8},
		{"vhost /", s.vhostRate("/"), 2, 0.8},
		{"queue late", s.queueRate("/", "late"), 0, 0},
	} {
		if tc.got.Publish != tc.publish || tc.got.DeliverGet != tc.deliverGet {
			t.Errorf("%s: publish %v/s deliver_get %v/s, want %v and %v", tc.name, tc.got.Publish, tc.got.DeliverGet, tc.publish, tc.deliverGet)
		}
	}
}
