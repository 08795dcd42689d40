package amqp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// external is SASL EXTERNAL (RFC 4422 appendix A), as RabbitMQ's
// rabbitmq_auth_mechanism_ssl: the user is named by the client's verified
// TLS certificate and no password is checked.
const external = "EXTERNAL"

// tlsHandshake runs the server side of a TLS connection's handshake within
// the handshake timeout. A failure (plaintext on the TLS port, an expired
// or unknown client certificate, a refused TLS version) is logged at WARN
// with the peer and the reason.
func (c *conn) tlsHandshake(tc *tls.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.cfg.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		// Shutdown ends a handshake in progress (forceClose): no warning.
		if !c.srv.isClosed() {
			c.srv.log.Warn("TLS handshake failed", "proto", "amqps", "peer", c.name, "err", err)
		}
		return err
	}
	return nil
}

// peerCertificate returns the client's certificate when it was verified
// against the configured CA; only then is EXTERNAL offered.
func (c *conn) peerCertificate() *x509.Certificate {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return nil
	}
	return st.PeerCertificates[0]
}

// externalUser returns the user cert names (Config.CertUser).
func (c *conn) externalUser(cert *x509.Certificate) (string, error) {
	name, err := c.srv.cfg.CertUser(cert)
	if err != nil {
		return "", fmt.Errorf("client certificate names no user: %w", err)
	}
	return name, nil
}

var errNoCommonName = errors.New("certificate subject has no common name (CN)")

// CommonName is the default Config.CertUser: the certificate subject's
// CN, as RabbitMQ's ssl_cert_login_from = common_name.
func CommonName(cert *x509.Certificate) (string, error) {
	if cert.Subject.CommonName == "" {
		return "", errNoCommonName
	}
	return cert.Subject.CommonName, nil
}
