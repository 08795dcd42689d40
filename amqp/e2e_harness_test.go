package amqp_test

// End-to-end harness: a real Server on a 127.0.0.1:0 listener, driven by
// the real amqp091-go client over TCP, plus a raw-socket client (rawConn)
// for the inputs the client library cannot produce. Tests never sleep to
// synchronise: they wait on events (deliveries, notifications, a closed
// socket) with deadlines, or poll a condition with a deadline.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// waitTimeout bounds every wait for something that should happen promptly.
// Promptly is slow on a loaded 2-core machine under -race, with this
// package's parallel tests sharing the CPU: the test binary then got about
// 13% of it, a 1 MiB body took 3.6 s to go through a basic.get and a
// delivery, and the delivery of a 5 MiB one (TestE2EBodies) took over 5 s,
// the earlier bound. It is only ever waited out when something is wrong.
const waitTimeout = 20 * time.Second

// startServer starts a Server for a fresh Broker on 127.0.0.1:0 and returns
// the AMQP URL of vhost "/" as guest/guest. Cleanup shuts the server down
// (with a deadline), checks that Serve returned ErrServerClosed, and closes
// the broker. Server logs go to the test log.
func startServer(t testing.TB, cfg amqp.Config) (string, *amqp.Server, *core.Broker) {
	t.Helper()
	broker := core.NewBroker(core.Options{})
	lw := &testLogWriter{t: t}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv := amqp.NewServer(broker, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-served:
			if !errors.Is(err, amqp.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return within 10s of Shutdown")
		}
		broker.Close()
		lw.stop()
	})
	return "amqp://guest:guest@" + ln.Addr().String() + "/", srv, broker
}

// testLogWriter sends server logs to t.Log until the test's cleanup ends, so
// that a goroutine logging late cannot panic the test binary.
type testLogWriter struct {
	t       testing.TB
	mu      sync.Mutex
	stopped bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLogWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

// hostPort returns the host:port of an AMQP URL.
func hostPort(t testing.TB, amqpURL string) string {
	t.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		t.Fatalf("parse %q: %v", amqpURL, err)
	}
	return u.Host
}

// withCreds returns amqpURL with other credentials and vhost path.
func withCreds(t testing.TB, amqpURL, user, pass, vhostPath string) string {
	t.Helper()
	return "amqp://" + url.UserPassword(user, pass).String() + "@" + hostPort(t, amqpURL) + vhostPath
}

// dial opens an amqp091 connection; cleanup closes it.
func dial(t testing.TB, amqpURL string) *amqp091.Connection {
	t.Helper()
	return dialConfig(t, amqpURL, amqp091.Config{})
}

// dialConfig is dial with a client Config.
func dialConfig(t testing.TB, amqpURL string, cfg amqp091.Config) *amqp091.Connection {
	t.Helper()
	if cfg.Dial == nil {
		cfg.Dial = amqp091.DefaultDial(waitTimeout)
	}
	conn, err := amqp091.DialConfig(amqpURL, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", amqpURL, err)
	}
	t.Cleanup(func() { _ = conn.CloseDeadline(time.Now().Add(waitTimeout)) })
	return conn
}

// openChannel opens a channel. It is closed with its connection.
func openChannel(t testing.TB, conn *amqp091.Connection) *amqp091.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open channel: %v", err)
	}
	return ch
}

// declareQueue declares a plain (non-durable, non-exclusive, non-auto-delete)
// queue and returns its name.
func declareQueue(t testing.TB, ch *amqp091.Channel, name string, args amqp091.Table) string {
	t.Helper()
	q, err := ch.QueueDeclare(name, false, false, false, false, args)
	if err != nil {
		t.Fatalf("queue.declare %q %v: %v", name, args, err)
	}
	return q.Name
}

// bindQueue binds queue to exchange with key and args.
func bindQueue(t testing.TB, ch *amqp091.Channel, queue, key, exchange string, args amqp091.Table) {
	t.Helper()
	if err := ch.QueueBind(queue, key, exchange, false, args); err != nil {
		t.Fatalf("queue.bind %s -> %s (%q %v): %v", exchange, queue, key, args, err)
	}
}

// declareExchange declares a non-durable exchange of kind.
func declareExchange(t testing.TB, ch *amqp091.Channel, name, kind string, args amqp091.Table) {
	t.Helper()
	if err := ch.ExchangeDeclare(name, kind, false, false, false, false, args); err != nil {
		t.Fatalf("exchange.declare %q %s: %v", name, kind, err)
	}
}

// publish sends msg; it fails the test only on a client-side error (server
// refusals arrive asynchronously as channel.close).
func publish(t testing.TB, ch *amqp091.Channel, exchange, key string, msg amqp091.Publishing) {
	t.Helper()
	publishFlags(t, ch, exchange, key, false, false, msg)
}

func publishFlags(t testing.TB, ch *amqp091.Channel, exchange, key string, mandatory, immediate bool, msg amqp091.Publishing) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := ch.PublishWithContext(ctx, exchange, key, mandatory, immediate, msg); err != nil {
		t.Fatalf("publish to %q/%q: %v", exchange, key, err)
	}
}

// publishBody publishes a message with just a body.
func publishBody(t testing.TB, ch *amqp091.Channel, exchange, key, body string) {
	t.Helper()
	publish(t, ch, exchange, key, amqp091.Publishing{Body: []byte(body)})
}

// consume starts a consumer with a client-generated tag.
func consume(t testing.TB, ch *amqp091.Channel, queue string, autoAck bool, args amqp091.Table) <-chan amqp091.Delivery {
	t.Helper()
	d, err := ch.Consume(queue, "", autoAck, false, false, false, args)
	if err != nil {
		t.Fatalf("basic.consume %q: %v", queue, err)
	}
	return d
}

// consumeTag starts a consumer with the given tag.
func consumeTag(t testing.TB, ch *amqp091.Channel, queue, tag string, autoAck bool, args amqp091.Table) <-chan amqp091.Delivery {
	t.Helper()
	d, err := ch.Consume(queue, tag, autoAck, false, false, false, args)
	if err != nil {
		t.Fatalf("basic.consume %q tag %q: %v", queue, tag, err)
	}
	return d
}

// recv waits for the next delivery.
func recv(t testing.TB, deliveries <-chan amqp091.Delivery) amqp091.Delivery {
	t.Helper()
	select {
	case d, ok := <-deliveries:
		if !ok {
			t.Fatalf("delivery channel closed while waiting for a delivery (consumer cancelled or channel closed)")
		}
		return d
	case <-time.After(waitTimeout):
		t.Fatalf("no delivery within %v", waitTimeout)
	}
	panic("unreachable")
}

// recvN waits for n deliveries.
func recvN(t testing.TB, deliveries <-chan amqp091.Delivery, n int) []amqp091.Delivery {
	t.Helper()
	out := make([]amqp091.Delivery, 0, n)
	deadline := time.After(waitTimeout)
	for len(out) < n {
		select {
		case d, ok := <-deliveries:
			if !ok {
				t.Fatalf("delivery channel closed after %d of %d deliveries", len(out), n)
			}
			out = append(out, d)
		case <-deadline:
			t.Fatalf("got %d of %d deliveries within %v", len(out), n, waitTimeout)
		}
	}
	return out
}

// bodies returns the bodies of ds as strings.
func bodies(ds []amqp091.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d.Body)
	}
	return out
}

// expectNoDelivery fails if a delivery is already waiting in deliveries. It
// does not wait: callers first establish (by a round trip on the same
// channel, or by another delivery) that anything the server would have sent
// has arrived.
func expectNoDelivery(t testing.TB, deliveries <-chan amqp091.Delivery, what string) {
	t.Helper()
	select {
	case d, ok := <-deliveries:
		if ok {
			t.Fatalf("%s: unexpected delivery %q (tag %d, redelivered %v)", what, d.Body, d.DeliveryTag, d.Redelivered)
		}
	default:
	}
}

// get does basic.get and fails if the queue is empty.
func get(t testing.TB, ch *amqp091.Channel, queue string, autoAck bool) amqp091.Delivery {
	t.Helper()
	d, ok, err := ch.Get(queue, autoAck)
	if err != nil {
		t.Fatalf("basic.get %q: %v", queue, err)
	}
	if !ok {
		t.Fatalf("basic.get %q: queue empty, want a message", queue)
	}
	return d
}

// getEmpty does basic.get and fails unless the queue is empty.
func getEmpty(t testing.TB, ch *amqp091.Channel, queue string) {
	t.Helper()
	d, ok, err := ch.Get(queue, true)
	if err != nil {
		t.Fatalf("basic.get %q: %v", queue, err)
	}
	if ok {
		t.Fatalf("basic.get %q: got %q, want get-empty", queue, d.Body)
	}
}

// readyCount returns the ready-message count of queue from a passive
// declare on ch. Methods on one channel are handled in order, so it counts
// every message published earlier on ch.
func readyCount(t testing.TB, ch *amqp091.Channel, queue string) int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		t.Fatalf("passive queue.declare %q: %v", queue, err)
	}
	return q.Messages
}

// consumerCount returns the consumer count of queue from a passive declare.
func consumerCount(t testing.TB, ch *amqp091.Channel, queue string) int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		t.Fatalf("passive queue.declare %q: %v", queue, err)
	}
	return q.Consumers
}

// queueExists reports whether queue name exists, by a passive declare on a
// channel of its own (a refusal closes that channel): 404 means absent, 405
// (exclusive to another connection) present; any other error fails.
func queueExists(t testing.TB, conn *amqp091.Connection, name string) bool {
	t.Helper()
	ch := openChannel(t, conn)
	_, err := ch.QueueDeclarePassive(name, false, false, false, false, nil)
	if err == nil {
		_ = ch.Close()
		return true
	}
	var e *amqp091.Error
	if errors.As(err, &e) && e.Code == amqp091.ResourceLocked {
		return true
	}
	wantAMQPError(t, err, amqp091.NotFound)
	return false
}

// exchangeExists is queueExists for exchanges.
func exchangeExists(t testing.TB, conn *amqp091.Connection, name string) bool {
	t.Helper()
	ch := openChannel(t, conn)
	err := ch.ExchangeDeclarePassive(name, "direct", false, false, false, false, nil)
	if err == nil {
		_ = ch.Close()
		return true
	}
	wantAMQPError(t, err, amqp091.NotFound)
	return false
}

// eventually polls cond every 10ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, timeout)
		}
		<-tick.C
	}
}

// wantAMQPError checks that err is an *amqp091.Error with code, and returns it.
func wantAMQPError(t testing.TB, err error, code int) *amqp091.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want AMQP error %d %s", code, wire.ReplyCodeName(uint16(code)))
	}
	var e *amqp091.Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %v (%T), want AMQP error %d", err, err, code)
	}
	if e.Code != code {
		t.Fatalf("got AMQP error %d %q, want code %d %s", e.Code, e.Reason, code, wire.ReplyCodeName(uint16(code)))
	}
	return e
}

// wantReplyText checks that a server reply text starts with the code's name
// (as RabbitMQ writes it) and contains each of parts.
func wantReplyText(t testing.TB, e *amqp091.Error, parts ...string) {
	t.Helper()
	if name := wire.ReplyCodeName(uint16(e.Code)) + " - "; !strings.HasPrefix(e.Reason, name) {
		t.Errorf("reply text %q does not start with %q", e.Reason, name)
	}
	for _, p := range parts {
		if !strings.Contains(e.Reason, p) {
			t.Errorf("reply text %q does not contain %q", e.Reason, p)
		}
	}
}

// notifyChannelClose registers for ch's close before the operation that
// should close it.
func notifyChannelClose(ch *amqp091.Channel) chan *amqp091.Error {
	return ch.NotifyClose(make(chan *amqp091.Error, 1))
}

// notifyConnClose registers for conn's close.
func notifyConnClose(conn *amqp091.Connection) chan *amqp091.Error {
	return conn.NotifyClose(make(chan *amqp091.Error, 1))
}

// waitClosedWith waits for a close notification with code.
func waitClosedWith(t testing.TB, closed <-chan *amqp091.Error, code int, what string) *amqp091.Error {
	t.Helper()
	select {
	case e, ok := <-closed:
		if !ok || e == nil {
			t.Fatalf("%s closed without an error, want code %d", what, code)
		}
		if e.Code != code {
			t.Fatalf("%s closed with %d %q, want code %d %s", what, e.Code, e.Reason, code, wire.ReplyCodeName(uint16(code)))
		}
		if !e.Server {
			t.Errorf("%s close %d %q was not initiated by the server", what, e.Code, e.Reason)
		}
		return e
	case <-time.After(waitTimeout):
		t.Fatalf("%s not closed within %v, want code %d", what, waitTimeout, code)
	}
	panic("unreachable")
}

// assertConnUsable checks that conn still works after a channel error: a
// new channel can be opened and a queue declared and used on it.
func assertConnUsable(t testing.TB, conn *amqp091.Connection) {
	t.Helper()
	if conn.IsClosed() {
		t.Fatalf("connection closed, want it usable after a channel error")
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("connection unusable: channel.open: %v", err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatalf("connection unusable: queue.declare: %v", err)
	}
	publishBody(t, ch, "", q.Name, "still-alive")
	if d := get(t, ch, q.Name, true); string(d.Body) != "still-alive" {
		t.Fatalf("connection unusable: got %q back", d.Body)
	}
	if err := ch.Close(); err != nil {
		t.Fatalf("channel.close: %v", err)
	}
}

// confirmChannel opens a channel in confirm mode with return and confirm
// listeners buffered for n messages.
func confirmChannel(t testing.TB, conn *amqp091.Connection, n int) (*amqp091.Channel, chan amqp091.Confirmation, chan amqp091.Return) {
	t.Helper()
	ch := openChannel(t, conn)
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm.select: %v", err)
	}
	confirms := ch.NotifyPublish(make(chan amqp091.Confirmation, n))
	returns := ch.NotifyReturn(make(chan amqp091.Return, n))
	return ch, confirms, returns
}

// waitConfirm waits for the next publisher confirm.
func waitConfirm(t testing.TB, confirms <-chan amqp091.Confirmation) amqp091.Confirmation {
	t.Helper()
	select {
	case c, ok := <-confirms:
		if !ok {
			t.Fatalf("confirm channel closed (channel closed?) while waiting for a confirm")
		}
		return c
	case <-time.After(waitTimeout):
		t.Fatalf("no publisher confirm within %v", waitTimeout)
	}
	panic("unreachable")
}

// header returns a header of d, failing if it is absent.
func header(t testing.TB, d amqp091.Delivery, key string) any {
	t.Helper()
	v, ok := d.Headers[key]
	if !ok {
		t.Fatalf("delivery %q has no header %q (headers %v)", d.Body, key, d.Headers)
	}
	return v
}

// xDeath returns the i-th x-death entry of d.
func xDeath(t testing.TB, d amqp091.Delivery, i int) amqp091.Table {
	t.Helper()
	deaths, ok := header(t, d, "x-death").([]any)
	if !ok || len(deaths) <= i {
		t.Fatalf("x-death of %q is %#v, want at least %d entries", d.Body, d.Headers["x-death"], i+1)
	}
	e, ok := deaths[i].(amqp091.Table)
	if !ok {
		t.Fatalf("x-death[%d] is %T, want a table", i, deaths[i])
	}
	return e
}

// fieldEqual compares AMQP field values as the client decodes them: times
// by instant, empty and nil arrays alike, tables and arrays recursively.
func fieldEqual(a, b any) bool {
	switch x := a.(type) {
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	case amqp091.Table:
		y, ok := b.(amqp091.Table)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !fieldEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !fieldEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

// ---- raw-socket client ----

// rawConn is a hand-driven AMQP client for inputs amqp091-go cannot send.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	r  *wire.Reader
}

// rawDial connects to addr; cleanup closes the socket.
func rawDial(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	r := wire.NewReader(nc)
	r.SetMaxFrameSize(1 << 20)
	return &rawConn{t: t, nc: nc, r: r}
}

// write sends raw bytes.
func (c *rawConn) write(b []byte) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(waitTimeout))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("raw write: %v", err)
	}
}

// sendMethod sends one method frame.
func (c *rawConn) sendMethod(channel uint16, m wire.Method) {
	c.t.Helper()
	c.write(wire.AppendMethodFrame(nil, channel, m))
}

// readFrame reads one frame within d; the payload is copied.
func (c *rawConn) readFrame(d time.Duration) (wire.Frame, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	f, err := c.r.ReadFrame()
	if err != nil {
		return wire.Frame{}, err
	}
	f.Payload = append([]byte(nil), f.Payload...)
	return f, nil
}

// readMethod reads frames until a method frame arrives (heartbeats are
// skipped) and decodes it.
func (c *rawConn) readMethod() (uint16, wire.Method) {
	c.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		f, err := c.readFrame(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("raw read: %v", err)
		}
		if f.Type == wire.FrameHeartbeat {
			continue
		}
		if f.Type != wire.FrameMethod {
			c.t.Fatalf("raw read: frame type %d on channel %d, want a method", f.Type, f.Channel)
		}
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			c.t.Fatalf("raw read: decode method: %v", err)
		}
		return f.Channel, m
	}
}

// expectMethod reads the next method and checks its type.
func expectMethod[M wire.Method](c *rawConn) M {
	c.t.Helper()
	_, m := c.readMethod()
	x, ok := m.(M)
	if !ok {
		var zero M
		c.t.Fatalf("raw read: got %T %+v, want %T", m, m, zero)
	}
	return x
}

// handshake runs the client side of the connection handshake as guest on
// vhost "/". tuneOk computes the tune-ok from the server's tune; nil accepts
// the server's proposal.
func (c *rawConn) handshake(tuneOk func(*wire.ConnectionTune) *wire.ConnectionTuneOk) *wire.ConnectionTune {
	c.t.Helper()
	c.write([]byte(wire.ProtocolHeader))
	expectMethod[*wire.ConnectionStart](c)
	c.sendMethod(0, &wire.ConnectionStartOk{
		ClientProperties: core.Table{"product": "ferrymq e2e raw client"},
		Mechanism:        "PLAIN",
		Response:         "\x00guest\x00guest",
		Locale:           "en_US",
	})
	tune := expectMethod[*wire.ConnectionTune](c)
	ok := &wire.ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax, Heartbeat: tune.Heartbeat}
	if tuneOk != nil {
		ok = tuneOk(tune)
	}
	c.sendMethod(0, ok)
	c.sendMethod(0, &wire.ConnectionOpen{VirtualHost: "/"})
	expectMethod[*wire.ConnectionOpenOk](c)
	return tune
}

// waitClosed reads (and returns) whatever the server still sends until it
// closes the socket, and fails if that takes longer than limit. It returns
// the decoded methods and how long it waited.
func (c *rawConn) waitClosed(limit time.Duration) ([]wire.Method, []wire.Frame, time.Duration) {
	c.t.Helper()
	start := time.Now()
	deadline := start.Add(limit)
	var methods []wire.Method
	var frames []wire.Frame
	for {
		f, err := c.readFrame(time.Until(deadline))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.t.Fatalf("server did not close the socket within %v (got methods %s)", limit, methodNames(methods))
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isConnReset(err) {
				c.t.Fatalf("raw read while waiting for close: %v", err)
			}
			return methods, frames, time.Since(start)
		}
		frames = append(frames, f)
		if f.Type == wire.FrameMethod {
			if m, err := wire.DecodeMethod(f.Payload); err == nil {
				methods = append(methods, m)
			}
		}
	}
}

func isConnReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

func methodNames(ms []wire.Method) string {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = fmt.Sprintf("%s%+v", wire.MethodName(m.ID()), m)
	}
	return "[" + strings.Join(names, ", ") + "]"
}
