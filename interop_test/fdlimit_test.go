//go:build linux

package interop_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

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
