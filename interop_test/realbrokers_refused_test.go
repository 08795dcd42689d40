//go:build realbrokers

package interop_test

// The AMQP link against a real RabbitMQ that refuses what it publishes:
// a message refused for good (403 by topic authorisation) is found,
// counted and dropped while the rest flows on one connection; a missing
// exchange (404) holds everything until it is made.

import (
	"encoding/binary"
	"fmt"
	"net/http"
	"testing"
	"time"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// rabbitPut makes a PUT to RabbitMQ's management API that must succeed.
func rabbitPut(t *testing.T, r *RabbitMQ, path, body string) {
	t.Helper()
	code, out := rabbitAPI(t, r, http.MethodPut, path, []byte(body))
	if code/100 != 2 {
		t.Fatalf("RabbitMQ PUT %s: %d %s", path, code, out)
	}
}

// linkCounts reads the one link's refused, forwarded and backlog counts
// from /api/bridges.
func linkCounts(t *testing.T, b *Broker) (refused, forwarded, backlog int) {
	t.Helper()
	var list []struct {
		Refused   int `json:"refused"`
		Forwarded int `json:"forwarded"`
		Backlog   int `json:"backlog_messages"`
	}
	apiJSON(t, b, "GET", "/api/bridges", nil, &list)
	if len(list) != 1 {
		t.Fatalf("%d links, want 1", len(list))
	}
	return list[0].Refused, list[0].Forwarded, list[0].Backlog
}

// publishTopics publishes number i as a QoS 1 payload to topicOf(i) at the
// MQTT listener addr and waits for every PUBACK.
func publishTopics(t *testing.T, addr, clientID string, n uint64, topicOf func(uint64) string) {
	t.Helper()
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetUsername("guest").SetPassword("guest").SetAutoReconnect(false).SetConnectTimeout(mqtttest.Wait)
	c := mqtt3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(mqtttest.Wait) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", clientID, addr, tok.Error())
	}
	defer c.Disconnect(100)
	toks := make([]mqtt3.Token, 0, n)
	for i := range n {
		body := make([]byte, 8)
		binary.BigEndian.PutUint64(body, i)
		toks = append(toks, c.Publish(topicOf(i), 1, false, body))
	}
	deadline := time.Now().Add(realWait)
	for i, tok := range toks {
		if !tok.WaitTimeout(time.Until(deadline)) || tok.Error() != nil {
			t.Fatalf("PUBACK %d of %d from %s: %v", i, n, addr, tok.Error())
		}
	}
}

// TestRealRabbitMQRefusedForGood: RabbitMQ's topic authorisation lets the
// link's user write sensors.ok but not sensors.deny. Each message to
// sensors/deny closes the link's channel with 403; the link finds it,
// counts it as refused and logs it, and every other message reaches
// RabbitMQ in order, on the link's one connection.
func TestRealRabbitMQRefusedForGood(t *testing.T) {
	r := StartRabbitMQManagement(t)
	rabbitPut(t, r, "/api/users/edge", `{"password":"edge-pw","tags":""}`)
	rabbitPut(t, r, "/api/permissions/%2F/edge", `{"configure":".*","write":".*","read":".*"}`)
	rabbitPut(t, r, "/api/topic-permissions/%2F/edge", `{"exchange":"amq.topic","write":"^sensors\\.ok$","read":".*"}`)
	ch := r.Queue(t, "landing", "sensors.#")
	ds := consumeQueue(t, ch, "landing")
	edge := StartBroker(t, "--node-name", "edge", "--bridge-url", "amqp://edge:edge-pw@"+r.AMQPAddr+"/",
		"--bridge-topic", "sensors/#")
	const n = 300
	denied := func(i uint64) bool { return i%7 == 3 }
	publishTopics(t, edge.MQTTAddr, "sensor-1", n, func(i uint64) string {
		if denied(i) {
			return "sensors/deny"
		}
		return "sensors/ok"
	})
	var want []uint64
	for i := range uint64(n) {
		if !denied(i) {
			want = append(want, i)
		}
	}
	// Every allowed message, in order (duplicates of one cut off by a
	// channel exception allowed: at least once), and no denied one.
	seen := map[uint64]bool{}
	var last uint64
	dups := 0
	timeout := time.NewTimer(realWait)
	defer timeout.Stop()
	for len(seen) < len(want) {
		select {
		case d := <-ds:
			s, _ := amqpSeq(d)
			switch {
			case denied(s):
				t.Fatalf("denied message %d reached RabbitMQ", s)
			case seen[s]:
				dups++
			case len(seen) > 0 && s < last:
				t.Fatalf("message %d arrived after %d: out of order", s, last)
			default:
				seen[s], last = true, s
			}
		case <-timeout.C:
			t.Fatalf("%d of %d allowed messages within %v", len(seen), len(want), realWait)
		}
	}
	deadline := time.Now().Add(realWait)
	for {
		refused, forwarded, backlog := linkCounts(t, edge)
		if refused == n-len(want) && backlog == 0 {
			t.Logf("forwarded %d, refused %d, %d duplicates", forwarded, refused, dups)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refused %d (want %d), backlog %d", refused, n-len(want), backlog)
		}
		time.Sleep(50 * time.Millisecond) // polling the API, not synchronising
	}
	out := edge.Output()
	if c := countLines(out, `msg="bridge connected"`); c != 1 {
		t.Fatalf("the link connected %d times, want once:\n%s", c, out)
	}
	if countLines(out, "level=WARN", "refused messages for good", "channel.close 403", "sensors.deny") == 0 {
		t.Fatalf("no WARN names the 403 and the routing key:\n%s", out)
	}
}

// TestRealRabbitMQExchangeMissing: a link to an exchange RabbitMQ does not
// have (404 on every publish) keeps its messages and reconnects with
// backoff, saying why; once the exchange is declared they all arrive, in
// order, none refused.
func TestRealRabbitMQExchangeMissing(t *testing.T) {
	r := StartRabbitMQ(t)
	cfg := writeConfig(t, fmt.Sprintf(`node_name: edge
bridges:
  - name: cloud
    url: amqp://guest:guest@%s/
    exchange: later
    topics:
      - pattern: "sensors/#"
`, r.AMQPAddr))
	edge := StartBroker(t, "--config", cfg)
	const n = 200
	start := time.Now()
	publishSeqs(t, edge.MQTTAddr, "sensor-1", "sensors/hall/temp", 0, n, 16)
	deadline := time.Now().Add(realWait)
	for countLines(edge.Output(), "level=WARN", "bridge disconnected", "404", "no exchange 'later'") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no three disconnects over the 404 within %v:\n%s", realWait, edge.Output())
		}
		time.Sleep(50 * time.Millisecond) // polling the log, not synchronising
	}
	if refused, forwarded, backlog := linkCounts(t, edge); refused != 0 || forwarded != 0 || backlog != n {
		t.Fatalf("with the exchange missing: refused %d, forwarded %d, backlog %d; want 0, 0, %d", refused, forwarded, backlog, n)
	}
	// The exchange comes with somewhere to route to: the link, backing
	// off, may reconnect and publish between an exchange.declare and a
	// queue.bind, and RabbitMQ would drop (and confirm) what reached an
	// exchange without bindings. So landing is bound to amq.fanout first,
	// and "later" is made with amq.fanout as its alternate exchange.
	_, ach := r.Dial(t)
	if _, err := ach.QueueDeclare("landing", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ach.QueueBind("landing", "", "amq.fanout", false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ach.ExchangeDeclare("later", amqp.ExchangeTopic, true, false, false, false, amqp.Table{"alternate-exchange": "amq.fanout"}); err != nil {
		t.Fatal(err)
	}
	ds := consumeQueue(t, ach, "landing")
	got := receiveSeqs(t, "RabbitMQ queue landing", ds, amqpSeq, n, realWait)
	logDups(t, "exchange made late", checkOnceInOrder(t, got, 0, n))
	if refused, _, _ := linkCounts(t, edge); refused != 0 {
		t.Fatalf("refused %d, want 0", refused)
	}
	// Backing off (100 ms doubling to 30 s, jittered), the link connects
	// a handful of times; a reconnect loop would connect thousands.
	if c, secs := countLines(edge.Output(), `msg="bridge connected"`), time.Since(start).Seconds(); c > 10+2*int(secs) {
		t.Fatalf("%d connections in %.1f s: not backing off", c, secs)
	}
}
