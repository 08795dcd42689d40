package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// serveAMQP starts another AMQP listener on the upstream's broker with cfg
// (its Auth and Logger filled in), and returns its address.
func (u *testUpstream) serveAMQP(t *testing.T, cfg amqp.Config) string {
	t.Helper()
	cfg.Auth, cfg.LoginFailureDelay = core.NewAuth(u.users), -1
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	as := amqp.NewServer(u.broker, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go as.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = as.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// publishLocal publishes body on key to the local broker's amq.topic at
// QoS 1, as an MQTT client would.
func publishLocal(t *testing.T, local *core.Broker, key string, body []byte) {
	t.Helper()
	msg := &core.Message{Exchange: "amq.topic", RoutingKey: key, Body: body,
		Properties: core.Properties{Headers: core.Table{topic.QoSHeader: int8(1)}}}
	if _, err := local.VHost("/").Publish(msg); err != nil {
		t.Fatal(err)
	}
}

// expectSink reads the upstream's sink queue and checks it holds exactly
// want, in order.
func expectSink(t *testing.T, upV *core.VHost, want []string) {
	t.Helper()
	for i, w := range want {
		d, ok := upV.Queue("sink").Get(true)
		if !ok || string(d.Msg.Body) != w {
			t.Fatalf("upstream message %d: %v (ok %v), want body %s", i, d.Msg, ok, w)
		}
	}
	if d, extra := upV.Queue("sink").Get(true); extra {
		t.Fatalf("an unexpected message reached the upstream: %q", d.Msg.Body)
	}
}

// expectSinkAtLeastOnce is expectSink allowing duplicates of a message
// cut off by a dropped connection: each of want arrives, the first time
// in order, and nothing else does. It returns the duplicates.
func expectSinkAtLeastOnce(t *testing.T, upV *core.VHost, want []string) (dups int) {
	t.Helper()
	seen := map[string]bool{}
	next := 0
	for {
		d, ok := upV.Queue("sink").Get(true)
		if !ok {
			break
		}
		b := string(d.Msg.Body)
		switch {
		case seen[b]:
			dups++
		case next < len(want) && b == want[next]:
			seen[b] = true
			next++
		default:
			t.Fatalf("upstream message %q: want %q next", b, want[min(next, len(want)-1)])
		}
	}
	if next != len(want) {
		t.Fatalf("%d of %d messages reached the upstream; the next missing: %s", next, len(want), want[next])
	}
	return dups
}

// TestAMQPLinkRefusedForGood: a publish an AMQP upstream refuses by
// closing the channel with a per-message code (403 ACCESS_REFUSED, 406
// PRECONDITION_FAILED) is found among the publishes in flight, acked here,
// counted and logged at WARN (rate-limited), and the messages around it
// reach the upstream in order, on the same connection: sent again, it
// would be refused on every reconnect and hold them all back.
func TestAMQPLinkRefusedForGood(t *testing.T) {
	big := bytes.Repeat([]byte("b"), 8<<10)
	for _, tc := range []struct {
		name  string
		code  string
		setup func(t *testing.T, up *testUpstream) string // the link's upstream address
		bad   func(key string, body []byte) (string, []byte)
	}{
		{"topic write denied", "403", func(t *testing.T, up *testUpstream) string {
			if err := up.users.SetTopicPermissions("u", "/", core.TopicPermissions{Exchange: "amq.topic", Write: `^t\.ok$`, Read: ".*"}); err != nil {
				t.Fatal(err)
			}
			return up.amqpAddr
		}, func(_ string, body []byte) (string, []byte) { return "t.deny", body }},
		{"over the upstream's max message size", "406", func(t *testing.T, up *testUpstream) string {
			return up.serveAMQP(t, amqp.Config{MaxMessageSize: 4 << 10})
		}, func(key string, _ []byte) (string, []byte) { return key, big }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, "127.0.0.1:0")
			addr := tc.setup(t, up)
			upV := up.sink(t)
			m, local, logs := startLink(t, Link{Name: "up", URL: "amqp://u:right@" + addr, Window: 16,
				Topics: []Topic{{Pattern: "t/#"}}})
			const n = 100 // every third one refused
			var ok []string
			for i := range n {
				key, body := "t.ok", []byte(fmt.Sprint(i))
				if i%3 == 1 {
					key, body = tc.bad(key, body)
				} else {
					ok = append(ok, string(body))
				}
				publishLocal(t, local, key, body)
			}
			refused := uint64(n - len(ok))
			waitFor(t, "backlog gone", func() bool {
				s := m.Status()[0]
				return s.Backlog == 0 && s.Forwarded == uint64(len(ok)) && s.Refused == refused
			})
			if s := m.Status()[0]; s.LastError != "" || !s.Connected {
				t.Fatalf("the link lost its connection over a refusal: connected %v, last error %q", s.Connected, s.LastError)
			}
			if c := logs.lines("bridge connected"); len(c) != 1 {
				t.Fatalf("connected %d times, want once:\n%s", len(c), logs)
			}
			expectSink(t, upV, ok)
			// One WARN, then one each time the count doubles: 1, 2, 4 .. 32.
			warns := logs.lines("level=WARN", "refused messages for good", "channel.close "+tc.code)
			if len(warns) != 6 || !strings.Contains(warns[5], "refused=32") {
				t.Fatalf("want 6 WARNs (refused 1, 2, 4 .. 32) naming %s, got %d:\n%s", tc.code, len(warns), strings.Join(warns, "\n"))
			}
		})
	}
}

// TestAMQPLinkNoWriteOnExchange: while the link's user may not write to
// the upstream exchange (403 on every publish), each message is refused
// for good, counted and logged, without reconnecting; once it may, the
// next ones go through, in order.
func TestAMQPLinkNoWriteOnExchange(t *testing.T) {
	up := startUpstream(t, "127.0.0.1:0")
	if err := up.users.SetPermissions("u", "/", core.VHostPermissions{Configure: ".*", Write: "^$", Read: ".*"}); err != nil {
		t.Fatal(err)
	}
	upV := up.sink(t)
	m, local, logs := startLink(t, Link{Name: "up", URL: "amqp://u:right@" + up.amqpAddr, Window: 16,
		Topics: []Topic{{Pattern: "t/#"}}})
	const n = 20
	for i := range n {
		publishLocal(t, local, "t.ok", []byte(fmt.Sprint("denied ", i)))
	}
	waitFor(t, "every message refused", func() bool {
		s := m.Status()[0]
		return s.Backlog == 0 && s.Refused == n && s.Forwarded == 0
	})
	if err := up.users.SetPermissions("u", "/", core.FullPermissions); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprint(i))
		publishLocal(t, local, "t.ok", []byte(want[i]))
	}
	waitFor(t, "forwarded once allowed", func() bool {
		s := m.Status()[0]
		return s.Backlog == 0 && s.Forwarded == n
	})
	if s := m.Status()[0]; s.Refused != n || !s.Connected || s.LastError != "" {
		t.Fatalf("refused %d (want %d), connected %v, last error %q", s.Refused, n, s.Connected, s.LastError)
	}
	if c := logs.lines("bridge connected"); len(c) != 1 {
		t.Fatalf("connected %d times, want once:\n%s", len(c), logs)
	}
	if w := logs.lines("level=WARN", "refused messages for good", "channel.close 403", "write access to exchange 'amq.topic'"); len(w) == 0 {
		t.Fatalf("no WARN names the refusal:\n%s", logs)
	}
	expectSink(t, upV, want)
}

// TestAMQPLinkExchangeMissing: an upstream exchange that does not exist
// (404 NOT_FOUND on every publish) is an outage of the link, not a
// refusal of its messages: they wait here, the link reconnects with
// backoff, and once the exchange is made they all go, in order, none
// refused.
func TestAMQPLinkExchangeMissing(t *testing.T) {
	up := startUpstream(t, "127.0.0.1:0")
	upV := up.broker.VHost("/")
	m, local, logs := startLink(t, Link{Name: "up", URL: "amqp://u:right@" + up.amqpAddr, Window: 16,
		Exchange: "later", Topics: []Topic{{Pattern: "t/#"}}})
	const n = 50
	var want []string
	for i := range n {
		want = append(want, fmt.Sprint(i))
		publishLocal(t, local, "t.ok", []byte(want[i]))
	}
	start := time.Now()
	waitFor(t, "three disconnects over the 404", func() bool {
		return len(logs.lines("level=WARN", "bridge disconnected", "404", "no exchange 'later'")) >= 3
	})
	if s := m.Status()[0]; s.Refused != 0 || s.Backlog != n || s.Forwarded != 0 {
		t.Fatalf("with the exchange missing: refused %d, backlog %d, forwarded %d; want 0, %d, 0", s.Refused, s.Backlog, s.Forwarded, n)
	}
	if err := upV.DeclareExchange(core.ExchangeDecl{Name: "later", Kind: "topic"}); err != nil {
		t.Fatal(err)
	}
	if _, err := upV.DeclareQueue(core.QueueDecl{Name: "sink"}); err != nil {
		t.Fatal(err)
	}
	if err := upV.BindQueue("sink", "later", "t.#", nil, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "forwarded once the exchange exists", func() bool {
		s := m.Status()[0]
		return s.Backlog == 0 && s.Forwarded == n
	})
	if s := m.Status()[0]; s.Refused != 0 {
		t.Fatalf("refused %d, want 0", s.Refused)
	}
	// Backing off (100 ms doubling, jittered), a link makes a handful of
	// connections in these seconds; a reconnect loop makes thousands.
	if c, secs := len(logs.lines("bridge connected")), time.Since(start).Seconds(); c > 10+2*int(secs) {
		t.Fatalf("%d connections in %.1f s: not backing off\n%s", c, secs, logs)
	}
	expectSink(t, upV, want)
}

// TestMQTT3LinkRefusedByDisconnect: an MQTT 3.1.1 upstream refuses a
// publish by closing the connection (ferrymq does for a topic the user
// may not write, any broker for a packet over its size). The link sends
// the message alone on the next connections, and after closeStrikes
// drops right after it, refuses it for good (acked, counted, logged); the
// messages around it reach the upstream in order, and the link does not
// keep reconnecting.
func TestMQTT3LinkRefusedByDisconnect(t *testing.T) {
	big := bytes.Repeat([]byte("b"), 8<<10)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, up *testUpstream)
		bad   func(key string, body []byte) (string, []byte)
	}{
		{"topic write denied", func(t *testing.T, up *testUpstream) {
			if err := up.users.SetTopicPermissions("u", "/", core.TopicPermissions{Exchange: "amq.topic", Write: `^t\.ok$`, Read: ".*"}); err != nil {
				t.Fatal(err)
			}
		}, func(_ string, body []byte) (string, []byte) { return "t.deny", body }},
		{"over the upstream's packet size", func(t *testing.T, up *testUpstream) {
			up.stop()
			up.maxPacket = 4 << 10
			up.serve(t, "127.0.0.1:0")
		}, func(key string, _ []byte) (string, []byte) { return key, big }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, "127.0.0.1:0")
			tc.setup(t, up)
			upV := up.sink(t)
			m, local, logs := startLink(t, Link{Name: "up", URL: "mqtt3://u:right@" + up.addr, Window: 16,
				Topics: []Topic{{Pattern: "t/#"}}})
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("the link's log:\n%s", logs)
				}
			})
			const n = 40 // one refused, in the middle
			var ok []string
			for i := range n {
				key, body := "t.ok", []byte(fmt.Sprint(i))
				if i == n/2 {
					key, body = tc.bad(key, body)
				} else {
					ok = append(ok, string(body))
				}
				publishLocal(t, local, key, body)
			}
			// Longer than waitFor: paho.mqtt.golang may hold a publish
			// cut off by the dropped connection for its 30 s timeout
			// before the link sees the drop (see the issue note).
			deadline := time.Now().Add(90 * time.Second)
			for s := m.Status()[0]; s.Backlog != 0 || s.Forwarded != uint64(len(ok)) || s.Refused != 1; s = m.Status()[0] {
				if time.Now().After(deadline) {
					t.Fatalf("backlog %d, forwarded %d, refused %d; want 0, %d, 1", s.Backlog, s.Forwarded, s.Refused, len(ok))
				}
				time.Sleep(10 * time.Millisecond) // polling the status, not synchronising
			}
			t.Logf("%d duplicates", expectSinkAtLeastOnce(t, upV, ok))
			if w := logs.lines("level=WARN", "refused messages for good", "closed the connection right after its publish"); len(w) != 1 {
				t.Fatalf("want one WARN for the refusal, got %d:\n%s", len(w), logs)
			}
			// The first connection, one per strike, and the last; a
			// drop after an innocent message sent alone may strike it
			// once (its confirmation later clears it).
			if c := logs.lines("bridge connected"); len(c) > 2*closeStrikes+2 {
				t.Fatalf("connected %d times for one refusal:\n%s", len(c), logs)
			}
		})
	}
}
