package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrymq/ferrymq/interop_test/pki"
)

// TestTLSConfigErrors: every bad TLS setting stops start-up with a message
// naming it, and exit status 2.
func TestTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("localhost", pki.Options{Server: true})
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := leaf.WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteFile(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	tlsOK := []string{"--amqps-listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key}

	tests := []struct {
		name    string
		args    []string
		file    string
		wantErr string // "" : valid
	}{
		{"listener with cert and key", tlsOK, "", ""},
		{"peer_required with a CA", append(tlsOK, "--tls-verify", "peer_required", "--tls-ca", caFile), "", ""},
		{"listener without a certificate", []string{"--mqtts-listen", "127.0.0.1:0"}, "", "needs tls.cert and tls.key"},
		{"unreadable certificate", []string{"--mqtt-wss-listen", "127.0.0.1:0", "--tls-cert", filepath.Join(dir, "missing.crt"), "--tls-key", key}, "", "missing.crt"},
		{"unparsable key", []string{"--amqps-listen", ":0", "--tls-cert", cert, "--tls-key", garbage}, "", "garbage.pem"},
		{"verify mode", append(tlsOK, "--tls-verify", "always"), "", `tls verify "always"`},
		{"peer without a CA", append(tlsOK, "--tls-verify", "peer"), "", "needs tls.ca"},
		{"CA file without certificates", append(tlsOK, "--tls-verify", "peer", "--tls-ca", garbage), "", "no PEM certificate"},
		{"TLS 1.0", tlsOK, "tls: {min_version: \"1.0\"}\n", "TLS 1.0 and 1.1"},
		{"TLS 1.1", tlsOK, "tls: {min_version: \"1.1\"}\n", "TLS 1.0 and 1.1"},
		{"TLS 1.3", tlsOK, "tls: {min_version: \"1.3\"}\n", ""},
		{"unknown version", tlsOK, "tls: {min_version: \"2\"}\n", `min_version "2"`},
		{"secure suite", tlsOK, "tls: {cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]}\n", ""},
		{"insecure suite", tlsOK, "tls: {cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]}\n", "TLS_RSA_WITH_RC4_128_SHA"},
		{"login from SAN", tlsOK, "tls: {ssl_cert_login_from: subject_alternative_name, ssl_cert_login_san_type: email}\n", ""},
		{"login from elsewhere", tlsOK, "tls: {ssl_cert_login_from: serial}\n", "ssl_cert_login_from"},
		{"unknown tls key", tlsOK, "tls: {certfile: x}\n", `unknown key "certfile"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				path := filepath.Join(t.TempDir(), "ferrymq.yaml")
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append([]string{"--config", path}, args...)
			}
			_, err := loadConfig(args, io.Discard)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}

	var log syncBuffer
	if code := run(context.Background(), []string{"--amqps-listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, &log); code != exitUsage {
		t.Fatalf("run with a TLS listener and no certificate returned %d, want %d; output:\n%s", code, exitUsage, log.String())
	}
}

// TestCertUser: where a client certificate names its user.
func TestCertUser(t *testing.T) {
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	full, err := ca.Issue("device-cn", pki.Options{DNSNames: []string{"dev.example"}, Emails: []string{"dev@example.com"}, URIs: []string{"spiffe://example/dev"}})
	if err != nil {
		t.Fatal(err)
	}
	bare, err := ca.Issue("", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		from, san string
		want      string
	}{
		{"", "", "device-cn"},
		{"common_name", "", "device-cn"},
		{"subject_alternative_name", "", "dev.example"},
		{"subject_alternative_name", "dns", "dev.example"},
		{"subject_alternative_name", "email", "dev@example.com"},
		{"subject_alternative_name", "uri", "spiffe://example/dev"},
	}
	for _, tt := range tests {
		f, err := (&TLSConfig{SSLCertLoginFrom: tt.from, SSLCertLoginSANType: tt.san}).certUser()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := f(full.Cert); got != tt.want || err != nil {
			t.Errorf("%s/%s: %q %v, want %q", tt.from, tt.san, got, err, tt.want)
		}
		if got, err := f(bare.Cert); err == nil {
			t.Errorf("%s/%s: a certificate without that name gave %q", tt.from, tt.san, got)
		}
	}
}
