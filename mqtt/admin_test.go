package mqtt

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

func findSession(t *testing.T, s *Server, id string) SessionInfo {
	t.Helper()
	for _, info := range s.Sessions("") {
		if info.ClientID == id {
			return info
		}
	}
	t.Fatalf("no session %q in %+v", id, s.Sessions(""))
	return SessionInfo{}
}

// waitCond polls cond for up to 20 s.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("timed out waiting for %s", what)
			panic("timed out") // t.Fatal would wait for clients stuck on a full buffer
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not synchronising
	}
}

// TestSessionsListing: connected and disconnected sessions of both
// protocol versions, with their subscriptions, queued and in-flight
// messages; removing one closes its connection with 0x98 and deletes its
// queues.
func TestSessionsListing(t *testing.T) {
	srv, addr := newTestServer(t, Config{})
	// A v5 persistent session that does not ack: its deliveries stay in
	// flight.
	v5 := mqtttest.ConnectV5(t, addr, mqtttest.V5Options{ClientID: "dev5", SessionExpiry: 3600, Buffer: 1})
	v5.SubscribeAt(t, 1, "a/#", "$share/g/b/+")
	v3 := mqtttest.ConnectV3(t, addr, mqtttest.V3Options{ClientID: "dev3", Persistent: true})
	v3.SubscribeAt(t, 1, "c/+")

	before := time.Now()
	info := findSession(t, srv, "dev5")
	if !info.Connected || info.Protocol != "MQTT 5.0" || !info.Persistent || info.User != "guest" || info.VHost != "/" || info.Peer == "" {
		t.Fatalf("dev5 = %+v", info)
	}
	if len(info.Subscriptions) != 2 || info.Subscriptions[0].Filter != "$share/g/b/+" || info.Subscriptions[1].Filter != "a/#" || info.Subscriptions[1].QoS != 1 {
		t.Fatalf("dev5 subscriptions %+v", info.Subscriptions)
	}
	if info.LastSeen.IsZero() || info.LastSeen.After(before) {
		t.Fatalf("dev5 last seen %v", info.LastSeen)
	}
	if i3 := findSession(t, srv, "dev3"); i3.Protocol != "MQTT 3.1.1" || len(i3.Subscriptions) != 1 || i3.Subscriptions[0].Filter != "c/+" {
		t.Fatalf("dev3 = %+v", i3)
	}

	// dev3 goes away: its session stays, with what is published to it
	// queued.
	v3.Disconnect(100)
	waitCond(t, "dev3 disconnected", func() bool { return !findSession(t, srv, "dev3").Connected })
	pub := mqtttest.ConnectV5(t, addr, mqtttest.V5Options{ClientID: "pub"})
	for range 3 {
		pub.Send(t, "c/1", 1, "x")
	}
	for range 5 {
		pub.Send(t, "a/1", 1, "x")
	}
	waitCond(t, "3 queued for dev3", func() bool { return findSession(t, srv, "dev3").Queued == 3 })
	i3 := findSession(t, srv, "dev3")
	if i3.LastSeen.Before(before) || i3.Persistent != true || len(i3.Subscriptions) != 1 {
		t.Fatalf("disconnected dev3 = %+v", i3)
	}
	// dev5 takes one message into its buffer, holds a second in its
	// handler and acks neither: the rest wait in flight (or queued).
	waitCond(t, "dev5 in flight", func() bool { i := findSession(t, srv, "dev5"); return i.Inflight > 0 && i.Inflight+i.Queued >= 3 })

	if got := srv.Sessions("nowhere"); len(got) != 0 {
		t.Fatalf("sessions of another vhost: %+v", got)
	}

	// Removing dev5 closes its connection with 0x98 and forgets it.
	// Its client reads on (paho reads packets in order: a DISCONNECT
	// behind a full buffer would never be seen).
	go func() {
		for range v5.Msgs {
		}
	}()
	if err := srv.RemoveSession(context.Background(), "/", "dev5"); err != nil {
		t.Fatal(err)
	}
	d := mqtttest.WaitFor(t, v5.Disconnects, 20*time.Second, "DISCONNECT of dev5")
	if d.ReasonCode != 0x98 {
		t.Fatalf("DISCONNECT reason %#x, want 0x98", d.ReasonCode)
	}
	for _, s := range srv.Sessions("/") {
		if s.ClientID == "dev5" {
			t.Fatalf("dev5 still listed: %+v", s)
		}
	}
	if srv.broker.VHost("/").Queue(sessionQueueName("dev5", 1)) != nil {
		t.Fatal("dev5's queue survived its removal")
	}
	// dev3, disconnected, is removed with its queued messages; resuming
	// finds no session.
	if err := srv.RemoveSession(context.Background(), "/", "dev3"); err != nil {
		t.Fatal(err)
	}
	c3 := mqtttest.ConnectV3(t, addr, mqtttest.V3Options{ClientID: "dev3", Persistent: true})
	if c3.SessionPresent {
		t.Fatal("dev3 resumed a removed session")
	}
	if err := srv.RemoveSession(context.Background(), "/", "ghost"); !errors.Is(err, ErrNoSession) {
		t.Fatalf("removing an unknown session: %v", err)
	}
}

// TestSessionsFromQueues: a persistent session kept by the store is
// listed before its client comes back, from its queues.
func TestSessionsFromQueues(t *testing.T) {
	b := core.NewBroker(core.Options{})
	t.Cleanup(b.Close)
	v := b.VHost("/")
	// As a restart leaves it: the session's durable queue and binding.
	if _, err := v.DeclareQueue(core.QueueDecl{Name: sessionQueueName("old", 1), Durable: true}); err != nil {
		t.Fatal(err)
	}
	if err := v.BindQueue(sessionQueueName("old", 1), "amq.topic", "s.*", core.Table{argFilter: "s/+", argQoS: int64(1)}, 0); err != nil {
		t.Fatal(err)
	}
	srv, _ := serveMQTT(t, b, Config{})
	got := srv.Sessions("/")
	if len(got) != 1 || got[0].ClientID != "old" || got[0].Connected || !got[0].Persistent ||
		len(got[0].Subscriptions) != 1 || got[0].Subscriptions[0].Filter != "s/+" || got[0].User != "" {
		t.Fatalf("sessions %+v", got)
	}
	if err := srv.RemoveSession(context.Background(), "/", "old"); err != nil {
		t.Fatal(err)
	}
	if len(srv.Sessions("/")) != 0 || v.Queue(sessionQueueName("old", 1)) != nil {
		t.Fatal("session kept after removal")
	}
}

// TestRetainedListAndClear: retained messages are listed by filter and
// cleared by filter; a new subscriber then gets none of the cleared ones.
func TestRetainedListAndClear(t *testing.T) {
	srv, addr := newTestServer(t, Config{})
	pub := mqtttest.ConnectV5(t, addr, mqtttest.V5Options{ClientID: "pub"})
	for _, tp := range []string{"sensors/1/temp", "sensors/2/temp", "sensors/2/hum", "status"} {
		pub.PublishAcked(t, &paho.Publish{Topic: tp, QoS: 1, Retain: true, Payload: []byte("v-" + tp)})
	}
	all, err := srv.Retained("", "")
	if err != nil || len(all) != 4 || all[0].Topic != "sensors/1/temp" || string(all[0].Payload) != "v-sensors/1/temp" || all[0].QoS != 1 || all[0].VHost != "/" {
		t.Fatalf("Retained = %+v, %v", all, err)
	}
	temps, _ := srv.Retained("/", "sensors/+/temp")
	if len(temps) != 2 {
		t.Fatalf("sensors/+/temp: %+v", temps)
	}
	if _, err := srv.Retained("/", "bad/#/filter"); err == nil {
		t.Fatal("a bad filter was accepted")
	}
	n, err := srv.ClearRetained("/", "sensors/#")
	if err != nil || n != 3 {
		t.Fatalf("ClearRetained = %d, %v", n, err)
	}
	left, _ := srv.Retained("/", "#")
	if len(left) != 1 || left[0].Topic != "status" {
		t.Fatalf("left %+v", left)
	}
	sub := mqtttest.ConnectV5(t, addr, mqtttest.V5Options{ClientID: "sub"})
	sub.SubscribeAt(t, 1, "#")
	if m := sub.Next(t, "the retained status"); m.Topic != "status" {
		t.Fatalf("got %q", m.Topic)
	}
	pub.Send(t, "end", 0, "end")
	if m := sub.Next(t, "end"); m.Topic != "end" {
		t.Fatalf("a cleared retained message was replayed: %q", m.Topic)
	}
}
