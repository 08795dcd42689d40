package amqp

import (
	"bufio"
	"context"
	"encoding/binary"
	"net"
	"strconv"
	"testing"

	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// rawClient speaks just enough AMQP to drive the server at full speed:
// frames are pre-encoded and written in batches, as a fast client would.
type rawClient struct {
	nc net.Conn
	r  *wire.Reader
	w  *bufio.Writer
}

func dialRaw(tb testing.TB, addr string) *rawClient {
	tb.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	c := &rawClient{nc: nc, r: wire.NewReader(nc), w: bufio.NewWriterSize(nc, 64<<10)}
	c.r.SetMaxFrameSize(DefaultFrameMax)
	c.w.WriteString(wire.ProtocolHeader)
	c.send(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	c.send(0, &wire.ConnectionTuneOk{ChannelMax: 2047, FrameMax: DefaultFrameMax})
	c.send(0, &wire.ConnectionOpen{VirtualHost: "/"})
	c.send(1, &wire.ChannelOpen{})
	c.flush(tb)
	// start, tune, open-ok, channel.open-ok
	for range 4 {
		c.method(tb)
	}
	return c
}

func (c *rawClient) send(ch uint16, m wire.Method) {
	c.w.Write(wire.AppendMethodFrame(nil, ch, m))
}

func (c *rawClient) flush(tb testing.TB) {
	if err := c.w.Flush(); err != nil {
		tb.Fatal(err)
	}
}

// method reads frames until a method frame and returns its ids.
func (c *rawClient) method(tb testing.TB) (uint16, uint16) {
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			tb.Fatal(err)
		}
		if f.Type == wire.FrameMethod {
			return binary.BigEndian.Uint16(f.Payload), binary.BigEndian.Uint16(f.Payload[2:])
		}
	}
}

// BenchmarkServerPublishConsume is one publisher -> one consumer through a
// queue over loopback TCP, manual acks (multiple, every 100) with prefetch
// 1000: frame read -> route -> enqueue -> deliver -> write.
func BenchmarkServerPublishConsume(b *testing.B) {
	for _, size := range []int{16, 1024} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			broker := core.NewBroker(core.Options{})
			defer broker.Close()
			srv := NewServer(broker, Config{})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go srv.Serve(ln)
			defer srv.Shutdown(context.Background())
			addr := ln.Addr().String()

			cons := dialRaw(b, addr)
			cons.send(1, &wire.QueueDeclare{Queue: "bench"})
			cons.send(1, &wire.BasicQos{PrefetchCount: 1000})
			cons.send(1, &wire.BasicConsume{Queue: "bench", ConsumerTag: "c"})
			cons.flush(b)
			for range 3 {
				cons.method(b)
			}
			pub := dialRaw(b, addr)

			var one []byte
			one = wire.AppendMethodFrame(one, 1, &wire.BasicPublish{RoutingKey: "bench"})
			one = wire.AppendContentHeaderFrame(one, 1, wire.ClassBasic, uint64(size), &core.Properties{})
			one = wire.AppendBodyFrames(one, 1, make([]byte, size), DefaultFrameMax)

			got := make(chan error, 1)
			go func() {
				var m wire.BasicDeliver
				for n := 0; n < b.N; {
					f, err := cons.r.ReadFrame()
					if err != nil {
						got <- err
						return
					}
					if f.Type != wire.FrameMethod {
						continue
					}
					m.Decode(f.Payload[4:])
					if n++; n%100 == 0 || n == b.N {
						cons.w.Write(wire.AppendMethodFrame(nil, 1, &wire.BasicAck{DeliveryTag: m.DeliveryTag, Multiple: true}))
						cons.w.Flush()
					}
				}
				got <- nil
			}()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pub.w.Write(one)
			}
			pub.flush(b)
			if err := <-got; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			pub.nc.Close()
			cons.nc.Close()
		})
	}
}
