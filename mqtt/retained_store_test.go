package mqtt

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/persistence"
)

// heldSyncs is a real store whose sync reports are held back until
// release: to core and mqtt every append looks not yet durable.
type heldSyncs struct {
	*persistence.Store
	mu       sync.Mutex
	released bool
	held     []func()
	gate     chan struct{}
}

func (h *heldSyncs) Notify(pos uint64, w core.SyncWaiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.released {
		h.held = append(h.held, func() { h.Store.Notify(pos, w) })
		return
	}
	h.Store.Notify(pos, w)
}

func (h *heldSyncs) Wait(pos uint64) error {
	<-h.gate
	return h.Store.Wait(pos)
}

func (h *heldSyncs) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return
	}
	h.released = true
	close(h.gate)
	for _, f := range h.held {
		f()
	}
}

// TestRetainedAckWaitsForStore: setting a retained message is
// acknowledged only once the store has synced it, from either protocol,
// though the write runs inside core's Publish for an AMQP publish with
// x-mqtt-retain, where it may not wait: the AMQP connection keeps
// answering while its confirm waits, and so does the MQTT client's PUBACK.
func TestRetainedAckWaitsForStore(t *testing.T) {
	ps, err := persistence.Open(t.TempDir(), persistence.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	store := &heldSyncs{Store: ps, gate: make(chan struct{})}
	t.Cleanup(store.release)
	b := core.NewBroker(core.Options{Store: store})
	t.Cleanup(b.Close)
	srv, err := NewServer(b, Config{Retained: store})
	if err != nil {
		t.Fatal(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(mln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	a := amqp.NewServer(b, amqp.Config{})
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go a.Serve(aln)
	t.Cleanup(func() { a.Shutdown(context.Background()) })

	conn, err := amqp091.Dial("amqp://guest:guest@" + aln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, 1))
	ctx, cancel := context.WithTimeout(context.Background(), alarmWait)
	defer cancel()
	err = ch.PublishWithContext(ctx, "amq.topic", "ret.amqp", false, false, amqp091.Publishing{
		Headers: amqp091.Table{"x-mqtt-retain": true}, Body: []byte("23"),
	})
	if err != nil {
		t.Fatal(err)
	}
	// The reader is not stuck in core: the connection answers.
	if _, err := ch.QueueDeclare("", false, true, true, false, nil); err != nil {
		t.Fatalf("queue.declare after the retained publish: %v", err)
	}
	pub, _, _ := dialPaho(t, mln.Addr().String(), &paho.Connect{ClientID: "ret-pub", KeepAlive: 30, CleanStart: true})
	acked := make(chan error, 1)
	go func() {
		_, err := pub.Publish(ctx, &paho.Publish{Topic: "ret/mqtt", QoS: 1, Retain: true, Payload: []byte("21")})
		acked <- err
	}()
	// Negative checks (not synchronisation): nothing is acknowledged
	// before the store reports the retained messages synced.
	select {
	case c := <-confirms:
		t.Fatalf("AMQP retained publish confirmed (%+v) before the store synced it", c)
	case err := <-acked:
		t.Fatalf("MQTT retained publish acknowledged (err %v) before the store synced it", err)
	case <-time.After(300 * time.Millisecond):
	}

	store.release()
	select {
	case c := <-confirms:
		if !c.Ack {
			t.Fatal("AMQP retained publish nacked")
		}
	case <-time.After(alarmWait):
		t.Fatal("no AMQP confirm within the wait")
	}
	select {
	case err := <-acked:
		if err != nil {
			t.Fatalf("MQTT retained publish: %v", err)
		}
	case <-time.After(alarmWait):
		t.Fatal("no PUBACK within the wait")
	}
	if got := srv.retained.matching("/", "ret/#"); len(got) != 2 {
		t.Fatalf("%d retained messages, want 2", len(got))
	}
}
