package core

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Permission is one of RabbitMQ's three resource permissions.
type Permission uint8

// The permissions, as rabbitmqctl set_permissions orders them.
const (
	Configure Permission = iota
	Write
	Read
)

func (p Permission) String() string {
	switch p {
	case Configure:
		return "configure"
	case Write:
		return "write"
	}
	return "read"
}

// Resource kinds named in permission checks and their refusals.
const (
	KindExchange = "exchange"
	KindQueue    = "queue"
	KindTopic    = "topic"
)

// DefaultExchangeName is the name the default exchange ("") has in
// permission checks, as in RabbitMQ: a pattern grants it with amq\.default.
const DefaultExchangeName = "amq.default"

// User tags, as RabbitMQ's. Only administrator changes what ferrymq allows
// (the internal queues below); the others are kept for the operations API.
const (
	TagAdministrator = "administrator"
	TagMonitoring    = "monitoring"
	TagManagement    = "management"
	TagPolicymaker   = "policymaker"
)

// LoginRequest is what a protocol adapter knows about a client logging in.
type LoginRequest struct {
	Username string
	Password string
	// Passwordless: the transport established the identity (a verified
	// client certificate: SASL EXTERNAL, MQTT use_identity_as_username);
	// no password is checked, the user must only exist.
	Passwordless bool
	// Mechanism is the SASL mechanism or "mqtt", for logs.
	Mechanism string
	// Peer is the client's IP address; Loopback whether it is a loopback one.
	Peer     string
	Loopback bool
	// ClientID is the MQTT client identifier ("" for AMQP); it expands
	// {client_id} in topic permissions.
	ClientID string
}

// Principal is an authenticated user. The backend that authenticated it
// authorises it (Authz), as in RabbitMQ.
type Principal struct {
	Name string
	Tags []string
	// MaxConnections and MaxChannels are the user's limits; 0: none.
	MaxConnections int
	MaxChannels    int
	Authz          Authorizer
}

// HasTag reports whether the user has tag t.
func (p *Principal) HasTag(t string) bool { return slices.Contains(p.Tags, t) }

// Authorizer answers permission questions for the users one backend
// authenticated. An error means the backend could not answer (it is down):
// the check is refused.
type Authorizer interface {
	// VHostAccess reports whether p may connect to vhost from the IP
	// address peer.
	VHostAccess(ctx context.Context, p *Principal, vhost, peer string) (bool, error)
	// ResourceAccess reports whether p has perm on the exchange or queue
	// kind/name in vhost. The default exchange is DefaultExchangeName.
	ResourceAccess(ctx context.Context, p *Principal, vhost, kind, name string, perm Permission) (bool, error)
	// TopicAccess reports whether p may publish (Write) with, or bind
	// (Read) to, routingKey on the topic exchange exchange in vhost.
	// clientID expands {client_id} in the patterns.
	TopicAccess(ctx context.Context, p *Principal, vhost, exchange, routingKey, clientID string, perm Permission) (bool, error)
}

// TopicScoper is implemented by an Authorizer that knows when topic
// permissions cannot refuse anything (the internal backend: none are set
// for the user in the vhost); connections then skip the per-publish topic
// check.
type TopicScoper interface {
	HasTopicPermissions(p *Principal, vhost string) bool
}

// Backend authenticates users and hands out their Authorizer. A refusal
// wraps ErrRefused; any other error means the backend could not decide.
type Backend interface {
	Authenticate(ctx context.Context, req LoginRequest) (*Principal, error)
}

// ErrRefused is wrapped by a Backend's refusal to authenticate.
var ErrRefused = errors.New("refused")

// LoginError is a failed login: Text is what the client is told (RabbitMQ's
// wording, which never says whether the name or the password was wrong),
// Reason what the log says.
type LoginError struct {
	Text   string
	Reason string
}

func (e *LoginError) Error() string { return e.Reason }

// Auth is the chain of authentication backends, RabbitMQ's auth_backends:
// each is asked in turn until one accepts; a backend that refuses or fails
// passes the login to the next one. The Principal then carries the
// accepting backend's Authorizer.
type Auth struct {
	backends []Backend
}

// NewAuth returns a chain trying backends in order.
func NewAuth(backends ...Backend) *Auth { return &Auth{backends: backends} }

// Login authenticates req. Errors are *LoginError.
func (a *Auth) Login(ctx context.Context, req LoginRequest) (*Principal, error) {
	var reasons []string
	for _, b := range a.backends {
		p, err := b.Authenticate(ctx, req)
		if err == nil {
			return p, nil
		}
		var le *LoginError
		if errors.As(err, &le) {
			// A refusal the client must hear as such (loopback-only user).
			return nil, le
		}
		reasons = append(reasons, err.Error())
	}
	mech := req.Mechanism
	if mech == "" {
		mech = "PLAIN"
	}
	return nil, &LoginError{
		Text:   fmt.Sprintf("Login was refused using authentication mechanism %s. For details see the broker logfile.", mech),
		Reason: strings.Join(reasons, "; "),
	}
}

// refusal is RabbitMQ's text for a failed resource check.
func refusal(perm Permission, kind, name, vhost, user string) error {
	return Errorf(CodeAccessRefused, "%s access to %s refused for user '%s'", perm, rs(kind, name, vhost), user)
}

// topicRefusal is RabbitMQ's text for a failed topic check.
func topicRefusal(perm Permission, key, exchange, vhost, user string) error {
	return Errorf(CodeAccessRefused, "%s access to topic '%s' in exchange '%s' in vhost '%s' refused for user '%s'", perm, key, exchange, vhost, user)
}
