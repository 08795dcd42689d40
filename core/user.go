package core

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
)

// UserSpec is an account of the internal backend.
type UserSpec struct {
	Name string
	// PasswordHash is RabbitMQ's rabbit_password_hashing_sha256 form
	// (HashPassword). Empty: no password is accepted; the user can only
	// log in with a transport identity (Passwordless).
	PasswordHash string
	// LoopbackOnly restricts the user to connections from 127.0.0.0/8 or
	// ::1, as RabbitMQ does for the default guest account.
	LoopbackOnly bool
	Tags         []string
	// MaxConnections and MaxChannels are RabbitMQ's user limits; 0: none.
	MaxConnections int
	MaxChannels    int
}

// VHostPermissions are a user's configure, write and read regular
// expressions in one vhost, as rabbitmqctl set_permissions takes them. A
// pattern matches a name anywhere unless anchored; "" matches nothing.
type VHostPermissions struct {
	Configure, Write, Read string
}

// FullPermissions grants everything in a vhost (".*" ".*" ".*").
var FullPermissions = VHostPermissions{Configure: ".*", Write: ".*", Read: ".*"}

// TopicPermissions are a user's write and read regular expressions on the
// routing keys of one topic exchange in one vhost (rabbitmqctl
// set_topic_permissions). {username}, {vhost} and {client_id} in them are
// replaced by the connection's values before matching.
type TopicPermissions struct {
	Exchange    string
	Write, Read string
}

// Users is the internal authentication and authorisation backend:
// RabbitMQ's rabbit_auth_backend_internal. It is safe for concurrent use.
type Users struct {
	mu    sync.RWMutex
	users map[string]*userEntry // guarded by mu; entries are replaced, never modified
}

type userEntry struct {
	spec         UserSpec
	salt, digest []byte
	perms        map[string]*[3]pattern            // by vhost; indexed by Permission
	topics       map[string]map[string]*[3]pattern // by vhost, exchange; Write and Read used
}

// pattern is a compiled permission regular expression.
type pattern struct {
	src  string
	all  bool // ".*": no regexp run
	re   *regexp.Regexp
	vars bool // has {username}, {vhost} or {client_id}: compiled per expansion
	// expanded caches the patterns compiled per expansion (topic
	// permissions only), so that a publish neither builds nor compiles one.
	expanded *expansions
}

// expansions are a variable pattern's compilations, by the values
// expanded into it.
type expansions struct {
	mu sync.RWMutex
	m  map[expansion]*regexp.Regexp // guarded by mu
}

type expansion struct{ user, vhost, clientID string }

// maxExpansions bounds a pattern's cache (one entry per client id, for a
// fleet of devices); past it the cache starts over.
const maxExpansions = 100_000

// compilePattern compiles a permission pattern; with vars (topic
// permissions), {username}, {vhost} and {client_id} are expanded at match
// time.
func compilePattern(src string, vars bool) (pattern, error) {
	p := pattern{src: src}
	switch {
	case src == ".*" || src == "^.*" || src == "^.*$":
		p.all = true
		return p, nil
	case src == "":
		src = "^$" // RabbitMQ: an empty pattern matches nothing (but the empty name)
	case vars && (strings.Contains(src, "{username}") || strings.Contains(src, "{vhost}") || strings.Contains(src, "{client_id}")):
		p.vars = true
		p.expanded = &expansions{m: make(map[expansion]*regexp.Regexp)}
		src = expand(src, "u", "v", "c") // checked as it will be compiled
	}
	re, err := regexp.Compile(src)
	if err != nil {
		return p, fmt.Errorf("permission pattern %q: %w", p.src, err)
	}
	p.re = re
	return p, nil
}

// expand replaces the variables of a topic permission pattern by the
// connection's values, quoted: a client id ".*" matches only itself.
func expand(src, user, vhost, clientID string) string {
	return strings.NewReplacer("{username}", regexp.QuoteMeta(user), "{vhost}", regexp.QuoteMeta(vhost),
		"{client_id}", regexp.QuoteMeta(clientID)).Replace(src)
}

// match runs the pattern against name, expanding variables first.
func (p *pattern) match(name, user, vhost, clientID string) bool {
	if p.all {
		return true
	}
	if !p.vars {
		return p.re.MatchString(name)
	}
	key := expansion{user, vhost, clientID}
	x := p.expanded
	x.mu.RLock()
	re := x.m[key]
	x.mu.RUnlock()
	if re == nil {
		var err error
		if re, err = regexp.Compile(expand(p.src, user, vhost, clientID)); err != nil {
			return false
		}
		x.mu.Lock()
		if len(x.m) >= maxExpansions {
			clear(x.m)
		}
		x.m[key] = re
		x.mu.Unlock()
	}
	return re.MatchString(name)
}

// dummySalt stands in for a user that does not exist.
var dummySalt [saltLen]byte

// NewUsers returns an empty user database.
func NewUsers() *Users { return &Users{users: make(map[string]*userEntry)} }

// DefaultUsers returns a database holding RabbitMQ's default account,
// guest/guest: administrator, loopback only, every permission on "/".
func DefaultUsers() *Users {
	u := NewUsers()
	_ = u.Put(UserSpec{Name: "guest", PasswordHash: HashPassword("guest"), LoopbackOnly: true, Tags: []string{TagAdministrator}})
	_ = u.SetPermissions("guest", "/", FullPermissions)
	return u
}

// Put adds a user or replaces its account; a replaced user keeps its
// permissions.
func (u *Users) Put(spec UserSpec) error {
	e := &userEntry{spec: spec, perms: map[string]*[3]pattern{}, topics: map[string]map[string]*[3]pattern{}}
	if spec.PasswordHash != "" {
		var err error
		if e.salt, e.digest, err = parsePasswordHash(spec.PasswordHash); err != nil {
			return fmt.Errorf("user %q: %w", spec.Name, err)
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if old := u.users[spec.Name]; old != nil {
		e.perms, e.topics = old.perms, old.topics
	}
	u.users[spec.Name] = e
	return nil
}

// Delete removes a user; it reports whether one existed.
func (u *Users) Delete(name string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.users[name]
	delete(u.users, name)
	return ok
}

// update replaces user name's entry with a modified copy.
func (u *Users) update(name string, fn func(e *userEntry)) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.users[name]
	if old == nil {
		return Errorf(CodeNotFound, "no such user '%s'", name)
	}
	e := *old
	fn(&e)
	u.users[name] = &e
	return nil
}

// SetPermissions sets a user's permissions in vhost (which need not
// exist yet). Connections already open may keep using what they checked
// before, as in RabbitMQ.
func (u *Users) SetPermissions(user, vhost string, p VHostPermissions) error {
	var c [3]pattern
	for i, src := range []string{p.Configure, p.Write, p.Read} {
		var err error
		if c[i], err = compilePattern(src, false); err != nil {
			return fmt.Errorf("user %q vhost %q: %w", user, vhost, err)
		}
	}
	return u.update(user, func(e *userEntry) {
		e.perms = cloneMap(e.perms)
		e.perms[vhost] = &c
	})
}

// ClearPermissions removes a user's access to vhost.
func (u *Users) ClearPermissions(user, vhost string) error {
	return u.update(user, func(e *userEntry) {
		e.perms = cloneMap(e.perms)
		delete(e.perms, vhost)
	})
}

// SetTopicPermissions sets a user's topic permissions on one exchange of
// vhost.
func (u *Users) SetTopicPermissions(user, vhost string, p TopicPermissions) error {
	var c [3]pattern
	for _, x := range []struct {
		perm Permission
		src  string
	}{{Write, p.Write}, {Read, p.Read}} {
		var err error
		if c[x.perm], err = compilePattern(x.src, true); err != nil {
			return fmt.Errorf("user %q vhost %q exchange %q: %w", user, vhost, p.Exchange, err)
		}
	}
	return u.update(user, func(e *userEntry) {
		e.topics = cloneMap(e.topics)
		byX := cloneMap(e.topics[vhost])
		if byX == nil {
			byX = map[string]*[3]pattern{}
		}
		byX[p.Exchange] = &c
		e.topics[vhost] = byX
	})
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (u *Users) entry(name string) *userEntry {
	u.mu.RLock()
	e := u.users[name]
	u.mu.RUnlock()
	return e
}

// Authenticate implements Backend. Refusals wrap ErrRefused, except a
// loopback-only user connecting from afar, which the client is told
// about (*LoginError, RabbitMQ's text).
func (u *Users) Authenticate(_ context.Context, req LoginRequest) (*Principal, error) {
	e := u.entry(req.Username)
	switch {
	case e == nil:
		// As long as a wrong password takes: the answer's timing does not
		// tell which user names exist.
		passwordMatches(dummySalt[:], dummySalt[:], req.Password)
		return nil, fmt.Errorf("internal: user '%s' - no such user: %w", req.Username, ErrRefused)
	case !req.Passwordless && (e.digest == nil || !passwordMatches(e.salt, e.digest, req.Password)):
		return nil, fmt.Errorf("internal: user '%s' - invalid credentials: %w", req.Username, ErrRefused)
	case e.spec.LoopbackOnly && !req.Loopback:
		return nil, &LoginError{
			Text:   fmt.Sprintf("user '%s' can only connect via localhost", req.Username),
			Reason: fmt.Sprintf("internal: user '%s' can only connect via localhost", req.Username),
		}
	}
	return &Principal{
		Name:           e.spec.Name,
		Tags:           e.spec.Tags,
		MaxConnections: e.spec.MaxConnections,
		MaxChannels:    e.spec.MaxChannels,
		Authz:          u,
	}, nil
}

// VHostAccess implements Authorizer: a user may use a vhost it has
// permissions in.
func (u *Users) VHostAccess(_ context.Context, p *Principal, vhost, _ string) (bool, error) {
	e := u.entry(p.Name)
	return e != nil && e.perms[vhost] != nil, nil
}

// ResourceAccess implements Authorizer.
func (u *Users) ResourceAccess(_ context.Context, p *Principal, vhost, _, name string, perm Permission) (bool, error) {
	e := u.entry(p.Name)
	if e == nil {
		return false, nil
	}
	ps := e.perms[vhost]
	return ps != nil && ps[perm].match(name, "", "", ""), nil
}

// TopicAccess implements Authorizer: without topic permissions on the
// exchange everything is allowed, as in RabbitMQ.
func (u *Users) TopicAccess(_ context.Context, p *Principal, vhost, exchange, routingKey, clientID string, perm Permission) (bool, error) {
	e := u.entry(p.Name)
	if e == nil {
		return false, nil
	}
	ps := e.topics[vhost][exchange]
	return ps == nil || ps[perm].match(routingKey, p.Name, vhost, clientID), nil
}

// HasTopicPermissions implements TopicScoper.
func (u *Users) HasTopicPermissions(p *Principal, vhost string) bool {
	e := u.entry(p.Name)
	return e != nil && len(e.topics[vhost]) > 0
}
