package interop_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestCtlDefinitions: export writes the definitions, with the users, and
// import takes a definitions file back.
func TestCtlDefinitions(t *testing.T) {
	b := StartBroker(t)
	if r := ctl(t, b, "", "add-user", "ops", "s3cret"); r.code != 0 {
		t.Fatalf("add-user: exit %d: %s", r.code, r.stderr)
	}
	file := filepath.Join(t.TempDir(), "defs.json")
	out := ctlOK(t, b, "export", file)
	if !strings.HasPrefix(out, "Exported definitions to "+file) {
		t.Errorf("export printed %q", out)
	}
	var defs map[string]any
	data, err := os.ReadFile(file)
	if err != nil || json.Unmarshal(data, &defs) != nil {
		t.Fatalf("exported file: %v\n%s", err, data)
	}
	users, _ := defs["users"].([]any)
	if !strings.Contains(fmt.Sprint(users), "ops") {
		t.Errorf("export lacks user ops: %v", defs["users"])
	}

	imp := filepath.Join(t.TempDir(), "import.json")
	in := `{"queues":[{"name":"ctl.imported","vhost":"/","durable":true,"auto_delete":false,"arguments":{}}],
		"policies":[{"vhost":"/","name":"ha","pattern":".*","apply-to":"queues","definition":{"max-length":10},"priority":0}]}`
	if err := os.WriteFile(imp, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	// What ferrymq does not apply (a policy) is printed, and is no failure.
	out = ctlOK(t, b, "import", imp)
	if !strings.HasPrefix(out, "Imported definitions from "+imp+": 1 queues\n1 not applied as given:\n  warning: ") || !strings.Contains(out, "ha") {
		t.Errorf("import printed %q", out)
	}
	if findRow(ctlJSON(t, b, "queues"), "name", "ctl.imported") == nil {
		t.Error("imported queue not listed")
	}
}

// TestCtlSessions: an MQTT session shows in list sessions; remove-session
// removes it and closes its connection.
func TestCtlSessions(t *testing.T) {
	b := StartBroker(t)
	c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "ctl-sensor", SessionExpiry: 3600})
	c.SubscribeAt(t, 1, "cmd/ctl-sensor/#")
	s := findRow(ctlJSON(t, b, "sessions"), "client_id", "ctl-sensor")
	if s == nil || s["connected"] != true {
		t.Fatalf("list sessions: ctl-sensor is %v, want connected", s)
	}
	if out := ctlOK(t, b, "list", "sessions"); !strings.Contains(out, "cmd/ctl-sensor/#(1)") {
		t.Errorf("sessions table lacks the subscription:\n%s", out)
	}
	// Retained messages: listed, then cleared by a filter.
	c.PublishAcked(t, &paho.Publish{Topic: "ctl/status/7", QoS: 1, Retain: true, Payload: []byte("up")})
	c.PublishAcked(t, &paho.Publish{Topic: "other/7", QoS: 1, Retain: true, Payload: []byte("x")})
	if r := findRow(ctlJSON(t, b, "retained"), "topic", "ctl/status/7"); r == nil || r["payload_bytes"] != 2.0 {
		t.Errorf("list retained: ctl/status/7 is %v", r)
	}
	if out := ctlOK(t, b, "clear-retained", "ctl/#"); out != "Cleared 1 retained messages matching \"ctl/#\" in vhost \"/\"\n" {
		t.Errorf("clear-retained printed %q", out)
	}
	if rows := ctlJSON(t, b, "retained"); len(rows) != 1 || rows[0]["topic"] != "other/7" {
		t.Errorf("after clear-retained ctl/#: %v, want only other/7", rows)
	}

	ctlOK(t, b, "remove-session", "ctl-sensor")
	d := mqtttest.WaitFor(t, c.Disconnects, eventTimeout, "DISCONNECT after remove-session")
	if d.ReasonCode != 0x98 {
		t.Errorf("DISCONNECT reason 0x%02x, want 0x98 administrative action", d.ReasonCode)
	}
	if s := findRow(ctlJSON(t, b, "sessions"), "client_id", "ctl-sensor"); s != nil {
		t.Errorf("session still listed after remove-session: %v", s)
	}
}

// TestCtlBridges: a link to an upstream that is down shows with its error;
// bridge pause and resume change its state.
func TestCtlBridges(t *testing.T) {
	up := freePort(t) // nothing listens there
	b := StartBroker(t, "--bridge-url", "mqtt://"+up, "--bridge-name", "cloud")
	var row map[string]any
	deadline := time.Now().Add(eventTimeout)
	for row == nil || row["last_error"] == "" {
		if time.Now().After(deadline) {
			t.Fatalf("list bridges: cloud is %v, want its last error", row)
		}
		row = findRow(ctlJSON(t, b, "bridges"), "name", "cloud")
		if row != nil && row["last_error"] == "" {
			time.Sleep(50 * time.Millisecond) // the link's first dial is under way
		}
	}
	if row["connected"] != false {
		t.Errorf("cloud: %v, want not connected", row)
	}
	ctlOK(t, b, "bridge", "pause", "cloud")
	if row = findRow(ctlJSON(t, b, "bridges"), "name", "cloud"); row["paused"] != true || row["state"] != "paused" {
		t.Errorf("after pause: %v", row)
	}
	if out := ctlOK(t, b, "list", "bridges"); !strings.Contains(out, "paused") {
		t.Errorf("bridges table lacks the state:\n%s", out)
	}
	ctlOK(t, b, "bridge", "resume", "cloud")
	if row = findRow(ctlJSON(t, b, "bridges"), "name", "cloud"); row["paused"] != false {
		t.Errorf("after resume: %v", row)
	}
	if r := ctl(t, b, "", "bridge", "pause", "nosuch"); r.code != 1 || !strings.Contains(r.stderr, "404") {
		t.Errorf("pause of an unknown link: exit %d, stderr %q", r.code, r.stderr)
	}
}
