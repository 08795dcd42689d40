package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ferrymq/ferrymq/cmd/ferrymq/authhttp"
	"github.com/ferrymq/ferrymq/core"
)

// UserConfig is one account of the internal user database besides the
// default guest/guest. A user named guest replaces the default one.
type UserConfig struct {
	Name string `yaml:"name"`
	// Password or PasswordHash (RabbitMQ's salted SHA-256, as
	// rabbitmqctl hash_password prints it and definitions exports hold).
	Password     string   `yaml:"password"`
	PasswordHash string   `yaml:"password_hash"`
	LoopbackOnly bool     `yaml:"loopback_only"`
	Tags         []string `yaml:"tags"`
	// Permissions by vhost. Absent: every permission on "/" (what --user
	// gives); present: exactly these.
	Permissions      map[string]PermissionConfig `yaml:"permissions"`
	TopicPermissions []TopicPermissionConfig     `yaml:"topic_permissions"`
	MaxConnections   int                         `yaml:"max_connections"` // 0: no limit
	MaxChannels      int                         `yaml:"max_channels"`    // 0: no limit
}

// PermissionConfig is rabbitmqctl set_permissions' three regexes.
type PermissionConfig struct {
	Configure string `yaml:"configure"`
	Write     string `yaml:"write"`
	Read      string `yaml:"read"`
}

// TopicPermissionConfig is rabbitmqctl set_topic_permissions.
type TopicPermissionConfig struct {
	VHost    string `yaml:"vhost"`
	Exchange string `yaml:"exchange"`
	Write    string `yaml:"write"`
	Read     string `yaml:"read"`
}

// VHostConfig is a vhost created at startup, with its limits. In the file
// it is a name or a mapping.
type VHostConfig struct {
	Name           string `yaml:"name"`
	MaxConnections int    `yaml:"max_connections"` // 0: no limit
	MaxQueues      int    `yaml:"max_queues"`      // 0: no limit
}

// UnmarshalYAML accepts "plant1" as well as {name: plant1, ...}.
func (v *VHostConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*v = VHostConfig{Name: n.Value}
		return nil
	}
	type plain VHostConfig
	return n.Decode((*plain)(v))
}

func validateUsers(users []UserConfig, vhosts []VHostConfig) error {
	var errs []error
	for i, u := range users {
		if u.Name == "" {
			errs = append(errs, fmt.Errorf("users[%d]: name is empty", i))
			continue
		}
		switch {
		case u.Password != "" && u.PasswordHash != "":
			errs = append(errs, fmt.Errorf("user %q: password and password_hash both set", u.Name))
		case u.PasswordHash != "":
			if err := core.CheckPasswordHash(u.PasswordHash); err != nil {
				errs = append(errs, fmt.Errorf("user %q: %w", u.Name, err))
			}
		case u.Password == "":
			errs = append(errs, fmt.Errorf("user %q: password is empty", u.Name))
		}
		if u.MaxConnections < 0 || u.MaxChannels < 0 {
			errs = append(errs, fmt.Errorf("user %q: limits must be >= 0 (0 = none)", u.Name))
		}
	}
	for i, v := range vhosts {
		if v.Name == "" {
			errs = append(errs, fmt.Errorf("vhosts[%d]: name is empty", i))
			continue
		}
		if v.MaxConnections < 0 || v.MaxQueues < 0 {
			errs = append(errs, fmt.Errorf("vhost %q: limits must be >= 0 (0 = none)", v.Name))
		}
	}
	return errors.Join(errs...)
}

// buildUsers returns the internal user database: guest/guest, then the
// configured users in order (a later one with the same name wins).
func buildUsers(cfg *Config) (*core.Users, error) {
	users := core.DefaultUsers()
	for _, u := range cfg.Users {
		hash := u.PasswordHash
		if hash == "" {
			hash = core.HashPassword(u.Password)
		}
		// Replacing an earlier definition replaces its permissions too.
		users.Delete(u.Name)
		err := users.Put(core.UserSpec{
			Name: u.Name, PasswordHash: hash, LoopbackOnly: u.LoopbackOnly, Tags: u.Tags,
			MaxConnections: u.MaxConnections, MaxChannels: u.MaxChannels,
		})
		if err != nil {
			return nil, err
		}
		perms := u.Permissions
		if perms == nil {
			perms = map[string]PermissionConfig{"/": {Configure: ".*", Write: ".*", Read: ".*"}}
		}
		for vhost, p := range perms {
			if err := users.SetPermissions(u.Name, vhost, core.VHostPermissions(p)); err != nil {
				return nil, err
			}
		}
		for _, tp := range u.TopicPermissions {
			vhost := tp.VHost
			if vhost == "" {
				vhost = "/"
			}
			if err := users.SetTopicPermissions(u.Name, vhost, core.TopicPermissions{Exchange: tp.Exchange, Write: tp.Write, Read: tp.Read}); err != nil {
				return nil, err
			}
		}
	}
	return users, nil
}

// loginFailureDelay returns LoginFailureDelay as the servers want it: 0
// (none) becomes negative, since they read zero as "the default".
func (c *Config) loginFailureDelay() time.Duration {
	if c.LoginFailureDelay == 0 {
		return -1
	}
	return c.LoginFailureDelay
}

func (c *Config) validateAuthBackends() error {
	http := false
	for _, b := range c.AuthBackends {
		switch b {
		case "internal":
		case "http":
			http = true
		default:
			return fmt.Errorf("auth_backends: unknown backend %q (want internal or http)", b)
		}
	}
	if http {
		return c.AuthHTTP.Validate()
	}
	return nil
}

// buildAuth chains the configured backends [internal].
func buildAuth(c *Config, users *core.Users) *core.Auth {
	if len(c.AuthBackends) == 0 {
		return core.NewAuth(users)
	}
	var chain []core.Backend
	for _, b := range c.AuthBackends {
		if b == "http" {
			chain = append(chain, authhttp.New(c.AuthHTTP))
		} else {
			chain = append(chain, users)
		}
	}
	return core.NewAuth(chain...)
}

// addVHosts creates the configured vhosts and sets their limits.
func addVHosts(b *core.Broker, vhosts []VHostConfig) {
	for _, v := range vhosts {
		b.AddVHost(v.Name).SetLimits(core.VHostLimits{MaxConnections: v.MaxConnections, MaxQueues: v.MaxQueues})
	}
}

// userFlag collects repeated --user flags.
type userFlag []UserConfig

func (f *userFlag) String() string {
	names := make([]string, len(*f))
	for i, u := range *f {
		names[i] = u.Name
	}
	return strings.Join(names, ",")
}

func (f *userFlag) Set(s string) error {
	u, err := parseUserFlag(s)
	if err != nil {
		return err
	}
	*f = append(*f, u)
	return nil
}

// parseUserFlag parses name:password, name:@file (the password is the
// file's first line) or name:env:VAR (the password is in environment
// variable VAR), so that passwords need not appear in the process list. It
// splits at the first colon, so a password may contain colons and a name
// may not (as in HTTP basic auth).
func parseUserFlag(s string) (UserConfig, error) {
	name, password, ok := strings.Cut(s, ":")
	if !ok {
		return UserConfig{}, fmt.Errorf("%q: want name:password, name:@file or name:env:VAR", s)
	}
	if name == "" {
		return UserConfig{}, fmt.Errorf("%q: name is empty", s)
	}
	switch {
	case strings.HasPrefix(password, "@"):
		b, err := os.ReadFile(password[1:])
		if err != nil {
			return UserConfig{}, fmt.Errorf("user %q: password file: %w", name, err)
		}
		password, _, _ = strings.Cut(string(b), "\n")
		password = strings.TrimSuffix(password, "\r")
	case strings.HasPrefix(password, "env:"):
		v, ok := os.LookupEnv(password[4:])
		if !ok {
			return UserConfig{}, fmt.Errorf("user %q: environment variable %s is not set", name, password[4:])
		}
		password = v
	}
	if password == "" {
		return UserConfig{}, fmt.Errorf("user %q: password is empty", name)
	}
	return UserConfig{Name: name, Password: password}, nil
}
