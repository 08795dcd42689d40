// Command ferrymq runs the ferrymq broker: an AMQP 0-9-1 server and an MQTT
// 3.1.1/5 server (TCP and WebSocket) over one shared core.
//
// main only wires config → core → listeners → signals. On SIGTERM or SIGINT
// it shuts down in reverse order under one deadline: bridges, the MQTT
// server (DISCONNECT 0x8B to MQTT 5 clients, wills published), the AMQP
// server (connection.close 320 CONNECTION_FORCED to every client), the
// broker, the store.
//
// Once a listener is bound, ferrymq logs one line for it on stderr, e.g.
//
//	time=... level=INFO msg="listener ready" proto=amqp addr=127.0.0.1:40123
//
// addr is the bound address, so tests that pass --amqp-listen 127.0.0.1:0
// read the port from this line.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/cmd/ferrymq/console"
	"github.com/ferrymq/ferrymq/cmd/ferrymq/metrics"
	"github.com/ferrymq/ferrymq/cmd/ferrymq/mgmt"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt"
	"github.com/ferrymq/ferrymq/persistence"
)

// shutdownTimeout bounds how long clients get to answer connection.close
// before the process exits anyway.
const shutdownTimeout = 10 * time.Second

// Exit codes: 2 for bad flags or config (as the flag package does), 1 for a
// failure at run time.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() {
		// Restore default signal handling once the first signal arrives, so
		// a second Ctrl-C kills a shutdown that hangs.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// run starts the broker with the settings in args, serves until ctx is done,
// then shuts down. It logs to stderr and returns the process exit code.
//
// Each part pushes its own shutdown onto a stack as soon as it exists, and
// the stack unwinds in reverse whether the start fails half-way or the
// broker stops on a signal: listeners and bridges first, then the broker,
// the store last.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := loadConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if errors.Is(err, errVersion) {
		fmt.Fprintln(os.Stdout, versionLine())
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ferrymq: %v\n", err)
		return exitUsage
	}
	logger := newLogger(cfg, stderr)
	logger.Info("ferrymq starting", "version", buildVersion(), "go", runtime.Version(), "pid", os.Getpid(), "data_dir", cfg.DataDir)
	var cleanup cleanupStack
	defer cleanup.unwind()
	return serve(ctx, cfg, logger, &cleanup)
}

// serve builds the broker and its listeners from cfg and serves until ctx
// is done or a listener fails; it returns the exit code. What it started
// is on cleanup, for run to stop.
func serve(ctx context.Context, cfg Config, logger *slog.Logger, cleanup *cleanupStack) int {
	fail := func(msg string, args ...any) int {
		logger.Error(msg, args...)
		return exitFailure
	}
	// At the bottom of the stack: once everything below has stopped.
	serving := false
	cleanup.push(func(context.Context) {
		if serving {
			logger.Info("stopped")
		}
	})
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fail("cannot create data directory", "dir", cfg.DataDir, "err", err)
	}
	// The broker is made after the store, but the store's error hook must
	// reach it: a failing disk (or one under --disk-free-limit) raises the
	// disk alarm, which blocks AMQP and MQTT publishers until writes
	// succeed again.
	var alarms atomic.Pointer[core.Broker]
	store, err := persistence.Open(cfg.DataDir, persistence.Options{
		Logger:        logger,
		DiskFreeLimit: cfg.DiskFreeLimit,
		Repair:        cfg.Repair,
		OnError: func(err error) {
			b := alarms.Load()
			if b == nil {
				return
			}
			if err != nil {
				logger.Error("store write failed: blocking publishers", "err", err)
				b.Block(core.AlarmDisk, "ferrymq store: "+err.Error())
				return
			}
			logger.Info("store writes succeed again: unblocking publishers")
			b.Unblock(core.AlarmDisk)
		},
	})
	if err != nil {
		return fail("cannot open data directory", "dir", cfg.DataDir, "err", err)
	}
	if r := store.Repair(); r.Lost() {
		lost := 0
		for _, n := range r.Messages {
			lost += n
		}
		logger.Warn("started with --repair on a damaged data directory: data lost",
			"messages", lost, "queues", len(r.Messages), "retained", r.Retained, "files", strings.Join(r.Files, ","))
	}
	cleanup.push(func(context.Context) {
		if err := store.Close(); err != nil {
			logger.Error("closing the store", "dir", cfg.DataDir, "err", err)
		}
	})

	users, err := buildUsers(&cfg)
	if err != nil {
		return fail("bad users", "err", err)
	}
	auth := buildAuth(&cfg, users)
	maxConns, sockets, nofile := nodeConnectionLimit(cfg.MaxConnections, logger)
	broker := core.NewBroker(core.Options{Logger: logger, Store: store, MemoryBudget: cfg.CoreMemoryBudget(), MaxConnections: maxConns})
	alarms.Store(broker)
	cleanup.push(func(context.Context) { broker.Close() })
	stopMemory := startMemoryLimit(broker, &cfg, logger)
	cleanup.push(func(context.Context) { stopMemory() })
	addVHosts(broker, cfg.VHosts)
	start := time.Now()
	if err := broker.Recover(store); err != nil {
		return fail("cannot recover stored state", "dir", cfg.DataDir, "err", err)
	}
	logger.Info("recovered stored state", "dir", cfg.DataDir, "took", time.Since(start).Round(time.Millisecond))
	// Users, vhosts and permissions changed through the API, saved in the
	// data directory (accessdb.go); the configuration wins for its users.
	adb := newAccessDB(cfg.DataDir, mgmt.DefinitionsSource{Broker: broker, Users: users, Version: buildVersion()}, &cfg, logger)
	if err := adb.load(); err != nil {
		return fail("cannot load the access database", "err", err)
	}
	adbCtx, stopADB := context.WithCancel(context.Background())
	adbDone := make(chan struct{})
	go func() {
		defer close(adbDone)
		adb.run(adbCtx)
	}()
	cleanup.push(func(context.Context) {
		stopADB()
		<-adbDone
	})
	var stls *serverTLS // nil: no TLS listener
	if cfg.tlsWanted() {
		if stls, err = newServerTLS(cfg.TLS, logger); err != nil {
			// Loaded once already by loadConfig: the files changed since.
			return fail("cannot load TLS files", "err", err)
		}
	}
	reloadOnSIGHUP(ctx, stls, logger)
	certUser, _ := cfg.TLS.certUser() // validated by loadConfig
	srv := amqp.NewServer(broker, amqp.Config{
		Auth:              auth,
		LoginFailureDelay: cfg.loginFailureDelay(),
		FrameMax:          cfg.FrameMax,
		ChannelMax:        cfg.ChannelMax,
		Heartbeat:         cfg.HeartbeatDuration(),
		MaxMessageSize:    cfg.MaxMessageSize,
		Logger:            logger,
		CertUser:          certUser,
	})
	cleanup.push(func(ctx context.Context) {
		if err := srv.Shutdown(ctx); err != nil {
			// The process is stopping as asked; a client that did not
			// answer connection.close in time is worth a warning, not a
			// failed exit.
			logger.Warn("amqp shutdown incomplete", "err", err)
		}
	})

	// Bridges before listeners: their queues must be bound before the
	// first publish can arrive, or it would be routed nowhere.
	node, err := nodeName(cfg)
	if err != nil {
		return fail("cannot name this node", "dir", cfg.DataDir, "err", err)
	}
	bridges, err := bridge.Start(broker, cfg.Bridges, bridge.Options{Node: node, Logger: logger})
	if err != nil {
		return fail("cannot start bridges", "err", err)
	}
	cleanup.push(func(context.Context) { bridges.Close() })
	if len(cfg.Bridges) > 0 {
		logger.Info("bridges started", "node", node, "links", len(cfg.Bridges))
	}

	mq, err := mqtt.NewServer(broker, mqtt.Config{Auth: auth, LoginFailureDelay: cfg.loginFailureDelay(), Retained: store, Logger: logger,
		UseIdentityAsUsername: cfg.TLS.UseIdentityAsUsername, CertUser: certUser, AllowedOrigins: cfg.WSAllowedOrigins,
		MaxKeepalive: uint16(cfg.MaxKeepalive), SysInterval: time.Duration(cfg.SysInterval) * time.Second, Version: buildVersion(), MaxQueuedMessages: cfg.mqttMaxQueued(), MaxQueuedBytes: cfg.MaxQueuedBytes,
		Prefetch: uint16(cfg.MaxInflightMessages)})
	if err != nil {
		return fail("cannot start MQTT", "err", err)
	}
	cleanup.push(func(ctx context.Context) {
		// Bridges first (Close may be called again): what they have not
		// forwarded stays queued on disk. MQTT next: closing its clients
		// sends their wills through core.
		bridges.Close()
		if err := mq.Shutdown(ctx); err != nil {
			logger.Warn("mqtt shutdown incomplete", "err", err)
		}
	})

	// The management API: last to start, first to stop.
	mg := mgmt.New(mgmt.Options{Broker: broker, Auth: auth, Users: users, Logger: logger, Node: node,
		Version: buildVersion(), MQTT: mq, Bridges: bridges, FDTotal: int(min(nofile, math.MaxInt32)), SocketsTotal: sockets})
	// Prometheus metrics on the same listener, without authentication, as
	// RabbitMQ's prometheus plugin serves them (Prometheus scrape configs
	// carry no credentials): counts and names, no message content.
	exp := metrics.New(metrics.Sources{Broker: broker, Store: store, Bridges: bridges.Status, MQTT: mq.Stats, Version: buildVersion()})
	mg.Handle(metrics.Path, exp)
	mg.Handle(metrics.PerObjectPath, exp)
	// The web console at /, below /api/: the page itself is public, and
	// its script calls the API with the operator's credentials.
	mg.Handle("/", console.Handler())
	cleanup.push(func(ctx context.Context) {
		if err := mg.Shutdown(ctx); err != nil {
			logger.Warn("http shutdown incomplete", "err", err)
		}
	})

	// Every server closes its listeners in Shutdown; the debug one is
	// closed on its own.
	ws := func(ln net.Listener) error { return mq.ServeWebSocket(ln, "/mqtt") }
	debug := func(ln net.Listener) error { return http.Serve(ln, debugHandler()) }
	// Every listener is off when its address is "": an edge gateway may
	// want MQTT alone, or no WebSocket.
	listeners := []struct {
		proto, addr string
		tls         bool
		serve       func(net.Listener) error
	}{
		{"amqp", cfg.AMQPListen, false, srv.Serve},
		{"amqps", cfg.AMQPSListen, true, srv.Serve},
		{"mqtt", cfg.MQTTListen, false, mq.Serve},
		{"mqtt-ws", cfg.MQTTWSListen, false, ws},
		{"mqtts", cfg.MQTTSListen, true, mq.Serve},
		{"mqtt-wss", cfg.MQTTWSSListen, true, ws},
		{"debug", cfg.DebugListen, false, debug},
		{"http", cfg.HTTPListen, false, mg.Serve},
		{"https", cfg.HTTPSListen, true, mg.Serve},
	}
	serveErr := make(chan error, len(listeners))
	for _, l := range listeners {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return fail("cannot listen", "proto", l.proto, "addr", l.addr, "err", err)
		}
		logger.Info("listener ready", "proto", l.proto, "addr", ln.Addr().String())
		mg.AddListener(l.proto, ln.Addr())
		ln = &retryListener{Listener: ln, proto: l.proto, log: logger}
		if l.proto == "debug" {
			cleanup.push(func(context.Context) { ln.Close() })
		}
		if l.tls {
			ln = tls.NewListener(ln, stls.listenerConfig())
		}
		go func() {
			err := l.serve(ln)
			if !errors.Is(err, amqp.ErrServerClosed) && !errors.Is(err, mqtt.ErrServerClosed) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("%s on %s: %w", l.proto, ln.Addr(), err)
			}
		}()
	}
	serving = true
	select {
	case <-ctx.Done():
		logger.Info("stopping", "timeout", shutdownTimeout)
		return exitOK
	case err := <-serveErr:
		// Serve returns ErrServerClosed only after Shutdown, which only the
		// cleanup stack calls: anything else is a failure.
		return fail("server failed", "err", err)
	}
}

// newLogger logs to w at cfg's level, as key=value text (slog's
// TextHandler, what tests and the interop harness parse) or as one JSON
// object a line (--log-format json, for log collectors).
func newLogger(cfg Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.SlogLevel()}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// nodeName is cfg.NodeName, or else the name generated at the first
// start and kept in the data directory, so that it stays the same across
// restarts (bridged brokers recognise their own messages by it).
func nodeName(cfg Config) (string, error) {
	if cfg.NodeName != "" {
		return cfg.NodeName, nil
	}
	path := filepath.Join(cfg.DataDir, "node-name")
	if b, err := os.ReadFile(path); err == nil {
		if n := strings.TrimSpace(string(b)); n != "" {
			return n, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	var id [6]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	host, _ := os.Hostname()
	n := strings.ReplaceAll(host, ",", "") + "-" + hex.EncodeToString(id[:])
	return n, os.WriteFile(path, []byte(n+"\n"), 0o640)
}

// cleanupStack holds what run must undo once serving ends.
type cleanupStack struct{ fns []func(ctx context.Context) }

// push adds fn, to run before everything pushed earlier.
func (c *cleanupStack) push(fn func(ctx context.Context)) { c.fns = append(c.fns, fn) }

// unwind runs the pushed functions, last pushed first, with one shutdown
// deadline for them all.
func (c *cleanupStack) unwind() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i](ctx)
	}
	c.fns = nil
}

// debugHandler serves Go's profiles, for measuring the hot paths and
// memory of a running broker (go tool pprof http://addr/debug/pprof/heap).
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
