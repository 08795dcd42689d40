package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// column is one column of a list table: the JSON field it shows (a dotted
// path into nested objects) and how.
type column struct {
	header string
	field  string
	format func(any) string // nil: formatValue
}

// listing is what `list <name>` fetches and shows.
type listing struct {
	all     []string // API path segments of the list over every vhost
	inVHost []string // the same for one vhost, which is appended; nil: not per vhost
	cols    []column
}

// listings are the lists `list` knows, by name (rabbitmqctl's list_*).
var listings = map[string]listing{
	"queues": {all: []string{"queues"}, inVHost: []string{"queues"}, cols: []column{
		{"vhost", "vhost", nil}, {"name", "name", nil}, {"durable", "durable", nil}, {"auto_delete", "auto_delete", nil},
		{"exclusive", "exclusive", nil}, {"messages", "messages", nil}, {"ready", "messages_ready", nil},
		{"unacked", "messages_unacknowledged", nil}, {"consumers", "consumers", nil}, {"state", "state", nil},
	}},
	"exchanges": {all: []string{"exchanges"}, inVHost: []string{"exchanges"}, cols: []column{
		{"vhost", "vhost", nil}, {"name", "name", nil}, {"type", "type", nil}, {"durable", "durable", nil},
		{"auto_delete", "auto_delete", nil}, {"internal", "internal", nil},
	}},
	"bindings": {all: []string{"bindings"}, inVHost: []string{"bindings"}, cols: []column{
		{"vhost", "vhost", nil}, {"source", "source", nil}, {"destination", "destination", nil},
		{"destination_type", "destination_type", nil}, {"routing_key", "routing_key", nil}, {"arguments", "arguments", nil},
	}},
	"connections": {all: []string{"connections"}, inVHost: []string{"vhosts", "", "connections"}, cols: []column{
		{"name", "name", nil}, {"protocol", "protocol", nil}, {"user", "user", nil}, {"vhost", "vhost", nil},
		{"channels", "channels", nil}, {"state", "state", nil}, {"connected_at", "connected_at", formatTime},
	}},
	"channels": {all: []string{"channels"}, inVHost: []string{"vhosts", "", "channels"}, cols: []column{
		{"name", "name", nil}, {"user", "user", nil}, {"vhost", "vhost", nil}, {"consumers", "consumer_count", nil},
		{"unacked", "messages_unacknowledged", nil}, {"prefetch", "prefetch_count", nil},
	}},
	"consumers": {all: []string{"consumers"}, inVHost: []string{"consumers"}, cols: []column{
		{"vhost", "queue.vhost", nil}, {"queue", "queue.name", nil}, {"consumer_tag", "consumer_tag", nil},
		{"channel", "channel_details.name", nil}, {"ack_required", "ack_required", nil}, {"prefetch", "prefetch_count", nil},
		{"active", "active", nil},
	}},
	"sessions": {all: []string{"mqtt", "sessions"}, inVHost: []string{"mqtt", "sessions"}, cols: []column{
		{"client_id", "client_id", nil}, {"vhost", "vhost", nil}, {"user", "user", nil}, {"connected", "connected", nil},
		{"subscriptions", "subscriptions", formatSubscriptions}, {"queued", "queued", nil}, {"inflight", "inflight", nil},
		{"dropped", "dropped", nil}, {"last_seen", "last_seen", formatTime},
	}},
	"retained": {all: []string{"mqtt", "retained"}, inVHost: []string{"mqtt", "retained"}, cols: []column{
		{"vhost", "vhost", nil}, {"topic", "topic", nil}, {"qos", "qos", nil}, {"payload_bytes", "payload_bytes", nil},
	}},
	"bridges": {all: []string{"bridges"}, cols: []column{
		{"name", "name", nil}, {"upstream", "upstream", nil}, {"state", "state", nil}, {"backlog", "backlog_messages", nil},
		{"forwarded", "forwarded", nil}, {"received", "received", nil}, {"dropped", "dropped", nil},
		{"last_error", "last_error", nil}, {"last_error_at", "last_error_at", formatTime},
	}},
	"users": {all: []string{"users"}, cols: []column{
		{"name", "name", nil}, {"tags", "tags", nil},
	}},
	"vhosts": {all: []string{"vhosts"}, cols: []column{
		{"name", "name", nil}, {"messages", "messages", nil}, {"description", "description", nil},
	}},
	"permissions": {all: []string{"permissions"}, inVHost: []string{"vhosts", "", "permissions"}, cols: []column{
		{"user", "user", nil}, {"vhost", "vhost", nil}, {"configure", "configure", nil}, {"write", "write", nil},
		{"read", "read", nil},
	}},
}

func listNames() []string {
	var names []string
	for n := range listings {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// list prints one list as a table, or as the API's JSON with --json.
// fields, if any, are the columns instead of the usual ones, as in
// `rabbitmqctl list_queues name messages`.
func list(ctx context.Context, c *client, o options, what string, fields []string, w io.Writer) error {
	l, ok := listings[what]
	if !ok {
		return usagef("list %q: want one of %s", what, strings.Join(listNames(), ", "))
	}
	if len(fields) > 0 {
		l.cols = nil
		for _, f := range fields {
			format := formatValue
			if strings.HasSuffix(f, "_at") || f == "last_seen" {
				format = formatTime
			}
			l.cols = append(l.cols, column{f, f, format})
		}
	}
	segs := l.all
	if o.vhostSet && l.inVHost != nil {
		segs = append([]string(nil), l.inVHost...)
		if i := indexOf(segs, ""); i >= 0 {
			segs[i] = o.vhost // /api/vhosts/{vhost}/connections
		} else {
			segs = append(segs, o.vhost) // /api/queues/{vhost}
		}
	}
	// A table asks only for its columns (RabbitMQ's columns parameter):
	// 10,000 queues with every field and their message_stats are ~14 MB,
	// their names and counts a tenth of that. --json without fields gets
	// every field.
	p := path(segs...)
	if !o.json || len(fields) > 0 {
		names := make([]string, len(l.cols))
		for i, col := range l.cols {
			names[i] = col.field
		}
		p += "?columns=" + url.QueryEscape(strings.Join(names, ","))
	}
	var raw []byte
	if err := c.doPath(ctx, "GET", p, nil, nil, &raw); err != nil {
		return fmt.Errorf("list %s: %w", what, err)
	}
	rows, err := decodeList(raw)
	if err != nil {
		return fmt.Errorf("list %s: %w", what, err)
	}
	if o.json {
		return writeJSON(w, rows)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	headers := make([]string, len(l.cols))
	for i, col := range l.cols {
		headers[i] = col.header
	}
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	for _, row := range rows {
		cells := make([]string, len(l.cols))
		for i, col := range l.cols {
			f := col.format
			if f == nil {
				f = formatValue
			}
			// A tab or newline in a name would break the table's columns.
			cells[i] = strings.NewReplacer("\t", `\t`, "\n", `\n`).Replace(f(lookup(row, col.field)))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// decodeList reads a list answer: a JSON array, or RabbitMQ's pagination
// envelope {"items": [...], ...}.
func decodeList(raw []byte) ([]map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("answer is not JSON: %w", err)
	}
	if env, ok := v.(map[string]any); ok {
		v = env["items"]
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, errors.New("answer is not a JSON list")
	}
	rows := make([]map[string]any, 0, len(arr))
	for _, e := range arr {
		if m, ok := e.(map[string]any); ok {
			rows = append(rows, m)
		}
	}
	return rows, nil
}

// lookup follows a dotted field path into nested objects.
func lookup(row map[string]any, field string) any {
	var v any = row
	for _, k := range strings.Split(field, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// formatValue prints a JSON value in a table cell: numbers as sent, lists
// comma-separated, objects as k=v pairs, null as nothing.
func formatValue(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		if v {
			return "true"
		}
		return "false"
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = formatValue(e)
		}
		return strings.Join(parts, ",")
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + formatValue(v[k])
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}

// formatTime prints RabbitMQ's milliseconds since the epoch, or an
// RFC 3339 time (ferrymq's own endpoints), to the second in UTC; anything
// else as sent.
func formatTime(v any) string {
	const layout = "2006-01-02 15:04:05"
	switch v := v.(type) {
	case json.Number:
		if ms, err := v.Int64(); err == nil && ms > 0 {
			return time.UnixMilli(ms).UTC().Format(layout)
		}
	case string:
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			return t.UTC().Format(layout)
		}
	}
	return formatValue(v)
}

// formatSubscriptions prints an MQTT session's subscriptions as
// filter(qos) pairs.
func formatSubscriptions(v any) string {
	subs, ok := v.([]any)
	if !ok {
		return formatValue(v)
	}
	parts := make([]string, 0, len(subs))
	for _, s := range subs {
		m, ok := s.(map[string]any)
		if !ok {
			parts = append(parts, formatValue(s))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s(%s)", formatValue(m["filter"]), formatValue(m["qos"])))
	}
	return strings.Join(parts, " ")
}

// writeJSON prints v indented.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// status prints the overview: what the broker is, its totals and rates,
// its listeners and its alarms.
func status(ctx context.Context, c *client, o options, w io.Writer) error {
	var ov map[string]any
	if err := c.do(ctx, "GET", nil, nil, &ov, "overview"); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	// 200 {"status":"ok"} or 503 with the alarms in effect.
	alarms := "none"
	var ae *apiError
	if err := c.do(ctx, "GET", nil, nil, nil, "health", "checks", "alarms"); errors.As(err, &ae) && ae.status == http.StatusServiceUnavailable {
		alarms = ae.reason
	} else if err != nil {
		alarms = "unknown: " + err.Error()
	}
	if o.json {
		ov["alarms"] = alarms
		return writeJSON(w, ov)
	}
	product := formatValue(ov["product_name"])
	if product == "" {
		product = "RabbitMQ"
	}
	version := formatValue(ov["product_version"])
	if version == "" {
		version = formatValue(ov["rabbitmq_version"])
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	line := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%s\n", k, formatValue(v)) }
	line("Broker", product+" "+version)
	line("Node", ov["node"])
	for _, k := range []string{"connections", "channels", "exchanges", "queues", "consumers"} {
		line(strings.ToUpper(k[:1])+k[1:], lookup(ov, "object_totals."+k))
	}
	if lookup(ov, "queue_totals.messages") != nil {
		line("Messages", fmt.Sprintf("%s (ready %s, unacked %s)", formatValue(lookup(ov, "queue_totals.messages")),
			formatValue(lookup(ov, "queue_totals.messages_ready")), formatValue(lookup(ov, "queue_totals.messages_unacknowledged"))))
	}
	for _, r := range []struct{ name, field string }{{"Publish rate", "publish"}, {"Deliver rate", "deliver_get"}, {"Ack rate", "ack"}} {
		if v := lookup(ov, "message_stats."+r.field+"_details.rate"); v != nil {
			line(r.name, formatValue(v)+"/s")
		}
	}
	if ls, ok := ov["listeners"].([]any); ok {
		var parts []string
		for _, l := range ls {
			if m, ok := l.(map[string]any); ok {
				hostPort := net.JoinHostPort(formatValue(m["ip_address"]), formatValue(m["port"]))
				parts = append(parts, formatValue(m["protocol"])+" "+hostPort)
			}
		}
		line("Listeners", strings.Join(parts, ", "))
	}
	line("Alarms", alarms)
	return tw.Flush()
}

// deleteObject deletes a queue or exchange in --vhost.
func deleteObject(ctx context.Context, c *client, o options, kind, name string, w io.Writer) error {
	p := path(kind+"s", o.vhost, name)
	var q []string
	if o.ifUnused {
		q = append(q, "if-unused=true")
	}
	if o.ifEmpty {
		if kind != "queue" {
			return usagef("--if-empty applies to queues only")
		}
		q = append(q, "if-empty=true")
	}
	if len(q) > 0 {
		p += "?" + strings.Join(q, "&")
	}
	if err := c.doPath(ctx, "DELETE", p, nil, nil, nil); err != nil {
		return fmt.Errorf("delete %s %q in vhost %q: %w", kind, name, o.vhost, err)
	}
	fmt.Fprintf(w, "Deleted %s %q in vhost %q\n", kind, name, o.vhost)
	return nil
}

// defsPath is the definitions of every vhost, or of --vhost when given.
func defsPath(o options) []string {
	if o.vhostSet {
		return []string{"definitions", o.vhost}
	}
	return []string{"definitions"}
}

// export writes the definitions to file ("-": stdout).
func export(ctx context.Context, c *client, o options, file string, stdout io.Writer) error {
	var raw []byte
	if err := c.do(ctx, "GET", nil, nil, &raw, defsPath(o)...); err != nil {
		return fmt.Errorf("export definitions: %w", err)
	}
	var defs map[string]any
	if err := json.Unmarshal(raw, &defs); err != nil {
		return fmt.Errorf("export definitions: answer is not a JSON object: %w", err)
	}
	if file == "-" {
		_, err := stdout.Write(raw)
		return err
	}
	if err := os.WriteFile(file, raw, 0o600); err != nil { // holds password hashes
		return fmt.Errorf("export definitions: %w", err)
	}
	fmt.Fprintf(stdout, "Exported definitions to %s: %s\n", file, countDefs(defs))
	return nil
}

// importDefs posts a definitions file ("-": stdin).
func importDefs(ctx context.Context, c *client, o options, file string, stdin io.Reader, stdout io.Writer) error {
	var raw []byte
	var err error
	if file == "-" {
		raw, err = io.ReadAll(stdin)
	} else {
		raw, err = os.ReadFile(file)
	}
	if err != nil {
		return fmt.Errorf("import definitions: %w", err)
	}
	var defs map[string]any
	if err := json.Unmarshal(raw, &defs); err != nil {
		return fmt.Errorf("import definitions: %s is not a JSON object: %w", file, err)
	}
	var answer []byte
	if err := c.do(ctx, "POST", nil, raw, &answer, defsPath(o)...); err != nil {
		return fmt.Errorf("import definitions from %s: %w", file, err)
	}
	fmt.Fprintf(stdout, "Imported definitions from %s: %s\n", file, countDefs(defs))
	// ferrymq answers 200 {"warnings": [...]} for what it did not apply as
	// given (policies, quorum queues, ...); RabbitMQ answers 204.
	var res struct {
		Warnings []string `json:"warnings"`
	}
	if json.Unmarshal(answer, &res) == nil && len(res.Warnings) > 0 {
		fmt.Fprintf(stdout, "%d not applied as given:\n", len(res.Warnings))
		for _, w := range res.Warnings {
			fmt.Fprintf(stdout, "  warning: %s\n", w)
		}
	}
	return nil
}

// countDefs summarises a definitions document: "2 users, 1 vhosts, ...".
func countDefs(defs map[string]any) string {
	var parts []string
	for _, k := range []string{"users", "vhosts", "permissions", "exchanges", "queues", "bindings"} {
		if l, ok := defs[k].([]any); ok {
			parts = append(parts, fmt.Sprintf("%d %s", len(l), k))
		}
	}
	return strings.Join(parts, ", ")
}

// addUser creates a user, refusing one that exists, as rabbitmqctl
// add_user does (PUT alone would replace it). The password is the second
// argument or, left out, the first line of stdin, which keeps it out of
// the process list.
func addUser(ctx context.Context, c *client, o options, args []string, stdin io.Reader, w io.Writer) error {
	name := args[0]
	var pass string
	if len(args) == 2 {
		pass = args[1]
	} else {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("add-user: reading the password from stdin: %w", err)
		}
		pass = strings.TrimRight(line, "\r\n")
	}
	if pass == "" {
		return usagef("add-user %s: empty password (give it as the second argument or on stdin)", name)
	}
	var ae *apiError
	switch err := c.do(ctx, "GET", nil, nil, nil, "users", name); {
	case err == nil:
		return fmt.Errorf("add-user: user %q already exists", name)
	case !errors.As(err, &ae) || ae.status != http.StatusNotFound:
		return fmt.Errorf("add-user %s: %w", name, err)
	}
	body := map[string]string{"password": pass, "tags": o.tags}
	if err := c.do(ctx, "PUT", nil, body, nil, "users", name); err != nil {
		return fmt.Errorf("add-user %s: %w", name, err)
	}
	fmt.Fprintf(w, "Added user %q\n", name)
	return nil
}

// clearRetained deletes the retained messages of --vhost that match filter.
func clearRetained(ctx context.Context, c *client, o options, filter string, w io.Writer) error {
	p := path("mqtt", "retained", o.vhost) + "?filter=" + url.QueryEscape(filter)
	var res struct {
		Cleared json.Number `json:"cleared"`
	}
	if err := c.doPath(ctx, "DELETE", p, nil, nil, &res); err != nil {
		return fmt.Errorf("clear retained messages matching %q in vhost %q: %w", filter, o.vhost, err)
	}
	fmt.Fprintf(w, "Cleared %s retained messages matching %q in vhost %q\n", res.Cleared, filter, o.vhost)
	return nil
}
