package core

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestPasswordHashRabbitMQVector: the example of RabbitMQ's passwords
// guide (salt 908DC60A, password test12) verifies, and HashPassword's
// output verifies in turn.
func TestPasswordHashRabbitMQVector(t *testing.T) {
	const rabbit = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
	salt, digest, err := parsePasswordHash(rabbit)
	if err != nil {
		t.Fatal(err)
	}
	if got := encodeHash(salt, "test12"); got != rabbit {
		t.Fatalf("encodeHash = %s, want %s", got, rabbit)
	}
	if !passwordMatches(salt, digest, "test12") || passwordMatches(salt, digest, "test13") {
		t.Fatal("RabbitMQ's hash does not check as it should")
	}
	h := HashPassword("s3cret")
	if h == HashPassword("s3cret") {
		t.Fatal("two hashes of one password share a salt")
	}
	salt, digest, _ = parsePasswordHash(h)
	if !passwordMatches(salt, digest, "s3cret") {
		t.Fatal("HashPassword's hash does not verify")
	}
	for _, bad := range []string{"", "not base64!", "c2hvcnQ="} {
		if CheckPasswordHash(bad) == nil {
			t.Errorf("CheckPasswordHash(%q) accepted", bad)
		}
	}
}

// TestAuthChain: the first backend that accepts wins; refusals and a
// failing backend fall through; the client's text never says why.
func TestAuthChain(t *testing.T) {
	users := NewUsers()
	must(t, users.Put(UserSpec{Name: "a", PasswordHash: HashPassword("pw")}))
	must(t, users.Put(UserSpec{Name: "local", PasswordHash: HashPassword("pw"), LoopbackOnly: true}))
	must(t, users.Put(UserSpec{Name: "certonly"}))
	down := backendFunc(func(context.Context, LoginRequest) (*Principal, error) { return nil, errors.New("connection refused") })
	auth := NewAuth(down, users)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  LoginRequest
		text string // "" = accepted
	}{
		{"right password", LoginRequest{Username: "a", Password: "pw"}, ""},
		{"wrong password", LoginRequest{Username: "a", Password: "nope", Mechanism: "AMQPLAIN"}, "Login was refused using authentication mechanism AMQPLAIN. For details see the broker logfile."},
		{"no such user", LoginRequest{Username: "b", Password: "pw"}, "Login was refused using authentication mechanism PLAIN. For details see the broker logfile."},
		{"loopback-only from afar", LoginRequest{Username: "local", Password: "pw"}, "user 'local' can only connect via localhost"},
		{"loopback-only from loopback", LoginRequest{Username: "local", Password: "pw", Loopback: true}, ""},
		{"passwordless (certificate)", LoginRequest{Username: "certonly", Passwordless: true}, ""},
		{"no password set, password given", LoginRequest{Username: "certonly", Password: ""}, "Login was refused using authentication mechanism PLAIN. For details see the broker logfile."},
		{"passwordless unknown user", LoginRequest{Username: "ghost", Passwordless: true, Mechanism: "EXTERNAL"}, "Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile."},
	} {
		p, err := auth.Login(ctx, tc.req)
		var le *LoginError
		switch {
		case tc.text == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.text == "" && p.Name != tc.req.Username:
			t.Errorf("%s: logged in as %q", tc.name, p.Name)
		case tc.text != "" && !errors.As(err, &le):
			t.Errorf("%s: err %v, want a LoginError", tc.name, err)
		case tc.text != "" && le.Text != tc.text:
			t.Errorf("%s: told %q, want %q", tc.name, le.Text, tc.text)
		case tc.text != "" && tc.req.Username != "local" && !strings.Contains(le.Reason, "connection refused"):
			t.Errorf("%s: log reason %q does not name the failing backend's error", tc.name, le.Reason)
		}
	}
}

type backendFunc func(context.Context, LoginRequest) (*Principal, error)

func (f backendFunc) Authenticate(ctx context.Context, r LoginRequest) (*Principal, error) {
	return f(ctx, r)
}

// TestPermissionPatterns: RabbitMQ's regex semantics (unanchored, "" is
// nothing, amq.default for the default exchange) and topic variable
// expansion, with RabbitMQ's refusal texts.
func TestPermissionPatterns(t *testing.T) {
	users := NewUsers()
	must(t, users.Put(UserSpec{Name: "dev", PasswordHash: HashPassword("pw")}))
	must(t, users.SetPermissions("dev", "/", VHostPermissions{Configure: "", Write: `^(amq\.default|amq\.topic)$`, Read: "dev-"}))
	must(t, users.SetTopicPermissions("dev", "/", TopicPermissions{Exchange: "amq.topic",
		Write: `^devices\.{client_id}\.`, Read: `^commands\.({username}|all)\.`}))
	b := NewBroker(Options{})
	defer b.Close()
	p, err := NewAuth(users).Login(context.Background(), LoginRequest{Username: "dev", Password: "pw"})
	must(t, err)
	ctx := context.Background()
	a, err := b.Open(ctx, p, "/", ConnInfo{ClientID: "d.1"})
	must(t, err)
	defer a.Close()
	for _, tc := range []struct {
		kind, name string
		perm       Permission
		refusal    string
	}{
		{KindQueue, "q", Configure, "configure access to queue 'q' in vhost '/' refused for user 'dev'"},
		{KindQueue, "", Configure, ""}, // "" is ^$: only the empty name
		{KindExchange, "", Write, ""},
		{KindExchange, "amq.topic", Write, ""},
		{KindExchange, "amq.topics", Write, "write access to exchange 'amq.topics' in vhost '/' refused for user 'dev'"},
		{KindQueue, "my-dev-queue", Read, ""}, // unanchored
		{KindQueue, "other", Read, "read access to queue 'other' in vhost '/' refused for user 'dev'"},
	} {
		err := a.Check(ctx, tc.kind, tc.name, tc.perm)
		if got := errText(err); got != tc.refusal {
			t.Errorf("%s %s %q: %q, want %q", tc.perm, tc.kind, tc.name, got, tc.refusal)
		}
	}
	for _, tc := range []struct {
		key     string
		perm    Permission
		refusal string
	}{
		{"devices.d.1.temp", Write, ""},
		{"devices.dx1.temp", Write, "write access to topic 'devices.dx1.temp' in exchange 'amq.topic' in vhost '/' refused for user 'dev'"}, // the client id is quoted
		{"commands.dev.reboot", Read, ""},
		{"commands.all.#", Read, ""},
		{"commands.other.#", Read, "read access to topic 'commands.other.#' in exchange 'amq.topic' in vhost '/' refused for user 'dev'"},
	} {
		err := a.CheckTopic(ctx, "amq.topic", tc.key, tc.perm)
		if got := errText(err); got != tc.refusal {
			t.Errorf("topic %s %q: %q, want %q", tc.perm, tc.key, got, tc.refusal)
		}
	}
	// Topic permissions apply to the exchange they name only.
	if err := a.CheckTopic(ctx, "amq.direct", "anything", Write); err != nil {
		t.Errorf("topic check on a non-topic exchange: %v", err)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeAccessRefused {
		return "not a 403: " + err.Error()
	}
	return e.Text
}

// TestOpenLimitsAndVHostDelete: vhost access, the node, vhost and user
// connection limits and the user channel limit, with RabbitMQ's texts;
// deleting a vhost closes its connections and removes its entities.
func TestOpenLimitsAndVHostDelete(t *testing.T) {
	users := NewUsers()
	must(t, users.Put(UserSpec{Name: "u", PasswordHash: HashPassword("pw"), MaxConnections: 2, MaxChannels: 1}))
	must(t, users.SetPermissions("u", "/", FullPermissions))
	must(t, users.SetPermissions("u", "v", FullPermissions))
	b := NewBroker(Options{MaxConnections: 3})
	defer b.Close()
	v := b.AddVHost("v")
	v.SetLimits(VHostLimits{MaxConnections: 1, MaxQueues: 1})
	p, err := NewAuth(users).Login(context.Background(), LoginRequest{Username: "u", Password: "pw"})
	must(t, err)
	ctx := context.Background()
	var closed []string
	info := ConnInfo{Close: func(reason string) { closed = append(closed, reason) }}
	open := func(vhost string) (*Access, string) {
		a, err := b.Open(ctx, p, vhost, info)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeNotAllowed {
				t.Fatalf("Open(%s): %v, want 530", vhost, err)
			}
			return nil, e.Text
		}
		return a, ""
	}
	if _, text := open("nope"); text != "vhost nope not found" {
		t.Errorf("missing vhost: %q", text)
	}
	b.AddVHost("w")
	if _, text := open("w"); text != "access to vhost 'w' refused for user 'u'" {
		t.Errorf("vhost without permissions: %q", text)
	}
	a1, _ := open("v")
	if _, text := open("v"); text != "connection refused: connection limit (1) is reached for vhost 'v'" {
		t.Errorf("vhost limit: %q", text)
	}
	a2, _ := open("/")
	if _, text := open("/"); text != "Connection refused for user 'u': user connection limit (2) is reached" {
		t.Errorf("user limit: %q", text)
	}
	must(t, a2.OpenChannel())
	if err := a1.OpenChannel(); errText403or530(err) != "number of channels opened for user 'u' has reached the maximum allowed user limit of (1)" || !IsLimit(err) {
		t.Errorf("channel limit: %v", err)
	}
	a2.CloseChannel()
	must(t, a1.OpenChannel())

	// The node limit, 3, over every user.
	must(t, users.Put(UserSpec{Name: "x", PasswordHash: HashPassword("pw")}))
	must(t, users.SetPermissions("x", "/", FullPermissions))
	px, err := NewAuth(users).Login(ctx, LoginRequest{Username: "x", Password: "pw"})
	must(t, err)
	ax, err := b.Open(ctx, px, "/", ConnInfo{})
	must(t, err)
	if _, err := b.Open(ctx, px, "/", ConnInfo{}); errText403or530(err) != "connection refused: node connection limit (3) is reached" || !IsLimit(err) {
		t.Errorf("node limit: %v", err)
	}
	ax.Close()

	if _, err := v.DeclareQueue(QueueDecl{Name: "q1", Durable: true}); err != nil {
		t.Fatal(err)
	}
	_, err = v.DeclareQueue(QueueDecl{Name: "q2"})
	if e := (*Error)(nil); !errors.As(err, &e) || e.Code != CodePreconditionFailed ||
		e.Text != "cannot declare queue 'q2': queue limit in vhost 'v' (1) is reached" {
		t.Errorf("queue limit: %v", err)
	}
	must(t, v.DeclareExchange(ExchangeDecl{Name: "x", Kind: "topic"}))
	must(t, b.DeleteVHost("v"))
	if len(closed) != 1 || closed[0] != "vhost 'v' is deleted" {
		t.Errorf("connections asked to close: %q", closed)
	}
	if b.VHost("v") != nil || v.Queue("q1") != nil || v.HasExchange("x") {
		t.Error("the deleted vhost or its entities remain")
	}
	if _, err := v.DeclareQueue(QueueDecl{Name: "late"}); err == nil {
		t.Error("declared a queue in a deleted vhost")
	}
	a1.Close()
	a2.Close()
}

func errText403or530(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Text
	}
	return ""
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkAccessPublishCheck is the check basic.publish makes on each
// message: write on the exchange (cached after the first) and topic
// permissions (none set: skipped). It must not allocate.
func BenchmarkAccessPublishCheck(b *testing.B) {
	users := NewUsers()
	must(b, users.Put(UserSpec{Name: "u", PasswordHash: HashPassword("pw")}))
	must(b, users.SetPermissions("u", "/", VHostPermissions{Configure: "^u-", Write: `^(u-.*|amq\.topic)$`, Read: "^u-"}))
	br := NewBroker(Options{})
	defer br.Close()
	ctx := context.Background()
	p, err := NewAuth(users).Login(ctx, LoginRequest{Username: "u", Password: "pw"})
	must(b, err)
	a, err := br.Open(ctx, p, "/", ConnInfo{})
	must(b, err)
	defer a.Close()
	b.ReportAllocs()
	for b.Loop() {
		if err := a.Check(ctx, KindExchange, "amq.topic", Write); err != nil {
			b.Fatal(err)
		}
		if err := a.CheckTopic(ctx, "amq.topic", "sensors.7.temp", Write); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAccessTopicCheck is the same with a topic permission that
// expands {client_id}: one regexp match per publish.
func BenchmarkAccessTopicCheck(b *testing.B) {
	users := NewUsers()
	must(b, users.Put(UserSpec{Name: "u", PasswordHash: HashPassword("pw")}))
	must(b, users.SetPermissions("u", "/", FullPermissions))
	must(b, users.SetTopicPermissions("u", "/", TopicPermissions{Exchange: "amq.topic", Write: `^devices\.{client_id}\.`}))
	br := NewBroker(Options{})
	defer br.Close()
	ctx := context.Background()
	p, err := NewAuth(users).Login(ctx, LoginRequest{Username: "u", Password: "pw"})
	must(b, err)
	a, err := br.Open(ctx, p, "/", ConnInfo{ClientID: "d42"})
	must(b, err)
	defer a.Close()
	b.ReportAllocs()
	for b.Loop() {
		if err := a.CheckTopic(ctx, "amq.topic", "devices.d42.temp", Write); err != nil {
			b.Fatal(err)
		}
	}
}
