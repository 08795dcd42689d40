package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

// TLSConfig is the tls: block of the config file, shared by the amqps,
// mqtts and MQTT wss listeners.
type TLSConfig struct {
	Cert string `yaml:"cert"` // PEM certificate chain, leaf first
	Key  string `yaml:"key"`  // PEM private key
	CA   string `yaml:"ca"`   // PEM CA certificates that client certificates must chain to
	// Verify is none (no client certificate asked for), peer (asked for,
	// verified if given) or peer_required (refused without one).
	Verify string `yaml:"verify"`
	// MinVersion is 1.2 or 1.3; 1.0 and 1.1 are refused.
	MinVersion string `yaml:"min_version"`
	// CipherSuites restricts the TLS 1.2 suites, by IANA name (Go's
	// tls.CipherSuites); TLS 1.3 suites are not configurable.
	CipherSuites []string `yaml:"cipher_suites"`
	// SSLCertLoginFrom is where a client certificate names its user, for
	// SASL EXTERNAL and use_identity_as_username: common_name or
	// subject_alternative_name (RabbitMQ's ssl_cert_login_from).
	SSLCertLoginFrom string `yaml:"ssl_cert_login_from"`
	// SSLCertLoginSANType is the SAN kind used with
	// subject_alternative_name: dns, email or uri; the first of that kind
	// names the user (RabbitMQ's ssl_cert_login_san_type, index 0).
	SSLCertLoginSANType string `yaml:"ssl_cert_login_san_type"`
	// UseIdentityAsUsername lets an MQTT client with a verified
	// certificate and no password log in as the user it names
	// (Mosquitto's use_identity_as_username).
	UseIdentityAsUsername bool `yaml:"use_identity_as_username"`
}

// tlsWanted reports whether any TLS listener is configured.
func (c *Config) tlsWanted() bool {
	return c.AMQPSListen != "" || c.MQTTSListen != "" || c.MQTTWSSListen != "" || c.HTTPSListen != ""
}

// validateTLS checks the tls: block: the names in it, and that the files
// it names load, so that a bad certificate stops the broker at start-up
// rather than at the first handshake.
func (c *Config) validateTLS() error {
	t := &c.TLS
	if _, err := t.clientAuth(); err != nil {
		return err
	}
	if _, err := t.minVersion(); err != nil {
		return err
	}
	if _, err := t.cipherSuites(); err != nil {
		return err
	}
	if _, err := t.certUser(); err != nil {
		return err
	}
	if !c.tlsWanted() {
		return nil
	}
	if t.Cert == "" || t.Key == "" {
		return errors.New("a TLS listener needs tls.cert and tls.key (--tls-cert, --tls-key)")
	}
	_, err := loadTLS(t)
	return err
}

func (t *TLSConfig) clientAuth() (tls.ClientAuthType, error) {
	switch t.Verify {
	case "", "none":
		return tls.NoClientCert, nil
	case "peer", "peer_required":
		if t.CA == "" {
			return 0, fmt.Errorf("tls verify %s needs tls.ca (--tls-ca), the CA client certificates must chain to", t.Verify)
		}
		if t.Verify == "peer" {
			return tls.VerifyClientCertIfGiven, nil
		}
		return tls.RequireAndVerifyClientCert, nil
	}
	return 0, fmt.Errorf("tls verify %q: want none, peer or peer_required", t.Verify)
}

func (t *TLSConfig) minVersion() (uint16, error) {
	switch t.MinVersion {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	case "1.0", "1.1":
		return 0, fmt.Errorf("tls min_version %s: TLS 1.0 and 1.1 are broken and not offered; want 1.2 or 1.3", t.MinVersion)
	}
	return 0, fmt.Errorf("tls min_version %q: want 1.2 or 1.3", t.MinVersion)
}

// cipherSuites maps names to Go's ids; nil keeps Go's default list.
// Suites Go deems insecure are refused by name.
func (t *TLSConfig) cipherSuites() ([]uint16, error) {
	if len(t.CipherSuites) == 0 {
		return nil, nil
	}
	ids := make(map[string]uint16)
	for _, s := range tls.CipherSuites() {
		for _, v := range s.SupportedVersions {
			if v == tls.VersionTLS12 {
				ids[s.Name] = s.ID
			}
		}
	}
	out := make([]uint16, 0, len(t.CipherSuites))
	for _, name := range t.CipherSuites {
		id, ok := ids[name]
		if !ok {
			return nil, fmt.Errorf("tls cipher_suites: %q is not a secure TLS 1.2 suite (want IANA names such as TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)", name)
		}
		out = append(out, id)
	}
	return out, nil
}

// certUser returns how a verified client certificate names its user.
func (t *TLSConfig) certUser() (func(*x509.Certificate) (string, error), error) {
	switch t.SSLCertLoginFrom {
	case "", "common_name":
		return func(c *x509.Certificate) (string, error) {
			if c.Subject.CommonName == "" {
				return "", errors.New("certificate subject has no common name (CN)")
			}
			return c.Subject.CommonName, nil
		}, nil
	case "subject_alternative_name":
	default:
		return nil, fmt.Errorf("tls ssl_cert_login_from %q: want common_name or subject_alternative_name", t.SSLCertLoginFrom)
	}
	var pick func(*x509.Certificate) []string
	switch t.SSLCertLoginSANType {
	case "", "dns":
		pick = func(c *x509.Certificate) []string { return c.DNSNames }
	case "email":
		pick = func(c *x509.Certificate) []string { return c.EmailAddresses }
	case "uri":
		pick = func(c *x509.Certificate) []string {
			out := make([]string, len(c.URIs))
			for i, u := range c.URIs {
				out[i] = u.String()
			}
			return out
		}
	default:
		return nil, fmt.Errorf("tls ssl_cert_login_san_type %q: want dns, email or uri", t.SSLCertLoginSANType)
	}
	kind := cmp.Or(t.SSLCertLoginSANType, "dns")
	return func(c *x509.Certificate) (string, error) {
		if names := pick(c); len(names) > 0 && names[0] != "" {
			return names[0], nil
		}
		return "", fmt.Errorf("certificate has no %s subject alternative name", kind)
	}, nil
}

// loadTLS reads the files t names and returns the server configuration
// they make.
func loadTLS(t *TLSConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("tls cert %s, key %s: %w", t.Cert, t.Key, err)
	}
	auth, err := t.clientAuth()
	if err != nil {
		return nil, err
	}
	minVer, err := t.minVersion()
	if err != nil {
		return nil, err
	}
	suites, err := t.cipherSuites()
	if err != nil {
		return nil, err
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: auth, MinVersion: minVer, CipherSuites: suites}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		c.ClientCAs = x509.NewCertPool()
		if !c.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca %s: no PEM certificate in it", t.CA)
		}
	}
	return c, nil
}

// serverTLS serves every TLS listener from files it can reload: each
// handshake takes the configuration current at its start, so a reload
// changes the certificate for new connections and leaves established
// ones alone.
type serverTLS struct {
	files   TLSConfig
	log     *slog.Logger
	current atomic.Pointer[tls.Config]
}

func newServerTLS(files TLSConfig, log *slog.Logger) (*serverTLS, error) {
	c, err := loadTLS(&files)
	if err != nil {
		return nil, err
	}
	s := &serverTLS{files: files, log: log}
	s.current.Store(c)
	return s, nil
}

// listenerConfig is the configuration for tls.NewListener.
func (s *serverTLS) listenerConfig() *tls.Config {
	return &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.current.Load(), nil },
	}
}

// reload reads the certificate, key and CA files again; on any error the
// current ones stay.
func (s *serverTLS) reload() {
	c, err := loadTLS(&s.files)
	if err != nil {
		s.log.Error("TLS reload failed; keeping the previous certificate", "err", err)
		return
	}
	s.current.Store(c)
	leaf := c.Certificates[0].Leaf
	s.log.Info("TLS certificate reloaded", "cert", s.files.Cert, "subject", leaf.Subject.String(),
		"serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter)
}

// reloadOnSIGHUP reloads s (nil: no TLS listener) on each SIGHUP until
// ctx ends. SIGHUP is caught either way, so that a stray one does not
// kill the broker.
func reloadOnSIGHUP(ctx context.Context, s *serverTLS, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if s == nil {
					log.Info("SIGHUP: no TLS listener, nothing to reload")
					continue
				}
				s.reload()
			}
		}
	}()
}
