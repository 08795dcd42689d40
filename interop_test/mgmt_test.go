package interop_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
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
	writeConfig(t, cfg, `
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
		if e == nil || e.Code != amqp.ConnectionForced || !strings.Contains(e.Reason, "maintenance window") {
			t.Errorf("amqp close: %+v, want 320 with the reason", e)
		}
	case <-time.After(mgmtWait):
		t.Fatal("amqp connection not closed")
	}
	if code, _ := apiCall(t, b, "guest", "guest", "DELETE", "/api/connections/"+url.PathEscape(ac.Name), nil); code != http.StatusNotFound {
		t.Errorf("DELETE of a closed connection: %d, want 404", code)
	}

	v5 := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "mgmt-v5"})
	mc := findConn(t, b, "MQTT 5.0", v5.Conn.LocalAddr().String())
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

// writeConfig writes a broker config file.
func writeConfig(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}
