package mqtt

import (
	"crypto/rand"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// connect handles CONNECT: checks, login, the session (taken over,
// resumed or new), then CONNACK. Until it returns the client has no
// session, so no other packet is accepted.
func (c *client) connect(pk *packets.Packet) error {
	c.mu.Lock()
	c.version = pk.ProtocolVersion
	c.mu.Unlock()
	props := &pk.Properties
	c.maxPacket, c.expiry = props.MaximumPacketSize, props.SessionExpiryInterval
	c.noProblemInfo = props.RequestProblemInfoFlag && props.RequestProblemInfo == 0
	c.responseInfo = props.RequestResponseInfo == 1
	c.id = pk.Connect.ClientIdentifier
	if ka := time.Duration(pk.Connect.Keepalive) * time.Second; ka > 0 {
		c.keepalive = ka + ka/2 // [MQTT-3.1.2-24]
	}
	if code := c.validateConnect(pk); code != packets.CodeSuccess {
		c.refuse(code)
		return code
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
	if c.version == 5 {
		ack.Properties.AssignedClientID = assigned
		ack.Properties.MaximumPacketSize = c.srv.cfg.MaxPacketSize
		ack.Properties.TopicAliasMaximum = c.srv.cfg.TopicAliasMaximum // [MQTT-3.2.2-18]
	}
	if err := c.writePacket(&ack); err != nil {
		return err
	}
	s.resendPubrels()
	s.established()
	return nil
}

// validateConnect checks what mochi's decoder leaves to the server.
func (c *client) validateConnect(pk *packets.Packet) packets.Code {
	if code := pk.ConnectValidate(); code != packets.CodeSuccess {
		return code
	}
	if c.version < 5 && !pk.Connect.Clean && c.id == "" {
		return packets.ErrClientIdentifierNotValid // [MQTT-3.1.3-8]
	}
	return packets.CodeSuccess
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
// start deletes the old session; otherwise its subscriptions are rebuilt
// from its queues. It reports whether a session was present.
func (srv *Server) establish(c *client, pk *packets.Packet, access *core.Access) (*session, bool, packets.Code) {
	props := &pk.Properties
	vhost := access.VHost()
	user := access.Principal().Name
	s := &session{
		srv: srv, cl: c, clientID: c.id, vhost: vhost, access: access,
		version:   c.version,
		maxPacket: props.MaximumPacketSize,
	}
	s.drained.L = &s.mu
	s.acks = core.NewSyncQueue(srv.broker, s.releaseAcks)
	if s.version == 5 {
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

	srv.mu.Lock()
	st := srv.sessions[s.key]
	if owner := sessionOwner(st, s); owner != "" && owner != user {
		srv.mu.Unlock()
		srv.log.Warn("mqtt: client id belongs to another user", "client", c.id, "user", user, "owner", owner)
		return nil, false, packets.ErrClientIdentifierNotValid
	}
	resumable := st != nil && !pk.Connect.Clean
	// A 3.1.1 connection does not resume a live clean session it takes
	// over [MQTT-3.1.2-6].
	fresh := pk.Connect.Clean || (st != nil && st.live != nil && !st.live.persistent && s.version < 5)
	if st == nil || fresh {
		nst := &state{origin: srv.origins.Add(1), owner: user}
		if st != nil {
			// The old connection ends later and must not see itself as
			// the session's last connection.
			nst.live, nst.will = st.live, st.will
			st.live = nil
		}
		st = nst
		srv.sessions[s.key] = st
		resumable = false
	}
	s.origin = st.origin
	old := st.live
	st.live = s
	if st.will != nil {
		// Reconnecting within the will delay cancels the will [MQTT-3.1.3-9].
		st.will.Stop()
		st.will = nil
	}
	srv.mu.Unlock()
	s.st = st
	if old != nil {
		old.stop()
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
		if err := s.ensureQueue(s.queueName(1), true, false); err != nil {
			srv.log.Warn("mqtt: session queue not declared", "client", c.id, "err", err)
		} else if err := s.consume(s.queueName(1), 1, true); err != nil {
			srv.log.Warn("mqtt: session queue not consumed", "client", c.id, "err", err)
		}
	}
	return s, present, packets.CodeSuccess
}

// endSession ends a connection's session: unacked deliveries go back to
// the queues, and a session that is not persistent is deleted unless a
// newer connection took it over.
func (srv *Server) endSession(s *session) {
	s.stop()
	s.mu.Lock()
	persistent := s.persistent
	s.mu.Unlock()
	srv.mu.Lock()
	last := s.st.live == s
	if last {
		s.st.live = nil
		if !persistent && s.st.will == nil {
			delete(srv.sessions, s.key)
		}
	}
	srv.mu.Unlock()
	if last && !persistent {
		s.deleteQueues()
	}
	s.access.Close()
}

// sendWill publishes a will through core, now or after its delay
// [MQTT-3.1.3-9], which a persistent session's expiry cuts short.
func (s *session) sendWill(will *packets.Packet) {
	send := func() {
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
	delay := time.Duration(will.Properties.WillDelayInterval) * time.Second
	s.mu.Lock()
	if s.version == 5 && time.Duration(s.expiry)*time.Second < delay {
		delay = time.Duration(s.expiry) * time.Second
	}
	s.mu.Unlock()
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
	s.st.will = time.AfterFunc(delay, func() {
		s.srv.mu.Lock()
		s.st.will = nil
		s.srv.mu.Unlock()
		send()
	})
	s.srv.mu.Unlock()
}

// setExpiry takes the session expiry a DISCONNECT sets [MQTT-3.14.2-2].
func (s *session) setExpiry(expiry uint32) {
	s.mu.Lock()
	s.expiry = expiry
	s.persistent = expiry > 0
	s.mu.Unlock()
}
