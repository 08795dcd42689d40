// Package amqp is ferrymq's AMQP 0-9-1 server: connection and channel state
// machines between the wire codec (amqp/wire) and the broker (core).
//
// Each connection has two goroutines. The reader owns the socket's read side
// and all connection and channel state that only it touches; it decodes a
// frame, acts on core and appends replies to the connection's outbound
// buffer. The writer swaps that buffer out and writes it, so replies and
// deliveries produced while a write is in flight go out together in the
// next one (write batching without a flush per frame). Deliveries are
// appended by core on whichever goroutine dispatches, under the channel's
// lock; no lock is held across socket I/O.
package amqp

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// Config configures a Server. Zero values take the defaults in brackets.
type Config struct {
	Auth             *core.Auth    // [core.NewAuth(core.DefaultUsers())]
	FrameMax         uint32        // [131072]
	ChannelMax       uint16        // [2047]
	Heartbeat        time.Duration // [60s] proposed in connection.tune; negative proposes 0 (off), as RabbitMQ's heartbeat = 0
	MaxMessageSize   int           // [16 MiB] body larger -> channel error 406 PRECONDITION_FAILED as RabbitMQ
	HandshakeTimeout time.Duration // [10s] protocol header + start-ok + tune-ok + open must finish within it, and a TLS handshake before them
	Logger           *slog.Logger  // [slog.Default()]
	// CertUser names the user of a verified TLS client certificate, for
	// SASL EXTERNAL [CommonName].
	CertUser func(*x509.Certificate) (string, error)
	// LoginFailureDelay holds back the refusal of a failed login [1s], so
	// that guessing passwords one connection after another is slow; other
	// connections are not held up. Negative: no delay.
	LoginFailureDelay time.Duration
}

// Defaults, as RabbitMQ's.
const (
	DefaultFrameMax       = 131072
	DefaultChannelMax     = 2047
	DefaultHeartbeat      = 60 * time.Second
	DefaultMaxMessageSize = 16 << 20
	defaultHandshake      = 10 * time.Second
	// sendTimeout bounds one socket write, as RabbitMQ's send_timeout: a
	// peer that stops reading for this long is disconnected.
	sendTimeout = 15 * time.Second
	// closeTimeout is how long a connection waits for connection.close-ok
	// after sending connection.close.
	closeTimeout = 3 * time.Second
)

func (c *Config) setDefaults() {
	if c.Auth == nil {
		c.Auth = core.NewAuth(core.DefaultUsers())
	}
	if c.LoginFailureDelay == 0 {
		c.LoginFailureDelay = time.Second
	}
	if c.FrameMax == 0 {
		c.FrameMax = DefaultFrameMax
	}
	if c.ChannelMax == 0 {
		c.ChannelMax = DefaultChannelMax
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = defaultHandshake
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.CertUser == nil {
		c.CertUser = CommonName
	}
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("amqp: Server closed")

// Server serves AMQP 0-9-1 connections for one core.Broker.
type Server struct {
	broker *core.Broker
	cfg    Config
	log    *slog.Logger
	nextID atomic.Uint64 // connection ids, the owners of exclusive queues

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closed    bool
	shutdown  chan struct{} // closed by Shutdown

	stopAlarms func() // ends the broker's alarm notifications, at Shutdown
}

// NewServer returns a Server for b.
func NewServer(b *core.Broker, cfg Config) *Server {
	cfg.setDefaults()
	s := &Server{
		broker:    b,
		cfg:       cfg,
		log:       cfg.Logger,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		shutdown:  make(chan struct{}),
	}
	s.stopAlarms = b.WatchAlarms(s.alarmChanged)
	return s
}

// Serve accepts connections on ln until Shutdown; it always returns a non-nil
// error, ErrServerClosed after Shutdown. An Accept error ends Serve: to ride
// out EMFILE and the like, ln retries them itself (cmd/ferrymq wraps every
// listener so). ln may be a TLS listener
// (tls.NewListener, amqps): a client whose certificate was verified may
// then log in with SASL EXTERNAL.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			return fmt.Errorf("amqp: accept on %s: %w", ln.Addr(), err)
		}
		c := newConn(s, nc)
		if !s.track(c) {
			nc.Close()
			return ErrServerClosed
		}
		go c.serve()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown closes the listeners, sends every connection connection.close
// 320 CONNECTION_FORCED and waits for them to end, or for ctx; connections
// still open when ctx ends are closed abruptly and ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.shutdown)
		s.stopAlarms()
	}
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.forceClose("broker forced connection closure with reason 'shutdown'")
	}
	for _, c := range conns {
		select {
		case <-c.done:
		case <-ctx.Done():
			for _, c := range conns {
				c.nc.Close()
			}
			return ctx.Err()
		}
	}
	return nil
}

// alarmChanged is the broker's alarm watcher: while a resource alarm
// (core.Broker.Block) is in effect, readers stop at the next publish
// (conn.waitUnblocked), and the clients that announced the
// connection.blocked capability are told, as RabbitMQ tells them.
// Connections that only consume keep working.
func (s *Server) alarmChanged(blocked bool, reason string) {
	s.mu.Lock()
	conns := s.connList()
	s.mu.Unlock()
	for _, c := range conns {
		if !c.open.Load() {
			continue // told after its handshake (conn.serve)
		}
		if blocked {
			c.notifyBlocked(reason)
		} else {
			c.notifyUnblocked()
		}
	}
}

// connList returns the tracked connections; s.mu is held.
func (s *Server) connList() []*conn {
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}
