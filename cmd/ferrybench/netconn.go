package main

import (
	"net"
	"time"

	"github.com/ferrymq/ferrymq/bridge/batchconn"
)

// dialTCP connects to addr with TCP_NODELAY (Go's default) and, when batch
// is set, wraps the connection in a batchconn.Conn: the load client then
// costs the broker's machine as few syscalls as possible. The latency
// scenarios use plain connections: there the hand-off to the writer
// goroutine would be measured too.
func dialTCP(addr string, batch bool) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if batch {
		return batchconn.New(c), nil
	}
	return c, nil
}
