package interop_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// mgmtWait bounds every wait of the management API tests.
const mgmtWait = 20 * time.Second

// apiCall makes one request to the broker's management API as user:pass
// and returns the status and body. body is JSON-encoded unless nil.
func apiCall(t *testing.T, b *Broker, user, pass, method, path string, body any, hdr ...string) (int, []byte) {
	t.Helper()
	if b.HTTPURL == "" {
		t.Fatal("broker has no HTTP listener")
	}
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = strings.NewReader(string(j))
	}
	req, err := http.NewRequestWithContext(t.Context(), method, b.HTTPURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pass)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	cl := http.Client{Timeout: mgmtWait}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, out
}

// apiJSON is apiCall as guest, decoding a 2xx answer into out; any other
// status fails the test.
func apiJSON(t *testing.T, b *Broker, method, path string, body, out any) {
	t.Helper()
	code, raw := apiCall(t, b, "guest", "guest", method, path, body)
	if code/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, code, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
}

// TestMgmtAuth: RabbitMQ's answers to who may use the API: guest (an
// administrator) may; a wrong password, a user without a management tag
// and a management user on an administrator's route get 401 with
// RabbitMQ's error body.
func TestMgmtAuth(t *testing.T) {
	dir := t.TempDir()
	cfg := dir + "/ferrymq.yaml"
	writeTextFile(t, cfg, `
users:
  - name: app
    password: app-pw
  - name: watcher
    password: watch-pw
    tags: [monitoring]
  - name: mgr
    password: mgr-pw
    tags: [management]
`)
	b := StartBroker(t, "--config", cfg)

	var who struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	apiJSON(t, b, "GET", "/api/whoami", nil, &who)
	if who.Name != "guest" || len(who.Tags) != 1 || who.Tags[0] != "administrator" {
		t.Fatalf("whoami: %+v", who)
	}
	for _, tc := range []struct {
		user, pass, path string
		code             int
		reason           string
	}{
		{"guest", "wrong", "/api/whoami", 401, "Login failed"},
		{"nobody", "x", "/api/overview", 401, "Login failed"},
		{"app", "app-pw", "/api/whoami", 401, "Not management user"},
		{"mgr", "mgr-pw", "/api/whoami", 200, ""},
		{"mgr", "mgr-pw", "/api/nodes", 401, "Not monitor user"},
		{"watcher", "watch-pw", "/api/nodes", 200, ""},
		{"guest", "guest", "/api/no-such-thing", 404, "Not Found"},
	} {
		code, body := apiCall(t, b, tc.user, tc.pass, "GET", tc.path, nil)
		if code != tc.code {
			t.Errorf("%s on %s: %d %s, want %d", tc.user, tc.path, code, body, tc.code)
			continue
		}
		if tc.reason == "" {
			continue
		}
		var e struct{ Error, Reason string }
		if err := json.Unmarshal(body, &e); err != nil || e.Reason != tc.reason || e.Error == "" {
			t.Errorf("%s on %s: body %s, want reason %q", tc.user, tc.path, body, tc.reason)
		}
	}
	var ov struct {
		ProductName  string `json:"product_name"`
		ObjectTotals struct {
			Exchanges int `json:"exchanges"`
		} `json:"object_totals"`
		Listeners []struct {
			Protocol string `json:"protocol"`
			Port     int    `json:"port"`
		} `json:"listeners"`
	}
	apiJSON(t, b, "GET", "/api/overview", nil, &ov)
	if ov.ProductName != "ferrymq" || ov.ObjectTotals.Exchanges != 6 {
		t.Errorf("overview: %+v", ov)
	}
	found := false
	for _, l := range ov.Listeners {
		found = found || (l.Protocol == "amqp" && fmt.Sprint("127.0.0.1:", l.Port) == b.Addr)
	}
	if !found {
		t.Errorf("overview listeners %+v lack amqp on %s", ov.Listeners, b.Addr)
	}
}

// connJSON is what the tests read of /api/connections.
type connJSON struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	User     string `json:"user"`
	VHost    string `json:"vhost"`
	PeerPort int    `json:"peer_port"`
	Channels int    `json:"channels"`
}

// findConn returns the connection of protocol from the local address
// local in /api/connections. Both protocols register a connection before
// they answer its handshake (open-ok, CONNACK), so it is listed by the
// time the client has connected.
func findConn(t *testing.T, b *Broker, protocol, local string) connJSON {
	t.Helper()
	var conns []connJSON
	apiJSON(t, b, "GET", "/api/connections", nil, &conns)
	for _, c := range conns {
		if c.Protocol == protocol && strings.HasPrefix(c.Name, local+" -> ") {
			return c
		}
	}
	t.Fatalf("no %s connection from %s in %+v", protocol, local, conns)
	return connJSON{}
}

// waitConnGone waits until the connection named name is no longer listed.
// A client sees its connection closed when it has read connection.close and
// answered close-ok; the broker unlists the connection after it has read
// that close-ok and released the connection's channels, a moment later.
func waitConnGone(t *testing.T, b *Broker, name string) {
	t.Helper()
	deadline := time.Now().Add(mgmtWait)
	for {
		code, body := apiCall(t, b, "guest", "guest", "GET", "/api/connections/"+url.PathEscape(name), nil)
		if code == http.StatusNotFound {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection %s still listed %v after it was closed: %d %s", name, mgmtWait, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMgmtCloseConnection: DELETE /api/connections/{name} with X-Reason
// closes an amqp091-go connection with 320 CONNECTION_FORCED and the
// reason, an MQTT 5 one with DISCONNECT 0x98 Administrative action, and
// an MQTT 3.1.1 one; each is listed with RabbitMQ's protocol name first.
func TestMgmtCloseConnection(t *testing.T) {
	b := StartBroker(t)

	conn, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Channel(); err != nil {
		t.Fatal(err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ac := findConn(t, b, "AMQP 0-9-1", conn.LocalAddr().String())
	if ac.User != "guest" || ac.VHost != "/" || ac.Channels != 1 {
		t.Errorf("amqp connection listed as %+v", ac)
	}
	var one connJSON
	apiJSON(t, b, "GET", "/api/connections/"+url.PathEscape(ac.Name), nil, &one)
	if one.Name != ac.Name {
		t.Errorf("GET one connection: %+v", one)
	}
	code, body := apiCall(t, b, "guest", "guest", "DELETE", "/api/connections/"+url.PathEscape(ac.Name), nil, "X-Reason", "maintenance window")
	if code != http.StatusNoContent {
		t.Fatalf("DELETE connection: %d %s", code, body)
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != amqp.ConnectionForced || e.Reason != "CONNECTION_FORCED - maintenance window" {
			t.Errorf("amqp close: %+v, want 320 with the reason", e)
		}
	case <-time.After(mgmtWait):
		t.Fatal("amqp connection not closed")
	}
	waitConnGone(t, b, ac.Name)
	if code, _ := apiCall(t, b, "guest", "guest", "DELETE", "/api/connections/"+url.PathEscape(ac.Name), nil); code != http.StatusNotFound {
		t.Errorf("DELETE of a closed connection: %d, want 404", code)
	}

	v5 := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "mgmt-v5"})
	mc := findConn(t, b, "MQTT 5.0", v5.Conn.LocalAddr().String())
	// Its subscription is a consumer on its one channel, as RabbitMQ's MQTT
	// plugin lists it.
	v5.SubscribeAt(t, 1, "mgmt/#")
	var consumers []struct {
		Queue          struct{ Name string } `json:"queue"`
		AckRequired    bool                  `json:"ack_required"`
		ChannelDetails struct {
			ConnectionName string `json:"connection_name"`
		} `json:"channel_details"`
	}
	apiJSON(t, b, "GET", "/api/consumers", nil, &consumers)
	if len(consumers) != 1 || consumers[0].Queue.Name != "mqtt-subscription-mgmt-v5qos1" || !consumers[0].AckRequired ||
		consumers[0].ChannelDetails.ConnectionName != mc.Name {
		t.Errorf("MQTT consumers: %+v", consumers)
	}
	if mc.Channels != 1 {
		t.Errorf("MQTT connection lists %d channels, want 1", mc.Channels)
	}
	apiCall(t, b, "guest", "guest", "DELETE", "/api/connections/"+url.PathEscape(mc.Name), nil, "X-Reason", "bye")
	select {
	case d := <-v5.Disconnects:
		if d.ReasonCode != 0x98 {
			t.Errorf("MQTT 5 DISCONNECT reason %#x, want 0x98", d.ReasonCode)
		}
	case <-time.After(mgmtWait):
		t.Fatal("no DISCONNECT for the MQTT 5 client")
	}

	raw, r, _ := rawPersistentConnect(t, b.MQTTAddr, "mgmt-v3")
	m3 := findConn(t, b, "MQTT 3.1.1", raw.LocalAddr().String())
	apiCall(t, b, "guest", "guest", "DELETE", "/api/connections/"+url.PathEscape(m3.Name), nil)
	raw.SetReadDeadline(time.Now().Add(mgmtWait))
	if _, err := r.ReadByte(); err != io.EOF && !strings.Contains(fmt.Sprint(err), "reset") {
		t.Errorf("MQTT 3.1.1 connection after DELETE: read %v, want EOF", err)
	}
}

// writeTextFile writes a broker config file.
func writeTextFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// runRabbitmqadmin runs Debian's rabbitmqadmin (RabbitMQ 3.10's client of
// the management API; RABBITMQADMIN overrides the path) against b as
// guest and returns its output; a failure fails the test.
func runRabbitmqadmin(t *testing.T, b *Broker, args ...string) string {
	t.Helper()
	bin := os.Getenv("RABBITMQADMIN")
	if bin == "" {
		bin = "/usr/bin/rabbitmqadmin"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("rabbitmqadmin: %v (apt-get install rabbitmq-server, or set RABBITMQADMIN)", err)
	}
	host, port, _ := strings.Cut(b.HTTPAddr, ":")
	ctx, cancel := context.WithTimeout(t.Context(), mgmtWait)
	defer cancel()
	full := append([]string{"-H", host, "-P", port, "-u", "guest", "-p", "guest"}, args...)
	out, err := exec.CommandContext(ctx, bin, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqadmin %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestMgmtRabbitmqadmin: rabbitmqadmin declares a queue, a topic exchange
// and a binding, publishes through the exchange, lists, gets the message
// back, purges and deletes, and an AMQP client sees the same objects.
func TestMgmtRabbitmqadmin(t *testing.T) {
	b := StartBroker(t)
	admin := func(args ...string) string { return runRabbitmqadmin(t, b, args...) }

	admin("declare", "queue", "name=orders", "durable=true", `arguments={"x-max-length": 100}`)
	admin("declare", "exchange", "name=events", "type=topic")
	admin("declare", "binding", "source=events", "destination=orders", "routing_key=order.#")
	for i := range 3 {
		admin("publish", "exchange=events", "routing_key=order.new", fmt.Sprintf("payload=o%d", i), `properties={"delivery_mode": 2, "headers": {"n": 1}}`)
	}

	var queues []map[string]any
	if err := json.Unmarshal([]byte(admin("-f", "raw_json", "list", "queues", "name", "messages", "durable", "arguments")), &queues); err != nil {
		t.Fatal(err)
	}
	if len(queues) != 1 || queues[0]["name"] != "orders" || queues[0]["messages"] != 3.0 || queues[0]["durable"] != true {
		t.Fatalf("list queues: %v", queues)
	}
	if args, _ := queues[0]["arguments"].(map[string]any); args["x-max-length"] != 100.0 {
		t.Errorf("queue arguments: %v", queues[0]["arguments"])
	}
	if out := admin("list", "bindings", "source", "destination", "routing_key"); !strings.Contains(out, "order.#") {
		t.Errorf("list bindings lacks order.#:\n%s", out)
	}
	if out := admin("list", "exchanges", "name", "type"); !strings.Contains(out, "events") || !strings.Contains(out, "topic") {
		t.Errorf("list exchanges:\n%s", out)
	}

	// ack_requeue_true leaves the message where it was, redelivered.
	var got []map[string]any
	json.Unmarshal([]byte(admin("-f", "raw_json", "get", "queue=orders", "ackmode=ack_requeue_true")), &got)
	if len(got) != 1 || got[0]["payload"] != "o0" || got[0]["routing_key"] != "order.new" || got[0]["message_count"] != 2.0 {
		t.Fatalf("get: %v", got)
	}
	json.Unmarshal([]byte(admin("-f", "raw_json", "get", "queue=orders", "ackmode=ack_requeue_false", "count=2")), &got)
	if len(got) != 2 || got[0]["payload"] != "o0" || got[0]["redelivered"] != true || got[1]["payload"] != "o1" {
		t.Fatalf("get count=2: %v", got)
	}
	if p, _ := got[0]["properties"].(map[string]any); p["delivery_mode"] != 2.0 {
		t.Errorf("got properties %v, want delivery_mode 2", got[0]["properties"])
	}

	// AMQP sees what the API made: the last message, then the purge.
	_, ch := dialBroker(t, b)
	m, ok, err := ch.Get("orders", true)
	if err != nil || !ok || string(m.Body) != "o2" {
		t.Fatalf("amqp get: %q %v %v", m.Body, ok, err)
	}
	admin("publish", "exchange=events", "routing_key=order.x", "payload=p")
	admin("purge", "queue", "name=orders")
	if q, err := ch.QueueDeclarePassive("orders", true, false, false, false, amqp.Table{"x-max-length": int64(100)}); err != nil || q.Messages != 0 {
		t.Fatalf("after purge: %+v %v", q, err)
	}
	admin("delete", "binding", "source=events", "destination_type=queue", "destination=orders", "properties_key=order.#")
	if out := admin("list", "bindings", "source", "routing_key"); strings.Contains(out, "order.#") {
		t.Errorf("binding still listed after delete:\n%s", out)
	}
	admin("delete", "queue", "name=orders")
	admin("delete", "exchange", "name=events")
	for _, what := range []string{"queues", "policies", "parameters"} {
		if out := admin("list", what); !strings.Contains(out, "No items") {
			t.Errorf("list %s:\n%s", what, out)
		}
	}
}

// TestMgmtPagination: RabbitMQ's paged list of queues (page, page_size,
// name, use_regex, sort, sort_reverse) and its answers to a bad page.
func TestMgmtPagination(t *testing.T) {
	b := StartBroker(t)
	_, ch := dialBroker(t, b)
	for i := range 250 {
		if _, err := ch.QueueDeclare(fmt.Sprintf("q-%03d", i), false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Publish("", "q-007", false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	type page struct {
		Items []struct {
			Name     string `json:"name"`
			Messages int    `json:"messages"`
		} `json:"items"`
		Page          int `json:"page"`
		PageCount     int `json:"page_count"`
		PageSize      int `json:"page_size"`
		TotalCount    int `json:"total_count"`
		FilteredCount int `json:"filtered_count"`
		ItemCount     int `json:"item_count"`
	}
	for _, tc := range []struct {
		query                       string
		first                       string
		items, pages, filtered, num int
	}{
		{"page=2&page_size=100", "q-100", 100, 3, 250, 2},
		{"page=3&page_size=100", "q-200", 50, 3, 250, 3},
		{"page=1&page_size=100&name=Q-24", "q-240", 10, 1, 10, 1},
		{"page=1&name=" + url.QueryEscape("^q-00[0-4]$") + "&use_regex=true", "q-000", 5, 1, 5, 1},
		{"page=1&page_size=5&sort=messages&sort_reverse=true", "q-007", 5, 50, 250, 1},
		{"page=1&page_size=5&sort_reverse=true", "q-249", 5, 50, 250, 1},
	} {
		var p page
		apiJSON(t, b, "GET", "/api/queues/%2F?"+tc.query, nil, &p)
		if len(p.Items) != tc.items || p.ItemCount != tc.items || p.PageCount != tc.pages || p.FilteredCount != tc.filtered ||
			p.TotalCount != 250 || p.Page != tc.num || (len(p.Items) > 0 && p.Items[0].Name != tc.first) {
			t.Errorf("%s: page %d/%d size %d, %d items (count %d) first %+v, filtered %d of %d; want %d items from %s, %d pages, %d filtered",
				tc.query, p.Page, p.PageCount, p.PageSize, len(p.Items), p.ItemCount, p.Items[:min(1, len(p.Items))], p.FilteredCount, p.TotalCount,
				tc.items, tc.first, tc.pages, tc.filtered)
		}
	}
	for _, q := range []string{"page=4&page_size=100", "page=0", "page=1&page_size=501", "page=x"} {
		code, body := apiCall(t, b, "guest", "guest", "GET", "/api/queues?"+q, nil)
		var e struct{ Error string }
		if json.Unmarshal(body, &e); code != http.StatusBadRequest || e.Error != "bad_request" {
			t.Errorf("%s: %d %s, want 400 bad_request", q, code, body)
		}
	}
	// Without page=, a plain array, as RabbitMQ.
	var all []map[string]any
	apiJSON(t, b, "GET", "/api/queues?columns=name", nil, &all)
	if len(all) != 250 || len(all[0]) != 1 {
		t.Errorf("unpaged list: %d items, first %v", len(all), all[0])
	}
}

// TestMgmtQueueAPI: a queue declared, published to, consumed and deleted
// through the HTTP API and AMQP, with RabbitMQ's status codes and
// message_stats counts.
func TestMgmtQueueAPI(t *testing.T) {
	b := StartBroker(t)
	call := func(method, path string, body any) (int, string) {
		code, out := apiCall(t, b, "guest", "guest", method, path, body)
		return code, string(out)
	}
	for _, tc := range []struct {
		method, path string
		body         any
		code         int
	}{
		{"PUT", "/api/queues/%2F/work", map[string]any{"durable": true, "arguments": map[string]any{"x-message-ttl": 60000}}, 201},
		{"PUT", "/api/queues/%2F/work", map[string]any{"durable": true, "arguments": map[string]any{"x-message-ttl": 60000}}, 204},
		{"PUT", "/api/queues/%2F/work", map[string]any{"durable": false}, 400},
		{"PUT", "/api/queues/nosuchvhost/work", map[string]any{}, 404},
		{"GET", "/api/queues/%2F/nosuch", nil, 404},
		{"DELETE", "/api/queues/%2F/nosuch", nil, 404},
		{"PUT", "/api/exchanges/%2F/ex", map[string]any{"type": "fanout"}, 201},
		{"PUT", "/api/exchanges/%2F/ex", map[string]any{"type": "direct"}, 400},
		{"POST", "/api/bindings/%2F/e/ex/q/work", map[string]any{"routing_key": ""}, 201},
		{"POST", "/api/bindings/%2F/e/ex/q/nosuch", map[string]any{}, 404},
		{"GET", "/api/bindings/%2F/e/ex/q/work/~", nil, 200},
		{"GET", "/api/exchanges/%2F/amq.default", nil, 200},
		{"GET", "/api/aliveness-test/%2F", nil, 200},
		{"GET", "/api/health/checks/alarms", nil, 200},
		{"GET", "/api/health/checks/local-alarms", nil, 200},
		{"PATCH", "/api/queues/%2F/work", nil, 405},
		{"GET", "/api/policies", nil, 200},
		{"PUT", "/api/policies/%2F/ha", map[string]any{"pattern": ".*", "definition": map[string]any{"max-length": 10}}, 400},
	} {
		if code, out := call(tc.method, tc.path, tc.body); code != tc.code {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, out, tc.code)
		}
	}
	var routed struct{ Routed bool }
	for range 4 {
		apiJSON(t, b, "POST", "/api/exchanges/%2F/ex/publish", map[string]any{
			"routing_key": "", "payload": "aGk=", "payload_encoding": "base64", "properties": map[string]any{"delivery_mode": 2},
		}, &routed)
		if !routed.Routed {
			t.Fatal("publish not routed")
		}
	}
	_, ch := dialBroker(t, b)
	d, err := ch.Consume("work", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		select {
		case m := <-d:
			if string(m.Body) != "hi" || m.DeliveryMode != 2 {
				t.Fatalf("message %d: %q mode %d", i, m.Body, m.DeliveryMode)
			}
			m.Ack(false)
		case <-time.After(mgmtWait):
			t.Fatal("no delivery")
		}
	}
	// The acks are in once a synchronous round trip on the channel is done.
	if _, err := ch.QueueDeclarePassive("work", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	var q struct {
		Consumers    int `json:"consumers"`
		Messages     int `json:"messages"`
		MessageStats struct {
			Publish        int `json:"publish"`
			DeliverGet     int `json:"deliver_get"`
			Ack            int `json:"ack"`
			PublishDetails struct {
				Rate *float64 `json:"rate"`
			} `json:"publish_details"`
		} `json:"message_stats"`
	}
	apiJSON(t, b, "GET", "/api/queues/%2F/work", nil, &q)
	if q.Consumers != 1 || q.Messages != 0 || q.MessageStats.Publish != 4 || q.MessageStats.DeliverGet != 4 || q.MessageStats.Ack != 4 ||
		q.MessageStats.PublishDetails.Rate == nil {
		t.Errorf("queue: %+v", q)
	}
	var consumers []struct {
		Queue          struct{ Name string } `json:"queue"`
		AckRequired    bool                  `json:"ack_required"`
		ChannelDetails struct {
			ConnectionName string `json:"connection_name"`
		} `json:"channel_details"`
	}
	apiJSON(t, b, "GET", "/api/consumers", nil, &consumers)
	if len(consumers) != 1 || consumers[0].Queue.Name != "work" || !consumers[0].AckRequired || consumers[0].ChannelDetails.ConnectionName == "" {
		t.Errorf("consumers: %+v", consumers)
	}
	var chans []struct {
		Number        int `json:"number"`
		ConsumerCount int `json:"consumer_count"`
	}
	apiJSON(t, b, "GET", "/api/channels", nil, &chans)
	if len(chans) != 1 || chans[0].Number != 1 || chans[0].ConsumerCount != 1 {
		t.Errorf("channels: %+v", chans)
	}
	if code, out := call("DELETE", "/api/queues/%2F/work?if-unused=true", nil); code != 400 {
		t.Errorf("delete in use with if-unused: %d %s, want 400", code, out)
	}
	if code, out := call("DELETE", "/api/bindings/%2F/e/ex/q/work/~", nil); code != 204 {
		t.Errorf("delete binding: %d %s", code, out)
	}
	if code, out := call("DELETE", "/api/queues/%2F/work", nil); code != 204 {
		t.Errorf("delete queue: %d %s", code, out)
	}
}

// TestMgmtUsersAndVHosts: an administrator creates a vhost, a user with
// the management tag and its permissions over the API; that user logs in
// over AMQP and HTTP and sees only its vhost; deleting the vhost closes
// its connection.
func TestMgmtUsersAndVHosts(t *testing.T) {
	b := StartBroker(t)
	for _, tc := range []struct {
		method, path string
		body         any
		code         int
	}{
		{"PUT", "/api/vhosts/plant1", map[string]any{}, 201},
		{"PUT", "/api/vhosts/plant1", map[string]any{}, 204},
		{"PUT", "/api/users/op", map[string]any{"password": "op-pw", "tags": "management"}, 201},
		{"PUT", "/api/users/op", map[string]any{"password": "op-pw", "tags": "management"}, 204},
		{"PUT", "/api/permissions/plant1/op", map[string]any{"configure": ".*", "write": ".*", "read": ".*"}, 201},
		{"PUT", "/api/permissions/nosuch/op", map[string]any{"configure": ".*", "write": ".*", "read": ".*"}, 404},
		{"PUT", "/api/topic-permissions/plant1/op", map[string]any{"exchange": "amq.topic", "write": "^a", "read": ".*"}, 201},
		{"GET", "/api/permissions/plant1/op", nil, 200},
		{"GET", "/api/users/nosuch", nil, 404},
	} {
		if code, out := apiCall(t, b, "guest", "guest", tc.method, tc.path, tc.body); code != tc.code {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, out, tc.code)
		}
	}
	var perms []map[string]string
	apiJSON(t, b, "GET", "/api/users/op/permissions", nil, &perms)
	if len(perms) != 1 || perms[0]["vhost"] != "plant1" || perms[0]["read"] != ".*" {
		t.Errorf("permissions: %v", perms)
	}
	var tperms []map[string]string
	apiJSON(t, b, "GET", "/api/topic-permissions", nil, &tperms)
	if len(tperms) != 1 || tperms[0]["exchange"] != "amq.topic" || tperms[0]["write"] != "^a" {
		t.Errorf("topic permissions: %v", tperms)
	}

	conn, err := amqp.Dial("amqp://op:op-pw@" + b.Addr + "/plant1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("line1", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	var vhosts []struct{ Name string }
	code, raw := apiCall(t, b, "op", "op-pw", "GET", "/api/vhosts", nil)
	if json.Unmarshal(raw, &vhosts); code != 200 || len(vhosts) != 1 || vhosts[0].Name != "plant1" {
		t.Errorf("op's vhosts: %d %s", code, raw)
	}
	var qs []struct{ Name, VHost string }
	_, raw = apiCall(t, b, "op", "op-pw", "GET", "/api/queues", nil)
	if json.Unmarshal(raw, &qs); len(qs) != 1 || qs[0].Name != "line1" {
		t.Errorf("op's queues: %s", raw)
	}
	if code, _ := apiCall(t, b, "op", "op-pw", "GET", "/api/queues/%2F", nil); code != 401 {
		t.Errorf("op on vhost /: %d, want 401", code)
	}
	if code, _ := apiCall(t, b, "op", "op-pw", "GET", "/api/users", nil); code != 401 {
		t.Errorf("op on /api/users: %d, want 401", code)
	}
	var conns []connJSON
	_, raw = apiCall(t, b, "op", "op-pw", "GET", "/api/connections", nil)
	if json.Unmarshal(raw, &conns); len(conns) != 1 || conns[0].User != "op" {
		t.Errorf("op's connections: %s", raw)
	}

	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	if code, out := apiCall(t, b, "guest", "guest", "DELETE", "/api/vhosts/plant1", nil); code != 204 {
		t.Fatalf("delete vhost: %d %s", code, out)
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != amqp.ConnectionForced {
			t.Errorf("connection in the deleted vhost closed with %+v, want 320", e)
		}
	case <-time.After(mgmtWait):
		t.Fatal("connection in the deleted vhost stays open")
	}
	if code, out := apiCall(t, b, "guest", "guest", "DELETE", "/api/users/op", nil); code != 204 {
		t.Errorf("delete user: %d %s", code, out)
	}
	if code, _ := apiCall(t, b, "op", "op-pw", "GET", "/api/whoami", nil); code != 401 {
		t.Errorf("deleted user's login: %d, want 401", code)
	}
}

// TestMgmtHTTPS: --https-listen serves the API over TLS with the tls
// settings' certificate; --http-listen "" turns the plain listener off.
func TestMgmtHTTPS(t *testing.T) {
	s := newTLSSetup(t)
	b := StartBroker(t, "--tls-cert", s.certFile, "--tls-key", s.keyFile, "--https-listen", "127.0.0.1:0", "--http-listen", "")
	if b.HTTPAddr != "" || strings.Contains(b.Output(), `proto=http `) {
		t.Fatalf("plain HTTP listener on with --http-listen \"\": %q", b.HTTPAddr)
	}
	addr := listenerAddr(t, b, "https")
	cl := http.Client{Timeout: mgmtWait, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ca.Pool(), ServerName: "localhost"}}}
	req, err := http.NewRequestWithContext(t.Context(), "GET", "https://"+addr+"/api/whoami", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("guest", "guest")
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"name":"guest"`) {
		t.Fatalf("GET https://%s/api/whoami: %s %s", addr, resp.Status, body)
	}
}
