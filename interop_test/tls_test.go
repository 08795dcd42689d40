package interop_test

import (
	"crypto/tls"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/interop_test/pki"
	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// tlsWait bounds each wait for a TLS connection or a message over one.
const tlsWait = 20 * time.Second

// tlsSetup is a CA, a server certificate and a client certificate for
// user device-1, written to files for the broker (and for openssl and
// mosquitto_pub).
type tlsSetup struct {
	dir                   string
	ca                    *pki.CA
	caFile                string
	certFile, keyFile     string
	client                *pki.Leaf
	clientCert, clientKey string
}

func newTLSSetup(t *testing.T) *tlsSetup {
	t.Helper()
	s := &tlsSetup{dir: t.TempDir()}
	var err error
	if s.ca, err = pki.NewCA("interop CA"); err != nil {
		t.Fatal(err)
	}
	if s.caFile, err = s.ca.WriteFile(s.dir, "ca"); err != nil {
		t.Fatal(err)
	}
	s.installServerCert(t)
	if s.client, err = s.ca.Issue("device-1", pki.Options{}); err != nil {
		t.Fatal(err)
	}
	if s.clientCert, s.clientKey, err = s.client.WriteFiles(s.dir, "client"); err != nil {
		t.Fatal(err)
	}
	return s
}

// installServerCert issues a new server certificate and puts it in place
// of the broker's files, each replaced whole (rename), and returns it.
func (s *tlsSetup) installServerCert(t *testing.T) *pki.Leaf {
	t.Helper()
	leaf, err := s.ca.Issue("localhost", pki.Options{Server: true})
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	cert, key, err := leaf.WriteFiles(tmp, "server")
	if err != nil {
		t.Fatal(err)
	}
	s.certFile, s.keyFile = filepath.Join(s.dir, "server.crt"), filepath.Join(s.dir, "server.key")
	// Key first: a reload between the two renames fails on a mismatched
	// pair and keeps the old one, never serves a wrong one.
	if err := os.Rename(key, s.keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(cert, s.certFile); err != nil {
		t.Fatal(err)
	}
	return leaf
}

// args are the broker flags for TLS listeners with client certificates
// verified when given.
func (s *tlsSetup) args() []string {
	return []string{
		"--amqps-listen", "127.0.0.1:0", "--mqtts-listen", "127.0.0.1:0", "--mqtt-wss-listen", "127.0.0.1:0",
		"--tls-cert", s.certFile, "--tls-key", s.keyFile, "--tls-ca", s.caFile, "--tls-verify", "peer",
		"--user", "device-1:unused-password",
	}
}

// clientTLS trusts the CA and presents the device-1 certificate.
func (s *tlsSetup) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: s.ca.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{s.client.TLS}}
}

// listenerAddr waits for the broker's readiness line for proto.
func listenerAddr(t *testing.T, b *Broker, proto string) string {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(readyMsg+proto) + ` addr=(\S+)`)
	var addr string
	waitOutput(t, b, "listener "+proto, func(out string) bool {
		if m := re.FindStringSubmatch(out); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	return addr
}

// waitOutput waits until cond holds for the broker's output.
func waitOutput(t *testing.T, b *Broker, what string, cond func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for !cond(b.Output()) {
		if time.Now().After(deadline) {
			t.Fatalf("broker did not log %s within %v", what, readyTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// servedSerial handshakes with addr and returns the serial number of the
// certificate the broker presents.
func servedSerial(t *testing.T, addr string, s *tlsSetup) *big.Int {
	t.Helper()
	c, err := tls.Dial("tcp", addr, s.clientTLS())
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestTLSReloadOnSIGHUP: after SIGHUP the broker presents the new
// certificate to new connections, while an AMQP connection (SASL EXTERNAL)
// and an MQTT connection made before go on working.
func TestTLSReloadOnSIGHUP(t *testing.T) {
	s := newTLSSetup(t)

	b := StartBroker(t, s.args()...)
	amqps := listenerAddr(t, b, "amqps")
	mqtts := listenerAddr(t, b, "mqtts")
	before := servedSerial(t, amqps, s)

	conn, err := amqp.DialTLS_ExternalAuth("amqps://"+amqps+"/", s.clientTLS())
	if err != nil {
		t.Fatalf("EXTERNAL login as device-1: %v", err)
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
	if err := ch.QueueBind(q.Name, "tls.reload", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := mqtt3.NewClientOptions().AddBroker("ssl://" + mqtts).SetClientID("reload-mqtt").
		SetTLSConfig(s.clientTLS()).SetUsername("guest").SetPassword("guest").SetAutoReconnect(false)
	mc := mqtt3.NewClient(o)
	if tok := mc.Connect(); !tok.WaitTimeout(tlsWait) || tok.Error() != nil {
		t.Fatalf("MQTT over TLS: %v", tok.Error())
	}
	defer mc.Disconnect(100)

	leaf := s.installServerCert(t)
	b.Signal(t, syscall.SIGHUP)
	waitOutput(t, b, "the reload", func(out string) bool {
		return strings.Contains(out, "serial="+leaf.Cert.SerialNumber.Text(16))
	})
	for _, addr := range []string{amqps, mqtts, listenerAddr(t, b, "mqtt-wss")} {
		if got := servedSerial(t, addr, s); got.Cmp(leaf.Cert.SerialNumber) != 0 {
			t.Fatalf("%s serves serial %x after SIGHUP, want the new %x (old %x)", addr, got, leaf.Cert.SerialNumber, before)
		}
	}

	// The connections made with the old certificate are still up.
	if tok := mc.Publish("tls/reload", 1, false, "after reload"); !tok.WaitTimeout(tlsWait) || tok.Error() != nil {
		t.Fatalf("MQTT publish on the connection from before the reload: %v", tok.Error())
	}
	select {
	case d := <-deliveries:
		if string(d.Body) != "after reload" {
			t.Fatalf("got %q", d.Body)
		}
	case <-time.After(tlsWait):
		t.Fatal("the AMQP consumer from before the reload got nothing")
	}

	// A broken pair on the next SIGHUP keeps the current one.
	os.WriteFile(s.keyFile, []byte("garbage"), 0o600)
	b.Signal(t, syscall.SIGHUP)
	waitOutput(t, b, "the failed reload", func(out string) bool { return strings.Contains(out, "TLS reload failed") })
	if got := servedSerial(t, amqps, s); got.Cmp(leaf.Cert.SerialNumber) != 0 {
		t.Fatalf("serves %x after a failed reload, want %x kept", got, leaf.Cert.SerialNumber)
	}
}

// TestWSSOriginsAndPahoGolang: the real binary's wss listener, with
// ws_allowed_origins from the config file: paho.golang (MQTT 5) over wss
// sends and receives; a browser page of another origin gets 403, one of
// the allowed origin and a client without Origin get through.
func TestWSSOriginsAndPahoGolang(t *testing.T) {
	s := newTLSSetup(t)
	cfg := filepath.Join(t.TempDir(), "ferrymq.yaml")
	if err := os.WriteFile(cfg, []byte("ws_allowed_origins: [\"https://dashboard.example\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := StartBroker(t, append(s.args(), "--config", cfg)...)
	wss := listenerAddr(t, b, "mqtt-wss")
	dial := func(origin string) (*websocket.Conn, *http.Response, error) {
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: tlsWait, TLSClientConfig: s.clientTLS()}
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		return d.Dial("wss://"+wss+"/mqtt", h)
	}
	for _, tt := range []struct {
		origin string
		ok     bool
	}{{"", true}, {"https://dashboard.example", true}, {"https://evil.example", false}, {"http://dashboard.example", false}} {
		ws, resp, err := dial(tt.origin)
		if tt.ok != (err == nil) {
			t.Fatalf("Origin %q: err %v, want ok=%v", tt.origin, err, tt.ok)
		}
		if err == nil {
			ws.Close()
		} else if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("Origin %q: %v, want 403", tt.origin, err)
		}
	}

	ws, _, err := dial("")
	if err != nil {
		t.Fatal(err)
	}
	c := mqtttest.ConnectV5(t, "", mqtttest.V5Options{ClientID: "wss-v5", Conn: &wsConn{Conn: ws}})
	c.SubscribeAt(t, 1, "wss/#")
	c.Send(t, "wss/v5", 1, "over wss")
	if m := c.Next(t, "the message over wss"); string(m.Payload) != "over wss" {
		t.Fatalf("got %q", m.Payload)
	}
}
