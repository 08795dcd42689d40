package core

import (
	"context"
	"testing"
)

// TestConnectionRegistry: connections are listed by name from Open to
// Close, CloseConnection reaches the protocol's callback with the reason,
// and channels are counted.
func TestConnectionRegistry(t *testing.T) {
	b := NewBroker(Options{})
	defer b.Close()
	p, err := NewAuth(DefaultUsers()).Login(context.Background(), LoginRequest{Username: "guest", Password: "guest", Loopback: true})
	must(t, err)
	var reasons []string
	a, err := b.Open(context.Background(), p, "/", ConnInfo{
		Protocol: ProtocolAMQP091, Peer: "127.0.0.1:50000", Local: "127.0.0.1:5672",
		Close:        func(r string) { reasons = append(reasons, r) },
		ListChannels: func() []ChannelInfo { return []ChannelInfo{{Number: 2}, {Number: 1}} },
	})
	must(t, err)
	must(t, a.OpenChannel())
	const name = "127.0.0.1:50000 -> 127.0.0.1:5672"
	conns := b.Connections()
	if len(conns) != 1 || conns[0].Name != name || conns[0].User != "guest" || conns[0].VHost != "/" ||
		conns[0].Channels != 1 || conns[0].ConnectedAt.IsZero() {
		t.Fatalf("Connections() = %+v", conns)
	}
	if chs := b.ListChannels(name); len(chs) != 2 || chs[0].Number != 1 {
		t.Errorf("ListChannels = %+v, want numbers 1, 2", chs)
	}
	if !b.CloseConnection(name, "maintenance") || len(reasons) != 1 || reasons[0] != "maintenance" {
		t.Errorf("CloseConnection: reasons %q", reasons)
	}
	a.Close()
	if _, ok := b.Connection(name); ok || b.ConnectionCount() != 0 || b.CloseConnection(name, "x") {
		t.Errorf("connection still registered after Close")
	}
}
