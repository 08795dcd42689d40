package mqtt

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/persistence"
)

// TestRetainedAckWaitsForStore: setting a retained message is
// acknowledged only once the store has it, from either protocol, though
// the write runs inside core's Publish (an AMQP publish with
// x-mqtt-retain) and may not wait there. On a store that cannot write (its
// disk under the free-space limit, with no alarm wired to hold the
// publishers back) the AMQP confirm is a nack and the MQTT 5 PUBACK 0x80;
// the AMQP connection stays responsive meanwhile.
func TestRetainedAckWaitsForStore(t *testing.T) {
	// A new store must be written once; the limit is set on a reopen.
	dir := t.TempDir()
	store, err := persistence.Open(dir, persistence.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	store, err = persistence.Open(dir, persistence.Options{DiskFreeLimit: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() }) // its last commit fails too
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

	t.Run("amqp confirm", func(t *testing.T) {
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
		select {
		case c := <-confirms:
			if c.Ack {
				t.Fatal("retained publish acked though the store could not write it")
			}
		case <-time.After(alarmWait):
			t.Fatal("no confirm within the wait")
		}
	})

	t.Run("mqtt puback", func(t *testing.T) {
		pub, _, _ := dialPaho(t, mln.Addr().String(), &paho.Connect{ClientID: "ret-pub", KeepAlive: 30, CleanStart: true})
		ctx, cancel := context.WithTimeout(context.Background(), alarmWait)
		defer cancel()
		resp, err := pub.Publish(ctx, &paho.Publish{Topic: "ret/mqtt", QoS: 1, Retain: true, Payload: []byte("21")})
		if err == nil || errors.Is(err, context.DeadlineExceeded) || resp == nil || resp.ReasonCode != 0x80 {
			t.Fatalf("retained publish: %+v, %v; want PUBACK 0x80", resp, err)
		}
	})
}
