package authhttp_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/cmd/ferrymq/authhttp"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt"
	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

const wait = 10 * time.Second

// registry is a device registry speaking rabbitmq_auth_backend_http:
// users "<name>" with password "<name>-pw"; "admin" is tagged
// administrator; "mallory" is denied; vhost "secret" is denied to all;
// a user may use the exchanges amq.topic and amq.default and the queues
// named after it or the MQTT session queues; a device publishes only
// under devices.<client id>.
type registry struct {
	mu       sync.Mutex
	requests []http.Request // path and form of each request
	forms    []map[string]string
}

func (r *registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	form := req.URL.Query() // http_method get
	if req.Method == http.MethodPost {
		if req.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			http.Error(w, "want a form POST", http.StatusBadRequest)
			return
		}
		if err := req.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		form = req.PostForm
	}
	f := map[string]string{"path": req.URL.Path, "method": req.Method}
	for k := range form {
		f[k] = form.Get(k)
	}
	r.mu.Lock()
	r.forms = append(r.forms, f)
	r.mu.Unlock()
	user := f["username"]
	allow := false
	switch req.URL.Path {
	case "/auth/user":
		if user == "admin" && f["password"] == "admin-pw" {
			w.Write([]byte("allow administrator management"))
			return
		}
		allow = user != "mallory" && f["password"] == user+"-pw"
	case "/auth/vhost":
		allow = f["vhost"] != "secret" && f["ip"] != ""
	case "/auth/resource":
		name := f["name"]
		allow = name == "amq.topic" || name == "amq.default" || strings.HasPrefix(name, user+"-") ||
			strings.HasPrefix(name, "mqtt-subscription-") || user == "admin"
	case "/auth/topic":
		allow = f["permission"] == "read" || strings.HasPrefix(f["routing_key"], "devices."+f["variable_map.client_id"]+".")
	}
	if allow {
		w.Write([]byte("allow"))
	} else {
		w.Write([]byte("deny"))
	}
}

func (r *registry) count(path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, f := range r.forms {
		if f["path"] == path {
			n++
		}
	}
	return n
}

func (r *registry) last(path string) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.forms) - 1; i >= 0; i-- {
		if r.forms[i]["path"] == path {
			return r.forms[i]
		}
	}
	return nil
}

func config(base string, ttl time.Duration) authhttp.Config {
	return authhttp.Config{
		UserPath: base + "/auth/user", VHostPath: base + "/auth/vhost",
		ResourcePath: base + "/auth/resource", TopicPath: base + "/auth/topic",
		CacheTTL: ttl, Timeout: 2 * time.Second,
	}
}

// broker starts core with AMQP and MQTT listeners authenticating through
// auth, and returns their addresses.
func broker(t *testing.T, auth *core.Auth) (b *core.Broker, amqpAddr, mqttAddr string) {
	t.Helper()
	b = core.NewBroker(core.Options{})
	b.AddVHost("secret")
	t.Cleanup(b.Close)
	a := amqp.NewServer(b, amqp.Config{Auth: auth, LoginFailureDelay: time.Millisecond})
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go a.Serve(aln)
	t.Cleanup(func() { a.Shutdown(context.Background()) })
	m, err := mqtt.NewServer(b, mqtt.Config{Auth: auth, LoginFailureDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go m.Serve(mln)
	t.Cleanup(func() { m.Shutdown(context.Background()) })
	return b, aln.Addr().String(), mln.Addr().String()
}

func dialAMQP(addr, user, pass, vhost string) (*amqp091.Connection, error) {
	return amqp091.DialConfig("amqp://"+user+":"+pass+"@"+addr+"/"+vhost, amqp091.Config{Dial: amqp091.DefaultDial(wait)})
}

func amqpCode(err error) int {
	var e *amqp091.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return -1
}

// TestHTTPBackend: logins, tags, vhost, resource and topic questions go to
// a real HTTP service with RabbitMQ's form fields, over AMQP and MQTT.
func TestHTTPBackend(t *testing.T) {
	reg := &registry{}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	_, amqpAddr, mqttAddr := broker(t, core.NewAuth(authhttp.New(config(srv.URL, 0))))

	t.Run("allow", func(t *testing.T) {
		conn, err := dialAMQP(amqpAddr, "dev1", "dev1-pw", "")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if f := reg.last("/auth/user"); f["username"] != "dev1" || f["password"] != "dev1-pw" {
			t.Errorf("user_path form %v", f)
		}
		if f := reg.last("/auth/vhost"); f["username"] != "dev1" || f["vhost"] != "/" || f["ip"] != "127.0.0.1" {
			t.Errorf("vhost_path form %v", f)
		}
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclare("dev1-q", false, true, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if f := reg.last("/auth/resource"); f["resource"] != "queue" || f["name"] != "dev1-q" || f["permission"] != "configure" || f["vhost"] != "/" {
			t.Errorf("resource_path form %v", f)
		}
		_, err = ch.QueueDeclare("dev2-q", false, true, false, false, nil)
		if amqpCode(err) != amqp091.AccessRefused || !strings.Contains(err.Error(), "configure access to queue 'dev2-q' in vhost '/' refused for user 'dev1'") {
			t.Errorf("declare of another's queue: %v", err)
		}
	})
	t.Run("deny", func(t *testing.T) {
		_, err := dialAMQP(amqpAddr, "mallory", "mallory-pw", "")
		if amqpCode(err) != amqp091.AccessRefused {
			t.Errorf("denied user: %v", err)
		}
		_, err = dialAMQP(amqpAddr, "dev1", "dev1-pw", "secret")
		if amqpCode(err) != amqp091.NotAllowed || !strings.Contains(err.Error(), "access to vhost 'secret' refused for user 'dev1'") {
			t.Errorf("denied vhost: %v", err)
		}
		_, code, _ := mqtttest.DialV5(t, mqttAddr, mqtttest.V5Options{ClientID: "m", Username: "mallory", Password: "mallory-pw"})
		if code == nil || code.ReasonCode != 0x86 {
			t.Errorf("denied MQTT user: CONNACK %v", code)
		}
	})
	t.Run("tags", func(t *testing.T) {
		// administrator (from "allow administrator management") may use
		// an MQTT client's session queue; a user without it may not.
		c := mqtttest.ConnectV5(t, mqttAddr, mqtttest.V5Options{ClientID: "dev1", Username: "dev1", Password: "dev1-pw", SessionExpiry: 60})
		c.SubscribeAt(t, 1, "commands/dev1/#")
		for _, tc := range []struct {
			user string
			want int
		}{{"admin", 0}, {"dev2", amqp091.AccessRefused}} {
			conn, err := dialAMQP(amqpAddr, tc.user, tc.user+"-pw", "")
			if err != nil {
				t.Fatal(err)
			}
			ch, err := conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = ch.Get("mqtt-subscription-dev1qos1", true)
			if amqpCode(err) != tc.want && !(tc.want == 0 && err == nil) {
				t.Errorf("%s: basic.get of the session queue: %v, want %d", tc.user, err, tc.want)
			}
			conn.Close()
		}
	})
	t.Run("topic", func(t *testing.T) {
		c := mqtttest.ConnectV5(t, mqttAddr, mqtttest.V5Options{ClientID: "dev7", Username: "dev7", Password: "dev7-pw"})
		for _, tc := range []struct {
			topic string
			want  byte
		}{{"devices/dev7/temp", 0x10}, {"devices/dev8/temp", 0x87}} {
			pr, err := c.Publish(mqtttest.Ctx(t), &paho.Publish{Topic: tc.topic, QoS: 1, Payload: []byte("21")})
			if pr == nil {
				t.Fatalf("publish %s: %v", tc.topic, err)
			}
			if pr.ReasonCode != tc.want && !(tc.want == 0x10 && pr.ReasonCode == 0) {
				t.Errorf("publish %s: PUBACK %#x, want %#x", tc.topic, pr.ReasonCode, tc.want)
			}
		}
		f := reg.last("/auth/topic")
		want := map[string]string{"username": "dev7", "vhost": "/", "resource": "topic", "name": "amq.topic", "permission": "write",
			"routing_key": "devices.dev8.temp", "variable_map.client_id": "dev7", "variable_map.username": "dev7", "variable_map.vhost": "/"}
		for k, v := range want {
			if f[k] != v {
				t.Errorf("topic_path field %s = %q, want %q (form %v)", k, f[k], v, f)
			}
		}
	})
}

// TestHTTPBackendCache: with a cache TTL a repeated question is answered
// from the cache.
func TestHTTPBackendCache(t *testing.T) {
	reg := &registry{}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	_, amqpAddr, _ := broker(t, core.NewAuth(authhttp.New(config(srv.URL, time.Hour))))
	for range 3 {
		conn, err := dialAMQP(amqpAddr, "dev1", "dev1-pw", "")
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	if n := reg.count("/auth/user"); n != 1 {
		t.Errorf("user_path asked %d times, want 1", n)
	}
	if _, err := dialAMQP(amqpAddr, "dev1", "wrong", ""); amqpCode(err) != amqp091.AccessRefused {
		t.Errorf("a wrong password was answered from the cache: %v", err)
	}
}

// TestHTTPBackendDown: with the service down a login is refused at once
// (no hang), and the internal backend after it in the chain still logs
// its own users in, as RabbitMQ's auth_backends.
func TestHTTPBackendDown(t *testing.T) {
	srv := httptest.NewServer(&registry{})
	base := srv.URL
	srv.Close() // nothing listens there now
	users := core.DefaultUsers()
	if err := users.Put(core.UserSpec{Name: "local", PasswordHash: core.HashPassword("local-pw")}); err != nil {
		t.Fatal(err)
	}
	if err := users.SetPermissions("local", "/", core.FullPermissions); err != nil {
		t.Fatal(err)
	}
	_, amqpAddr, mqttAddr := broker(t, core.NewAuth(authhttp.New(config(base, 0)), users))
	start := time.Now()
	_, err := dialAMQP(amqpAddr, "dev1", "dev1-pw", "")
	if amqpCode(err) != amqp091.AccessRefused {
		t.Fatalf("login with the service down: %v, want 403", err)
	}
	if took := time.Since(start); took > wait/2 {
		t.Errorf("refusal took %v", took)
	}
	_, ca, _ := mqtttest.DialV5(t, mqttAddr, mqtttest.V5Options{ClientID: "x", Username: "dev1", Password: "dev1-pw"})
	if ca == nil || ca.ReasonCode != 0x86 {
		t.Errorf("MQTT login with the service down: CONNACK %v, want 0x86", ca)
	}
	conn, err := dialAMQP(amqpAddr, "local", "local-pw", "")
	if err != nil {
		t.Fatalf("internal fallback: %v", err)
	}
	conn.Close()
}

// TestHTTPBackendGet: with http_method get the form is in the query string.
func TestHTTPBackendGet(t *testing.T) {
	reg := &registry{}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	cfg := config(srv.URL, 0)
	cfg.Method = "get"
	_, amqpAddr, _ := broker(t, core.NewAuth(authhttp.New(cfg)))
	conn, err := dialAMQP(amqpAddr, "dev1", "dev1-pw", "")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if f := reg.last("/auth/user"); f["method"] != http.MethodGet || f["username"] != "dev1" || f["password"] != "dev1-pw" {
		t.Errorf("user_path request %v", f)
	}
}
