package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestDialPlanSources(t *testing.T) {
	p, err := newDialPlan("127.0.0.1:1883", 100000)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[int]string{
		0: "", perSource - 1: "",
		perSource: "127.0.0.2", 2*perSource - 1: "127.0.0.2",
		99999:           "127.0.0.10",
		254 * perSource: "127.0.0.255",
		255 * perSource: "127.0.1.0",
	}
	for i, want := range cases {
		got := ""
		if a := p.source(i); a != nil {
			got = a.IP.String()
		}
		if got != want {
			t.Errorf("source(%d) = %q, want %q", i, got, want)
		}
	}
	// Every block of perSource connections has an address of its own.
	seen := map[string]bool{}
	for k := 1; k < 2000; k++ {
		ip := p.source(k * perSource).IP
		if !ip.IsLoopback() || seen[ip.String()] {
			t.Fatalf("block %d: source %v is not a new loopback address", k, ip)
		}
		seen[ip.String()] = true
	}
	if p.dialer(0).LocalAddr != nil || p.dialer(0).Control != nil {
		t.Error("the first connections should leave the source to the kernel")
	}
	if d := p.dialer(perSource); d.LocalAddr == nil || d.Control == nil {
		t.Error("a spread connection has no source address or no IP_BIND_ADDRESS_NO_PORT")
	}

	// Elsewhere than IPv4 loopback there is one source address: more
	// connections than ephemeral ports are refused up front.
	other, err := newDialPlan("192.0.2.1:1883", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if other.source(50000) != nil {
		t.Error("a non-loopback destination got a chosen source address")
	}
	if _, err := newDialPlan("192.0.2.1:1883", 100000); err == nil || !strings.Contains(err.Error(), "ephemeral ports") {
		t.Errorf("100000 connections to a non-loopback address: err = %v", err)
	}
}

func TestParseNoFile(t *testing.T) {
	limits := []byte("Limit                     Soft Limit           Hard Limit           Units     \n" +
		"Max processes             95432                95432                processes \n" +
		"Max open files            1024                 20000                files     \n")
	if n, err := parseNoFile(limits); err != nil || n != 1024 {
		t.Fatalf("parseNoFile = %d, %v; want 1024", n, err)
	}
	if _, err := parseNoFile([]byte("Max processes 1 1 processes\n")); err == nil {
		t.Fatal("no error without a Max open files line")
	}
	if n, err := procNoFile(syscall.Getpid()); err != nil || n == 0 {
		t.Fatalf("procNoFile(self) = %d, %v", n, err)
	}
}

func TestRaiseNoFile(t *testing.T) {
	var before syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &before); err != nil {
		t.Fatal(err)
	}
	lim, err := raiseNoFile(0)
	if err != nil || lim.soft != lim.hard || lim.hard != before.Max || lim.hardErr != nil {
		t.Fatalf("raiseNoFile(0) = %+v, %v; hard limit was %d", lim, err, before.Max)
	}
	// Asking for more raises the hard limit when permitted, and otherwise
	// keeps soft = hard and says why.
	lim, err = raiseNoFile(before.Max + 1)
	if err != nil || lim.soft != lim.hard {
		t.Fatalf("raiseNoFile(hard+1) = %+v, %v", lim, err)
	}
	if lim.hard <= before.Max && lim.hardErr == nil {
		t.Fatalf("raiseNoFile(hard+1) = %+v: not raised and no reason", lim)
	}
}

func TestLargeName(t *testing.T) {
	for n, want := range map[int]string{100000: "idle-mqtt-conns-100k", 12345: "idle-mqtt-conns-12345"} {
		if got := largeName(n); got != want {
			t.Errorf("largeName(%d) = %q, want %q", n, got, want)
		}
	}
	p := planned{sc: findScenario("idle-mqtt-conns"), conns: 100000}
	if p.name() != "idle-mqtt-conns-100k" || variant(p) != "idle-mqtt-conns-100k" || p.connsOr(10) != 100000 {
		t.Errorf("large cell: name %q variant %q conns %d", p.name(), variant(p), p.connsOr(10))
	}
	p.conns = 0
	if p.name() != "idle-mqtt-conns" || p.connsOr(10) != 10 {
		t.Errorf("plain cell: name %q conns %d", p.name(), p.connsOr(10))
	}
}

// fakeMQTT accepts connections and answers each CONNECT with a successful
// CONNACK; after closeAfter connections (when > 0) it resets the others.
func fakeMQTT(t *testing.T, closeAfter int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if closeAfter > 0 && n >= closeAfter {
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				r := bufio.NewReader(c)
				if _, _, err := readMQTTPacket(r); err != nil {
					return
				}
				c.Write([]byte{0x20, 2, 0, 0})
			}()
		}
	}()
	return "tcp://" + ln.Addr().String()
}

func TestIdleMQTT(t *testing.T) {
	defer func(d time.Duration) { idleSettle = d }(idleSettle)
	idleSettle = 10 * time.Millisecond
	sc := findScenario("idle-mqtt-conns")

	cfg := &config{mqttURL: fakeMQTT(t, 0), mqttVersion: 3, conns: 200, broker: "fake", pid: syscall.Getpid()}
	res := runScenario(context.Background(), cfg, sc, 0)
	if !res.OK || res.Opened != 200 || res.Conns != 200 || res.OpenSeconds <= 0 || res.BrokerNoFile == 0 || res.RSSEndKiB == 0 {
		t.Fatalf("against a working broker: %+v", res)
	}

	cfg.mqttURL = fakeMQTT(t, 150)
	res = runScenario(context.Background(), cfg, sc, 0)
	if res.OK || res.Opened != 150 {
		t.Fatalf("against a broker that drops connections after 150: %+v", res)
	}
	for _, want := range []string{"opened 150 of 200 connections", "connection 1", "see its log"} {
		if !strings.Contains(res.Error, want) {
			t.Errorf("error %q does not say %q", res.Error, want)
		}
	}
	if res.RSSPerConnKiB == 0 && res.RSSEndKiB == 0 {
		t.Error("the memory of the connections that opened was not measured")
	}

	// A broker that may open fewer files than --conns fails up front.
	cfg.mqttURL = fakeMQTT(t, 0)
	cfg.conns = 1 << 30
	res = runScenario(context.Background(), cfg, sc, 0)
	if res.OK || !strings.Contains(res.Error, "file descriptors") {
		t.Fatalf("more connections than file descriptors: %+v", res)
	}
}

// reportHas fails t for each of wants that the report out lacks.
func reportHas(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestReportLargeCell(t *testing.T) {
	idle := planned{sc: findScenario("idle-mqtt-conns")}
	large := planned{sc: idle.sc, conns: 100000}
	rep := &report{
		started: time.Now(), cfg: &config{conns: 10000, mqttVersion: 3},
		brokers: []*brokerProc{{name: "ferrymq"}, {name: "rabbitmq"}, {name: "mosquitto"}},
		plan:    []planned{idle, large},
		results: []result{
			{Scenario: "idle-mqtt-conns-100k", Broker: "ferrymq", Conns: 100000, Opened: 100000, OpenSeconds: 20, MsgPerSec: 5000, RSSPerConnKiB: 29.5, RSSBeforeKiB: 17000, RSSEndKiB: 2967000, OK: true},
			{Scenario: "idle-mqtt-conns-100k", Broker: "mosquitto", Conns: 100000, Opened: 50000, OpenSeconds: 9, MsgPerSec: 5555, RSSPerConnKiB: 0.75, RSSBeforeKiB: 8000, RSSEndKiB: 45000, Error: "opened 50000 of 100000 connections in 9.0s; connection 50000: boom"},
			{Scenario: "idle-mqtt-conns", Broker: "ferrymq", Conns: 10000, Opened: 10000, RSSPerConnKiB: 29, RSSEndKiB: 300000, OK: true},
			{Scenario: "idle-mqtt-conns", Broker: "rabbitmq", Conns: 10000, Opened: 10000, RSSPerConnKiB: 184, RSSEndKiB: 1900000, OK: true},
			{Scenario: "idle-mqtt-conns", Broker: "mosquitto", Conns: 10000, Opened: 10000, RSSPerConnKiB: 0.7, RSSEndKiB: 15000, OK: true},
		},
		large: &large, largeBrokers: []string{"ferrymq", "mosquitto"},
	}
	var buf bytes.Buffer
	rep.write(&buf)
	out := buf.String()
	reportHas(t, out,
		"| idle-mqtt-conns | KiB RSS / conn | 29.00 | 184.00 | 0.70 |",
		"| idle-mqtt-conns-100k | KiB RSS / conn | 29.50 | – | 0.75 (only 50000 of 100000 opened) ⚠ |",
		"against ferrymq and Mosquitto, each started afresh",
		"RabbitMQ is left out (`--conns-large-brokers`): at 184 KiB per connection (idle-mqtt-conns) it would need 17.5 GiB",
		"| idle-mqtt-conns-100k | ferrymq | 100000 of 100000 | 20.0 s | 5000 |",
		"| idle-mqtt-conns-100k | Mosquitto | 50000 of 100000 | 9.0 s |",
		"**FAIL**: opened 50000 of 100000",
	)
	// The idle table follows the plan: the 10,000-connection runs first.
	if strings.Index(out, "| idle-mqtt-conns | ferrymq | 10000 of 10000") > strings.Index(out, "| idle-mqtt-conns-100k | ferrymq | 100000") {
		t.Error("idle table out of plan order")
	}
	if t.Failed() {
		t.Log(out)
	}

	// Not run (RLIMIT_NOFILE): a row that says so.
	rep.results = rep.results[2:]
	rep.largeNotRun = "idle-mqtt-conns-100k not run: RLIMIT_NOFILE is 20000"
	buf.Reset()
	rep.write(&buf)
	out = buf.String()
	reportHas(t, out,
		"| idle-mqtt-conns-100k | KiB RSS / conn | not run | not run | not run | – | ≤ 8 KiB per connection | – (not run: see the note above) |")
	if strings.Contains(out, "each started afresh") {
		t.Error("the report describes a large run that did not run")
	}
	if t.Failed() {
		t.Log(out)
	}
}
