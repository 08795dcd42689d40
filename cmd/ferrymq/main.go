// Command ferrymq runs the ferrymq broker: an AMQP 0-9-1 server and an MQTT
// 3.1.1/5 server (TCP and WebSocket) over one shared core.
//
// main only wires config → core → listeners → signals. On SIGTERM or SIGINT
// it shuts down in reverse order under a deadline: the AMQP server first
// (which sends connection.close 320 CONNECTION_FORCED to every client), then
// the broker.
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
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/bridge"
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
func run(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := loadConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ferrymq: %v\n", err)
		return exitUsage
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.SlogLevel()}))

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		logger.Error("cannot create data directory", "dir", cfg.DataDir, "err", err)
		return exitFailure
	}
	// The broker is made after the store, but the store's error hook must
	// reach it: a failing disk (or one under --disk-free-limit) raises the
	// disk alarm, which blocks AMQP and MQTT publishers until writes
	// succeed again.
	var alarms atomic.Pointer[core.Broker]
	store, err := persistence.Open(cfg.DataDir, persistence.Options{
		Logger:        logger,
		DiskFreeLimit: cfg.DiskFreeLimit,
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
		logger.Error("cannot open data directory", "dir", cfg.DataDir, "err", err)
		return exitFailure
	}
	defer func() {
		if err := store.Close(); err != nil {
			logger.Error("closing the store", "dir", cfg.DataDir, "err", err)
		}
	}()

	users, err := buildUsers(&cfg)
	if err != nil {
		logger.Error("bad users", "err", err)
		return exitFailure
	}
	auth := core.NewAuth(users)
	broker := core.NewBroker(core.Options{Logger: logger, Store: store, MemoryBudget: cfg.CoreMemoryBudget(), MaxConnections: cfg.MaxConnections})
	alarms.Store(broker)
	addVHosts(broker, cfg.VHosts)
	start := time.Now()
	if err := broker.Recover(store); err != nil {
		logger.Error("cannot recover stored state", "dir", cfg.DataDir, "err", err)
		broker.Close()
		return exitFailure
	}
	logger.Info("recovered stored state", "dir", cfg.DataDir, "took", time.Since(start).Round(time.Millisecond))
	srv := amqp.NewServer(broker, amqp.Config{
		Auth:              auth,
		LoginFailureDelay: cfg.loginFailureDelay(),
		FrameMax:          cfg.FrameMax,
		ChannelMax:        cfg.ChannelMax,
		Heartbeat:         cfg.HeartbeatDuration(),
		MaxMessageSize:    cfg.MaxMessageSize,
		Logger:            logger,
	})

	// Bridges before listeners: their queues must be bound before the
	// first publish can arrive, or it would be routed nowhere.
	node, err := nodeName(cfg)
	if err != nil {
		logger.Error("cannot name this node", "dir", cfg.DataDir, "err", err)
		broker.Close()
		return exitFailure
	}
	bridges, err := bridge.Start(broker, cfg.Bridges, bridge.Options{Node: node, Logger: logger})
	if err != nil {
		logger.Error("cannot start bridges", "err", err)
		broker.Close()
		return exitFailure
	}
	if len(cfg.Bridges) > 0 {
		logger.Info("bridges started", "node", node, "links", len(cfg.Bridges))
	}

	ln, err := net.Listen("tcp", cfg.AMQPListen)
	if err != nil {
		logger.Error("cannot listen", "proto", "amqp", "addr", cfg.AMQPListen, "err", err)
		bridges.Close()
		broker.Close()
		return exitFailure
	}
	logger.Info("listener ready", "proto", "amqp", "addr", ln.Addr().String())

	mq, err := mqtt.NewServer(broker, mqtt.Config{Auth: auth, LoginFailureDelay: cfg.loginFailureDelay(), Retained: store, Logger: logger})
	if err != nil {
		logger.Error("cannot start MQTT", "err", err)
		bridges.Close()
		ln.Close()
		broker.Close()
		return exitFailure
	}
	for _, l := range []struct {
		proto, addr string
		serve       func(net.Listener) error
	}{
		{"mqtt", cfg.MQTTListen, mq.Serve},
		{"mqtt-ws", cfg.MQTTWSListen, func(ln net.Listener) error { return mq.ServeWebSocket(ln, "/mqtt") }},
	} {
		mln, err := net.Listen("tcp", l.addr)
		if err == nil {
			err = l.serve(mln)
		}
		if err != nil {
			logger.Error("cannot listen", "proto", l.proto, "addr", l.addr, "err", err)
			mq.Close()
			bridges.Close()
			ln.Close()
			broker.Close()
			return exitFailure
		}
		logger.Info("listener ready", "proto", l.proto, "addr", mln.Addr().String())
	}

	if cfg.DebugListen != "" {
		dln, err := net.Listen("tcp", cfg.DebugListen)
		if err != nil {
			logger.Error("cannot listen", "proto", "debug", "addr", cfg.DebugListen, "err", err)
			mq.Close()
			bridges.Close()
			ln.Close()
			broker.Close()
			return exitFailure
		}
		defer dln.Close()
		go http.Serve(dln, debugHandler())
		logger.Info("listener ready", "proto", "debug", "addr", dln.Addr().String())
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	code := exitOK
wait:
	for {
		select {
		case <-ctx.Done():
			logger.Info("stopping", "timeout", shutdownTimeout)
			break wait
		case err := <-serveErr:
			if errors.Is(err, amqp.ErrServerClosed) {
				// Serve returns ErrServerClosed only after Shutdown, and only
				// this function calls Shutdown; so keep waiting for the
				// signal rather than exit. A nil channel never fires again.
				serveErr = nil
				continue
			}
			logger.Error("amqp server failed", "addr", ln.Addr().String(), "err", err)
			code = exitFailure
			break wait
		}
	}

	// Bridges first: what they have not forwarded stays queued on disk.
	bridges.Close()
	// MQTT next: closing its clients sends their wills through core.
	if err := mq.Close(); err != nil {
		logger.Warn("mqtt shutdown incomplete", "err", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// The process is stopping as asked; a client that did not answer
		// connection.close in time is worth a warning, not a failed exit.
		logger.Warn("amqp shutdown incomplete", "err", err)
	}
	broker.Close()
	logger.Info("stopped")
	return code
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
