// Package amqp is ferrymq's AMQP 0-9-1 server: connection and channel state
// machines between the wire codec (amqp/wire) and the broker (core).
package amqp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// Config configures a Server. Zero values take the defaults in brackets.
type Config struct {
	Users            *core.Users   // [core.DefaultUsers()]
	FrameMax         uint32        // [131072]
	ChannelMax       uint16        // [2047]
	Heartbeat        time.Duration // [60s] proposed in connection.tune; 0 after tune = off
	MaxMessageSize   int           // [16 MiB] body larger -> channel error 406 PRECONDITION_FAILED as RabbitMQ
	HandshakeTimeout time.Duration // [10s] protocol header + start-ok + tune-ok + open must finish within it
	Logger           *slog.Logger  // [slog.Default()]
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("amqp: Server closed")

// Server serves AMQP 0-9-1 connections for one core.Broker.
type Server struct {
	broker *core.Broker
	cfg    Config

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	closed    bool
}

// NewServer returns a Server for b.
func NewServer(b *core.Broker, cfg Config) *Server {
	return &Server{broker: b, cfg: cfg, listeners: make(map[net.Listener]struct{})}
}

// Serve accepts connections on ln until Shutdown; it always returns a non-nil
// error, ErrServerClosed after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	return ErrServerClosed
}

// Shutdown closes the listeners and every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	return nil
}
