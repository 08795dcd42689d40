package bridge

import (
	"fmt"
	"net"
	"sync"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho/session/state"

	"github.com/ferrymq/ferrymq/core"
)

// linkSession is paho.golang's session state with the link's outbound
// publishes taken out of it. paho's PublishWithOptions costs, per QoS 1
// publish, a timeout context, a cancel context and a goroutine, two
// channels and a serialised copy of the packet in its store (a third of
// the edge's CPU per message in a drain); the link needs none of it: it
// keeps its own messages until they are confirmed, and starts each
// connection with a new session state. So the link writes its PUBLISH
// packets itself, numbered from its own packet ids, bounded by the
// upstream's Receive Maximum, and takes their PUBACK here before paho's
// state sees them (the link publishes at QoS 1 at most: see maxOutQoS). paho keeps the connection, CONNECT,
// SUBSCRIBE and the inbound side.
//
// Packet ids are shared with paho's state, which numbers SUBSCRIBE: the
// link subscribes before it publishes anything, and waits for SUBACK, so
// the two never have an id in use at once.
type linkSession struct {
	*state.State
	conn net.Conn // sniffConn over batchconn: a Locker

	// slots holds one entry per publish in flight: its capacity is the
	// upstream's Receive Maximum. publish fills it, confirmLoop empties
	// it once it reported the publish.
	slots chan struct{}
	// acked takes each answered publish to confirmLoop. It never fills:
	// what it holds and what waits are together at most cap(slots).
	acked chan outAck

	// maxPacket is the upstream's Maximum Packet Size (0: none); set by
	// start.
	maxPacket uint32

	mu      sync.Mutex
	waiting map[uint16]outPub // written, not answered; by packet id
	nextID  uint16
	closed  bool // close reported every publish: answers are ignored

	buf []byte // the packet being encoded; publish's goroutine only
}

type outPub struct {
	t ticket
}

type outAck struct {
	t   ticket
	err error // nil: confirmed; errLost or the upstream's refusal
}

func newLinkSession(conn net.Conn) *linkSession {
	return &linkSession{State: state.NewInMemory(), conn: conn, waiting: map[uint16]outPub{}}
}

// start sizes the window and the packets from the CONNACK, before the
// first publish.
func (s *linkSession) start(receiveMax uint16, maxPacket uint32) {
	if receiveMax == 0 {
		receiveMax = 65535
	}
	s.maxPacket = maxPacket
	s.slots = make(chan struct{}, receiveMax)
	s.acked = make(chan outAck, receiveMax)
}

// write sends one whole packet: under the connection's packet lock, so it
// never lands between the several writes of one of paho's packets.
func (s *linkSession) write(p []byte) error {
	if l, ok := s.conn.(sync.Locker); ok {
		l.Lock()
		defer l.Unlock()
	}
	_, err := s.conn.Write(p)
	return err
}

// send writes a PUBLISH of m. For QoS 1 it takes a slot first
// (waiting while Receive Maximum are in flight, or until gone closes) and
// t is answered through acked; for QoS 0, t is done once written. It
// reports whether the packet was written; if not, t has been reported
// lost.
func (s *linkSession) send(topic string, m *core.Message, qos byte, node string, t ticket, gone <-chan struct{}) error {
	if qos == 0 {
		s.buf = appendPublish(s.buf[:0], topic, m, 0, 0, node)
		if err := s.write(s.buf); err != nil {
			t.done(errLost)
			return err
		}
		t.done(nil)
		return nil
	}
	select {
	case s.slots <- struct{}{}:
	case <-gone:
		t.done(errLost)
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		t.done(errLost)
		return nil
	}
	id := s.nextID
	for {
		id++
		if id == 0 {
			id = 1
		}
		if _, used := s.waiting[id]; !used {
			break
		}
	}
	s.nextID = id
	s.waiting[id] = outPub{t: t}
	s.mu.Unlock()
	s.buf = appendPublish(s.buf[:0], topic, m, qos, id, node)
	if s.maxPacket > 0 && len(s.buf) > int(s.maxPacket) {
		// The upstream would close the connection on it [MQTT-3.2.2-15],
		// and it would be sent again after every reconnect.
		s.mu.Lock()
		if _, ok := s.waiting[id]; ok {
			s.answerLocked(id, fmt.Errorf("%w: a %d-byte PUBLISH is over its Maximum Packet Size of %d", errRefused, len(s.buf), s.maxPacket))
		}
		s.mu.Unlock()
		return nil
	}
	// A failed write leaves the publish waiting: the connection is
	// lost, and ConnectionLost or close reports it.
	return s.write(s.buf)
}

// answerLocked hands the publish of id to confirmLoop; s.mu is held.
func (s *linkSession) answerLocked(id uint16, err error) {
	p := s.waiting[id]
	delete(s.waiting, id)
	s.acked <- outAck{t: p.t, err: err}
}

// PacketReceived takes the answers to the link's publishes; the rest go
// to paho's state.
func (s *linkSession) PacketReceived(cp *packets.ControlPacket, pubs chan<- *packets.Publish) error {
	c, ok := cp.Content.(*packets.Puback)
	if !ok {
		return s.State.PacketReceived(cp, pubs)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.waiting[c.PacketID]; !ok {
		if s.closed {
			return nil
		}
		return s.State.PacketReceived(cp, pubs)
	}
	s.answerLocked(c.PacketID, pubackError(c))
	return nil
}

// pubackError is what a PUBACK says of its publish: nil below 0x80 (0x10,
// no matching subscribers, included); wrapping errRefused for the codes
// that refuse this message whatever happens (0x83 implementation
// specific, which ferrymq gives a message its store refuses; 0x87 not
// authorized; 0x90 topic name invalid; 0x99 payload format invalid); else
// an error after which the message is sent again (0x80 unspecified, 0x91
// packet identifier in use, 0x97 quota exceeded).
func pubackError(c *packets.Puback) error {
	switch c.ReasonCode {
	case 0x83, 0x87, 0x90, 0x99:
		return fmt.Errorf("%w: PUBACK %#x %s", errRefused, c.ReasonCode, c.Reason())
	}
	if c.ReasonCode >= 0x80 {
		return fmt.Errorf("bridge: upstream refused a publish: PUBACK %#x %s", c.ReasonCode, c.Reason())
	}
	return nil
}

// ConnectionLost reports every publish waiting lost: the next connection
// sends them again.
func (s *linkSession) ConnectionLost(dp *packets.Disconnect) error {
	s.mu.Lock()
	for id := range s.waiting {
		s.answerLocked(id, errLost)
	}
	s.mu.Unlock()
	return s.State.ConnectionLost(dp)
}

// close reports every publish not yet reported lost, and ignores answers
// from then on; confirmLoop has stopped.
func (s *linkSession) close() {
	s.mu.Lock()
	s.closed = true
	waiting := s.waiting
	s.waiting = map[uint16]outPub{}
	s.mu.Unlock()
	var f flusher
	defer f.flush()
	for _, p := range waiting {
		f.done(p.t, errLost)
	}
	if s.acked == nil {
		return
	}
	for {
		select {
		case a := <-s.acked:
			f.done(a.t, errLost)
		default:
			return
		}
	}
}

// appendPublish appends an MQTT 5 PUBLISH of m to b: the properties the
// MQTT listener maps (content type, correlation data, headers as user
// properties) and node added to ViaHeader, as toMQTT5 and withVia would
// make them, without their maps and buffers.
//
// An MQTT string holds at most 65,535 bytes: a header that does not fit a
// user property is left out (an AMQP header can be longer), and a via
// list that would not fit is restarted from node, so that no message
// makes a packet the upstream cannot parse and the link stall on it.
func appendPublish(b []byte, topic string, m *core.Message, qos byte, id uint16, node string) []byte {
	p := &m.Properties
	via, _ := p.Headers[ViaHeader].(string)
	if via != "" && len(via)+1+len(node) <= maxString {
		via += "," + node
	} else {
		via = node
	}
	props := 0
	if p.ContentType != "" {
		props += 3 + len(p.ContentType)
	}
	if p.CorrelationID != "" {
		props += 3 + len(p.CorrelationID)
	}
	for k, v := range p.Headers {
		if s, ok := userProperty(k, v); ok {
			props += 5 + len(k) + len(s)
		}
	}
	props += 5 + len(ViaHeader) + len(via)
	n := 2 + len(topic) + vbiLen(props) + props + len(m.Body)
	if qos > 0 {
		n += 2
	}
	b = append(b, packets.PUBLISH<<4|qos<<1)
	b = appendVBI(b, n)
	b = appendString(b, topic)
	if qos > 0 {
		b = append(b, byte(id>>8), byte(id))
	}
	b = appendVBI(b, props)
	if p.ContentType != "" {
		b = appendString(append(b, packets.PropContentType), p.ContentType)
	}
	if p.CorrelationID != "" {
		b = appendString(append(b, packets.PropCorrelationData), p.CorrelationID)
	}
	for k, v := range p.Headers {
		if s, ok := userProperty(k, v); ok {
			b = appendString(appendString(append(b, packets.PropUser), k), s)
		}
	}
	b = appendString(appendString(append(b, packets.PropUser), ViaHeader), via)
	return append(b, m.Body...)
}

// maxString is the longest MQTT UTF-8 string: its length is two bytes.
const maxString = 1<<16 - 1

// userProperty reports whether header k, v is sent as a user property, and
// its value: string headers other than the via list that fit MQTT strings.
func userProperty(k string, v any) (string, bool) {
	s, ok := v.(string)
	return s, ok && k != ViaHeader && len(k) <= maxString && len(s) <= maxString
}

func appendString(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

func appendVBI(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func vbiLen(n int) int {
	k := 1
	for n >= 128 {
		n /= 128
		k++
	}
	return k
}
