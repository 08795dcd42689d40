package mqtt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// The operations API's view of sessions and retained messages (the
// management API's /api/mqtt/sessions and /api/mqtt/retained). Listing
// takes Server.mu alone to copy what it lists, then each live session's
// mu alone, then queue locks alone: never two at once.

// SessionInfo describes an MQTT session, connected or not.
type SessionInfo struct {
	ClientID string
	VHost    string
	// User owns the client id; "" for a session known only from its
	// queues (kept across a restart, not reconnected since).
	User      string
	Connected bool
	// Protocol is "MQTT 3.1.1", "MQTT 5.0" (or "MQTT 3.1"), as RabbitMQ
	// names them; "" when unknown (see User).
	Protocol string
	// Persistent: the session outlives its connection (clean session 0,
	// or an MQTT 5 session expiry interval).
	Persistent bool
	// ExpiresAt is when a disconnected MQTT 5 session ends; zero: never,
	// or connected.
	ExpiresAt     time.Time
	Peer          string // the connection's address; "" when disconnected
	Subscriptions []SubscriptionInfo
	// Queued is the messages waiting in its queues for delivery; Inflight
	// the QoS 1 and 2 deliveries awaiting its acknowledgement.
	Queued   int
	Inflight int
	// Dropped is the messages its queues dropped beyond the session
	// limits (MaxQueuedMessages, MaxQueuedBytes) or refused under the
	// memory alarm since the broker started (Server.SessionDropped).
	Dropped uint64
	// LastSeen is when the client last sent a packet, or when its last
	// connection ended; zero if unknown (restored after a restart).
	LastSeen time.Time
}

// SubscriptionInfo is one topic filter of a session.
type SubscriptionInfo struct {
	Filter            string // as subscribed, with any $share/<group>/ prefix
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	ID                int // MQTT 5 subscription identifier; 0: none
}

// protocolName names an MQTT protocol level as RabbitMQ's management API
// does in a connection's protocol.
func protocolName(v byte) string {
	switch v {
	case 3:
		return "MQTT 3.1"
	case 4:
		return "MQTT 3.1.1"
	case level5:
		return "MQTT 5.0"
	}
	return ""
}

// sessionPrefix starts the names of a session's queues
// (sessionQueueName).
const sessionPrefix = "mqtt-subscription-"

// clientOfQueue returns the client id whose session queue name is.
func clientOfQueue(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, sessionPrefix)
	if !ok {
		return "", false
	}
	if id, ok := strings.CutSuffix(rest, "qos1"); ok {
		return id, true
	}
	return strings.CutSuffix(rest, "qos0")
}

// Sessions lists the sessions of vhost ("" for every vhost), sorted by
// vhost and client id: the connected ones, the disconnected ones this
// server remembers, and those only the store kept (durable session queues
// recovered at start-up).
func (s *Server) Sessions(vhost string) []SessionInfo {
	type known struct {
		vhost, id string
		st        *state
	}
	var states []known
	s.mu.Lock()
	for key, st := range s.sessions {
		vh, id, _ := strings.Cut(key, "\x00")
		if vhost == "" || vh == vhost {
			states = append(states, known{vh, id, st})
		}
	}
	infos := make(map[string]*SessionInfo, len(states))
	for _, k := range states {
		st := k.st
		info := &SessionInfo{ClientID: k.id, VHost: k.vhost, User: st.owner, Protocol: protocolName(st.version),
			LastSeen: st.lastSeen, ExpiresAt: st.expiresAt}
		if st.expiry == nil {
			info.ExpiresAt = time.Time{}
		}
		if st.live != nil {
			info.Connected, info.LastSeen, info.ExpiresAt = true, time.Time{}, time.Time{}
		}
		infos[k.vhost+"\x00"+k.id] = info
	}
	lives := make(map[string]*session, len(states))
	for _, k := range states {
		if k.st.live != nil {
			lives[k.vhost+"\x00"+k.id] = k.st.live
		}
	}
	s.mu.Unlock()

	// Sessions only the store remembers.
	names := []string{vhost}
	if vhost == "" {
		names = s.broker.VHostNames()
	}
	for _, vh := range names {
		v := s.broker.VHost(vh)
		if v == nil {
			continue
		}
		for _, q := range v.QueueList() {
			id, ok := clientOfQueue(q.Name())
			if !ok {
				continue
			}
			key := vh + "\x00" + id
			if infos[key] == nil {
				infos[key] = &SessionInfo{ClientID: id, VHost: vh, Persistent: true}
			}
		}
	}

	out := make([]SessionInfo, 0, len(infos))
	for key, info := range infos {
		v := s.broker.VHost(info.VHost)
		if live := lives[key]; live != nil {
			live.describe(info)
		} else if v != nil {
			info.Persistent = info.Persistent || v.Queue(sessionQueueName(info.ClientID, 1)) != nil
			for qos := byte(0); qos <= 1; qos++ {
				for _, b := range v.QueueBindings(sessionQueueName(info.ClientID, qos)) {
					if _, ok := b.Arguments[argFilter].(string); ok {
						info.Subscriptions = append(info.Subscriptions, subscriptionInfo(subscriptionFrom(b.Arguments)))
					}
				}
			}
		}
		if v != nil {
			for qos := byte(0); qos <= 1; qos++ {
				if q := v.Queue(sessionQueueName(info.ClientID, qos)); q != nil {
					st := q.Stats()
					info.Queued += st.Messages
					info.Dropped += st.Discarded
					if !info.Connected {
						info.Inflight += st.Unacked
					}
				}
			}
		}
		slices.SortFunc(info.Subscriptions, func(a, b SubscriptionInfo) int { return strings.Compare(a.Filter, b.Filter) })
		out = append(out, *info)
	}
	slices.SortFunc(out, func(a, b SessionInfo) int {
		if c := strings.Compare(a.VHost, b.VHost); c != 0 {
			return c
		}
		return strings.Compare(a.ClientID, b.ClientID)
	})
	return out
}

// describe fills in what the live session knows.
func (s *session) describe(info *SessionInfo) {
	c := s.cl
	info.Peer = c.conn.RemoteAddr().String()
	info.LastSeen = time.Unix(0, c.lastRead.Load())
	s.mu.Lock()
	defer s.mu.Unlock()
	info.Protocol = protocolName(s.version)
	info.Persistent = s.persistent
	info.Inflight = len(s.flight)
	for _, subs := range s.subs {
		for _, sub := range subs {
			info.Subscriptions = append(info.Subscriptions, subscriptionInfo(sub))
		}
	}
}

func subscriptionInfo(sub subscription) SubscriptionInfo {
	return SubscriptionInfo{Filter: sub.full, QoS: sub.qos, NoLocal: sub.noLocal, RetainAsPublished: sub.rap, ID: sub.id}
}

// ErrNoSession is RemoveSession's error for a client id with no session.
var ErrNoSession = errors.New("mqtt: no such session")

// RemoveSession ends a client's session, as a clean start would: its
// connection, if any, is closed (MQTT 5: DISCONNECT 0x98 Administrative
// action; the will is published, as for any connection that ends without
// DISCONNECT), and its queues, with the messages waiting in them, and its
// subscriptions are deleted. It waits for the connection's end until ctx
// ends. Errors wrap ErrNoSession when the vhost has no such session.
func (s *Server) RemoveSession(ctx context.Context, vhost, clientID string) error {
	key := vhost + "\x00" + clientID
	s.mu.Lock()
	st := s.sessions[key]
	var live *session
	if st != nil {
		live = st.live
	}
	s.mu.Unlock()
	if live != nil {
		// Ending as a clean session: endSession deletes its queues and
		// forgets it, and a will delay is cut short.
		live.mu.Lock()
		live.persistent = false
		live.mu.Unlock()
		live.cl.close(packets.ErrAdministrativeAction)
		select {
		case <-live.ended:
		case <-ctx.Done():
			return fmt.Errorf("mqtt: removing session %q: %w", clientID, ctx.Err())
		}
	}
	// A disconnected session, or what the connection's end left.
	var dueWill func()
	s.mu.Lock()
	if st = s.sessions[key]; st != nil && st.live == nil {
		if st.will != nil && st.will.Stop() {
			dueWill = st.willSend // the session ends: its will is due now [MQTT-3.1.3-9]
		}
		if st.expiry != nil {
			st.expiry.Stop()
		}
		st.will, st.willSend, st.expiry = nil, nil, nil
		delete(s.sessions, key)
	} else if st != nil {
		st = nil // a new connection took the client id meanwhile: it stays
	}
	s.mu.Unlock()
	if dueWill != nil {
		dueWill()
	}
	found := st != nil || live != nil
	if v := s.broker.VHost(vhost); v != nil {
		for qos := byte(0); qos <= 1; qos++ {
			name := sessionQueueName(clientID, qos)
			if v.Queue(name) == nil {
				continue
			}
			found = true
			if _, err := v.DeleteQueue(name, false, false, 0); err != nil {
				return fmt.Errorf("mqtt: removing session %q: %w", clientID, err)
			}
		}
	}
	if !found {
		return fmt.Errorf("%w: client id %q in vhost %q", ErrNoSession, clientID, vhost)
	}
	s.log.Info("mqtt: session removed by an operator", "client", clientID, "vhost", vhost, "was_connected", live != nil)
	return nil
}

// RetainedInfo describes a retained message.
type RetainedInfo struct {
	VHost, Topic string
	QoS          byte
	Size         int // payload bytes
	Published    time.Time
	ContentType  string
	Payload      []byte // shared with the broker: do not modify
}

// Retained lists the retained messages of vhost ("" for every vhost)
// whose topics match filter ("" or "#" for all), sorted by vhost and
// topic.
func (s *Server) Retained(vhost, filter string) ([]RetainedInfo, error) {
	if filter == "" {
		filter = "#"
	}
	if !topic.ValidFilter(filter) {
		return nil, fmt.Errorf("mqtt: invalid topic filter %q", filter)
	}
	r := &s.retained
	var out []RetainedInfo
	r.mu.RLock()
	for vh, topics := range r.vhosts {
		if vhost != "" && vh != vhost {
			continue
		}
		for name, m := range topics {
			if topic.Match(filter, name) {
				out = append(out, RetainedInfo{VHost: vh, Topic: name, QoS: topic.MessageQoS(m), Size: len(m.Body),
					Published: m.Published, ContentType: m.Properties.ContentType, Payload: m.Body})
			}
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b RetainedInfo) int {
		if c := strings.Compare(a.VHost, b.VHost); c != 0 {
			return c
		}
		return strings.Compare(a.Topic, b.Topic)
	})
	return out, nil
}

// ClearRetained deletes the retained messages of vhost whose topics match
// filter (required: "#" clears them all), from the store too, as a
// retained publish with an empty payload would, and returns how many. It
// returns once the deletion is durable.
func (s *Server) ClearRetained(vhost, filter string) (int, error) {
	if !topic.ValidFilter(filter) {
		return 0, fmt.Errorf("mqtt: invalid topic filter %q", filter)
	}
	r := &s.retained
	var pos uint64
	n := 0
	r.mu.Lock()
	for name := range r.vhosts[vhost] {
		if !topic.Match(filter, name) {
			continue
		}
		if s.cfg.Retained != nil {
			pos = max(pos, s.cfg.Retained.DeleteRetained(vhost, name))
		}
		delete(r.vhosts[vhost], name)
		n++
	}
	r.mu.Unlock()
	if err := s.broker.WaitSynced(pos); err != nil {
		return n, fmt.Errorf("mqtt: clearing retained messages: %w", err)
	}
	if n > 0 {
		s.log.Info("mqtt: retained messages cleared by an operator", "vhost", vhost, "filter", filter, "cleared", n)
	}
	return n, nil
}
