package mqtt

import (
	"bytes"
	"errors"
	"hash/fnv"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// writeTimeout bounds one write to a client that does not read.
const writeTimeout = 15 * time.Second

// Binding arguments that carry a subscription's options, so that a
// persistent session is rebuilt from its queues' bindings after a restart.
const (
	argFilter  = "x-mqtt-filter"
	argQoS     = "x-mqtt-qos"
	argNoLocal = "x-mqtt-no-local"
	argRAP     = "x-mqtt-retain-as-published"
	argSubID   = "x-mqtt-subscription-id"
)

// state is what outlives one connection of a client id: QoS 2 exchanges
// in progress and a will waiting out its delay.
type state struct {
	inbound map[uint16]struct{} // QoS 2 publishes received, PUBREL not yet
	pubrel  map[uint16]struct{} // QoS 2 deliveries PUBREC'd, PUBCOMP not yet
	// resend maps a message to the packet id it had when its connection
	// ended unacknowledged: it is sent again with the same one
	// [MQTT-4.4.0-1]. Guarded by the live session's mu.
	resend map[uint64]uint16
	// origin tags the client's publishes for no-local: per client id, not
	// per connection, so a message queued before a reconnect still counts
	// as its own [MQTT-3.8.3-3].
	origin uint64
	// will waits out a will delay; willSend publishes that will, at once
	// should the session end first. Guarded by Server.mu, as are the
	// rest.
	will     *time.Timer
	willSend func()
	// expiry ends a disconnected MQTT 5 session when its expiry interval
	// has passed, at expiresAt [MQTT-3.1.2-23].
	expiry    *time.Timer
	expiresAt time.Time
	live      *session
	owner     string // the user whose client id this is
	// persistent: the session keeps a durable queue, which marks it; if
	// that queue is gone at the next CONNECT, so is the session's state.
	// qos0: it also had its QoS 0 queue when its last connection ended,
	// which must be there too for the session to have survived.
	// lost: a queue of the live session was deleted under it.
	persistent bool
	qos0       bool
	lost       bool
	// version is the protocol level of its last connection, lastSeen
	// when that connection ended (zero while connected), for the
	// operations API (Server.Sessions).
	version  byte
	lastSeen time.Time
}

// subscription is one topic filter of a session.
type subscription struct {
	filter  string // the MQTT filter without a $share prefix
	full    string // as subscribed, with the prefix
	qos     byte
	noLocal bool
	rap     bool
	id      int
}

// inflight is a delivery of QoS 1 or 2 awaiting the client's PUBACK or
// PUBREC.
type inflight struct {
	q     *core.Queue
	c     *core.Consumer
	seq   uint64
	qos   byte
	msgID uint64
}

// pendingAck is a PUBACK or PUBREC waiting for the store to sync the
// message it acknowledges: MQTT wants them in publish order.
type pendingAck struct {
	id  uint16
	typ byte
	rc  byte
	// counted: it answers a publish counted against the receive
	// maximum, which it frees.
	counted bool
}

type settleReq struct {
	q   *core.Queue
	c   *core.Consumer
	seq uint64
}

// session is one connected client.
type session struct {
	srv        *Server
	cl         *client
	st         *state
	key        string
	clientID   string
	vhost      *core.VHost
	access     *core.Access // the connection's permissions and limits
	origin     uint64
	version    byte
	persistent bool
	expiry     uint32 // session expiry interval (s); persistent sessions only
	present    bool   // CONNACK session present
	prefetch   uint32
	maxPacket  uint32 // the client's maximum packet size; 0 = none
	aliasMax   uint16 // the client's topic alias maximum; 0 = none

	// ended is closed when endSession is done (Server.RemoveSession waits).
	ended chan struct{}

	mu      sync.Mutex
	closed  bool
	subs    map[string][]subscription // by queue name
	cons    map[string]*core.Consumer // by queue name
	nextID  uint16
	flight  map[uint16]inflight
	acks    *core.SyncQueue[pendingAck] // PUBACK/PUBREC, in order, after the store
	unacked int                         // inbound QoS > 0 publishes not yet acknowledged
	drained sync.Cond                   // on mu: an acknowledgement went out
	// out is the output for the writer, as in an AMQP connection, and the
	// consumers refused for lack of room or of receive maximum.
	out     core.Outbox
	enc     bytes.Buffer
	settles []settleReq
	// writing is set while a writeLoop goroutine runs. It starts when
	// there is something to write and ends when there is not: an idle
	// connection, the common case for IoT devices, costs no goroutine
	// of ours.
	writing   bool
	lastWrite int64 // nanotime of the last write begun
	// connacked is set once CONNACK is written: nothing of ours may
	// go out before it, though a resumed session's queues deliver earlier.
	connacked bool
	// aliases are the topic aliases we set on this connection, up to
	// aliasMax [MQTT-3.3.2-9]: the first aliasMax topics delivered keep
	// theirs for the connection's life, as a device's few topics would.
	aliases map[string]uint16
}

// replay is a retained-message replay owed to a new subscription once its
// SUBACK is out.
type replay struct{ filter, queue string }

func (s *session) queueName(qos byte) string { return sessionQueueName(s.clientID, qos) }

// sessionQueueName names a session's queue for QoS 0 or for QoS 1 and 2
// subscriptions, as RabbitMQ's MQTT plugin does.
func sessionQueueName(clientID string, qos byte) string {
	if qos == 0 {
		return "mqtt-subscription-" + clientID + "qos0"
	}
	return "mqtt-subscription-" + clientID + "qos1"
}

func sharedQueueName(group, filter string) string {
	return "mqtt-shared-" + group + "-" + topic.BindingKey(filter)
}

// directGap is how long a session must have written nothing before a
// delivery is written by the goroutine that makes it, not the writer: a
// lone message (one request, one sensor reading) then goes out without a
// goroutine handoff, while a stream still leaves the writer to batch it.
const directGap = 50 * time.Microsecond

// signalLocked gets the output written after out went from empty to
// non-empty (or settles were queued), unless the writer runs already:
// at once if the session was quiet and the socket takes it all, else by
// starting the writer.
func (s *session) signalLocked(before int) {
	if before != 0 || s.writing || s.closed || !s.connacked {
		return
	}
	if len(s.out.Buf) > 0 && len(s.settles) == 0 && !s.out.HasRefused() {
		now := nanotime()
		if now-s.lastWrite > int64(directGap) {
			s.lastWrite = now
			n := s.cl.tryWrite(s.out.Buf)
			if n == len(s.out.Buf) {
				s.out.Buf = s.out.Buf[:0]
				return
			}
			if n > 0 {
				// Part of a packet is out: the write turn tryWrite
				// took goes with the rest to the writer, so that
				// nothing else goes out in between.
				s.writing = true
				go s.writeLoop(s.out.Take(), n)
				return
			}
		}
	}
	s.writing = true
	go s.writeLoop(nil, 0)
}

// appendLocked encodes pk into the output buffer.
func (s *session) appendLocked(pk *packets.Packet) error {
	pk.ProtocolVersion = s.version
	s.enc.Reset()
	var err error
	switch typ := pk.FixedHeader.Type; {
	case typ == packets.Publish:
		err = pk.PublishEncode(&s.enc)
	case s.version == 5 && pk.ReasonCode != 0 && typ >= packets.Puback && typ <= packets.Pubcomp:
		// mochi leaves out a reason code below 0x80, such as 0x10 No
		// matching subscribers, which publishers rely on.
		flags := byte(0)
		if typ == packets.Pubrel {
			flags = 0x02 // [MQTT-3.6.1-1]
		}
		s.enc.Write([]byte{typ<<4 | flags, 3, byte(pk.PacketID >> 8), byte(pk.PacketID), pk.ReasonCode})
	case typ == packets.Puback:
		err = pk.PubackEncode(&s.enc)
	case typ == packets.Pubrec:
		err = pk.PubrecEncode(&s.enc)
	case typ == packets.Pubrel:
		err = pk.PubrelEncode(&s.enc)
	case typ == packets.Pubcomp:
		err = pk.PubcompEncode(&s.enc)
	}
	if err != nil {
		return err
	}
	if s.maxPacket > 0 && uint32(s.enc.Len()) > s.maxPacket {
		return packets.ErrPacketTooLarge
	}
	n := len(s.out.Buf)
	s.out.Buf = append(s.out.Buf, s.enc.Bytes()...)
	st := &s.cl.stats
	st.pktOut.Add(1)
	st.bytesOut.Add(uint64(s.enc.Len()))
	if pk.FixedHeader.Type == packets.Publish {
		st.pubOut.Add(1)
	}
	s.signalLocked(n)
	return nil
}

// established lets the writer go once CONNACK is out, and starts it if
// deliveries are already waiting.
func (s *session) established() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connacked = true
	if len(s.out.Buf) > 0 || len(s.settles) > 0 {
		s.signalLocked(0)
	}
}

// writeLoop writes the output buffer, then settles what deliveries decided
// to settle and resumes consumers refused for lack of room, until there is
// nothing left to do. Writes take turns with the client's own (CONNACK,
// SUBACK, PINGRESP), so packets never interleave.
//
// partial, if not nil, is a buffer the direct path wrote the first done
// bytes of, and passed on the write turn with: the rest goes first.
func (s *session) writeLoop(partial []byte, done int) {
	buf := partial
	for {
		var settles []settleReq
		if partial == nil {
			s.mu.Lock()
			if s.closed || (len(s.out.Buf) == 0 && len(s.settles) == 0) {
				s.writing = false
				s.mu.Unlock()
				return
			}
			buf = s.out.Take()
			s.lastWrite = nanotime()
			settles = s.settles
			s.settles = nil
			s.mu.Unlock()
		}
		if len(buf) > 0 {
			var err error
			if partial != nil {
				err = s.cl.writeInTurn(buf[done:], writeTimeout)
				s.cl.turn.release()
				partial = nil
			} else {
				err = s.cl.write(buf, writeTimeout)
			}
			if err != nil {
				s.mu.Lock()
				s.writing = false
				s.mu.Unlock()
				s.cl.close(err)
				return
			}
		}
		s.mu.Lock()
		s.out.Written(buf)
		resume := s.out.TakeRefused()
		s.drained.Broadcast() // a publisher held by a full output (handlePublish)
		s.mu.Unlock()
		for _, r := range settles {
			r.q.Settle(r.c, []uint64{r.seq}, core.Ack)
		}
		for _, c := range resume {
			c.Resume()
		}
	}
}

// sink delivers one queue's messages to a session.
type sink struct {
	s     *session
	queue string
	qos   byte // the queue's QoS when no subscription matches (0 or 1)
	acks  bool // the consumer acknowledges (QoS 1 queue or shared queue)
	// idBase offsets the packet ids derived from this queue's positions
	// (see positionID), so that two queues of a session seldom collide.
	idBase uint32
}

// Deliver implements core.DeliverySink: it encodes a PUBLISH into the
// session's output buffer. The QoS is the lower of the best matching
// subscription's and the message's own.
func (k *sink) Deliver(d core.Delivery) bool {
	s := k.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.out.Full() {
		s.out.Refuse(d.Consumer)
		return false
	}
	// Receive maximum is per connection, across all its queues, and a QoS
	// 2 delivery holds its place until PUBCOMP [MQTT-3.3.4-9].
	if k.acks && len(s.flight)+len(s.st.pubrel) >= int(s.prefetch) {
		s.out.Refuse(d.Consumer)
		return false
	}
	m := d.Msg
	name := topic.Name(m.RoutingKey)
	subQoS, ids, noLocal, rap, matched := k.qos, []int(nil), false, false, false
	for _, sub := range s.subs[k.queue] {
		if !topic.Match(sub.filter, name) {
			continue
		}
		if !matched || sub.qos > subQoS {
			subQoS = sub.qos
		}
		if !matched {
			noLocal = sub.noLocal
		} else {
			noLocal = noLocal && sub.noLocal
		}
		matched = true
		rap = rap || sub.rap
		if sub.id > 0 {
			ids = append(ids, sub.id)
		}
	}
	if s.cl.bridge {
		// A Mosquitto bridge: nothing back to where it came from, and
		// RETAIN as published, as Mosquitto treats its bridges.
		noLocal, rap = true, true
	}
	settle := settleReq{q: d.Queue, c: d.Consumer, seq: d.Seq}
	if noLocal && m.Origin == s.origin {
		if k.acks {
			s.settles = append(s.settles, settle)
			s.signalLocked(0)
		}
		return true
	}
	qos := min(subQoS, topic.MessageQoS(m))
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   name,
		Payload:     m.Body,
	}
	// A retained message replayed to a new subscription always has RETAIN
	// set [MQTT-3.3.1-8]; a live one only with retain-as-published.
	pk.FixedHeader.Retain = m.Exchange == "" || (rap && isRetained(m))
	newAlias := false
	if s.version == 5 {
		fillPublish(&pk, m, time.Now())
		pk.Properties.SubscriptionIdentifier = ids
		// mochi encodes response topic and correlation data only with
		// this set; a PUBLISH must forward them [MQTT-3.3.2-15, -16].
		pk.Mods.AllowResponseInfo = true
		newAlias = s.aliasLocked(&pk)
	}
	if qos > 0 {
		id := s.resendID(m.ID, d.Redelivered)
		if id == 0 {
			id = s.positionID(k.idBase, d.Position)
		}
		if id == 0 {
			id = s.allocID()
		}
		if id == 0 {
			s.out.Refuse(d.Consumer)
			return false
		}
		pk.PacketID = id
		pk.FixedHeader.Dup = d.Redelivered
		if s.flight == nil {
			s.flight = make(map[uint16]inflight)
		}
		if k.acks {
			s.flight[id] = inflight{q: d.Queue, c: d.Consumer, seq: d.Seq, qos: qos, msgID: m.ID}
		} else {
			s.flight[id] = inflight{qos: qos, msgID: m.ID}
		}
	} else if k.acks {
		s.settles = append(s.settles, settle)
	}
	if err := s.appendLocked(&pk); err != nil {
		// Too large for the client or unencodable: dropped, as the spec
		// says for the former [MQTT-3.1.2-25].
		s.srv.log.Debug("mqtt: delivery dropped", "client", s.clientID, "topic", name, "err", err)
		if errors.Is(err, packets.ErrPacketTooLarge) {
			s.srv.tooLarge.Add(1)
		}
		if newAlias {
			delete(s.aliases, name) // the client never learnt it
		}
		if qos > 0 {
			delete(s.flight, pk.PacketID)
		}
		if k.acks {
			s.settles = append(s.settles, settle)
		}
		s.signalLocked(0)
	}
	return true
}

// Cancelled implements core.DeliverySink: the queue was deleted (by an
// AMQP client, or x-expires).
func (k *sink) Cancelled(*core.Consumer) {
	s := k.s
	s.mu.Lock()
	delete(s.cons, k.queue)
	delete(s.subs, k.queue)
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		s.srv.queueLost(s, k.queue)
	}
}

// aliasLocked replaces a PUBLISH's topic with its alias when the
// connection has one, or gives the topic one while there are aliases left
// [MQTT-3.3.2-9]; it reports the latter, which sends both.
func (s *session) aliasLocked(pk *packets.Packet) bool {
	if s.aliasMax == 0 {
		return false
	}
	if a, ok := s.aliases[pk.TopicName]; ok {
		pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = a, true
		pk.TopicName = ""
		return false
	}
	if len(s.aliases) >= int(s.aliasMax) {
		return false
	}
	if s.aliases == nil {
		s.aliases = make(map[string]uint16)
	}
	a := uint16(len(s.aliases) + 1)
	s.aliases[pk.TopicName] = a
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = a, true
	return true
}

// resendID returns the packet id a redelivered message had on the
// connection that ended before it was acknowledged, if it is free.
func (s *session) resendID(msgID uint64, redelivered bool) uint16 {
	if !redelivered || len(s.st.resend) == 0 {
		return 0
	}
	id, ok := s.st.resend[msgID]
	if !ok {
		return 0
	}
	delete(s.st.resend, msgID)
	if _, used := s.flight[id]; used {
		return 0
	}
	if _, used := s.st.pubrel[id]; used {
		return 0
	}
	return id
}

// positionID returns the packet id derived from a message's position in
// its queue, if it is free. A message keeps its position across a broker
// restart, so a delivery the client had not acknowledged is sent again
// with the packet id it had [MQTT-4.4.0-1], though the session's in-memory
// state (resend) is gone. Only an id taken by another delivery at the
// time makes a message get another one, which a restart then does not
// keep.
func (s *session) positionID(base uint32, pos uint64) uint16 {
	id := uint16((uint64(base)+pos)%0xFFFF) + 1
	if _, used := s.flight[id]; used {
		return 0
	}
	if _, used := s.st.pubrel[id]; used {
		return 0
	}
	return id
}

// queueIDBase spreads the derived packet ids of a session's queues apart.
func queueIDBase(queue string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(queue))
	return h.Sum32()
}

// allocID returns a free packet id, or 0 if all are in use.
func (s *session) allocID() uint16 {
	for range 1 << 16 {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.flight[s.nextID]; used {
			continue
		}
		if _, used := s.st.pubrel[s.nextID]; used {
			continue
		}
		return s.nextID
	}
	return 0
}

// consume starts consuming a queue of this session if it is not already.
// s.mu is not held: Consume may deliver at once.
func (s *session) consume(queue string, qos byte, acks bool) error {
	s.mu.Lock()
	_, have := s.cons[queue]
	s.mu.Unlock()
	if have {
		return nil
	}
	q := s.vhost.Queue(queue)
	if q == nil {
		return errors.New("queue " + queue + " vanished")
	}
	// The session's own queues are capped as Mosquitto caps a session
	// (max_queued_messages); a shared group's queue is not one client's.
	if qos0 := queue == s.queueName(0); qos0 || queue == s.queueName(1) {
		q.SetBacklogLimit(s.srv.backlogLimit(qos0))
	}
	c, err := q.Consume(core.ConsumeOptions{
		Tag: "mqtt-" + s.clientID, NoAck: !acks, Prefetch: s.prefetch, Protocol: "mqtt",
	}, &sink{s: s, queue: queue, qos: qos, acks: acks, idBase: queueIDBase(queue)})
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Cancel()
		return nil
	}
	if s.cons == nil {
		s.cons = make(map[string]*core.Consumer)
	}
	s.cons[queue] = c
	s.mu.Unlock()
	return nil
}

// stop ends the connection's part of the session: consumers are
// cancelled and deliveries not acknowledged go back to their queues, to be
// sent again (DUP) when the client reconnects.
func (s *session) stop() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.drained.Broadcast()
	cons := s.cons
	s.cons = nil
	flight := s.flight
	s.flight = nil
	for id, f := range flight {
		if f.q != nil {
			if s.st.resend == nil {
				s.st.resend = make(map[uint64]uint16)
			}
			s.st.resend[f.msgID] = id
		}
	}
	settles := s.settles
	s.settles = nil
	s.mu.Unlock()
	s.acks.Close()
	for _, r := range settles {
		r.q.Settle(r.c, []uint64{r.seq}, core.Ack)
	}
	for _, c := range cons {
		c.Cancel()
	}
	for _, f := range flight {
		if f.q != nil {
			f.q.Settle(f.c, []uint64{f.seq}, core.Requeue)
		}
	}
}

// queueLost handles a queue of a live session deleted under it (queue.delete
// by an administrator): what it held is lost, and so are the
// subscriptions bound to it. The loss is logged and counted, and the
// connection closed (MQTT 5: DISCONNECT 0x98 Administrative action), so
// that the client reconnects to session present 0 and subscribes again,
// rather than go on believing in subscriptions that no longer deliver.
// The reconnect makes the queues again.
func (srv *Server) queueLost(s *session, queue string) {
	srv.mu.Lock()
	if s.st.live == s {
		s.st.lost = true
	}
	srv.mu.Unlock()
	srv.lost.Add(1)
	srv.log.Warn("mqtt: session's queue was deleted; its messages and subscriptions are lost, closing the connection",
		"client", s.clientID, "queue", queue)
	// Not on the deleter's goroutine: closing writes a DISCONNECT.
	go s.cl.close(packets.ErrAdministrativeAction)
}
