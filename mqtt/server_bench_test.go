package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferrymq/ferrymq/core"
)

// startServer serves MQTT on a free port for a test or benchmark.
func startServer(b testing.TB) string {
	_, addr := newTestServer(b, Config{})
	return addr
}

// newTestServer serves MQTT with cfg on a free port, on a broker of its
// own, until the test ends.
func newTestServer(b testing.TB, cfg Config) (*Server, string) {
	b.Helper()
	br := core.NewBroker(core.Options{})
	b.Cleanup(br.Close)
	return serveMQTT(b, br, cfg)
}

// serveMQTT serves MQTT with cfg for br on a free port until the test
// ends.
func serveMQTT(b testing.TB, br *core.Broker, cfg Config) (*Server, string) {
	b.Helper()
	s, err := NewServer(br, cfg)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			b.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			b.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return s, ln.Addr().String()
}

func encode(b testing.TB, pk packets.Packet) []byte {
	b.Helper()
	pk.ProtocolVersion = 4
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	}
	if err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// dialMQTT connects an MQTT 3.1.1 client and reads its CONNACK.
func dialMQTT(b testing.TB, addr, id string) (net.Conn, *bufio.Reader) {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}}
	connect.Connect.ProtocolName = []byte("MQTT")
	connect.Connect.Clean = true
	connect.Connect.Keepalive = 600
	connect.Connect.ClientIdentifier = id
	if _, err := c.Write(encode(b, connect)); err != nil {
		b.Fatal(err)
	}
	r := bufio.NewReader(c)
	ack := make([]byte, 4)
	if _, err := io.ReadFull(r, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		b.Fatalf("CONNACK %x: %v", ack, err)
	}
	c.SetDeadline(time.Time{})
	return c, r
}

// BenchmarkPublishDeliver measures the MQTT hot path end to end over
// TCP: PUBLISH (QoS 0, 16 bytes) decoded, routed by core through
// amq.topic, enqueued, delivered and encoded to a subscriber.
func BenchmarkPublishDeliver(b *testing.B) {
	addr := startServer(b)
	sub, subr := dialMQTT(b, addr, "bench-sub")
	defer sub.Close()
	subscribe := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "bench/+/t", Qos: 0}}}
	sub.Write(encode(b, subscribe))
	suback := make([]byte, 5)
	if _, err := io.ReadFull(subr, suback); err != nil || suback[0] != 0x90 {
		b.Fatalf("SUBACK %x: %v", suback, err)
	}
	pub, _ := dialMQTT(b, addr, "bench-pub")
	defer pub.Close()
	one := encode(b, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "bench/1/t", Payload: make([]byte, 16)})
	const batch = 64
	burst := bytes.Repeat(one, batch)

	done := make(chan error, 1)
	go func() {
		// Count PUBLISH packets (type 3) by their fixed headers.
		var fh [2]byte
		body := make([]byte, 256)
		for n := 0; n < b.N; n++ {
			if _, err := io.ReadFull(subr, fh[:]); err != nil {
				done <- err
				return
			}
			if _, err := io.ReadFull(subr, body[:fh[1]]); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	b.ReportAllocs()
	b.SetBytes(16)
	b.ResetTimer()
	for sent := 0; sent < b.N; sent += batch {
		n := min(batch, b.N-sent)
		if _, err := pub.Write(burst[:n*len(one)]); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		b.Fatal("deliveries stopped")
	}
}

// BenchmarkIdleClient opens 2,000 idle MQTT connections per op and
// reports the heap and stacks each costs once parked (the target
// is 8 KiB of RSS per idle connection; ferrybench measures that). Client
// and server share the process, so the figure includes the client's
// net.Conn (a few hundred bytes).
func BenchmarkIdleClient(b *testing.B) {
	const n = 2000
	addr := startServer(b)
	var perConn float64
	for i := range b.N {
		before := heapAndStacks()
		conns := make([]net.Conn, 0, n)
		for j := range n {
			c, _ := dialMQTT(b, addr, fmt.Sprintf("idle-%d-%d", i, j))
			conns = append(conns, c)
		}
		b.StopTimer()
		// Let every client park (linger), then measure what stays.
		time.Sleep(2 * linger)
		perConn += float64(heapAndStacks()-before) / n
		for _, c := range conns {
			c.Close()
		}
		b.StartTimer()
	}
	b.ReportMetric(perConn/float64(b.N), "B/conn")
}

func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC() // and the pooled read buffers, which survive one
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}
