package core

import (
	"slices"
	"time"
)

// Protocol names as RabbitMQ's management API shows them in a
// connection's "protocol" field.
const (
	ProtocolAMQP091 = "AMQP 0-9-1"
	ProtocolMQTT311 = "MQTT 3.1.1"
	ProtocolMQTT31  = "MQTT 3.1"
	ProtocolMQTT5   = "MQTT 5.0"
)

// ConnName is a connection's name as RabbitMQ forms it, from the client's
// and the listener's addresses: "127.0.0.1:54321 -> 127.0.0.1:5672".
func ConnName(peer, local string) string { return peer + " -> " + local }

// ChannelInfo describes one AMQP channel of a connection, for the
// operations API (RabbitMQ's /api/channels).
type ChannelInfo struct {
	Number         uint16
	Consumers      int
	PrefetchCount  uint32 // basic.qos global=false (per consumer); 0: none
	GlobalPrefetch uint32 // basic.qos global=true (per channel); 0: none
	Unacked        int
	Confirm        bool // confirm.select was sent
	Transactional  bool // tx.select was sent
	// ConsumerList are the channel's consumers (RabbitMQ's /api/consumers).
	ConsumerList []ConsumerInfo
}

// ConsumerInfo describes one consumer of a channel.
type ConsumerInfo struct {
	Tag         string
	Queue       string
	AckRequired bool
	Prefetch    uint32
	Exclusive   bool
	Arguments   Table
}

// Connection is a snapshot of one registered client connection: what it
// said when it opened (ConnInfo) and its standing now.
type Connection struct {
	ConnInfo
	User     string
	Tags     []string
	VHost    string
	Channels int // open channels (AMQP); MQTT connections count none
}

// snapshot returns a's listing. Must hold b.connMu.
func (a *Access) snapshotLocked() Connection {
	return Connection{ConnInfo: a.info, User: a.p.Name, Tags: a.p.Tags, VHost: a.v.name, Channels: a.channels}
}

// Connections lists the open client connections of every protocol, in
// no particular order. It copies the registry under Broker.connMu, which
// only connection open and close otherwise take; no per-message path
// takes it.
func (b *Broker) Connections() []Connection {
	b.connMu.Lock()
	defer b.connMu.Unlock()
	out := make([]Connection, 0, len(b.conns))
	for a := range b.conns {
		out = append(out, a.snapshotLocked())
	}
	return out
}

// ConnectionCount reports how many client connections are open.
func (b *Broker) ConnectionCount() int {
	b.connMu.Lock()
	defer b.connMu.Unlock()
	return len(b.conns)
}

// Connection returns the open connection named name (ConnInfo.Name).
func (b *Broker) Connection(name string) (Connection, bool) {
	b.connMu.Lock()
	defer b.connMu.Unlock()
	a := b.byName[name]
	if a == nil {
		return Connection{}, false
	}
	return a.snapshotLocked(), true
}

// CloseConnection asks the open connection named name to close with
// reason (AMQP: connection.close 320 CONNECTION_FORCED with reason as its
// text; MQTT 5: DISCONNECT 0x98 Administrative action; MQTT 3.1.1: the
// socket is closed). It does not wait for the connection to end. It
// reports false if no such connection is open.
func (b *Broker) CloseConnection(name, reason string) bool {
	b.connMu.Lock()
	a := b.byName[name]
	b.connMu.Unlock()
	if a == nil {
		return false
	}
	if a.info.Close != nil {
		a.info.Close(reason)
	}
	return true
}

// ListChannels returns the channels of the connection named name, from
// the protocol's ConnInfo.ListChannels; nil if it has none or is gone.
func (b *Broker) ListChannels(name string) []ChannelInfo {
	b.connMu.Lock()
	a := b.byName[name]
	b.connMu.Unlock()
	if a == nil || a.info.ListChannels == nil {
		return nil
	}
	chs := a.info.ListChannels()
	slices.SortFunc(chs, func(x, y ChannelInfo) int { return int(x.Number) - int(y.Number) })
	return chs
}

// registerLocked adds a to the registry. Must hold b.connMu.
func (b *Broker) registerLocked(a *Access) {
	b.conns[a] = struct{}{}
	if a.info.Name != "" {
		b.byName[a.info.Name] = a
	}
}

// unregisterLocked removes a from the registry. Must hold b.connMu.
func (b *Broker) unregisterLocked(a *Access) {
	delete(b.conns, a)
	if a.info.Name != "" && b.byName[a.info.Name] == a {
		delete(b.byName, a.info.Name)
	}
}

// stampInfo fills what Open can tell itself about a connection.
func stampInfo(info *ConnInfo, now time.Time) {
	if info.ConnectedAt.IsZero() {
		info.ConnectedAt = now
	}
	if info.Name == "" && info.Peer != "" && info.Local != "" {
		info.Name = ConnName(info.Peer, info.Local)
	}
}
