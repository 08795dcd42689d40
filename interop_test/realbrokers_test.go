//go:build realbrokers

package interop_test

// The bridge against real upstream brokers: RabbitMQ (AMQP 0-9-1 and its
// MQTT 3.1.1 plugin) and Mosquitto (MQTT 5 and 3.1.1), each started by the
// harness in realbrokers_harness_test.go, with the real ferrymq binary.
// Run with `make interop`.

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// realWait bounds each wait for bridged messages; RabbitMQ and a link's
// reconnect backoff (up to 30 s) make it longer than mqtttest.Wait.
const realWait = 90 * time.Second

// probe is the payload of the messages sent to learn that a link's
// inbound subscription is in place; receivers skip them.
const probe = "probe"

// seqOf returns the sequence number at the start of a test payload; ok is
// false for a probe.
func seqOf(p []byte) (uint64, bool) {
	if len(p) < 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(p), true
}

func amqpSeq(d amqp.Delivery) (uint64, bool) { return seqOf(d.Body) }
func v5Seq(p *paho.Publish) (uint64, bool)   { return seqOf(p.Payload) }
func v3Seq(m mqtt3.Message) (uint64, bool)   { return seqOf(m.Payload()) }

// topicSeq is v5Seq for messages that must all have topic, probes aside.
func topicSeq(t *testing.T, topic string) func(*paho.Publish) (uint64, bool) {
	return func(p *paho.Publish) (uint64, bool) {
		s, ok := v5Seq(p)
		if ok && p.Topic != topic {
			t.Fatalf("message %d has topic %q, want %q", s, p.Topic, topic)
		}
		return s, ok
	}
}

// receiveSeqs reads messages from ch until every number of [0, n) has
// arrived, and returns the numbers in arrival order, duplicates included.
// It fails after d with a count of what arrived.
func receiveSeqs[T any](t *testing.T, what string, ch <-chan T, seq func(T) (uint64, bool), n uint64, d time.Duration) []uint64 {
	t.Helper()
	var got []uint64
	seen := map[uint64]bool{}
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for uint64(len(seen)) < n {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("%s: closed after %d of %d messages", what, len(seen), n)
			}
			s, ok := seq(m)
			if !ok {
				continue
			}
			got = append(got, s)
			if s < n {
				seen[s] = true
			}
		case <-timeout.C:
			var missing []uint64
			for i := uint64(0); i < n && len(missing) < 10; i++ {
				if !seen[i] {
					missing = append(missing, i)
				}
			}
			t.Fatalf("%s: %d of %d messages within %v; the first missing: %v", what, len(seen), n, d, missing)
		}
	}
	return got
}

// fence publishes number n with send after [0, n) all arrived and reads ch
// up to it: the link keeps order, so any duplicate of an earlier message
// arrives before the fence. It returns the extra messages read.
func fence[T any](t *testing.T, what string, ch <-chan T, seq func(T) (uint64, bool), n uint64, send func(seq uint64)) []uint64 {
	t.Helper()
	send(n)
	var extra []uint64
	timeout := time.NewTimer(realWait)
	defer timeout.Stop()
	for {
		select {
		case m := <-ch:
			s, ok := seq(m)
			if !ok {
				continue
			}
			if s == n {
				return extra
			}
			extra = append(extra, s)
		case <-timeout.C:
			t.Fatalf("%s: fence %d not within %v", what, n, realWait)
		}
	}
}

// consumeQueue consumes queue with auto-ack.
func consumeQueue(t *testing.T, ch *amqp.Channel, queue string) <-chan amqp.Delivery {
	t.Helper()
	ds, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume %s: %v", queue, err)
	}
	return ds
}

// publishSeqs publishes the numbers [first, first+n) as QoS 1 payloads of
// size bytes to topic at the MQTT listener addr, pipelined, with a 3.1.1
// client, and waits for every PUBACK.
func publishSeqs(t *testing.T, addr, clientID, topic string, first, n uint64, size int) {
	t.Helper()
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetUsername("guest").SetPassword("guest").SetAutoReconnect(false).SetConnectTimeout(mqtttest.Wait)
	c := mqtt3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(mqtttest.Wait) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", clientID, addr, tok.Error())
	}
	defer c.Disconnect(100)
	toks := make([]mqtt3.Token, 0, n)
	for i := first; i < first+n; i++ {
		body := make([]byte, max(size, 8))
		binary.BigEndian.PutUint64(body, i)
		toks = append(toks, c.Publish(topic, 1, false, body))
	}
	deadline := time.Now().Add(realWait)
	for i, tok := range toks {
		if !tok.WaitTimeout(time.Until(deadline)) || tok.Error() != nil {
			t.Fatalf("PUBACK %d of %d from %s: %v", i, n, addr, tok.Error())
		}
	}
}

// publishRabbit publishes the numbers [first, first+n) as persistent
// messages to amq.topic with key, with confirms.
func publishRabbit(t *testing.T, r *RabbitMQ, key string, first, n uint64) {
	t.Helper()
	_, ch := r.Dial(t)
	p := newPublisher(t, ch, 500)
	for i := first; i < first+n; i++ {
		if !p.publish("amq.topic", key, i, 32) {
			t.Fatalf("publish %d to RabbitMQ failed", i)
		}
	}
	for p.inflight > 0 {
		if !p.await(confirmWait) {
			t.Fatal("RabbitMQ confirm missing")
		}
	}
}

// waitInbound sends probes with send until one reaches ch: the link's
// subscription upstream is then in place. Later probes are skipped by the
// seq functions.
func waitInbound[T any](t *testing.T, what string, ch <-chan T, isProbe func(T) bool, send func()) {
	t.Helper()
	deadline := time.Now().Add(realWait)
	for time.Now().Before(deadline) {
		send()
		timer := time.NewTimer(200 * time.Millisecond)
	wait:
		for {
			select {
			case m := <-ch:
				if isProbe(m) {
					timer.Stop()
					return
				}
				t.Fatalf("%s: a message other than a probe arrived first", what)
			case <-timer.C:
				break wait
			}
		}
	}
	t.Fatalf("%s: no probe came through within %v", what, realWait)
}

// mosquittoV5 connects an MQTT 5 client to Mosquitto.
func mosquittoV5(t *testing.T, m *Mosquitto, o mqtttest.V5Options) *mqtttest.V5Client {
	t.Helper()
	c, ca, err := mqtttest.DialV5(t, m.Addr, o)
	if err != nil {
		t.Fatalf("MQTT 5 connect of %q to Mosquitto: %v (CONNACK %v)", o.ClientID, err, ca)
	}
	return c
}

// mosquittoV3 connects an MQTT 3.1.1 client to Mosquitto.
func mosquittoV3(t *testing.T, m *Mosquitto, o mqtttest.V3Options) *mqtttest.V3Client {
	t.Helper()
	c, rc, err := mqtttest.DialV3(t, m.Addr, o)
	if err != nil {
		t.Fatalf("MQTT 3.1.1 connect of %q to Mosquitto: %v (return code %d)", o.ClientID, err, rc)
	}
	return c
}

// writeConfig writes a ferrymq config file and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ferrymq.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// logDups logs the duplicates of a run; at least once allows them, but the
// issue's report wants them counted.
func logDups(t *testing.T, what string, dups int) {
	t.Helper()
	t.Logf("%s: %d duplicates", what, dups)
}

// TestRealMQTTToRabbitMQ: MQTT sensors publish to ferrymq, which forwards
// to a RabbitMQ exchange over AMQP, and over RabbitMQ's MQTT plugin; an
// AMQP consumer of a queue bound to amq.topic gets every message in order.
func TestRealMQTTToRabbitMQ(t *testing.T) {
	const n = 1000
	for _, scheme := range []string{"amqp", "mqtt3"} {
		t.Run(scheme, func(t *testing.T) {
			r := StartRabbitMQ(t)
			ch := r.Queue(t, "landing", "sensors.#")
			ds := consumeQueue(t, ch, "landing")
			addr := r.AMQPAddr
			if scheme == "mqtt3" {
				addr = r.MQTTAddr
			}
			edge := StartBroker(t, "--node-name", "edge", "--bridge-url", scheme+"://guest:guest@"+addr+"/",
				"--bridge-topic", "sensors/#")
			publishSeqs(t, edge.MQTTAddr, "sensor-1", "sensors/hall/temp", 0, n, 16)
			got := receiveSeqs(t, "RabbitMQ queue landing", ds, amqpSeq, n, realWait)
			logDups(t, scheme, checkOnceInOrder(t, got, 0, n))
			if scheme == "amqp" {
				// The hop marker travels as an AMQP header, for a
				// RabbitMQ consumer to see where a message came from.
				publishSeqs(t, edge.MQTTAddr, "sensor-2", "sensors/hall/temp", n, 1, 16)
				d := mqtttest.WaitFor(t, ds, realWait, "message with the via header")
				if v := d.Headers["x-ferrymq-via"]; v != "edge" || d.RoutingKey != "sensors.hall.temp" {
					t.Fatalf("RabbitMQ got key %q, via header %v; want sensors.hall.temp and edge", d.RoutingKey, v)
				}
			}
		})
	}
}

// TestRealRabbitMQToMQTT: messages published on RabbitMQ's amq.topic cross
// an inbound link to ferrymq's MQTT subscribers, in order; over AMQP the
// link consumes a durable queue of its own on RabbitMQ, over RabbitMQ's MQTT
// plugin a persistent session.
func TestRealRabbitMQToMQTT(t *testing.T) {
	const n = 1000
	for _, tc := range []struct{ scheme, queue string }{
		{"amqp", "ferrymq-bridge-edge-upstream"},
		// The MQTT plugin's queue for a QoS 1 subscription of a client
		// with a persistent session.
		{"mqtt3", "mqtt-subscription-ferrymq-edge-upstreamqos1"},
	} {
		t.Run(tc.scheme, func(t *testing.T) {
			r := StartRabbitMQ(t)
			addr := r.AMQPAddr
			if tc.scheme == "mqtt3" {
				addr = r.MQTTAddr
			}
			edge := StartBroker(t, "--node-name", "edge", "--bridge-url", tc.scheme+"://guest:guest@"+addr+"/",
				"--bridge-direction", "in", "--bridge-topic", "commands/#")
			sub := mqtttest.ConnectV5(t, edge.MQTTAddr, mqtttest.V5Options{ClientID: "actuator", Buffer: n + 100})
			sub.SubscribeAt(t, 1, "commands/#")
			r.WaitConsumers(t, tc.queue, 1)
			publishRabbit(t, r, "commands.valve.7", 0, n)
			got := receiveSeqs(t, "ferrymq MQTT subscriber", sub.Msgs, v5Seq, n, realWait)
			logDups(t, tc.scheme, checkOnceInOrder(t, got, 0, n))
		})
	}
}

// TestRealMosquitto: ferrymq and Mosquitto linked both ways with MQTT 5 and
// with MQTT 3.1.1, each direction on its own topics (3.1.1 cannot carry the
// hop marker, so it must not bridge a topic both ways) and with a remote
// prefix, as Mosquitto's own bridges map topics.
func TestRealMosquitto(t *testing.T) {
	const n = 1000
	for _, scheme := range []string{"mqtt", "mqtt3"} {
		t.Run(scheme, func(t *testing.T) {
			m := StartMosquitto(t)
			cfg := writeConfig(t, fmt.Sprintf(`node_name: edge
bridges:
  - name: site
    url: %s://%s
    topics:
      - pattern: "sensors/#"
        direction: out
        remote_prefix: "edge1/"
      - pattern: "commands/#"
        direction: in
        remote_prefix: "edge1/"
`, scheme, m.Addr))
			edge := StartBroker(t, "--config", cfg)

			// out: ferrymq sensors/# -> Mosquitto edge1/sensors/#
			cloud := mosquittoV5(t, m, mqtttest.V5Options{ClientID: "cloud", Buffer: n + 100})
			cloud.SubscribeAt(t, 1, "edge1/sensors/#")
			publishSeqs(t, edge.MQTTAddr, "sensor", "sensors/hall/temp", 0, n, 16)
			got := receiveSeqs(t, "Mosquitto subscriber", cloud.Msgs, topicSeq(t, "edge1/sensors/hall/temp"), n, realWait)
			logDups(t, scheme+" out", checkOnceInOrder(t, got, 0, n))

			// in: Mosquitto edge1/commands/# -> ferrymq commands/#
			local := mqtttest.ConnectV5(t, edge.MQTTAddr, mqtttest.V5Options{ClientID: "actuator", Buffer: n + 100})
			local.SubscribeAt(t, 1, "commands/#")
			cmd := mosquittoV5(t, m, mqtttest.V5Options{ClientID: "controller"})
			waitInbound(t, "Mosquitto -> ferrymq", local.Msgs, func(p *paho.Publish) bool { return string(p.Payload) == probe },
				func() { cmd.Send(t, "edge1/commands/probe", 1, probe) })
			publishSeqs(t, m.Addr, "controller-2", "edge1/commands/valve/7", 0, n, 16)
			got = receiveSeqs(t, "ferrymq subscriber", local.Msgs, topicSeq(t, "commands/valve/7"), n, realWait)
			logDups(t, scheme+" in", checkOnceInOrder(t, got, 0, n))
		})
	}
}

// TestRealMosquittoLoopBothWays: ferrymq and Mosquitto bridged both ways on
// the same topics over MQTT 5: no-local keeps the link's own publishes from
// coming back, the hop marker cuts the rest, and each message is delivered
// once on each side.
func TestRealMosquittoLoopBothWays(t *testing.T) {
	const n = 50
	m := StartMosquitto(t)
	edge := StartBroker(t, "--node-name", "edge", "--bridge-url", "mqtt://"+m.Addr,
		"--bridge-direction", "both", "--bridge-topic", "room/#")
	subF := mqtttest.ConnectV5(t, edge.MQTTAddr, mqtttest.V5Options{ClientID: "sub-ferrymq"})
	subF.SubscribeAt(t, 1, "room/#")
	subM := mosquittoV5(t, m, mqtttest.V5Options{ClientID: "sub-mosquitto"})
	subM.SubscribeAt(t, 1, "room/#")
	pubF := mqtttest.ConnectV5(t, edge.MQTTAddr, mqtttest.V5Options{ClientID: "pub-ferrymq"})
	pubM := mosquittoV5(t, m, mqtttest.V5Options{ClientID: "pub-mosquitto"})
	// Mosquitto -> ferrymq needs the link's subscription; ferrymq ->
	// Mosquitto is buffered until the link is up.
	isProbe := func(p *paho.Publish) bool { return string(p.Payload) == probe }
	waitInbound(t, "Mosquitto -> ferrymq", subF.Msgs, isProbe, func() { pubM.Send(t, "room/probe", 1, probe) })

	for i := range n {
		pubF.Send(t, "room/1", 1, fmt.Sprintf("f-%d", i))
		pubM.Send(t, "room/1", 1, fmt.Sprintf("m-%d", i))
	}
	counts := map[string]map[string]int{"ferrymq": {}, "mosquitto": {}}
	// read collects on each side until both of the round's end markers
	// arrived. An echo of an earlier message would have to cross the same
	// ordered links as the second round's markers, so it would be counted.
	read := func(round string) {
		pubF.Send(t, "room/1", 1, round+"-f")
		pubM.Send(t, "room/1", 1, round+"-m")
		for side, c := range map[string]*mqtttest.V5Client{"ferrymq": subF, "mosquitto": subM} {
			for counts[side][round+"-f"] == 0 || counts[side][round+"-m"] == 0 {
				p := c.Next(t, side+" subscriber, "+round)
				if !isProbe(p) {
					counts[side][string(p.Payload)]++
				}
			}
		}
	}
	read("end")
	read("fence")
	for side, c := range counts {
		for _, origin := range []string{"f", "m"} {
			for i := range n {
				if k := fmt.Sprintf("%s-%d", origin, i); c[k] != 1 {
					t.Errorf("%s subscriber got %s %d times, want once", side, k, c[k])
				}
			}
			if k := "end-" + origin; c[k] != 1 {
				t.Errorf("%s subscriber got %s %d times, want once", side, k, c[k])
			}
		}
	}
}

// TestRealSeveralLinks: a config file with two links: sensors go out to
// RabbitMQ over AMQP and to Mosquitto over MQTT 5 (each link has its own
// store-and-forward queue, so each upstream gets every message), and
// commands come in from Mosquitto.
func TestRealSeveralLinks(t *testing.T) {
	const n = 500
	r := StartRabbitMQ(t)
	m := StartMosquitto(t)
	ch := r.Queue(t, "landing", "sensors.#")
	ds := consumeQueue(t, ch, "landing")
	site := mosquittoV5(t, m, mqtttest.V5Options{ClientID: "site", Buffer: n + 100})
	site.SubscribeAt(t, 1, "sensors/#")
	cfg := writeConfig(t, fmt.Sprintf(`node_name: edge
bridges:
  - name: cloud
    url: amqp://guest:guest@%s/
    topics:
      - pattern: "sensors/#"
  - name: site
    url: mqtt://%s
    topics:
      - pattern: "sensors/#"
        direction: out
      - pattern: "commands/#"
        direction: in
`, r.AMQPAddr, m.Addr))
	edge := StartBroker(t, "--config", cfg)
	publishSeqs(t, edge.MQTTAddr, "sensor", "sensors/hall/temp", 0, n, 16)
	got := receiveSeqs(t, "RabbitMQ", ds, amqpSeq, n, realWait)
	logDups(t, "cloud", checkOnceInOrder(t, got, 0, n))
	got = receiveSeqs(t, "Mosquitto", site.Msgs, topicSeq(t, "sensors/hall/temp"), n, realWait)
	logDups(t, "site out", checkOnceInOrder(t, got, 0, n))

	local := mqtttest.ConnectV5(t, edge.MQTTAddr, mqtttest.V5Options{ClientID: "actuator", Buffer: n + 100})
	local.SubscribeAt(t, 1, "commands/#")
	ctl := mosquittoV5(t, m, mqtttest.V5Options{ClientID: "controller"})
	waitInbound(t, "Mosquitto -> ferrymq", local.Msgs, func(p *paho.Publish) bool { return string(p.Payload) == probe },
		func() { ctl.Send(t, "commands/probe", 1, probe) })
	publishSeqs(t, m.Addr, "controller-2", "commands/valve/7", 0, n, 16)
	got = receiveSeqs(t, "ferrymq", local.Msgs, topicSeq(t, "commands/valve/7"), n, realWait)
	logDups(t, "site in", checkOnceInOrder(t, got, 0, n))
}

// outageN is the outage test size.
const outageN = 10_000

// outageLocal is the local half of the outage test, with the upstream
// down: publish outageN QoS 1 messages to ferrymq, check they are all in
// the link's queue, and restart ferrymq. It returns the restarted broker.
func outageLocal(t *testing.T, args ...string) *Broker {
	t.Helper()
	edge := StartBroker(t, args...)
	start := time.Now()
	publishSeqs(t, edge.MQTTAddr, "sensor", "sensors/outage", 0, outageN, 16)
	t.Logf("published %d QoS 1 messages to ferrymq with the upstream down in %v", outageN, time.Since(start).Round(time.Millisecond))
	_, ech := dialBroker(t, edge)
	if q, err := ech.QueueDeclarePassive("bridge.upstream", true, false, false, false, nil); err != nil || q.Messages != outageN {
		t.Fatalf("bridge.upstream holds %d messages (err %v), want %d", q.Messages, err, outageN)
	}
	start = time.Now()
	edge = restart(t, edge, args...)
	t.Logf("ferrymq restarted with the upstream still down in %v", time.Since(start).Round(time.Millisecond))
	return edge
}

// TestRealOutageRabbitMQ is the outage test against RabbitMQ: it is
// down while 10,000 QoS 1 messages are published to ferrymq, ferrymq
// restarts meanwhile, and when RabbitMQ is back all of them arrive in its
// queue, in order.
func TestRealOutageRabbitMQ(t *testing.T) {
	r := StartRabbitMQ(t)
	r.Queue(t, "landing", "sensors.#")
	r.Stop()
	args := []string{"--node-name", "edge", "--bridge-url", "amqp://guest:guest@" + r.AMQPAddr + "/", "--bridge-topic", "sensors/#"}
	edge := outageLocal(t, args...)

	start := time.Now()
	r.Start()
	ready := time.Now()
	_, ch := r.Dial(t)
	ds := consumeQueue(t, ch, "landing")
	got := receiveSeqs(t, "RabbitMQ queue landing", ds, amqpSeq, outageN, realWait)
	done := time.Now()
	extra := fence(t, "RabbitMQ queue landing", ds, amqpSeq, outageN, func(s uint64) {
		publishSeqs(t, edge.MQTTAddr, "fence", "sensors/outage", s, 1, 16)
	})
	dups := checkOnceInOrder(t, append(got, extra...), 0, outageN)
	t.Logf("RabbitMQ booted in %v; the link reconnected %v after its start; all %d in its queue, in order, %v after it was ready; %d duplicates",
		ready.Sub(start).Round(time.Millisecond), reconnectDelay(t, edge, start), outageN,
		done.Sub(ready).Round(time.Millisecond), dups)
}

// reconnectDelay returns how long after since the broker's link logged
// that it connected (with the upstream's boot, the reconnect backoff's
// share of an outage's end).
func reconnectDelay(t *testing.T, b *Broker, since time.Time) time.Duration {
	t.Helper()
	for _, line := range strings.Split(b.Output(), "\n") {
		if !strings.Contains(line, `msg="bridge connected"`) {
			continue
		}
		v, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		return at.Sub(since).Round(time.Millisecond)
	}
	t.Fatal("no \"bridge connected\" in the log")
	return 0
}

// TestRealOutageMosquitto is the outage test against Mosquitto, over MQTT 5
// and 3.1.1: the messages wait in Mosquitto for a subscriber's persistent
// session made before the outage.
func TestRealOutageMosquitto(t *testing.T) {
	for _, scheme := range []string{"mqtt", "mqtt3"} {
		t.Run(scheme, func(t *testing.T) {
			m := StartMosquitto(t)
			sub := mosquittoV3(t, m, mqtttest.V3Options{ClientID: "landing", Persistent: true})
			sub.SubscribeAt(t, 1, "sensors/#")
			sub.Disconnect(100)
			m.Stop()
			args := []string{"--node-name", "edge", "--bridge-url", scheme + "://" + m.Addr, "--bridge-topic", "sensors/#"}
			edge := outageLocal(t, args...)

			start := time.Now()
			m.Start()
			ready := time.Now()
			sub = mosquittoV3(t, m, mqtttest.V3Options{ClientID: "landing", Persistent: true, Buffer: 2 * outageN})
			if !sub.SessionPresent {
				t.Fatal("Mosquitto lost the subscriber's session")
			}
			got := receiveSeqs(t, "Mosquitto subscriber", sub.Msgs, v3Seq, outageN, realWait)
			done := time.Now()
			extra := fence(t, "Mosquitto subscriber", sub.Msgs, v3Seq, outageN, func(s uint64) {
				publishSeqs(t, edge.MQTTAddr, "fence", "sensors/outage", s, 1, 16)
			})
			dups := checkOnceInOrder(t, append(got, extra...), 0, outageN)
			t.Logf("%s: Mosquitto back in %v; the link reconnected %v after its start; all %d at the subscriber, in order, %v after Mosquitto was back; %d duplicates",
				scheme, ready.Sub(start).Round(time.Millisecond), reconnectDelay(t, edge, start), outageN,
				done.Sub(ready).Round(time.Millisecond), dups)
		})
	}
}

// TestRealThroughput measures bridged throughput: QoS 1 MQTT publishes to
// ferrymq, forwarded to the upstream, received by a consumer there. The
// RabbitMQ figure is the one the report asks for.
func TestRealThroughput(t *testing.T) {
	const n, size = 20_000, 100
	report := func(t *testing.T, what string, start, published, done time.Time) {
		t.Logf("%s: %d messages of %d B: PUBACKed by ferrymq in %v (%.0f msg/s); all received upstream in %v: %.0f msg/s end to end",
			what, n, size, published.Sub(start).Round(time.Millisecond), n/published.Sub(start).Seconds(),
			done.Sub(start).Round(time.Millisecond), n/done.Sub(start).Seconds())
	}
	t.Run("rabbitmq-amqp", func(t *testing.T) {
		r := StartRabbitMQ(t)
		ch := r.Queue(t, "landing", "sensors.#")
		ds := consumeQueue(t, ch, "landing")
		edge := StartBroker(t, "--node-name", "edge", "--bridge-url", "amqp://guest:guest@"+r.AMQPAddr+"/",
			"--bridge-topic", "sensors/#")
		waitLog(t, edge, "bridge connected")
		start := time.Now()
		publishSeqs(t, edge.MQTTAddr, "sensor", "sensors/hall/temp", 0, n, size)
		published := time.Now()
		got := receiveSeqs(t, "RabbitMQ", ds, amqpSeq, n, realWait)
		report(t, "ferrymq -> RabbitMQ (AMQP)", start, published, time.Now())
		logDups(t, "rabbitmq-amqp", checkOnceInOrder(t, got, 0, n))
	})
	for _, scheme := range []string{"mqtt", "mqtt3"} {
		t.Run("mosquitto-"+scheme, func(t *testing.T) {
			m := StartMosquitto(t)
			sub := mosquittoV3(t, m, mqtttest.V3Options{ClientID: "cloud", Buffer: n + 100})
			sub.SubscribeAt(t, 1, "sensors/#")
			edge := StartBroker(t, "--node-name", "edge", "--bridge-url", scheme+"://"+m.Addr, "--bridge-topic", "sensors/#")
			waitLog(t, edge, "bridge connected")
			start := time.Now()
			publishSeqs(t, edge.MQTTAddr, "sensor", "sensors/hall/temp", 0, n, size)
			published := time.Now()
			got := receiveSeqs(t, "Mosquitto subscriber", sub.Msgs, v3Seq, n, realWait)
			report(t, "ferrymq -> Mosquitto ("+scheme+")", start, published, time.Now())
			logDups(t, "mosquitto-"+scheme, checkOnceInOrder(t, got, 0, n))
		})
	}
}
