// Package mqtttest connects MQTT and AMQP clients to a ferrymq under test,
// in process or the real binary, so that the mqtt package's protocol tests
// and interop_test drive it the same way: eclipse/paho.golang (MQTT 5) and
// eclipse/paho.mqtt.golang (3.1.1) with their messages on channels, and
// amqp091-go around amq.topic. Every helper fails the test on an error and
// waits on events with a deadline, never a sleep.
package mqtttest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Wait bounds each wait for one thing the broker should do: a CONNACK,
// SUBACK, PUBACK, a delivery, a closed socket. Many of those wait for the
// store (a persistent session, a QoS 1 message to a durable queue), and
// package mqtt's tests run the broker in process under -race beside other
// packages' tests: on a loaded 2-core machine that is seconds, as
// package amqp found (its waitTimeout). It is only waited out when
// something is wrong.
const Wait = 20 * time.Second

// WaitFor returns the next value from ch, failing the test if none comes
// within d or ch is closed.
func WaitFor[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
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

// VersionName names MQTT protocol level v (4: 3.1.1, 5) in test and
// client names.
func VersionName(v int) string {
	if v == 5 {
		return "mqtt5"
	}
	return "mqtt311"
}

// Ctx is a context that ends after Wait or with the test.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	t.Cleanup(cancel)
	return ctx
}

// ---- MQTT 5: eclipse/paho.golang ----

// V5Options configure an MQTT 5 connection. The zero value is a clean
// session of client "" authenticated as guest/guest over TCP.
type V5Options struct {
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

// V5Client is a connected paho.golang client whose incoming PUBLISH packets
// go to Msgs, in the order received.
type V5Client struct {
	*paho.Client
	// Conn is the network connection; closing it kills the socket without a
	// DISCONNECT, as a crash or a lost network would.
	Conn        net.Conn
	Connack     *paho.Connack
	Msgs        chan *paho.Publish
	Disconnects chan *paho.Disconnect // DISCONNECT packets from the server
}

// DialV5 connects an MQTT 5 client to addr. It returns the CONNACK and the
// error of a refused or failed connection; a connected client is
// disconnected when the test ends.
func DialV5(t testing.TB, addr string, o V5Options) (*V5Client, *paho.Connack, error) {
	t.Helper()
	conn := o.Conn
	if conn == nil {
		var err error
		conn, err = net.DialTimeout("tcp", addr, Wait)
		if err != nil {
			return nil, nil, err
		}
	}
	if o.Buffer == 0 {
		o.Buffer = 1024
	}
	c := &V5Client{Conn: conn, Msgs: make(chan *paho.Publish, o.Buffer), Disconnects: make(chan *paho.Disconnect, 1)}
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
	ca, err := c.Connect(Ctx(t), cp)
	if err != nil {
		conn.Close()
		return nil, ca, err
	}
	c.Connack = ca
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
	return c, ca, nil
}

// ConnectV5 connects an MQTT 5 client to addr or fails the test.
func ConnectV5(t testing.TB, addr string, o V5Options) *V5Client {
	t.Helper()
	c, ca, err := DialV5(t, addr, o)
	if err != nil {
		code := -1
		if ca != nil {
			code = int(ca.ReasonCode)
		}
		t.Fatalf("MQTT 5 connect of %q to %s: %v (CONNACK reason %#x)", o.ClientID, addr, err, code)
	}
	return c
}

// SubscribeAt subscribes to each filter at qos and fails the test unless the
// SUBACK grants every one.
func (c *V5Client) SubscribeAt(t testing.TB, qos byte, filters ...string) {
	t.Helper()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: qos})
	}
	sa, err := c.Subscribe(Ctx(t), s)
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

// PublishAcked sends p and, for QoS 1 and 2, waits for the PUBACK or PUBCOMP,
// failing the test on an error or a reason code >= 0x80.
func (c *V5Client) PublishAcked(t testing.TB, p *paho.Publish) {
	t.Helper()
	pr, err := c.Publish(Ctx(t), p)
	if err != nil {
		t.Fatalf("publish to %q at QoS %d: %v", p.Topic, p.QoS, err)
	}
	if pr != nil && pr.ReasonCode >= 0x80 {
		t.Fatalf("publish to %q at QoS %d: reason %#x", p.Topic, p.QoS, pr.ReasonCode)
	}
}

// Send publishes payload to topic at qos.
func (c *V5Client) Send(t testing.TB, topic string, qos byte, payload string) {
	t.Helper()
	c.PublishAcked(t, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
}

// Next returns the next message the client received.
func (c *V5Client) Next(t testing.TB, what string) *paho.Publish {
	t.Helper()
	return WaitFor(t, c.Msgs, Wait, what)
}

// Until collects messages until one with payload sentinel arrives and
// returns the ones before it.
func (c *V5Client) Until(t testing.TB, sentinel string) []*paho.Publish {
	t.Helper()
	var got []*paho.Publish
	for {
		m := c.Next(t, fmt.Sprintf("message %d or sentinel %q (after %s)", len(got), sentinel, V5Topics(got)))
		if string(m.Payload) == sentinel {
			return got
		}
		got = append(got, m)
	}
}

// V5Topics lists the topics and payloads of ms, for failure messages.
func V5Topics(ms []*paho.Publish) string {
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

// V3Options configure an MQTT 3.1.1 connection; the zero value is a clean
// session authenticated as guest/guest over TCP.
type V3Options struct {
	ClientID           string
	Username, Password string // guest/guest when both are empty
	// Persistent sends Clean Session 0 [MQTT-3.1.2-4].
	Persistent bool
	// URL is the broker URL; default tcp://<MQTTAddr>.
	URL  string
	Will *V3Will
	// Buffer is the capacity of Msgs; default 1024.
	Buffer int
}

// V3Will is the will of an MQTT 3.1.1 connection.
type V3Will struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
}

// V3Client is a connected paho.mqtt.golang client whose incoming messages
// go to Msgs.
type V3Client struct {
	mqtt3.Client
	Msgs           chan mqtt3.Message
	SessionPresent bool

	mu   sync.Mutex
	conn net.Conn // the TCP connection, when the URL is tcp://
}

// DialV3 connects an MQTT 3.1.1 client; it returns the CONNACK return code
// and the error of a refused or failed connection.
func DialV3(t testing.TB, addr string, o V3Options) (*V3Client, byte, error) {
	t.Helper()
	if o.URL == "" {
		o.URL = "tcp://" + addr
	}
	if o.Username == "" && o.Password == "" {
		o.Username, o.Password = "guest", "guest"
	}
	if o.Buffer == 0 {
		o.Buffer = 1024
	}
	c := &V3Client{Msgs: make(chan mqtt3.Message, o.Buffer)}
	opts := mqtt3.NewClientOptions().
		AddBroker(o.URL).
		SetProtocolVersion(4).
		SetClientID(o.ClientID).
		SetUsername(o.Username).
		SetPassword(o.Password).
		SetCleanSession(!o.Persistent).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(Wait).
		SetKeepAlive(30 * time.Second).
		SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) { c.Msgs <- m })
	if u, err := url.Parse(o.URL); err == nil && u.Scheme == "tcp" {
		opts.SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt3.ClientOptions) (net.Conn, error) {
			conn, err := net.DialTimeout("tcp", u.Host, Wait)
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
	if !tok.WaitTimeout(Wait) {
		return nil, 0, fmt.Errorf("no CONNACK within %v", Wait)
	}
	ct := tok.(*mqtt3.ConnectToken)
	if err := tok.Error(); err != nil {
		return nil, ct.ReturnCode(), err
	}
	c.SessionPresent = ct.SessionPresent()
	t.Cleanup(func() { c.Disconnect(100) })
	return c, ct.ReturnCode(), nil
}

// ConnectV3 connects an MQTT 3.1.1 client to addr or fails the test.
func ConnectV3(t testing.TB, addr string, o V3Options) *V3Client {
	t.Helper()
	c, rc, err := DialV3(t, addr, o)
	if err != nil {
		t.Fatalf("MQTT 3.1.1 connect of %q: %v (return code %d)", o.ClientID, err, rc)
	}
	return c
}

// KillConn closes the TCP connection under the client, without DISCONNECT.
func (c *V3Client) KillConn(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		t.Fatal("no TCP connection captured")
	}
	c.conn.Close()
}

// WaitToken waits for tok and fails the test if it is not done within
// Wait or failed.
func WaitToken(t testing.TB, tok mqtt3.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(Wait) {
		t.Fatalf("%s: not done within %v", what, Wait)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// SubscribeAt subscribes to each filter at qos and fails the test unless
// the SUBACK grants every one.
func (c *V3Client) SubscribeAt(t testing.TB, qos byte, filters ...string) {
	t.Helper()
	m := make(map[string]byte, len(filters))
	for _, f := range filters {
		m[f] = qos
	}
	tok := c.SubscribeMultiple(m, nil)
	WaitToken(t, tok, fmt.Sprintf("subscribe %v", filters))
	for f, g := range tok.(*mqtt3.SubscribeToken).Result() {
		if g != qos {
			t.Fatalf("subscribe %q at QoS %d: granted %#x", f, qos, g)
		}
	}
}

// Send publishes payload to topic and waits for its acknowledgement.
func (c *V3Client) Send(t testing.TB, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	WaitToken(t, c.Publish(topic, qos, retain, payload), fmt.Sprintf("publish to %q at QoS %d", topic, qos))
}

// Next returns the next message the client received.
func (c *V3Client) Next(t testing.TB, what string) mqtt3.Message {
	t.Helper()
	return WaitFor(t, c.Msgs, Wait, what)
}

// ---- a received message of either client ----

// Msg is what a test checks of a delivered message, whichever client
// received it.
type Msg struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
}

// FromV5 is what a test checks of a message paho.golang received.
func FromV5(p *paho.Publish) Msg {
	return Msg{Topic: p.Topic, Payload: string(p.Payload), QoS: p.QoS, Retain: p.Retain}
}

// FromV3 is what a test checks of a message paho.mqtt.golang received.
func FromV3(m mqtt3.Message) Msg {
	return Msg{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos(), Retain: m.Retained()}
}

// Endpoint is an MQTT client of either protocol version, so one table
// row can run with both.
type Endpoint interface {
	SubscribeAt(t testing.TB, qos byte, filters ...string)
	SendMsg(t testing.TB, topic string, qos byte, retain bool, payload string)
	NextMsg(t testing.TB, what string) Msg
}

// SendMsg publishes payload to topic as an Endpoint.
func (c *V5Client) SendMsg(t testing.TB, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	c.PublishAcked(t, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte(payload)})
}

// NextMsg returns the next message received as an Endpoint.
func (c *V5Client) NextMsg(t testing.TB, what string) Msg {
	t.Helper()
	return FromV5(c.Next(t, what))
}

// SendMsg publishes payload to topic as an Endpoint.
func (c *V3Client) SendMsg(t testing.TB, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	c.Send(t, topic, qos, retain, payload)
}

// NextMsg returns the next message received as an Endpoint.
func (c *V3Client) NextMsg(t testing.TB, what string) Msg {
	t.Helper()
	return FromV3(c.Next(t, what))
}

// Connect connects a clean-session client of MQTT version v (4 for
// 3.1.1, 5) with the given client id.
func Connect(t testing.TB, addr string, v int, clientID string) Endpoint {
	t.Helper()
	if v == 5 {
		return ConnectV5(t, addr, V5Options{ClientID: clientID})
	}
	return ConnectV3(t, addr, V3Options{ClientID: clientID})
}

// UntilMsg collects messages until one with payload sentinel arrives and
// returns the ones before it.
func UntilMsg(t testing.TB, c Endpoint, sentinel string) []Msg {
	t.Helper()
	var got []Msg
	for {
		m := c.NextMsg(t, fmt.Sprintf("message %d or sentinel %q (after %v)", len(got), sentinel, got))
		if m.Payload == sentinel {
			return got
		}
		got = append(got, m)
	}
}

// AMQPSubscribe declares a server-named exclusive queue bound to amq.topic
// with each key and consumes it with auto-ack.
func AMQPSubscribe(t testing.TB, ch *amqp.Channel, keys ...string) (string, <-chan amqp.Delivery) {
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

// AMQPPublisher publishes to amq.topic on a channel in confirm mode and
// waits for each confirm, so what it published is routed (and, if
// persistent, stored) when PublishAcked returns.
type AMQPPublisher struct{ ch *amqp.Channel }

// NewAMQPPublisher dials amqpURL and opens a channel in confirm mode,
// closed when the test ends.
func NewAMQPPublisher(t testing.TB, amqpURL string) AMQPPublisher {
	t.Helper()
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(Wait)})
	if err != nil {
		t.Fatalf("dial %s: %v", amqpURL, err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	return AMQPPublisher{ch}
}

// PublishAcked publishes msg to amq.topic with key and waits for the
// broker's confirm.
func (p AMQPPublisher) PublishAcked(t testing.TB, key string, msg amqp.Publishing) {
	t.Helper()
	ctx := Ctx(t)
	dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, "amq.topic", key, false, false, msg)
	if err != nil {
		t.Fatalf("publish %q: %v", key, err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil || !ok {
		t.Fatalf("publish %q: confirm ack=%v err=%v", key, ok, err)
	}
}

// Send publishes body to amq.topic with key, persistent or not.
func (p AMQPPublisher) Send(t testing.TB, key string, persistent bool, body string) {
	t.Helper()
	mode := amqp.Transient
	if persistent {
		mode = amqp.Persistent
	}
	p.PublishAcked(t, key, amqp.Publishing{DeliveryMode: mode, Body: []byte(body)})
}

// AMQPUntil collects deliveries until one with body sentinel arrives and
// returns the ones before it.
func AMQPUntil(t testing.TB, d <-chan amqp.Delivery, sentinel string) []amqp.Delivery {
	t.Helper()
	var got []amqp.Delivery
	for {
		m := WaitFor(t, d, Wait, fmt.Sprintf("delivery %d or sentinel %q", len(got), sentinel))
		if string(m.Body) == sentinel {
			return got
		}
		got = append(got, m)
	}
}
