package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// HandshakeTimeout bounds a TLS handshake, from accept to the end of the
// handshake, so that a peer that connects and says nothing, or speaks
// plaintext to a TLS port, is dropped instead of holding a goroutine.
const HandshakeTimeout = 10 * time.Second

// handshake runs the server side of a TLS handshake within
// HandshakeTimeout. A failure (plaintext on a TLS port, an expired or
// unknown client certificate, a refused TLS version) is logged at WARN with
// the peer and the reason, for the operator chasing a device that cannot
// connect.
func (s *Server) handshake(tc *tls.Conn, proto string) error {
	// The server's context: Shutdown aborts handshakes in progress, which
	// are not clients yet and so not among those it closes.
	ctx, cancel := context.WithTimeout(s.ctx, HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		if s.ctx.Err() == nil {
			s.log.Warn("TLS handshake failed", "proto", proto, "peer", tc.RemoteAddr().String(), "err", err)
		}
		return err
	}
	return nil
}

// socketOf returns the connection's TCP socket: conn's own, or the one
// under a TLS connection.
func socketOf(conn net.Conn) (net.Conn, bool) {
	if tc, ok := conn.(*tls.Conn); ok {
		return tc.NetConn(), true
	}
	return conn, false
}

// certUser returns the user a verified client certificate names, and
// whether there is one: only a certificate that chains to the configured
// CA is an identity.
func (c *client) certUser() (string, bool) {
	tc, ok := c.conn.(*tls.Conn)
	if !ok {
		return "", false
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return "", false
	}
	name, err := c.srv.cfg.CertUser(st.PeerCertificates[0])
	if err != nil {
		c.srv.log.Warn("mqtt: client certificate names no user", "client", c.id, "peer", c.conn.RemoteAddr().String(), "err", err)
		return "", false
	}
	return name, true
}

var errNoCommonName = errors.New("certificate subject has no common name (CN)")

// CommonName is the default Config.CertUser: the certificate subject's CN,
// as Mosquitto's use_identity_as_username and RabbitMQ's
// ssl_cert_login_from = common_name.
func CommonName(cert *x509.Certificate) (string, error) {
	if cert.Subject.CommonName == "" {
		return "", errNoCommonName
	}
	return cert.Subject.CommonName, nil
}

// originAllowed decides whether a WebSocket upgrade may proceed. Browsers
// always send Origin and let any web page open a WebSocket to any host, so
// without this check a page a user visits could reach a broker on their
// network in their name. Clients that are not browsers send no Origin and
// are let in; a browser page must come from an origin in the allow-list
// (scheme://host[:port], compared without regard to case; "*" allows any).
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	norm := origin
	if u, err := url.Parse(origin); err == nil && u.Host != "" {
		norm = u.Scheme + "://" + u.Host
	}
	for _, a := range s.cfg.AllowedOrigins {
		if a == "*" || strings.EqualFold(strings.TrimRight(a, "/"), norm) {
			return true
		}
	}
	s.log.Warn("mqtt: WebSocket from a browser origin not in ws_allowed_origins refused", "origin", origin, "peer", r.RemoteAddr)
	return false
}

// identity returns the user a CONNECT logs in as by its client
// certificate: with UseIdentityAsUsername, when the certificate is
// verified and the CONNECT carries no password (Mosquitto's rule; a
// password means the client chose a password login).
func (c *client) identity(pk *packets.Packet) (string, bool) {
	if !c.srv.cfg.UseIdentityAsUsername || pk.Connect.PasswordFlag {
		return "", false
	}
	return c.certUser()
}
