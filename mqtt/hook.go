package mqtt

import (
	"bytes"
	"net"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferrymq/ferrymq/core"
)

// hook is where mochi hands each connection's events to ferrymq. mochi
// keeps no subscriptions, in-flight messages or retained messages of its
// own: publishes are rejected after we route them (ErrRejectPacket stops
// mochi's routing and acks), subscribe filters are taken away before
// mochi's topic tree sees them, and acknowledgements for our deliveries
// are consumed before mochi looks for them in its in-flight map.
type hook struct {
	mochi.HookBase
	srv *Server

	// connecting holds what CONNECT and authentication established until
	// the session exists; sessions the live ones. Both by *mochi.Client:
	// on a takeover the old client's OnDisconnect runs after the new one's
	// OnSessionEstablish.
	connecting sync.Map // *mochi.Client -> *login
	sessions   sync.Map // *mochi.Client -> *session
}

type login struct {
	vhost     *core.VHost
	willProps packets.Properties
}

func (h *hook) ID() string { return "ferrymq" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck,
		mochi.OnSessionEstablish, mochi.OnSessionEstablished, mochi.OnDisconnect,
		mochi.OnPacketRead, mochi.OnPacketEncode, mochi.OnPacketSent,
		mochi.OnPublish, mochi.OnSubscribe, mochi.OnUnsubscribe, mochi.OnWill,
	}, []byte{b})
}

func (h *hook) session(cl *mochi.Client) *session {
	if v, ok := h.sessions.Load(cl); ok {
		return v.(*session)
	}
	return nil
}

// OnConnect keeps the will's properties, which mochi drops.
func (h *hook) OnConnect(cl *mochi.Client, pk packets.Packet) error {
	h.connecting.Store(cl, &login{willProps: pk.Connect.WillProperties})
	return nil
}

// OnConnectAuthenticate checks the same users as AMQP. A username
// "vhost:user" selects a vhost; no username at all is RabbitMQ's
// anonymous default, guest (loopback only).
func (h *hook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	user, pass := "guest", "guest"
	vhost := "/"
	if pk.Connect.UsernameFlag {
		vhost, user = vhostUser(string(pk.Connect.Username))
		pass = string(pk.Connect.Password)
	}
	loopback := false
	if a, ok := cl.Net.Conn.RemoteAddr().(*net.TCPAddr); ok {
		loopback = a.IP.IsLoopback()
	}
	if _, err := h.srv.cfg.Users.Authenticate(user, pass, loopback); err != nil {
		h.srv.log.Debug("mqtt: login refused", "client", cl.ID, "user", user, "err", err)
		return false
	}
	v := h.srv.broker.VHost(vhost)
	if v == nil {
		h.srv.log.Debug("mqtt: login refused: no such vhost", "client", cl.ID, "vhost", vhost)
		return false
	}
	if l, ok := h.connecting.Load(cl); ok {
		l.(*login).vhost = v
	}
	return true
}

// OnACLCheck allows everything mochi asks about: permissions are checked
// where we route (a later issue brings per-vhost permissions).
func (h *hook) OnACLCheck(*mochi.Client, string, bool) bool { return true }

// OnSessionEstablish sets up the session before mochi sends CONNACK: a
// session taken over from another connection stops first (its unacked
// deliveries go back to its queues); clean start deletes the old
// session; otherwise its subscriptions are rebuilt from its queues.
func (h *hook) OnSessionEstablish(cl *mochi.Client, pk packets.Packet) {
	v, _ := h.connecting.LoadAndDelete(cl)
	l, _ := v.(*login)
	if l == nil || l.vhost == nil {
		return
	}
	props := &cl.Properties.Props
	s := &session{
		srv: h.srv, cl: cl, clientID: cl.ID, vhost: l.vhost,
		version: cl.Properties.ProtocolVersion,
		subs:    map[string][]subscription{}, cons: map[string]*core.Consumer{},
		flight: map[uint16]inflight{}, subacks: map[uint16][]byte{}, replays: map[uint16][]replay{},
		maxPacket: props.MaximumPacketSize,
		willProps: l.willProps,
	}
	s.drained = sync.NewCond(&s.mu)
	s.acks = core.NewSyncQueue(h.srv.broker, s.releaseAcks)
	if s.version == 5 {
		s.persistent = props.SessionExpiryInterval > 0
		s.expiry = props.SessionExpiryInterval
	} else {
		s.persistent = !pk.Connect.Clean
	}
	s.prefetch = uint32(h.srv.cfg.Prefetch)
	if rm := props.ReceiveMaximum; rm > 0 && uint32(rm) < s.prefetch {
		s.prefetch = uint32(rm)
	}
	s.key = l.vhost.Name() + "\x00" + cl.ID
	if c, ok := cl.Net.Conn.(*conn); ok {
		c.setV5(s.version == 5)
	}

	h.srv.mu.Lock()
	st := h.srv.sessions[s.key]
	resumable := st != nil && !pk.Connect.Clean
	// A 3.1.1 connection does not resume a live clean session it takes
	// over [MQTT-3.1.2-6].
	fresh := pk.Connect.Clean || (st != nil && st.live != nil && !st.live.persistent && s.version < 5)
	if st == nil || fresh {
		nst := &state{inbound: map[uint16]struct{}{}, pubrel: map[uint16]struct{}{}, resend: map[uint64]uint16{}, origin: h.srv.origins.Add(1)}
		if st != nil {
			// The old connection's OnDisconnect comes later and must not
			// see itself as the session's last connection.
			nst.live, nst.will = st.live, st.will
			st.live = nil
		}
		st = nst
		h.srv.sessions[s.key] = st
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
	h.srv.mu.Unlock()
	s.st = st
	if old != nil {
		old.stop()
	}
	if fresh {
		s.deleteQueues()
	} else {
		present, err := s.restore()
		if err != nil {
			h.srv.log.Warn("mqtt: session not fully restored", "client", cl.ID, "err", err)
		}
		// A session exists even with no subscriptions [MQTT-3.2.2-3].
		s.present = present || resumable
	}
	if s.persistent {
		// The durable queue marks the session across restarts, even while
		// it has no subscriptions.
		if err := s.ensureQueue(s.queueName(1), true, false); err != nil {
			h.srv.log.Warn("mqtt: session queue not declared", "client", cl.ID, "err", err)
		} else if err := s.consume(s.queueName(1), 1, true); err != nil {
			h.srv.log.Warn("mqtt: session queue not consumed", "client", cl.ID, "err", err)
		}
	}
	h.sessions.Store(cl, s)
}

// OnSessionEstablished lets the session write once CONNACK is out, and
// resends the PUBRELs it owes.
func (h *hook) OnSessionEstablished(cl *mochi.Client, pk packets.Packet) {
	if s := h.session(cl); s != nil {
		s.resendPubrels()
		s.established()
	}
}

// OnDisconnect ends the connection's session: unacked deliveries go back
// to the queues, and a session that is not persistent is deleted unless a
// newer connection took it over.
func (h *hook) OnDisconnect(cl *mochi.Client, err error, expire bool) {
	if c, ok := cl.Net.Conn.(*conn); ok {
		c.finish(err)
	}
	h.connecting.Delete(cl)
	v, ok := h.sessions.LoadAndDelete(cl)
	if !ok {
		return
	}
	h.srv.log.Debug("mqtt: client disconnected", "client", cl.ID, "err", err, "cause", cl.StopCause())
	s := v.(*session)
	s.stop()
	h.srv.mu.Lock()
	last := s.st.live == s
	if last {
		s.st.live = nil
		if !s.persistent && s.st.will == nil {
			delete(h.srv.sessions, s.key)
		}
	}
	h.srv.mu.Unlock()
	if last && !s.persistent {
		s.deleteQueues()
	}
}

// OnPacketRead takes the acknowledgements of our deliveries (PUBACK,
// PUBREC, PUBCOMP) and the client's PUBREL, which mochi would look up in
// its own, empty, in-flight map; what mochi then sees is a PUBACK for an
// id it does not know, which it ignores.
func (h *hook) OnPacketRead(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubcomp, packets.Pubrel:
		if s := h.session(cl); s != nil {
			s.acked(&pk)
		}
		pk.FixedHeader.Type = packets.Puback
		pk.FixedHeader.Qos = 0
	}
	return pk, nil
}

// OnPublish routes the publish through core and keeps mochi from routing
// or acknowledging it.
func (h *hook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	s := h.session(cl)
	if s == nil {
		return pk, packets.ErrRejectPacket
	}
	if err := s.publish(&pk); err != nil {
		h.srv.mochi.DisconnectClient(cl, asCode(err))
	}
	return pk, packets.ErrRejectPacket
}

func asCode(err error) packets.Code {
	if c, ok := err.(packets.Code); ok {
		return c
	}
	return packets.ErrUnspecifiedError
}

// OnSubscribe binds the filters and hands mochi an empty list, so that
// its topic tree stays empty; the SUBACK codes are filled in at encoding.
func (h *hook) OnSubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if s := h.session(cl); s != nil {
		codes, replays := s.subscribe(pk.Filters)
		s.mu.Lock()
		s.subacks[pk.PacketID] = codes
		if len(replays) > 0 {
			s.replays[pk.PacketID] = replays
		}
		s.mu.Unlock()
	}
	pk.Filters = nil
	return pk
}

// OnUnsubscribe is OnSubscribe's counterpart.
func (h *hook) OnUnsubscribe(cl *mochi.Client, pk packets.Packet) packets.Packet {
	if s := h.session(cl); s != nil {
		codes := s.unsubscribe(pk.Filters)
		s.mu.Lock()
		s.subacks[pk.PacketID] = codes
		s.mu.Unlock()
	}
	pk.Filters = nil
	return pk
}

// OnPacketEncode puts our answers into the packets mochi writes: SUBACK
// and UNSUBACK codes, and CONNACK's session-present flag, which must come
// from core (mochi knows nothing of sessions recovered from disk).
func (h *hook) OnPacketEncode(cl *mochi.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Suback, packets.Unsuback:
		if s := h.session(cl); s != nil {
			s.mu.Lock()
			pk.ReasonCodes = s.subacks[pk.PacketID]
			delete(s.subacks, pk.PacketID)
			s.mu.Unlock()
		}
	case packets.Disconnect:
		pk.ReasonCode = reasonCode(packets.Code{Code: pk.ReasonCode, Reason: pk.Properties.ReasonString})
	case packets.Connack:
		if pk.ReasonCode != 0 {
			break
		}
		if v, ok := h.sessions.Load(cl); ok {
			pk.SessionPresent = v.(*session).present
		}
		if cl.Properties.ProtocolVersion == 5 {
			pk.Properties.MaximumPacketSize = h.srv.cfg.MaxPacketSize
			// mochi honours aliases but does not say so [MQTT-3.2.2-18].
			pk.Properties.TopicAliasMaximum = h.srv.mochi.Options.Capabilities.TopicAliasMaximum
		}
	}
	return pk
}

// OnPacketSent replays retained messages once the SUBACK is out, so that
// they cannot overtake it.
func (h *hook) OnPacketSent(cl *mochi.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Suback {
		return
	}
	s := h.session(cl)
	if s == nil {
		return
	}
	s.mu.Lock()
	rs := s.replays[pk.PacketID]
	delete(s.replays, pk.PacketID)
	s.mu.Unlock()
	s.replayRetained(rs)
}

// OnWill publishes the will through core, now or after its delay, and
// gives mochi an empty one to publish into its empty topic tree.
func (h *hook) OnWill(cl *mochi.Client, will mochi.Will) (mochi.Will, error) {
	s := h.session(cl)
	if s == nil || will.TopicName == "" {
		return mochi.Will{}, nil
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: will.Qos, Retain: will.Retain},
		TopicName:   will.TopicName,
		Payload:     will.Payload,
	}
	pk.Properties = s.willProps
	pk.Properties.User = will.User
	send := func() {
		msg := toMessage(h.srv.cfg.Exchange, &pk, s.origin)
		if pk.FixedHeader.Retain {
			if err := h.srv.retain(s.vhost.Name(), pk.TopicName, msg); err != nil {
				h.srv.log.Error("mqtt: retained will not stored", "client", s.clientID, "err", err)
			}
		}
		if _, err := s.vhost.Publish(msg); err != nil {
			h.srv.log.Debug("mqtt: will not routed", "client", s.clientID, "err", err)
		}
	}
	delay := time.Duration(will.WillDelayInterval) * time.Second
	if s.version == 5 && s.persistent && time.Duration(s.expiry)*time.Second < delay {
		delay = time.Duration(s.expiry) * time.Second
	}
	if delay <= 0 {
		send()
		return mochi.Will{}, nil
	}
	h.srv.mu.Lock()
	s.st.will = time.AfterFunc(delay, func() {
		h.srv.mu.Lock()
		s.st.will = nil
		h.srv.mu.Unlock()
		send()
	})
	h.srv.mu.Unlock()
	return mochi.Will{}, nil
}
