package core

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
)

// ConnInfo describes a client connection to core: what the limits count,
// what deleting a vhost closes, what the operations API lists
// (Broker.Connections). It is fixed when the connection opens.
type ConnInfo struct {
	// Name identifies the connection in the operations API, as RabbitMQ
	// forms it: "127.0.0.1:54321 -> 127.0.0.1:5672" (ConnName). Open
	// fills it from Peer and Local when empty.
	Name     string
	Protocol string // ProtocolAMQP091, ProtocolMQTT311, ProtocolMQTT5
	Peer     string // the client's host:port
	Local    string // the listener's host:port the client reached
	// ClientID is the MQTT client identifier: it expands {client_id} in
	// topic permissions and owns the mqtt-subscription-<id> queues.
	ClientID string
	TLS      bool
	// ConnectedAt is when the client connected; Open fills it when zero.
	ConnectedAt time.Time
	// ClientProperties are AMQP's connection.start-ok client-properties
	// (for MQTT: client_id); core only keeps them for listing.
	ClientProperties Table
	// Close asks the connection to close from another goroutine (its vhost
	// was deleted, an operator closed it) with reason; it must not block.
	Close func(reason string)
	// ListChannels, if set, lists the connection's channels now; it is
	// called from the operations API's goroutine, never on a hot path, and
	// must not call into core.
	ListChannels func() []ChannelInfo
}

// VHostLimits are RabbitMQ's per-vhost limits; 0: none.
type VHostLimits struct {
	MaxConnections int
	MaxQueues      int
}

// SetLimits sets the vhost's limits. They apply to connections opened and
// queues declared afterwards.
func (v *VHost) SetLimits(l VHostLimits) {
	v.maxConns.Store(int64(l.MaxConnections))
	v.maxQueues.Store(int64(l.MaxQueues))
}

// Limits returns the vhost's limits.
func (v *VHost) Limits() VHostLimits {
	return VHostLimits{MaxConnections: int(v.maxConns.Load()), MaxQueues: int(v.maxQueues.Load())}
}

// limitError is a refusal because a limit is reached: MQTT reports it as
// quota exceeded rather than not authorised.
type limitError struct{ err *Error }

func (e limitError) Error() string { return e.err.Error() }
func (e limitError) Unwrap() error { return e.err }

// IsLimit reports whether err is a refusal because a connection, channel
// or queue limit is reached.
func IsLimit(err error) bool {
	var le limitError
	return errors.As(err, &le)
}

func errLimit(code int, format string, args ...any) error {
	return limitError{Errorf(code, format, args...)}
}

// userConns counts one user's connections and channels.
type userConns struct{ conns, channels int }

// Access is one client connection's standing in a vhost: who it is, its
// place in the limits, and the permission checks it made. Checks are
// cached per connection, as RabbitMQ caches them per channel, so the
// check on each publish is a scan of a few strings. It is used by the
// connection's own goroutine only, except Close.
type Access struct {
	b     *Broker
	v     *VHost
	p     *Principal
	info  ConnInfo
	topic bool // topic permissions may refuse something here

	cache    []allowed // made on the first check: most idle devices never need one
	next     int       // cache slot to fill next once full
	channels int       // open channels counted against the user's limit
	closed   atomic.Bool
}

// accessCacheSize is how many checks a connection remembers (RabbitMQ's
// channel keeps 12).
const accessCacheSize = 8

// allowed is a cached successful permission check.
type allowed struct {
	name  string
	perm  Permission
	queue bool // else an exchange
}

// Open admits an authenticated user's connection to a vhost: the vhost
// must exist, the user's backend must grant access to it, and the node,
// vhost and user connection limits must allow one more. Refusals are 530
// NOT_ALLOWED with RabbitMQ's texts (IsLimit tells a limit from a
// refusal). The caller closes the Access when the connection ends.
func (b *Broker) Open(ctx context.Context, p *Principal, vhost string, info ConnInfo) (*Access, error) {
	v := b.VHost(vhost)
	if v == nil {
		return nil, Errorf(CodeNotAllowed, "vhost %s not found", vhost)
	}
	ip := info.Peer
	if ap, err := netip.ParseAddrPort(ip); err == nil {
		ip = ap.Addr().String()
	}
	ok, err := p.Authz.VHostAccess(ctx, p, vhost, ip)
	if err != nil || !ok {
		refused := Errorf(CodeNotAllowed, "access to vhost '%s' refused for user '%s'", vhost, p.Name)
		if err != nil {
			b.log.Warn("auth backend failed: vhost access refused", "user", p.Name, "vhost", vhost, "err", err)
			return nil, fmt.Errorf("%w (%v)", refused, err)
		}
		return nil, refused
	}
	stampInfo(&info, b.clock.Now())
	a := &Access{b: b, v: v, p: p, info: info, topic: true}
	if ts, ok := p.Authz.(TopicScoper); ok {
		a.topic = ts.HasTopicPermissions(p, vhost)
	}
	b.connMu.Lock()
	defer b.connMu.Unlock()
	uc := b.users[p.Name]
	switch {
	case v.deleted.Load():
		return nil, Errorf(CodeNotAllowed, "vhost %s not found", vhost)
	case b.maxConns > 0 && len(b.conns) >= b.maxConns:
		return nil, errLimit(CodeNotAllowed, "connection refused: node connection limit (%d) is reached", b.maxConns)
	case v.maxConns.Load() > 0 && int64(v.conns) >= v.maxConns.Load():
		return nil, errLimit(CodeNotAllowed, "connection refused: connection limit (%d) is reached for vhost '%s'", v.maxConns.Load(), vhost)
	case p.MaxConnections > 0 && uc != nil && uc.conns >= p.MaxConnections:
		return nil, errLimit(CodeNotAllowed, "Connection refused for user '%s': user connection limit (%d) is reached", p.Name, p.MaxConnections)
	}
	if uc == nil {
		uc = &userConns{}
		b.users[p.Name] = uc
	}
	uc.conns++
	v.conns++
	b.registerLocked(a)
	return a, nil
}

// Close ends the connection's place in the limits. It is idempotent.
func (a *Access) Close() {
	if a.closed.Swap(true) {
		return
	}
	b := a.b
	b.connMu.Lock()
	defer b.connMu.Unlock()
	b.unregisterLocked(a)
	a.v.conns--
	if uc := b.users[a.p.Name]; uc != nil {
		uc.conns--
		uc.channels -= a.channels
		if uc.conns == 0 {
			delete(b.users, a.p.Name)
		}
	}
}

// VHost returns the vhost the connection is in.
func (a *Access) VHost() *VHost { return a.v }

// Principal returns the connection's user.
func (a *Access) Principal() *Principal { return a.p }

// OpenChannel counts a channel against the user's channel limit: 530
// NOT_ALLOWED past it, as RabbitMQ.
func (a *Access) OpenChannel() error {
	b := a.b
	b.connMu.Lock()
	defer b.connMu.Unlock()
	uc := b.users[a.p.Name]
	if uc == nil {
		return Errorf(CodeChannelError, "connection closed")
	}
	if a.p.MaxChannels > 0 && uc.channels >= a.p.MaxChannels {
		return errLimit(CodeNotAllowed, "number of channels opened for user '%s' has reached the maximum allowed user limit of (%d)", a.p.Name, a.p.MaxChannels)
	}
	uc.channels++
	a.channels++
	return nil
}

// CloseChannel gives back a channel counted by OpenChannel.
func (a *Access) CloseChannel() {
	b := a.b
	b.connMu.Lock()
	defer b.connMu.Unlock()
	if a.channels > 0 && !a.closed.Load() {
		a.channels--
		b.users[a.p.Name].channels--
	}
}

// Check refuses (403 ACCESS_REFUSED, RabbitMQ's text) unless the user has
// perm on the exchange or queue kind/name. The default exchange "" is
// checked as DefaultExchangeName.
func (a *Access) Check(ctx context.Context, kind, name string, perm Permission) error {
	if kind == KindExchange && name == "" {
		name = DefaultExchangeName
	}
	queue := kind == KindQueue
	for i := range a.cache {
		c := &a.cache[i]
		if c.perm == perm && c.queue == queue && c.name == name {
			return nil
		}
	}
	ok, err := a.p.Authz.ResourceAccess(ctx, a.p, a.v.name, kind, name, perm)
	if err != nil || !ok {
		refused := refusal(perm, kind, name, a.v.name, a.p.Name)
		if err != nil {
			a.b.log.Warn("auth backend failed: access refused", "user", a.p.Name, "vhost", a.v.name, "kind", kind, "name", name, "permission", perm.String(), "err", err)
			return fmt.Errorf("%w (%v)", refused, err)
		}
		return refused
	}
	entry := allowed{name: name, perm: perm, queue: queue}
	if len(a.cache) < accessCacheSize {
		if a.cache == nil {
			a.cache = make([]allowed, 0, accessCacheSize)
		}
		a.cache = append(a.cache, entry)
		return nil
	}
	a.cache[a.next] = entry
	a.next = (a.next + 1) % accessCacheSize
	return nil
}

// CheckTopic applies topic permissions: publishing (Write) or binding
// (Read) with routingKey on exchange, when it is a topic exchange.
func (a *Access) CheckTopic(ctx context.Context, exchange, routingKey string, perm Permission) error {
	if !a.topic {
		return nil
	}
	if x := a.v.exchange(exchange); x == nil || x.kind != "topic" {
		return nil
	}
	ok, err := a.p.Authz.TopicAccess(ctx, a.p, a.v.name, exchange, routingKey, a.info.ClientID, perm)
	if err != nil || !ok {
		refused := topicRefusal(perm, routingKey, exchange, a.v.name, a.p.Name)
		if err != nil {
			a.b.log.Warn("auth backend failed: topic access refused", "user", a.p.Name, "vhost", a.v.name, "exchange", exchange, "routing_key", routingKey, "permission", perm.String(), "err", err)
			return fmt.Errorf("%w (%v)", refused, err)
		}
		return refused
	}
	return nil
}

// Internal queue prefixes: an MQTT client's session queues and a bridge's
// store-and-forward queues.
const (
	mqttSessionPrefix = "mqtt-subscription-"
	bridgePrefix      = "bridge."
)

// CheckInternalQueue refuses to consume, get, purge or delete the queues
// other parts of ferrymq own: an MQTT client's session queue belongs to
// that client, bridge queues to the bridge. An administrator may.
func (a *Access) CheckInternalQueue(name string) error {
	if a.p.HasTag(TagAdministrator) {
		return nil
	}
	switch {
	case strings.HasPrefix(name, mqttSessionPrefix):
		if id := a.info.ClientID; id != "" && (name == mqttSessionPrefix+id+"qos0" || name == mqttSessionPrefix+id+"qos1") {
			return nil
		}
		return Errorf(CodeAccessRefused, "access to %s refused for user '%s': it is an MQTT client's session queue", rs(KindQueue, name, a.v.name), a.p.Name)
	case strings.HasPrefix(name, bridgePrefix):
		return Errorf(CodeAccessRefused, "access to %s refused for user '%s': bridge queues are for administrators", rs(KindQueue, name, a.v.name), a.p.Name)
	}
	return nil
}

// DeleteVHost deletes a vhost: its connections are asked to close, then
// its queues (with their messages) and exchanges are deleted, from the
// store too, and the OnVHostDeleted hooks run. Errors: 404 if it does not
// exist.
func (b *Broker) DeleteVHost(name string) error {
	b.mu.Lock()
	v := b.vhosts[name]
	delete(b.vhosts, name)
	b.mu.Unlock()
	if v == nil {
		return Errorf(CodeNotFound, "no vhost '%s'", name)
	}
	v.deleted.Store(true)
	var conns []*Access
	b.connMu.Lock()
	for a := range b.conns {
		if a.v == v {
			conns = append(conns, a)
		}
	}
	b.connMu.Unlock()
	reason := fmt.Sprintf("vhost '%s' is deleted", name)
	for _, a := range conns {
		if a.info.Close != nil {
			a.info.Close(reason)
		}
	}
	err := v.deleteAll()
	b.mu.RLock()
	hooks := b.deletedHooks
	b.mu.RUnlock()
	for _, fn := range hooks {
		fn(name)
	}
	return err
}
