package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// ServeWebSocket serves MQTT over WebSocket (binary messages, subprotocol
// "mqtt" or "mqttv3.1") on ln, at path, until Shutdown. ln may be a TLS
// listener (tls.NewListener), for wss. Upgrades from browser pages of
// origins not in Config.AllowedOrigins are refused with 403. It always
// returns a non-nil error, ErrServerClosed after Shutdown.
func (s *Server) ServeWebSocket(ln net.Listener, path string) error {
	up := websocket.Upgrader{
		Subprotocols: []string{"mqtt", "mqttv3.1"},
		CheckOrigin:  s.originAllowed,
	}
	mux := http.NewServeMux()
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if cl := s.accept(&wsConn{Conn: c.NetConn(), c: c}); cl != nil {
			cl.serve()
		}
	})
	// net/http runs the TLS handshake of a wss connection within
	// ReadHeaderTimeout and reports a failed one to ErrorLog.
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: HandshakeTimeout,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	if !s.addListener(wsCloser{hs}) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.accepting.Done()
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("mqtt: websocket on %s: %w", ln.Addr(), err)
	}
	return ErrServerClosed
}

// wsCloser stops the HTTP server; the WebSocket connections it upgraded
// are closed with the other clients, as http.Server does not track
// hijacked ones.
type wsCloser struct{ hs *http.Server }

func (w wsCloser) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return w.hs.Shutdown(ctx)
}

// wsConn is a net.Conn over WebSocket binary messages: MQTT packets may
// span or share messages, so reads continue across message boundaries.
type wsConn struct {
	net.Conn
	c  *websocket.Conn
	r  io.Reader
	wm sync.Mutex
}

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errors.New("mqtt: websocket message is not binary")
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	ws.wm.Lock()
	defer ws.wm.Unlock()
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (ws *wsConn) Close() error { return ws.c.Close() }

func (ws *wsConn) SetDeadline(t time.Time) error {
	if err := ws.c.SetReadDeadline(t); err != nil {
		return err
	}
	return ws.c.SetWriteDeadline(t)
}

func (ws *wsConn) SetReadDeadline(t time.Time) error  { return ws.c.SetReadDeadline(t) }
func (ws *wsConn) SetWriteDeadline(t time.Time) error { return ws.c.SetWriteDeadline(t) }
