package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/ferrymq/ferrymq/bridge/batchconn"
)

// dialTCP connects to addr with TCP_NODELAY (Go's default), over TLS when
// tc is not nil, and, when batch is set, wraps the connection in a
// batchconn.Conn: the load client then costs the broker's machine as few
// syscalls as possible (above TLS, so that a batch leaves as few records).
// The latency scenarios use plain connections: there the hand-off to the
// writer goroutine would be measured too.
func dialTCP(addr string, tc *tls.Config, batch bool) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		if c, err = tlsHandshake(c, addr, tc); err != nil {
			return nil, err
		}
	}
	if batch {
		return batchconn.New(c), nil
	}
	return c, nil
}

// tlsHandshake runs a client TLS handshake on c within 10 s; c is closed
// if it fails.
func tlsHandshake(c net.Conn, addr string, tc *tls.Config) (*tls.Conn, error) {
	if tc.ServerName == "" && !tc.InsecureSkipVerify {
		tc = tc.Clone()
		tc.ServerName, _, _ = net.SplitHostPort(addr)
	}
	conn := tls.Client(c, tc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	return conn, nil
}
