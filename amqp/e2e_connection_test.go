package amqp_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

func TestE2EHandshakeServerProperties(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)

	if conn.Major != 0 || conn.Minor != 9 {
		t.Errorf("connection.start version %d-%d, want 0-9", conn.Major, conn.Minor)
	}
	for _, key := range []string{"product", "version"} {
		if s, ok := conn.Properties[key].(string); !ok || s == "" {
			t.Errorf("server property %q = %#v, want a non-empty longstr", key, conn.Properties[key])
		}
	}
	caps, ok := conn.Properties["capabilities"].(amqp091.Table)
	if !ok {
		t.Fatalf("server property capabilities = %#v, want a table", conn.Properties["capabilities"])
	}
	for _, c := range []string{
		"publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
		"connection.blocked", "consumer_priorities", "authentication_failure_close", "per_consumer_qos",
	} {
		if v, ok := caps[c].(bool); !ok || !v {
			t.Errorf("capability %q = %#v, want true", c, caps[c])
		}
	}
	found := false
	for _, l := range conn.Locales {
		found = found || l == "en_US"
	}
	if !found {
		t.Errorf("locales %q do not include en_US", conn.Locales)
	}
	assertConnUsable(t, conn)
}

// TestE2EHandshakeRawStart checks connection.start and connection.tune as
// sent on the wire: version 0-9, PLAIN and AMQPLAIN offered, RabbitMQ's
// default tune proposal.
func TestE2EHandshakeRawStart(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	c := rawDial(t, hostPort(t, url))
	c.write([]byte(wire.ProtocolHeader))
	start := expectMethod[*wire.ConnectionStart](c)
	if start.VersionMajor != 0 || start.VersionMinor != 9 {
		t.Errorf("version %d-%d, want 0-9", start.VersionMajor, start.VersionMinor)
	}
	mechs := strings.Fields(start.Mechanisms)
	for _, want := range []string{"PLAIN", "AMQPLAIN"} {
		found := false
		for _, m := range mechs {
			found = found || m == want
		}
		if !found {
			t.Errorf("mechanisms %q do not include %s", start.Mechanisms, want)
		}
	}
	if !strings.Contains(start.Locales, "en_US") {
		t.Errorf("locales %q do not include en_US", start.Locales)
	}
	c.sendMethod(0, &wire.ConnectionStartOk{
		ClientProperties: core.Table{}, Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US",
	})
	tune := expectMethod[*wire.ConnectionTune](c)
	if tune.ChannelMax != 2047 || tune.FrameMax != 131072 || tune.Heartbeat != 60 {
		t.Errorf("tune = %+v, want channel-max 2047, frame-max 131072, heartbeat 60 (RabbitMQ's defaults)", tune)
	}
}

// TestE2EBadProtocolHeader: anything but the 0-9-1 header gets the 0-9-1
// header back, and then the socket is closed.
func TestE2EBadProtocolHeader(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	addr := hostPort(t, url)
	for _, tc := range []struct {
		name, header string
	}{
		{"AMQP 0-9-0", "AMQP\x00\x00\x09\x00"},
		{"AMQP 0-8-0", "AMQP\x00\x00\x08\x00"},
		{"HTTP", "HTTP/1.1"},
		{"TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01"},
		{"zeros", "\x00\x00\x00\x00\x00\x00\x00\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := rawDial(t, addr)
			c.write([]byte(tc.header))
			c.nc.SetReadDeadline(time.Now().Add(waitTimeout))
			got, err := io.ReadAll(c.nc)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("socket still open %v after a bad header (read %q so far)", waitTimeout, got)
			}
			if err != nil && !isConnReset(err) {
				t.Fatalf("read: %v", err)
			}
			if string(got) != wire.ProtocolHeader {
				t.Fatalf("server sent %q, want exactly %q then close", got, wire.ProtocolHeader)
			}
		})
	}
}

func TestE2EAuthentication(t *testing.T) {
	t.Parallel()
	users := core.DefaultUsers()
	addUser(t, users, "alice", "s3cret")
	url, _, _ := startServer(t, amqp.Config{Auth: core.NewAuth(users), LoginFailureDelay: time.Millisecond})
	for _, tc := range []struct {
		name     string
		user     string
		auth     amqp091.Authentication
		wantCode int // 0 = success
	}{
		{"PLAIN guest", "guest", &amqp091.PlainAuth{Username: "guest", Password: "guest"}, 0},
		{"AMQPLAIN guest", "guest", &amqp091.AMQPlainAuth{Username: "guest", Password: "guest"}, 0},
		{"PLAIN other user", "alice", &amqp091.PlainAuth{Username: "alice", Password: "s3cret"}, 0},
		{"AMQPLAIN other user", "alice", &amqp091.AMQPlainAuth{Username: "alice", Password: "s3cret"}, 0},
		{"PLAIN wrong password", "guest", &amqp091.PlainAuth{Username: "guest", Password: "wrong"}, amqp091.AccessRefused},
		{"AMQPLAIN wrong password", "guest", &amqp091.AMQPlainAuth{Username: "guest", Password: "wrong"}, amqp091.AccessRefused},
		{"PLAIN unknown user", "nobody", &amqp091.PlainAuth{Username: "nobody", Password: "guest"}, amqp091.AccessRefused},
		{"PLAIN empty password", "alice", &amqp091.PlainAuth{Username: "alice", Password: ""}, amqp091.AccessRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, err := amqp091.DialConfig(url, amqp091.Config{
				SASL: []amqp091.Authentication{tc.auth},
				Dial: amqp091.DefaultDial(waitTimeout),
			})
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				defer conn.CloseDeadline(time.Now().Add(waitTimeout))
				assertConnUsable(t, conn)
				return
			}
			if err == nil {
				conn.Close()
				t.Fatalf("dial succeeded, want a refusal with %d (ACCESS_REFUSED)", tc.wantCode)
			}
			// Either the server's connection.close 403 (it announces
			// authentication_failure_close) or amqp091.ErrCredentials
			// (code 403 too) if it just dropped the socket.
			wantAMQPError(t, err, tc.wantCode)
		})
	}
}

func TestE2ETune(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		server        amqp.Config
		client        amqp091.Config
		wantChannels  uint16
		wantFrameSize int
		wantHeartbeat time.Duration
	}{
		{"defaults", amqp.Config{}, amqp091.Config{}, 2047, 131072, 10 * time.Second},
		{"client asks lower", amqp.Config{}, amqp091.Config{ChannelMax: 100, FrameSize: 8192, Heartbeat: 5 * time.Second}, 100, 8192, 5 * time.Second},
		{"server offers lower", amqp.Config{ChannelMax: 16, FrameMax: 16384, Heartbeat: 3 * time.Second}, amqp091.Config{}, 16, 16384, 3 * time.Second},
		{"client asks higher", amqp.Config{}, amqp091.Config{ChannelMax: 4000, FrameSize: 1 << 20}, 2047, 131072, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, _, _ := startServer(t, tc.server)
			conn := dialConfig(t, url, tc.client)
			if conn.Config.ChannelMax != tc.wantChannels {
				t.Errorf("channel-max %d, want %d", conn.Config.ChannelMax, tc.wantChannels)
			}
			if conn.Config.FrameSize != tc.wantFrameSize {
				t.Errorf("frame-max %d, want %d", conn.Config.FrameSize, tc.wantFrameSize)
			}
			if conn.Config.Heartbeat != tc.wantHeartbeat {
				t.Errorf("heartbeat %v, want %v", conn.Config.Heartbeat, tc.wantHeartbeat)
			}
			// A body bigger than the negotiated frame size must still go
			// through, split by both sides at the negotiated size.
			ch := openChannel(t, conn)
			q := declareQueue(t, ch, "", nil)
			body := make([]byte, 3*tc.wantFrameSize+17)
			for i := range body {
				body[i] = byte(i * 7)
			}
			publish(t, ch, "", q, amqp091.Publishing{Body: body})
			if d := get(t, ch, q, true); string(d.Body) != string(body) {
				t.Fatalf("body of %d bytes came back as %d bytes (or altered)", len(body), len(d.Body))
			}
		})
	}
}

// TestE2EHeartbeatTimeout: a peer that goes silent after the handshake is
// disconnected after about two heartbeat intervals, as RabbitMQ does.
func TestE2EHeartbeatTimeout(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{Heartbeat: time.Second})
	c := rawDial(t, hostPort(t, url))
	// From before the handshake: the server counts the silence from the
	// last frame it read, which is part of it. Timed from after it, a
	// test goroutine held up for a second there would see an early close.
	start := time.Now()
	tune := c.handshake(nil)
	if tune.Heartbeat != 1 {
		t.Fatalf("tune heartbeat %d, want 1 (Config.Heartbeat)", tune.Heartbeat)
	}
	_, frames, _ := c.waitClosed(10 * time.Second)
	elapsed := time.Since(start)
	t.Logf("silent peer disconnected %v after the handshake began", elapsed)
	if elapsed < time.Second {
		t.Errorf("disconnected after %v, before one heartbeat interval (1s) had passed", elapsed)
	}
	for _, f := range frames {
		if f.Type != wire.FrameHeartbeat {
			t.Errorf("server sent frame type %d to an idle connection, want only heartbeats", f.Type)
		}
	}
}

// TestE2EHeartbeatsSent: the server heartbeats an idle client, and a client
// that heartbeats back stays connected well past two intervals.
func TestE2EHeartbeatsSent(t *testing.T) {
	t.Parallel()
	// 3 s, not 1 s: the client below answers each server heartbeat (one
	// an interval), and the server gives up after two intervals of
	// silence, so a test goroutine held up for one interval on a loaded
	// machine looked like a silent peer.
	const heartbeat = 3 * time.Second
	url, _, _ := startServer(t, amqp.Config{Heartbeat: heartbeat})
	c := rawDial(t, hostPort(t, url))
	c.handshake(nil)
	// Answer each server heartbeat with one of ours until well past two
	// intervals (the server's timeout for a silent peer).
	start := time.Now()
	seen := 0
	for seen < 2 || time.Since(start) < 5*heartbeat/2 {
		f, err := c.readFrame(waitTimeout)
		if err != nil {
			t.Fatalf("after %d heartbeats in %v: %v", seen, time.Since(start), err)
		}
		if f.Type != wire.FrameHeartbeat {
			t.Fatalf("got frame type %d on idle connection, want heartbeat (8)", f.Type)
		}
		if f.Channel != 0 || len(f.Payload) != 0 {
			t.Fatalf("heartbeat on channel %d with %d payload bytes, want channel 0 and empty", f.Channel, len(f.Payload))
		}
		seen++
		c.write(wire.AppendHeartbeat(nil))
	}
	t.Logf("%d server heartbeats in %v", seen, time.Since(start))
	// Still alive: the connection answers a channel.open.
	c.sendMethod(1, &wire.ChannelOpen{})
	if ch, m := c.readMethod(); ch != 1 {
		t.Fatalf("got %T on channel %d, want channel.open-ok on 1", m, ch)
	} else if _, ok := m.(*wire.ChannelOpenOk); !ok {
		t.Fatalf("got %T %+v, want channel.open-ok", m, m)
	}
}

// TestE2EFrameErrors: malformed frames after the handshake get
// connection.close 501 FRAME_ERROR and the socket is closed, while another
// connection to the same server keeps working.
func TestE2EFrameErrors(t *testing.T) {
	t.Parallel()
	const frameMax = 8192 // negotiated by the raw client
	methodFrame := func(channel uint16, m wire.Method) []byte { return wire.AppendMethodFrame(nil, channel, m) }
	rawFrame := func(typ uint8, channel uint16, payload []byte, end byte) []byte {
		b := []byte{typ, byte(channel >> 8), byte(channel)}
		b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
		b = append(b, payload...)
		return append(b, end)
	}
	for _, tc := range []struct {
		name  string
		bytes []byte
	}{
		{"declared size far over frame-max", []byte{wire.FrameMethod, 0, 1, 0x00, 0x10, 0x00, 0x00}},
		// frame-max counts the whole frame, but RabbitMQ tolerates an
		// 8-octet overshoot (?FRAME_SIZE_FUDGE in rabbit_reader: "off-by 1
		// or 8 are typical"), so the first refused payload is frameMax+1.
		{"payload one octet over frame-max", rawFrame(wire.FrameBody, 1, make([]byte, frameMax+1), wire.FrameEnd)},
		{"bad frame-end octet", func() []byte {
			b := methodFrame(1, &wire.ChannelOpen{})
			b[len(b)-1] = 0x00
			return b
		}()},
		{"unknown frame type", rawFrame(9, 0, nil, wire.FrameEnd)},
		{"garbage", []byte("this is not an AMQP frame at all\r\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, _, _ := startServer(t, amqp.Config{})
			good := dial(t, url)
			goodCh := openChannel(t, good)
			q := declareQueue(t, goodCh, "", nil)

			c := rawDial(t, hostPort(t, url))
			c.handshake(func(tune *wire.ConnectionTune) *wire.ConnectionTuneOk {
				return &wire.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: frameMax, Heartbeat: 0}
			})
			c.write(tc.bytes)
			methods, _, _ := c.waitClosed(10 * time.Second)
			var closeM *wire.ConnectionClose
			for _, m := range methods {
				if cm, ok := m.(*wire.ConnectionClose); ok {
					closeM = cm
				}
			}
			if closeM == nil {
				t.Fatalf("socket closed without connection.close (got %s), want 501 FRAME_ERROR", methodNames(methods))
			}
			if closeM.ReplyCode != wire.FrameError || !strings.HasPrefix(closeM.ReplyText, "FRAME_ERROR - ") {
				t.Fatalf("connection.close %d %q, want 501 \"FRAME_ERROR - ...\"", closeM.ReplyCode, closeM.ReplyText)
			}

			publishBody(t, goodCh, "", q, "after")
			if d := get(t, goodCh, q, true); string(d.Body) != "after" {
				t.Fatalf("good connection got %q, want %q", d.Body, "after")
			}
			assertConnUsable(t, good)
		})
	}
}

// TestE2EHandshakeTimeout: a peer that does not finish the handshake within
// Config.HandshakeTimeout is disconnected; the timeout does not apply to a
// connection that finished it.
func TestE2EHandshakeTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		stall func(c *rawConn)
	}{
		{"nothing sent", func(c *rawConn) {}},
		{"protocol header only", func(c *rawConn) {
			c.write([]byte(wire.ProtocolHeader))
		}},
		{"stalled after start-ok", func(c *rawConn) {
			c.write([]byte(wire.ProtocolHeader))
			expectMethod[*wire.ConnectionStart](c)
			c.sendMethod(0, &wire.ConnectionStartOk{
				ClientProperties: core.Table{}, Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US",
			})
		}},
		{"partial protocol header", func(c *rawConn) {
			c.write([]byte("AMQ"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, _, _ := startServer(t, amqp.Config{HandshakeTimeout: time.Second})
			good := dial(t, url)
			start := time.Now()
			c := rawDial(t, hostPort(t, url))
			tc.stall(c)
			c.waitClosed(10 * time.Second)
			elapsed := time.Since(start)
			t.Logf("stalled handshake closed after %v", elapsed)
			if elapsed < 900*time.Millisecond {
				t.Errorf("closed after %v, before the 1s handshake timeout", elapsed)
			}
			// good finished its handshake more than a timeout ago.
			assertConnUsable(t, good)
		})
	}
}

func TestE2EConnectionBlocked(t *testing.T) {
	t.Parallel()
	url, _, broker := startServer(t, amqp.Config{})
	conn := dial(t, url)
	blocked := conn.NotifyBlocked(make(chan amqp091.Blocking, 4))
	observer := openChannel(t, dial(t, url))
	q := declareQueue(t, observer, "", nil)

	waitBlocking := func(want amqp091.Blocking) {
		t.Helper()
		select {
		case b := <-blocked:
			if b != want {
				t.Fatalf("got %+v, want %+v", b, want)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("no %+v notification within %v", want, waitTimeout)
		}
	}

	broker.Block(core.AlarmDisk, "low disk")
	waitBlocking(amqp091.Blocking{Active: true, Reason: "low disk"})

	ch, confirms, _ := confirmChannel(t, conn, 1)
	publishBody(t, ch, "", q, "held")
	// Negative check (not synchronisation): while blocked the publish must
	// not be routed or confirmed.
	select {
	case c := <-confirms:
		t.Fatalf("publish confirmed (%+v) while the server is blocked", c)
	case <-time.After(300 * time.Millisecond):
	}
	if n := readyCount(t, observer, q); n != 0 {
		t.Fatalf("queue has %d messages while publishing is blocked, want 0", n)
	}

	broker.Unblock(core.AlarmDisk)
	waitBlocking(amqp091.Blocking{Active: false})
	if c := waitConfirm(t, confirms); !c.Ack || c.DeliveryTag != 1 {
		t.Fatalf("confirm %+v, want ack of 1", c)
	}
	if d := get(t, observer, q, true); string(d.Body) != "held" {
		t.Fatalf("got %q, want the held message", d.Body)
	}
}

func TestE2EUpdateSecret(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	conn := dial(t, url)
	if err := conn.UpdateSecret("new", "reason"); err != nil {
		t.Fatalf("UpdateSecret: %v", err)
	}
	assertConnUsable(t, conn)
}

func TestE2EShutdownClosesConnections(t *testing.T) {
	t.Parallel()
	url, srv, _ := startServer(t, amqp.Config{})
	conns := []*amqp091.Connection{dial(t, url), dial(t, url)}
	var closes []chan *amqp091.Error
	for _, c := range conns {
		closes = append(closes, notifyConnClose(c))
	}
	// A consumer in flight must not hold up the shutdown.
	ch := openChannel(t, conns[1])
	q := declareQueue(t, ch, "", nil)
	consume(t, ch, q, false, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for i, c := range closes {
		e := waitClosedWith(t, c, amqp091.ConnectionForced, "connection "+string(rune('A'+i)))
		wantReplyText(t, e)
	}
	if c, err := amqp091.DialConfig(url, amqp091.Config{Dial: amqp091.DefaultDial(waitTimeout)}); err == nil {
		c.Close()
		t.Fatalf("dial after Shutdown succeeded")
	}
}

func TestE2EVirtualHosts(t *testing.T) {
	t.Parallel()
	url, _, broker := startServer(t, amqp.Config{Auth: guestIn(t, "other")})
	broker.AddVHost("other")
	for _, tc := range []struct {
		name, path string
		wantCode   int // 0 = success
	}{
		{"default vhost", "/", 0},
		{"default vhost escaped", "/%2f", 0},
		{"added vhost", "/other", 0},
		{"missing vhost", "/nosuchvhost", amqp091.NotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, err := amqp091.DialConfig(withCreds(t, url, "guest", "guest", tc.path),
				amqp091.Config{Dial: amqp091.DefaultDial(waitTimeout)})
			if tc.wantCode == 0 {
				if err != nil {
					t.Fatalf("dial %s: %v", tc.path, err)
				}
				defer conn.CloseDeadline(time.Now().Add(waitTimeout))
				assertConnUsable(t, conn)
				return
			}
			if err == nil {
				conn.Close()
				t.Fatalf("dial %s succeeded, want %d", tc.path, tc.wantCode)
			}
			e := wantAMQPError(t, err, tc.wantCode)
			wantReplyText(t, e, "nosuchvhost")
		})
	}
}

// TestE2EVirtualHostIsolation: a queue declared in one vhost is not visible
// in another.
func TestE2EVirtualHostIsolation(t *testing.T) {
	t.Parallel()
	url, _, broker := startServer(t, amqp.Config{Auth: guestIn(t, "other")})
	broker.AddVHost("other")
	def := dial(t, url)
	other := dial(t, withCreds(t, url, "guest", "guest", "/other"))
	declareQueue(t, openChannel(t, def), "only-in-default", nil)
	if queueExists(t, other, "only-in-default") {
		t.Fatalf("queue declared in / is visible in vhost other")
	}
	if !queueExists(t, def, "only-in-default") {
		t.Fatalf("queue missing from /")
	}
}

// TestE2EAbruptDisconnect: a client that drops the socket without
// connection.close loses its exclusive queues, and its unacked deliveries
// are requeued as redelivered.
func TestE2EAbruptDisconnect(t *testing.T) {
	t.Parallel()
	url, _, _ := startServer(t, amqp.Config{})
	observer := dial(t, url)
	och := openChannel(t, observer)
	q := declareQueue(t, och, "abrupt-q", nil)
	publishBody(t, och, "", q, "m0")
	publishBody(t, och, "", q, "m1")

	c := rawDial(t, hostPort(t, url))
	c.handshake(nil)
	c.sendMethod(1, &wire.ChannelOpen{})
	expectMethod[*wire.ChannelOpenOk](c)
	c.sendMethod(1, &wire.QueueDeclare{Queue: "abrupt-excl", Exclusive: true})
	expectMethod[*wire.QueueDeclareOk](c)
	c.sendMethod(1, &wire.BasicConsume{Queue: q, ConsumerTag: "raw"})
	expectMethod[*wire.BasicConsumeOk](c)
	for delivered := 0; delivered < 2; {
		f, err := c.readFrame(waitTimeout)
		if err != nil {
			t.Fatalf("waiting for deliveries: %v", err)
		}
		if f.Type == wire.FrameMethod {
			if _, ok := mustDecode(t, f).(*wire.BasicDeliver); ok {
				delivered++
			}
		}
	}
	if !queueExists(t, observer, "abrupt-excl") {
		t.Fatalf("exclusive queue missing while its connection is open")
	}
	c.nc.Close()

	eventually(t, waitTimeout, "exclusive queue of a dropped connection deleted", func() bool {
		return !queueExists(t, observer, "abrupt-excl")
	})
	eventually(t, waitTimeout, "unacked deliveries of a dropped connection requeued", func() bool {
		return readyCount(t, och, q) == 2
	})
	for _, want := range []string{"m0", "m1"} {
		if d := get(t, och, q, true); string(d.Body) != want || !d.Redelivered {
			t.Fatalf("got %q redelivered=%v, want %s redelivered", d.Body, d.Redelivered, want)
		}
	}
}

func mustDecode(t *testing.T, f wire.Frame) wire.Method {
	t.Helper()
	m, err := wire.DecodeMethod(f.Payload)
	if err != nil {
		t.Fatalf("decode method: %v", err)
	}
	return m
}
