package core

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// iotTopicBindings returns n bindings shaped like an IoT deployment: mostly
// one queue per device (sensors.<site>.<device>.temp), plus a per-site '*'
// subscriber every 100 bindings, a per-site '#' one every 1000 and an
// everything-alarm one every 10000.
func iotTopicBindings(n int) []*Binding {
	const sites = 100
	bs := make([]*Binding, 0, n)
	for i := range n {
		// Wildcard subscribers rotate over the sites; i%sites would put them
		// all on one site.
		wsite := (i / 100) % sites
		var key string
		switch {
		case i%10_000 == 9_998:
			key = "#.alarm"
		case i%1000 == 999:
			key = fmt.Sprintf("sensors.site%d.#", wsite)
		case i%100 == 97:
			key = fmt.Sprintf("sensors.site%d.*.temp", wsite)
		default:
			key = fmt.Sprintf("sensors.site%d.dev%d.temp", i%sites, i)
		}
		bs = append(bs, qbind(fmt.Sprint("q", i), key, nil))
	}
	return bs
}

// iotKeys are routing keys for devices that exist in iotTopicBindings(n),
// with one in eight an alarm key that only the '#' patterns catch.
func iotKeys(n int) []string {
	r := rand.New(rand.NewPCG(5, 6))
	keys := make([]string, 1024)
	for i := range keys {
		dev := r.IntN(n)
		suffix := "temp"
		if i%8 == 0 {
			suffix = "alarm"
		}
		keys[i] = fmt.Sprintf("sensors.site%d.dev%d.%s", dev%100, dev, suffix)
	}
	return keys
}

func BenchmarkTopicMatch(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			m := newMatcher("topic")
			for _, bd := range iotTopicBindings(n) {
				m.add(bd)
			}
			keys := iotKeys(n)
			hits := 0
			visit := func(*Binding) { hits++ }
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				m.match(keys[i&1023], nil, visit)
			}
			b.ReportMetric(float64(hits)/float64(b.N), "visits/op")
		})
	}
}

// BenchmarkTopicMatchBacktrack is the '#'-heavy case: patterns with two '#'
// against a 10-word key, so the dedup path runs on every call.
func BenchmarkTopicMatchBacktrack(b *testing.B) {
	m := newMatcher("topic")
	for i := range 1000 {
		m.add(qbind(fmt.Sprint("q", i), fmt.Sprintf("#.w%d.#", i%50), nil))
		m.add(qbind(fmt.Sprint("r", i), fmt.Sprintf("a.#.w%d", i%50), nil))
	}
	key := "a.w1.b.w2.c.w3.d.w4.e.w5"
	visit := func(*Binding) {}
	b.ReportAllocs()
	for b.Loop() {
		m.match(key, nil, visit)
	}
}

func BenchmarkDirectMatch10k(b *testing.B) {
	m := newMatcher("direct")
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("orders.%d", i)
		m.add(qbind(fmt.Sprint("q", i), keys[i], nil))
		if i%10 == 0 { // some keys fan out to two queues
			m.add(qbind(fmt.Sprint("audit", i), keys[i], nil))
		}
	}
	visit := func(*Binding) {}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m.match(keys[i%len(keys)], nil, visit)
	}
}

func BenchmarkFanoutMatch100(b *testing.B) {
	m := newMatcher("fanout")
	for i := range 100 {
		m.add(qbind(fmt.Sprint("q", i), "", nil))
	}
	visit := func(*Binding) {}
	b.ReportAllocs()
	for b.Loop() {
		m.match("k", nil, visit)
	}
}

func BenchmarkHeadersMatch1k(b *testing.B) {
	m := newMatcher("headers")
	for i := range 1000 {
		mode := "all"
		if i%4 == 0 {
			mode = "any"
		}
		m.add(qbind(fmt.Sprint("q", i), "", Table{
			"x-match": mode,
			"site":    fmt.Sprint("s", i%50),
			"type":    fmt.Sprint("t", i%20),
		}))
	}
	headers := Table{"site": "s7", "type": "t7", "priority": int32(3), "x-trace": "abc"}
	hits := 0
	visit := func(*Binding) { hits++ }
	b.ReportAllocs()
	for b.Loop() {
		m.match("", headers, visit)
	}
	b.ReportMetric(float64(hits)/float64(b.N), "visits/op")
}

// BenchmarkChurn adds and removes one binding per op against a populated
// index: the cost of queue.bind/queue.unbind (and of MQTT subscribe churn).
func BenchmarkChurn(b *testing.B) {
	for _, kind := range []string{"topic", "direct", "headers"} {
		b.Run(kind, func(b *testing.B) {
			m := newMatcher(kind)
			for _, bd := range iotTopicBindings(100_000) {
				m.add(bd)
			}
			churn := make([]*Binding, 1024)
			for i := range churn {
				churn[i] = qbind(fmt.Sprint("tmp", i), fmt.Sprintf("sensors.site%d.*.dev%d.#", i%7, i), Table{"x-match": "any", "k": int32(i)})
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				bd := churn[i&1023]
				m.add(bd)
				m.remove(bd)
			}
		})
	}
}
