package interop_test

// ferrymq's own management endpoints against the real binary: definitions
// through rabbitmqadmin, MQTT sessions and retained messages with real
// MQTT clients, bridges to another ferrymq.

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// readJSONFile decodes a JSON file into a generic value.
func readJSONFile(t *testing.T, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, raw)
	}
	return v
}

// TestObjectsDefinitionsRabbitmqadmin: rabbitmqadmin exports what it
// declared on one ferrymq and imports it into another, whole and per
// vhost; there a user logs in with its password, messages route through
// the imported topology, and an export gives back the same document.
func TestObjectsDefinitionsRabbitmqadmin(t *testing.T) {
	a := StartBroker(t)
	admin := func(b *Broker, args ...string) string { return runRabbitmqadmin(t, b, args...) }
	admin(a, "declare", "vhost", "name=plant1")
	admin(a, "declare", "user", "name=bob", "password=s3cret", "tags=monitoring")
	admin(a, "declare", "permission", "vhost=plant1", "user=bob", "configure=^bob-.*", "write=.*", "read=.*")
	admin(a, "declare", "permission", "vhost=plant1", "user=guest", "configure=.*", "write=.*", "read=.*")
	admin(a, "-V", "plant1", "declare", "exchange", "name=orders", "type=topic", "durable=true")
	admin(a, "-V", "plant1", "declare", "queue", "name=q.orders", "durable=true", `arguments={"x-max-length": 1000, "x-message-ttl": 60000}`)
	admin(a, "-V", "plant1", "declare", "binding", "source=orders", "destination=q.orders", "routing_key=order.#")
	admin(a, "-V", "plant1", "declare", "binding", "source=amq.topic", "destination=orders", "destination_type=exchange", "routing_key=ext.#")
	admin(a, "declare", "vhost_limit", "vhost=plant1", "name=max-connections", "value=40")

	dir := t.TempDir()
	whole := filepath.Join(dir, "all.json")
	if out := admin(a, "export", whole); !strings.Contains(out, "Exported definitions") {
		t.Fatalf("export: %s", out)
	}
	defs := readJSONFile(t, whole)
	for _, key := range []string{"users", "vhosts", "permissions", "topic_permissions", "parameters", "policies", "queues", "exchanges", "bindings"} {
		if _, ok := defs[key]; !ok {
			t.Errorf("export lacks %q", key)
		}
	}

	b := StartBroker(t)
	if out := admin(b, "import", whole); !strings.Contains(out, "Uploaded definitions") {
		t.Fatalf("import: %s", out)
	}
	// bob logs in to b with the password he had on a (the hash moved).
	u := url.URL{Scheme: "amqp", User: url.UserPassword("bob", "s3cret"), Host: b.Addr, Path: "/plant1"}
	conn, err := amqp.Dial(u.String())
	if err != nil {
		t.Fatalf("bob on the imported broker: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if q, err := ch.QueueDeclarePassive("q.orders", true, false, false, false, amqp.Table{"x-max-length": int64(1000), "x-message-ttl": int64(60000)}); err != nil || q.Messages != 0 {
		t.Fatalf("q.orders on b: %+v %v", q, err)
	}
	// Through the exchange-to-exchange and queue bindings.
	if err := ch.Publish("amq.topic", "ext.1", false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	ch.Publish("orders", "order.1", false, false, amqp.Publishing{Body: []byte("y")})
	deadline := time.Now().Add(mgmtWait)
	for {
		q, err := ch.QueueDeclarePassive("q.orders", true, false, false, false, amqp.Table{"x-max-length": int64(1000), "x-message-ttl": int64(60000)})
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages == 1 {
			break // ext.1 does not match order.#; order.1 does
		}
		if time.Now().After(deadline) {
			t.Fatalf("q.orders holds %d messages, want 1", q.Messages)
		}
		time.Sleep(20 * time.Millisecond)
	}

	again := filepath.Join(dir, "again.json")
	admin(b, "export", again)
	if got, want := readJSONFile(t, again), defs; !reflect.DeepEqual(got, want) {
		t.Errorf("export after import differs:\n%v\n%v", got, want)
	}

	// Per vhost: plant1's objects into another vhost of a third broker.
	one := filepath.Join(dir, "plant1.json")
	admin(a, "-V", "plant1", "export", one)
	if d := readJSONFile(t, one); d["users"] != nil || len(d["queues"].([]any)) != 1 {
		t.Fatalf("per-vhost export: %v", d)
	}
	c := StartBroker(t)
	admin(c, "declare", "vhost", "name=plant2")
	admin(c, "declare", "permission", "vhost=plant2", "user=guest", "configure=.*", "write=.*", "read=.*")
	admin(c, "-V", "plant2", "import", one)
	var qs []map[string]any
	apiJSON(t, c, "GET", "/api/queues/plant2", nil, &qs)
	if len(qs) != 1 || qs[0]["name"] != "q.orders" {
		t.Fatalf("queues of plant2: %v", qs)
	}

	// What ferrymq cannot do is reported, not dropped in silence.
	code, body := apiCall(t, c, "guest", "guest", "POST", "/api/definitions", map[string]any{
		"policies": []any{map[string]any{"vhost": "/", "name": "ttl", "pattern": ".*", "apply-to": "queues", "definition": map[string]any{"message-ttl": 1000}}},
	})
	if code != 200 || !strings.Contains(string(body), "policy 'ttl'") || !strings.Contains(string(body), "x-message-ttl=1000") {
		t.Fatalf("import with a policy: %d %s", code, body)
	}
	waitLog(t, c, "definitions import: policy 'ttl'")
	code, body = apiCall(t, c, "guest", "guest", "POST", "/api/definitions", map[string]any{
		"queues": []any{map[string]any{"vhost": "/", "name": "bad", "arguments": map[string]any{"x-expires": -1}}},
	})
	if code != 400 || !strings.Contains(string(body), "queue 'bad'") {
		t.Fatalf("import of a bad queue: %d %s", code, body)
	}
}

// TestObjectsMQTTSessionsAPI: MQTT sessions and retained messages as the
// API shows them, and what removing and clearing do to real clients.
// --max-queued-messages 1 lets a QoS 0 session away drop messages, which
// its dropped count shows.
func TestObjectsMQTTSessionsAPI(t *testing.T) {
	b := StartBroker(t, "--max-queued-messages", "1")
	v5 := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "meter-5", SessionExpiry: 600})
	v5.SubscribeAt(t, 1, "cmd/meter-5/#")
	v3 := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "meter-3", Persistent: true})
	v3.SubscribeAt(t, 1, "cmd/meter-3/#")
	v3.Disconnect(100)
	// Offline before the publish below, or it may go out to the closing
	// connection and stay in flight (unacked) rather than queued.
	waitOffline(t, b, "meter-3")
	v0 := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "meter-0", Persistent: true})
	v0.SubscribeAt(t, 0, "note/meter-0/#")
	v0.Disconnect(100)
	waitOffline(t, b, "meter-0")
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "ops"})
	pub.PublishAcked(t, &paho.Publish{Topic: "cmd/meter-3/reboot", QoS: 1, Payload: []byte("now")})
	// Three for meter-0's QoS 0 subscription: one kept, two dropped
	// beyond max_queued_messages.
	for i := range 3 {
		pub.PublishAcked(t, &paho.Publish{Topic: "note/meter-0/n", QoS: 1, Payload: []byte{byte('0' + i)}})
	}
	for _, tp := range []string{"state/meter-3", "state/meter-5", "config/all"} {
		pub.PublishAcked(t, &paho.Publish{Topic: tp, QoS: 1, Retain: true, Payload: []byte("v:" + tp)})
	}

	type sessionJSON struct {
		ClientID      string `json:"client_id"`
		VHost         string `json:"vhost"`
		User          string `json:"user"`
		Connected     bool   `json:"connected"`
		Protocol      string `json:"protocol"`
		Persistent    bool   `json:"persistent"`
		Subscriptions []struct {
			Filter string `json:"filter"`
			QoS    int    `json:"qos"`
		} `json:"subscriptions"`
		Queued   int     `json:"queued"`
		Inflight int     `json:"inflight"`
		Dropped  *int    `json:"dropped"`
		LastSeen *string `json:"last_seen"`
	}
	sessions := func() map[string]sessionJSON {
		var list []sessionJSON
		apiJSON(t, b, "GET", "/api/mqtt/sessions", nil, &list)
		out := map[string]sessionJSON{}
		for _, s := range list {
			out[s.ClientID] = s
		}
		return out
	}
	var s map[string]sessionJSON
	deadline := time.Now().Add(mgmtWait)
	for s = sessions(); s["meter-3"].Connected || s["meter-3"].Queued != 1 || s["meter-0"].Queued != 1; s = sessions() {
		if time.Now().After(deadline) {
			t.Fatalf("meter-3 not disconnected with 1 queued, or meter-0 without 1 queued: %+v, %+v", s["meter-3"], s["meter-0"])
		}
		time.Sleep(20 * time.Millisecond)
	}
	m5, m3, m0 := s["meter-5"], s["meter-3"], s["meter-0"]
	if m0.Dropped == nil || *m0.Dropped != 2 {
		t.Errorf("meter-0 dropped %v, want 2 (3 QoS 0 messages, max_queued_messages 1)", m0.Dropped)
	}
	if m3.Dropped == nil || *m3.Dropped != 0 {
		t.Errorf("meter-3 dropped %v, want 0", m3.Dropped)
	}
	if !m5.Connected || m5.Protocol != "MQTT 5.0" || m5.User != "guest" || m5.VHost != "/" || !m5.Persistent ||
		len(m5.Subscriptions) != 1 || m5.Subscriptions[0].Filter != "cmd/meter-5/#" || m5.Subscriptions[0].QoS != 1 || m5.LastSeen == nil {
		t.Errorf("meter-5: %+v", m5)
	}
	if m3.Protocol != "MQTT 3.1.1" || !m3.Persistent || m3.LastSeen == nil || len(m3.Subscriptions) != 1 {
		t.Errorf("meter-3: %+v", m3)
	}
	var one sessionJSON
	apiJSON(t, b, "GET", "/api/mqtt/sessions/%2F/meter-5", nil, &one)
	if one.ClientID != "meter-5" {
		t.Errorf("one session: %+v", one)
	}

	// Removing a connected MQTT 5 session: DISCONNECT 0x98, and it is
	// gone, queue and all.
	if code, body := apiCall(t, b, "guest", "guest", "DELETE", "/api/mqtt/sessions/%2F/meter-5", nil); code != 204 {
		t.Fatalf("DELETE session: %d %s", code, body)
	}
	if d := mqtttest.WaitFor(t, v5.Disconnects, mgmtWait, "DISCONNECT"); d.ReasonCode != 0x98 {
		t.Fatalf("DISCONNECT reason %#x, want 0x98 (administrative action)", d.ReasonCode)
	}
	if _, ok := sessions()["meter-5"]; ok {
		t.Error("meter-5 still listed")
	}
	if code, _ := apiCall(t, b, "guest", "guest", "GET", "/api/mqtt/sessions/%2F/meter-5", nil); code != 404 {
		t.Errorf("GET removed session: %d", code)
	}
	// A disconnected one: the message waiting for it goes with it.
	apiCall(t, b, "guest", "guest", "DELETE", "/api/mqtt/sessions/%2F/meter-3", nil)
	back := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "meter-3", Persistent: true})
	if back.SessionPresent {
		t.Error("meter-3 found its removed session")
	}

	// Retained messages: listed by filter, cleared by filter.
	type retainedJSON struct {
		Topic   string `json:"topic"`
		Payload string `json:"payload"`
		Bytes   int    `json:"payload_bytes"`
		QoS     int    `json:"qos"`
	}
	var ret []retainedJSON
	apiJSON(t, b, "GET", "/api/mqtt/retained/%2F?filter="+url.QueryEscape("state/+"), nil, &ret)
	if len(ret) != 2 || ret[0].Topic != "state/meter-3" || ret[0].Payload != "v:state/meter-3" || ret[0].QoS != 1 {
		t.Fatalf("retained state/+: %+v", ret)
	}
	var cleared struct{ Cleared int }
	apiJSON(t, b, "DELETE", "/api/mqtt/retained/%2F?filter="+url.QueryEscape("state/#"), nil, &cleared)
	if cleared.Cleared != 2 {
		t.Fatalf("cleared %d, want 2", cleared.Cleared)
	}
	apiJSON(t, b, "GET", "/api/mqtt/retained", nil, &ret)
	if len(ret) != 1 || ret[0].Topic != "config/all" {
		t.Fatalf("retained after clearing: %+v", ret)
	}
	if code, _ := apiCall(t, b, "guest", "guest", "DELETE", "/api/mqtt/retained/%2F", nil); code != 400 {
		t.Errorf("DELETE retained without a filter: %d, want 400", code)
	}
	// A new subscriber gets only what was not cleared.
	sub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "late"})
	sub.SubscribeAt(t, 0, "state/#", "config/#")
	pub.Send(t, "config/end", 0, "end")
	if got := sub.Until(t, "end"); len(got) != 1 || got[0].Topic != "config/all" {
		t.Errorf("late subscriber got %s", mqtttest.V5Topics(got))
	}
}

type bridgeJSON struct {
	Name        string  `json:"name"`
	Connected   bool    `json:"connected"`
	Paused      bool    `json:"paused"`
	State       string  `json:"state"`
	LastError   string  `json:"last_error"`
	LastErrorAt *string `json:"last_error_at"`
	Backlog     int     `json:"backlog_messages"`
	Forwarded   int     `json:"forwarded"`
}

// waitBridge polls /api/bridges until cond holds for the one link.
func waitBridge(t *testing.T, b *Broker, what string, cond func(bridgeJSON) bool) bridgeJSON {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for {
		var list []bridgeJSON
		apiJSON(t, b, "GET", "/api/bridges", nil, &list)
		if len(list) == 1 && cond(list[0]) {
			return list[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge never %s: %+v\n%s", what, list, b.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countLines counts the log lines holding every one of subs.
func countLines(out string, subs ...string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(l, s)
		}
		if all {
			n++
		}
	}
	return n
}

// TestObjectsBridgeAPI: a link to another ferrymq with a bad password
// says so at WARN once (not at every retry) and in /api/bridges; a working
// link is paused and resumed over the API, its backlog held meanwhile.
func TestObjectsBridgeAPI(t *testing.T) {
	up := StartBroker(t, "--node-name", "up", "--user", "edge:right")
	for _, scheme := range []string{"mqtt", "mqtt3", "amqp"} {
		t.Run("bad password "+scheme, func(t *testing.T) {
			addr := up.MQTTAddr
			if scheme == "amqp" {
				addr = up.Addr
			}
			edge := StartBroker(t, "--node-name", "edge", "--log-level", "debug", "--bridge-url", scheme+"://edge:Wr0ngPw@"+addr+"/")
			st := waitBridge(t, edge, "failing", func(b bridgeJSON) bool { return b.LastError != "" })
			if st.Connected || st.State != "connecting" || st.LastErrorAt == nil {
				t.Errorf("status %+v", st)
			}
			// A few retries later, still one WARN.
			deadline := time.Now().Add(40 * time.Second)
			for countLines(edge.Output(), "connect failed", "attempt=3") == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("no third attempt:\n%s", edge.Output())
				}
				time.Sleep(50 * time.Millisecond)
			}
			out := edge.Output()
			if n := countLines(out, "level=WARN", "cannot connect"); n != 1 {
				t.Errorf("%d WARN lines for one refusal, want 1:\n%s", n, out)
			}
			if strings.Contains(out, "Wr0ngPw") {
				t.Error("the password is in the log")
			}
			t.Logf("%s: %s", scheme, st.LastError)
		})
	}

	t.Run("pause resume", func(t *testing.T) {
		_, uch := dialBroker(t, up)
		if _, err := uch.QueueDeclare("landing", true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := uch.QueueBind("landing", "meters.#", "amq.topic", false, nil); err != nil {
			t.Fatal(err)
		}
		edge := StartBroker(t, "--node-name", "edge", "--bridge-name", "uplink", "--bridge-url", "mqtt://edge:right@"+up.MQTTAddr+"/", "--bridge-topic", "meters/#")
		waitBridge(t, edge, "connected", func(b bridgeJSON) bool { return b.Connected && b.Name == "uplink" })
		if code, body := apiCall(t, edge, "guest", "guest", "POST", "/api/bridges/uplink/pause", nil); code != 204 {
			t.Fatalf("pause: %d %s", code, body)
		}
		waitBridge(t, edge, "paused", func(b bridgeJSON) bool { return b.Paused && !b.Connected && b.State == "paused" })
		publishAMQP(t, edge, "meters.1", 0, 50)
		waitBridge(t, edge, "holding 50", func(b bridgeJSON) bool { return b.Backlog == 50 && b.Forwarded == 0 })
		if q, err := uch.QueueDeclarePassive("landing", true, false, false, false, nil); err != nil || q.Messages != 0 {
			t.Fatalf("a paused link forwarded: %+v %v", q, err)
		}
		if code, body := apiCall(t, edge, "guest", "guest", "POST", "/api/bridges/uplink/resume", nil); code != 204 {
			t.Fatalf("resume: %d %s", code, body)
		}
		got := collect(t, uch, "landing", 50, 30*time.Second)
		checkOnceInOrder(t, got, 0, 50)
		waitBridge(t, edge, "drained", func(b bridgeJSON) bool { return b.Connected && b.Backlog == 0 && b.Forwarded == 50 })
		if code, _ := apiCall(t, edge, "guest", "guest", "POST", "/api/bridges/nope/pause", nil); code != 404 {
			t.Errorf("pause of an unknown bridge: %d", code)
		}
		if n := countLines(edge.Output(), "level=WARN", "bridge"); n != 0 {
			t.Errorf("pausing logged %d warnings:\n%s", n, edge.Output())
		}
	})
}

// TestObjectsAccessSurvivesRestart: users, vhosts, permissions and limits
// made through the API and a definitions import are there after a
// restart; a deleted user stays deleted; a user the flags define keeps
// the flags' password.
func TestObjectsAccessSurvivesRestart(t *testing.T) {
	args := []string{"--user", "carol:from-flags"}
	b := StartBroker(t, args...)
	apiJSON(t, b, "PUT", "/api/vhosts/plant1", map[string]any{}, nil)
	apiJSON(t, b, "PUT", "/api/users/bob", map[string]any{"password": "s3cret", "tags": "monitoring"}, nil)
	apiJSON(t, b, "PUT", "/api/permissions/plant1/bob", map[string]any{"configure": "", "write": ".*", "read": ".*"}, nil)
	apiJSON(t, b, "PUT", "/api/users/temp", map[string]any{"password": "x", "tags": ""}, nil)
	apiJSON(t, b, "DELETE", "/api/users/temp", nil, nil)
	apiJSON(t, b, "PUT", "/api/users/carol", map[string]any{"password": "from-api", "tags": ""}, nil)
	apiJSON(t, b, "PUT", "/api/vhost-limits/plant1/max-queues", map[string]any{"value": 5}, nil)
	apiJSON(t, b, "POST", "/api/definitions", map[string]any{
		"users":       []any{map[string]any{"name": "dave", "password_hash": "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []any{}}},
		"permissions": []any{map[string]any{"user": "dave", "vhost": "plant1", "configure": ".*", "write": ".*", "read": ".*"}},
	}, nil)
	// The saver writes within a second; a clean stop saves too.
	b = restart(t, b, args...)

	for _, tc := range []struct {
		user, pass, vhost string
		ok                bool
	}{
		{"bob", "s3cret", "plant1", true},
		{"dave", "test12", "plant1", true}, // the hash is of "test12"
		{"carol", "from-flags", "", true},
		{"carol", "from-api", "", false},
		{"temp", "x", "", false},
		{"guest", "guest", "", true},
	} {
		u := url.URL{Scheme: "amqp", User: url.UserPassword(tc.user, tc.pass), Host: b.Addr, Path: "/" + tc.vhost}
		conn, err := amqp.DialConfig(u.String(), amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
		if (err == nil) != tc.ok {
			t.Errorf("%s/%s on vhost %q after restart: %v, want ok=%v", tc.user, tc.pass, tc.vhost, err, tc.ok)
		}
		if conn != nil {
			conn.Close()
		}
	}
	var limits []map[string]any
	apiJSON(t, b, "GET", "/api/vhost-limits/plant1", nil, &limits)
	if len(limits) != 1 {
		t.Errorf("vhost limits after restart: %v", limits)
	}
	waitLog(t, b, "access database loaded")
}
