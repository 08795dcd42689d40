package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// Config configures a Server. Zero values take the defaults in brackets.
type Config struct {
	Auth     *core.Auth   // [core.NewAuth(core.DefaultUsers())]
	Retained RetainStore  // where retained messages survive restarts [memory only]
	Exchange string       // where MQTT publishes go [amq.topic]
	Logger   *slog.Logger // [slog.Default()]
	// MaxPacketSize is the largest MQTT packet accepted [16 MiB]; larger
	// ones close the connection.
	MaxPacketSize uint32
	// ReceiveMaximum is how many QoS 1 and 2 publishes a client may have
	// unacknowledged (MQTT 5 receive maximum, also enforced for 3.1.1)
	// [1024]. More closes the connection with 0x93.
	ReceiveMaximum uint16
	// Prefetch caps how many QoS 1 and 2 deliveries a client may have
	// unacknowledged, below its own receive maximum [1000]: Mosquitto's
	// max_inflight_messages.
	Prefetch uint16
	// MaxQueuedMessages and MaxQueuedBytes cap each session's queued
	// messages beyond those in flight, Mosquitto's max_queued_messages
	// [1000; negative: no limit] and max_queued_bytes [0: no limit].
	// Beyond them a QoS 0 delivery is dropped and counted
	// (SessionDropped); a QoS 1 or 2 one waits on disk in a persistent
	// session (its queue pages out) and in memory in a clean one, where
	// the broker's memory limit bounds it (core.Broker.WatchMemory: its
	// alarm holds publishers back, and a queue over its share refuses
	// with PUBACK 0x97 or an AMQP nack).
	MaxQueuedMessages int
	MaxQueuedBytes    int64
	// TopicAliasMaximum is how many topic aliases an MQTT 5 client may
	// set [64].
	TopicAliasMaximum uint16
	// UseIdentityAsUsername lets a client with a verified TLS client
	// certificate and no password log in as the user its certificate
	// names (Mosquitto's use_identity_as_username).
	UseIdentityAsUsername bool
	// CertUser names the user of a verified client certificate
	// [CommonName].
	CertUser func(*x509.Certificate) (string, error)
	// AllowedOrigins are the browser origins (scheme://host[:port], "*"
	// for any) whose pages may open a WebSocket; requests without an
	// Origin header, from clients that are not browsers, are always
	// allowed [none].
	AllowedOrigins []string
	// LoginFailureDelay holds back the CONNACK refusing a failed login
	// [1s], so that guessing passwords is slow; other clients are not held
	// up. Negative: no delay.
	LoginFailureDelay time.Duration
	// MaxKeepalive is the longest Keep Alive, in seconds, a client may
	// ask for [0: no limit]. An MQTT 5 client asking for more, or for none
	// (0), is given this one as Server Keep Alive; an MQTT 3.x client,
	// which cannot be told, is refused (CONNACK 0x02), as in Mosquitto.
	MaxKeepalive uint16
	// SysInterval is how often the $SYS topics are published (Mosquitto's
	// sys_interval) [0: never]; see sys.go.
	SysInterval time.Duration
	// Version is the broker's version, for $SYS/broker/version.
	Version string
}

func (c *Config) setDefaults() {
	if c.Auth == nil {
		c.Auth = core.NewAuth(core.DefaultUsers())
	}
	if c.LoginFailureDelay == 0 {
		c.LoginFailureDelay = time.Second
	}
	if c.Exchange == "" {
		c.Exchange = "amq.topic"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = 16 << 20
	}
	if c.ReceiveMaximum == 0 {
		c.ReceiveMaximum = 1024
	}
	if c.Prefetch == 0 {
		c.Prefetch = 1000
	}
	if c.TopicAliasMaximum == 0 {
		c.TopicAliasMaximum = 64
	}
	if c.MaxQueuedMessages == 0 {
		c.MaxQueuedMessages = 1000
	}
	if c.CertUser == nil {
		c.CertUser = CommonName
	}
}

// Server is the MQTT listener. mochi-mqtt's packets package is its codec;
// connections, sessions, routing, QoS state, retained messages and wills
// are ferrymq's, on core, so that every message is routed once, by core,
// whichever protocol published it. (mochi's own server keeps two
// goroutines and a few kilobytes of buffers per connection; ours parks
// idle connections in epoll.)
type Server struct {
	broker *core.Broker
	cfg    Config
	log    *slog.Logger
	poller *poller // nil where idle clients cannot park
	// ctx ends at Shutdown: auth backend calls and login failure delays stop.
	ctx    context.Context
	cancel context.CancelFunc

	origins  atomic.Uint64 // Message.Origin of each session, for no-local
	tooLarge atomic.Uint64 // deliveries dropped as larger than the client takes
	lost     atomic.Uint64 // sessions whose queue was deleted under them
	retained retainedIndex
	sys      sysState // $SYS topics

	mu        sync.Mutex
	sessions  map[string]*state // by vhost + "\x00" + client id; what outlives a connection
	clients   map[*client]struct{}
	listeners []io.Closer
	closed    bool
	accepting sync.WaitGroup // accept loops
	live      sync.WaitGroup // clients not finished
	stopped   chan struct{}  // closed when Shutdown has finished every client
}

// NewServer returns a Server for b, with the stored retained messages
// loaded.
func NewServer(b *core.Broker, cfg Config) (*Server, error) {
	cfg.setDefaults()
	s := &Server{broker: b, cfg: cfg, log: cfg.Logger, sessions: make(map[string]*state), clients: make(map[*client]struct{}), stopped: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.retained.init()
	s.sys.init()
	if cfg.Retained != nil {
		s.retained.mu.Lock()
		err := cfg.Retained.RetainedMessages(func(vhost, topic string, msg *core.Message) error {
			s.retained.putLocked(vhost, topic, msg)
			return nil
		})
		s.retained.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("mqtt: loading retained messages: %w", err)
		}
	}
	p, err := newPoller(s.log)
	if err != nil {
		return nil, err
	}
	s.poller = p
	b.AddPublishHook(s.retainFromAMQP)
	b.OnVHostDeleted(s.vhostDeleted)
	s.capSessionQueues()
	if cfg.SysInterval > 0 {
		// The first values now, so that the first $SYS subscriber has
		// them at once as retained messages.
		s.publishSys(time.Now())
		go s.sysLoop(s.ctx, cfg.SysInterval)
	}
	return s, nil
}

// ErrServerClosed is returned by Serve and ServeWebSocket after Shutdown.
var ErrServerClosed = errors.New("mqtt: Server closed")

// Serve accepts MQTT connections on ln until Shutdown; each is served on
// its own goroutine. ln may be a TLS listener (tls.NewListener): each
// connection's handshake then runs on its own goroutine within
// HandshakeTimeout. It always returns a non-nil error, ErrServerClosed
// after Shutdown. An Accept error ends Serve: to ride out EMFILE and the
// like, ln retries them itself (cmd/ferrymq wraps every listener so).
func (s *Server) Serve(ln net.Listener) error {
	if !s.addListener(ln) {
		return ErrServerClosed
	}
	defer s.accepting.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			return fmt.Errorf("mqtt: accept on %s: %w", ln.Addr(), err)
		}
		if tc, ok := c.(*tls.Conn); ok {
			go func() {
				if s.handshake(tc, "mqtts") != nil {
					tc.Close()
					return
				}
				if cl := s.accept(tc); cl != nil {
					cl.serve()
				}
			}()
			continue
		}
		if cl := s.accept(c); cl != nil {
			go cl.serve()
		}
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) addListener(l io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		l.Close()
		return false
	}
	s.listeners = append(s.listeners, l)
	s.accepting.Add(1)
	return true
}

// accept starts serving a new connection.
func (s *Server) accept(conn net.Conn) *client {
	c := &client{srv: s, conn: conn, done: make(chan struct{}), closed: make(chan struct{})}
	sock, isTLS := socketOf(conn)
	if sc, ok := sock.(syscall.Conn); ok {
		c.sock, _ = sc.SyscallConn()
	}
	if !isTLS {
		c.raw = c.sock // a TLS connection's bytes must go through its encryption
	}
	// A TLS connection parks on its socket too: it is parked only after a
	// read timed out, when crypto/tls holds no complete record unread.
	c.parkable = s.poller != nil && c.sock != nil
	c.tls = isTLS
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return nil
	}
	s.clients[c] = struct{}{}
	s.live.Add(1)
	s.mu.Unlock()
	s.sys.accepted.Add(1)
	c.lastRead.Store(time.Now().UnixNano())
	c.timer = time.AfterFunc(connectTimeout, c.checkAlive)
	return c
}

// forget drops a finished client.
func (s *Server) forget(c *client) {
	s.poller.forget(c)
	s.mu.Lock()
	delete(s.clients, c)
	s.retire(c)
	s.mu.Unlock()
	s.live.Done()
}

// Shutdown closes the listeners, disconnects every client (MQTT 5 ones
// with 0x8B Server shutting down) and waits until each has finished: its
// will published through core and its session ended. If ctx ends first,
// Shutdown returns ctx's error and the clients left finish on their own.
// It is safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	lns := s.listeners
	s.listeners = nil
	s.mu.Unlock()
	s.cancel()
	for _, l := range lns {
		l.Close()
	}
	if first {
		go func() {
			s.accepting.Wait()
			s.mu.Lock()
			clients := make([]*client, 0, len(s.clients))
			for c := range s.clients {
				clients = append(clients, c)
			}
			s.mu.Unlock()
			// In parallel: a client that does not read holds its
			// DISCONNECT for up to finishTimeout.
			for _, c := range clients {
				go c.close(packets.ErrServerShuttingDown)
			}
			s.live.Wait()
			s.poller.close()
			close(s.stopped)
		}()
	}
	select {
	case <-s.stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mqtt: shutdown: %w", ctx.Err())
	}
}

// Stats are a Server's counters.
type Stats struct {
	// DroppedTooLarge counts deliveries not sent because the PUBLISH
	// would exceed the client's Maximum Packet Size [MQTT-3.1.2-25].
	DroppedTooLarge uint64
	// SessionsLost counts sessions whose queue was deleted (by an
	// administrator, or an AMQP client allowed to) while they were
	// connected or away: each was logged at WARN and started afresh,
	// its queued messages lost.
	SessionsLost uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{DroppedTooLarge: s.tooLarge.Load(), SessionsLost: s.lost.Load()}
}

// capSessionQueues sets the queue limits (MaxQueuedMessages,
// MaxQueuedBytes) on the session queues that exist already, those of
// persistent sessions recovered from the store: their clients may be away
// for long, and the limits are otherwise set when a session consumes.
func (s *Server) capSessionQueues() {
	const prefix = "mqtt-subscription-"
	for _, vn := range s.broker.VHostNames() {
		v := s.broker.VHost(vn)
		if v == nil {
			continue
		}
		var names []string
		v.EachQueue(func(q core.QueueFigures) {
			if strings.HasPrefix(q.Name, prefix) && (strings.HasSuffix(q.Name, "qos0") || strings.HasSuffix(q.Name, "qos1")) {
				names = append(names, q.Name)
			}
		})
		for _, n := range names {
			if q := v.Queue(n); q != nil {
				q.SetBacklogLimit(s.backlogLimit(strings.HasSuffix(n, "qos0")))
			}
		}
	}
}

// SessionDropped returns how many messages were dropped beyond the queue
// limits (MaxQueuedMessages, MaxQueuedBytes) of the session of clientID
// in vhost, or refused by its queues under the memory alarm, since the
// broker started, whether or not the client is connected; 0 for a session
// that has no queues.
func (s *Server) SessionDropped(vhost, clientID string) uint64 {
	v := s.broker.VHost(vhost)
	if v == nil {
		return 0
	}
	var n uint64
	for _, qos := range []byte{0, 1} {
		if q := v.Queue(sessionQueueName(clientID, qos)); q != nil {
			n += q.Stats().Discarded
		}
	}
	return n
}

// backlogLimit is the limit of a session's queue for QoS 0 (qos0) or QoS
// 1 and 2 subscriptions.
func (s *Server) backlogLimit(qos0 bool) core.BacklogLimit {
	return core.BacklogLimit{Messages: int64(max(s.cfg.MaxQueuedMessages, 0)), Bytes: max(s.cfg.MaxQueuedBytes, 0), DropAll: qos0}
}

// retainFromAMQP keeps a message published by an AMQP client to the MQTT
// exchange with header x-mqtt-retain: true as its topic's retained message;
// the publisher's confirm waits for the store position it returns. MQTT
// publishes (Origin set) retain on their own path, before routing.
func (s *Server) retainFromAMQP(vhost string, msg *core.Message) (bool, uint64) {
	if msg.Origin != 0 || msg.Exchange != s.cfg.Exchange || !isRetained(msg) {
		return true, 0
	}
	pos, err := s.retain(vhost, topic.Name(msg.RoutingKey), msg)
	if err != nil {
		s.log.Error("mqtt: retained message from AMQP not stored", "routing_key", msg.RoutingKey, "err", err)
	}
	return true, pos
}

// vhostUser splits an MQTT username "vhost:user" (RabbitMQ's convention);
// without a colon the vhost is "/".
func vhostUser(username string) (vhost, user string) {
	if v, u, ok := splitLast(username); ok {
		return v, u
	}
	return "/", username
}

func splitLast(s string) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}

// recovered turns a panic in a connection's goroutine into an error: a
// malformed packet must close that connection, never the broker (mochi has
// known decoder panics, e.g. a truncated SUBSCRIBE).
func recovered(v any) error {
	if v == nil {
		return nil
	}
	if err, ok := v.(error); ok {
		return fmt.Errorf("mqtt: connection panicked: %w", err)
	}
	return errors.New(fmt.Sprint("mqtt: connection panicked: ", v))
}
