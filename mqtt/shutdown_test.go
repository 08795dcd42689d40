package mqtt

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/core"
)

// TestServeUntilShutdown: Serve and ServeWebSocket block until Shutdown,
// which tells an MQTT 5 client 0x8B Server shutting down, publishes its
// will through core before returning, and makes both return
// ErrServerClosed; serving after Shutdown fails at once.
func TestServeUntilShutdown(t *testing.T) {
	b := core.NewBroker(core.Options{})
	t.Cleanup(b.Close)
	v := b.VHost("/")
	if _, err := v.DeclareQueue(core.QueueDecl{Name: "wills"}); err != nil {
		t.Fatal(err)
	}
	if err := v.BindQueue("wills", "amq.topic", "will.#", nil, 0); err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(b, Config{})
	if err != nil {
		t.Fatal(err)
	}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	tcp, ws := listen(), listen()
	served := make(chan error, 2)
	go func() { served <- s.Serve(tcp) }()
	go func() { served <- s.ServeWebSocket(ws, "/mqtt") }()

	_, _, gone := dialPaho(t, tcp.Addr().String(), &paho.Connect{
		ClientID: "dev", KeepAlive: 30, CleanStart: true,
		WillMessage: &paho.WillMessage{Topic: "will/dev", Payload: []byte("gone")},
	})
	select {
	case err := <-served:
		t.Fatalf("a Serve returned %v while serving", err)
	default:
	}

	ctx, cancel := context.WithTimeout(context.Background(), alarmWait)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d, ok := v.Queue("wills").Get(true); !ok || string(d.Msg.Body) != "gone" {
		t.Fatalf("after Shutdown the wills queue holds %v (ok %v), want the will", d.Msg, ok)
	}
	select {
	case d := <-gone:
		if d.ReasonCode != 0x8B {
			t.Errorf("DISCONNECT reason %#x, want 0x8B", d.ReasonCode)
		}
	case <-time.After(alarmWait):
		t.Error("no DISCONNECT within the wait")
	}
	for range 2 {
		select {
		case err := <-served:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(alarmWait):
			t.Fatal("a Serve did not return after Shutdown")
		}
	}
	if err := s.Serve(listen()); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown: %v, want ErrServerClosed", err)
	}
	if err := s.ServeWebSocket(listen(), "/mqtt"); !errors.Is(err, ErrServerClosed) {
		t.Errorf("ServeWebSocket after Shutdown: %v, want ErrServerClosed", err)
	}
}
