package mqtt

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// panics records the connections a panic dropped: recovered() keeps the
// broker up, and the fuzz target fails on them all the same.
type panics struct {
	slog.Handler
	mu   sync.Mutex
	msgs []string
}

func (p *panics) Handle(ctx context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" && strings.Contains(a.Value.String(), "panicked") {
			p.mu.Lock()
			p.msgs = append(p.msgs, a.Value.String())
			p.mu.Unlock()
		}
		return true
	})
	return nil
}

func (p *panics) Enabled(context.Context, slog.Level) bool { return true }

func (p *panics) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.msgs
	p.msgs = nil
	return m
}

// FuzzClientInput sends any bytes after a CONNECT (3.1.1 or 5) and
// checks that the broker neither panics nor leaves the connection hanging
// once the client has stopped sending: it answers, closes, or waits for
// more of a packet it has begun.
func FuzzClientInput(f *testing.F) {
	enc := func(version byte, pk packets.Packet) []byte {
		pk.ProtocolVersion = version
		var b bytes.Buffer
		switch pk.FixedHeader.Type {
		case packets.Subscribe:
			pk.SubscribeEncode(&b)
		case packets.Publish:
			pk.PublishEncode(&b)
		}
		return b.Bytes()
	}
	for _, v := range []byte{4, 5} {
		sub := enc(v, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: "a/#", Qos: 2}, {Filter: "$share/g/b/+", Qos: 1}}})
		pub := enc(v, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 7, TopicName: "a/b", Payload: []byte("x")})
		pub0 := enc(v, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: "a/c", Payload: []byte("y")})
		f.Add(v, append(append(append([]byte{}, sub...), pub...), 0x62, 0x02, 0x00, 0x07)) // + PUBREL 7
		f.Add(v, append(append([]byte{}, pub0...), 0xC0, 0x00, 0xE0, 0x00))                // + PINGREQ, DISCONNECT
		f.Add(v, []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01})                               // five length bytes
		f.Add(v, []byte{0x82, 0x04, 0x00, 0x01, 0x00, 0x00})                               // SUBSCRIBE, truncated
		f.Add(v, []byte{0x10, 0x00})                                                       // second CONNECT
		f.Add(v, []byte{0xF0, 0x00})                                                       // AUTH
		f.Add(v, []byte{0x40, 0x02, 0x00, 0x09})                                           // PUBACK nobody awaits
	}
	log := &panics{}
	_, addr := newTestServer(f, Config{Logger: slog.New(log), MaxPacketSize: 1 << 16})

	f.Fuzz(func(t *testing.T, version byte, input []byte) {
		if version != 5 {
			version = 4
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version}
		connect.Connect.ProtocolName = []byte("MQTT")
		connect.Connect.Clean = true
		connect.Connect.ClientIdentifier = "fuzz"
		var b bytes.Buffer
		connect.ConnectEncode(&b)
		c.Write(append(b.Bytes(), input...))
		c.(*net.TCPConn).CloseWrite()
		// The broker answers and closes, or waits inside a packet it has
		// begun: either way reading ends, at EOF or at the deadline.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, c)
		if p := log.take(); len(p) > 0 {
			t.Fatalf("connection panicked: %v", p)
		}
	})
}
