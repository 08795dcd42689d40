package amqp_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/interop_test/pki"
)

// tlsFixture is a CA, a server certificate and client certificates, good
// and bad.
type tlsFixture struct {
	ca                               *pki.CA
	server                           *pki.Leaf
	device, expired, rogue, stranger *pki.Leaf
}

func newTLSFixture(t testing.TB) *tlsFixture {
	t.Helper()
	f := &tlsFixture{}
	var err error
	issue := func(ca *pki.CA, cn string, o pki.Options) *pki.Leaf {
		t.Helper()
		l, err := ca.Issue(cn, o)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	if f.ca, err = pki.NewCA("ferrymq test CA"); err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	f.server = issue(f.ca, "localhost", pki.Options{Server: true})
	f.device = issue(f.ca, "device-1", pki.Options{})
	f.expired = issue(f.ca, "device-1", pki.Options{Expired: true})
	f.rogue = issue(other, "device-1", pki.Options{})
	f.stranger = issue(f.ca, "stranger", pki.Options{})
	return f
}

// client trusts the test CA and presents leaf (nil: none) whatever CAs the
// server asks for.
func (f *tlsFixture) client(leaf *pki.Leaf) *tls.Config {
	c := &tls.Config{RootCAs: f.ca.Pool(), ServerName: "localhost"}
	if leaf != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &leaf.TLS, nil }
	}
	return c
}

// startTLSServer serves amqps on a free port and returns its address.
func startTLSServer(t testing.TB, cfg amqp.Config, f *tlsFixture, auth tls.ClientAuthType) string {
	t.Helper()
	broker := core.NewBroker(core.Options{})
	lw := &testLogWriter{t: t}
	cfg.Logger = slog.New(slog.NewTextHandler(lw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := amqp.NewServer(broker, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{f.server.TLS}, ClientCAs: f.ca.Pool(), ClientAuth: auth, MinVersion: tls.VersionTLS12}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(tls.NewListener(ln, tc)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		<-served
		broker.Close()
		lw.stop()
	})
	return ln.Addr().String()
}

// TestTLSLogin: amqp091-go over TLS, with SASL EXTERNAL (the user is the
// certificate's CN) and PLAIN, and the refusals RabbitMQ gives.
func TestTLSLogin(t *testing.T) {
	f := newTLSFixture(t)
	users := core.DefaultUsers()
	addUser(t, users, "device-1", "unused-password")
	tests := []struct {
		name     string
		auth     tls.ClientAuthType
		leaf     *pki.Leaf
		external bool // EXTERNAL, else PLAIN as guest
		want     int  // 0: connected; else the AMQP error code
		tlsFail  bool // the TLS handshake fails
	}{
		{"EXTERNAL, CN names a user", tls.RequireAndVerifyClientCert, f.device, true, 0, false},
		{"EXTERNAL, CN names no user", tls.RequireAndVerifyClientCert, f.stranger, true, amqp091.AccessRefused, false},
		{"EXTERNAL without a certificate: not offered", tls.VerifyClientCertIfGiven, nil, true, amqp091.AccessRefused, false},
		{"PLAIN with a certificate", tls.RequireAndVerifyClientCert, f.device, false, 0, false},
		{"PLAIN without a certificate", tls.VerifyClientCertIfGiven, nil, false, 0, false},
		{"expired certificate", tls.RequireAndVerifyClientCert, f.expired, true, 0, true},
		{"certificate of another CA", tls.VerifyClientCertIfGiven, f.rogue, true, 0, true},
		{"no certificate, peer_required", tls.RequireAndVerifyClientCert, nil, false, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := startTLSServer(t, amqp.Config{Auth: core.NewAuth(users), LoginFailureDelay: time.Millisecond}, f, tt.auth)
			cfg := amqp091.Config{TLSClientConfig: f.client(tt.leaf), Dial: amqp091.DefaultDial(waitTimeout)}
			url := "amqps://guest:guest@" + addr + "/"
			if tt.external {
				cfg.SASL = []amqp091.Authentication{&amqp091.ExternalAuth{}}
				url = "amqps://" + addr + "/"
			}
			conn, err := amqp091.DialConfig(url, cfg)
			switch {
			case tt.tlsFail:
				if err == nil {
					conn.Close()
					t.Fatal("connected, want the TLS handshake refused")
				}
				// In TLS 1.3 the server checks the client's certificate
				// after the client finished its handshake: the client
				// learns of the refusal as a TLS alert or a closed
				// connection, depending on timing.
				if e := (*amqp091.Error)(nil); errors.As(err, &e) && e.Code == amqp091.AccessRefused {
					t.Fatalf("got %v, want the TLS handshake refused", err)
				}
				return
			case tt.want != 0:
				wantAMQPError(t, err, tt.want)
				return
			case err != nil:
				t.Fatal(err)
			}
			defer conn.Close()
			ch, err := conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			q, err := ch.QueueDeclare("", false, true, true, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := ch.Publish("", q.Name, false, false, amqp091.Publishing{Body: []byte("over tls")}); err != nil {
				t.Fatal(err)
			}
			eventually(t, waitTimeout, "the message to be queued", func() bool {
				m, ok, err := ch.Get(q.Name, true)
				return err == nil && ok && string(m.Body) == "over tls"
			})
		})
	}
}

// TestExternalNotOfferedInClear: EXTERNAL is for TLS connections with a
// verified certificate only.
func TestExternalNotOfferedInClear(t *testing.T) {
	url, _, _ := startServer(t, amqp.Config{})
	_, err := amqp091.DialConfig(url, amqp091.Config{SASL: []amqp091.Authentication{&amqp091.ExternalAuth{}}, Dial: amqp091.DefaultDial(waitTimeout)})
	if !errors.Is(err, amqp091.ErrSASL) {
		t.Fatalf("got %v, want %v", err, amqp091.ErrSASL)
	}
}

// TestTLSPlaintextAndOldVersions: an AMQP protocol header in the clear, or
// a client offering only TLS 1.0 or 1.1, is dropped at once.
func TestTLSPlaintextAndOldVersions(t *testing.T) {
	f := newTLSFixture(t)
	addr := startTLSServer(t, amqp.Config{}, f, tls.NoClientCert)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("a plaintext client on the TLS port was left hanging")
		}
	}

	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		tc := f.client(nil)
		tc.MinVersion, tc.MaxVersion = v, v
		conn, err := amqp091.DialConfig("amqps://guest:guest@"+addr+"/", amqp091.Config{TLSClientConfig: tc, Dial: amqp091.DefaultDial(waitTimeout)})
		if err == nil {
			conn.Close()
			t.Fatalf("TLS version %#x accepted", v)
		}
	}
	conn, err := amqp091.DialConfig("amqps://guest:guest@"+addr+"/", amqp091.Config{TLSClientConfig: f.client(nil), Dial: amqp091.DefaultDial(waitTimeout)})
	if err != nil {
		t.Fatalf("TLS 1.2+ client after the refused ones: %v", err)
	}
	conn.Close()
}
