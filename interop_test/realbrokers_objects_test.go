//go:build realbrokers

package interop_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// rabbitAPI makes one request to a real RabbitMQ's management API as
// guest and returns the status and body.
func rabbitAPI(t *testing.T, r *RabbitMQ, method, path string, body []byte) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+r.HTTPAddr+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("guest", "guest")
	req.Header.Set("Content-Type", "application/json")
	cl := http.Client{Timeout: 60 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("RabbitMQ %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// rabbitmqadminAt runs rabbitmqadmin against a management API at addr
// as guest.
func rabbitmqadminAt(t *testing.T, addr string, args ...string) string {
	t.Helper()
	bin := os.Getenv("RABBITMQADMIN")
	if bin == "" {
		bin = "/usr/bin/rabbitmqadmin"
	}
	host, port, _ := strings.Cut(addr, ":")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-H", host, "-P", port, "-u", "guest", "-p", "guest"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqadmin %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// amqpLogin opens a channel as user on vhost of the AMQP listener at
// addr.
func amqpLogin(t *testing.T, addr, user, pass, vhost string) (*amqp.Channel, error) {
	t.Helper()
	u := url.URL{Scheme: "amqp", User: url.UserPassword(user, pass), Host: addr, Path: "/" + vhost}
	conn, err := amqp.DialConfig(u.String(), amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	return conn.Channel()
}

// TestRealObjects: against a real RabbitMQ 3.10: its definitions (users
// with their password hashes, vhosts, permissions, topic permissions,
// limits, exchanges, queues, bindings, a policy) import into ferrymq,
// where its user logs in with the same password, and ferrymq's export
// imports back into RabbitMQ; and a bridge speaking MQTT 5 to RabbitMQ's
// MQTT 3.1.1-only plugin is told to use mqtt3://.
func TestRealObjects(t *testing.T) {
	r := StartRabbitMQManagement(t)
	admin := func(args ...string) string { return rabbitmqadminAt(t, r.HTTPAddr, args...) }

	t.Run("definitions", func(t *testing.T) {
		admin("declare", "vhost", "name=plant1")
		admin("declare", "user", "name=bob", "password=s3cret", "tags=monitoring")
		admin("declare", "permission", "vhost=plant1", "user=bob", "configure=^bob-.*", "write=.*", "read=.*")
		admin("declare", "permission", "vhost=plant1", "user=guest", "configure=.*", "write=.*", "read=.*")
		if code, body := rabbitAPI(t, r, "PUT", "/api/topic-permissions/plant1/bob", []byte(`{"exchange":"amq.topic","write":"^sensors\\.","read":".*"}`)); code/100 != 2 {
			t.Fatalf("topic permission: %d %s", code, body)
		}
		admin("declare", "vhost_limit", "vhost=plant1", "name=max-connections", "value=40")
		admin("-V", "plant1", "declare", "exchange", "name=dlx", "type=fanout", "durable=true")
		admin("-V", "plant1", "declare", "exchange", "name=orders", "type=topic", "durable=true", `arguments={"alternate-exchange": "dlx"}`)
		admin("-V", "plant1", "declare", "queue", "name=q.orders", "durable=true", `arguments={"x-max-length": 1000, "x-dead-letter-exchange": "dlx"}`)
		admin("-V", "plant1", "declare", "queue", "name=q.dead", "durable=true")
		admin("-V", "plant1", "declare", "binding", "source=orders", "destination=q.orders", "routing_key=order.#")
		admin("-V", "plant1", "declare", "binding", "source=dlx", "destination=q.dead")
		admin("-V", "plant1", "declare", "binding", "source=amq.topic", "destination=orders", "destination_type=exchange", "routing_key=ext.#")
		admin("-V", "plant1", "declare", "policy", "name=ttl", "pattern=^q\\.", `definition={"message-ttl": 60000}`, "apply-to=queues")

		code, fromRabbit := rabbitAPI(t, r, "GET", "/api/definitions", nil)
		if code != 200 {
			t.Fatalf("RabbitMQ export: %d %s", code, fromRabbit)
		}
		t.Logf("RabbitMQ's export: %s", fromRabbit)

		b := StartBroker(t)
		var warns struct{ Warnings []string }
		apiJSON(t, b, "POST", "/api/definitions", json.RawMessage(fromRabbit), &warns)
		all := strings.Join(warns.Warnings, "\n")
		t.Logf("ferrymq's warnings:\n%s", all)
		if !strings.Contains(all, "policy 'ttl' in vhost 'plant1'") || !strings.Contains(all, "x-message-ttl=60000") {
			t.Errorf("the policy is not reported:\n%s", all)
		}

		// bob logs in to ferrymq with his RabbitMQ password, and the
		// topology routes as it did there.
		ch, err := amqpLogin(t, b.Addr, "bob", "s3cret", "plant1")
		if err != nil {
			t.Fatalf("bob on ferrymq: %v", err)
		}
		if _, err := amqpLogin(t, b.Addr, "bob", "wrong", "plant1"); err == nil {
			t.Fatal("bob logged in to ferrymq with a wrong password")
		}
		for _, k := range []string{"order.1", "nomatch"} {
			if err := ch.Publish("orders", k, false, false, amqp.Publishing{Body: []byte(k)}); err != nil {
				t.Fatal(err)
			}
		}
		// order.1 reaches q.orders; nomatch goes to the alternate exchange.
		for q, want := range map[string]string{"q.orders": "order.1", "q.dead": "nomatch"} {
			var m amqp.Delivery
			var ok bool
			deadline := time.Now().Add(20 * time.Second)
			for !ok {
				if m, ok, err = ch.Get(q, true); err != nil {
					t.Fatal(err)
				}
				if !ok && time.Now().After(deadline) {
					t.Fatalf("nothing in %s", q)
				}
			}
			if string(m.Body) != want {
				t.Errorf("%s got %q, want %q", q, m.Body, want)
			}
		}
		var limits []map[string]any
		apiJSON(t, b, "GET", "/api/vhost-limits/plant1", nil, &limits)
		if len(limits) != 1 {
			t.Errorf("vhost limits on ferrymq: %v", limits)
		}

		// Back: RabbitMQ loses plant1 and bob, and gets them again from
		// ferrymq's export.
		var fromFerry json.RawMessage
		apiJSON(t, b, "GET", "/api/definitions", nil, &fromFerry)
		admin("delete", "vhost", "name=plant1")
		admin("delete", "user", "name=bob")
		if code, body := rabbitAPI(t, r, "POST", "/api/definitions", fromFerry); code/100 != 2 {
			t.Fatalf("RabbitMQ refused ferrymq's export: %d %s\n%s", code, body, fromFerry)
		}
		rch, err := amqpLogin(t, r.AMQPAddr, "bob", "s3cret", "plant1")
		if err != nil {
			t.Fatalf("bob on RabbitMQ after the round trip: %v", err)
		}
		if _, err := rch.QueueDeclarePassive("q.orders", true, false, false, false, amqp.Table{"x-max-length": int64(1000), "x-dead-letter-exchange": "dlx"}); err != nil {
			t.Fatalf("q.orders on RabbitMQ after the round trip: %v", err)
		}
		code, again := rabbitAPI(t, r, "GET", "/api/definitions/plant1", nil)
		if code != 200 || !strings.Contains(string(again), `"ext.#"`) || !strings.Contains(string(again), `"alternate-exchange":"dlx"`) {
			t.Errorf("RabbitMQ's plant1 after the round trip: %d %s", code, again)
		}
	})

	t.Run("mqtt5 to a 3.1.1-only upstream", func(t *testing.T) {
		edge := StartBroker(t, "--node-name", "edge", "--log-level", "debug", "--bridge-url", "mqtt://guest:guest@"+r.MQTTAddr+"/")
		st := waitBridge(t, edge, "refused", func(b bridgeJSON) bool { return b.LastError != "" })
		t.Logf("last_error: %s", st.LastError)
		if !strings.Contains(st.LastError, "mqtt3://") {
			t.Errorf("the error does not suggest mqtt3://: %s", st.LastError)
		}
		waitLog(t, edge, "mqtt3://")
		if n := countLines(edge.Output(), "level=WARN", "cannot connect"); n != 1 {
			t.Errorf("%d WARN lines, want 1:\n%s", n, edge.Output())
		}
		// The advice works.
		fixed := StartBroker(t, "--node-name", "edge2", "--bridge-url", "mqtt3://guest:guest@"+r.MQTTAddr+"/")
		waitBridge(t, fixed, "connected", func(b bridgeJSON) bool { return b.Connected })
	})
}
