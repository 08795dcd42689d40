package mqtt

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/core"
)

// stallConn is a client connection whose reads stop once stall is called,
// as a device's that hangs: the broker's writes to it back up.
type stallConn struct {
	net.Conn
	once    sync.Once
	stalled chan struct{}
}

func newStallConn(c net.Conn) *stallConn { return &stallConn{Conn: c, stalled: make(chan struct{})} }

func (c *stallConn) stall() { c.once.Do(func() { close(c.stalled) }) }

func (c *stallConn) Read(b []byte) (int, error) {
	select {
	case <-c.stalled:
		<-make(chan struct{}) // never reads again; Close ends the test's client
		return 0, nil
	default:
		return c.Conn.Read(b)
	}
}

// dialPahoConn is dialPaho over a stallConn.
func dialPahoConn(t *testing.T, addr string, cp *paho.Connect) (*paho.Client, *stallConn, <-chan *paho.Publish) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := newStallConn(nc)
	msgs := make(chan *paho.Publish, 1024)
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case msgs <- pr.Packet:
			default:
			}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), alarmWait)
	defer cancel()
	if _, err := c.Connect(ctx, cp); err != nil {
		t.Fatalf("connect %s: %v", cp.ClientID, err)
	}
	t.Cleanup(func() { nc.Close() })
	return c, conn, msgs
}

// TestStoppedSubscriberQoS0Flood: a subscriber (paho.golang) stops reading
// while a publisher floods it with 1 KiB QoS 0 messages. The broker keeps
// at most max_queued_messages of them for the session, drops the rest and
// counts them (SessionDropped), and its memory stays bounded (an unread
// subscriber took RSS past 6 GB before).
func TestStoppedSubscriberQoS0Flood(t *testing.T) {
	const (
		maxQueued = 100
		flood     = 60000
		size      = 1024
	)
	srv, addr := newTestServer(t, Config{MaxQueuedMessages: maxQueued})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sub, conn, got := dialPahoConn(t, addr, &paho.Connect{ClientID: "stalled", KeepAlive: 0, CleanStart: true})
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "flood/#", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	pub, _, _ := dialPaho(t, addr, &paho.Connect{ClientID: "flooder", KeepAlive: 0, CleanStart: true})
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "flood/first", Payload: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("the subscriber got nothing before it stalled")
	}
	conn.stall()

	runtime.GC()
	before := core.MemoryInUse()
	body := bytes.Repeat([]byte("x"), size)
	for i := range flood {
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "flood/t", Payload: body}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// The publisher's packets are handled in order: once a QoS 1 publish
	// after the flood is acknowledged, every QoS 0 one was routed.
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "sync", QoS: 1, Payload: []byte("sync")}); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	grown := core.MemoryInUse() - before
	dropped := srv.SessionDropped("/", "stalled")
	q := srv.broker.VHost("/").Queue(sessionQueueName("stalled", 0))
	if q == nil {
		t.Fatal("the subscriber's session queue is gone")
	}
	st := q.Stats()
	t.Logf("%d x %d B QoS 0 to a subscriber that stopped reading: %d queued, %d dropped, memory in use grew by %.1f MiB",
		flood, size, st.Messages, dropped, float64(grown)/(1<<20))
	if st.Messages > maxQueued {
		t.Fatalf("%d messages queued for the session, more than max_queued_messages %d", st.Messages, maxQueued)
	}
	// What the sockets' buffers (up to ~10 MiB on loopback) and the
	// output buffer took before the broker saw the subscriber stall is
	// not dropped: most of the rest is.
	if dropped < flood/2 {
		t.Fatalf("only %d of %d messages dropped", dropped, flood)
	}
	if grown > 32<<20 {
		t.Fatalf("memory in use grew by %d bytes for a subscriber that stopped reading", grown)
	}
}

// TestSessionQueueLimitQoS1: beyond max_queued_messages, QoS 1 messages
// for a persistent session wait on disk and all arrive when it comes back;
// for a clean session that does not keep up they wait in memory, none
// lost, bounded by the memory limit rather than by the session's.
func TestSessionQueueLimitQoS1(t *testing.T) {
	const maxQueued = 10
	t.Run("persistent session pages out", func(t *testing.T) {
		b := startTestBroker(t, testBrokerOpts{Durable: true, MQTT: Config{MaxQueuedMessages: maxQueued}})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cp := &paho.Connect{ClientID: "keeper", KeepAlive: 0, CleanStart: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: paho.Uint32(3600)}}
		sub, _, _ := dialPaho(t, b.MQTTAddr, cp)
		if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "keep/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatal(err)
		}
		pub, _, _ := dialPaho(t, b.MQTTAddr, &paho.Connect{ClientID: "keep-pub", KeepAlive: 0, CleanStart: true})
		const n = 5 * maxQueued
		for i := range n {
			pr, err := pub.Publish(ctx, &paho.Publish{Topic: "keep/t", QoS: 1, Payload: fmt.Appendf(nil, "m%d", i)})
			if err != nil || pr.ReasonCode >= 0x80 {
				t.Fatalf("publish %d: %v (reason %#x)", i, err, pr.ReasonCode)
			}
		}
		cp.CleanStart = false
		_, got, _ := dialPaho(t, b.MQTTAddr, cp)
		for i := range n {
			select {
			case m := <-got:
				if want := fmt.Sprintf("m%d", i); string(m.Payload) != want {
					t.Fatalf("got %q, want %q", m.Payload, want)
				}
			case <-ctx.Done():
				t.Fatalf("got %d of %d queued QoS 1 messages", i, n)
			}
		}
		if d := b.MQTT.SessionDropped("/", "keeper"); d != 0 {
			t.Fatalf("%d messages dropped from a persistent session's QoS 1 queue", d)
		}
	})
	t.Run("clean session keeps them in memory", func(t *testing.T) {
		srv, addr := newTestServer(t, Config{MaxQueuedMessages: maxQueued})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Receive Maximum 1 and a subscriber that stops reading, so
		// sends no PUBACK: one message in flight, the rest queue.
		sub, conn, _ := dialPahoConn(t, addr, &paho.Connect{ClientID: "slow", KeepAlive: 0, CleanStart: true,
			Properties: &paho.ConnectProperties{ReceiveMaximum: paho.Uint16(1)}})
		if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "slow/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		conn.stall()
		q := srv.broker.VHost("/").Queue(sessionQueueName("slow", 1))
		pub, _, _ := dialPaho(t, addr, &paho.Connect{ClientID: "slow-pub", KeepAlive: 0, CleanStart: true})
		const n = 3 * maxQueued
		for i := range n {
			if _, err := pub.Publish(ctx, &paho.Publish{Topic: "slow/t", QoS: 1, Payload: fmt.Appendf(nil, "m%d", i)}); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
		// Nothing is lost that a publisher was told was taken: they wait
		// in memory, which the memory limit bounds (its alarm holds the
		// publishers back; core TestMemoryAlarmRefusesTransient).
		if st := q.Stats(); st.Messages+st.Unacked != n || srv.SessionDropped("/", "slow") != 0 {
			t.Fatalf("queued %d + %d in flight of %d, dropped %d", st.Messages, st.Unacked, n, srv.SessionDropped("/", "slow"))
		}
	})
}

// TestRecoveredSessionQueuesCapped: session queues that exist before the
// listener starts (a persistent session recovered from the store, its
// client away) are capped from the start, not only once the client
// reconnects.
func TestRecoveredSessionQueuesCapped(t *testing.T) {
	br := core.NewBroker(core.Options{})
	t.Cleanup(br.Close)
	v := br.VHost("/")
	name := sessionQueueName("away", 0)
	if _, err := v.DeclareQueue(core.QueueDecl{Name: name}); err != nil {
		t.Fatal(err)
	}
	srv, _ := serveMQTT(t, br, Config{MaxQueuedMessages: 5})
	for i := range 12 {
		if _, err := v.Publish(&core.Message{RoutingKey: name, Body: fmt.Appendf(nil, "m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if st := v.Queue(name).Stats(); st.Messages != 5 || srv.SessionDropped("/", "away") != 7 {
		t.Fatalf("queued %d, dropped %d; want 5 and 7", st.Messages, srv.SessionDropped("/", "away"))
	}
	// The operations API's view (/api/mqtt/sessions) has the same count.
	infos := srv.Sessions("/")
	if len(infos) != 1 || infos[0].ClientID != "away" || infos[0].Queued != 5 || infos[0].Dropped != 7 {
		t.Fatalf("Sessions: %+v, want away with 5 queued and 7 dropped", infos)
	}
}
