package interop_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// eventTimeout bounds every wait for something the broker should do.
const eventTimeout = 20 * time.Second

// dial connects to b with amqp091-go and closes the connection when the test
// ends.
func dial(t *testing.T, b *Broker) *amqp.Connection {
	t.Helper()
	conn, err := amqp.DialConfig(b.URL, amqp.Config{Dial: amqp.DefaultDial(eventTimeout)})
	if err != nil {
		t.Fatalf("dial %s: %v", b.URL, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestBinaryPublishConsume(t *testing.T) {
	b := StartBroker(t)
	conn := dial(t, b)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("interop.publish-consume", false, false, true, false, nil)
	if err != nil {
		t.Fatalf("queue.declare: %v", err)
	}

	const n = 100
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	for i := range n {
		err := ch.PublishWithContext(ctx, "", q.Name, false, false, amqp.Publishing{
			ContentType: "text/plain",
			Headers:     amqp.Table{"seq": int32(i)},
			Body:        []byte(fmt.Sprintf("message %d", i)),
		})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}

	deliveries, err := ch.Consume(q.Name, "interop", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("basic.consume: %v", err)
	}
	deadline := time.NewTimer(eventTimeout)
	defer deadline.Stop()
	for i := range n {
		select {
		case d, ok := <-deliveries:
			if !ok {
				t.Fatalf("deliveries closed after %d of %d messages", i, n)
			}
			// One publisher, one queue, one consumer: order is kept.
			if want := fmt.Sprintf("message %d", i); string(d.Body) != want || d.ContentType != "text/plain" ||
				d.Headers["seq"] != int32(i) || d.Redelivered {
				t.Fatalf("delivery %d: body %q, content-type %q, headers %v, redelivered %v; want body %q",
					i, d.Body, d.ContentType, d.Headers, d.Redelivered, want)
			}
			if err := d.Ack(false); err != nil {
				t.Fatalf("ack %d: %v", i, err)
			}
		case <-deadline.C:
			t.Fatalf("received %d of %d messages within %v", i, n, eventTimeout)
		}
	}

	// Nothing is left ready, and nothing more arrives.
	q, err = ch.QueueDeclarePassive(q.Name, false, false, true, false, nil)
	if err != nil {
		t.Fatalf("passive queue.declare: %v", err)
	}
	if q.Messages != 0 || q.Consumers != 1 {
		t.Fatalf("queue has %d messages and %d consumers, want 0 and 1", q.Messages, q.Consumers)
	}
	select {
	case d := <-deliveries:
		t.Fatalf("unexpected extra delivery %q", d.Body)
	default:
	}
	if err := ch.Close(); err != nil {
		t.Fatalf("channel.close: %v", err)
	}
	if err := conn.Close(); err != nil {
		t.Fatalf("connection.close: %v", err)
	}
	if err := b.Stop(t); err != nil {
		t.Fatalf("ferrymq exit after SIGTERM: %v", err)
	}
}

// TestBinarySIGTERMClosesConnectionsWith320 checks graceful shutdown as a
// client sees it: connection.close with 320 CONNECTION_FORCED, as RabbitMQ
// sends on shutdown, then exit status 0.
func TestBinarySIGTERMClosesConnectionsWith320(t *testing.T) {
	b := StartBroker(t)
	conn := dial(t, b)
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	// A channel too, so shutdown has more than the bare connection to close.
	if _, err := conn.Channel(); err != nil {
		t.Fatal(err)
	}

	b.Signal(t, syscall.SIGTERM)
	// If ferrymq dropped the socket instead, amqp091-go reports that here
	// too, as a 501 without Server set.
	select {
	case err, ok := <-closed:
		if !ok || err == nil {
			t.Fatal("connection closed without an error; want connection.close from the server")
		}
		if err.Code != amqp.ConnectionForced || !err.Server {
			t.Fatalf("connection closed with %#v; want code %d from the server", err, amqp.ConnectionForced)
		}
	case <-time.After(eventTimeout):
		t.Fatalf("no connection.close within %v of SIGTERM", eventTimeout)
	}

	err := b.WaitExit(t, stopTimeout)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		t.Fatalf("ferrymq exited with %v after SIGTERM; want status 0", exit.ProcessState)
	} else if err != nil {
		t.Fatal(err)
	}
}

// TestBinaryClientCloseIsClean checks that a client's own Close is reported
// as a clean close. amqp091-go's reader keeps reading after close-ok; if the
// server drops the socket straight after sending close-ok, the reader can see
// EOF before Close marks the connection closed, and NotifyClose then reports
// 501 "EOF" for a close the client asked for. RabbitMQ leaves the socket for
// the client to close after close-ok, so its clients never see that.
func TestBinaryClientCloseIsClean(t *testing.T) {
	b := StartBroker(t)
	for i := range 50 {
		conn, err := amqp.DialConfig(b.URL, amqp.Config{Dial: amqp.DefaultDial(eventTimeout)})
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		if err := conn.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
		select {
		case err, ok := <-closed:
			if ok {
				t.Fatalf("close %d: NotifyClose reported %v after the client's own Close; want it closed without an error", i, err)
			}
		case <-time.After(eventTimeout):
			t.Fatalf("close %d: NotifyClose channel not closed within %v", i, eventTimeout)
		}
	}
}
