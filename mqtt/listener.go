package mqtt

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// listener serves mochi connections from a net.Listener the caller bound,
// so that a test can use port 0 and read the real address from it (mochi's
// own listeners bind late or not at all for WebSocket).
type listener struct {
	id, proto string
	ln        net.Listener
	log       *slog.Logger
	wg        sync.WaitGroup // connections being served
	accepting sync.WaitGroup // the accept loop: no wg.Add after it ends
}

func (l *listener) ID() string              { return l.id }
func (l *listener) Address() string         { return l.ln.Addr().String() }
func (l *listener) Protocol() string        { return l.proto }
func (l *listener) Init(*slog.Logger) error { return nil }
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.ln.Close()
	l.accepting.Wait()
	closeClients(l.id)
	l.wg.Wait()
}

// Serve accepts until the listener is closed. Each connection runs on its
// own goroutine, where a panic in mochi's packet decoding is contained.
func (l *listener) Serve(establish listeners.EstablishFn) {
	l.accepting.Add(1)
	defer l.accepting.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.log.Warn("mqtt: accept failed", "listener", l.id, "err", err)
			}
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			serveConn(l.log, l.id, &conn{Conn: c}, establish)
		}()
	}
}

func serveConn(log *slog.Logger, id string, conn net.Conn, establish listeners.EstablishFn) {
	defer func() {
		if err := recovered(recover()); err != nil {
			log.Warn("mqtt: connection dropped", "listener", id, "peer", conn.RemoteAddr().String(), "err", err)
			conn.Close()
		}
	}()
	if err := establish(id, conn); err != nil && !errors.Is(err, io.EOF) {
		log.Debug("mqtt: connection ended", "peer", conn.RemoteAddr().String(), "err", err)
	}
}

// wsListener serves MQTT over WebSocket (binary messages, subprotocol
// "mqtt" or "mqttv3.1") at one path.
type wsListener struct {
	listener
	path   string
	server *http.Server
}

func newWSListener(ln net.Listener, path string, log *slog.Logger) *wsListener {
	l := &wsListener{listener: listener{id: "ws-" + ln.Addr().String(), proto: "ws", ln: ln, log: log}, path: path}
	l.server = &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 10 * time.Second}
	return l
}

// Serve runs the HTTP server; WebSocket connections are closed through
// mochi (closeClients), as http.Server does not track hijacked ones.
func (l *wsListener) Serve(establish listeners.EstablishFn) {
	up := websocket.Upgrader{
		Subprotocols: []string{"mqtt", "mqttv3.1"},
		// Browsers send an Origin; MQTT over WebSocket is not a cookie
		// session, so cross-origin clients are accepted as brokers do.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	mux := http.NewServeMux()
	mux.HandleFunc(l.path, func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		serveConn(l.log, l.id, &conn{Conn: &wsConn{Conn: c.NetConn(), c: c}}, establish)
	})
	l.server.Handler = mux
	if err := l.server.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Warn("mqtt: websocket listener failed", "listener", l.id, "err", err)
	}
}

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.server.Shutdown(ctx)
	closeClients(l.id)
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

// conn wraps each client connection so that an MQTT 5 client gets a
// DISCONNECT with a reason code (0x81 malformed packet, 0x95 packet too
// large, ...) before the socket closes, which mochi does not send when its
// decoder fails: mochi closes the socket first and reports the error
// after (OnDisconnect). So Close only ends a blocked read, and finish,
// called from OnDisconnect with the error, writes the DISCONNECT and
// closes; a timer closes anyway if finish never comes.
type conn struct {
	net.Conn
	frames         framer // the read side's packet boundaries
	mu             sync.Mutex
	v5             bool // the CONNECT said MQTT 5; set before CONNACK
	closing        bool
	closed         bool
	sentDisconnect bool // mochi wrote one itself
}

// finishTimeout bounds how long a closed connection waits for finish.
const finishTimeout = time.Second

// Read passes bytes on to mochi, failing the stream at a remaining length
// longer than four bytes, which mochi's decoder reads as a huge length
// ("packet too large") instead of a malformed packet [MQTT-1.5.5].
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if ferr := c.frames.scan(p[:n]); ferr != nil {
		return 0, ferr
	}
	return n, err
}

// framer follows packet boundaries in the byte stream: a type byte, a
// variable byte integer length, that many bytes. Only the read goroutine
// uses it.
type framer struct {
	inLength  bool
	lenBytes  int
	length    int
	shift     uint
	remaining int
}

func (f *framer) scan(p []byte) error {
	for i := 0; i < len(p); {
		switch {
		case f.remaining > 0:
			n := min(f.remaining, len(p)-i)
			i += n
			f.remaining -= n
		case !f.inLength: // the fixed header's first byte
			f.inLength, f.lenBytes, f.length, f.shift = true, 0, 0, 0
			i++
		default:
			b := p[i]
			i++
			f.lenBytes++
			f.length |= int(b&0x7F) << f.shift
			f.shift += 7
			if b&0x80 == 0 {
				f.inLength, f.remaining = false, f.length
			} else if f.lenBytes == 4 {
				return packets.ErrMalformedVariableByteInteger
			}
		}
	}
	return nil
}

// Write passes packets on, except a DISCONNECT to an MQTT 3.1.1 client,
// which has no server DISCONNECT (3.14): mochi sends one on a session
// takeover whatever the version. mochi writes one packet per call; ours
// batch PUBLISH and acknowledgements only.
func (c *conn) Write(p []byte) (int, error) {
	if len(p) > 0 && p[0]&0xF0 == 0xE0 {
		c.mu.Lock()
		v5 := c.v5
		c.sentDisconnect = v5
		c.mu.Unlock()
		if !v5 {
			return len(p), nil
		}
	}
	return c.Conn.Write(p)
}

func (c *conn) setV5(v5 bool) {
	c.mu.Lock()
	c.v5 = v5
	c.mu.Unlock()
}

func (c *conn) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	direct := !c.v5 || c.sentDisconnect
	c.mu.Unlock()
	if direct {
		return c.finish(nil)
	}
	c.Conn.SetReadDeadline(time.Now())
	time.AfterFunc(finishTimeout, func() { c.finish(nil) })
	return nil
}

// finish sends an MQTT 5 client the DISCONNECT for err, if err carries a
// reason code and mochi did not send one, then closes the socket.
func (c *conn) finish(err error) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	send := c.v5 && !c.sentDisconnect
	c.mu.Unlock()
	var code packets.Code
	if send && errors.As(err, &code) && code.Code >= 0x80 {
		c.Conn.SetWriteDeadline(time.Now().Add(finishTimeout))
		// Remaining length 1: the reason code, no properties [MQTT-3.14.2].
		c.Conn.Write([]byte{0xE0, 1, reasonCode(code)})
	}
	return c.Conn.Close()
}

// reasonCode corrects the DISCONNECT reason codes mochi picks where the
// spec names a more specific one: QoS 3 in a PUBLISH is a malformed packet
// [MQTT-3.3.1-4], a wildcard in a topic name is 0x90 Topic Name invalid.
func reasonCode(c packets.Code) byte {
	switch c {
	case packets.ErrProtocolViolationQosOutOfRange:
		return packets.ErrMalformedPacket.Code
	case packets.ErrProtocolViolationSurplusWildcard:
		return packets.ErrTopicNameInvalid.Code
	}
	return c.Code
}
