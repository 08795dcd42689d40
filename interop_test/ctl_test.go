package interop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

var (
	ctlOnce sync.Once
	ctlPath string
	ctlErr  error
)

// ctlBinary returns the path of the ferrymqctl binary, built once per test
// run next to the broker's. FERRYMQCTL_BIN names one built elsewhere.
func ctlBinary(t *testing.T) string {
	t.Helper()
	ctlOnce.Do(func() {
		if p := os.Getenv("FERRYMQCTL_BIN"); p != "" {
			ctlPath = p
			return
		}
		out := filepath.Join(binDir, "ferrymqctl")
		cmd := exec.Command("go", "build", "-o", out, "github.com/ferrymq/ferrymq/cmd/ferrymqctl")
		if msg, err := cmd.CombinedOutput(); err != nil {
			ctlErr = fmt.Errorf("go build ./cmd/ferrymqctl: %v\n%s", err, msg)
			return
		}
		ctlPath = out
	})
	if ctlErr != nil {
		t.Fatal(ctlErr)
	}
	return ctlPath
}

// ctlResult is one ferrymqctl run.
type ctlResult struct {
	stdout, stderr string
	code           int
}

// ctl runs ferrymqctl against b's management listener with args (and
// stdin, if not empty) and returns what it printed and its exit status.
func ctl(t *testing.T, b *Broker, stdin string, args ...string) ctlResult {
	t.Helper()
	if b != nil {
		args = append([]string{"--url", b.HTTPURL}, args...)
	}
	return ctlRaw(t, stdin, args...)
}

func ctlRaw(t *testing.T, stdin string, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ctlBinary(t), args...)
	// The defaults must come from the flags here, not the environment.
	cmd.Env = os.Environ()
	for _, k := range []string{"FERRYMQ_URL", "FERRYMQ_USER", "FERRYMQ_PASSWORD", "FERRYMQ_VHOST"} {
		cmd.Env = slicesDeleteEnv(cmd.Env, k)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := ctlResult{stdout: out.String(), stderr: errOut.String()}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		r.code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("ferrymqctl %q: %v", args, err)
	}
	return r
}

// slicesDeleteEnv drops key from an environment list.
func slicesDeleteEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// ctlOK runs ferrymqctl and fails the test unless it exits 0.
func ctlOK(t *testing.T, b *Broker, args ...string) string {
	t.Helper()
	r := ctl(t, b, "", args...)
	if r.code != 0 {
		t.Fatalf("ferrymqctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// ctlJSON runs `ferrymqctl list <what> --json` and decodes the rows.
func ctlJSON(t *testing.T, b *Broker, what string, extra ...string) []map[string]any {
	t.Helper()
	out := ctlOK(t, b, append([]string{"list", what, "--json"}, extra...)...)
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("list %s --json is not a JSON list: %v\n%s", what, err, out)
	}
	return rows
}

// findRow returns the first row whose field equals value.
func findRow(rows []map[string]any, field string, value any) map[string]any {
	for _, r := range rows {
		if r[field] == value {
			return r
		}
	}
	return nil
}

// tableRow returns the cells of the table row whose column col is value,
// keyed by the header line's names.
func tableRow(t *testing.T, table, col, value string) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	headers := strings.Fields(lines[0])
	for _, l := range lines[1:] {
		cells := strings.Fields(l)
		if len(cells) != len(headers) {
			continue // a row with an empty cell: not one a test looks for
		}
		row := map[string]string{}
		for i, h := range headers {
			row[h] = cells[i]
		}
		if row[col] == value {
			return row
		}
	}
	t.Fatalf("no row with %s=%s in:\n%s", col, value, table)
	return nil
}

// TestCtlList: what a client declared shows in ferrymqctl's tables and in
// its --json, which is the API's JSON.
func TestCtlList(t *testing.T) {
	b := StartBroker(t)
	conn := dial(t, b)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare("ctl.events", "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("ctl.orders", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("ctl.orders", "order.*", "ctl.events", false, nil); err != nil {
		t.Fatal(err)
	}
	publishConfirmed(t, ch, "ctl.events", "order.new", 3)

	table := ctlOK(t, b, "list", "queues")
	if row := tableRow(t, table, "name", "ctl.orders"); row["messages"] != "3" || row["durable"] != "true" || row["vhost"] != "/" {
		t.Errorf("queue row %v, want 3 messages, durable, vhost /:\n%s", row, table)
	}
	// Columns chosen as rabbitmqctl list_queues name messages does.
	if out := ctlOK(t, b, "list", "queues", "name", "messages"); out != "name        messages\nctl.orders  3\n" {
		t.Errorf("list queues name messages printed %q", out)
	}
	if rows := ctlJSON(t, b, "queues", "name", "messages"); len(rows) != 1 || len(rows[0]) != 2 || rows[0]["messages"] != 3.0 {
		t.Errorf("list queues name messages --json: %v, want only those two fields", rows)
	}
	q := findRow(ctlJSON(t, b, "queues", "--vhost", "/"), "name", "ctl.orders")
	if q == nil || q["messages"] != 3.0 || q["durable"] != true {
		t.Errorf("list queues --json: ctl.orders is %v, want 3 messages, durable", q)
	}

	for _, tc := range []struct {
		what, field string
		value       any
		check       func(map[string]any) bool
	}{
		{"exchanges", "name", "ctl.events", func(r map[string]any) bool { return r["type"] == "topic" && r["durable"] == true }},
		{"bindings", "destination", "ctl.orders", func(r map[string]any) bool { return r["routing_key"] == "order.*" }},
		{"connections", "user", "guest", func(r map[string]any) bool { return r["protocol"] == "AMQP 0-9-1" && r["vhost"] == "/" }},
		{"vhosts", "name", "/", nil},
		{"users", "name", "guest", nil},
		{"permissions", "user", "guest", func(r map[string]any) bool { return r["configure"] == ".*" }},
	} {
		// The same rows bound to one source: only the one from ctl.events.
		rows := ctlJSON(t, b, tc.what)
		if tc.what == "bindings" {
			rows = filterRows(rows, "source", "ctl.events")
		}
		r := findRow(rows, tc.field, tc.value)
		if r == nil || (tc.check != nil && !tc.check(r)) {
			t.Errorf("list %s --json: %s=%v is %v", tc.what, tc.field, tc.value, r)
		}
		if out := ctlOK(t, b, "list", tc.what); !strings.Contains(out, fmt.Sprint(tc.value)) {
			t.Errorf("list %s table lacks %v:\n%s", tc.what, tc.value, out)
		}
	}

	// The broker names the version its --version prints.
	v, _, _ := runBinary(t, "--version")
	version := strings.Fields(v)[1]
	st := ctlOK(t, b, "status")
	for _, want := range []string{`(?m)^Broker:\s+ferrymq ` + regexp.QuoteMeta(version) + `$`, `(?m)^Queues:\s+\d+$`, `(?m)^Alarms:\s+none$`} {
		if !regexp.MustCompile(want).MatchString(st) {
			t.Errorf("status does not match %s:\n%s", want, st)
		}
	}
}

func filterRows(rows []map[string]any, field string, value any) []map[string]any {
	var out []map[string]any
	for _, r := range rows {
		if r[field] == value {
			out = append(out, r)
		}
	}
	return out
}

// publishConfirmed publishes n persistent messages and waits for their
// confirms, so that a listing afterwards sees them.
func publishConfirmed(t *testing.T, ch *amqp.Channel, exchange, key string, n int) {
	t.Helper()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	for i := range n {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(fmt.Sprint(i))})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("publish %d not confirmed: %v", i, err)
		}
	}
}

// TestCtlPurgeAndDelete: purge empties a queue; delete removes a queue and
// an exchange; a missing one is an error with the broker's reason.
func TestCtlPurgeAndDelete(t *testing.T) {
	b := StartBroker(t)
	ch, err := dial(t, b).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("ctl.work", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare("ctl.gone", "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publishConfirmed(t, ch, "", "ctl.work", 5)

	if out := ctlOK(t, b, "purge", "ctl.work"); out != "Purged queue \"ctl.work\" in vhost \"/\"\n" {
		t.Errorf("purge printed %q", out)
	}
	q, err := ch.QueueDeclarePassive("ctl.work", true, false, false, false, nil)
	if err != nil || q.Messages != 0 {
		t.Fatalf("after purge: %d messages, %v; want 0", q.Messages, err)
	}

	ctlOK(t, b, "delete", "queue", "ctl.work")
	ctlOK(t, b, "delete", "exchange", "ctl.gone", "--vhost", "/")
	rows := ctlJSON(t, b, "queues")
	if findRow(rows, "name", "ctl.work") != nil {
		t.Errorf("ctl.work still listed after delete: %v", rows)
	}
	if findRow(ctlJSON(t, b, "exchanges"), "name", "ctl.gone") != nil {
		t.Error("ctl.gone still listed after delete")
	}

	r := ctl(t, b, "", "delete", "queue", "ctl.work")
	if r.code != 1 || !strings.Contains(r.stderr, `ferrymqctl: delete queue "ctl.work" in vhost "/": 404 Not Found`) {
		t.Errorf("delete of a missing queue: exit %d, stderr %q; want 1 and the 404", r.code, r.stderr)
	}
	r = ctl(t, b, "", "--password", "wrong", "list", "queues")
	if r.code != 77 || !strings.Contains(r.stderr, "401 Unauthorized") {
		t.Errorf("wrong password: exit %d, stderr %q; want 77 and the 401", r.code, r.stderr)
	}
}

// TestCtlCloseConnection: close-connection closes an AMQP connection with
// 320 CONNECTION_FORCED and the reason given, as rabbitmqctl
// close_connection does.
func TestCtlCloseConnection(t *testing.T) {
	b := StartBroker(t)
	conn := dial(t, b)
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	rows := ctlJSON(t, b, "connections")
	if len(rows) != 1 {
		t.Fatalf("list connections: %v, want our one connection", rows)
	}
	name, _ := rows[0]["name"].(string)
	out := ctlOK(t, b, "close-connection", name, "maintenance window")
	if !strings.Contains(out, "Closed connection") {
		t.Errorf("close-connection printed %q", out)
	}
	select {
	case err := <-closed:
		if err == nil || err.Code != amqp.ConnectionForced || !err.Server || !strings.Contains(err.Reason, "maintenance window") {
			t.Fatalf("connection closed with %#v; want 320 from the server with the reason", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("connection not closed by close-connection")
	}
	waitConnGone(t, b, name)
	r := ctl(t, b, "", "close-connection", name)
	if r.code != 1 || !strings.Contains(r.stderr, "404") {
		t.Errorf("closing it again: exit %d, stderr %q; want 1 and 404", r.code, r.stderr)
	}
}

// TestCtlUnreachable: with no broker at --url, ferrymqctl says so and exits
// 69 (EX_UNAVAILABLE, as rabbitmqctl).
func TestCtlUnreachable(t *testing.T) {
	url := "http://" + freePort(t) // nothing listens there once freePort returns
	r := ctlRaw(t, "", "--url", url, "--timeout", "10s", "list", "queues")
	want := "ferrymqctl: list queues: cannot reach the broker's management API at " + url + ": dial tcp"
	if r.code != 69 || !strings.HasPrefix(r.stderr, want) || !strings.Contains(r.stderr, "connection refused") || r.stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 69 and %q", r.code, r.stdout, r.stderr, want)
	}
	// --version needs no broker.
	if r = ctlRaw(t, "", "--url", url, "--version"); r.code != 0 || !regexp.MustCompile(`^ferrymqctl \S+ go1\.\S+ \S+\n$`).MatchString(r.stdout) {
		t.Errorf("--version: exit %d, stdout %q", r.code, r.stdout)
	}
	r = ctlRaw(t, "", "list", "everything")
	if r.code != 64 || !strings.Contains(r.stderr, `list "everything": want one of`) {
		t.Fatalf("bad list: exit %d, stderr %q; want 64", r.code, r.stderr)
	}
}

// TestCtlUsers: add-user and set-permissions make a user that can log in
// with those permissions; add-user refuses a user that exists.
func TestCtlUsers(t *testing.T) {
	b := StartBroker(t)
	if r := ctl(t, b, "s3cret\n", "add-user", "ops", "--tags", "monitoring"); r.code != 0 {
		t.Fatalf("add-user: exit %d: %s", r.code, r.stderr)
	}
	ctlOK(t, b, "set-permissions", "ops", "^ops-", ".*", ".*")
	conn, err := amqp.DialConfig("amqp://ops:s3cret@"+b.Addr+"/", amqp.Config{Dial: amqp.DefaultDial(eventTimeout)})
	if err != nil {
		t.Fatalf("ops cannot log in after add-user: %v", err)
	}
	conn.Close()
	if r := ctl(t, b, "", "add-user", "ops", "other"); r.code != 1 || !strings.Contains(r.stderr, `user "ops" already exists`) {
		t.Errorf("add-user of an existing user: exit %d, stderr %q", r.code, r.stderr)
	}
	if u := findRow(ctlJSON(t, b, "users"), "name", "ops"); u == nil || !strings.Contains(fmt.Sprint(u["tags"]), "monitoring") {
		t.Errorf("users: ops is %v, want tag monitoring", u)
	}
	if p := findRow(ctlJSON(t, b, "permissions"), "user", "ops"); p == nil || p["configure"] != "^ops-" || p["vhost"] != "/" {
		t.Errorf("permissions: ops has %v", p)
	}
}
