package main

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// topicMatch is AMQP 0-9-1 topic matching, the reference for the keys of
// amqp-topology-10k: words split on ".", * is exactly one word, # zero or
// more.
func topicMatch(pattern, key []string) bool {
	if len(pattern) == 0 {
		return len(key) == 0
	}
	switch pattern[0] {
	case "#":
		for i := 0; i <= len(key); i++ {
			if topicMatch(pattern[1:], key[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(key) > 0 && topicMatch(pattern[1:], key[1:])
	}
	return len(key) > 0 && key[0] == pattern[0] && topicMatch(pattern[1:], key[1:])
}

func TestTopicMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, key string
		want         bool
	}{
		{"a.#", "a", true}, {"a.#", "a.b.c", true}, {"#.c", "c", true}, {"#", "", true},
		{"a.*", "a", false}, {"a.*", "a.b", true}, {"a.*", "a.b.c", false},
		{"a.#.c", "a.c", true}, {"a.#.c", "a.b.b.c", true}, {"a.#.c", "a.b.c.d", false},
		{"*.b.#", "x.b", true}, {"a", "ab", false},
	} {
		if got := topicMatch(strings.Split(c.pattern, "."), strings.Split(c.key, ".")); got != c.want {
			t.Errorf("%q matches %q: %v, want %v", c.pattern, c.key, got, c.want)
		}
	}
}

// TestTopologyKeys checks what the scenario relies on for its delivery
// check: 100,000 distinct bindings that mix literals, * and #, and routing
// keys that each match exactly the queue they target, through the bindings
// topoRoutes says.
func TestTopologyKeys(t *testing.T) {
	const n = 10000
	type binding struct {
		queue int
		words []string
	}
	var all []binding
	seen := map[string]bool{}
	var stars, hashes, leading int
	for i := range n {
		for _, k := range topoBindings(i) {
			key := k
			if seen[key] {
				t.Fatalf("binding key %q of queue %d is not unique", key, i)
			}
			seen[key] = true
			all = append(all, binding{i, strings.Split(key, ".")})
			if strings.Contains(key, "*") {
				stars++
			}
			if strings.Contains(key, "#") {
				hashes++
			}
			if key[0] == '*' || key[0] == '#' {
				leading++
			}
		}
	}
	if len(all) != n*topoKeysPerQueue || stars == 0 || hashes == 0 || leading == 0 {
		t.Fatalf("%d bindings, %d with *, %d with #, %d starting with a wildcard", len(all), stars, hashes, leading)
	}

	sampled := topoSampled(n, topoSample)
	if len(sampled) != topoSample || !slices.IsSorted(sampled) || sampled[len(sampled)-1] >= n {
		t.Fatalf("sampled queues: %v", sampled)
	}
	residues := map[int]bool{}
	for _, q := range sampled {
		residues[q%100] = true
	}
	if len(residues) < 20 {
		t.Errorf("the sample covers only %d site groups (i%%100)", len(residues))
	}

	// Every form for a spread of the sampled queues (all of them would
	// take 2,000 keys × 100,000 bindings).
	for k, q := range sampled {
		if k%13 != 0 && k != len(sampled)-1 {
			continue
		}
		for f, key := range topoRoutingKeys(q) {
			words := strings.Split(key, ".")
			var queues, via []int
			for b, bd := range all {
				if topicMatch(bd.words, words) {
					queues = append(queues, bd.queue)
					if bd.queue == q {
						via = append(via, b%topoKeysPerQueue)
					}
				}
			}
			queues = slices.Compact(queues)
			if len(queues) != 1 || queues[0] != q {
				t.Errorf("routing key %q for queue %d matches queues %v", key, q, queues)
			}
			if !slices.Equal(via, topoRoutes[f]) {
				t.Errorf("routing key %q matches bindings %v of queue %d, want %v", key, via, q, topoRoutes[f])
			}
		}
	}
}

func TestTopoSampledSmall(t *testing.T) {
	for _, n := range []int{1, 7, 200, 201, 999} {
		s := topoSampled(n, topoSample)
		if len(s) != min(n, topoSample) {
			t.Fatalf("n=%d: %d sampled", n, len(s))
		}
		for k, q := range s {
			if q < 0 || q >= n || (k > 0 && q <= s[k-1]) {
				t.Fatalf("n=%d: sampled %v", n, s)
			}
		}
	}
}

func TestReportTopology(t *testing.T) {
	topo := planned{sc: findScenario(topologyName), size: 16}
	fanout := planned{sc: findScenario("amqp-fanout10"), size: 16}
	rep := &report{
		started: time.Now(), cfg: &config{conns: 10000, mqttVersion: 3, window: 1000},
		brokers: []*brokerProc{{name: "ferrymq"}, {name: "rabbitmq"}, {name: "mosquitto"}},
		plan:    []planned{topo, fanout},
		results: []result{
			{Scenario: topologyName, Broker: "ferrymq", Size: 16, Queues: 10000, Bindings: 100000, DeclareSeconds: 5, DeleteSeconds: 0.5,
				RSSBeforeKiB: 17 << 10, RSSTopoKiB: 99 << 10, RSSPerQueueKiB: 8.35, MsgPerSec: 80000, Published: 400000, Received: 400000, OK: true},
			{Scenario: topologyName, Broker: "rabbitmq", Size: 16, Queues: 10000, Bindings: 100000, DeclareSeconds: 90, DeleteSeconds: 40,
				RSSBeforeKiB: 120 << 10, RSSTopoKiB: 750 << 10, RSSPerQueueKiB: 64.5, MsgPerSec: 4000, Published: 20000, Received: 20000, OK: true},
			{Scenario: "amqp-fanout10", Broker: "ferrymq", Size: 16, MsgPerSec: 300000, OK: true},
			{Scenario: "amqp-fanout10", Broker: "rabbitmq", Size: 16, MsgPerSec: 50000, OK: true},
		},
		topologyBrokers: []string{"ferrymq", "rabbitmq"},
	}
	var buf bytes.Buffer
	rep.write(&buf)
	out := buf.String()
	reportHas(t, out,
		"| amqp-topology-10k routing (16 B) | msg/s (confirmed, routed) | 80.0k | 4000 | – | 20.00× | routing still fast: ≥ 4× RabbitMQ | yes |",
		"| amqp-topology-10k memory | KiB RSS / queue (with its 10 bindings) | 8.35 | 64.50 | – | 0.13× | none; lower is better",
		"| amqp-fanout10 (16 B) | deliveries/s | 300.0k | 50.0k | – | 6.00× | ≥ 4× RabbitMQ | yes |",
		"amqp-topology-10k runs once, before the other runs, against ferrymq and RabbitMQ, each started afresh",
		"## AMQP topology",
		"| ferrymq | 10000 | 100000 | 5.0 s | 2000 | 17.0 → 99.0 MiB | 8.35 | 80.0k |",
		"| RabbitMQ | 10000 | 100000 | 90.0 s | 111 | 120.0 → 750.0 MiB | 64.50 | 4000 |",
		"| amqp-topology-10k (16 B) | ferrymq | 1 | 0 | 0 | 0 | 0 |",
	)
	if t.Failed() {
		t.Log(out)
	}

	// A broker that reused freed memory: the cell says so.
	rep.results[0].RSSPerQueueKiB = -0.5
	buf.Reset()
	rep.write(&buf)
	reportHas(t, buf.String(), "| -0.50 (RSS fell: not meaningful) |")
}

func TestTopologyPlannedOnce(t *testing.T) {
	cfg := &config{amqpURL: "amqp://x/", mqttURL: ""}
	plan, err := makePlan("all", cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range plan {
		if p.sc.name == topologyName {
			n++
			if p.size < topoHeader {
				t.Errorf("planned at %d B, below the %d B it needs", p.size, topoHeader)
			}
		}
	}
	if n != 1 {
		t.Fatalf("all plans %s %d times", topologyName, n)
	}
}

func TestTopoReceiver(t *testing.T) {
	r := newTestRun(1, 1)
	recv := &topoReceiver{st: r.streams[0]}
	body := func(seq uint32, target int) []byte {
		b := make([]byte, 16)
		putHeader(b, seq, 0, r.nowUs())
		binary.LittleEndian.PutUint32(b[headerSize:], uint32(target))
		return b
	}
	var wg sync.WaitGroup
	for q := range 4 { // consumers of queues 0..3, concurrently
		h := recv.handler(q)
		wg.Go(func() {
			for seq := uint32(q); seq < 400; seq += 4 {
				h(body(seq, q))
			}
		})
	}
	wg.Wait()
	recv.handler(1)(body(400, 2))    // a delivery to the wrong queue
	recv.handler(1)([]byte("short")) // and one without a target
	recv.handler(3)(body(7, 3))      // a duplicate
	r.pubs[0].published.Store(400)
	r.pubs[0].allAcked = true
	var res result
	r.verify(&res)
	r.finish(&res)
	if !res.OK || res.Received != 400 || res.Lost != 0 || res.Dup != 1 || recv.misrouted.Load() != 2 {
		t.Fatalf("ok=%v received=%d lost=%d dup=%d misrouted=%d error=%q", res.OK, res.Received, res.Lost, res.Dup, recv.misrouted.Load(), res.Error)
	}
}
