// Package mgmt is ferrymq's operations HTTP listener: RabbitMQ's
// management API (same paths, JSON field names, status codes and error
// bodies, so rabbitmqadmin and client libraries' tests work unchanged),
// with basic auth by ferrymq's users and RabbitMQ's tag rules. Other
// packages mount their handlers on it (Prometheus metrics at /metrics,
// the web console at /).
//
// Routes are listed in routes.go, one line each; a handler is a
// HandlerFunc that gets the authenticated user and the path's variables.
package mgmt

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt"
)

// Options configure a Server.
type Options struct {
	Broker *core.Broker
	// Auth authenticates basic-auth credentials (the same chain as AMQP
	// and MQTT logins).
	Auth *core.Auth
	// Users is the internal user database, for /api/users and
	// /api/permissions; nil: those answer 404.
	Users  *core.Users
	Logger *slog.Logger
	// Node is this broker's node name, Version its version, for
	// /api/overview and /api/nodes.
	Node    string
	Version string
	// MQTT and Bridges serve /api/mqtt/... and /api/bridges; nil: no
	// MQTT listener (404), no bridges (an empty list).
	MQTT    *mqtt.Server
	Bridges *bridge.Manager
	// FDTotal is the process's open-file limit and SocketsTotal the
	// client connections it leaves room for, /api/nodes' fd_total and
	// sockets_total as RabbitMQ's; 0: unknown (left out).
	FDTotal, SocketsTotal int
}

// listener is one bound protocol listener, for /api/overview.
type listener struct {
	Protocol string
	Addr     net.Addr
}

// Server serves the operations API. Make it with New, add routes and
// handlers before Serve.
type Server struct {
	opts      Options
	log       *slog.Logger
	mux       *http.ServeMux
	api       router
	started   time.Time
	httpSrv   *http.Server
	rates     rateState
	stop      chan struct{} // closed by Shutdown: the rate sampler ends
	stopOnce  sync.Once
	startOnce sync.Once

	lnMu      sync.Mutex
	listeners []listener // guarded by lnMu
}

// AddListener reports a bound protocol listener ("amqp", "mqtt",
// "http", ...) for /api/overview's listeners.
func (s *Server) AddListener(protocol string, addr net.Addr) {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	s.listeners = append(s.listeners, listener{protocol, addr})
}

// New returns a server with RabbitMQ's management API routes (routes.go)
// mounted under /api/.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger, mux: http.NewServeMux(), started: time.Now(), stop: make(chan struct{})}
	s.routes()
	s.mux.Handle("/api/", http.HandlerFunc(s.serveAPI))
	s.httpSrv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s
}

// Handle mounts h at pattern (http.ServeMux syntax) beside the API, with
// no authentication: /metrics for Prometheus, / for the web console
// (whose pages call the API with basic auth). Call it before Serve.
// Patterns under /api/ belong to Route.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Route adds an API route: method ("GET", "PUT", "POST", "DELETE") and a
// pattern under /api/ whose {name} segments are variables (each one path
// segment, percent-decoded: vhost "/" is %2F), for users with at least
// the tag level need. A more specific pattern (fewer variables at the
// first difference) wins over a less specific one.
func (s *Server) Route(method, pattern string, need Level, h HandlerFunc) {
	s.api.add(method, pattern, need, h)
}

// Handler returns the server's whole handler (API and mounted handlers),
// for tests that serve it themselves.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves HTTP on ln until Shutdown; it returns http.ErrServerClosed
// after Shutdown. It may be called for several listeners (HTTP and HTTPS).
func (s *Server) Serve(ln net.Listener) error {
	// Rates are sampled only while something serves them.
	s.startOnce.Do(func() { go s.sampleLoop(s.stop) })
	return s.httpSrv.Serve(ln)
}

// Shutdown stops the listeners and waits for requests in progress, until
// ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	err := s.httpSrv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.httpSrv.Close()
	}
	return err
}
