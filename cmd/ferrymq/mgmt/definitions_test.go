package mgmt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ferrymq/ferrymq/core"
)

// rabbitDefs is shaped as RabbitMQ 3.10's export (GET /api/definitions),
// with one of each thing ferrymq has and a few it has not. %s is bob's
// password hash.
const rabbitDefs = `{
 "rabbit_version": "3.10.8", "rabbitmq_version": "3.10.8", "product_name": "RabbitMQ", "product_version": "3.10.8",
 "users": [
  {"name": "bob", "password_hash": "%s", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["monitoring"], "limits": {"max-connections": 7}},
  {"name": "old", "password_hash": "%s", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "administrator,management", "limits": {}},
  {"name": "sha512", "password_hash": "AAAA", "hashing_algorithm": "rabbit_password_hashing_sha512", "tags": [], "limits": {}}
 ],
 "vhosts": [{"name": "/", "limits": [], "metadata": {"description": "Default virtual host", "tags": []}}, {"name": "plant1"}],
 "permissions": [
  {"user": "bob", "vhost": "plant1", "configure": "^bob-.*", "write": ".*", "read": ".*"},
  {"user": "old", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
 ],
 "topic_permissions": [{"user": "bob", "vhost": "plant1", "exchange": "amq.topic", "write": "^sensors\\.{username}\\.", "read": ".*"}],
 "parameters": [
  {"value": {"max-connections": 50, "max-queues": 10}, "vhost": "plant1", "component": "vhost-limits", "name": "limits"},
  {"value": {"uri": "amqp://elsewhere"}, "vhost": "plant1", "component": "federation-upstream", "name": "up"}
 ],
 "global_parameters": [{"name": "internal_cluster_id", "value": "rabbitmq-cluster-id-x"}],
 "policies": [{"vhost": "plant1", "name": "ttl", "pattern": "^q\\.", "apply-to": "queues", "definition": {"message-ttl": 60000, "ha-mode": "all"}, "priority": 0}],
 "queues": [
  {"name": "q.orders", "vhost": "plant1", "durable": true, "auto_delete": false, "arguments": {"x-max-length": 1000, "x-queue-type": "classic", "x-dead-letter-exchange": "dlx"}},
  {"name": "q.quorum", "vhost": "plant1", "durable": true, "auto_delete": false, "arguments": {"x-queue-type": "quorum"}},
  {"name": "plain", "vhost": "/", "durable": false, "auto_delete": false, "arguments": {}}
 ],
 "exchanges": [
  {"name": "orders", "vhost": "plant1", "type": "topic", "durable": true, "auto_delete": false, "internal": false, "arguments": {"alternate-exchange": "dlx"}},
  {"name": "dlx", "vhost": "plant1", "type": "fanout", "durable": true, "auto_delete": false, "internal": false, "arguments": {}},
  {"name": "hdr", "vhost": "plant1", "type": "headers", "durable": true, "auto_delete": false, "internal": true, "arguments": {}},
  {"name": "delayed", "vhost": "plant1", "type": "x-delayed-message", "durable": true, "auto_delete": false, "internal": false, "arguments": {"x-delayed-type": "direct"}},
  {"name": "amq.custom", "vhost": "plant1", "type": "direct", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}
 ],
 "bindings": [
  {"source": "orders", "vhost": "plant1", "destination": "q.orders", "destination_type": "queue", "routing_key": "order.#", "arguments": {}},
  {"source": "orders", "vhost": "plant1", "destination": "hdr", "destination_type": "exchange", "routing_key": "", "arguments": {}},
  {"source": "hdr", "vhost": "plant1", "destination": "q.quorum", "destination_type": "queue", "routing_key": "", "arguments": {"x-match": "any", "kind": "a", "n": 3}},
  {"source": "amq.topic", "vhost": "/", "destination": "plain", "destination_type": "queue", "routing_key": "sensors.#", "arguments": {}}
 ]
}`

func newDefSource(t *testing.T) DefinitionsSource {
	t.Helper()
	b := core.NewBroker(core.Options{})
	t.Cleanup(b.Close)
	return DefinitionsSource{Broker: b, Users: core.DefaultUsers(), Version: "test"}
}

func importString(t *testing.T, src DefinitionsSource, doc string) ImportResult {
	t.Helper()
	d, err := ParseDefinitions(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	res, err := src.Import(d)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	return res
}

func login(src DefinitionsSource, user, password string) error {
	_, err := src.Users.Authenticate(context.Background(), core.LoginRequest{Username: user, Password: password, Loopback: true})
	return err
}

// TestDefinitionsImport: a RabbitMQ export imports: users log in with
// their RabbitMQ passwords, permissions and limits apply, the topology is
// there; what ferrymq lacks is in the warnings, each named.
func TestDefinitionsImport(t *testing.T) {
	src := newDefSource(t)
	hash := core.HashPassword("s3cret")
	res := importString(t, src, fmt.Sprintf(rabbitDefs, hash, core.HashPassword("older")))

	for _, tc := range []struct{ user, password string }{{"bob", "s3cret"}, {"old", "older"}} {
		if err := login(src, tc.user, tc.password); err != nil {
			t.Errorf("%s cannot log in with its RabbitMQ password: %v", tc.user, err)
		}
	}
	if login(src, "bob", "wrong") == nil {
		t.Error("bob logs in with a wrong password")
	}
	bob, _ := src.Users.User("bob")
	if bob.MaxConnections != 7 || !slices.Equal(bob.Tags, []string{"monitoring"}) {
		t.Errorf("bob = %+v", bob)
	}
	if old, _ := src.Users.User("old"); !slices.Equal(old.Tags, []string{"administrator", "management"}) {
		t.Errorf("tags as a string: %v", old.Tags)
	}
	if _, ok := src.Users.User("sha512"); ok {
		t.Error("a user with a SHA-512 hash was imported; ferrymq cannot check it")
	}
	v := src.Broker.VHost("plant1")
	if v == nil {
		t.Fatal("vhost plant1 not created")
	}
	if l := v.Limits(); l.MaxConnections != 50 || l.MaxQueues != 10 {
		t.Errorf("vhost limits %+v", l)
	}
	if got := src.Users.TopicPermissionList(); len(got) != 1 || got[0].Write != `^sensors\.{username}\.` {
		t.Errorf("topic permissions %+v", got)
	}
	q := v.Queue("q.orders")
	if q == nil || q.Snapshot().Arguments["x-max-length"] != int64(1000) {
		t.Fatalf("q.orders: %+v", q)
	}
	if x, ok := v.Exchange("orders"); !ok || x.Kind != "topic" || x.Arguments["alternate-exchange"] != "dlx" {
		t.Errorf("exchange orders %+v", x)
	}
	if x, _ := v.Exchange("hdr"); !x.Internal {
		t.Error("hdr not internal")
	}
	if len(v.BindingList()) != 3 || len(src.Broker.VHost("/").BindingList()) != 1 {
		t.Errorf("bindings %+v", v.BindingList())
	}
	// A message routed through the imported topology arrives.
	if _, err := v.Publish(&core.Message{Exchange: "orders", RoutingKey: "order.1"}); err != nil {
		t.Fatal(err)
	}
	if n := q.Stats().Messages; n != 1 {
		t.Errorf("q.orders holds %d messages after a publish, want 1", n)
	}

	want := []string{
		"user 'sha512' not imported: its password hash is rabbit_password_hashing_sha512",
		"parameter 'up' of component 'federation-upstream' in vhost 'plant1' not imported",
		"policy 'ttl' in vhost 'plant1' (pattern '^q\\.', apply-to queues) not applied: ferrymq has no policies; declare the queues with arguments x-message-ttl=60000 instead; no equivalent for ha-mode",
		"queue 'q.quorum' in vhost 'plant1' is a quorum queue",
		"exchange 'delayed' in vhost 'plant1' not imported: unknown exchange type 'x-delayed-message'",
		"exchange 'amq.custom' in vhost 'plant1' skipped",
	}
	all := strings.Join(res.Warnings, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("no warning %q in:\n%s", w, all)
		}
	}
	if len(res.Warnings) != len(want) {
		t.Errorf("%d warnings, want %d:\n%s", len(res.Warnings), len(want), all)
	}
}

// TestDefinitionsRoundTrip: what ferrymq exports imports into another
// ferrymq and exports the same again; the per-vhost form too.
func TestDefinitionsRoundTrip(t *testing.T) {
	a := newDefSource(t)
	importString(t, a, fmt.Sprintf(rabbitDefs, core.HashPassword("s3cret"), core.HashPassword("older")))
	// An exclusive queue and a bridge's queue are not exported.
	if _, err := a.Broker.VHost("/").DeclareQueue(core.QueueDecl{Name: "excl", Exclusive: true, Owner: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Broker.VHost("/").DeclareQueue(core.QueueDecl{Name: "bridge.up", Durable: true}); err != nil {
		t.Fatal(err)
	}
	first := mustJSON(t, a.Export())
	for _, hidden := range []string{`"excl"`, `"bridge.up"`, `"amq.topic","vhost":"/","type"`} {
		if strings.Contains(first, hidden) {
			t.Errorf("export holds %s:\n%s", hidden, first)
		}
	}

	b := newDefSource(t)
	res := importString(t, b, first)
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "quorum") {
		t.Errorf("ferrymq's own export warns: %q", res.Warnings)
	}
	if second := mustJSON(t, b.Export()); second != first {
		t.Errorf("export after import differs:\nfirst  %s\nsecond %s", first, second)
	}
	if err := login(b, "bob", "s3cret"); err != nil {
		t.Errorf("bob after two imports: %v", err)
	}

	vd, ok := a.ExportVHost("plant1")
	if !ok {
		t.Fatal("no plant1")
	}
	vdoc := mustJSON(t, vd)
	if strings.Contains(vdoc, `"vhost"`) || strings.Contains(vdoc, `"users"`) {
		t.Errorf("per-vhost export names vhosts or users: %s", vdoc)
	}
	c := newDefSource(t)
	c.Broker.AddVHost("other")
	pd, err := ParseVHostDefinitions(strings.NewReader(vdoc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImportVHost("other", pd); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.ExportVHost("other"); mustJSON(t, got) != vdoc {
		t.Errorf("per-vhost round trip differs:\n%s\n%s", vdoc, mustJSON(t, got))
	}
	if _, err := c.ImportVHost("nowhere", pd); err == nil {
		t.Error("import into a missing vhost succeeded")
	}
}

// TestDefinitionsImportErrors: invalid definitions are errors naming
// them; the valid ones beside them are applied.
func TestDefinitionsImportErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"not json", `{"users": [`, "not a JSON object"},
		{"bad hash", `{"users": [{"name": "u", "password_hash": "abc", "hashing_algorithm": "rabbit_password_hashing_sha256"}]}`, "password hash"},
		{"bad pattern", `{"permissions": [{"user": "guest", "vhost": "/", "configure": "(", "write": "", "read": ""}]}`, "permissions of user 'guest'"},
		{"no such user", `{"permissions": [{"user": "nobody", "vhost": "/", "configure": "", "write": "", "read": ""}]}`, "no such user"},
		{"bad queue argument", `{"queues": [{"name": "q", "vhost": "/", "durable": true, "arguments": {"x-max-length": "ten"}}]}`, "queue 'q' in vhost '/'"},
		{"missing vhost", `{"queues": [{"name": "q", "vhost": "nope", "durable": true}]}`, "vhost 'nope': not defined"},
		{"binding to nothing", `{"bindings": [{"source": "amq.topic", "vhost": "/", "destination": "none", "destination_type": "queue", "routing_key": "k"}]}`, "no queue 'none'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newDefSource(t)
			d, err := ParseDefinitions(strings.NewReader(tc.doc))
			if err == nil {
				_, err = src.Import(d)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	// The valid queue beside an invalid one is declared.
	src := newDefSource(t)
	d, _ := ParseDefinitions(strings.NewReader(`{"queues": [{"name": "bad", "vhost": "/", "arguments": {"x-expires": -1}}, {"name": "good", "vhost": "/"}]}`))
	if _, err := src.Import(d); err == nil || src.Broker.VHost("/").Queue("good") == nil {
		t.Fatalf("err %v, good declared: %v", err, src.Broker.VHost("/").Queue("good") != nil)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(buf.String())
}
