package core

import (
	"crypto/sha256"
	"crypto/subtle"
	"sync"
)

// User is an account shared by the AMQP and MQTT listeners.
type User struct {
	Name string
	// LoopbackOnly restricts the user to connections from 127.0.0.0/8 or ::1,
	// as RabbitMQ does for the default guest account.
	LoopbackOnly bool
	// Tags are informational (RabbitMQ's user tags, e.g. "administrator").
	Tags []string

	hash [sha256.Size]byte
}

// Users is the user database. It is safe for concurrent use.
type Users struct {
	mu    sync.RWMutex
	users map[string]*User
}

// NewUsers returns an empty user database.
func NewUsers() *Users { return &Users{users: make(map[string]*User)} }

// DefaultUsers returns a database holding RabbitMQ's default account,
// guest/guest, usable from loopback only.
func DefaultUsers() *Users {
	u := NewUsers()
	u.Put("guest", "guest", true, "administrator")
	return u
}

// Put adds or replaces a user.
func (u *Users) Put(name, password string, loopbackOnly bool, tags ...string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.users[name] = &User{Name: name, LoopbackOnly: loopbackOnly, Tags: tags, hash: sha256.Sum256([]byte(password))}
}

// Delete removes a user; it reports whether one existed.
func (u *Users) Delete(name string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.users[name]
	delete(u.users, name)
	return ok
}

// Authenticate checks a name and password. loopback says whether the peer
// connected from a loopback address. Every refusal is a 403 ACCESS_REFUSED
// with RabbitMQ's wording, so a client cannot tell a wrong name from a wrong
// password.
func (u *Users) Authenticate(name, password string, loopback bool) (*User, error) {
	u.mu.RLock()
	user := u.users[name]
	u.mu.RUnlock()
	refused := Errorf(CodeAccessRefused, "Login was refused using authentication mechanism PLAIN. For details see the broker logfile.")
	if user == nil {
		return nil, refused
	}
	h := sha256.Sum256([]byte(password))
	if subtle.ConstantTimeCompare(h[:], user.hash[:]) != 1 {
		return nil, refused
	}
	if user.LoopbackOnly && !loopback {
		return nil, Errorf(CodeAccessRefused, "user '%s' can only connect via localhost", name)
	}
	return user, nil
}

// AuthenticateExternal logs in a user whose identity was established
// outside the broker, by a verified TLS client certificate (SASL EXTERNAL,
// MQTT use_identity_as_username): no password is checked, but the user
// must exist, and a loopback-only one must connect from loopback, as
// RabbitMQ's rabbitmq_auth_mechanism_ssl requires.
func (u *Users) AuthenticateExternal(name string, loopback bool) (*User, error) {
	u.mu.RLock()
	user := u.users[name]
	u.mu.RUnlock()
	if user == nil {
		return nil, Errorf(CodeAccessRefused, "Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile.")
	}
	if user.LoopbackOnly && !loopback {
		return nil, Errorf(CodeAccessRefused, "user '%s' can only connect via localhost", name)
	}
	return user, nil
}
