package mqtt

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	pahomqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
	mpackets "github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/interop_test/pki"
)

// testPKI is a CA with a server certificate and client certificates,
// good and bad, for the TLS tests.
type testPKI struct {
	ca                     *pki.CA
	server                 *pki.Leaf
	device, expired, rogue *pki.Leaf // rogue: signed by another CA
	stranger               *pki.Leaf // valid, but names no user
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := pki.NewCA("ferrymq test CA")
	must(t, err)
	other, err := pki.NewCA("another CA")
	must(t, err)
	p := &testPKI{ca: ca}
	p.server, err = ca.Issue("localhost", pki.Options{Server: true})
	must(t, err)
	p.device, err = ca.Issue("device-1", pki.Options{})
	must(t, err)
	p.expired, err = ca.Issue("device-1", pki.Options{Expired: true})
	must(t, err)
	p.rogue, err = other.Issue("device-1", pki.Options{})
	must(t, err)
	p.stranger, err = ca.Issue("stranger", pki.Options{})
	must(t, err)
	return p
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// serverTLS is what ferrymq's --tls-verify modes configure.
func (p *testPKI) serverTLS(auth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.server.TLS},
		ClientCAs:    p.ca.Pool(),
		ClientAuth:   auth,
		MinVersion:   tls.VersionTLS12,
	}
}

// clientTLS trusts the test CA and presents leaf, if not nil, whatever
// CAs the server asks for (crypto/tls would otherwise keep back a
// certificate of another CA, and the server would never see it).
func (p *testPKI) clientTLS(leaf *pki.Leaf) *tls.Config {
	c := &tls.Config{RootCAs: p.ca.Pool(), ServerName: "localhost"}
	if leaf != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &leaf.TLS, nil }
	}
	return c
}

// newTLSServer serves MQTT over TLS with cfg on a free port.
func newTLSServer(t testing.TB, cfg Config, tc *tls.Config) (*Server, string) {
	t.Helper()
	br := core.NewBroker(core.Options{})
	t.Cleanup(br.Close)
	s, err := NewServer(br, cfg)
	must(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go s.Serve(tls.NewListener(ln, tc))
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s, ln.Addr().String()
}

// TestTLSClientCertificates connects paho.mqtt.golang over TLS with each
// kind of client certificate, under both verifying modes.
func TestTLSClientCertificates(t *testing.T) {
	p := newTestPKI(t)
	tests := []struct {
		name   string
		auth   tls.ClientAuthType // peer: VerifyClientCertIfGiven; peer_required: RequireAndVerifyClientCert
		leaf   *pki.Leaf
		maxVer uint16
		ok     bool
	}{
		{"peer_required, valid certificate", tls.RequireAndVerifyClientCert, p.device, 0, true},
		{"peer_required, no certificate", tls.RequireAndVerifyClientCert, nil, 0, false},
		{"peer_required, expired certificate", tls.RequireAndVerifyClientCert, p.expired, 0, false},
		{"peer_required, certificate of another CA", tls.RequireAndVerifyClientCert, p.rogue, 0, false},
		{"peer, no certificate", tls.VerifyClientCertIfGiven, nil, 0, true},
		{"peer, expired certificate", tls.VerifyClientCertIfGiven, p.expired, 0, false},
		{"peer, certificate of another CA", tls.VerifyClientCertIfGiven, p.rogue, 0, false},
		{"none, TLS 1.1", tls.NoClientCert, nil, tls.VersionTLS11, false},
		{"none, TLS 1.0", tls.NoClientCert, nil, tls.VersionTLS10, false},
		{"none, TLS 1.2", tls.NoClientCert, nil, tls.VersionTLS12, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, addr := newTLSServer(t, Config{}, p.serverTLS(tt.auth))
			tc := p.clientTLS(tt.leaf)
			tc.MaxVersion = tt.maxVer
			if tt.maxVer != 0 && tt.maxVer < tls.VersionTLS12 {
				tc.MinVersion = tt.maxVer
			}
			o := pahomqtt.NewClientOptions().AddBroker("ssl://" + addr).SetClientID("c").
				SetTLSConfig(tc).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
			c := pahomqtt.NewClient(o)
			tok := c.Connect()
			if !tok.WaitTimeout(15 * time.Second) {
				t.Fatal("connect did not finish")
			}
			if got := tok.Error() == nil; got != tt.ok {
				t.Fatalf("connected: %v (err %v), want %v", got, tok.Error(), tt.ok)
			}
			if tt.ok {
				roundTrip(t, c, "tls/test")
				c.Disconnect(100)
			}
		})
	}
}

// roundTrip subscribes c to topic and waits for its own QoS 1 publish.
func roundTrip(t *testing.T, c pahomqtt.Client, topic string) {
	t.Helper()
	got := make(chan string, 1)
	if tok := c.Subscribe(topic, 1, func(_ pahomqtt.Client, m pahomqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := c.Publish(topic, 1, false, "over tls"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case m := <-got:
		if m != "over tls" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
}

// TestTLSIdentityAsUsername: with UseIdentityAsUsername, an MQTT 5
// client (paho.golang) with a verified certificate and no password is the
// user its CN names; one whose CN names no user is refused; a password
// still means a password login.
func TestTLSIdentityAsUsername(t *testing.T) {
	p := newTestPKI(t)
	users := core.NewUsers()
	addUser(t, users, "device-1", "device-secret")
	tests := []struct {
		name       string
		identity   bool
		leaf       *pki.Leaf
		user, pass string // pass "": no password in CONNECT
		want       byte
	}{
		{"CN names a user", true, p.device, "", "", 0},
		{"CN names a user, username ignored", true, p.device, "someone", "", 0},
		{"CN names no user", true, p.stranger, "", "", mpackets.ErrBadUsernameOrPassword.Code},
		{"password given: password login", true, p.device, "device-1", "wrong", mpackets.ErrBadUsernameOrPassword.Code},
		{"password given and right", true, p.stranger, "device-1", "device-secret", 0},
		{"option off", false, p.device, "", "", mpackets.ErrBadUsernameOrPassword.Code},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, addr := newTLSServer(t, Config{Auth: core.NewAuth(users), LoginFailureDelay: time.Millisecond, UseIdentityAsUsername: tt.identity}, p.serverTLS(tls.RequireAndVerifyClientCert))
			conn, err := tls.Dial("tcp", addr, p.clientTLS(tt.leaf))
			must(t, err)
			c := paho.NewClient(paho.ClientConfig{Conn: packets.NewThreadSafeConn(conn)})
			cp := &paho.Connect{ClientID: "dev", KeepAlive: 30, CleanStart: true}
			if tt.user != "" {
				cp.Username, cp.UsernameFlag = tt.user, true
			}
			if tt.pass != "" {
				cp.Password, cp.PasswordFlag = []byte(tt.pass), true
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ack, err := c.Connect(ctx, cp)
			if ack == nil {
				t.Fatalf("no CONNACK: %v", err)
			}
			if ack.ReasonCode != tt.want {
				t.Fatalf("CONNACK %#x (%v), want %#x", ack.ReasonCode, err, tt.want)
			}
			if err == nil {
				c.Disconnect(&paho.Disconnect{})
			}
			conn.Close()
		})
	}
}

// TestTLSIdleClientParks: an idle TLS client gives up its goroutine like a
// plaintext one, and wakes for each packet.
func TestTLSIdleClientParks(t *testing.T) {
	p := newTestPKI(t)
	srv, addr := newTLSServer(t, Config{}, p.serverTLS(tls.NoClientCert))
	if srv.poller == nil {
		t.Skip("no poller on this platform: idle clients keep a goroutine")
	}
	conn, err := tls.Dial("tcp", addr, p.clientTLS(nil))
	must(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	connect := mpackets.Packet{FixedHeader: mpackets.FixedHeader{Type: mpackets.Connect}}
	connect.Connect.ProtocolName = []byte("MQTT")
	connect.Connect.Clean = true
	connect.Connect.Keepalive = 600
	connect.Connect.ClientIdentifier = "sleeper"
	_, err = conn.Write(encode(t, connect))
	must(t, err)
	r := bufio.NewReader(conn)
	_, err = io.ReadFull(r, make([]byte, 4))
	must(t, err)
	var cl *client
	srv.mu.Lock()
	for c := range srv.clients {
		cl = c
	}
	srv.mu.Unlock()
	for i := range 3 {
		deadline := time.Now().Add(10 * time.Second)
		for cl.readState.Load() != readParked {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the idle TLS client did not park", i)
			}
			time.Sleep(time.Millisecond)
		}
		_, err := conn.Write([]byte{0xC0, 0}) // PINGREQ
		must(t, err)
		resp := make([]byte, 2)
		if _, err := io.ReadFull(r, resp); err != nil || resp[0] != 0xD0 {
			t.Fatalf("parked TLS client's PINGREQ: %x %v", resp, err)
		}
	}
}

// TestPlaintextToTLSPort: MQTT in the clear to a TLS listener is dropped
// at once, and the listener goes on serving TLS clients.
func TestPlaintextToTLSPort(t *testing.T) {
	p := newTestPKI(t)
	_, addr := newTLSServer(t, Config{}, p.serverTLS(tls.NoClientCert))
	conn, err := net.Dial("tcp", addr)
	must(t, err)
	defer conn.Close()
	connect := mpackets.Packet{FixedHeader: mpackets.FixedHeader{Type: mpackets.Connect}}
	connect.Connect.ProtocolName = []byte("MQTT")
	connect.Connect.Clean = true
	connect.Connect.ClientIdentifier = "plain"
	_, err = conn.Write(encode(t, connect))
	must(t, err)
	conn.SetReadDeadline(time.Now().Add(HandshakeTimeout / 2))
	_, err = io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("a plaintext client on the TLS port was left hanging")
	}
	o := pahomqtt.NewClientOptions().AddBroker("ssl://" + addr).SetClientID("after").SetTLSConfig(p.clientTLS(nil)).SetAutoReconnect(false)
	c := pahomqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("TLS client after the plaintext one: %v", tok.Error())
	}
	c.Disconnect(100)
}

// TestWebSocketOrigin: a browser page's origin must be allowed; clients
// that send no Origin are not browsers and are let in, over ws and wss.
func TestWebSocketOrigin(t *testing.T) {
	p := newTestPKI(t)
	tests := []struct {
		name    string
		allowed []string
		origin  string
		ok      bool
	}{
		{"no Origin", nil, "", true},
		{"browser, nothing allowed", nil, "https://evil.example", false},
		{"browser, allowed", []string{"https://app.example"}, "https://App.Example", true},
		{"browser, other origin", []string{"https://app.example"}, "https://evil.example", false},
		{"browser, other port", []string{"https://app.example"}, "https://app.example:8443", false},
		{"any", []string{"*"}, "https://evil.example", true},
	}
	for _, secure := range []bool{false, true} {
		for _, tt := range tests {
			scheme := map[bool]string{false: "ws", true: "wss"}[secure]
			t.Run(scheme+"/"+tt.name, func(t *testing.T) {
				br := core.NewBroker(core.Options{})
				t.Cleanup(br.Close)
				s, err := NewServer(br, Config{AllowedOrigins: tt.allowed})
				must(t, err)
				t.Cleanup(func() { s.Shutdown(context.Background()) })
				var ln net.Listener
				ln, err = net.Listen("tcp", "127.0.0.1:0")
				must(t, err)
				addr := ln.Addr().String()
				d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 10 * time.Second}
				if secure {
					ln = tls.NewListener(ln, p.serverTLS(tls.NoClientCert))
					d.TLSClientConfig = p.clientTLS(nil)
				}
				go s.ServeWebSocket(ln, "/mqtt")
				h := http.Header{}
				if tt.origin != "" {
					h.Set("Origin", tt.origin)
				}
				ws, resp, err := d.Dial(scheme+"://"+addr+"/mqtt", h)
				if tt.ok {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					ws.Close()
					return
				}
				if err == nil {
					ws.Close()
					t.Fatal("upgraded, want 403")
				}
				if resp == nil || resp.StatusCode != http.StatusForbidden {
					t.Fatalf("err %v, response %v, want 403", err, resp)
				}
			})
		}
	}
}

// TestWSSPaho: paho.mqtt.golang over wss:// with a client certificate.
func TestWSSPaho(t *testing.T) {
	p := newTestPKI(t)
	br := core.NewBroker(core.Options{})
	t.Cleanup(br.Close)
	s, err := NewServer(br, Config{})
	must(t, err)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go s.ServeWebSocket(tls.NewListener(ln, p.serverTLS(tls.RequireAndVerifyClientCert)), "/mqtt")
	url := "wss://" + ln.Addr().String() + "/mqtt"
	for _, tt := range []struct {
		name string
		leaf *pki.Leaf
		ok   bool
	}{{"client certificate", p.device, true}, {"none", nil, false}} {
		t.Run(tt.name, func(t *testing.T) {
			o := pahomqtt.NewClientOptions().AddBroker(url).SetClientID("wss-" + strings.ReplaceAll(tt.name, " ", "-")).
				SetTLSConfig(p.clientTLS(tt.leaf)).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
			c := pahomqtt.NewClient(o)
			tok := c.Connect()
			if !tok.WaitTimeout(15 * time.Second) {
				t.Fatal("connect did not finish")
			}
			if got := tok.Error() == nil; got != tt.ok {
				t.Fatalf("connected: %v (%v), want %v", got, tok.Error(), tt.ok)
			}
			if tt.ok {
				roundTrip(t, c, "wss/test")
				c.Disconnect(100)
			}
		})
	}
}

// TestShutdownAbortsHandshakes: a peer that connected to the TLS port and
// never said anything is let go by Shutdown, not held for the handshake
// timeout.
func TestShutdownAbortsHandshakes(t *testing.T) {
	p := newTestPKI(t)
	s, addr := newTLSServer(t, Config{}, p.serverTLS(tls.NoClientCert))
	conn, err := net.Dial("tcp", addr)
	must(t, err)
	defer conn.Close()
	// Connections are accepted in order: once a later one has completed its
	// handshake, the silent one is accepted and its handshake waiting.
	probe, err := tls.Dial("tcp", addr, p.clientTLS(nil))
	must(t, err)
	probe.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(HandshakeTimeout))
	_, err = io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("a handshake in progress outlived Shutdown")
	}
	if d := time.Since(start); d > HandshakeTimeout/2 {
		t.Fatalf("the silent peer was let go %v after Shutdown", d)
	}
}
