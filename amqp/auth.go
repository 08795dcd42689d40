package amqp

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"net"
	"time"

	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/core/msgcodec"
)

// mechanisms is what connection.start offers, most preferred first.
const mechanisms = "PLAIN AMQPLAIN"

// credentials extracts a user name and password from a connection.start-ok
// response for one of the offered SASL mechanisms.
func credentials(mechanism, response string) (user, pass string, err error) {
	switch mechanism {
	case "PLAIN":
		// [authzid] NUL authcid NUL passwd (RFC 4616).
		parts := bytes.Split([]byte(response), []byte{0})
		if len(parts) != 3 {
			return "", "", newError(wire.AccessRefused, "PLAIN login refused: malformed response")
		}
		return string(parts[1]), string(parts[2]), nil
	case "AMQPLAIN":
		// A field table without its length prefix, as RabbitMQ reads it.
		b := make([]byte, 4, 4+len(response))
		binary.BigEndian.PutUint32(b, uint32(len(response)))
		t, rest, err := msgcodec.ReadTable(append(b, response...))
		if err != nil || len(rest) != 0 {
			return "", "", newError(wire.AccessRefused, "AMQPLAIN login refused: malformed response")
		}
		user, ok1 := t["LOGIN"].(string)
		pass, ok2 := t["PASSWORD"].(string)
		if !ok1 || !ok2 {
			return "", "", newError(wire.AccessRefused, "AMQPLAIN login refused: LOGIN or PASSWORD missing")
		}
		return user, pass, nil
	}
	return "", "", newError(wire.CommandInvalid, "unknown authentication mechanism '%s'", mechanism)
}

// login authenticates the client of connection.start-ok through the
// server's auth backends. A failure is logged at WARN and, after the
// login failure delay, refused with 403 ACCESS_REFUSED.
//
// With EXTERNAL (offered when the client presented a verified certificate,
// cert), the certificate names the user and no password is checked: the
// user must exist in a backend, as with rabbitmq_auth_mechanism_ssl.
func (c *conn) login(startOk *wire.ConnectionStartOk, cert *x509.Certificate) (*core.Principal, error) {
	var name, pass string
	var err error
	passwordless := startOk.Mechanism == external && cert != nil
	if passwordless {
		name, err = c.externalUser(cert)
	} else if name, pass, err = credentials(startOk.Mechanism, startOk.Response); err != nil {
		c.srv.log.Warn("amqp: login failed", "peer", c.name, "mechanism", startOk.Mechanism, "reason", err)
		return nil, c.refuse(asAMQPError(err, startOk))
	}
	var p *core.Principal
	if err == nil {
		// The backends may be remote: they get the rest of the handshake's time.
		ctx, cancel := context.WithTimeout(c.ctx, c.srv.cfg.HandshakeTimeout)
		defer cancel()
		peer, _, _ := net.SplitHostPort(c.name)
		p, err = c.srv.cfg.Auth.Login(ctx, core.LoginRequest{
			Username: name, Password: pass, Passwordless: passwordless, Mechanism: startOk.Mechanism,
			Peer: peer, Loopback: isLoopback(c.nc.RemoteAddr()),
		})
	}
	if err == nil {
		return p, nil
	}
	le := &core.LoginError{Text: "Login was refused using authentication mechanism " + startOk.Mechanism + ". For details see the broker logfile.", Reason: err.Error()}
	errors.As(err, &le)
	c.srv.log.Warn("amqp: login failed", "user", name, "peer", c.name, "mechanism", startOk.Mechanism, "reason", le.Reason)
	c.delayRefusal()
	return nil, c.refuse(newError(wire.AccessRefused, "%s", le.Text))
}

// delayRefusal waits out the login failure delay, or until the server
// shuts down.
func (c *conn) delayRefusal() {
	d := c.srv.cfg.LoginFailureDelay
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.srv.shutdown:
	}
}
