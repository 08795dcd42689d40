package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/core"
)

// TestUserFlagSources: --user takes the password inline, from a file's
// first line or from an environment variable.
func TestUserFlagSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("from-file\nignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FERRYMQ_TEST_PW", "from:env")
	for _, tc := range []struct {
		arg, want, wantErr string
	}{
		{"a:inline", "inline", ""},
		{"a:@" + file, "from-file", ""},
		{"a:env:FERRYMQ_TEST_PW", "from:env", ""},
		{"a:@" + filepath.Join(dir, "missing"), "", "password file"},
		{"a:env:FERRYMQ_TEST_UNSET", "", "FERRYMQ_TEST_UNSET is not set"},
	} {
		u, err := parseUserFlag(tc.arg)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: err %v, want %q", tc.arg, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || u.Password != tc.want):
			t.Errorf("%s: %+v %v, want password %q", tc.arg, u, err, tc.want)
		}
	}
}

// TestAccessConfig: users with password_hash, permissions, topic
// permissions and limits, vhosts with limits and the auth backend chain
// from the config file reach core as written.
func TestAccessConfig(t *testing.T) {
	const file = `
max_connections: 100
vhosts:
  - plant1
  - {name: plant2, max_connections: 10, max_queues: 20}
users:
  - name: dev42
    password_hash: kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR   # test12
    max_connections: 2
    permissions:
      plant1: {configure: "^mqtt-subscription-", write: "^amq\\.topic$", read: "^amq\\.topic$"}
    topic_permissions:
      - {vhost: plant1, exchange: amq.topic, write: "^devices\\.{client_id}\\.", read: "^commands\\.{client_id}\\."}
  - name: ops
    password: s3cret
    tags: [administrator]
auth_backends: [http, internal]
auth_http:
  user_path: http://127.0.0.1:1/auth/user
  vhost_path: http://127.0.0.1:1/auth/vhost
  resource_path: http://127.0.0.1:1/auth/resource
  topic_path: http://127.0.0.1:1/auth/topic
  cache_ttl: 1m
`
	path := filepath.Join(t.TempDir(), "ferrymq.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig([]string{"--config", path}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	users, err := buildUsers(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := core.NewBroker(core.Options{MaxConnections: cfg.MaxConnections})
	defer b.Close()
	addVHosts(b, cfg.VHosts)
	if b.VHost("plant1") == nil || b.VHost("plant2") == nil {
		t.Fatal("vhosts not created")
	}
	// The HTTP backend is down (port 1): the chain falls through to the
	// internal users.
	auth := buildAuth(&cfg, users)
	ctx := context.Background()
	p, err := auth.Login(ctx, core.LoginRequest{Username: "dev42", Password: "test12", ClientID: "d42"})
	if err != nil {
		t.Fatalf("login with the RabbitMQ hash: %v", err)
	}
	if p.MaxConnections != 2 {
		t.Errorf("user limit %d", p.MaxConnections)
	}
	if _, err := b.Open(ctx, p, "/", core.ConnInfo{}); err == nil {
		t.Error("dev42 may use vhost / without permissions there")
	}
	a, err := b.Open(ctx, p, "plant1", core.ConnInfo{ClientID: "d42"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.CheckTopic(ctx, "amq.topic", "devices.d42.temp", core.Write); err != nil {
		t.Error(err)
	}
	if err := a.CheckTopic(ctx, "amq.topic", "devices.d43.temp", core.Write); err == nil {
		t.Error("topic permission not applied")
	}
	if p, err := auth.Login(ctx, core.LoginRequest{Username: "ops", Password: "s3cret"}); err != nil || !p.HasTag(core.TagAdministrator) {
		t.Errorf("ops: %v %+v", err, p)
	}

	for _, tc := range []struct{ name, file, wantErr string }{
		{"bad hash", "users:\n  - {name: a, password_hash: nope}\n", "password hash"},
		{"hash and password", "users:\n  - {name: a, password: x, password_hash: kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR}\n", "both set"},
		{"bad pattern", "users:\n  - {name: a, password: x, permissions: {/: {configure: \"(\", write: \"\", read: \"\"}}}\n", "permission pattern"},
		{"unknown backend", "auth_backends: [ldap]\n", `unknown backend "ldap"`},
		{"http without paths", "auth_backends: [http]\n", "auth_http.user_path is empty"},
		{"vhost limit negative", "vhosts:\n  - {name: v, max_queues: -1}\n", "limits must be >= 0"},
	} {
		path := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadConfig([]string{"--config", path}, io.Discard); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

// TestRunAccessControl: the binary with a config file of vhosts and
// hashed users admits a user to its vhost only, enforces its permissions,
// and logs a failed login at WARN after the configured delay.
func TestRunAccessControl(t *testing.T) {
	const file = `
login_failure_delay: 50ms
vhosts: [plant1]
users:
  - name: dev42
    password_hash: kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR
    permissions:
      plant1: {configure: "^dev42-", write: "^amq\\.topic$", read: "^dev42-"}
`
	path := filepath.Join(t.TempDir(), "ferrymq.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var log syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append(freePorts(), "--data-dir", t.TempDir(), "--config", path), &log)
	}()
	defer func() {
		cancel()
		<-done
	}()
	addr := waitFor(t, &log, readyLine)[1]
	dial := func(user, pass, vhost string) (*amqp091.Connection, error) {
		return amqp091.DialConfig("amqp://"+user+":"+pass+"@"+addr+"/"+vhost, amqp091.Config{Dial: amqp091.DefaultDial(10 * time.Second)})
	}
	conn, err := dial("dev42", "test12", "plant1")
	if err != nil {
		t.Fatalf("dev42 to plant1: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("dev42-q", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	_, err = ch.QueueDeclare("other", false, true, false, false, nil)
	var ae *amqp091.Error
	if !errors.As(err, &ae) || ae.Code != amqp091.AccessRefused || ae.Reason != "ACCESS_REFUSED - configure access to queue 'other' in vhost 'plant1' refused for user 'dev42'" {
		t.Errorf("declare of another's queue: %v", err)
	}
	if _, err := dial("dev42", "test12", ""); !errors.As(err, &ae) || ae.Code != amqp091.NotAllowed {
		t.Errorf("dev42 to /: %v, want 530", err)
	}
	start := time.Now()
	if _, err := dial("dev42", "wrong", "plant1"); !errors.As(err, &ae) || ae.Code != amqp091.AccessRefused {
		t.Errorf("wrong password: %v, want 403", err)
	}
	if took := time.Since(start); took < 50*time.Millisecond {
		t.Errorf("a failed login was answered after %v, before the delay", took)
	}
	waitFor(t, &log, regexp.MustCompile(`level=WARN msg="amqp: login failed" user=dev42 peer=127\.0\.0\.1:\d+ mechanism=PLAIN reason=".*invalid credentials`))
}
