package amqp_test

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// TestE2EAnnouncedBodyCostsNothing opens hundreds of raw connections that
// each send a content header announcing a 16 MiB body and then only 5
// bytes of it, as an attacker would: the broker's memory (its own reading,
// core.MemoryInUse) must grow by what arrived and the connections, not by
// what the headers announced (300 x 16 MiB = 4.7 GiB before).
func TestE2EAnnouncedBodyCostsNothing(t *testing.T) {
	const (
		conns     = 300
		announced = 16 << 20
	)
	url, _, _ := startServer(t, amqp.Config{MaxMessageSize: announced})
	addr := hostPort(t, url)
	setup := openChannel(t, dial(t, url))
	declareQueue(t, setup, "announced", nil)

	runtime.GC()
	before := core.MemoryInUse()
	var wg sync.WaitGroup
	raws := make([]*rawConn, conns)
	for i := range raws {
		wg.Go(func() {
			c := rawDial(t, addr)
			c.handshake(nil)
			c.sendMethod(1, &wire.ChannelOpen{})
			expectMethod[*wire.ChannelOpenOk](c)
			var b []byte
			b = wire.AppendMethodFrame(b, 1, &wire.BasicPublish{RoutingKey: "announced"})
			b = wire.AppendContentHeaderFrame(b, 1, wire.ClassBasic, announced, &core.Properties{})
			b = wire.AppendBodyFrames(b, 1, []byte("hello"), 4096)
			c.write(b)
			raws[i] = c
		})
	}
	wg.Wait()
	// Each connection answers a heartbeat-free round trip (channel.open
	// on a second channel) once its reader has handled the body frame
	// before it, so the reading below sees every buffer made.
	for _, c := range raws {
		wg.Go(func() {
			c.sendMethod(2, &wire.ChannelOpen{})
			expectMethod[*wire.ChannelOpenOk](c)
		})
	}
	wg.Wait()
	runtime.GC()
	grown := core.MemoryInUse() - before
	perConn := grown / conns
	t.Logf("%d connections each announcing %d MiB: memory in use grew by %.1f MiB (%.1f KiB per connection)",
		conns, announced>>20, float64(grown)/(1<<20), float64(perConn)/1024)
	if perConn > 256<<10 {
		t.Fatalf("memory in use grew by %d bytes per connection that sent 5 bytes of an announced %d: bodies are reserved before they arrive", perConn, announced)
	}

	// The bodies still arrive whole when their bytes come.
	rest := make([]byte, announced-5)
	c := raws[0]
	c.write(wire.AppendBodyFrames(nil, 1, rest, 64<<10))
	eventually(t, 20*time.Second, "the completed 16 MiB message queued", func() bool {
		return readyCount(t, setup, "announced") == 1
	})
	d, ok, err := setup.Get("announced", true)
	if err != nil || !ok || len(d.Body) != announced || string(d.Body[:5]) != "hello" {
		t.Fatalf("get: ok %v err %v, body of %d bytes, want %d starting hello", ok, err, len(d.Body), announced)
	}
}
