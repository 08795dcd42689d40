package mqtt

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferrymq/ferrymq/core"
)

// publish routes an inbound PUBLISH through core. The PUBACK (QoS 1) or
// PUBREC (QoS 2) goes out once core has enqueued the message and the store
// has synced it where it reached a durable queue (and as the topic's
// retained message), in the order the publishes arrived. A QoS 2 publish already received (a DUP resend
// before our PUBREC arrived) is acknowledged again but not routed again.
func (s *session) publish(pk *packets.Packet) error {
	if pk.TopicName == "" {
		// An alias this connection never defined [MQTT-3.3.2-7].
		return packets.ErrTopicAliasInvalid
	}
	qos := pk.FixedHeader.Qos
	typ := byte(packets.Puback)
	if qos == 2 {
		typ = packets.Pubrec
		s.mu.Lock()
		if s.closed {
			// Taken over: the QoS 2 state is the new connection's now.
			s.mu.Unlock()
			return nil
		}
		_, seen := s.st.inbound[pk.PacketID]
		if s.st.inbound == nil {
			s.st.inbound = make(map[uint16]struct{})
		}
		s.st.inbound[pk.PacketID] = struct{}{}
		s.mu.Unlock()
		if seen {
			// Not counted against the receive maximum a second time.
			s.acks.Add(0, pendingAck{id: pk.PacketID, typ: typ})
			return nil
		}
	}
	if qos > 0 {
		limit := int(s.srv.cfg.ReceiveMaximum)
		s.mu.Lock()
		// MQTT 3.1.1 has no receive maximum: a client may pipeline as much
		// as it likes, so it is slowed down instead - this, its read
		// goroutine, waits until acknowledgements drain. A client that
		// publishes but does not read its acknowledgements waits too,
		// while its output is full, as an AMQP connection's reader does:
		// its output never grows past the mark.
		for ((s.version < 5 && s.unacked >= limit) || s.out.Full()) && !s.closed {
			s.drained.Wait()
		}
		s.unacked++
		over := s.unacked > limit
		s.mu.Unlock()
		if over {
			s.srv.log.Debug("mqtt: receive maximum exceeded", "client", s.clientID, "limit", limit)
			return packets.ErrReceiveMaximum // [MQTT-3.3.4-9]
		}
	}
	if strings.HasPrefix(pk.TopicName, "$") {
		// $ topics are the server's [MQTT-4.7.2-1]: not routed, and an
		// MQTT 5 client is told so.
		if qos > 0 {
			var rc byte
			if s.version == 5 {
				rc = packets.ErrNotAuthorized.Code
			}
			s.acknowledge(pk.PacketID, typ, rc, 0)
		}
		return nil
	}
	msg := toMessage(s.srv.cfg.Exchange, pk, s.origin)
	if err := checkPublish(s.srv, s.access, msg.RoutingKey); err != nil {
		return s.refusePublish(pk, typ, err)
	}
	if !s.cl.waitUnblocked() {
		return nil
	}
	// retainRC is the retained message's failure; a message whose
	// retained copy the store refused for good is still routed.
	var retainRC byte
	var retainRefused bool
	var retainPos uint64
	if pk.FixedHeader.Retain {
		s.vhost.Stamp(msg) // the store reads it from now on
		pos, err := s.srv.retain(s.vhost.Name(), pk.TopicName, msg)
		if err != nil {
			s.srv.log.Warn("mqtt: retained message not stored", "client", s.clientID, "topic", pk.TopicName, "err", err)
			retainRC, retainRefused = storeReason(err), errors.Is(err, core.ErrStoreRefused)
		}
		retainPos = pos
	}
	var rc byte
	res, err := s.vhost.Publish(msg)
	switch {
	case err != nil:
		s.srv.log.Debug("mqtt: publish refused", "client", s.clientID, "topic", pk.TopicName, "err", err)
		rc = packets.ErrImplementationSpecificError.Code
	case res.Rejected:
		rc = packets.ErrQuotaExceeded.Code
	case retainRC != 0:
		rc = retainRC
	case res.Routed == 0:
		rc = packets.CodeNoMatchingSubscribers.Code
	}
	if qos == 0 {
		return nil
	}
	if rc >= 0x80 && s.version < 5 {
		if !retainRefused || err != nil || res.Rejected {
			// 3.1.1 has no negative acknowledgement: closing the
			// connection makes the client send the message again.
			return packets.ErrImplementationSpecificError
		}
		rc = 0 // refused for good, yet routed: see releaseAcks
	}
	// After the retained message too: it is on disk when the client
	// learns it was taken.
	s.acknowledge(pk.PacketID, typ, rc, max(res.Pos, retainPos))
	return nil
}

// acknowledge sends a PUBACK/PUBREC once store position pos is durable (0:
// nothing to wait for), never ahead of an earlier one still waiting.
func (s *session) acknowledge(id uint16, typ, rc byte, pos uint64) {
	s.acks.Add(pos, pendingAck{id: id, typ: typ, rc: rc, counted: true})
}

// releaseAcks is the session's SyncQueue release: the acknowledgements go
// out in order. A failed store write fails them, as storeReason says in
// MQTT 5. MQTT 3.1.1 has no negative acknowledgement: after a store
// outage the client is disconnected, so that it publishes again once the
// store is back (a QoS 2 resend is not routed twice: the session keeps
// its packet id); a message the store refused for good is acknowledged
// all the same, with a WARN, as Mosquitto acknowledges a PUBLISH it drops
// for its size, since a client disconnected for it would send it again
// on every reconnect and never get past it. Such a message was still
// routed: subscribers get it, it just does not survive a restart.
func (s *session) releaseAcks(acks []pendingAck, err error, _ bool) {
	refused := errors.Is(err, core.ErrStoreRefused)
	if err != nil {
		if s.version < 5 && !refused {
			s.cl.close(err)
			return
		}
		// A refusal is this client's message, worth a WARN each; an
		// outage is logged by the store once, and would be here once per
		// session with a publish in flight.
		level := slog.LevelDebug
		if refused {
			level = slog.LevelWarn
		}
		s.srv.log.Log(context.Background(), level, "mqtt: publish not stored", "client", s.clientID, "packets", len(acks), "refused", refused, "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range acks {
		rc := a.rc
		if err != nil && s.version == 5 {
			rc = storeReason(err)
		}
		if a.typ == packets.Pubcomp {
			rc = a.rc // nothing was stored for it
		}
		s.writeAckLocked(a.id, a.typ, rc, a.counted)
	}
}

// storeReason is the MQTT 5 reason code of a PUBACK, PUBREC or SUBACK for
// an operation whose store write failed with err (MQTT 5 §3.4.2.1, §3.5.2.1,
// §3.9.3). A write the store refused for good, because of what this one
// operation holds, is 0x83 Implementation specific error: "valid, but not
// accepted by this server" - the client can do nothing but not send it
// again. A store outage (a full disk, an I/O error) is 0x80 Unspecified
// error: it is not this client's doing, the store retries the write and
// the disk alarm holds publishers meanwhile, and none of the specific codes
// fits (0x97 Quota exceeded names a limit the client went over, which
// ferrymq uses for a queue's share of the memory limit).
func storeReason(err error) byte {
	if errors.Is(err, core.ErrStoreRefused) {
		return packets.ErrImplementationSpecificError.Code
	}
	return packets.ErrUnspecifiedError.Code
}

func (s *session) writeAckLocked(id uint16, typ, rc byte, counted bool) {
	if counted {
		s.unacked--
		s.drained.Signal()
	}
	if s.closed {
		return
	}
	if typ == packets.Pubrec && rc >= 0x80 {
		// The exchange ends here: no PUBREL follows, and the client may
		// use the id for a new message, which must not be taken for a
		// resend of this one [MQTT-4.3.3].
		delete(s.st.inbound, id)
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: id, ReasonCode: rc}
	if err := s.appendLocked(&pk); err != nil {
		s.srv.log.Debug("mqtt: ack not sent", "client", s.clientID, "err", err)
	}
}

// acked handles the client's PUBACK, PUBREC or PUBCOMP for a delivery, and
// its PUBREL for a QoS 2 publish of its own.
func (s *session) acked(pk *packets.Packet) {
	id := pk.PacketID
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return // taken over: the new connection owns the session's state
	}
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec:
		f, ok := s.flight[id]
		if !ok || (pk.FixedHeader.Type == packets.Pubrec) != (f.qos == 2) {
			s.mu.Unlock()
			if pk.FixedHeader.Type == packets.Pubrec {
				s.mu.Lock()
				s.writeRelLocked(id, packets.ErrPacketIdentifierNotFound.Code)
				s.mu.Unlock()
			}
			return
		}
		delete(s.flight, id)
		var resume []*core.Consumer
		if pk.FixedHeader.Type == packets.Pubrec && pk.ReasonCode < 0x80 {
			// The message is the client's now: ack it in core and finish
			// the exchange, remembering the id (and holding its place in
			// the receive maximum) until PUBCOMP.
			if s.st.pubrel == nil {
				s.st.pubrel = make(map[uint16]struct{})
			}
			s.st.pubrel[id] = struct{}{}
			s.writeRelLocked(id, 0)
		} else {
			resume = s.out.TakeRefused()
		}
		s.mu.Unlock()
		if f.q != nil {
			// A PUBACK or PUBREC of 0x80 or more ends the exchange too
			// (MQTT 5 §4.3.3): the client refused the message, which is
			// not sent again.
			f.q.Settle(f.c, []uint64{f.seq}, core.Ack)
		}
		for _, c := range resume {
			c.Resume()
		}
		return
	case packets.Pubcomp:
		delete(s.st.pubrel, id)
		resume := s.out.TakeRefused()
		s.mu.Unlock()
		for _, c := range resume {
			c.Resume()
		}
		return
	case packets.Pubrel:
		_, ok := s.st.inbound[id]
		delete(s.st.inbound, id)
		s.mu.Unlock()
		var rc byte
		if !ok {
			rc = packets.ErrPacketIdentifierNotFound.Code
		}
		// Behind the PUBRECs still waiting for the store, so that
		// replies keep the order of what they answer.
		s.acks.Add(0, pendingAck{id: id, typ: packets.Pubcomp, rc: rc})
		return
	}
	s.mu.Unlock()
}

func (s *session) writeRelLocked(id uint16, rc byte) {
	if s.closed {
		return
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: id, ReasonCode: rc}
	s.appendLocked(&pk)
}

// resendPubrels sends PUBREL again for the QoS 2 deliveries the client
// PUBREC'd before it reconnected [MQTT-4.4.0-1].
func (s *session) resendPubrels() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.st.pubrel {
		s.writeRelLocked(id, 0)
	}
}

// waitUnblocked holds the reader while a resource alarm is in effect
// (core.Broker.Block), before it routes a publish: the client's PUBACK or
// PUBREC waits, and so does everything it sends after, as RabbitMQ stops
// reading from a publishing connection under an alarm. Keep Alive is
// suspended meanwhile. It returns false if the connection closed instead.
func (c *client) waitUnblocked() bool {
	gate, reason := c.srv.broker.Blocked()
	if gate == nil {
		return true
	}
	c.srv.log.Debug("mqtt: publisher held by a resource alarm", "client", c.id, "reason", reason)
	c.held.Store(true)
	defer func() {
		c.lastRead.Store(time.Now().UnixNano())
		c.held.Store(false)
	}()
	select {
	case <-gate:
		return true
	case <-c.done:
		return false
	}
}

// refusePublish answers a PUBLISH the user may not make: PUBACK or PUBREC
// 0x87 for MQTT 5 at QoS 1 and 2; otherwise (3.1.1, QoS 0) there is no
// negative acknowledgement, so the connection is closed (with DISCONNECT
// 0x87 for MQTT 5) rather than the message silently dropped.
func (s *session) refusePublish(pk *packets.Packet, typ byte, err error) error {
	s.srv.log.Warn("mqtt: publish refused", "client", s.clientID, "user", s.access.Principal().Name, "topic", pk.TopicName, "err", err)
	qos := pk.FixedHeader.Qos
	if qos == 0 || s.version < 5 {
		return packets.ErrNotAuthorized
	}
	if qos == 2 {
		// A PUBREC of 0x80 or more ends the exchange: no PUBREL follows.
		s.mu.Lock()
		delete(s.st.inbound, pk.PacketID)
		s.mu.Unlock()
	}
	s.acknowledge(pk.PacketID, typ, packets.ErrNotAuthorized.Code, 0)
	return nil
}
