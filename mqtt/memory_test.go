package mqtt

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// TestAnnouncedPacketCostsNothing opens hundreds of raw connections that
// each send a PUBLISH whose fixed header announces 16 MiB and then only a
// few bytes of it: the broker's memory (its own reading, core.MemoryInUse)
// must grow by what arrived and the connections, not by what the headers
// announced (500 guest connections took RSS to 3 GB before).
func TestAnnouncedPacketCostsNothing(t *testing.T) {
	const (
		conns     = 300
		announced = 16 << 20
		remaining = announced - 5 // with the fixed header: just under 16 MiB
	)
	b := startTestBroker(t, testBrokerOpts{})
	runtime.GC()
	before := core.MemoryInUse()
	cs := make([]net.Conn, conns)
	var wg sync.WaitGroup
	for i := range cs {
		wg.Go(func() {
			c, _ := rawConnect(t, b.MQTTAddr, 4, fmt.Sprintf("announce-%d", i))
			// PUBLISH QoS 0 to "a/b": topic (5 bytes) and 2 of the
			// announced payload's bytes; the whole packet just under
			// the 16 MiB maximum packet size.
			pk := append([]byte{0x30}, mqttVarint(remaining)...)
			pk = append(pk, 0, 3, 'a', '/', 'b', 'h', 'i')
			if _, err := c.Write(pk); err != nil {
				t.Error(err)
			}
			cs[i] = c
		})
	}
	wg.Wait()
	waitReadAll(t, b.MQTTAddr)
	runtime.GC()
	grown := core.MemoryInUse() - before
	perConn := grown / conns
	t.Logf("%d connections each announcing a %d MiB PUBLISH: memory in use grew by %.1f MiB (%.1f KiB per connection)",
		conns, announced>>20, float64(grown)/(1<<20), float64(perConn)/1024)
	if perConn > 256<<10 {
		t.Fatalf("memory in use grew by %d bytes per connection that sent 7 bytes of an announced %d: packets are reserved before they arrive", perConn, announced)
	}

	// A packet still arrives whole when its bytes come: subscribe, then
	// complete one of them.
	sub := dialRaw(t, b.MQTTAddr, rawOpts{Version: 4, ClientID: "announce-sub"})
	sub.subscribe(t, 0, rawSub{Filter: "a/b"})
	rest := make([]byte, remaining-5-2)
	cs[0].SetWriteDeadline(time.Now().Add(20 * time.Second))
	if _, err := cs[0].Write(rest); err != nil {
		t.Fatal(err)
	}
	// Not the usual wait for one packet: 16 MiB are copied several times
	// on the way (read buffer, decoded packet, message, encoded PUBLISH),
	// which with -race on a loaded 2-core machine took 4 to 9.4 s from
	// this write (about 3 s of CPU), and once over 10 s.
	p := sub.nextPubWithin(t, "the completed 16 MiB PUBLISH", time.Minute)
	if len(p.Payload) != remaining-5 || p.Topic != "a/b" {
		t.Fatalf("got a PUBLISH to %q with %d bytes, want a/b with %d", p.Topic, len(p.Payload), remaining-5)
	}
}

// waitReadAll waits until the broker listening on addr has read every
// byte its clients sent: no socket of its port has a receive queue in
// /proc/net/tcp. A test of what reading costs cannot otherwise know that
// the broker has read what it wrote.
func waitReadAll(t testing.TB, addr string) {
	t.Helper()
	_, portText, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portText)
	local := fmt.Sprintf(":%04X", port)
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		f, err := os.Open("/proc/net/tcp")
		if err != nil {
			t.Fatalf("cannot tell what the broker has read: %v", err)
		}
		pending := 0
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			// sl local_address rem_address st tx_queue:rx_queue ...
			if len(fs) < 5 || !strings.HasSuffix(fs[1], local) {
				continue
			}
			if _, rx, ok := strings.Cut(fs[4], ":"); ok && strings.TrimLeft(rx, "0") != "" {
				pending++
			}
		}
		f.Close()
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the broker's sockets still hold unread bytes after 20s", pending)
		}
		<-tick.C
	}
}
