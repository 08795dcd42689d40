package interop_test

// MQTT features beyond routing, each asserted as the MQTT 3.1.1 and 5.0
// standards word it: keepalive, session takeover, topic aliases,
// subscription identifiers, No Local, Retain As Published, Retain
// Handling, flow control (Receive Maximum) in both directions, CONNACK,
// message expiry and UNSUBSCRIBE.
//
// Statement ids are the 5.0 standard's unless marked (3.1.1). Where a
// client library hides what a statement is about (paho acknowledges at
// once, keeps one of several Subscription Identifiers, never leaves a
// PUBREL without its PUBCOMP), a raw client drives the socket.
//
// As in the other MQTT tests, absence is shown with a sentinel published
// after the messages under test into the same subscription queue: what
// came before the sentinel is all that was sent. Flow control is shown
// from the AMQP side too: the session's queue, declared passively, holds
// the messages the broker must not send yet.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"

	mqtttopic "github.com/ferrymq/ferrymq/mqtt/topic"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// ---- a raw MQTT client ----

// MQTT control packet types (section 2.1.2).
const (
	typConnack    = 2
	typPublish    = 3
	typPuback     = 4
	typPubrec     = 5
	typPubrel     = 6
	typPubcomp    = 7
	typSuback     = 9
	typUnsuback   = 11
	typPingresp   = 13
	typDisconnect = 14
)

// MQTT 5 property identifiers (section 2.2.2.2).
const (
	propMessageExpiry   = 0x02
	propSubID           = 0x0B
	propSessionExpiry   = 0x11
	propServerKeepAlive = 0x13
	propReceiveMaximum  = 0x21
	propTopicAliasMax   = 0x22
	propTopicAlias      = 0x23
	propMaxPacketSize   = 0x27
	propSubIDAvailable  = 0x29
)

// rawOpts configure a raw connection; the zero value is not usable:
// Version and ClientID are required.
type rawOpts struct {
	Version  byte // 4 (3.1.1) or 5
	ClientID string
	// Resume sends Clean Start (5.0) / Clean Session (3.1.1) 0.
	Resume bool
	// KeepAlive is the Keep Alive in seconds; 0 means 60.
	KeepAlive      uint16
	SessionExpiry  uint32 // MQTT 5 Session Expiry Interval; 0: absent
	ReceiveMaximum uint16 // MQTT 5 Receive Maximum; 0: absent (65,535)
	Will           *rawWill
	// AutoAck sends the PUBACK of each QoS 1 PUBLISH as it is read.
	AutoAck bool
}

type rawWill struct {
	Topic, Payload string
	QoS            byte
}

// rawClient is an MQTT connection driven byte by byte. A goroutine reads
// the socket: PUBLISH packets go to pubs, everything else to ctrl, and
// done is closed when the read side ends.
type rawClient struct {
	conn    net.Conn
	version byte
	autoAck bool

	// From the CONNACK.
	SessionPresent bool
	Props          rawProps
	// ConnectSent is when the CONNECT was written, ConnackAt when the
	// CONNACK was read.
	ConnectSent, ConnackAt time.Time

	pubs chan rawPublish
	ctrl chan rawPacket
	done chan struct{}
	// closedAt and err are written before done is closed.
	closedAt time.Time
	err      error

	wmu    sync.Mutex
	nextID uint16      // client packet identifiers
	stash  []rawPacket // control packets read while waiting for another type; test goroutine only
}

type rawPacket struct {
	first byte
	body  []byte
}

func (p rawPacket) typ() byte { return p.first >> 4 }

// id is the packet identifier that starts the variable header of the
// acknowledgement packets.
func (p rawPacket) id() int {
	if len(p.body) < 2 {
		return -1
	}
	return int(binary.BigEndian.Uint16(p.body))
}

func (p rawPacket) String() string { return fmt.Sprintf("type %d % x", p.typ(), p.body) }

// rawPublish is a decoded PUBLISH.
type rawPublish struct {
	Dup, Retain bool
	QoS         byte
	Topic       string
	ID          uint16
	Props       rawProps
	Payload     string
}

// rawProps holds MQTT 5 properties: numbers, and strings (binary data and
// user properties as "key=value") under their identifiers, in order.
type rawProps struct {
	ints map[byte][]int
	strs map[byte][]string
}

func (p rawProps) get(id byte) (int, bool) {
	if v := p.ints[id]; len(v) > 0 {
		return v[0], true
	}
	return 0, false
}

func (p rawProps) all(id byte) []int { return p.ints[id] }

func u16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }

func u32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

// withLen prefixes MQTT 5 properties with their length.
func withLen(props []byte) []byte { return append(mqttVarint(len(props)), props...) }

func (o rawOpts) connectPacket() []byte {
	flags := byte(0xC0) // user name and password: guest/guest
	if !o.Resume {
		flags |= 0x02
	}
	if w := o.Will; w != nil {
		flags |= 0x04 | w.QoS<<3
	}
	ka := o.KeepAlive
	if ka == 0 {
		ka = 60
	}
	vh := append(mqttStr("MQTT"), o.Version, flags)
	vh = append(vh, u16(ka)...)
	if o.Version == 5 {
		var props []byte
		if o.SessionExpiry > 0 {
			props = append(append(props, propSessionExpiry), u32(o.SessionExpiry)...)
		}
		if o.ReceiveMaximum > 0 {
			props = append(append(props, propReceiveMaximum), u16(o.ReceiveMaximum)...)
		}
		vh = append(vh, withLen(props)...)
	}
	payload := mqttStr(o.ClientID)
	if w := o.Will; w != nil {
		if o.Version == 5 {
			payload = append(payload, 0) // no will properties
		}
		payload = append(payload, mqttStr(w.Topic)...)
		payload = append(payload, mqttStr(w.Payload)...)
	}
	payload = append(payload, mqttStr("guest")...)
	payload = append(payload, mqttStr("guest")...)
	return mqttPkt(0x10, vh, payload)
}

// dialRaw connects a raw client to addr and fails the test unless the
// CONNACK accepts it. The connection is closed when the test ends.
func dialRaw(t testing.TB, addr string, o rawOpts) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, mqtttest.Wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{
		conn: conn, version: o.Version, autoAck: o.AutoAck,
		pubs: make(chan rawPublish, 4096), ctrl: make(chan rawPacket, 4096), done: make(chan struct{}),
	}
	go c.readLoop(bufio.NewReader(conn))
	c.ConnectSent = time.Now()
	c.write(t, o.connectPacket())
	p := c.await(t, typConnack, -1, fmt.Sprintf("CONNACK for %q", o.ClientID))
	c.ConnackAt = time.Now()
	if len(p.body) < 2 {
		t.Fatalf("CONNACK for %q: % x", o.ClientID, p.body)
	}
	if p.body[1] != 0 {
		t.Fatalf("CONNACK for %q: reason %#x", o.ClientID, p.body[1])
	}
	c.SessionPresent = p.body[0]&1 == 1
	if o.Version == 5 {
		props, _, err := readProps(p.body[2:])
		if err != nil {
			t.Fatalf("CONNACK for %q: %v", o.ClientID, err)
		}
		c.Props = props
	}
	return c
}

func (c *rawClient) readLoop(r *bufio.Reader) {
	defer func() {
		c.closedAt = time.Now()
		close(c.done)
	}()
	for {
		first, body, err := readMQTTPacket(r)
		if err != nil {
			c.err = err
			return
		}
		if first>>4 != typPublish {
			c.ctrl <- rawPacket{first, body}
			continue
		}
		p, err := decodePublish(c.version, first, body)
		if err != nil {
			c.err = err
			return
		}
		if c.autoAck && p.QoS == 1 {
			c.writeErr(mqttPkt(0x40, u16(p.ID)))
		}
		c.pubs <- p
	}
}

func (c *rawClient) writeErr(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(mqtttest.Wait))
	_, err := c.conn.Write(b)
	return err
}

func (c *rawClient) write(t testing.TB, b []byte) {
	t.Helper()
	if err := c.writeErr(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) newID() uint16 {
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	return c.nextID
}

// await returns the next control packet of type typ (and packet
// identifier id, unless id < 0); packets of other types read meanwhile
// are kept for later awaits.
func (c *rawClient) await(t testing.TB, typ byte, id int, what string) rawPacket {
	t.Helper()
	p, ok := c.awaitOrClose(t, typ, id, what)
	if !ok {
		t.Fatalf("%s: connection closed (%v); other packets read: %v", what, c.err, c.stash)
	}
	return p
}

// awaitOrClose is await that reports (false) the connection closing
// first instead of failing the test.
func (c *rawClient) awaitOrClose(t testing.TB, typ byte, id int, what string) (rawPacket, bool) {
	t.Helper()
	match := func(p rawPacket) bool { return p.typ() == typ && (id < 0 || p.id() == id) }
	for i, p := range c.stash {
		if match(p) {
			c.stash = slices.Delete(c.stash, i, i+1)
			return p, true
		}
	}
	timer := time.NewTimer(mqtttest.Wait)
	defer timer.Stop()
	for {
		select {
		case p := <-c.ctrl:
			if match(p) {
				return p, true
			}
			c.stash = append(c.stash, p)
		case <-c.done:
			for {
				select {
				case p := <-c.ctrl:
					if match(p) {
						return p, true
					}
					c.stash = append(c.stash, p)
				default:
					return rawPacket{}, false
				}
			}
		case <-timer.C:
			t.Fatalf("%s: no packet of type %d within %v; other packets read: %v", what, typ, mqtttest.Wait, c.stash)
		}
	}
}

// nextPub returns the next PUBLISH received.
func (c *rawClient) nextPub(t testing.TB, what string) rawPublish {
	t.Helper()
	select {
	case p := <-c.pubs:
		return p
	default:
	}
	timer := time.NewTimer(mqtttest.Wait)
	defer timer.Stop()
	select {
	case p := <-c.pubs:
		return p
	case <-c.done:
		select {
		case p := <-c.pubs:
			return p
		default:
		}
		t.Fatalf("%s: connection closed (%v); control packets read: %v", what, c.err, c.stash)
	case <-timer.C:
		t.Fatalf("%s: no PUBLISH within %v", what, mqtttest.Wait)
	}
	return rawPublish{}
}

// until collects PUBLISH packets until one with each of the sentinel
// payloads has arrived, and returns the others and the sentinels.
func (c *rawClient) until(t testing.TB, sentinels ...string) (got []rawPublish, sent map[string]rawPublish) {
	t.Helper()
	sent = make(map[string]rawPublish, len(sentinels))
	for len(sent) < len(sentinels) {
		p := c.nextPub(t, fmt.Sprintf("message %d or sentinels %q (have %d of them)", len(got), sentinels, len(sent)))
		if slices.Contains(sentinels, p.Payload) {
			if _, dup := sent[p.Payload]; dup {
				t.Errorf("sentinel %q received twice", p.Payload)
			}
			sent[p.Payload] = p
			continue
		}
		got = append(got, p)
	}
	return got, sent
}

// waitClosed waits up to d for the server to close the connection and
// returns the reason code of the DISCONNECT it sent first (-1: none).
func (c *rawClient) waitClosed(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
	default:
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-c.done:
		case <-timer.C:
			t.Fatalf("connection still open %v later", d)
		}
	}
	for {
		select {
		case p := <-c.ctrl:
			c.stash = append(c.stash, p)
			continue
		default:
		}
		break
	}
	for _, p := range c.stash {
		if p.typ() == typDisconnect {
			if len(p.body) == 0 {
				return 0 // no reason code means 0x00 [MQTT-3.14.2-1]
			}
			return int(p.body[0])
		}
	}
	return -1
}

// ping sends PINGREQ and waits for the PINGRESP: the server has then
// processed every packet sent before [MQTT-3.12.4-1].
func (c *rawClient) ping(t testing.TB) {
	t.Helper()
	c.write(t, []byte{0xC0, 0})
	c.await(t, typPingresp, -1, "PINGRESP")
}

// ack sends a PUBACK (0x40), PUBREC (0x50), PUBREL (0x62) or PUBCOMP
// (0x70) for packet identifier id, with the implied reason code 0x00.
func (c *rawClient) ack(t testing.TB, first byte, id uint16) {
	t.Helper()
	c.write(t, mqttPkt(first, u16(id)))
}

// rawSub is one topic filter of a SUBSCRIBE. Opts is the subscription
// options byte (section 3.8.3.1): bits 0-1 QoS, 2 No Local, 3 Retain As
// Published, 4-5 Retain Handling; 3.1.1 uses only the QoS bits.
type rawSub struct {
	Filter string
	Opts   byte
}

const (
	optNoLocal = 0x04
	optRAP     = 0x08
)

// subscribe sends one SUBSCRIBE, with Subscription Identifier subID if
// subID > 0, and returns the SUBACK reason codes.
func (c *rawClient) subscribe(t testing.TB, subID int, subs ...rawSub) []byte {
	t.Helper()
	id := c.newID()
	body := u16(id)
	if c.version == 5 {
		var props []byte
		if subID > 0 {
			props = append(append(props, propSubID), mqttVarint(subID)...)
		}
		body = append(body, withLen(props)...)
	}
	for _, s := range subs {
		body = append(append(body, mqttStr(s.Filter)...), s.Opts)
	}
	c.write(t, mqttPkt(0x82, body))
	p := c.await(t, typSuback, int(id), fmt.Sprintf("SUBACK for %v", subs))
	codes := p.body[2:]
	if c.version == 5 {
		_, n, err := readProps(codes)
		if err != nil {
			t.Fatalf("SUBACK: %v", err)
		}
		codes = codes[n:]
	}
	return codes
}

// publishPacket encodes a PUBLISH with a new packet identifier for QoS >
// 0 and the given MQTT 5 properties.
func (c *rawClient) publishPacket(topic string, qos byte, payload string, props []byte) ([]byte, uint16) {
	parts := [][]byte{mqttStr(topic)}
	var id uint16
	if qos > 0 {
		id = c.newID()
		parts = append(parts, u16(id))
	}
	if c.version == 5 {
		parts = append(parts, withLen(props))
	}
	parts = append(parts, []byte(payload))
	return mqttPkt(0x30|qos<<1, parts...), id
}

func (c *rawClient) publish(t testing.TB, topic string, qos byte, payload string, props []byte) uint16 {
	t.Helper()
	b, id := c.publishPacket(topic, qos, payload, props)
	c.write(t, b)
	return id
}

// uvarint decodes a Variable Byte Integer (section 1.5.5) and returns it
// and its length.
func uvarint(b []byte) (int, int, error) {
	n, mul := 0, 1
	for i := 0; i < 4 && i < len(b); i++ {
		n += int(b[i]&0x7f) * mul
		mul *= 128
		if b[i]&0x80 == 0 {
			return n, i + 1, nil
		}
	}
	return 0, 0, errors.New("bad variable byte integer")
}

// readProps decodes a property length and the properties that follow,
// and returns them and the bytes used.
func readProps(b []byte) (rawProps, int, error) {
	p := rawProps{ints: map[byte][]int{}, strs: map[byte][]string{}}
	n, k, err := uvarint(b)
	if err != nil || k+n > len(b) {
		return p, 0, fmt.Errorf("property length: % x", b)
	}
	rest := b[k : k+n]
	str := func() (string, error) {
		if len(rest) < 2 || len(rest) < 2+int(binary.BigEndian.Uint16(rest)) {
			return "", errors.New("truncated string property")
		}
		l := int(binary.BigEndian.Uint16(rest))
		s := string(rest[2 : 2+l])
		rest = rest[2+l:]
		return s, nil
	}
	for len(rest) > 0 {
		id := rest[0]
		rest = rest[1:]
		width := 0
		switch id {
		case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A:
			width = 1
		case 0x13, 0x21, 0x22, 0x23:
			width = 2
		case 0x02, 0x11, 0x18, 0x27:
			width = 4
		case 0x0B:
			v, l, err := uvarint(rest)
			if err != nil {
				return p, 0, err
			}
			p.ints[id] = append(p.ints[id], v)
			rest = rest[l:]
			continue
		case 0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F:
			s, err := str()
			if err != nil {
				return p, 0, err
			}
			p.strs[id] = append(p.strs[id], s)
			continue
		case 0x26:
			k, err := str()
			if err != nil {
				return p, 0, err
			}
			v, err := str()
			if err != nil {
				return p, 0, err
			}
			p.strs[id] = append(p.strs[id], k+"="+v)
			continue
		default:
			return p, 0, fmt.Errorf("unknown property %#x", id)
		}
		if len(rest) < width {
			return p, 0, fmt.Errorf("truncated property %#x", id)
		}
		v := 0
		for _, x := range rest[:width] {
			v = v<<8 | int(x)
		}
		p.ints[id] = append(p.ints[id], v)
		rest = rest[width:]
	}
	return p, k + n, nil
}

func decodePublish(version, first byte, body []byte) (rawPublish, error) {
	p := rawPublish{Dup: first&0x08 != 0, QoS: first >> 1 & 3, Retain: first&1 != 0}
	if len(body) < 2 || len(body) < 2+int(binary.BigEndian.Uint16(body)) {
		return p, fmt.Errorf("PUBLISH topic: % x", body)
	}
	l := int(binary.BigEndian.Uint16(body))
	p.Topic, body = string(body[2:2+l]), body[2+l:]
	if p.QoS > 0 {
		if len(body) < 2 {
			return p, errors.New("PUBLISH without packet identifier")
		}
		p.ID, body = binary.BigEndian.Uint16(body), body[2:]
	}
	if version == 5 {
		props, n, err := readProps(body)
		if err != nil {
			return p, fmt.Errorf("PUBLISH properties: %w", err)
		}
		p.Props, body = props, body[n:]
	}
	p.Payload = string(body)
	return p, nil
}

// ---- paho.golang and AMQP helpers ----

// subscribeV5 subscribes with full subscription options and fails the
// test unless every filter is granted; it returns the SUBACK codes.
func subscribeV5(t testing.TB, c *mqtttest.V5Client, props *paho.SubscribeProperties, subs ...paho.SubscribeOptions) []byte {
	t.Helper()
	sa, err := c.Subscribe(mqtttest.Ctx(t), &paho.Subscribe{Properties: props, Subscriptions: subs})
	if err != nil {
		t.Fatalf("subscribe %+v: %v", subs, err)
	}
	return sa.Reasons
}

// barrier returns once the broker has processed everything c sent before:
// packets of a connection are handled in order, and the UNSUBSCRIBE of a
// filter c never subscribed changes nothing but is still answered
// [MQTT-3.10.4-5]. The broker sends a new subscription's retained
// messages after its SUBACK, so a test that publishes after a SUBSCRIBE
// calls barrier first to keep its sentinel behind them.
func barrier(t testing.TB, c *mqtttest.V5Client) {
	t.Helper()
	if _, err := c.Unsubscribe(mqtttest.Ctx(t), &paho.Unsubscribe{Topics: []string{"barrier/none"}}); err != nil {
		t.Fatalf("barrier: %v", err)
	}
}

// queueWatch reads queue depths over AMQP: queue.declare passive reports
// the ready messages, not those delivered and unacknowledged.
type queueWatch struct{ conn *amqp.Connection }

func newQueueWatch(t testing.TB, b *Broker) queueWatch {
	t.Helper()
	conn, err := amqp.DialConfig(b.URL, amqp.Config{Dial: amqp.DefaultDial(mqtttest.Wait)})
	if err != nil {
		t.Fatalf("dial %s: %v", b.URL, err)
	}
	t.Cleanup(func() { conn.Close() })
	return queueWatch{conn}
}

func (w queueWatch) ready(t testing.TB, queue string) int {
	t.Helper()
	ch, err := w.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		t.Fatalf("queue.declare passive %q: %v", queue, err)
	}
	return q.Messages
}

// waitReady polls queue until it holds want ready messages, failing the
// test at once if it holds fewer (the callers' counts only fall) or if it
// still holds more after mqtttest.Wait.
func (w queueWatch) waitReady(t testing.TB, queue string, want int, what string) {
	t.Helper()
	deadline := time.NewTimer(mqtttest.Wait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		n := w.ready(t, queue)
		switch {
		case n == want:
			return
		case n < want:
			t.Fatalf("%s: %s holds %d ready messages, want %d", what, queue, n, want)
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: %s still holds %d ready messages after %v, want %d", what, queue, n, mqtttest.Wait, want)
		}
	}
}

// waitGone polls until queue no longer exists (queue.declare passive
// fails with 404), failing the test after mqtttest.Wait.
func (w queueWatch) waitGone(t testing.TB, queue, what string) {
	t.Helper()
	deadline := time.NewTimer(mqtttest.Wait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ch, err := w.conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		_, err = ch.QueueDeclarePassive(queue, false, false, false, false, nil)
		ch.Close()
		var aerr *amqp.Error
		if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
			return
		}
		if err != nil {
			t.Fatalf("%s: queue.declare passive %q: %v", what, queue, err)
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: %s still exists after %v", what, queue, mqtttest.Wait)
		}
	}
}

func sessionQueue(clientID string) string { return "mqtt-subscription-" + clientID + "qos1" }

func payloads(ps []rawPublish) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Payload)
	}
	return out
}

// ---- 1. keepalive ----

// TestMQTTKeepalive: a client that connects with Keep Alive 1 s and then
// sends nothing is disconnected "as if the network had failed" once one
// and a half times the Keep Alive has passed ([MQTT-3.1.2-24], in both
// versions' lists; 5.0 section 3.1.2.10), and its will is then published
// [MQTT-3.1.2-8].
func TestMQTTKeepalive(t *testing.T) {
	const keepalive = 1 // seconds
	const slack = time.Second
	b := StartBroker(t)
	watcher := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "ka-watcher"})
	watcher.SubscribeAt(t, 1, "ka/#")
	for _, v := range []byte{4, 5} {
		t.Run(versionName(int(v)), func(t *testing.T) {
			topic := "ka/" + versionName(int(v)) + "/gone"
			c := dialRaw(t, b.MQTTAddr, rawOpts{
				Version: v, ClientID: "ka-" + versionName(int(v)), KeepAlive: keepalive,
				Will: &rawWill{Topic: topic, Payload: "bye", QoS: 1},
			})
			ka := time.Duration(keepalive) * time.Second
			if sk, ok := c.Props.get(propServerKeepAlive); ok {
				// The client must use the server's value [MQTT-3.2.2-21].
				if sk == 0 {
					t.Fatal("CONNACK Server Keep Alive 0: no keepalive to test")
				}
				ka = time.Duration(sk) * time.Second
			}
			code := c.waitClosed(t, mqtttest.Wait)
			silent, sinceConnack := c.closedAt.Sub(c.ConnectSent), c.closedAt.Sub(c.ConnackAt)
			t.Logf("closed %v after the CONNECT, %v after the CONNACK", silent, sinceConnack)
			if limit := ka*3/2 + slack; sinceConnack > limit {
				t.Errorf("closed %v after the CONNACK, want within 1.5 x Keep Alive (%v) + %v", sinceConnack, ka*3/2, slack)
			}
			// A client silent for less than its Keep Alive keeps to
			// (3.1.1) [MQTT-3.1.2-23] / [MQTT-3.1.2-22]: closing it is too
			// early. (mochi closes at Keep Alive + Keep Alive/2 in whole
			// seconds, which is exactly 1 s here.)
			if silent < ka {
				t.Errorf("closed %v after the CONNECT, before the Keep Alive (%v) had passed", silent, ka)
			}
			switch {
			case v == 4 && code >= 0:
				t.Errorf("DISCONNECT %#x sent to an MQTT 3.1.1 client (3.1.1 has no server DISCONNECT, section 3.14)", code)
			case v == 5 && code >= 0 && code != 0x8D:
				t.Errorf("DISCONNECT reason %#x, want 0x8D Keep Alive timeout if any (Table 3.10)", code)
			}
			if m := watcher.Next(t, "the will of the silent client"); m.Topic != topic || string(m.Payload) != "bye" {
				t.Errorf("watcher got %q %q, want the will %q \"bye\"", m.Topic, m.Payload, topic)
			}
		})
	}
}

// ---- 2. session takeover ----

// TestMQTTSessionTakeover: a second connection with the same client id
// takes the session over. The first is disconnected ([MQTT-3.1.4-3]:
// DISCONNECT 0x8E Session taken over; 3.1.1 [MQTT-3.1.4-2]: closed, and
// 3.1.1 has no server DISCONNECT). The QoS 1 messages the first had not
// acknowledged are sent again to the second with DUP set [MQTT-3.3.1-1]
// and their original packet identifiers [MQTT-4.4.0-1], in order
// [MQTT-4.6.0-5]; the acknowledged one is not, and nothing is lost.
func TestMQTTSessionTakeover(t *testing.T) {
	const unacked = 4
	b := StartBroker(t)
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "to-pub"})
	for _, v := range []byte{4, 5} {
		t.Run(versionName(int(v)), func(t *testing.T) {
			id := "to-" + versionName(int(v))
			topic := "to/" + versionName(int(v))
			first := rawOpts{Version: v, ClientID: id}
			if v == 5 {
				first.SessionExpiry = 300
			} else {
				first.Resume = true // Clean Session 0: a persistent session
			}
			a := dialRaw(t, b.MQTTAddr, first)
			if codes := a.subscribe(t, 0, rawSub{topic, 1}); !slices.Equal(codes, []byte{1}) {
				t.Fatalf("SUBACK %v, want [1]", codes)
			}
			// One message acknowledged (the PINGRESP shows the PUBACK was
			// processed), so that the identifiers of the rest do not start at 1.
			pub.Send(t, topic, 1, "acked")
			m := a.nextPub(t, "the acknowledged message")
			a.ack(t, 0x40, m.ID)
			a.ping(t)
			var sent []rawPublish
			for i := range unacked {
				pub.Send(t, topic, 1, fmt.Sprint(i))
				m := a.nextPub(t, fmt.Sprintf("unacknowledged message %d", i))
				if m.Payload != fmt.Sprint(i) || m.QoS != 1 || m.Dup {
					t.Fatalf("first connection got %+v, want payload %d at QoS 1 without DUP", m, i)
				}
				sent = append(sent, m)
			}

			var next func(what string) (payload string, qos byte, dup bool, pid uint16)
			var present bool
			if v == 5 {
				c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, Resume: true, SessionExpiry: 300})
				present = c.Connack.SessionPresent
				next = func(what string) (string, byte, bool, uint16) {
					p := c.Next(t, what)
					return string(p.Payload), p.QoS, p.Duplicate(), p.PacketID
				}
			} else {
				c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Persistent: true})
				present = c.SessionPresent
				next = func(what string) (string, byte, bool, uint16) {
					m := c.Next(t, what)
					return string(m.Payload()), m.Qos(), m.Duplicate(), m.MessageID()
				}
			}
			code := a.waitClosed(t, mqtttest.Wait)
			switch {
			case v == 5 && code != 0x8E:
				t.Errorf("first connection: DISCONNECT reason %d, want 0x8E Session taken over [MQTT-3.1.4-3] (-1: none)", code)
			case v == 4 && code >= 0:
				t.Errorf("first connection: DISCONNECT %#x sent to an MQTT 3.1.1 client (3.1.1 has no server DISCONNECT, section 3.14)", code)
			}
			if !present {
				t.Errorf("CONNACK session present 0 on taking over a live session, want 1 [MQTT-3.2.2-3] / (3.1.1) [MQTT-3.2.2-2]")
			}
			for i, orig := range sent {
				payload, qos, dup, pid := next(fmt.Sprintf("redelivery %d of %d", i+1, len(sent)))
				if payload != orig.Payload || qos != 1 {
					t.Fatalf("redelivery %d: payload %q QoS %d, want %q at QoS 1, in the original order", i, payload, qos, orig.Payload)
				}
				if !dup {
					t.Errorf("redelivery of %q: DUP 0, want 1 [MQTT-3.3.1-1]", payload)
				}
				if pid != orig.ID {
					t.Errorf("redelivery of %q: packet identifier %d, want the original %d [MQTT-4.4.0-1]", payload, pid, orig.ID)
				}
			}
			pub.Send(t, topic, 1, "sentinel")
			if payload, _, _, _ := next("sentinel"); payload != "sentinel" {
				t.Errorf("after the redeliveries got %q, want the sentinel (the acknowledged message must not come again)", payload)
			}
		})
	}
}

// ---- 3. topic aliases ----

// TestMQTTTopicAlias: an MQTT 5 publisher sets a Topic Alias with a topic
// name and then sends the alias alone; the server must accept every alias
// up to the Topic Alias Maximum it announced [MQTT-3.3.2-12] and deliver
// each publish to the topic the alias stands for, to MQTT and AMQP
// subscribers, without passing the alias on to a subscriber that allowed
// none [MQTT-3.3.2-11]. Mappings do not outlive the connection
// [MQTT-3.3.2-7]: an alias alone on a new connection names no topic.
func TestMQTTTopicAlias(t *testing.T) {
	b := StartBroker(t)
	_, ch := dialBroker(t, b)
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "alias-pub"})
	p := pub.Connack.Properties
	if p == nil || p.TopicAliasMaximum == nil || *p.TopicAliasMaximum < 2 {
		// Without it a client may send no alias at all [MQTT-3.2.2-18];
		// the mapping is still checked below, as the broker accepts them.
		var got any = "absent"
		if p != nil && p.TopicAliasMaximum != nil {
			got = *p.TopicAliasMaximum
		}
		t.Errorf("CONNACK Topic Alias Maximum %v, want >= 2: absent or 0 forbids the client any alias [MQTT-3.2.2-18]", got)
	}
	sub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "alias-sub"})
	sub.SubscribeAt(t, 1, "alias/#")
	_, d := mqtttest.AMQPSubscribe(t, ch, "alias.#")

	steps := []struct {
		topic string // sent with the alias; "" sends the alias alone
		alias uint16
		want  string
	}{
		{"alias/a", 1, "alias/a"},
		{"", 1, "alias/a"},
		{"alias/b", 2, "alias/b"},
		{"", 2, "alias/b"},
		{"", 1, "alias/a"},
		{"alias/c", 1, "alias/c"}, // a new topic remaps alias 1
		{"", 1, "alias/c"},
		{"alias/b", 0, "alias/b"}, // no alias
		{"", 2, "alias/b"},
	}
	for i, st := range steps {
		pk := &paho.Publish{Topic: st.topic, QoS: 1, Payload: []byte(fmt.Sprint(i))}
		if st.alias > 0 {
			pk.Properties = &paho.PublishProperties{TopicAlias: ptr(st.alias)}
		}
		pub.PublishAcked(t, pk)
		m := sub.Next(t, fmt.Sprintf("publish %d (%q alias %d)", i, st.topic, st.alias))
		if m.Topic != st.want || string(m.Payload) != fmt.Sprint(i) {
			t.Errorf("publish %d (%q alias %d): delivered %q %q, want %q", i, st.topic, st.alias, m.Topic, m.Payload, st.want)
		}
		if m.Properties != nil && m.Properties.TopicAlias != nil {
			t.Errorf("publish %d: delivered with Topic Alias %d to a client whose Topic Alias Maximum is 0 [MQTT-3.3.2-11]", i, *m.Properties.TopicAlias)
		}
		a := mqtttest.WaitFor(t, d, mqtttest.Wait, fmt.Sprintf("AMQP delivery of publish %d", i))
		if a.RoutingKey != mqtttopic.RoutingKey(st.want) || string(a.Body) != fmt.Sprint(i) {
			t.Errorf("publish %d: AMQP got key %q body %q, want %q", i, a.RoutingKey, a.Body, mqtttopic.RoutingKey(st.want))
		}
	}

	t.Run("not-carried-to-a-new-connection", func(t *testing.T) {
		// Everything routed in the vhost from here on reaches this queue.
		_, all := mqtttest.AMQPSubscribe(t, ch, "#")
		fresh := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "alias-pub-2"})
		fresh.publish(t, "", 1, "stale alias", append([]byte{propTopicAlias}, u16(1)...))
		// Handled (acknowledged or refused) before the sentinel is sent.
		if ack, ok := fresh.awaitOrClose(t, typPuback, -1, "answer to the alias-only publish"); ok {
			t.Logf("the alias-only publish was acknowledged: % x", ack.body)
		} else {
			t.Logf("the connection was closed (DISCONNECT %d; -1: none)", fresh.waitClosed(t, 0))
		}
		pub.Send(t, "alias/sentinel", 1, "sentinel")
		if m := sub.Next(t, "sentinel"); string(m.Payload) != "sentinel" {
			t.Errorf("MQTT subscriber got %q %q: a Topic Alias mapping of another connection was used [MQTT-3.3.2-7]", m.Topic, m.Payload)
		}
		for _, m := range mqtttest.AMQPUntil(t, all, "sentinel") {
			t.Errorf("routed %q with routing key %q: an alias with no mapping names no topic [MQTT-3.3.2-7], and a topic name is at least one character [MQTT-4.7.3-1]", m.Body, m.RoutingKey)
		}
	})
}

// ---- 4. subscription identifiers ----

// subRef is a subscription a message matches: its identifier (0: none)
// and its QoS.
type subRef struct {
	id  int
	qos byte
}

// checkSubIDs checks the copies of one message that matched the
// overlapping subscriptions subs. The server may send one copy or one per
// subscription [MQTT-3.3.4-3]: one copy carries the identifiers of all of
// them [MQTT-3.3.4-4] at the highest of their QoS [MQTT-3.3.4-2]; one copy
// per subscription carries that subscription's identifier
// [MQTT-3.3.4-5] at its QoS [MQTT-3.8.4-8].
func checkSubIDs(t *testing.T, what string, pubQoS byte, subs []subRef, copies []rawPublish) {
	t.Helper()
	key := func(ids []int, qos byte) string {
		ids = slices.Clone(ids)
		sort.Ints(ids)
		return fmt.Sprintf("ids %v QoS %d", ids, qos)
	}
	var got []string
	for _, c := range copies {
		got = append(got, key(c.Props.all(propSubID), c.QoS))
	}
	sort.Strings(got)
	var one []int
	var top byte
	per := make([]string, 0, len(subs))
	for _, s := range subs {
		var ids []int
		if s.id > 0 {
			one = append(one, s.id)
			ids = []int{s.id}
		}
		top = max(top, s.qos)
		per = append(per, key(ids, min(pubQoS, s.qos)))
	}
	sort.Strings(per)
	switch len(copies) {
	case 1:
		if want := key(one, min(pubQoS, top)); got[0] != want {
			t.Errorf("%s: one copy with %s, want %s [MQTT-3.3.4-2, -4]", what, got[0], want)
		}
	case len(subs):
		if !slices.Equal(got, per) {
			t.Errorf("%s: copies %q, want %q, one per subscription [MQTT-3.3.4-5]", what, got, per)
		}
	default:
		t.Errorf("%s: %d copies (%q) for %d matching subscriptions", what, len(copies), got, len(subs))
	}
	t.Logf("%s: %q", what, got)
}

// TestMQTTSubscriptionIdentifiers: overlapping subscriptions made with
// Subscription Identifiers 7 and 9, of the same QoS and of different QoS,
// and with one of them without an identifier. A message matching both
// comes once or twice, as [MQTT-3.3.4-3/-4/-5] allow, with the right
// identifiers; one matching a single subscription carries only its
// identifier; a re-subscription replaces the identifier [MQTT-3.8.4-3].
func TestMQTTSubscriptionIdentifiers(t *testing.T) {
	b := StartBroker(t)
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "sid-pub"})
	cases := []struct {
		name string
		a, b subRef // "<name>/a/+" and "<name>/+/x"; both match <name>/a/x
	}{
		{"sid-same-qos", subRef{7, 1}, subRef{9, 1}},
		{"sid-mixed-qos", subRef{7, 1}, subRef{9, 0}},
		{"sid-one-without", subRef{7, 1}, subRef{0, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: tc.name, AutoAck: true})
			if v, ok := c.Props.get(propSubIDAvailable); ok && v == 0 {
				t.Fatal("CONNACK says Subscription Identifiers are not available")
			}
			// One SUBSCRIBE each: the identifier is per SUBSCRIBE packet.
			c.subscribe(t, tc.a.id, rawSub{tc.name + "/a/+", tc.a.qos})
			c.subscribe(t, tc.b.id, rawSub{tc.name + "/+/x", tc.b.qos})
			pub.Send(t, tc.name+"/a/x", 1, "both")
			pub.Send(t, tc.name+"/a/y", 1, "a only")
			pub.Send(t, tc.name+"/c/x", 1, "b only")
			// A sentinel for each subscription, which may be delivered
			// on paths of their own.
			pub.Send(t, tc.name+"/a/s", 1, "sentinel a")
			pub.Send(t, tc.name+"/s/x", 1, "sentinel b")
			got, sentinels := c.until(t, "sentinel a", "sentinel b")
			by := map[string][]rawPublish{}
			for _, m := range got {
				by[m.Payload] = append(by[m.Payload], m)
			}
			for p := range by {
				if !slices.Contains([]string{"both", "a only", "b only"}, p) {
					t.Errorf("unexpected message %q", p)
				}
			}
			checkSubIDs(t, "message matching both", 1, []subRef{tc.a, tc.b}, by["both"])
			checkSubIDs(t, "message matching a", 1, []subRef{tc.a}, by["a only"])
			checkSubIDs(t, "message matching b", 1, []subRef{tc.b}, by["b only"])
			checkSubIDs(t, "sentinel matching a", 1, []subRef{tc.a}, []rawPublish{sentinels["sentinel a"]})
			checkSubIDs(t, "sentinel matching b", 1, []subRef{tc.b}, []rawPublish{sentinels["sentinel b"]})
		})
	}

	t.Run("resubscribe-replaces-the-identifier", func(t *testing.T) {
		c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "sid-replace", AutoAck: true})
		for i, id := range []int{7, 11, 0} {
			c.subscribe(t, id, rawSub{"sid-replace/t", 1})
			pub.Send(t, "sid-replace/t", 1, fmt.Sprint(i))
			m := c.nextPub(t, fmt.Sprintf("message after subscribing with identifier %d", id))
			var want []int
			if id > 0 {
				want = []int{id}
			}
			if got := m.Props.all(propSubID); m.Payload != fmt.Sprint(i) || !slices.Equal(got, want) {
				t.Errorf("after subscribing with identifier %d: got %q with identifiers %v, want %q with %v [MQTT-3.8.4-3]", id, m.Payload, got, fmt.Sprint(i), want)
			}
		}
	})
}

// ---- 5. no local ----

// TestMQTTNoLocal: with No Local, "Application Messages MUST NOT be
// forwarded to a connection with a ClientID equal to the ClientID of the
// publishing connection" [MQTT-3.8.3-3], while messages of other clients
// (MQTT or AMQP) still come, and a client without the option gets its
// own.
func TestMQTTNoLocal(t *testing.T) {
	b := StartBroker(t)
	amqpPub := mqtttest.NewAMQPPublisher(t, b.URL)
	other := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "nl-other"})

	t.Run("own-publishes-held-back", func(t *testing.T) {
		a := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "nl-a"})
		subscribeV5(t, a, nil, paho.SubscribeOptions{Topic: "nl/t", QoS: 1, NoLocal: true})
		plain := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "nl-plain"})
		subscribeV5(t, plain, nil, paho.SubscribeOptions{Topic: "nl/t", QoS: 1})
		plain.Send(t, "nl/t", 1, "plain's own")
		a.Send(t, "nl/t", 1, "a's own")
		other.Send(t, "nl/t", 1, "other's")
		amqpPub.Send(t, "nl.t", true, "from amqp")
		other.Send(t, "nl/t", 1, "sentinel")
		if got, want := v5Payloads(a.Until(t, "sentinel")), []string{"plain's own", "other's", "from amqp"}; !slices.Equal(got, want) {
			t.Errorf("No Local subscriber got %q, want %q [MQTT-3.8.3-3]", got, want)
		}
		if got, want := v5Payloads(plain.Until(t, "sentinel")), []string{"plain's own", "a's own", "other's", "from amqp"}; !slices.Equal(got, want) {
			t.Errorf("subscriber without No Local got %q, want %q", got, want)
		}
	})

	t.Run("overlapping-subscription-without-it", func(t *testing.T) {
		// The option is per subscription: a second matching subscription
		// without No Local still forwards the client's own message, once.
		a := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "nl-overlap"})
		subscribeV5(t, a, nil, paho.SubscribeOptions{Topic: "nl2/t", QoS: 1, NoLocal: true})
		subscribeV5(t, a, nil, paho.SubscribeOptions{Topic: "nl2/#", QoS: 1})
		a.Send(t, "nl2/t", 1, "own")
		other.Send(t, "nl2/t", 1, "sentinel")
		if got := v5Payloads(a.Until(t, "sentinel")); !slices.Equal(got, []string{"own"}) {
			t.Errorf("got %q, want [\"own\"] once, through the subscription without No Local", got)
		}
	})

	t.Run("own-message-queued-across-reconnect", func(t *testing.T) {
		// The rule is about ClientIDs, not connections: the client's own
		// message, held back in its session queue by flow control when the
		// connection drops, must not reach it on the next connection.
		const id = "nl-resume"
		qw := newQueueWatch(t, b)
		a := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: id, SessionExpiry: 300, ReceiveMaximum: 1})
		a.subscribe(t, 0, rawSub{"nl3/t", 1 | optNoLocal})
		other.Send(t, "nl3/t", 1, "first")
		first := a.nextPub(t, "first") // not acknowledged: the Receive Maximum of 1 is used up
		if first.Payload != "first" {
			t.Fatalf("got %q, want \"first\"", first.Payload)
		}
		a.publish(t, "nl3/t", 1, "own", nil)
		a.await(t, typPuback, -1, "PUBACK of the client's own publish")
		t.Logf("%s holds %d ready messages while the connection drops", sessionQueue(id), qw.ready(t, sessionQueue(id)))
		a.conn.Close()
		<-a.done
		a2 := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: id, Resume: true, SessionExpiry: 300, AutoAck: true})
		if !a2.SessionPresent {
			t.Fatalf("CONNACK session present 0 on resuming, want 1 [MQTT-3.2.2-3]")
		}
		other.Send(t, "nl3/t", 1, "sentinel")
		got, _ := a2.until(t, "sentinel")
		if ps := payloads(got); !slices.Equal(ps, []string{"first"}) {
			t.Errorf("resumed No Local subscriber got %q, want [\"first\"] (resent [MQTT-4.4.0-1]) and not its own message [MQTT-3.8.3-3]", ps)
		}
	})
}

func v5Payloads(ms []*paho.Publish) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Payload))
	}
	return out
}

// ---- 6. retain as published ----

// TestMQTTRetainAsPublished: a retained publish forwarded to an existing
// subscription has RETAIN 0 unless the subscription has Retain As
// Published, which keeps the publisher's flag ([MQTT-3.3.1-12, -13];
// 3.1.1: [MQTT-3.3.1-9], always 0). A retained message sent because a
// subscription was just made has RETAIN 1 (5.0 section 3.3.1.3; 3.1.1
// [MQTT-3.3.1-8]).
func TestMQTTRetainAsPublished(t *testing.T) {
	b := StartBroker(t)
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "rap-pub"})
	cases := []struct {
		name string
		v    int
		rap  bool
	}{
		{"mqtt311", 4, false},
		{"mqtt5-rap0", 5, false},
		{"mqtt5-rap1", 5, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			topic := "rap/" + tc.name
			subscribe := func(id string) mqtttest.Endpoint {
				if tc.v == 4 {
					c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id})
					c.SubscribeAt(t, 1, topic)
					return c
				}
				c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id})
				subscribeV5(t, c, nil, paho.SubscribeOptions{Topic: topic, QoS: 1, RetainAsPublished: tc.rap})
				barrier(t, c)
				return c
			}
			live := subscribe("rap-live-" + tc.name)
			pub.PublishAcked(t, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte("retained")})
			pub.Send(t, topic, 1, "plain")
			if m := live.NextMsg(t, "live retained publish"); m.Payload != "retained" || m.Retain != tc.rap {
				t.Errorf("live retained publish: got %+v, want RETAIN %v", m, tc.rap)
			}
			if m := live.NextMsg(t, "live plain publish"); m.Payload != "plain" || m.Retain {
				t.Errorf("live non-retained publish: got %+v, want RETAIN false", m)
			}

			late := subscribe("rap-late-" + tc.name)
			if m := late.NextMsg(t, "retained message for a new subscription"); m.Payload != "retained" || !m.Retain {
				t.Errorf("retained message sent for a new subscription: got %+v, want RETAIN true", m)
			}
			pub.Send(t, topic, 1, "after")
			if m := late.NextMsg(t, "live publish after the replay"); m.Payload != "after" || m.Retain {
				t.Errorf("after the replay: got %+v, want \"after\" with RETAIN false", m)
			}
		})
	}
}

// ---- 7. retain handling ----

// TestMQTTRetainHandling: Retain Handling 0 sends the retained messages on
// every subscribe, a re-subscription included ([MQTT-3.3.1-9],
// [MQTT-3.8.4-4]); 1 only if the subscription did not exist
// [MQTT-3.3.1-10], and a subscription of a resumed session exists; 2 never
// [MQTT-3.3.1-11].
func TestMQTTRetainHandling(t *testing.T) {
	const id = "rh-sub"
	b := StartBroker(t)
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "rh-pub"})
	pub.PublishAcked(t, &paho.Publish{Topic: "rh/t", QoS: 1, Retain: true, Payload: []byte("kept")})
	c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, SessionExpiry: 300})
	steps := []struct {
		name      string
		filter    string
		handling  byte
		replay    bool
		reconnect bool // resume the session first
	}{
		{"2-new", "rh/t", 2, false, false},
		{"1-existing", "rh/t", 1, false, false},
		{"1-new", "rh/+", 1, true, false},
		{"0-existing", "rh/+", 0, true, false},
		{"2-existing", "rh/+", 2, false, false},
		{"1-existing-in-resumed-session", "rh/+", 1, false, true},
		{"0-existing-in-resumed-session", "rh/t", 0, true, false},
	}
	parent := t // the resumed connection outlives its step
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.reconnect {
				if err := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
					t.Fatalf("disconnect: %v", err)
				}
				c = mqtttest.ConnectV5(parent, b.MQTTAddr, mqtttest.V5Options{ClientID: id, Resume: true, SessionExpiry: 300})
				if !c.Connack.SessionPresent {
					t.Fatalf("CONNACK session present 0 on resuming, want 1 [MQTT-3.2.2-3]")
				}
			}
			subscribeV5(t, c, nil, paho.SubscribeOptions{Topic: st.filter, QoS: 1, RetainHandling: st.handling})
			barrier(t, c)
			sentinel := fmt.Sprintf("sentinel %d", i)
			pub.Send(t, "rh/t", 1, sentinel)
			var got []*paho.Publish
			for _, m := range c.Until(t, sentinel) {
				// A resumed session resends what was not acknowledged
				// before the disconnect [MQTT-4.4.0-1]: paho acknowledges
				// after handing a message over, so an earlier sentinel
				// may come again, with DUP.
				if m.Duplicate() && strings.HasPrefix(string(m.Payload), "sentinel ") {
					continue
				}
				got = append(got, m)
			}
			switch {
			case st.replay && (len(got) != 1 || string(got[0].Payload) != "kept" || !got[0].Retain):
				t.Errorf("Retain Handling %d on %q: got %s, want the retained message once, RETAIN 1", st.handling, st.filter, mqtttest.V5Topics(got))
			case !st.replay && len(got) > 0:
				t.Errorf("Retain Handling %d on %q: got %s, want no retained message", st.handling, st.filter, mqtttest.V5Topics(got))
			}
		})
	}
}

// ---- 8. receive maximum: flow control towards the client ----

// TestMQTTReceiveMaximum: the server "MUST NOT send more than Receive
// Maximum QoS 1 and QoS 2 PUBLISH packets for which it has not received
// PUBACK, PUBCOMP, or PUBREC with a Reason Code of 128 or greater"
// [MQTT-3.3.4-9]; the send quota grows back only with those (section 4.9,
// [MQTT-4.9.0-2]). What is not sent waits in the session queue, where
// AMQP sees it, and nothing is lost.
func TestMQTTReceiveMaximum(t *testing.T) {
	b := StartBroker(t)
	qw := newQueueWatch(t, b)
	apub := mqtttest.NewAMQPPublisher(t, b.URL)

	t.Run("qos1", func(t *testing.T) {
		const rm, n = 5, 20
		const id = "rm-qos1"
		c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: id, ReceiveMaximum: rm})
		c.subscribe(t, 0, rawSub{"rm/qos1", 1})
		for i := range n {
			apub.Send(t, "rm.qos1", true, fmt.Sprint(i))
		}
		var inflight []uint16
		got := 0
		read := func(k int) {
			t.Helper()
			for range k {
				p := c.nextPub(t, fmt.Sprintf("message %d", got))
				if p.Payload != fmt.Sprint(got) || p.QoS != 1 || p.Dup {
					t.Fatalf("got %+v, want message %d at QoS 1, in order, once", p, got)
				}
				got++
				inflight = append(inflight, p.ID)
			}
		}
		read(rm)
		qw.waitReady(t, sessionQueue(id), n-rm, "with the Receive Maximum in flight")
		c.ping(t)
		if k := len(c.pubs); k > 0 {
			t.Fatalf("%d PUBLISH packets beyond the Receive Maximum of %d [MQTT-3.3.4-9]", k, rm)
		}
		// Each PUBACK gives one slot back: two acknowledged, two more sent.
		c.ack(t, 0x40, inflight[0])
		c.ack(t, 0x40, inflight[1])
		inflight = inflight[2:]
		read(2)
		qw.waitReady(t, sessionQueue(id), n-rm-2, "after two PUBACKs")
		for got < n {
			c.ack(t, 0x40, inflight[0])
			inflight = inflight[1:]
			read(1)
		}
		for _, pid := range inflight {
			c.ack(t, 0x40, pid)
		}
		qw.waitReady(t, sessionQueue(id), 0, "after all")
	})

	t.Run("qos2-slot-held-until-pubcomp", func(t *testing.T) {
		const rm, n = 2, 4
		const id = "rm-qos2"
		c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: id, ReceiveMaximum: rm})
		c.subscribe(t, 0, rawSub{"rm/qos2", 2})
		pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "rm-qos2-pub"})
		for i := range n {
			pub.Send(t, "rm/qos2", 2, fmt.Sprint(i))
		}
		seen := map[string]int{}
		var first []rawPublish
		for range rm {
			p := c.nextPub(t, "QoS 2 message")
			seen[p.Payload]++
			first = append(first, p)
		}
		// PUBREC with 0x00 does not give the slot back; PUBCOMP will.
		for _, p := range first {
			c.ack(t, 0x50, p.ID)
			c.await(t, typPubrel, int(p.ID), "PUBREL")
		}
		c.ping(t)
		if k, waiting := len(c.pubs), qw.ready(t, sessionQueue(id)); k > 0 || waiting != n-rm {
			t.Errorf("with %d QoS 2 deliveries PUBREC'd but not PUBCOMP'd, %d more PUBLISH arrived and %d of %d stay queued; want 0 and %d [MQTT-3.3.4-9, section 4.9]",
				rm, k, waiting, n-rm, n-rm)
		}
		for _, p := range first {
			c.ack(t, 0x70, p.ID)
		}
		for len(seen) < n {
			p := c.nextPub(t, fmt.Sprintf("QoS 2 message %d of %d", len(seen)+1, n))
			seen[p.Payload]++
			c.ack(t, 0x50, p.ID)
			c.await(t, typPubrel, int(p.ID), "PUBREL")
			c.ack(t, 0x70, p.ID)
		}
		for i := range n {
			if seen[fmt.Sprint(i)] != 1 {
				t.Errorf("message %d received %d times, want once (%v)", i, seen[fmt.Sprint(i)], seen)
			}
		}
	})

	t.Run("one-limit-for-all-subscriptions", func(t *testing.T) {
		// Receive Maximum counts every QoS > 0 PUBLISH of the connection,
		// whichever subscription (here a plain one and a shared one)
		// it is sent for.
		const rm = 3
		const id = "rm-shared"
		c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: id, ReceiveMaximum: rm})
		c.subscribe(t, 0, rawSub{"rm/plain", 1})
		c.subscribe(t, 0, rawSub{"$share/rmg/rm/shared", 1})
		for i := range rm {
			apub.Send(t, "rm.plain", true, fmt.Sprint("plain ", i))
		}
		for i := range rm {
			apub.Send(t, "rm.shared", true, fmt.Sprint("shared ", i))
		}
		seen := map[string]int{}
		var ids []uint16
		for range rm {
			p := c.nextPub(t, "message")
			seen[p.Payload]++
			ids = append(ids, p.ID)
		}
		c.ping(t)
		// ferrymq's queue of the shared group, named after group and filter.
		waiting := qw.ready(t, sessionQueue(id)) + qw.ready(t, "mqtt-shared-rmg-rm.shared")
		if k := len(c.pubs); k > 0 || waiting != rm {
			t.Errorf("Receive Maximum %d over two subscriptions: %d more PUBLISH in flight, %d messages queued; want 0 and %d [MQTT-3.3.4-9]", rm, k, waiting, rm)
		}
		for _, pid := range ids {
			c.ack(t, 0x40, pid)
		}
		for len(seen) < 2*rm {
			p := c.nextPub(t, fmt.Sprintf("message %d of %d", len(seen)+1, 2*rm))
			seen[p.Payload]++
			c.ack(t, 0x40, p.ID)
		}
		for p, k := range seen {
			if k != 1 {
				t.Errorf("%q received %d times", p, k)
			}
		}
	})
}

// ---- 9. receive maximum: flow control towards the server ----

// ---- 10. CONNACK ----

// TestMQTTConnack: Session Present is 0 for a clean start ([MQTT-3.2.2-2];
// 3.1.1 [MQTT-3.2.2-1]) and on resuming a session that does not exist; it
// is 1 on resuming one that does ([MQTT-3.2.2-3]; 3.1.1 [MQTT-3.2.2-2,
// -3]), even with no subscriptions: the Session State includes "the
// existence of a Session, even if the rest of the Session State is empty"
// (section 4.1; 3.1.1 section 3.1.2.4). A clean start discards the old
// session and its subscriptions ([MQTT-3.1.2-4]; 3.1.1 [MQTT-3.1.2-6]),
// and a 3.1.1 clean session ends with its connection. An MQTT 5 CONNACK
// announces the server's Maximum Packet Size.
func TestMQTTConnack(t *testing.T) {
	b := StartBroker(t)
	qw := newQueueWatch(t, b)
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "ca-pub"})
	type step struct {
		clean     bool
		present   bool
		subscribe bool // subscribe to <topic>/t
		gone      bool // check that <topic>/t is no longer subscribed
	}
	cases := []struct {
		v     int
		steps []step
	}{
		// MQTT 5, always with Session Expiry 300 s.
		{5, []step{
			{clean: true, present: false},
			{clean: false, present: true, subscribe: true}, // empty, but there
			{clean: false, present: true},
			{clean: true, present: false, gone: true},
			{clean: false, present: true}, // the new, empty, session
		}},
		{4, []step{
			{clean: false, present: false}, // no session yet
			{clean: false, present: true, subscribe: true},
			{clean: false, present: true},
			{clean: true, present: false, gone: true},
			{clean: false, present: false}, // the clean session ended with its connection
		}},
	}
	for _, tc := range cases {
		t.Run(versionName(tc.v), func(t *testing.T) {
			id := "ca-" + versionName(tc.v)
			topic := "ca/" + versionName(tc.v)
			for i, st := range tc.steps {
				var present bool
				var ep mqtttest.Endpoint
				var disconnect func()
				var sync func()
				if tc.v == 5 {
					c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, Resume: !st.clean, SessionExpiry: 300})
					present, ep = c.Connack.SessionPresent, c
					disconnect = func() { c.Disconnect(&paho.Disconnect{ReasonCode: 0}) }
					sync = func() { barrier(t, c) }
					if i == 0 {
						if p := c.Connack.Properties; p == nil || p.MaximumPacketSize == nil || *p.MaximumPacketSize == 0 {
							t.Errorf("CONNACK announces no Maximum Packet Size (properties %+v)", p)
						} else {
							t.Logf("CONNACK Maximum Packet Size %d", *p.MaximumPacketSize)
						}
					}
				} else {
					c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Persistent: !st.clean})
					present, ep = c.SessionPresent, c
					disconnect = func() { c.Disconnect(250) }
					sync = func() {}
				}
				if present != st.present {
					t.Errorf("step %d (clean %v): CONNACK session present %v, want %v", i, st.clean, present, st.present)
				}
				if st.subscribe {
					ep.SubscribeAt(t, 1, topic+"/t")
				}
				if st.gone {
					ep.SubscribeAt(t, 1, topic+"/s")
					sync()
					pub.Send(t, topic+"/t", 1, "for the old subscription")
					pub.Send(t, topic+"/s", 1, "sentinel")
					if got := mqtttest.UntilMsg(t, ep, "sentinel"); len(got) > 0 {
						t.Errorf("step %d: after a clean start the old subscription still delivers %v", i, got)
					}
				}
				disconnect()
				if tc.v == 4 && st.clean {
					// The next CONNECT must come after the broker has
					// ended this session, whose queue then goes.
					qw.waitGone(t, sessionQueue(id), "end of the clean session")
				}
			}
		})
	}

	t.Run("mqtt311-takeover-of-a-clean-session", func(t *testing.T) {
		// A clean session "lasts as long as the Network Connection. State
		// data associated with this Session MUST NOT be reused in any
		// subsequent Session" (3.1.1 [MQTT-3.1.2-6]), a session that takes
		// over its live connection included.
		const id = "ca-takeover"
		a := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id})
		a.SubscribeAt(t, 1, "ca/tk/t")
		c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: id, Persistent: true})
		if c.SessionPresent {
			t.Errorf("CONNACK session present 1 on taking over a clean session, want 0 (3.1.1 [MQTT-3.2.2-3])")
		}
		c.SubscribeAt(t, 1, "ca/tk/s")
		pub.Send(t, "ca/tk/t", 1, "for the clean session's subscription")
		pub.Send(t, "ca/tk/s", 1, "sentinel")
		if got := mqtttest.UntilMsg(t, c, "sentinel"); len(got) > 0 {
			t.Errorf("the clean session's subscription was carried over: got %v (3.1.1 [MQTT-3.1.2-6])", got)
		}
	})
}

// ---- 11. message expiry ----

// TestMQTTMessageExpiry: a message published with Message Expiry Interval
// 1 s to an offline persistent session expires in its queue: "If the
// Message Expiry Interval has passed and the Server has not managed to
// start onward delivery to a matching subscriber, then it MUST delete the
// copy of the message for that subscriber" [MQTT-3.3.2-5]. One published
// with an interval still running is delivered with the time it waited
// taken off [MQTT-3.3.2-6].
func TestMQTTMessageExpiry(t *testing.T) {
	const id = "me-sub"
	b := StartBroker(t)
	qw := newQueueWatch(t, b)
	c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, SessionExpiry: 300})
	c.SubscribeAt(t, 1, "me/t")
	if err := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "me-pub"})
	sent := time.Now()
	pub.PublishAcked(t, &paho.Publish{Topic: "me/t", QoS: 1, Payload: []byte("short"),
		Properties: &paho.PublishProperties{MessageExpiry: ptr(uint32(1))}})
	if n := qw.ready(t, sessionQueue(id)); n != 1 && time.Since(sent) < time.Second {
		t.Fatalf("%s holds %d messages right after the publish, want 1", sessionQueue(id), n)
	}
	qw.waitReady(t, sessionQueue(id), 0, "the message expiring")
	pub.PublishAcked(t, &paho.Publish{Topic: "me/t", QoS: 1, Payload: []byte("long"),
		Properties: &paho.PublishProperties{MessageExpiry: ptr(uint32(3600))}})

	c = mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: id, Resume: true, SessionExpiry: 300})
	m := c.Next(t, "the unexpired message")
	if string(m.Payload) != "long" {
		t.Fatalf("first message after reconnecting: %q, want \"long\" (\"short\" expired) [MQTT-3.3.2-5]", m.Payload)
	}
	if p := m.Properties; p == nil || p.MessageExpiry == nil || *p.MessageExpiry == 0 || *p.MessageExpiry > 3600 {
		t.Errorf("Message Expiry Interval of the delivery: %+v, want 1..3600 [MQTT-3.3.2-6]", p)
	}
}

// ---- 12. unsubscribe ----

// TestMQTTUnsubscribe: the UNSUBACK has a reason code per filter, in
// order [MQTT-3.11.3-1]: 0x00 for a subscription deleted, 0x11 where none
// existed; filters are compared character by character, wildcards
// included [MQTT-3.10.4-1]. After it, no new messages of the filter come
// [MQTT-3.10.4-2], while the other subscriptions go on.
func TestMQTTUnsubscribe(t *testing.T) {
	b := StartBroker(t)
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "us-pub"})

	t.Run("mqtt5", func(t *testing.T) {
		c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "us-mqtt5"})
		c.SubscribeAt(t, 1, "us5/a", "us5/b/+", "us5/keep", "$share/usg/us5/s")
		ua, err := c.Unsubscribe(mqtttest.Ctx(t), &paho.Unsubscribe{Topics: []string{"us5/a", "us5/none", "us5/b/+", "us5/b/x", "$share/usg/us5/s"}})
		if err != nil {
			t.Fatalf("unsubscribe: %v", err)
		}
		if want := []byte{0x00, 0x11, 0x00, 0x11, 0x00}; !slices.Equal(ua.Reasons, want) {
			t.Errorf("UNSUBACK reasons % x, want % x [MQTT-3.11.3-1, -2]", ua.Reasons, want)
		}
		ua, err = c.Unsubscribe(mqtttest.Ctx(t), &paho.Unsubscribe{Topics: []string{"us5/a"}})
		if err != nil {
			t.Fatalf("second unsubscribe: %v", err)
		}
		if !slices.Equal(ua.Reasons, []byte{0x11}) {
			t.Errorf("unsubscribing again: reasons % x, want 11", ua.Reasons)
		}
		for _, topic := range []string{"us5/a", "us5/b/x", "us5/s"} {
			pub.Send(t, topic, 1, "to "+topic)
		}
		pub.Send(t, "us5/keep", 1, "sentinel")
		if got := c.Until(t, "sentinel"); len(got) > 0 {
			t.Errorf("after unsubscribing got %s [MQTT-3.10.4-2]", mqtttest.V5Topics(got))
		}
	})

	t.Run("mqtt311", func(t *testing.T) {
		c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "us-mqtt311"})
		c.SubscribeAt(t, 1, "us3/a", "us3/keep")
		mqtttest.WaitToken(t, c.Unsubscribe("us3/a", "us3/none"), "unsubscribe") // an UNSUBACK even where nothing was deleted (3.1.1 [MQTT-3.10.4-5])
		pub.Send(t, "us3/a", 1, "to us3/a")
		pub.Send(t, "us3/keep", 1, "sentinel")
		if got := mqtttest.UntilMsg(t, c, "sentinel"); len(got) > 0 {
			t.Errorf("after unsubscribing got %v (3.1.1 [MQTT-3.10.4-2])", got)
		}
	})
}
