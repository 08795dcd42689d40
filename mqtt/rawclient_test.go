package mqtt

// A raw MQTT client for protocol tests: it drives the socket byte by byte
// where a client library would hide what a test is about (paho
// acknowledges at once, keeps one of several Subscription Identifiers,
// never leaves a PUBREL without its PUBCOMP, will not send malformed
// packets).

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// mqttWait bounds each wait for one thing the broker should do, as for
// mqtttest's clients.
const mqttWait = mqtttest.Wait

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
	// Props are more MQTT 5 CONNECT properties, encoded.
	Props []byte
	// Name and Level, when set, replace the protocol name ("MQTT") and
	// level (Version) on the wire: a Mosquitto bridge's 0x84.
	Name  string
	Level byte
	// AutoAck sends the PUBACK of each QoS 1 PUBLISH as it is read.
	AutoAck bool
	// Username and Password default to guest/guest when both are empty.
	Username, Password string
}

type rawWill struct {
	Topic, Payload string
	QoS            byte
	Retain         bool
	Props          []byte // MQTT 5 will properties, encoded
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
	flags := byte(0xC0) // user name and password
	if !o.Resume {
		flags |= 0x02
	}
	if w := o.Will; w != nil {
		flags |= 0x04 | w.QoS<<3
		if w.Retain {
			flags |= 0x20
		}
	}
	ka := o.KeepAlive
	if ka == 0 {
		ka = 60
	}
	name, level := "MQTT", o.Version
	if o.Name != "" {
		name = o.Name
	}
	if o.Level != 0 {
		level = o.Level
	}
	vh := append(mqttStr(name), level, flags)
	vh = append(vh, u16(ka)...)
	if o.Version == 5 {
		var props []byte
		if o.SessionExpiry > 0 {
			props = append(append(props, propSessionExpiry), u32(o.SessionExpiry)...)
		}
		if o.ReceiveMaximum > 0 {
			props = append(append(props, propReceiveMaximum), u16(o.ReceiveMaximum)...)
		}
		props = append(props, o.Props...)
		vh = append(vh, withLen(props)...)
	}
	payload := mqttStr(o.ClientID)
	if w := o.Will; w != nil {
		if o.Version == 5 {
			payload = append(payload, withLen(w.Props)...)
		}
		payload = append(payload, mqttStr(w.Topic)...)
		payload = append(payload, mqttStr(w.Payload)...)
	}
	user, pass := o.Username, o.Password
	if user == "" && pass == "" {
		user, pass = "guest", "guest"
	}
	payload = append(payload, mqttStr(user)...)
	payload = append(payload, mqttStr(pass)...)
	return mqttPkt(0x10, vh, payload)
}

// dialRaw connects a raw client to addr and fails the test unless the
// CONNACK accepts it. The connection is closed when the test ends.
func dialRaw(t testing.TB, addr string, o rawOpts) *rawClient {
	t.Helper()
	c, code := dialRawCode(t, addr, o)
	if code != 0 {
		t.Fatalf("CONNACK for %q: reason %#x", o.ClientID, code)
	}
	return c
}

// dialRawCode connects a raw client to addr and returns it with the
// CONNACK's reason code (return code for 3.1.1).
func dialRawCode(t testing.TB, addr string, o rawOpts) (*rawClient, byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, mqttWait)
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
		return c, p.body[1]
	}
	c.SessionPresent = p.body[0]&1 == 1
	if o.Version == 5 {
		props, _, err := readProps(p.body[2:])
		if err != nil {
			t.Fatalf("CONNACK for %q: %v", o.ClientID, err)
		}
		c.Props = props
	}
	return c, 0
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
	c.conn.SetWriteDeadline(time.Now().Add(mqttWait))
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
	timer := time.NewTimer(mqttWait)
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
			t.Fatalf("%s: no packet of type %d within %v; other packets read: %v", what, typ, mqttWait, c.stash)
		}
	}
}

// nextPub returns the next PUBLISH received.
func (c *rawClient) nextPub(t testing.TB, what string) rawPublish {
	t.Helper()
	return c.nextPubWithin(t, what, mqttWait)
}

// nextPubWithin is nextPub with a deadline of its own, for a delivery that
// is much more work than one packet of the usual size.
func (c *rawClient) nextPubWithin(t testing.TB, what string, wait time.Duration) rawPublish {
	t.Helper()
	select {
	case p := <-c.pubs:
		return p
	default:
	}
	timer := time.NewTimer(wait)
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
		t.Fatalf("%s: no PUBLISH within %v", what, wait)
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
