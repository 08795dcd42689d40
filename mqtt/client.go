package mqtt

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Timeouts of a connection's life outside Keep Alive.
const (
	connectTimeout = 10 * time.Second // from accept to CONNECT
	finishTimeout  = time.Second      // for the DISCONNECT before a close
)

// client is one network connection speaking MQTT. Its reader decodes
// packets (mochi's codec) and answers the protocol's own - CONNECT,
// SUBSCRIBE, PINGREQ, DISCONNECT; publishes and acknowledgements go to
// its session, on core. Where the platform allows, an idle client holds no
// goroutine and no read buffer (see read.go): an IoT fleet is mostly idle
// connections.
type client struct {
	srv  *Server
	conn net.Conn
	raw  syscall.RawConn // conn's socket, where writes may go to it directly
	sock syscall.RawConn // the TCP socket under conn, TLS or not: what parks
	tls  bool            // conn is TLS
	key  uint64          // the poller's name for it

	// Set by CONNECT, read-only once sess is set.
	id        string
	version   byte
	keepalive time.Duration // how long it may be silent (1.5 × Keep Alive); 0: forever
	// What the CONNECT's properties ask of the packets sent to it.
	maxPacket     uint32 // 0: no limit
	noProblemInfo bool   // Request Problem Information 0
	responseInfo  bool   // Request Response Information 1
	expiry        uint32 // the CONNECT's session expiry
	aliasMax      uint16 // topic aliases it takes from us (its Topic Alias Maximum)
	// bridge is set for a Mosquitto bridge (protocol level with 0x80):
	// like Mosquitto, it gets no echo of its own messages and every
	// message with RETAIN as published.
	bridge bool
	sess   *session

	// The reader's own.
	rd       reader
	parkable bool              // the poller can watch it while idle
	aliases  map[uint16]string // inbound topic aliases

	turn writeTurn // one writer at a time on conn

	stats clientStats // packets and bytes in and out, for $SYS

	lastRead atomic.Int64 // unix nanoseconds
	timer    *time.Timer  // CONNECT timeout, then Keep Alive

	// readState hands the read side between a goroutine and the poller:
	// whoever moves it from parked to running owns it, so exactly one of a
	// waking poller and a closer finishes a parked client.
	readState atomic.Int32
	closing   atomic.Bool
	done      chan struct{} // closed with closing, for waits that must end with the connection
	closed    chan struct{} // closed once the first close has written its DISCONNECT and closed conn
	// held is set while the reader waits out a resource alarm: its
	// silence is ours, not the client's, so Keep Alive does not count it.
	held atomic.Bool

	mu    sync.Mutex
	cause error           // why it closed, first reason wins
	will  *packets.Packet // published when it ends without DISCONNECT; nil: none
}

const (
	readRunning int32 = iota
	readParked
)

// checkAlive closes a client silent for longer than its Keep Alive allows
// [MQTT-3.1.2-24], or that sent no CONNECT in time. The timer is not reset
// on every packet: it looks at when the client last spoke and sleeps for
// the rest.
func (c *client) checkAlive() {
	limit := connectTimeout
	c.mu.Lock()
	connected := c.sess != nil
	c.mu.Unlock()
	if connected {
		limit = c.keepalive
		if limit == 0 {
			return
		}
		if c.held.Load() {
			c.timer.Reset(limit)
			return
		}
	}
	idle := time.Duration(time.Now().UnixNano() - c.lastRead.Load())
	if !connected || idle >= limit {
		c.close(packets.ErrKeepAliveTimeout)
		return
	}
	c.timer.Reset(limit - idle)
}

// handle acts on one packet from the client.
func (c *client) handle(fh packets.FixedHeader, body []byte) error {
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: c.version}
	// mochi's decoders keep slices of their input (a payload is kept in
	// core), so they get their own copy of it.
	buf := append([]byte(nil), body...)
	if c.sess == nil {
		if fh.Type != packets.Connect {
			return packets.ErrProtocolViolationRequireFirstConnect // [MQTT-3.1.0-1]
		}
		return c.handleConnect(&pk, buf)
	}
	s := c.sess
	switch fh.Type {
	case packets.Publish:
		if err := pk.PublishDecode(buf); err != nil {
			return err
		}
		if code := pk.PublishValidate(c.srv.cfg.TopicAliasMaximum); code != packets.CodeSuccess {
			return code
		}
		if a := pk.Properties.TopicAlias; pk.Properties.TopicAliasFlag && a > 0 {
			if pk.TopicName == "" {
				pk.TopicName = c.aliases[a] // "" if never set: refused by publish
			} else {
				if c.aliases == nil {
					c.aliases = make(map[uint16]string)
				}
				c.aliases[a] = pk.TopicName
			}
		}
		return s.publish(&pk)
	case packets.Puback, packets.Pubrec, packets.Pubrel, packets.Pubcomp:
		var err error
		switch fh.Type {
		case packets.Puback:
			err = pk.PubackDecode(buf)
		case packets.Pubrec:
			err = pk.PubrecDecode(buf)
		case packets.Pubrel:
			err = pk.PubrelDecode(buf)
		default:
			err = pk.PubcompDecode(buf)
		}
		if err != nil {
			return err
		}
		s.acked(&pk)
		return nil
	case packets.Subscribe:
		if err := pk.SubscribeDecode(buf); err != nil {
			return err
		}
		if code := pk.SubscribeValidate(); code != packets.CodeSuccess {
			return code
		}
		codes, replays := s.subscribe(pk.Filters)
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: pk.PacketID, ReasonCodes: codes}
		// The retained messages are queued before the SUBACK goes out, so
		// that a message published after the client saw its SUBACK comes
		// after them (as from Mosquitto, which does both in one step); the
		// write turn is held meanwhile, so that their PUBLISHes, buffered
		// until it is released, cannot overtake the SUBACK.
		c.turn.take()
		defer c.turn.release()
		s.replayRetained(replays)
		return c.writePacketInTurn(&ack)
	case packets.Unsubscribe:
		if err := pk.UnsubscribeDecode(buf); err != nil {
			return err
		}
		if code := pk.UnsubscribeValidate(); code != packets.CodeSuccess {
			return code
		}
		codes := s.unsubscribe(pk.Filters)
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsuback}, PacketID: pk.PacketID, ReasonCodes: codes}
		return c.writePacket(&ack)
	case packets.Pingreq:
		return c.writePacket(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}}) // [MQTT-3.12.4-1]
	case packets.Disconnect:
		if err := pk.DisconnectDecode(buf); err != nil {
			return err
		}
		return c.clientDisconnect(&pk)
	case packets.Connect:
		return packets.ErrProtocolViolationSecondConnect // [MQTT-3.1.0-2]
	case packets.Auth:
		// No CONNECT here names an authentication method, so an AUTH is a
		// protocol error [MQTT-3.15.0-1]... [MQTT-4.12.0-1].
		return packets.ErrProtocolViolation
	default: // packets only a server sends
		return packets.ErrProtocolViolation
	}
}

// clientDisconnect handles the client's DISCONNECT: the will is dropped
// unless the reason is 0x04 [MQTT-3.14.4-3], and a session expiry set
// there replaces the CONNECT's, except from zero [MQTT-3.14.2-2].
func (c *client) clientDisconnect(pk *packets.Packet) error {
	if pk.Properties.SessionExpiryIntervalFlag {
		if pk.Properties.SessionExpiryInterval > 0 && c.expiry == 0 {
			return packets.ErrProtocolViolationZeroNonZeroExpiry
		}
		c.sess.setExpiry(pk.Properties.SessionExpiryInterval)
	}
	if pk.ReasonCode != packets.CodeDisconnectWillMessage.Code {
		c.mu.Lock()
		c.will = nil
		c.mu.Unlock()
	}
	return packets.CodeDisconnect
}

// writePacket encodes a control packet and writes it at once.
func (c *client) writePacket(pk *packets.Packet) error {
	c.turn.take()
	defer c.turn.release()
	return c.writePacketInTurn(pk)
}

// writePacketInTurn is writePacket by a goroutine that holds the write turn.
func (c *client) writePacketInTurn(pk *packets.Packet) error {
	pk.ProtocolVersion = c.version
	pk.Mods.MaxSize = c.maxPacket
	pk.Mods.DisallowProblemInfo = c.noProblemInfo // [MQTT-3.1.2-29]
	if pk.FixedHeader.Type != packets.Connack || c.responseInfo {
		pk.Mods.AllowResponseInfo = true // [MQTT-3.1.2-28]
	}
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackEncode(&buf)
	case packets.Suback:
		err = pk.SubackEncode(&buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(&buf)
	case packets.Pingresp:
		err = pk.PingrespEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = packets.ErrNoValidPacketAvailable
	}
	if err != nil {
		return err
	}
	if pk.Mods.MaxSize > 0 && uint32(buf.Len()) > pk.Mods.MaxSize {
		return packets.ErrPacketTooLarge // [MQTT-3.1.2-24]
	}
	c.stats.pktOut.Add(1)
	c.stats.bytesOut.Add(uint64(buf.Len()))
	return c.writeInTurn(buf.Bytes(), writeTimeout)
}

// writeRaw writes bytes encoded by hand (a CONNACK for a protocol level
// mochi cannot encode for).
func (c *client) writeRaw(b []byte) {
	if err := c.write(b, finishTimeout); err != nil {
		c.srv.log.Debug("mqtt: write failed", "client", c.id, "err", err)
	}
}

// write writes whole packets; writers take turns, so packets never
// interleave.
func (c *client) write(b []byte, timeout time.Duration) error {
	c.turn.take()
	defer c.turn.release()
	return c.writeInTurn(b, timeout)
}

// writeInTurn writes b by a goroutine that holds the write turn.
func (c *client) writeInTurn(b []byte, timeout time.Duration) error {
	if c.closing.Load() {
		timeout = min(timeout, finishTimeout)
	}
	c.conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.conn.Write(b)
	return err
}

// tryWrite writes what the socket takes of b at once, without waiting for
// it or for another writer; it returns how much that was. After a part of
// b (0 < n < len(b)) the caller holds the write turn: nothing else may be
// written before the rest, which it (or the goroutine it passes the turn
// to) writes with writeInTurn before it releases the turn.
func (c *client) tryWrite(b []byte) int {
	if c.raw == nil || !c.turn.tryTake() {
		return 0
	}
	// A deadline passed since the last write would fail the raw write
	// before it starts.
	c.conn.SetWriteDeadline(time.Time{})
	n := writeNow(c.raw, b)
	if n == 0 || n == len(b) {
		c.turn.release()
	}
	return n
}

// epoch and nanotime give a monotonic clock cheaper to compare than
// time.Time.
var epoch = time.Now()

func nanotime() int64 { return int64(time.Since(epoch)) }

// close ends the connection, for err, from any goroutine. An MQTT 5
// client is told why first when err is a reason code of 0x80 or more (3.1.1
// has no server DISCONNECT). The socket closes at once; the session ends
// in finish, run by whoever owns the read side.
func (c *client) close(err error) {
	c.mu.Lock()
	if c.cause == nil {
		c.cause = err
	}
	first := !c.closing.Load()
	c.closing.Store(true)
	if first {
		close(c.done)
	}
	sess := c.sess
	var code packets.Code
	send := first && c.version == 5 && sess != nil && errors.As(err, &code) && code.Code >= 0x80
	c.mu.Unlock()
	if !first {
		return
	}
	if s := sess; s != nil {
		// A 3.1.1 reader may wait for acknowledgements that a failed store
		// never releases.
		s.mu.Lock()
		s.drained.Broadcast()
		s.mu.Unlock()
	}
	if send {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: reasonCode(code)}
		if code.Code >= packets.ErrUnspecifiedError.Code {
			pk.Properties.ReasonString = code.Reason // [MQTT-3.14.2-1]
		}
		c.writeDisconnect(&pk)
	}
	c.conn.Close()
	close(c.closed)
	if c.readState.CompareAndSwap(readParked, readRunning) {
		go c.finish()
	}
}

// writeDisconnect writes a DISCONNECT without waiting long for a client
// that does not read.
func (c *client) writeDisconnect(pk *packets.Packet) {
	pk.ProtocolVersion = c.version
	pk.Mods.MaxSize = c.maxPacket
	var buf bytes.Buffer
	if pk.DisconnectEncode(&buf) != nil || (c.maxPacket > 0 && uint32(buf.Len()) > c.maxPacket) {
		return // [MQTT-3.1.2-24]
	}
	// A writer stuck on a client that does not read gives up its turn
	// within finishTimeout instead of its writeTimeout.
	c.conn.SetWriteDeadline(time.Now().Add(finishTimeout))
	c.write(buf.Bytes(), finishTimeout)
}

// finish runs once, after the read side stopped: the will goes out unless
// the client said DISCONNECT, and the session ends.
func (c *client) finish() {
	// Last: Server.Close waits for every client's will and session end.
	defer c.srv.forget(c)
	c.timer.Stop()
	// The reader may get here while another goroutine's close (a takeover,
	// an operator's, a vhost deletion) is still writing its DISCONNECT:
	// closing conn under it would lose the reason code. That write is
	// bounded by finishTimeout.
	<-c.closed
	c.rd.release()
	c.mu.Lock()
	err, will, s := c.cause, c.will, c.sess
	c.will = nil
	c.mu.Unlock()
	if s == nil {
		return
	}
	if !errors.Is(err, packets.CodeDisconnect) || will != nil {
		c.srv.log.Debug("mqtt: client disconnected", "client", c.id, "err", err)
	}
	if will != nil {
		s.sendWill(will)
	}
	c.srv.endSession(s)
}

// remoteIsLoopback reports whether the client connects from this machine
// (guest may log in only from there, as in RabbitMQ).
func (c *client) remoteIsLoopback() bool {
	switch a := c.conn.RemoteAddr().(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	}
	return false
}

// reasonCode corrects the DISCONNECT reason codes mochi's validators pick
// where the spec names a more specific one: QoS 3 in a PUBLISH is a
// malformed packet [MQTT-3.3.1-4], a wildcard in a topic name is 0x90
// Topic Name invalid.
func reasonCode(c packets.Code) byte {
	switch c {
	case packets.ErrProtocolViolationQosOutOfRange:
		return packets.ErrMalformedPacket.Code
	case packets.ErrProtocolViolationSurplusWildcard:
		return packets.ErrTopicNameInvalid.Code
	}
	return c.Code
}
