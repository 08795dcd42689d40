package interop_test

// Helpers for the MQTT interop tests beyond mqtt/mqtttest's clients: AMQP
// header values, a WebSocket net.Conn for paho.golang, and a raw MQTT codec
// just big enough for the bad-input tests.

import (
	"bufio"
	"bytes"
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

// ---- raw MQTT, for bad input ----

func mqttVarint(n int) []byte {
	var b []byte
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

// mqttStr is a two-byte length and the bytes of s, valid UTF-8 or not.
func mqttStr(s string) []byte {
	return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...)
}

// mqttPkt is a packet with first byte first and the parts as its body.
func mqttPkt(first byte, parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	return append(append([]byte{first}, mqttVarint(len(body))...), body...)
}

// rawConnectPacket is a CONNECT of protocol level version (4: 3.1.1, 5)
// with clean start, keepalive 60 s and guest/guest.
func rawConnectPacket(version byte, clientID string) []byte {
	vh := append(mqttStr("MQTT"), version, 0xC2, 0, 60)
	if version == 5 {
		vh = append(vh, 0) // no properties
	}
	return mqttPkt(0x10, vh, mqttStr(clientID), mqttStr("guest"), mqttStr("guest"))
}

// rawConnect opens a TCP connection, sends CONNECT and checks that the
// CONNACK accepts it.
func rawConnect(t testing.TB, addr string, version byte, clientID string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, mqtttest.Wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write(rawConnectPacket(version, clientID)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(mqtttest.Wait))
	r := bufio.NewReader(conn)
	first, body, err := readMQTTPacket(r)
	if err != nil {
		t.Fatalf("raw CONNECT (level %d): no CONNACK: %v", version, err)
	}
	if first != 0x20 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("raw CONNECT (level %d): got packet %#x % x, want a successful CONNACK", version, first, body)
	}
	conn.SetReadDeadline(time.Time{})
	return conn, r
}

// readMQTTPacket reads one packet: its first byte and its body.
func readMQTTPacket(r *bufio.Reader) (byte, []byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(c&0x7f) * mul
		mul *= 128
		if c&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("remaining length over four bytes")
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return first, body, err
}
