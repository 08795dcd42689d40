//go:build realbrokers

package interop_test

// Debian's TLS clients against ferrymq's TLS listeners: openssl s_client
// and mosquitto_pub with a client certificate.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// runTool runs a client tool with stdin and a deadline and returns its
// combined output and error.
func runTool(t *testing.T, stdin []byte, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), tlsWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within %v:\n%s", bin, strings.Join(args, " "), tlsWait, out)
	}
	return string(out), err
}

// TestOpenSSLSClient: openssl s_client verifies the broker's certificate,
// presents a client certificate and speaks AMQP through the tunnel; TLS 1.1
// is refused by the broker.
func TestOpenSSLSClient(t *testing.T) {
	openssl := findBinary(t, "OPENSSL", "openssl", "openssl")
	s := newTLSSetup(t)
	b := StartBroker(t, append(s.args(), "--tls-verify", "peer_required")...)
	amqps := listenerAddr(t, b, "amqps")

	// An AMQP protocol header of another version: the broker answers with
	// its own header and closes, so s_client ends by itself.
	out, err := runTool(t, []byte("AMQP\x00\x00\x09\x02"), openssl, "s_client", "-connect", amqps,
		"-CAfile", s.caFile, "-cert", s.clientCert, "-key", s.clientKey, "-verify_return_error", "-ign_eof")
	if err != nil {
		t.Fatalf("s_client: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Verify return code: 0 (ok)") || !strings.Contains(out, "AMQP\x00\x00\x09\x01") {
		t.Fatalf("s_client did not verify the broker or get its AMQP header:\n%s", out)
	}

	// Without a client certificate, and with TLS 1.1 (allowed on the
	// client side at security level 0), the handshake fails and the
	// broker says why.
	for _, tc := range []struct {
		name, logged string
		args         []string
	}{
		{"no client certificate", "certificate", nil},
		{"TLS 1.1", "unsupported versions", []string{"-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0",
			"-cert", s.clientCert, "-key", s.clientKey}},
	} {
		args := append([]string{"s_client", "-connect", amqps, "-CAfile", s.caFile, "-ign_eof"}, tc.args...)
		out, _ := runTool(t, []byte("AMQP\x00\x00\x09\x01"), openssl, args...)
		if strings.Contains(out, "PLAIN AMQPLAIN") { // connection.start's mechanisms
			t.Fatalf("%s: the broker spoke AMQP:\n%s", tc.name, out)
		}
		waitOutput(t, b, "the refused handshake ("+tc.name+")", func(log string) bool {
			for _, line := range strings.Split(log, "\n") {
				if strings.Contains(line, `msg="TLS handshake failed" proto=amqps`) && strings.Contains(line, tc.logged) {
					return true
				}
			}
			return false
		})
	}
}

// TestMosquittoPubTLS: mosquitto_pub with --cafile/--cert/--key and no
// password logs in as its certificate's CN (use_identity_as_username); its
// message reaches an AMQP consumer. Without a certificate it is refused.
func TestMosquittoPubTLS(t *testing.T) {
	pub := findBinary(t, "MOSQUITTO_PUB", "mosquitto_pub", "mosquitto-clients")
	s := newTLSSetup(t)
	cfg := filepath.Join(t.TempDir(), "ferrymq.yaml")
	if err := os.WriteFile(cfg, []byte("tls: {use_identity_as_username: true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := StartBroker(t, append(s.args(), "--config", cfg, "--tls-verify", "peer_required")...)
	mqtts := listenerAddr(t, b, "mqtts")
	host, port, _ := strings.Cut(mqtts, ":")

	conn, err := amqp.Dial(b.URL)
	if err != nil {
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
	if err := ch.QueueBind(q.Name, "devices.device-1.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}

	for _, v := range []string{"mqttv311", "mqttv5"} {
		out, err := runTool(t, nil, pub, "-h", host, "-p", port, "-V", v, "-q", "1", "-i", "pub-"+v,
			"--cafile", s.caFile, "--cert", s.clientCert, "--key", s.clientKey,
			"-t", "devices/device-1/temp", "-m", "21.5 "+v)
		if err != nil {
			t.Fatalf("mosquitto_pub %s: %v\n%s", v, err, out)
		}
		select {
		case d := <-deliveries:
			if string(d.Body) != "21.5 "+v {
				t.Fatalf("got %q", d.Body)
			}
		case <-time.After(tlsWait):
			t.Fatalf("mosquitto_pub %s's message did not arrive", v)
		}
	}

	out, err := runTool(t, nil, pub, "-h", host, "-p", port, "-q", "1", "--cafile", s.caFile,
		"-t", "devices/device-1/temp", "-m", "no certificate")
	if err == nil {
		t.Fatalf("mosquitto_pub without a client certificate succeeded:\n%s", out)
	}
}
