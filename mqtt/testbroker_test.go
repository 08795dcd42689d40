package mqtt

import (
	"context"
	"net"
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
	"github.com/ferrymq/ferrymq/persistence"
)

// testBroker is ferrymq in process for protocol tests: one core broker
// with the MQTT listener and the AMQP listener (for tests that look at
// queues or cross protocols), each on a free port of 127.0.0.1.
type testBroker struct {
	Core     *core.Broker
	MQTT     *Server
	MQTTAddr string
	// URL is the AMQP URL of the default user, guest/guest.
	URL string
}

// testBrokerOpts configure a testBroker; the zero value is a memory-only
// broker with the MQTT defaults.
type testBrokerOpts struct {
	MQTT Config
	// Durable gives the broker a persistence store in a directory of the
	// test's, as the binary has, for tests of durable state: sessions,
	// QoS 1 and 2 flows, retained messages.
	Durable bool
}

// startTestBroker starts a testBroker that stops when the test ends.
func startTestBroker(t testing.TB, o testBrokerOpts) *testBroker {
	t.Helper()
	opts := core.Options{}
	if o.Durable {
		store, err := persistence.Open(t.TempDir(), persistence.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := store.Close(); err != nil {
				t.Errorf("closing the store: %v", err)
			}
		})
		opts.Store = store
		if o.MQTT.Retained == nil {
			o.MQTT.Retained = store
		}
	}
	br := core.NewBroker(opts)
	t.Cleanup(br.Close)
	if o.MQTT.Auth == nil {
		o.MQTT.Auth = core.NewAuth(core.DefaultUsers())
	}
	a := amqp.NewServer(br, amqp.Config{Auth: o.MQTT.Auth, LoginFailureDelay: o.MQTT.LoginFailureDelay})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go a.Serve(ln)
	t.Cleanup(func() { a.Shutdown(context.Background()) })
	s, addr := serveMQTT(t, br, o.MQTT)
	return &testBroker{Core: br, MQTT: s, MQTTAddr: addr, URL: "amqp://guest:guest@" + ln.Addr().String() + "/"}
}

// amqpConn dials b's AMQP listener; the connection is closed when the
// test ends.
func (b *testBroker) amqpConn(t testing.TB) *amqp091.Connection {
	t.Helper()
	conn, err := amqp091.DialConfig(b.URL, amqp091.Config{Dial: amqp091.DefaultDial(mqtttest.Wait)})
	if err != nil {
		t.Fatalf("dial %s: %v", b.URL, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// amqpChannel opens an AMQP channel to b.
func (b *testBroker) amqpChannel(t testing.TB) *amqp091.Channel {
	t.Helper()
	ch, err := b.amqpConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}
