package interop_test

// Helpers for the MQTT interop tests: MQTT 5 clients (eclipse/paho.golang),
// MQTT 3.1.1 clients (eclipse/paho.mqtt.golang), AMQP helpers around
// amq.topic, a WebSocket net.Conn for paho.golang, and a raw MQTT codec just
// big enough for the bad-input tests.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"
)

// mqttWait bounds each wait for one thing the broker should do: a CONNACK,
// SUBACK, PUBACK, a delivery, a closed socket.
const mqttWait = 10 * time.Second

// waitFor returns the next value from ch, failing the test if none comes
// within d or ch is closed.
func waitFor[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return v
	case <-timer.C:
		t.Fatalf("%s: nothing within %v", what, d)
	}
	var zero T
	return zero
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), mqttWait)
	t.Cleanup(cancel)
	return ctx
}

// ---- MQTT 5: eclipse/paho.golang ----

// v5Options configure an MQTT 5 connection. The zero value is a clean
// session of client "" authenticated as guest/guest over TCP.
type v5Options struct {
	ClientID string
	// Username and Password default to guest/guest when both are empty.
	Username, Password string
	// Resume sends Clean Start 0, to pick up an existing session.
	Resume bool
	// SessionExpiry > 0 makes the session persistent [MQTT-3.1.2-23].
	SessionExpiry uint32
	Will          *paho.WillMessage
	WillProps     *paho.WillProperties
	// Conn is an already-dialled connection (WebSocket); nil dials TCP to
	// the broker's MQTT listener.
	Conn net.Conn
	// Buffer is the capacity of Msgs; the client stops reading the socket
	// (and acking) while Msgs is full. Default 1024.
	Buffer int
}

// v5Client is a connected paho.golang client whose incoming PUBLISH packets
// go to Msgs, in the order received.
type v5Client struct {
	*paho.Client
	// Conn is the network connection; closing it kills the socket without a
	// DISCONNECT, as a crash or a lost network would.
	Conn        net.Conn
	Connack     *paho.Connack
	Msgs        chan *paho.Publish
	Disconnects chan *paho.Disconnect // DISCONNECT packets from the server
}

// dialV5 connects an MQTT 5 client to addr. It returns the CONNACK and the
// error of a refused or failed connection; a connected client is
// disconnected when the test ends.
func dialV5(t testing.TB, addr string, o v5Options) (*v5Client, *paho.Connack, error) {
	t.Helper()
	conn := o.Conn
	if conn == nil {
		var err error
		conn, err = net.DialTimeout("tcp", addr, mqttWait)
		if err != nil {
			return nil, nil, err
		}
	}
	if o.Buffer == 0 {
		o.Buffer = 1024
	}
	c := &v5Client{Conn: conn, Msgs: make(chan *paho.Publish, o.Buffer), Disconnects: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.Msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.Disconnects <- d:
			default:
			}
		},
	})
	cp := &paho.Connect{
		ClientID:       o.ClientID,
		KeepAlive:      30,
		CleanStart:     !o.Resume,
		Username:       o.Username,
		Password:       []byte(o.Password),
		UsernameFlag:   true,
		PasswordFlag:   true,
		WillMessage:    o.Will,
		WillProperties: o.WillProps,
	}
	if o.Username == "" && o.Password == "" {
		cp.Username, cp.Password = "guest", []byte("guest")
	}
	if o.SessionExpiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &o.SessionExpiry}
	}
	ca, err := c.Connect(testCtx(t), cp)
	if err != nil {
		conn.Close()
		return nil, ca, err
	}
	c.Connack = ca
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
	return c, ca, nil
}

// connectV5 connects an MQTT 5 client to b's MQTT listener or fails the test.
func connectV5(t testing.TB, b *Broker, o v5Options) *v5Client {
	t.Helper()
	c, ca, err := dialV5(t, b.MQTTAddr, o)
	if err != nil {
		code := -1
		if ca != nil {
			code = int(ca.ReasonCode)
		}
		t.Fatalf("MQTT 5 connect of %q to %s: %v (CONNACK reason %#x)", o.ClientID, b.MQTTAddr, err, code)
	}
	return c
}

// subscribe subscribes to each filter at qos and fails the test unless the
// SUBACK grants every one.
func (c *v5Client) subscribe(t testing.TB, qos byte, filters ...string) {
	t.Helper()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: qos})
	}
	sa, err := c.Subscribe(testCtx(t), s)
	if err != nil {
		t.Fatalf("subscribe %v at QoS %d: %v", filters, qos, err)
	}
	for i, r := range sa.Reasons {
		if r >= 0x80 {
			t.Fatalf("subscribe %q: SUBACK reason %#x", filters[i], r)
		}
		if r != qos {
			// The server may grant less [MQTT-3.9.3], but ferrymq grants all.
			t.Fatalf("subscribe %q at QoS %d: granted %d", filters[i], qos, r)
		}
	}
}

// publish sends p and, for QoS 1 and 2, waits for the PUBACK or PUBCOMP,
// failing the test on an error or a reason code >= 0x80.
func (c *v5Client) publish(t testing.TB, p *paho.Publish) {
	t.Helper()
	pr, err := c.Publish(testCtx(t), p)
	if err != nil {
		t.Fatalf("publish to %q at QoS %d: %v", p.Topic, p.QoS, err)
	}
	if pr != nil && pr.ReasonCode >= 0x80 {
		t.Fatalf("publish to %q at QoS %d: reason %#x", p.Topic, p.QoS, pr.ReasonCode)
	}
}

// send publishes payload to topic at qos.
func (c *v5Client) send(t testing.TB, topic string, qos byte, payload string) {
	t.Helper()
	c.publish(t, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
}

// next returns the next message the client received.
func (c *v5Client) next(t testing.TB, what string) *paho.Publish {
	t.Helper()
	return waitFor(t, c.Msgs, mqttWait, what)
}

// until collects messages until one with payload sentinel arrives and
// returns the ones before it.
func (c *v5Client) until(t testing.TB, sentinel string) []*paho.Publish {
	t.Helper()
	var got []*paho.Publish
	for {
		m := c.next(t, fmt.Sprintf("message %d or sentinel %q (after %s)", len(got), sentinel, v5Topics(got)))
		if string(m.Payload) == sentinel {
			return got
		}
		got = append(got, m)
	}
}

func v5Topics(ms []*paho.Publish) string {
	var b bytes.Buffer
	for i, m := range ms {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%q", m.Topic, m.Payload)
	}
	return "[" + b.String() + "]"
}

// ---- MQTT 3.1.1: eclipse/paho.mqtt.golang ----

// v3Options configure an MQTT 3.1.1 connection; the zero value is a clean
// session authenticated as guest/guest over TCP.
type v3Options struct {
	ClientID           string
	Username, Password string // guest/guest when both are empty
	// Persistent sends Clean Session 0 [MQTT-3.1.2-4].
	Persistent bool
	// URL is the broker URL; default tcp://<MQTTAddr>.
	URL  string
	Will *v3Will
	// Buffer is the capacity of Msgs; default 1024.
	Buffer int
}

type v3Will struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
}

// v3Client is a connected paho.mqtt.golang client whose incoming messages
// go to Msgs.
type v3Client struct {
	mqtt3.Client
	Msgs           chan mqtt3.Message
	SessionPresent bool

	mu   sync.Mutex
	conn net.Conn // the TCP connection, when the URL is tcp://
}

// dialV3 connects an MQTT 3.1.1 client; it returns the CONNACK return code
// and the error of a refused or failed connection.
func dialV3(t testing.TB, b *Broker, o v3Options) (*v3Client, byte, error) {
	t.Helper()
	if o.URL == "" {
		o.URL = "tcp://" + b.MQTTAddr
	}
	if o.Username == "" && o.Password == "" {
		o.Username, o.Password = "guest", "guest"
	}
	if o.Buffer == 0 {
		o.Buffer = 1024
	}
	c := &v3Client{Msgs: make(chan mqtt3.Message, o.Buffer)}
	opts := mqtt3.NewClientOptions().
		AddBroker(o.URL).
		SetProtocolVersion(4).
		SetClientID(o.ClientID).
		SetUsername(o.Username).
		SetPassword(o.Password).
		SetCleanSession(!o.Persistent).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(mqttWait).
		SetKeepAlive(30 * time.Second).
		SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) { c.Msgs <- m })
	if u, err := url.Parse(o.URL); err == nil && u.Scheme == "tcp" {
		opts.SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt3.ClientOptions) (net.Conn, error) {
			conn, err := net.DialTimeout("tcp", u.Host, mqttWait)
			if err == nil {
				c.mu.Lock()
				c.conn = conn
				c.mu.Unlock()
			}
			return conn, err
		})
	}
	if w := o.Will; w != nil {
		opts.SetWill(w.Topic, w.Payload, w.QoS, w.Retain)
	}
	c.Client = mqtt3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(mqttWait) {
		return nil, 0, fmt.Errorf("no CONNACK within %v", mqttWait)
	}
	ct := tok.(*mqtt3.ConnectToken)
	if err := tok.Error(); err != nil {
		return nil, ct.ReturnCode(), err
	}
	c.SessionPresent = ct.SessionPresent()
	t.Cleanup(func() { c.Disconnect(100) })
	return c, ct.ReturnCode(), nil
}

func connectV3(t testing.TB, b *Broker, o v3Options) *v3Client {
	t.Helper()
	c, rc, err := dialV3(t, b, o)
	if err != nil {
		t.Fatalf("MQTT 3.1.1 connect of %q: %v (return code %d)", o.ClientID, err, rc)
	}
	return c
}

// killConn closes the TCP connection under the client, without DISCONNECT.
func (c *v3Client) killConn(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		t.Fatal("no TCP connection captured")
	}
	c.conn.Close()
}

func waitToken(t testing.TB, tok mqtt3.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(mqttWait) {
		t.Fatalf("%s: not done within %v", what, mqttWait)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func (c *v3Client) subscribe(t testing.TB, qos byte, filters ...string) {
	t.Helper()
	m := make(map[string]byte, len(filters))
	for _, f := range filters {
		m[f] = qos
	}
	tok := c.SubscribeMultiple(m, nil)
	waitToken(t, tok, fmt.Sprintf("subscribe %v", filters))
	for f, g := range tok.(*mqtt3.SubscribeToken).Result() {
		if g != qos {
			t.Fatalf("subscribe %q at QoS %d: granted %#x", f, qos, g)
		}
	}
}

func (c *v3Client) send(t testing.TB, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	waitToken(t, c.Publish(topic, qos, retain, payload), fmt.Sprintf("publish to %q at QoS %d", topic, qos))
}

func (c *v3Client) next(t testing.TB, what string) mqtt3.Message {
	t.Helper()
	return waitFor(t, c.Msgs, mqttWait, what)
}

// ---- a received message of either client ----

// mqttMsg is what a test checks of a delivered message, whichever client
// received it.
type mqttMsg struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
}

func fromV5(p *paho.Publish) mqttMsg {
	return mqttMsg{Topic: p.Topic, Payload: string(p.Payload), QoS: p.QoS, Retain: p.Retain}
}

func fromV3(m mqtt3.Message) mqttMsg {
	return mqttMsg{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos(), Retain: m.Retained()}
}

// mqttEndpoint is an MQTT client of either protocol version, so one table
// row can run with both.
type mqttEndpoint interface {
	subscribe(t testing.TB, qos byte, filters ...string)
	sendMsg(t testing.TB, topic string, qos byte, retain bool, payload string)
	nextMsg(t testing.TB, what string) mqttMsg
}

func (c *v5Client) sendMsg(t testing.TB, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	c.publish(t, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte(payload)})
}

func (c *v5Client) nextMsg(t testing.TB, what string) mqttMsg {
	t.Helper()
	return fromV5(c.next(t, what))
}

func (c *v3Client) sendMsg(t testing.TB, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	c.send(t, topic, qos, retain, payload)
}

func (c *v3Client) nextMsg(t testing.TB, what string) mqttMsg {
	t.Helper()
	return fromV3(c.next(t, what))
}

// connectMQTT connects a clean-session client of MQTT version v (4 for
// 3.1.1, 5) with the given client id.
func connectMQTT(t testing.TB, b *Broker, v int, clientID string) mqttEndpoint {
	t.Helper()
	if v == 5 {
		return connectV5(t, b, v5Options{ClientID: clientID})
	}
	return connectV3(t, b, v3Options{ClientID: clientID})
}

// untilMsg collects messages until one with payload sentinel arrives and
// returns the ones before it.
func untilMsg(t testing.TB, c mqttEndpoint, sentinel string) []mqttMsg {
	t.Helper()
	var got []mqttMsg
	for {
		m := c.nextMsg(t, fmt.Sprintf("message %d or sentinel %q (after %v)", len(got), sentinel, got))
		if m.Payload == sentinel {
			return got
		}
		got = append(got, m)
	}
}

// ---- AMQP side ----

// amqpSubscribe declares a server-named exclusive queue bound to amq.topic
// with each key and consumes it with auto-ack.
func amqpSubscribe(t testing.TB, ch *amqp.Channel, keys ...string) (string, <-chan amqp.Delivery) {
	t.Helper()
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatalf("queue.declare: %v", err)
	}
	for _, k := range keys {
		if err := ch.QueueBind(q.Name, k, "amq.topic", false, nil); err != nil {
			t.Fatalf("queue.bind %q: %v", k, err)
		}
	}
	d, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatalf("basic.consume: %v", err)
	}
	return q.Name, d
}

// amqpPublisher publishes to amq.topic on a channel in confirm mode and
// waits for each confirm, so what it published is routed (and, if
// persistent, stored) when publish returns.
type amqpPublisher struct{ ch *amqp.Channel }

func newAMQPPublisher(t testing.TB, b *Broker) amqpPublisher {
	t.Helper()
	conn, err := amqp.DialConfig(b.URL, amqp.Config{Dial: amqp.DefaultDial(mqttWait)})
	if err != nil {
		t.Fatalf("dial %s: %v", b.URL, err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return amqpPublisher{ch}
}

func (p amqpPublisher) publish(t testing.TB, key string, msg amqp.Publishing) {
	t.Helper()
	ctx := testCtx(t)
	dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, "amq.topic", key, false, false, msg)
	if err != nil {
		t.Fatalf("publish %q: %v", key, err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil || !ok {
		t.Fatalf("publish %q: confirm ack=%v err=%v", key, ok, err)
	}
}

// send publishes body to amq.topic with key, persistent or not.
func (p amqpPublisher) send(t testing.TB, key string, persistent bool, body string) {
	t.Helper()
	mode := amqp.Transient
	if persistent {
		mode = amqp.Persistent
	}
	p.publish(t, key, amqp.Publishing{DeliveryMode: mode, Body: []byte(body)})
}

// amqpUntil collects deliveries until one with body sentinel arrives and
// returns the ones before it.
func amqpUntil(t testing.TB, d <-chan amqp.Delivery, sentinel string) []amqp.Delivery {
	t.Helper()
	var got []amqp.Delivery
	for {
		m := waitFor(t, d, mqttWait, fmt.Sprintf("delivery %d or sentinel %q", len(got), sentinel))
		if string(m.Body) == sentinel {
			return got
		}
		got = append(got, m)
	}
}

// headerInt returns an integer AMQP table value of any width.
func headerInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int8:
		return int64(n), true
	case uint8:
		return int64(n), true
	case int16:
		return int64(n), true
	case uint16:
		return int64(n), true
	case int32:
		return int64(n), true
	case uint32:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	}
	return 0, false
}

// headerBytes returns a string or byte-array AMQP table value as bytes.
func headerBytes(v any) ([]byte, bool) {
	switch s := v.(type) {
	case string:
		return []byte(s), true
	case []byte:
		return s, true
	}
	return nil, false
}

// ---- MQTT over WebSocket for paho.golang ----

// wsConn is a net.Conn over a WebSocket, as MQTT over WebSocket frames it
// [MQTT-6.0.0-1]: binary messages, with packets free to span or share
// messages [MQTT-6.0.0-2]. paho.golang locks it (sync.Locker) around each
// packet it writes, and reads from one goroutine.
type wsConn struct {
	*websocket.Conn
	sync.Mutex
	r io.Reader
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, fmt.Errorf("websocket message type %d, want binary [MQTT-6.0.0-1]", typ)
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// dialWS opens ws://addr/mqtt with subprotocol "mqtt" and checks that the
// server selected it [MQTT-6.0.0-3].
func dialWS(t testing.TB, addr string) net.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: mqttWait}
	ws, resp, err := d.Dial("ws://"+addr+"/mqtt", nil)
	if err != nil {
		t.Fatalf("websocket dial ws://%s/mqtt: %v", addr, err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "mqtt" {
		ws.Close()
		t.Fatalf("websocket subprotocol %q, want \"mqtt\" [MQTT-6.0.0-3]", got)
	}
	return &wsConn{Conn: ws}
}

// ---- raw MQTT, for bad input ----

func mqttVarint(n int) []byte {
	var b []byte
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

// mqttStr is a two-byte length and the bytes of s, valid UTF-8 or not.
func mqttStr(s string) []byte {
	return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...)
}

// mqttPkt is a packet with first byte first and the parts as its body.
func mqttPkt(first byte, parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	return append(append([]byte{first}, mqttVarint(len(body))...), body...)
}

// rawConnectPacket is a CONNECT of protocol level version (4: 3.1.1, 5)
// with clean start, keepalive 60 s and guest/guest.
func rawConnectPacket(version byte, clientID string) []byte {
	vh := append(mqttStr("MQTT"), version, 0xC2, 0, 60)
	if version == 5 {
		vh = append(vh, 0) // no properties
	}
	return mqttPkt(0x10, vh, mqttStr(clientID), mqttStr("guest"), mqttStr("guest"))
}

// rawConnect opens a TCP connection, sends CONNECT and checks that the
// CONNACK accepts it.
func rawConnect(t testing.TB, addr string, version byte, clientID string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, mqttWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write(rawConnectPacket(version, clientID)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(mqttWait))
	r := bufio.NewReader(conn)
	first, body, err := readMQTTPacket(r)
	if err != nil {
		t.Fatalf("raw CONNECT (level %d): no CONNACK: %v", version, err)
	}
	if first != 0x20 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("raw CONNECT (level %d): got packet %#x % x, want a successful CONNACK", version, first, body)
	}
	conn.SetReadDeadline(time.Time{})
	return conn, r
}

// readMQTTPacket reads one packet: its first byte and its body.
func readMQTTPacket(r *bufio.Reader) (byte, []byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(c&0x7f) * mul
		mul *= 128
		if c&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("remaining length over four bytes")
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return first, body, err
}
