package mqtt

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// Protocol levels [MQTT-3.1.2-2], and the bit Mosquitto sets on the level
// of a bridge's CONNECT (its try_private) to say it is a bridge.
const (
	level31     = 3
	level311    = 4
	level5      = 5
	levelBridge = 0x80
)

// protocolLevel reads the protocol name and level at the start of a
// CONNECT body; ok is false when there are not that many bytes.
func protocolLevel(body []byte) (name string, level byte, off int, ok bool) {
	if len(body) < 2 {
		return "", 0, 0, false
	}
	n := int(body[0])<<8 | int(body[1])
	if len(body) < 2+n+1 {
		return "", 0, 0, false
	}
	return string(body[2 : 2+n]), body[2+n], 2 + n, true
}

// handleConnect decodes and handles CONNECT. The protocol is settled
// first: an unknown level gets the 3.1.1 form of CONNACK 0x01 whatever
// the client speaks, as Mosquitto sends it [MQTT-3.1.2-2], and a
// Mosquitto bridge's level (0x83, 0x84) is its own with the bridge bit
// cleared.
func (c *client) handleConnect(pk *packets.Packet, body []byte) error {
	name, level, off, ok := protocolLevel(body)
	if !ok {
		return packets.ErrMalformedProtocolName
	}
	if name != "MQTT" && name != "MQIsdp" {
		return packets.ErrProtocolViolationProtocolName // [MQTT-3.1.2-1]: closed without CONNACK
	}
	bridge := level&levelBridge != 0 && level&^levelBridge < level5
	level &^= levelBridge
	if (name == "MQIsdp") != (level == level31) || level < level31 || level > level5 {
		c.writeRaw([]byte{packets.Connack << 4, 2, 0, packets.Err3UnsupportedProtocolVersion.Code})
		return packets.ErrUnsupportedProtocolVersion
	}
	body[off] = level
	c.mu.Lock()
	c.version = level
	c.mu.Unlock()
	c.bridge = bridge
	pk.ProtocolVersion = level
	err := pk.ConnectDecode(body)
	if err == nil && level == level5 && zeroLimit(body[off+4:]) {
		err = packets.ErrProtocolViolation
	}
	if err != nil {
		if level == level5 {
			// A v5 client is told why [MQTT-4.13.1-1]; a 3.1.1 one is
			// just disconnected.
			code := packets.ErrMalformedPacket
			if cd, ok := err.(packets.Code); ok && cd.Code >= 0x80 {
				code = cd
			}
			c.refuse(code)
		}
		return err
	}
	return c.connect(pk)
}

// connect handles CONNECT: checks, login, the session (taken over,
// resumed or new), then CONNACK. Until it returns the client has no
// session, so no other packet is accepted.
func (c *client) connect(pk *packets.Packet) error {
	props := &pk.Properties
	c.maxPacket, c.expiry = props.MaximumPacketSize, props.SessionExpiryInterval
	c.noProblemInfo = props.RequestProblemInfoFlag && props.RequestProblemInfo == 0
	c.responseInfo = props.RequestResponseInfo == 1
	c.aliasMax = props.TopicAliasMaximum
	c.id = pk.Connect.ClientIdentifier
	if code := c.validateConnect(pk); code != packets.CodeSuccess {
		if c.version == level5 || code.Code < 0x80 {
			c.refuse(code)
		}
		return code
	}
	keepalive, serverKeepalive := c.srv.keepalive(pk.Connect.Keepalive, c.version)
	if ka := time.Duration(keepalive) * time.Second; ka > 0 {
		c.keepalive = ka + ka/2 // [MQTT-3.1.2-24]
	}
	var assigned string
	if c.id == "" {
		// [MQTT-3.1.3-6]; MQTT 5 says which [MQTT-3.2.2-16].
		c.id = "ferrymq-" + rand.Text()
		assigned = c.id
	}
	access, code := c.login(pk)
	if code != packets.CodeSuccess {
		c.refuse(code)
		return code
	}
	var will *packets.Packet
	if pk.Connect.WillFlag {
		will = &packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: pk.Connect.WillQos, Retain: pk.Connect.WillRetain},
			TopicName:   pk.Connect.WillTopic,
			Payload:     pk.Connect.WillPayload,
			Properties:  pk.Connect.WillProperties,
		}
		if err := checkPublish(c.srv, access, topic.RoutingKey(will.TopicName)); err != nil {
			c.srv.log.Warn("mqtt: will refused", "client", c.id, "user", access.Principal().Name, "topic", will.TopicName, "err", err)
			access.Close()
			c.refuse(packets.ErrNotAuthorized)
			return packets.ErrNotAuthorized
		}
	}
	s, present, code := c.srv.establish(c, pk, access)
	if code != packets.CodeSuccess {
		access.Close()
		c.refuse(code)
		return code
	}
	c.mu.Lock()
	c.sess, c.will = s, will
	c.mu.Unlock()
	if c.keepalive == 0 {
		c.timer.Stop()
	} else {
		c.timer.Reset(c.keepalive)
	}

	ack := packets.Packet{
		FixedHeader:    packets.FixedHeader{Type: packets.Connack},
		SessionPresent: present, // from core: sessions outlive restarts [MQTT-3.2.2-2]
	}
	ack.Properties.ReceiveMaximum = c.srv.cfg.ReceiveMaximum
	if c.version == level5 {
		ack.Properties.AssignedClientID = assigned
		ack.Properties.MaximumPacketSize = c.srv.cfg.MaxPacketSize
		ack.Properties.TopicAliasMaximum = c.srv.cfg.TopicAliasMaximum // [MQTT-3.2.2-18]
		if serverKeepalive {
			// [MQTT-3.2.2-21]
			ack.Properties.ServerKeepAlive, ack.Properties.ServerKeepAliveFlag = keepalive, true
		}
	}
	if err := c.writePacket(&ack); err != nil {
		return err
	}
	s.resendPubrels()
	s.established()
	return nil
}

// keepalive returns the Keep Alive a client gets for the one it asked
// for, and whether that differs (to be sent as Server Keep Alive). Past
// MaxKeepalive, 0 ("forever") included, an MQTT 5 client is given the
// maximum; an older one, which cannot be told, is refused by
// validateConnect, as Mosquitto does.
func (s *Server) keepalive(asked uint16, version byte) (uint16, bool) {
	max := s.cfg.MaxKeepalive
	if max == 0 || (asked > 0 && asked <= max) || version < level5 {
		return asked, false
	}
	return max, true
}

// validateConnect checks what mochi's decoder leaves to the server. A
// code of 0x80 or more closes a 3.x client without CONNACK (a malformed
// CONNECT [MQTT-3.1.2-3], [MQTT-3.1.2-22], [MQTT-1.5.3-1]); a v5 client
// gets it in the CONNACK.
func (c *client) validateConnect(pk *packets.Packet) packets.Code {
	cn := &pk.Connect
	switch {
	case pk.ReservedBit != 0:
		return packets.ErrMalformedFlags
	case c.version < level5 && cn.PasswordFlag && !cn.UsernameFlag:
		// MQTT 5 allows a password alone.
		return packets.ErrMalformedPassword
	case cn.UsernameFlag && !validUTF8(cn.Username):
		return packets.ErrMalformedUsername
	case !cn.WillFlag && (cn.WillQos != 0 || cn.WillRetain):
		return packets.ErrMalformedFlags // [MQTT-3.1.2-11], [MQTT-3.1.2-13]
	case cn.WillFlag && (cn.WillQos > 2 || !validTopic(cn.WillTopic)):
		return packets.ErrMalformedWillTopic // [MQTT-3.1.2-12]
	}
	if c.version < level5 {
		if !cn.Clean && c.id == "" {
			return packets.Err3ClientIdentifierNotValid // [MQTT-3.1.3-8]
		}
		if c.version == level31 && (c.id == "" || len(c.id) > 23) {
			return packets.Err3ClientIdentifierNotValid // MQTT 3.1's limit
		}
		if max := c.srv.cfg.MaxKeepalive; max > 0 && (cn.Keepalive == 0 || cn.Keepalive > max) {
			return packets.Err3ClientIdentifierNotValid // Mosquitto's answer to a Keep Alive over max_keepalive
		}
		return packets.CodeSuccess
	}
	switch {
	case pk.Properties.AuthenticationMethod != "":
		return packets.ErrBadAuthenticationMethod // §4.12: no method is supported
	}
	return packets.CodeSuccess
}

// zeroLimit reports whether the properties of a v5 CONNECT (props: the
// body from the property length on) set Maximum Packet Size or Receive
// Maximum to 0, a protocol error [MQTT-3.1.2-24]: mochi's decoder reads
// both as absent. The decoder has checked the properties' structure.
func zeroLimit(props []byte) bool {
	n, i := 0, 0
	for shift := 0; i < len(props) && i < 4; shift += 7 {
		b := props[i]
		i++
		n |= int(b&0x7F) << shift
		if b&0x80 == 0 {
			break
		}
	}
	end := min(i+n, len(props))
	u16 := func(at int) int { // a length; past the end, one too long
		if at+2 > end {
			return end
		}
		return int(props[at])<<8 | int(props[at+1])
	}
	for i < end {
		id := props[i]
		i++
		var size int
		switch id {
		case packets.PropRequestResponseInfo, packets.PropRequestProblemInfo:
			size = 1
		case packets.PropReceiveMaximum, packets.PropTopicAliasMaximum:
			size = 2
		case packets.PropSessionExpiryInterval, packets.PropMaximumPacketSize:
			size = 4
		case packets.PropAuthenticationMethod, packets.PropAuthenticationData:
			size = 2 + u16(i)
		case packets.PropUser:
			size = 2 + u16(i)
			size += 2 + u16(i+size)
		default:
			return false
		}
		if i+size > end {
			return false
		}
		zero := true
		for _, b := range props[i : i+size] {
			zero = zero && b == 0
		}
		if zero && (id == packets.PropReceiveMaximum || id == packets.PropMaximumPacketSize) {
			return true
		}
		i += size
	}
	return false
}

// refuse sends a CONNACK refusing the connection [MQTT-3.2.2-7], with the
// nearest 3.1.1 return code for an MQTT 3.1.1 client.
func (c *client) refuse(code packets.Code) {
	if c.version < 5 {
		switch code.Code {
		case packets.ErrNotAuthorized.Code:
			code = packets.Err3NotAuthorized
		case packets.ErrQuotaExceeded.Code:
			code = packets.Err3ServerUnavailable
		default:
			if v3, ok := packets.V5CodesToV3[code]; ok {
				code = v3
			}
		}
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: code.Code}
	if c.version == 5 {
		ack.Properties.ReasonString = code.Reason
	}
	c.writePacket(&ack)
}

// establish sets up the client's session before CONNACK: a session taken
// over from another connection stops first (its unacked deliveries go
// back to its queues) and that connection is closed [MQTT-3.1.4-3]; clean
// start, or an expiry passed while disconnected [MQTT-3.1.2-23], deletes
// the old session; otherwise its subscriptions are rebuilt from its
// queues. Wills that are due go out before it returns, so before the
// CONNACK. It reports whether a session was present.
func (srv *Server) establish(c *client, pk *packets.Packet, access *core.Access) (*session, bool, packets.Code) {
	props := &pk.Properties
	vhost := access.VHost()
	user := access.Principal().Name
	s := &session{
		srv: srv, cl: c, clientID: c.id, vhost: vhost, access: access,
		version:   c.version,
		maxPacket: props.MaximumPacketSize,
		aliasMax:  c.aliasMax,
	}
	s.drained.L = &s.mu
	s.ended = make(chan struct{})
	s.acks = core.NewSyncQueue(srv.broker, s.releaseAcks)
	if s.version == level5 {
		s.persistent = props.SessionExpiryInterval > 0
		s.expiry = props.SessionExpiryInterval
	} else {
		s.persistent = !pk.Connect.Clean
	}
	s.prefetch = uint32(srv.cfg.Prefetch)
	if rm := props.ReceiveMaximum; rm > 0 && uint32(rm) < s.prefetch {
		s.prefetch = uint32(rm)
	}
	s.key = vhost.Name() + "\x00" + c.id

	// Read before srv.mu, a leaf lock: a persistent session whose durable
	// queue, or QoS 0 queue if it had one, is gone lost subscriptions and
	// messages.
	markerGone := vhost.Queue(sessionQueueName(c.id, 1)) == nil
	qos0Gone := vhost.Queue(sessionQueueName(c.id, 0)) == nil

	srv.mu.Lock()
	st := srv.sessions[s.key]
	if owner := sessionOwner(st, s); owner != "" && owner != user {
		srv.mu.Unlock()
		srv.log.Warn("mqtt: client id belongs to another user", "client", c.id, "user", user, "owner", owner)
		return nil, false, packets.ErrClientIdentifierNotValid
	}
	expired := false
	if st != nil && st.expiry != nil {
		expired = !time.Now().Before(st.expiresAt)
		st.expiry.Stop()
		st.expiry = nil
	}
	resumable := st != nil && !pk.Connect.Clean && !expired
	// A 3.1.1 connection does not resume a live clean session it takes
	// over [MQTT-3.1.2-6].
	fresh := pk.Connect.Clean || expired || (st != nil && st.live != nil && !st.live.persistent && s.version < level5)
	var dueWill func()
	if st != nil && st.will != nil {
		// Reconnecting within the will delay cancels the will
		// [MQTT-3.1.3-9]; a session ending (clean start) sends it now.
		if st.will.Stop() && fresh {
			dueWill = st.willSend
		}
		st.will, st.willSend = nil, nil
	}
	// A session whose queue was deleted (by an administrator) did not
	// survive: it starts afresh and CONNACK says so, session present 0,
	// which tells the client to subscribe again [MQTT-3.2.2-4].
	lost := st != nil && !fresh && (st.lost || (st.persistent && (markerGone || (st.qos0 && qos0Gone))))
	countLost := lost && !st.lost // counted when it happened if it was live
	if lost {
		fresh = true
	}
	if st == nil || fresh {
		nst := &state{origin: srv.origins.Add(1), owner: user}
		if st != nil {
			// The old connection ends later and must not see itself as
			// the session's last connection.
			nst.live = st.live
			st.live = nil
		}
		st = nst
		srv.sessions[s.key] = st
		resumable = false
	}
	s.origin = st.origin
	st.persistent = s.persistent
	old := st.live
	st.live = s
	st.version = s.version
	srv.mu.Unlock()
	if lost {
		if countLost {
			srv.lost.Add(1)
		}
		srv.log.Warn("mqtt: session's queue was deleted; the session starts afresh, session present 0",
			"client", c.id, "vhost", vhost.Name())
	}
	s.st = st
	if dueWill != nil {
		dueWill()
	}
	if old != nil {
		old.stop()
		old.takenOver(fresh)
		old.cl.close(packets.ErrSessionTakenOver)
	}
	present := false
	if fresh {
		s.deleteQueues()
	} else {
		p, err := s.restore()
		if err != nil {
			srv.log.Warn("mqtt: session not fully restored", "client", c.id, "err", err)
		}
		// A session exists even with no subscriptions [MQTT-3.2.2-3].
		present = p || resumable
	}
	if s.persistent {
		// The durable queue marks the session across restarts, even while
		// it has no subscriptions.
		if err := s.ensureQueue(s.queueName(1), true, false); storeFailed(err) {
			// A session that cannot be stored is refused, as a client id
			// the store cannot hold (0x85; 3.1.1: 0x02 identifier
			// rejected) or, in a store outage, as the server being
			// unavailable (0x88; 3.1.1: 0x03) until the store is back.
			code := packets.ErrServerUnavailable
			if errors.Is(err, core.ErrStoreRefused) {
				code = packets.ErrClientIdentifierNotValid
			}
			srv.log.Warn("mqtt: session not stored: connection refused", "client", c.id, "code", code.Code, "err", err)
			srv.abandon(s)
			return nil, false, code
		} else if err != nil {
			srv.log.Warn("mqtt: session queue not declared", "client", c.id, "err", err)
		} else if err := s.consume(s.queueName(1), 1, true); err != nil {
			srv.log.Warn("mqtt: session queue not consumed", "client", c.id, "err", err)
		}
		// This CONNECT's expiry interval is the session's now.
		s.syncQueueExpiry()
	}
	return s, present, packets.CodeSuccess
}

// abandon undoes establish for a session refused before its CONNACK
// because its durable queue could not be stored. Such a session holds
// nothing yet (its queue is the first thing a new persistent session
// stores, and a failed declaration takes the queue back): it is
// forgotten, so that the next CONNECT starts it afresh rather than
// finding it lost.
func (srv *Server) abandon(s *session) {
	s.stop()
	srv.mu.Lock()
	if st := srv.sessions[s.key]; st == s.st && st.live == s {
		delete(srv.sessions, s.key)
	}
	srv.mu.Unlock()
	close(s.ended)
}

// takenOver publishes the will of a connection whose session another
// connection took over, before that one's CONNACK: unless the session
// goes on (not fresh, persistent) within a will delay [MQTT-3.1.3-9], it
// is due now [MQTT-3.1.4-3].
func (s *session) takenOver(fresh bool) {
	c := s.cl
	c.mu.Lock()
	will := c.will
	c.will = nil
	c.mu.Unlock()
	if will == nil {
		return
	}
	s.mu.Lock()
	persistent := s.persistent
	s.mu.Unlock()
	if fresh || !persistent || s.willDelay(will) == 0 {
		s.willPublisher(will)()
	}
}

// endSession ends a connection's session: unacked deliveries go back to
// the queues, and a session that is not persistent is deleted unless a
// newer connection took it over. A persistent MQTT 5 session is deleted
// when its expiry interval has passed [MQTT-3.1.2-23].
func (srv *Server) endSession(s *session) {
	s.stop()
	s.mu.Lock()
	persistent, expiry := s.persistent, s.expiry
	s.mu.Unlock()
	// Read before srv.mu, a leaf lock.
	qos0 := persistent && s.vhost.Queue(s.queueName(0)) != nil
	srv.mu.Lock()
	last := s.st.live == s
	if last {
		s.st.live = nil
		s.st.lastSeen = time.Now()
		s.st.qos0 = qos0
		if !persistent && s.st.will == nil {
			delete(srv.sessions, s.key)
		}
		if persistent && s.version == level5 && expiry != noExpiry {
			st, d := s.st, time.Duration(expiry)*time.Second
			st.expiresAt = time.Now().Add(d)
			st.expiry = time.AfterFunc(d, func() { srv.expireSession(s.key, st, s.vhost, s.clientID) })
		}
	}
	srv.mu.Unlock()
	if last && !persistent {
		s.deleteQueues()
	}
	s.access.Close()
	close(s.ended)
}

// noExpiry is the session expiry interval that means "never" (MQTT 5
// §3.1.2.11.2).
const noExpiry = 0xFFFFFFFF

// expireSession deletes a disconnected session whose expiry interval has
// passed, unless a connection resumed it meanwhile.
func (srv *Server) expireSession(key string, st *state, vhost *core.VHost, clientID string) {
	srv.mu.Lock()
	gone := srv.sessions[key] == st && st.live == nil && st.expiry != nil
	if gone {
		delete(srv.sessions, key)
		st.expiry = nil
	}
	srv.mu.Unlock()
	if gone {
		for qos := byte(0); qos <= 1; qos++ {
			vhost.DeleteQueue(sessionQueueName(clientID, qos), false, false, 0)
		}
	}
}

// willPublisher returns what publishes a will through core.
func (s *session) willPublisher(will *packets.Packet) func() {
	return func() {
		msg := toMessage(s.srv.cfg.Exchange, will, s.origin)
		if will.FixedHeader.Retain {
			s.vhost.Stamp(msg) // the store reads it from now on
			// Nobody acknowledges a will, so nothing waits for the
			// store: the log has it, and Close commits it.
			if _, err := s.srv.retain(s.vhost.Name(), will.TopicName, msg); err != nil {
				s.srv.log.Error("mqtt: retained will not stored", "client", s.clientID, "err", err)
			}
		}
		if _, err := s.vhost.Publish(msg); err != nil {
			s.srv.log.Debug("mqtt: will not routed", "client", s.clientID, "err", err)
		}
	}
}

// willDelay is how long a will waits [MQTT-3.1.3-9]: its delay, cut short
// by the session's expiry (the session ends first).
func (s *session) willDelay(will *packets.Packet) time.Duration {
	delay := time.Duration(will.Properties.WillDelayInterval) * time.Second
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.persistent {
		return 0
	}
	if s.version == level5 && time.Duration(s.expiry)*time.Second < delay {
		delay = time.Duration(s.expiry) * time.Second
	}
	return delay
}

// sendWill publishes a will through core, now or after its delay.
func (s *session) sendWill(will *packets.Packet) {
	send := s.willPublisher(will)
	delay := s.willDelay(will)
	if delay <= 0 {
		send()
		return
	}
	s.srv.mu.Lock()
	if s.st.live != nil && s.st.live != s {
		// Resumed by a new connection within the delay: no will
		// [MQTT-3.1.3-9].
		s.srv.mu.Unlock()
		return
	}
	st := s.st
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		s.srv.mu.Lock()
		due := st.will == t
		if due {
			st.will, st.willSend = nil, nil
		}
		s.srv.mu.Unlock()
		if due {
			send()
		}
	})
	st.will, st.willSend = t, send
	s.srv.mu.Unlock()
}

// setExpiry takes the session expiry a DISCONNECT sets [MQTT-3.14.2-2];
// the session's queues then expire with it.
func (s *session) setExpiry(expiry uint32) {
	s.mu.Lock()
	s.expiry = expiry
	s.persistent = expiry > 0
	s.mu.Unlock()
	if expiry > 0 {
		s.syncQueueExpiry()
	}
}

// syncQueueExpiry sets the x-expires of the session's queues to its
// expiry interval, so that they outlive it by nothing, across restarts
// too. An interval beyond what x-expires can hold (about 49 days) leaves
// them without one: such a session is ended by the expiry timer alone,
// which a restart forgets.
func (s *session) syncQueueExpiry() {
	s.mu.Lock()
	var d time.Duration
	if s.version == level5 && s.expiry != noExpiry && s.expiry <= maxQueueExpiry {
		d = time.Duration(s.expiry) * time.Second
	}
	s.mu.Unlock()
	for qos := byte(0); qos <= 1; qos++ {
		name := s.queueName(qos)
		if s.vhost.Queue(name) == nil {
			continue
		}
		if err := s.vhost.SetQueueExpires(name, d); err != nil {
			s.srv.log.Warn("mqtt: session queue expiry not set", "client", s.clientID, "queue", name, "err", err)
		}
	}
}

// maxQueueExpiry is the longest session expiry, in seconds, a queue's
// x-expires holds (2^32-1 ms, RabbitMQ's limit).
const maxQueueExpiry = 4294967

// validUTF8 checks an MQTT UTF-8 string: well-formed and without U+0000
// [MQTT-1.5.3-1], [MQTT-1.5.3-2].
func validUTF8(b []byte) bool {
	return utf8.Valid(b) && bytes.IndexByte(b, 0) < 0
}

// validTopic checks a topic name (a will's): not empty, no wildcards
// [MQTT-3.3.2-2]. Its length is bounded by the encoding: 65,535 bytes.
func validTopic(t string) bool {
	return t != "" && !strings.ContainsAny(t, "+#")
}
