package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt"
)

// logBuffer is a slog destination the test reads while links write it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the logged lines containing every one of subs.
func (b *logBuffer) lines(subs ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		all := l != ""
		for _, s := range subs {
			all = all && strings.Contains(l, s)
		}
		if all {
			out = append(out, l)
		}
	}
	return out
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor checks cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not synchronising
	}
}

// upstream is a real ferrymq MQTT listener (package mqtt over core) on a
// free port, with one user u/right, standing in for the remote broker.
type testUpstream struct {
	broker   *core.Broker
	users    *core.Users
	srv      *mqtt.Server
	ln       net.Listener
	addr     string
	amqpAddr string // its AMQP listener
	served   chan error
	// maxPacket is the MQTT listener's Maximum Packet Size as serve starts
	// it (0: the listener's default).
	maxPacket uint32
	// receiveMax is the MQTT listener's Receive Maximum as serve starts it
	// (0: the listener's default).
	receiveMax uint16
}

func startUpstream(t *testing.T, addr string) *testUpstream {
	t.Helper()
	u := &testUpstream{broker: core.NewBroker(core.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}), users: core.NewUsers()}
	t.Cleanup(u.broker.Close)
	if err := u.users.Put(core.UserSpec{Name: "u", PasswordHash: core.HashPassword("right")}); err != nil {
		t.Fatal(err)
	}
	if err := u.users.SetPermissions("u", "/", core.FullPermissions); err != nil {
		t.Fatal(err)
	}
	u.serve(t, addr)
	as := amqp.NewServer(u.broker, amqp.Config{Auth: core.NewAuth(u.users), LoginFailureDelay: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.amqpAddr = aln.Addr().String()
	go as.Serve(aln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = as.Shutdown(ctx)
	})
	return u
}

// sink declares the queue "sink" on the upstream, bound to amq.topic for
// t.#, where the tests read what a link forwarded, and returns its vhost.
func (u *testUpstream) sink(t *testing.T) *core.VHost {
	t.Helper()
	v := u.broker.VHost("/")
	if _, err := v.DeclareQueue(core.QueueDecl{Name: "sink"}); err != nil {
		t.Fatal(err)
	}
	if err := v.BindQueue("sink", "amq.topic", "t.#", nil, 0); err != nil {
		t.Fatal(err)
	}
	return v
}

// serve starts the listener on addr ("127.0.0.1:0" for a free port).
func (u *testUpstream) serve(t *testing.T, addr string) {
	t.Helper()
	srv, err := mqtt.NewServer(u.broker, mqtt.Config{Auth: core.NewAuth(u.users), LoginFailureDelay: -1,
		MaxPacketSize: u.maxPacket, ReceiveMaximum: u.receiveMax, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1) // this listener's: serve may run again, after stop
	u.srv, u.ln, u.addr, u.served = srv, ln, ln.Addr().String(), served
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(u.stop)
}

// stop closes the listener and every connection.
func (u *testUpstream) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = u.srv.Shutdown(ctx)
}

// startLink runs one link from a local broker of its own, logging at
// debug level into the returned buffer.
func startLink(t *testing.T, l Link) (*Manager, *core.Broker, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	local := core.NewBroker(core.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(local.Close)
	m, err := Start(local, []Link{l}, Options{Node: "edge", Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m, local, logs
}

// TestConnectErrorsLoggedOnce: a link whose upstream refuses its password
// says so at WARN once, at the first attempt, not at every retry; a
// different error (the upstream gone) is logged at WARN once more; the
// status holds the last error and when it happened.
func TestConnectErrorsLoggedOnce(t *testing.T) {
	up := startUpstream(t, "127.0.0.1:0")
	for _, tc := range []struct{ scheme, refusal string }{
		{"mqtt", "CONNACK 0x86 bad user name or password"},
		{"mqtt3", "MQTT 3.1.1 connect: not Authorized"}, // ferrymq answers 3.1.1 with 0x05
		{"amqp", "upstream refused the login (check the user and password"},
	} {
		t.Run(tc.scheme, func(t *testing.T) {
			addr := up.addr
			if tc.scheme == "amqp" {
				addr = up.amqpAddr
			}
			m, _, logs := startLink(t, Link{Name: "up", URL: tc.scheme + "://u:wrong@" + addr})
			waitFor(t, "three failed attempts", func() bool { return len(logs.lines("connect failed", "attempt=3")) > 0 })
			warns := logs.lines("level=WARN", "cannot connect")
			if len(warns) != 1 || !strings.Contains(warns[0], tc.refusal) || !strings.Contains(warns[0], "attempt=1") {
				t.Fatalf("want one WARN at the first attempt naming %q, got %q\n%s", tc.refusal, warns, logs)
			}
			if strings.Contains(warns[0], "wrong") {
				t.Fatalf("the password is logged: %s", warns[0])
			}
			st := m.Status()[0]
			if !strings.Contains(st.LastError, tc.refusal) || st.LastErrorAt.IsZero() || st.Connected || st.State() != "connecting" {
				t.Fatalf("status %+v", st)
			}
		})
	}
	t.Run("error changes", func(t *testing.T) {
		other := startUpstream(t, "127.0.0.1:0")
		_, _, logs := startLink(t, Link{Name: "up", URL: "mqtt://u:wrong@" + other.addr})
		waitFor(t, "the refusal logged", func() bool { return len(logs.lines("level=WARN", "cannot connect")) == 1 })
		other.stop()
		waitFor(t, "connection refused logged", func() bool {
			return len(logs.lines("level=WARN", "cannot connect", "connection refused")) > 0
		})
		n := len(logs.lines("connect failed"))
		waitFor(t, "two more attempts", func() bool { return len(logs.lines("connect failed")) >= n+2 })
		// An attempt under way as the upstream stopped fails a third way
		// (the connection closed before a CONNACK): that is a change too,
		// logged once. Each error is logged at WARN once, in order.
		warns := logs.lines("level=WARN", "cannot connect")
		last := warns[len(warns)-1]
		if len(warns) < 2 || len(warns) > 3 || !strings.Contains(warns[0], "bad user name or password") ||
			!strings.Contains(last, "connection refused") || len(logs.lines("level=WARN", "connection refused")) != 1 {
			t.Fatalf("want the refusal then connection refused, each once: %q", warns)
		}
	})
}

// TestPauseResume: a paused link disconnects and holds its outbound
// messages; resumed, it connects at once and forwards them upstream.
func TestPauseResume(t *testing.T) {
	up := startUpstream(t, "127.0.0.1:0")
	upV := up.sink(t)
	m, local, logs := startLink(t, Link{Name: "up", URL: "mqtt://u:right@" + up.addr, Topics: []Topic{{Pattern: "t/#"}}})
	waitFor(t, "connected", func() bool { return m.Status()[0].Connected })
	if err := m.Pause("up"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "disconnected", func() bool { s := m.Status()[0]; return !s.Connected && s.Paused })
	if got := m.Status()[0].State(); got != "paused" {
		t.Fatalf("state %q", got)
	}
	const n = 20
	for i := range n {
		msg := &core.Message{Exchange: "amq.topic", RoutingKey: "t.x", Body: []byte(fmt.Sprint(i))}
		if _, err := local.VHost("/").Publish(msg); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a backlog", func() bool { return m.Status()[0].Backlog == n })
	if s := m.Status()[0]; s.Connected || s.Forwarded != 0 {
		t.Fatalf("a paused link forwarded: %+v", s)
	}
	if err := m.Resume("up"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "forwarded upstream", func() bool { return upV.Queue("sink").Stats().Messages == n })
	waitFor(t, "backlog gone", func() bool { s := m.Status()[0]; return s.Backlog == 0 && s.Forwarded == n && s.Connected })
	waitFor(t, "a rate out", func() bool { return m.Status()[0].RateOut > 0 })
	if len(logs.lines("bridge paused")) != 1 || len(logs.lines("bridge resumed")) != 1 {
		t.Fatalf("pause and resume not logged once each:\n%s", logs)
	}
	if len(logs.lines("level=WARN")) != 0 {
		t.Fatalf("a pause logged a warning:\n%s", logs)
	}
	if err := m.Pause("nope"); !errors.Is(err, ErrNoLink) {
		t.Fatalf("Pause of an unknown link: %v", err)
	}
}

// TestPauseWhileUpstreamWithholdsAcks: an upstream that stops
// acknowledging (its memory alarm withholds PUBACKs and confirms and stops
// reading) leaves the link's next publish waiting: for room in the MQTT 5
// link's window of the upstream's Receive Maximum, or in the AMQP link's
// socket, which the upstream no longer reads. Pause and Close must still
// take effect at once, not after the keep-alive or heartbeat finds the
// connection dead (30 s and more), and what was unacknowledged waits in
// the link's queue to go after Resume. The MQTT 3.1.1 link is not among
// the rows: paho.mqtt.golang's Publish waits out its 30 s write timeout
// behind a writer that an upstream not reading holds up.
func TestPauseWhileUpstreamWithholdsAcks(t *testing.T) {
	for _, tc := range []struct {
		name string
		url  func(up *testUpstream) string
		body int // bytes: the AMQP link's must overfill the socket buffers
	}{
		{"mqtt5", func(up *testUpstream) string { return "mqtt://u:right@" + up.addr }, 16},
		{"amqp", func(up *testUpstream) string { return "amqp://u:right@" + up.amqpAddr }, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startUpstream(t, "127.0.0.1:0")
			up.stop()
			up.receiveMax = 2
			up.serve(t, "127.0.0.1:0")
			upV := up.sink(t)
			m, local, _ := startLink(t, Link{Name: "up", URL: tc.url(up), Topics: []Topic{{Pattern: "t/#"}}})
			waitFor(t, "connected", func() bool { return m.Status()[0].Connected })
			const n = 64
			publish := func() {
				up.broker.Block(core.AlarmMemory, "test: acknowledgements withheld")
				for range n {
					msg := &core.Message{Exchange: "amq.topic", RoutingKey: "t.x", Body: make([]byte, tc.body), Properties: core.Properties{DeliveryMode: 2}}
					if _, err := local.VHost("/").Publish(msg); err != nil {
						t.Fatal(err)
					}
				}
				waitFor(t, "the backlog", func() bool { return m.Status()[0].Backlog == n })
			}
			publish()
			start := time.Now()
			if err := m.Pause("up"); err != nil {
				t.Fatal(err)
			}
			for m.Status()[0].Connected {
				if time.Since(start) > 10*time.Second {
					t.Fatal("still connected 10 s after Pause: the link waits on the upstream")
				}
				time.Sleep(10 * time.Millisecond) // polling a condition, not synchronising
			}
			up.broker.Unblock(core.AlarmMemory)
			if err := m.Resume("up"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "every message upstream", func() bool { return upV.Queue("sink").Stats().Messages >= n })
			waitFor(t, "backlog gone", func() bool { return m.Status()[0].Backlog == 0 })

			publish() // withholding again
			closed := make(chan struct{})
			go func() { m.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("Close did not return within 10 s: the link waits on the upstream")
			}
		})
	}
}

// TestConnectErrorText: what a refused MQTT 5 CONNECT is reported as,
// from the bytes an upstream answered with.
func TestConnectErrorText(t *testing.T) {
	for _, tc := range []struct {
		name string
		ca   *paho.Connack
		head []byte
		err  error
		want []string
	}{
		{"3.1.1 broker", nil, []byte{0x20, 0x02, 0x00, 0x01}, io.EOF, []string{"CONNACK 0x1", "unacceptable protocol version", "mqtt3://"}},
		{"3.1.1 bad password", nil, []byte{0x20, 0x02, 0x00, 0x04}, io.EOF, []string{"bad user name or password", "mqtt3://"}},
		{"v5 unsupported version", &paho.Connack{ReasonCode: 0x84}, nil, errors.New("x"), []string{"0x84", "mqtt3://"}},
		{"v5 bad password", &paho.Connack{ReasonCode: 0x86, Properties: &paho.ConnackProperties{ReasonString: "nope"}}, nil, errors.New("x"), []string{"0x86 bad user name or password: nope"}},
		{"closed at once", nil, nil, io.EOF, []string{"without answering CONNECT", "mqtt3://"}},
		{"other", nil, nil, errors.New("i/o timeout"), []string{"MQTT 5 connect: i/o timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := connectError(tc.err, tc.ca, tc.head).Error()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q lacks %q", got, w)
				}
			}
			if tc.name == "v5 bad password" && strings.Contains(got, "mqtt3") {
				t.Errorf("%q advises mqtt3 for a bad password", got)
			}
		})
	}
}
