package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/ferrymq/ferrymq/core"
)

// Config configures a Server. Zero values take the defaults in brackets.
type Config struct {
	Users    *core.Users  // [core.DefaultUsers()]
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
	// unacknowledged, below its own receive maximum [1000].
	Prefetch uint16
}

func (c *Config) setDefaults() {
	if c.Users == nil {
		c.Users = core.DefaultUsers()
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
}

// Server is the MQTT listener: mochi-mqtt parses packets, keeps
// connections and runs keepalives; everything else - routing,
// subscriptions, QoS state, retained messages, wills - is ferrymq's, on
// core, so that every message is routed once, by core, whichever protocol
// published it.
type Server struct {
	broker *core.Broker
	cfg    Config
	log    *slog.Logger
	mochi  *mochi.Server
	hook   *hook

	origins  atomic.Uint64 // Message.Origin of each session, for no-local
	retained retainedIndex

	mu       sync.Mutex
	sessions map[string]*state // by vhost + "\x00" + client id; what outlives a connection
	started  bool
	closed   bool
}

// NewServer returns a Server for b, with the stored retained messages
// loaded.
func NewServer(b *core.Broker, cfg Config) (*Server, error) {
	cfg.setDefaults()
	s := &Server{broker: b, cfg: cfg, log: cfg.Logger, sessions: make(map[string]*state)}
	s.retained.init()
	if cfg.Retained != nil {
		err := cfg.Retained.RetainedMessages(func(vhost, topic string, msg *core.Message) error {
			s.retained.put(vhost, topic, msg)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("mqtt: loading retained messages: %w", err)
		}
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacketSize
	caps.ReceiveMaximum = cfg.ReceiveMaximum
	caps.MaximumInflight = cfg.Prefetch
	// mochi would expire in-flight and retained messages after this; ours
	// live in core, which has its own TTLs.
	caps.MaximumMessageExpiryInterval = 0
	caps.TopicAliasMaximum = 64
	caps.MaximumClientWritesPending = 1
	s.mochi = mochi.New(&mochi.Options{
		Capabilities:             caps,
		Logger:                   slog.New(quiet{cfg.Logger.Handler()}).With("component", "mochi"),
		InlineClient:             false,
		ClientNetReadBufferSize:  2048,
		ClientNetWriteBufferSize: 2048,
		SysTopicResendInterval:   1 << 30,
	})
	b.AddPublishHook(s.retainFromAMQP)
	s.hook = &hook{srv: s}
	if err := s.mochi.AddHook(s.hook, nil); err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	return s, nil
}

// Serve serves MQTT on ln (plain TCP) until Close. It returns at once;
// connections are handled on their own goroutines.
func (s *Server) Serve(ln net.Listener) error {
	return s.add(&listener{id: "tcp-" + ln.Addr().String(), proto: "tcp", ln: ln, log: s.log})
}

// ServeWebSocket serves MQTT over WebSocket on ln, at path.
func (s *Server) ServeWebSocket(ln net.Listener, path string) error {
	return s.add(newWSListener(ln, path, s.log))
}

func (s *Server) add(l listeners.Listener) error {
	if err := s.mochi.AddListener(l); err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	s.mu.Lock()
	started := s.started
	s.started = true
	s.mu.Unlock()
	if !started {
		return s.mochi.Serve() // serves every listener added so far
	}
	s.mochi.Listeners.Serve(l.ID(), s.mochi.EstablishConnection)
	return nil
}

// Close disconnects every client (their wills go out through core) and
// closes the listeners. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	return s.mochi.Close()
}

// retainFromAMQP keeps a message published by an AMQP client to the MQTT
// exchange with header x-mqtt-retain: true as its topic's retained message.
// MQTT publishes (Origin set) retain on their own path, before routing.
func (s *Server) retainFromAMQP(vhost string, msg *core.Message) bool {
	if msg.Origin != 0 || msg.Exchange != s.cfg.Exchange || !isRetained(msg) {
		return true
	}
	if err := s.retain(vhost, TopicName(msg.RoutingKey), msg); err != nil {
		s.log.Error("mqtt: retained message from AMQP not stored", "routing_key", msg.RoutingKey, "err", err)
	}
	return true
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

// quiet passes on mochi's warnings and errors only: its info lines (each
// listener attached, each client connecting) are not the broker's to log.
type quiet struct{ slog.Handler }

func (q quiet) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && q.Handler.Enabled(ctx, l)
}

func (q quiet) WithAttrs(as []slog.Attr) slog.Handler { return quiet{q.Handler.WithAttrs(as)} }
func (q quiet) WithGroup(g string) slog.Handler       { return quiet{q.Handler.WithGroup(g)} }
