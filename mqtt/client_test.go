package mqtt

import (
	"bufio"
	"bytes"
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

// TestParkedClientWakes: an idle client parks (no goroutine of its own)
// and is woken by its next packet, repeatedly; a parked client whose peer
// goes away is finished, and its will goes out.
func TestParkedClientWakes(t *testing.T) {
	srv, addr := newTestServer(t, Config{})
	if srv.poller == nil {
		t.Skip("no poller on this platform: idle clients keep a goroutine")
	}

	watcher, wr := dialMQTT(t, addr, "watcher")
	defer watcher.Close()
	watcher.Write(encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "wills/#"}}}))
	watcher.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(wr, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}

	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}}
	connect.Connect.ProtocolName = []byte("MQTT")
	connect.Connect.Clean = true
	connect.Connect.ClientIdentifier = "sleeper"
	connect.Connect.WillFlag = true
	connect.Connect.WillTopic = "wills/sleeper"
	connect.Connect.WillPayload = []byte("gone")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(encode(t, connect))
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(r, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	sleeper := func() *client {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		for cl := range srv.clients {
			if cl.id == "sleeper" {
				return cl
			}
		}
		return nil
	}()
	waitParked := func() {
		t.Helper()
		deadline := time.Now().Add(mqttWait)
		for sleeper.readState.Load() != readParked {
			if time.Now().After(deadline) {
				t.Fatal("the idle client did not park")
			}
			time.Sleep(time.Millisecond)
		}
	}
	for range 3 {
		waitParked()
		c.Write([]byte{0xC0, 0}) // PINGREQ
		resp := make([]byte, 2)
		if _, err := io.ReadFull(r, resp); err != nil || resp[0] != 0xD0 {
			t.Fatalf("parked client's PINGREQ: %x %v", resp, err)
		}
	}
	waitParked()
	c.Close() // gone without DISCONNECT
	b, err := wr.ReadByte()
	if err != nil || b>>4 != packets.Publish {
		t.Fatalf("watcher: %#x %v, want the will", b, err)
	}
	n, _, _ := packets.DecodeLength(wr)
	body := make([]byte, n)
	io.ReadFull(wr, body)
	if !bytes.HasSuffix(body, []byte("gone")) {
		t.Fatalf("watcher got %q, want the will", body)
	}
}
