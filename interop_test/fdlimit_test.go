//go:build linux

package interop_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sys/unix"
)

// TestOutOfFileDescriptors runs the broker out of file descriptors (its
// RLIMIT_NOFILE lowered to what it has open plus a few) with idle connects
// on every plaintext listener, as an attacker or a reconnect storm would.
// Accept then fails with EMFILE; the broker must log that once per burst,
// keep every listener accepting as descriptors come back, close each idle
// connection at its connect deadline (10 s) as it would with descriptors to
// spare, and serve new clients of every kind afterwards.
func TestOutOfFileDescriptors(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about 25 s; CI runs it")
	}
	b := StartBroker(t)
	pid := b.Cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	const headroom = 25
	lim := &unix.Rlimit{Cur: uint64(len(fds) + headroom), Max: uint64(len(fds) + headroom)}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, lim, nil); err != nil {
		t.Fatalf("lower the broker's RLIMIT_NOFILE: %v", err)
	}

	// More connects than descriptors: the rest wait in the kernel's backlog
	// until the broker has closed others at their deadline.
	const perListener = headroom*2/3 + 1
	var flood []net.Conn
	for _, addr := range []string{b.Addr, b.MQTTAddr, b.MQTTWSAddr} {
		for range perListener {
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Fatalf("connect %s: %v", addr, err)
			}
			flood = append(flood, c)
		}
	}
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()

	waitLog(t, b, "accept failed")
	if !b.running() {
		t.Fatalf("broker exited when out of file descriptors")
	}

	// Each idle connection is closed by the broker: the accepted ones at
	// their deadline, the waiting ones once accepted in turn: 51 connections
	// through 25 descriptors is about two rounds of 10 s.
	deadline := time.Now().Add(90 * time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, len(flood))
	for i, c := range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(deadline)
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				errs <- fmt.Errorf("idle connection %d (%s) still open after 90 s", i, c.RemoteAddr())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !b.running() {
		t.Fatalf("broker exited")
	}
	waitLog(t, b, "accepting connections again")
	if n := strings.Count(b.Output(), "accept failed"); n > 3*4 {
		t.Errorf("%d accept-failure WARN lines: want about one per burst per listener", n)
	}

	// Every kind of client is served again.
	conn, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatalf("AMQP after the flood: %v", err)
	}
	conn.Close()
	mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "after-flood"})
	ws := dialWS(t, b.MQTTWSAddr)
	mqtttest.ConnectV5(t, "", mqtttest.V5Options{ClientID: "after-flood-ws", Conn: ws})
}

// TestConnectionLimitFollowsNOFILE starts the broker under RLIMIT_NOFILE 300
// with no max_connections: its node connection limit is 300 less the
// reserve of 64 descriptors, 236, shown in /api/nodes as sockets_total. The
// client past it is refused with the protocol's limit answer (AMQP 530
// NOT_ALLOWED, MQTT 5 CONNACK 0x97, MQTT 3.1.1 0x03) while the broker still
// has descriptors to spare, so accept never fails with EMFILE; closing
// connections makes room for new ones.
func TestConnectionLimitFollowsNOFILE(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatalf("prlimit (util-linux) starts the broker with a low RLIMIT_NOFILE: %v", err)
	}
	const nofile, limit = 300, 300 - 64
	b := startBrokerVia(t, []string{prlimit, fmt.Sprintf("--nofile=%d:%d", nofile, nofile), "--"})
	line := fmt.Sprintf(`msg="connection limit" max_connections=%d from=open_file_limit open_file_limit=%d sockets_limit=%d`, limit, nofile, limit)
	if !strings.Contains(b.Output(), line) {
		t.Fatalf("no %s in the log", line)
	}
	node := func() map[string]any {
		var nodes []map[string]any
		apiJSON(t, b, "GET", "/api/nodes", nil, &nodes)
		if len(nodes) != 1 {
			t.Fatalf("/api/nodes: %v", nodes)
		}
		return nodes[0]
	}
	if n := node(); n["fd_total"] != float64(nofile) || n["sockets_total"] != float64(limit) || n["sockets_used"] != float64(0) {
		t.Fatalf("/api/nodes: fd_total %v sockets_total %v sockets_used %v; want %d, %d, 0", n["fd_total"], n["sockets_total"], n["sockets_used"], nofile, limit)
	}

	// Up to the limit, half AMQP and half MQTT 5, each logged in.
	var amqpConns []*amqp.Connection
	var mqttConns []*mqtttest.V5Client
	defer func() {
		for _, c := range amqpConns {
			c.Close()
		}
	}()
	id := 0
	open := func(n int) {
		t.Helper()
		for range n {
			id++
			if id%2 == 0 {
				c, err := amqp.Dial(b.URL)
				if err != nil {
					t.Fatalf("AMQP connection %d of %d: %v", id, limit, err)
				}
				amqpConns = append(amqpConns, c)
				continue
			}
			mqttConns = append(mqttConns, mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: fmt.Sprintf("fd-%d", id)}))
		}
	}
	refused := func() {
		t.Helper()
		_, err := amqp.Dial(b.URL)
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.NotAllowed || !strings.Contains(ae.Reason, fmt.Sprintf("node connection limit (%d) is reached", limit)) {
			t.Fatalf("AMQP connection past the limit: %v; want 530 NOT_ALLOWED, node connection limit (%d) is reached", err, limit)
		}
		_, ca, err := mqtttest.DialV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "fd-over-5"})
		if err == nil || ca == nil || ca.ReasonCode != 0x97 {
			t.Fatalf("MQTT 5 connection past the limit: CONNACK %+v, %v; want reason 0x97 quota exceeded", ca, err)
		}
		_, rc, err := mqtttest.DialV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "fd-over-3"})
		if err == nil || rc != 0x03 {
			t.Fatalf("MQTT 3.1.1 connection past the limit: return code %#x, %v; want 0x03 server unavailable", rc, err)
		}
	}
	open(limit)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", b.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d clients: the broker holds %d of its %d descriptors", limit, len(fds), nofile)
	if own := len(fds) - limit; own >= nofile-limit {
		t.Errorf("the broker holds %d descriptors besides its clients: more than the reserve of %d", own, nofile-limit)
	}
	refused()
	if n := node(); n["sockets_used"] != float64(limit) {
		t.Fatalf("/api/nodes sockets_used %v; want %d", n["sockets_used"], limit)
	}

	// Room again once some clients have gone.
	const gone = 6
	for _, c := range amqpConns[:gone/2] {
		c.Close()
	}
	amqpConns = amqpConns[gone/2:]
	for _, c := range mqttConns[:gone/2] {
		c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	}
	deadline := time.Now().Add(mgmtWait)
	for node()["sockets_used"] != float64(limit-gone) {
		if time.Now().After(deadline) {
			t.Fatalf("/api/nodes sockets_used %v %v after %d clients left; want %d", node()["sockets_used"], mgmtWait, gone, limit-gone)
		}
		time.Sleep(20 * time.Millisecond)
	}
	open(gone)
	refused()

	if strings.Contains(b.Output(), "accept failed") {
		t.Errorf("the broker ran out of descriptors at accept before its connection limit")
	}
}
