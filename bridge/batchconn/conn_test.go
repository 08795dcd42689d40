package batchconn

import (
	"io"
	"net"
	"testing"
)

// echoPair returns a Conn to a loopback server that echoes what it reads.
func echoPair(tb testing.TB) *Conn {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	b := New(c)
	tb.Cleanup(func() { b.Close() })
	return b
}

// TestWritesArriveInOrder: many small writes, from one goroutine, arrive
// whole and in order however the writer goroutine groups them.
func TestWritesArriveInOrder(t *testing.T) {
	b := echoPair(t)
	const n = 10000
	go func() {
		for i := range n {
			if _, err := b.Write([]byte{byte(i), byte(i >> 8)}); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 2*n)
	if _, err := io.ReadFull(b, buf); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if buf[2*i] != byte(i) || buf[2*i+1] != byte(i>>8) {
			t.Fatalf("write %d arrived as %v", i, buf[2*i:2*i+2])
		}
	}
}

// BenchmarkLoneWrite is the round trip of one small write and its echo:
// the latency the hand-off to the writer goroutine adds to a lone packet
// (a PINGREQ, a publish on an idle link).
func BenchmarkLoneWrite(b *testing.B) {
	c := echoPair(b)
	p := []byte{1}
	for b.Loop() {
		if _, err := c.Write(p); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoneWriteRaw is BenchmarkLoneWrite on the bare connection.
func BenchmarkLoneWriteRaw(b *testing.B) {
	c := echoPair(b)
	p := []byte{1}
	for b.Loop() {
		if _, err := c.Conn.Write(p); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c.Conn, p); err != nil {
			b.Fatal(err)
		}
	}
}
