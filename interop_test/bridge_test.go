package interop_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	amqp "github.com/rabbitmq/amqp091-go"
)

// freePort returns a loopback address whose port is free at the time of
// the call and outside the kernel's ephemeral range, for a listener that
// is started later, or again after a stop, on the same address (a broker
// that must come back where its peers dial it, RabbitMQ, Prometheus), or
// for an address where nothing must listen. A port of the ephemeral range
// (what port 0 gives) is handed to any process on the machine that listens
// on port 0, or dials out, in the seconds until then; a port below the
// range is taken only by a process that asks for that very port.
//
// A port is handed out once per test process: a test takes several at a
// time (two brokers' listeners, a RabbitMQ's four) and binds them only
// later, so two random draws of the same free port would both look free.
func freePort(t *testing.T) string {
	t.Helper()
	lo := ephemeralLow()
	freePortMu.Lock()
	defer freePortMu.Unlock()
	for range 1000 {
		port := freePortMin + rand.IntN(max(lo-freePortMin, 1))
		if lo <= freePortMin {
			port = 0 // no room below the range: the kernel's choice
		}
		if slices.Contains(wellKnownPorts, port) || freePortGiven[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // in use
		}
		addr := ln.Addr().String()
		ln.Close()
		if port == 0 {
			port = ln.Addr().(*net.TCPAddr).Port
			if freePortGiven[port] {
				continue
			}
		}
		freePortGiven[port] = true
		return addr
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return ""
}

// freePortMin is the lowest port freePort hands out.
const freePortMin = 10000

var (
	freePortMu    sync.Mutex
	freePortGiven = map[int]bool{} // ports freePort has handed out
)

// wellKnownPorts are defaults of the brokers on the machine in freePort's
// range (RabbitMQ's management and its Erlang distribution), left to them.
var wellKnownPorts = []int{15672, 15675, 15692, 25672}

// ephemeralLow returns the first port of the kernel's ephemeral range,
// 32768 (Linux's default) if it cannot be read.
func ephemeralLow() int {
	raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return lo
}

// upstreamQueue declares a durable queue on b bound to amq.topic with key.
func upstreamQueue(t *testing.T, b *Broker, name, key string) *amqp.Channel {
	t.Helper()
	_, ch := dialBroker(t, b)
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(name, key, "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	return ch
}

// publishAMQP sends n persistent messages numbered from first to
// amq.topic with key, with confirms.
func publishAMQP(t *testing.T, b *Broker, key string, first, n uint64) {
	t.Helper()
	_, ch := dialBroker(t, b)
	p := newPublisher(t, ch, 500)
	for i := first; i < first+n; i++ {
		if !p.publish("amq.topic", key, i, 32) {
			t.Fatalf("publish %d to %s failed", i, b.URL)
		}
	}
	for p.inflight > 0 {
		if !p.await(confirmWait) {
			t.Fatal("confirm missing")
		}
	}
}

// collect consumes want messages from queue, returning their numbers in
// arrival order; it fails after the deadline with what it has.
func collect(t *testing.T, ch *amqp.Channel, queue string, want int, deadline time.Duration) []uint64 {
	t.Helper()
	ds, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	timeout := time.After(deadline)
	for len(got) < want {
		select {
		case d := <-ds:
			got = append(got, binary.BigEndian.Uint64(d.Body))
		case <-timeout:
			t.Fatalf("received %d of %d messages", len(got), want)
		}
	}
	return got
}

// checkOnceInOrder reports duplicates (allowed, at least once) and fails on
// a missing number or one out of order.
func checkOnceInOrder(t *testing.T, got []uint64, first, n uint64) (dups int) {
	t.Helper()
	seen := map[uint64]bool{}
	var last uint64
	for i, s := range got {
		if seen[s] {
			dups++
			continue
		}
		if i > 0 && s < last {
			t.Fatalf("message %d arrived after %d: out of order", s, last)
		}
		seen[s], last = true, s
	}
	for i := first; i < first+n; i++ {
		if !seen[i] {
			t.Fatalf("message %d never arrived", i)
		}
	}
	return dups
}

// TestBridgeForwardsToFerrymq: each upstream kind the bridge speaks,
// against another ferrymq: messages published locally reach the
// upstream's queue, in order, with nothing lost.
func TestBridgeForwardsToFerrymq(t *testing.T) {
	for _, scheme := range []string{"amqp", "mqtt", "mqtt3"} {
		t.Run(scheme, func(t *testing.T) {
			up := StartBroker(t, "--node-name", "up")
			ch := upstreamQueue(t, up, "landing", "edge.#")
			addr := up.Addr
			if scheme != "amqp" {
				addr = up.MQTTAddr
			}
			edge := StartBroker(t, "--node-name", "edge", "--bridge-url", scheme+"://guest:guest@"+addr+"/",
				"--bridge-topic", "sensors/#")
			// Local prefix "" and remote prefix "" keep the topic: sensors/x
			// arrives upstream as routing key sensors.x.
			ch.QueueBind("landing", "sensors.#", "amq.topic", false, nil)
			publishAMQP(t, edge, "sensors.x", 0, 500)
			got := collect(t, ch, "landing", 500, 30*time.Second)
			if dups := checkOnceInOrder(t, got, 0, 500); dups != 0 {
				t.Logf("%d duplicates", dups)
			}
		})
	}
}

// TestBridgeOutageStoreAndForward is the outage test against
// another ferrymq, for each upstream kind: the upstream is down while
// 10,000 QoS 1 messages are published locally, the local broker itself
// restarts meanwhile, and when the upstream is back every message arrives,
// in order (the MQTT links pipeline their publishes, so this also checks
// that a window of unconfirmed publishes is resent in order).
func TestBridgeOutageStoreAndForward(t *testing.T) {
	const n = 10_000
	for _, scheme := range []string{"amqp", "mqtt", "mqtt3"} {
		t.Run(scheme, func(t *testing.T) {
			upAddr := freePort(t)
			listen := "--amqp-listen"
			if scheme != "amqp" {
				listen = "--mqtt-listen"
			}
			up := StartBroker(t, "--node-name", "up", listen, upAddr)
			ch := upstreamQueue(t, up, "landing", "sensors.#")
			upDir := up.DataDir
			if err := up.Stop(t); err != nil {
				t.Fatal(err)
			}
			args := []string{"--node-name", "edge", "--bridge-url", scheme + "://guest:guest@" + upAddr + "/", "--bridge-topic", "sensors/#"}
			edge := StartBroker(t, args...)
			start := time.Now()
			publishMQTTQoS1(t, edge, "sensors/outage", n)
			t.Logf("published %d QoS 1 messages locally while the upstream was down in %v", n, time.Since(start))
			_, ech := dialBroker(t, edge)
			if q, err := ech.QueueDeclarePassive("bridge.upstream", true, false, false, false, nil); err != nil || q.Messages != n {
				t.Fatalf("bridge.upstream holds %d messages (err %v), want %d", q.Messages, err, n)
			}
			edge = restart(t, edge, args...)
			up = StartBroker(t, "--node-name", "up", listen, upAddr, "--data-dir", upDir)
			_, ch = dialBroker(t, up)
			start = time.Now()
			got := collect(t, ch, "landing", n, 60*time.Second)
			dups := checkOnceInOrder(t, got, 0, n)
			t.Logf("all %d arrived upstream in order %v after it came back; %d duplicates", n, time.Since(start), dups)
		})
	}
}

// TestBridgeLoopBothWays: two brokers bridged both ways on the same
// topics - by one link with direction both, or by each pushing to the
// other - deliver each message once on each side: the via marker keeps a
// message from coming back. (Bridging the same direction twice, a both
// link on each side, is a configuration that duplicates by design.)
func TestBridgeLoopBothWays(t *testing.T) {
	for _, tc := range []struct {
		name   string
		aLink  []string // the link of a (to b)
		bLink  []string // the link of b (to a), nil for none
		scheme string
	}{
		{name: "one link both ways, MQTT 5", aLink: []string{"--bridge-direction", "both"}, scheme: "mqtt"},
		{name: "one link both ways, AMQP", aLink: []string{"--bridge-direction", "both"}, scheme: "amqp"},
		{name: "each pushes to the other", aLink: []string{"--bridge-direction", "out"}, bLink: []string{"--bridge-direction", "out"}, scheme: "mqtt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aMQTT, aAMQP, bMQTT, bAMQP := freePort(t), freePort(t), freePort(t), freePort(t)
			addr := func(mqttAddr, amqpAddr string) string {
				if tc.scheme == "amqp" {
					return amqpAddr
				}
				return mqttAddr
			}
			a := StartBroker(t, append([]string{"--node-name", "a", "--mqtt-listen", aMQTT, "--amqp-listen", aAMQP,
				"--bridge-url", tc.scheme + "://guest:guest@" + addr(bMQTT, bAMQP) + "/", "--bridge-topic", "room/#"}, tc.aLink...)...)
			bArgs := []string{"--node-name", "b", "--mqtt-listen", bMQTT, "--amqp-listen", bAMQP}
			if tc.bLink != nil {
				bArgs = append(bArgs, append([]string{"--bridge-url", tc.scheme + "://guest:guest@" + addr(aMQTT, aAMQP) + "/",
					"--bridge-topic", "room/#"}, tc.bLink...)...)
			}
			b := StartBroker(t, bArgs...)
			qa := upstreamQueue(t, a, "seen-a", "room.#")
			qb := upstreamQueue(t, b, "seen-b", "room.#")
			waitLog(t, a, "bridge connected")
			if tc.bLink != nil {
				waitLog(t, b, "bridge connected")
			}
			if tc.aLink[1] == "both" {
				// What b publishes reaches a only once a's link has
				// subscribed on b, which it does after it logged
				// "bridge connected".
				waitInboundBinding(t, b, "room.#", "seen-b")
			}
			publishAMQP(t, a, "room.1", 0, 50)
			publishAMQP(t, b, "room.1", 1000, 50)
			// Sentinels last from each side: what arrives after them is
			// counted too, so an echo would show.
			publishAMQP(t, a, "room.1", 9000, 1)
			publishAMQP(t, b, "room.1", 9001, 1)
			for _, side := range []struct {
				name, queue string
				ch          *amqp.Channel
			}{{"a", "seen-a", qa}, {"b", "seen-b", qb}} {
				got := collect(t, side.ch, side.queue, 102, 30*time.Second)
				count := map[uint64]int{}
				for _, s := range got {
					count[s]++
				}
				for s, c := range count {
					if c != 1 {
						t.Fatalf("broker %s got message %d %d times", side.name, s, c)
					}
				}
				if n, err := side.ch.QueueDeclarePassive(side.queue, true, false, false, false, nil); err != nil || n.Messages != 0 {
					t.Fatalf("broker %s has %d more messages after the sentinels: echoes", side.name, n.Messages)
				}
			}
		})
	}
}

// waitInboundBinding waits until upstream has a binding of amq.topic with
// key to a queue other than except: the queue of a link's inbound
// subscription there (an MQTT session's subscription queue, or the AMQP
// link's own queue). Messages published upstream before it exists are not
// the link's to carry.
func waitInboundBinding(t *testing.T, upstream *Broker, key, except string) {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for {
		var bindings []struct {
			Source      string `json:"source"`
			Destination string `json:"destination"`
			RoutingKey  string `json:"routing_key"`
		}
		apiJSON(t, upstream, "GET", "/api/bindings/%2F", nil, &bindings)
		for _, bd := range bindings {
			if bd.Source == "amq.topic" && bd.RoutingKey == key && bd.Destination != except {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no inbound link's binding of amq.topic with %q on the upstream: %+v", key, bindings)
		}
		select {
		case <-upstream.Exited():
			t.Fatal("upstream broker exited")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestBridgeBufferFull: with the upstream down, a full buffer either
// refuses new messages (block: the publisher is nacked) or drops the
// oldest (drop-oldest: counted and logged), as configured.
func TestBridgeBufferFull(t *testing.T) {
	down := freePort(t) // nothing listens there
	for _, policy := range []string{"block", "drop-oldest"} {
		t.Run(policy, func(t *testing.T) {
			edge := StartBroker(t, "--node-name", "edge", "--bridge-url", "amqp://guest:guest@"+down+"/",
				"--bridge-topic", "sensors/#", "--bridge-max-messages", "100", "--bridge-overflow", policy)
			_, ch := dialBroker(t, edge)
			p := newPublisher(t, ch, 1)
			nacked := 0
			for i := range uint64(150) {
				body := binary.BigEndian.AppendUint64(nil, i)
				if err := ch.PublishWithContext(context.Background(), "amq.topic", "sensors.full", false, false,
					amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body}); err != nil {
					t.Fatal(err)
				}
				select {
				case c := <-p.confirms:
					if !c.Ack {
						nacked++
					}
				case <-time.After(confirmWait):
					t.Fatal("no confirm")
				}
			}
			q, err := ch.QueueDeclarePassive("bridge.upstream", true, false, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if q.Messages != 100 {
				t.Fatalf("buffer holds %d, want its limit 100", q.Messages)
			}
			first, _, _ := ch.Get("bridge.upstream", false)
			head := binary.BigEndian.Uint64(first.Body)
			switch policy {
			case "block":
				if nacked != 50 || head != 0 {
					t.Fatalf("block: %d nacked, head %d; want 50 nacked and the first 100 kept", nacked, head)
				}
			case "drop-oldest":
				if nacked != 0 || head != 50 {
					t.Fatalf("drop-oldest: %d nacked, head %d; want none nacked and the newest 100 kept", nacked, head)
				}
				waitLog(t, edge, "bridge buffer full: oldest messages dropped")
			}
		})
	}
}

// waitLog waits for a line containing s in the broker's log.
func waitLog(t *testing.T, b *Broker, s string) {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for !strings.Contains(b.Output(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log", s)
		}
		select {
		case <-b.Exited():
			t.Fatal("broker exited")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// publishMQTTQoS1 publishes n QoS 1 messages numbered from 0 to topic
// on b with an MQTT 3.1.1 client, pipelined, and waits for every PUBACK.
func publishMQTTQoS1(t *testing.T, b *Broker, topic string, n int) {
	t.Helper()
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + b.MQTTAddr).SetClientID("pub-" + strconv.Itoa(n)).
		SetAutoReconnect(false).SetMaxResumePubInFlight(1000)
	c := mqtt3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	toks := make([]mqtt3.Token, n)
	for i := range n {
		toks[i] = c.Publish(topic, 1, false, binary.BigEndian.AppendUint64(make([]byte, 0, 32), uint64(i)))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("PUBACK %d: %v", i, tok.Error())
		}
	}
}
