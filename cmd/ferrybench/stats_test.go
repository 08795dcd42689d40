package main

import (
	"bufio"
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

func TestHeaderRoundTrip(t *testing.T) {
	b := make([]byte, 16)
	putHeader(b, 0xdeadbeef, 513, 123456789)
	seq, pub, us, ok := readHeader(b)
	if !ok || seq != 0xdeadbeef || pub != 513 || us != 123456789 {
		t.Fatalf("readHeader = %x %d %d %v", seq, pub, us, ok)
	}
	if _, _, _, ok := readHeader(b[:headerSize-1]); ok {
		t.Fatal("a body shorter than the header was accepted")
	}
}

func TestSeqSet(t *testing.T) {
	var s seqSet
	for _, seq := range []uint32{0, 1, 63, 64, 65, 200000} {
		if s.add(seq) {
			t.Fatalf("add(%d): reported a duplicate on first add", seq)
		}
	}
	if !s.add(64) {
		t.Fatal("add(64) twice: no duplicate reported")
	}
	if s.n != 6 {
		t.Fatalf("n = %d, want 6", s.n)
	}
	if got := s.missingBelow(66); got != 66-5 {
		t.Fatalf("missingBelow(66) = %d, want %d", got, 66-5)
	}
	if got := s.missingBelow(64); got != 64-3 {
		t.Fatalf("missingBelow(64) = %d, want %d", got, 64-3)
	}
	if got := s.countAbove(66); got != 1 {
		t.Fatalf("countAbove(66) = %d, want 1 (200000)", got)
	}
	if got := s.firstMissing(70, 3); len(got) != 3 || got[0] != 2 || got[1] != 3 || got[2] != 4 {
		t.Fatalf("firstMissing = %v, want [2 3 4]", got)
	}
	var full seqSet
	for i := range uint32(200) {
		full.add(i)
	}
	if got := full.firstMissing(300, 2); len(got) != 2 || got[0] != 200 || got[1] != 201 {
		t.Fatalf("firstMissing after a full prefix = %v, want [200 201]", got)
	}
	if got := full.missingIn(&s); got != 200-5 {
		t.Fatalf("missingIn = %d, want %d", got, 200-5)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	if h.quantile(0.5) != 0 {
		t.Fatal("empty histogram: quantile not 0")
	}
	for v := uint64(1); v <= 100000; v++ {
		h.record(v * 1000) // 1 µs .. 100 ms in ns
	}
	for _, c := range []struct{ q, want float64 }{{0.5, 50e6}, {0.99, 99e6}, {0.001, 100e3}} {
		got := h.quantile(c.q)
		if math.Abs(got-c.want)/c.want > 0.01 {
			t.Errorf("quantile(%v) = %.0f, want %.0f ±1%%", c.q, got, c.want)
		}
	}
	if got := h.quantile(1); got != 100e6 {
		t.Errorf("quantile(1) = %.0f, want the max 100e6", got)
	}
	var small histogram
	small.record(5)
	small.record(5)
	if got := small.quantile(0.5); got != 5 {
		t.Errorf("exact small values: quantile = %v, want 5", got)
	}
	var m histogram
	m.merge(&h)
	m.merge(&small)
	if m.total != h.total+2 || m.min != 5 || m.max != h.max {
		t.Errorf("merge: total %d min %d max %d", m.total, m.min, m.max)
	}
}

func TestHistIndexMonotonic(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v += 7 {
		i := histIndex(v)
		if i < prev {
			t.Fatalf("histIndex(%d) = %d < %d", v, i, prev)
		}
		if lo := histLow(i); lo > v || histLow(i+1) <= v {
			t.Fatalf("value %d outside its bucket %d [%d, %d)", v, i, lo, histLow(i+1))
		}
		prev = i
	}
	if i := histIndex(math.MaxUint64); i >= len(histogram{}.counts) {
		t.Fatalf("histIndex(max) = %d, out of range", i)
	}
}

func TestMedian(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median = %v", got)
	}
	if got := median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("median = %v", got)
	}
	if got := median(nil); got != 0 {
		t.Errorf("median(nil) = %v", got)
	}
}

// newTestRun is a run with pubs publishers and streams receivers, as a
// scenario sets one up, without a broker.
func newTestRun(pubs, streams int) *run {
	r := newRun(&config{backlog: 1000, drainIdle: time.Second}, &scenario{name: "test", size: 16}, 16)
	r.addPublishers(pubs)
	for range streams {
		r.addStream("s")
	}
	return r
}

// deliver hands message seq of publisher p to stream s as a broker would.
func deliver(r *run, s, p int, seq uint32) {
	b := make([]byte, 16)
	putHeader(b, seq, uint16(p), r.nowUs())
	r.streams[s].record(b, -1)
}

func TestVerifyCountsLostAndDuplicates(t *testing.T) {
	r := newTestRun(2, 1)
	for p := range 2 {
		r.pubs[p].published.Store(10)
		for seq := range uint32(10) {
			r.pubs[p].ack(seq)
		}
	}
	for seq := range uint32(10) {
		deliver(r, 0, 0, seq)
		if seq != 7 { // publisher 1's message 7 never arrives
			deliver(r, 0, 1, seq)
		}
	}
	deliver(r, 0, 0, 3) // a duplicate
	var res result
	r.verify(&res)
	r.finish(&res)
	if res.Published != 20 || res.Received != 19 || res.Lost != 1 || res.LostConfirmed != 1 || res.Dup != 1 {
		t.Fatalf("published %d received %d lost %d lost confirmed %d dup %d", res.Published, res.Received, res.Lost, res.LostConfirmed, res.Dup)
	}
	if res.OK || !strings.Contains(res.Error, "1 confirmed messages of 1 publishers") || !strings.Contains(res.Error, "publisher 1: first missing sequence numbers [7]") {
		t.Fatalf("a confirmed message went missing, yet ok=%v error=%q", res.OK, res.Error)
	}
}

func TestVerifyUnconfirmedAndQoS0LossesDoNotFail(t *testing.T) {
	r := newTestRun(1, 1)
	r.pubs[0].published.Store(4)
	r.pubs[0].ack(0) // 1..3 were never confirmed
	deliver(r, 0, 0, 0)
	deliver(r, 0, 0, 1)
	var res result
	r.verify(&res)
	r.finish(&res)
	if !res.OK || res.Lost != 2 || res.LostConfirmed != 0 || res.Warning == "" {
		t.Fatalf("unconfirmed loss: ok=%v lost=%d lost confirmed=%d warning=%q error=%q", res.OK, res.Lost, res.LostConfirmed, res.Warning, res.Error)
	}

	r = newTestRun(1, 1)
	r.lossyOK = true
	r.pubs[0].published.Store(3)
	r.pubs[0].allAcked = true
	deliver(r, 0, 0, 2)
	res = result{}
	r.verify(&res)
	r.finish(&res)
	if !res.OK || res.Lost != 2 {
		t.Fatalf("QoS 0 loss: ok=%v lost=%d error=%q", res.OK, res.Lost, res.Error)
	}
}

func TestVerifyEveryStreamNeedsEveryMessage(t *testing.T) {
	r := newTestRun(1, 3) // fanout: three queues
	r.pubs[0].published.Store(2)
	r.pubs[0].allAcked = true // a clean channel close
	for s := range 3 {
		deliver(r, s, 0, 0)
		if s != 2 {
			deliver(r, s, 0, 1)
		}
	}
	var res result
	r.verify(&res)
	r.finish(&res)
	if res.OK || res.Expected != 6 || res.Received != 5 || res.LostConfirmed != 1 {
		t.Fatalf("ok=%v expected=%d received=%d lost confirmed=%d", res.OK, res.Expected, res.Received, res.LostConfirmed)
	}
}

func TestVerifyUnexpectedMessagesFail(t *testing.T) {
	r := newTestRun(1, 1)
	r.pubs[0].published.Store(1)
	r.pubs[0].allAcked = true
	deliver(r, 0, 0, 0)
	deliver(r, 0, 0, 5) // never published
	r.streams[0].record([]byte("short"), -1)
	var res result
	r.verify(&res)
	r.finish(&res)
	if res.OK || res.Unexpected != 2 {
		t.Fatalf("ok=%v unexpected=%d", res.OK, res.Unexpected)
	}
}

func TestParseProc(t *testing.T) {
	status := []byte("Name:\tferrymq\nVmPeak:\t  9999 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n")
	if got, err := parseVmRSS(status); err != nil || got != 12345 {
		t.Fatalf("parseVmRSS = %d, %v", got, err)
	}
	// The command name may hold spaces and parentheses.
	stat := []byte("4242 (beam (x) smp) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 30 0 1000 0 0")
	if got, err := parseCPUTicks(stat); err != nil || got != 325 {
		t.Fatalf("parseCPUTicks = %d, %v; want 325", got, err)
	}
	if _, err := parseCPUTicks([]byte("4242 (x) S 1")); err == nil {
		t.Fatal("short stat line accepted")
	}
	a := procStat{cpuTicks: 100, at: time.Unix(0, 0)}
	b := procStat{cpuTicks: 250, at: time.Unix(2, 0)}
	if got := cpuPercent(a, b); got != 75 {
		t.Fatalf("cpuPercent = %v, want 75", got)
	}
}

func TestMQTTConnectPacket(t *testing.T) {
	pkt := mqttConnectPacket(4, "c1", 600, mqttTarget{})
	want := []byte{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0x02, 0x58, 0, 2, 'c', '1'}
	if !bytes.Equal(pkt, want) {
		t.Fatalf("3.1.1 CONNECT = % x\nwant             % x", pkt, want)
	}
	pkt = mqttConnectPacket(5, "c1", 600, mqttTarget{hasUser: true, user: "u", password: "p"})
	typ, body, err := readMQTTPacket(bufio.NewReader(bytes.NewReader(pkt)))
	if err != nil || typ != 0x10 {
		t.Fatalf("read back: %x %v", typ, err)
	}
	if body[6] != 5 || body[7] != 0xc2 || body[10] != 0 {
		t.Fatalf("5 CONNECT: level %d flags %x props %d", body[6], body[7], body[10])
	}
	if !bytes.HasSuffix(body, []byte{0, 1, 'u', 0, 1, 'p'}) {
		t.Fatalf("5 CONNECT: no user and password at the end: % x", body)
	}
	// A remaining length over 127 takes two bytes.
	long := mqttConnectPacket(4, strings.Repeat("x", 200), 0, mqttTarget{})
	if long[1]&0x80 == 0 {
		t.Fatal("remaining length > 127 encoded in one byte")
	}
	if _, body, err := readMQTTPacket(bufio.NewReader(bytes.NewReader(long))); err != nil || len(body) != len(long)-3 {
		t.Fatalf("long CONNECT read back: %d bytes, %v", len(body), err)
	}
}

func TestMakePlan(t *testing.T) {
	cfg := &config{amqpURL: "amqp://x/", mqttURL: "tcp://x:1", amqpsURL: "amqps://x/", mqttsURL: "ssl://x:2", httpURL: "http://x:3"}
	plan, err := makePlan("all", cfg)
	if err != nil {
		t.Fatal(err)
	}
	inAll := 0
	for _, sc := range scenarios {
		if !sc.explicit {
			inAll++
		}
	}
	if len(plan) != inAll+1 {
		t.Fatalf("all: %d runs, want one per scenario (but the explicit ones) plus amqp-1to1 at 1 KiB", len(plan))
	}
	// Without TLS URLs the -tls scenarios and tls-handshakes are left out.
	cfg.amqpsURL, cfg.mqttsURL = "", ""
	plan, err = makePlan("all", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plan {
		if p.sc.tls {
			t.Fatalf("no TLS URL, yet %s is planned", p.sc.name)
		}
	}
	if plan[0].sc.name != "amqp-1to1" || plan[0].size != 16 || plan[1].sc.name != "amqp-1to1" || plan[1].size != 1024 {
		t.Fatalf("all starts with %s/%d, %s/%d", plan[0].sc.name, plan[0].size, plan[1].sc.name, plan[1].size)
	}
	cfg.amqpURL = ""
	plan, err = makePlan("all", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range plan {
		if p.sc.amqp {
			t.Fatalf("no AMQP URL, yet %s is planned", p.sc.name)
		}
	}
	cfg.size = 100
	plan, _ = makePlan("mqtt-qos0-1to1", cfg)
	if len(plan) != 1 || plan[0].size != 100 {
		t.Fatalf("--size not applied: %+v", plan)
	}
	if _, err := makePlan("nope", cfg); err == nil {
		t.Fatal("unknown scenario accepted")
	}
}

func TestBodiesDoNotAlias(t *testing.T) {
	b := newBodies(16, false)
	x, y := b.next(), b.next()
	x[0], y[0] = 1, 2
	if x[0] != 1 || cap(x) != 16 {
		t.Fatal("two bodies share memory")
	}
	r := newBodies(16, true)
	if &r.next()[0] != &r.next()[0] {
		t.Fatal("reuse: not the same buffer")
	}
}
