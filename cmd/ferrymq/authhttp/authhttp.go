// Package authhttp is an authentication and authorisation backend that
// asks an HTTP service, speaking RabbitMQ's rabbitmq_auth_backend_http
// protocol, so that a device registry written for RabbitMQ can authorise
// ferrymq's clients unchanged.
//
// It implements core.Backend and core.Authorizer. It is not in core
// because it does network I/O (core does none), and it is not a top-level
// package because only the binary wires it: it lives with the binary that
// chains it in front of the internal backend (auth_backends).
//
// Each question is one request to its path (user_path, vhost_path,
// resource_path, topic_path) with the fields as an HTML form, POSTed (or
// in the query string with method "get"); the answer is a body "allow"
// (for the user path followed by the user's tags, "allow administrator
// management") or "deny". Anything else, a status other than 200, a
// timeout or a refused connection is an error: the check is refused, and
// a login falls through to the next backend. Answers are cached for
// CacheTTL, as rabbitmq_auth_backend_cache does.
package authhttp

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// Config are the backend's settings, as in RabbitMQ's auth_http.* keys.
type Config struct {
	UserPath     string `yaml:"user_path"`
	VHostPath    string `yaml:"vhost_path"`
	ResourcePath string `yaml:"resource_path"`
	TopicPath    string `yaml:"topic_path"`
	// Method is "post" (form in the body) or "get" (form in the query)
	// [post].
	Method string `yaml:"http_method"`
	// CacheTTL is how long an answer is reused [0: not cached].
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// Timeout bounds each request [5s].
	Timeout time.Duration `yaml:"timeout"`
}

// Validate reports a missing path or an unknown method.
func (c *Config) Validate() error {
	for _, p := range []struct{ key, v string }{
		{"user_path", c.UserPath}, {"vhost_path", c.VHostPath}, {"resource_path", c.ResourcePath}, {"topic_path", c.TopicPath},
	} {
		if p.v == "" {
			return fmt.Errorf("auth_http.%s is empty", p.key)
		}
		if u, err := url.Parse(p.v); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("auth_http.%s %q: want an http:// or https:// URL", p.key, p.v)
		}
	}
	switch strings.ToLower(c.Method) {
	case "", "post", "get":
	default:
		return fmt.Errorf("auth_http.http_method %q: want post or get", c.Method)
	}
	if c.CacheTTL < 0 || c.Timeout < 0 {
		return errors.New("auth_http: cache_ttl and timeout must be >= 0")
	}
	return nil
}

// Backend is the HTTP backend. It is safe for concurrent use.
type Backend struct {
	cfg    Config
	get    bool
	client *http.Client

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cached // by path and form; guarded by mu
	swept time.Time                    // when expired entries were last dropped
}

type cached struct {
	body    string
	expires time.Time
}

// New returns a Backend for cfg, which must be valid.
func New(cfg Config) *Backend {
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &Backend{
		cfg:    cfg,
		get:    strings.EqualFold(cfg.Method, "get"),
		client: &http.Client{Timeout: cfg.Timeout},
		cache:  make(map[[sha256.Size]byte]cached),
	}
}

// ask sends form to path and returns the answer's first word, lower-case
// ("allow" or "deny"), and the rest (the tags).
func (b *Backend) ask(ctx context.Context, path string, form url.Values) (verdict string, rest []string, err error) {
	enc := form.Encode()
	key := sha256.Sum256([]byte(path + "\x00" + enc)) // passwords are not kept in clear
	body, ok := b.cached(key)
	if !ok {
		if body, err = b.request(ctx, path, enc); err != nil {
			return "", nil, err
		}
		b.remember(key, body)
	}
	words := strings.Fields(body)
	if len(words) == 0 {
		return "", nil, fmt.Errorf("auth_http: %s: empty answer", path)
	}
	verdict = strings.ToLower(words[0])
	if verdict != "allow" && verdict != "deny" {
		return "", nil, fmt.Errorf("auth_http: %s: answer %q is neither allow nor deny", path, words[0])
	}
	return verdict, words[1:], nil
}

func (b *Backend) request(ctx context.Context, path, form string) (string, error) {
	var req *http.Request
	var err error
	if b.get {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, path+sep+form, nil)
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, path, strings.NewReader(form))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	}
	if err != nil {
		return "", fmt.Errorf("auth_http: %w", err)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("auth_http: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("auth_http: %s: reading the answer: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("auth_http: %s: status %s", path, resp.Status)
	}
	return string(body), nil
}

func (b *Backend) cached(key [sha256.Size]byte) (string, bool) {
	if b.cfg.CacheTTL <= 0 {
		return "", false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.cache[key]
	if !ok || time.Now().After(c.expires) {
		return "", false
	}
	return c.body, true
}

func (b *Backend) remember(key [sha256.Size]byte, body string) {
	if b.cfg.CacheTTL <= 0 {
		return
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.swept) > b.cfg.CacheTTL {
		for k, c := range b.cache {
			if now.After(c.expires) {
				delete(b.cache, k)
			}
		}
		b.swept = now
	}
	b.cache[key] = cached{body: body, expires: now.Add(b.cfg.CacheTTL)}
}

// Authenticate implements core.Backend: user_path with username and
// password (none for a certificate login), and client_id for MQTT.
func (b *Backend) Authenticate(ctx context.Context, req core.LoginRequest) (*core.Principal, error) {
	form := url.Values{"username": {req.Username}}
	if !req.Passwordless {
		form.Set("password", req.Password)
	}
	if req.ClientID != "" {
		form.Set("client_id", req.ClientID)
	}
	verdict, tags, err := b.ask(ctx, b.cfg.UserPath, form)
	if err != nil {
		return nil, err
	}
	if verdict != "allow" {
		return nil, fmt.Errorf("auth_http: user '%s' denied: %w", req.Username, core.ErrRefused)
	}
	return &core.Principal{Name: req.Username, Tags: tags, Authz: b}, nil
}

// VHostAccess implements core.Authorizer: vhost_path with username, vhost
// and ip.
func (b *Backend) VHostAccess(ctx context.Context, p *core.Principal, vhost, peer string) (bool, error) {
	return b.allowed(ctx, b.cfg.VHostPath, url.Values{"username": {p.Name}, "vhost": {vhost}, "ip": {peer}})
}

// ResourceAccess implements core.Authorizer: resource_path with username,
// vhost, resource (exchange or queue), name and permission.
func (b *Backend) ResourceAccess(ctx context.Context, p *core.Principal, vhost, kind, name string, perm core.Permission) (bool, error) {
	return b.allowed(ctx, b.cfg.ResourcePath, url.Values{
		"username": {p.Name}, "vhost": {vhost}, "resource": {kind}, "name": {name}, "permission": {perm.String()},
	})
}

// TopicAccess implements core.Authorizer: topic_path with username, vhost,
// resource "topic", name (the exchange), permission, routing_key and the
// variable_map.* fields RabbitMQ adds.
func (b *Backend) TopicAccess(ctx context.Context, p *core.Principal, vhost, exchange, routingKey, clientID string, perm core.Permission) (bool, error) {
	form := url.Values{
		"username": {p.Name}, "vhost": {vhost}, "resource": {core.KindTopic}, "name": {exchange},
		"permission": {perm.String()}, "routing_key": {routingKey},
		"variable_map.username": {p.Name}, "variable_map.vhost": {vhost},
	}
	if clientID != "" {
		form.Set("variable_map.client_id", clientID)
	}
	return b.allowed(ctx, b.cfg.TopicPath, form)
}

func (b *Backend) allowed(ctx context.Context, path string, form url.Values) (bool, error) {
	verdict, _, err := b.ask(ctx, path, form)
	return verdict == "allow", err
}
