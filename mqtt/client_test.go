package mqtt

import (
	"bufio"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestPartialDirectWriteHoldsTurn: when the delivering goroutine's direct
// write gets only part of a PUBLISH into the socket, no other packet (here
// a PINGRESP written meanwhile by the reader) may go out before the rest.
func TestPartialDirectWriteHoldsTurn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Small buffers: the socket takes only part of the PUBLISH at once.
	conn.(*net.TCPConn).SetWriteBuffer(4096)

	c := &client{srv: &Server{}, conn: conn, version: 4}
	c.raw, _ = conn.(syscall.Conn).SyscallConn()
	s := &session{cl: c, version: 4, connacked: true}
	c.sess = s

	payload := make([]byte, 4<<20)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "t", Payload: payload}
	pinged := make(chan error, 1)
	s.mu.Lock() // as core's Deliver holds it
	if err := s.appendLocked(&pk); err != nil {
		t.Fatal(err)
	}
	if !s.writing {
		t.Fatal("the socket took 4 MiB at once; the test needs a partial write")
	}
	go func() {
		pinged <- c.writePacket(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}})
	}()
	// Give the PINGRESP every chance to overtake while Deliver holds s.mu.
	select {
	case err := <-pinged:
		s.mu.Unlock()
		t.Fatalf("PINGRESP written (err %v) while the PUBLISH was half out", err)
	case <-time.After(100 * time.Millisecond):
	}
	s.mu.Unlock()

	peer.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(peer)
	b, _ := r.ReadByte()
	n, _, err := packets.DecodeLength(r)
	if err != nil || b>>4 != packets.Publish || n != 3+len(payload) {
		t.Fatalf("first packet %#x of %d bytes (%v), want the PUBLISH", b, n, err)
	}
	if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 2)
	if _, err := io.ReadFull(r, resp); err != nil || resp[0] != 0xD0 {
		t.Fatalf("after the PUBLISH: %x %v, want PINGRESP", resp, err)
	}
	if err := <-pinged; err != nil {
		t.Fatal(err)
	}
}
