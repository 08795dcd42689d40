package mqtt_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	pahomqtt "github.com/eclipse/paho.mqtt.golang"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt"
)

// startBrokers runs core with both listeners on free ports.
func startBrokers(t *testing.T) (mqttAddr, amqpURL string) {
	t.Helper()
	b := core.NewBroker(core.Options{})
	t.Cleanup(b.Close)
	auth := core.NewAuth(core.DefaultUsers())
	a := amqp.NewServer(b, amqp.Config{Auth: auth})
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go a.Serve(aln)
	t.Cleanup(func() { a.Shutdown(context.Background()) })
	m, err := mqtt.NewServer(b, mqtt.Config{Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go m.Serve(mln)
	t.Cleanup(func() { m.Shutdown(context.Background()) })
	return mln.Addr().String(), "amqp://guest:guest@" + aln.Addr().String() + "/"
}

func connect(t *testing.T, addr, id string, clean bool) pahomqtt.Client {
	t.Helper()
	o := pahomqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).SetAutoReconnect(false)
	c := pahomqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// TestMQTTAndAMQPBothWays is a smoke test of the listener on core: MQTT
// to MQTT, MQTT to AMQP and AMQP to MQTT, with a dot in a topic level.
func TestMQTTAndAMQPBothWays(t *testing.T) {
	addr, url := startBrokers(t)
	got := make(chan string, 10)
	sub := connect(t, addr, "sub", true)
	tok := sub.Subscribe("sensors/+/temp.c", 1, func(_ pahomqtt.Client, m pahomqtt.Message) {
		got <- fmt.Sprintf("%s %d %s", m.Topic(), m.Qos(), m.Payload())
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "sensors.*.temp/c", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	ds, _ := ch.Consume(q.Name, "", true, false, false, false, nil)

	pub := connect(t, addr, "pub", true)
	if tok := pub.Publish("sensors/7/temp.c", 1, false, "21.5"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	wait := func(what string) string {
		select {
		case s := <-got:
			return s
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s", what)
		}
		return ""
	}
	if s := wait("MQTT delivery"); s != "sensors/7/temp.c 1 21.5" {
		t.Fatalf("MQTT got %q", s)
	}
	select {
	case d := <-ds:
		if d.RoutingKey != "sensors.7.temp/c" || string(d.Body) != "21.5" || d.DeliveryMode != 2 {
			t.Fatalf("AMQP got %q %q mode %d", d.RoutingKey, d.Body, d.DeliveryMode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no AMQP delivery")
	}
	err = ch.PublishWithContext(context.Background(), "amq.topic", "sensors.8.temp/c", false, false, amqp091.Publishing{Body: []byte("19")})
	if err != nil {
		t.Fatal(err)
	}
	if s := wait("AMQP->MQTT delivery"); s != "sensors/8/temp.c 0 19" {
		t.Fatalf("MQTT got %q from AMQP", s)
	}
}

// TestDollarTopicsNotRouted: a client's publish to a $ topic is
// acknowledged but reaches no one, not even a $SYS/# subscriber
// [MQTT-4.7.2-1]; the next publish does.
func TestDollarTopicsNotRouted(t *testing.T) {
	addr, _ := startBrokers(t)
	got := make(chan string, 10)
	sub := connect(t, addr, "dollar-sub", true)
	for _, f := range []string{"$SYS/#", "after"} {
		if tok := sub.Subscribe(f, 1, func(_ pahomqtt.Client, m pahomqtt.Message) { got <- m.Topic() }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", f, tok.Error())
		}
	}
	pub := connect(t, addr, "dollar-pub", true)
	for _, topic := range []string{"$SYS/broker/x", "after"} {
		if tok := pub.Publish(topic, 1, false, "x"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	select {
	case topic := <-got:
		if topic != "after" {
			t.Fatalf("subscriber got %q first, want \"after\"", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery")
	}
}
