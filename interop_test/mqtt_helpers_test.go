package interop_test

// Helpers for the MQTT interop tests beyond mqtt/mqtttest's clients: AMQP
// header values and a WebSocket net.Conn for paho.golang.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// ---- AMQP side ----

// headerInt returns an integer AMQP table value of any width.
func headerInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int8:
		return int64(n), true
	case uint8:
		return int64(n), true
	case int16:
		return int64(n), true
	case uint16:
		return int64(n), true
	case int32:
		return int64(n), true
	case uint32:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	}
	return 0, false
}

// headerBytes returns a string or byte-array AMQP table value as bytes.
func headerBytes(v any) ([]byte, bool) {
	switch s := v.(type) {
	case string:
		return []byte(s), true
	case []byte:
		return s, true
	}
	return nil, false
}

// ---- MQTT over WebSocket for paho.golang ----

// wsConn is a net.Conn over a WebSocket, as MQTT over WebSocket frames it
// [MQTT-6.0.0-1]: binary messages, with packets free to span or share
// messages [MQTT-6.0.0-2]. paho.golang locks it (sync.Locker) around each
// packet it writes, and reads from one goroutine.
type wsConn struct {
	*websocket.Conn
	sync.Mutex
	r io.Reader
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, fmt.Errorf("websocket message type %d, want binary [MQTT-6.0.0-1]", typ)
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// dialWS opens ws://addr/mqtt with subprotocol "mqtt" and checks that the
// server selected it [MQTT-6.0.0-3].
func dialWS(t testing.TB, addr string) net.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: mqtttest.Wait}
	ws, resp, err := d.Dial("ws://"+addr+"/mqtt", nil)
	if err != nil {
		t.Fatalf("websocket dial ws://%s/mqtt: %v", addr, err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "mqtt" {
		ws.Close()
		t.Fatalf("websocket subprotocol %q, want \"mqtt\" [MQTT-6.0.0-3]", got)
	}
	return &wsConn{Conn: ws}
}
