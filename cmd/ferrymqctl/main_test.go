package main

import (
	"encoding/json"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
)

// The commands against a real broker are tested in interop_test
// (ctl_test.go), which runs this binary against the ferrymq binary.

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		pos      []string
		url      string
		user     string
		vhost    string
		vhostSet bool
		json     bool
		wantErr  string
	}{
		{name: "defaults", args: []string{"status"}, pos: []string{"status"}, url: "http://localhost:15672", user: "guest", vhost: "/"},
		{name: "flags after the command", args: []string{"list", "queues", "--json", "--vhost", "plant1"},
			pos: []string{"list", "queues"}, url: "http://localhost:15672", user: "guest", vhost: "plant1", vhostSet: true, json: true},
		{name: "flags between arguments", args: []string{"--url", "http://h:1", "close-connection", "--user", "ops", "c1", "bye"},
			pos: []string{"close-connection", "c1", "bye"}, url: "http://h:1", user: "ops", vhost: "/"},
		{name: "double dash keeps a reason starting with -", args: []string{"close-connection", "c1", "--", "-bye"},
			pos: []string{"close-connection", "c1", "-bye"}, url: "http://localhost:15672", user: "guest", vhost: "/"},
		{name: "environment", env: map[string]string{"FERRYMQ_URL": "https://b:15671", "FERRYMQ_USER": "env", "FERRYMQ_VHOST": "v"},
			args: []string{"list", "queues"}, pos: []string{"list", "queues"}, url: "https://b:15671", user: "env", vhost: "v", vhostSet: true},
		{name: "flag beats environment", env: map[string]string{"FERRYMQ_USER": "env"}, args: []string{"--user", "flag", "status"},
			pos: []string{"status"}, url: "http://localhost:15672", user: "flag", vhost: "/"},
		{name: "no command", args: nil, wantErr: "no command"},
		{name: "version", args: []string{"--version"}, wantErr: "version requested"},
		{name: "unknown flag", args: []string{"status", "--nope"}, wantErr: "flag provided but not defined: -nope"},
		{name: "bad timeout", args: []string{"status", "--timeout", "0s"}, wantErr: "--timeout must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unsetEnv(t, "FERRYMQ_URL", "FERRYMQ_USER", "FERRYMQ_PASSWORD", "FERRYMQ_VHOST")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			o, pos, err := parseArgs(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseArgs(%q) error %v, want %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseArgs(%q): %v", tt.args, err)
			}
			if !reflect.DeepEqual(pos, tt.pos) || o.url != tt.url || o.user != tt.user || o.vhost != tt.vhost || o.vhostSet != tt.vhostSet || o.json != tt.json {
				t.Fatalf("parseArgs(%q) = %+v %q", tt.args, o, pos)
			}
		})
	}
}

// unsetEnv removes keys for the rest of the test (t.Setenv restores them).
func unsetEnv(t *testing.T, keys ...string) {
	for _, k := range keys {
		t.Setenv(k, "")
		if err := os.Unsetenv(k); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewClientURL(t *testing.T) {
	tests := []struct {
		url, base, user, pass, wantErr string
		userSet                        bool
	}{
		{url: "http://localhost:15672/", base: "http://localhost:15672", user: "guest", pass: "guest"},
		{url: "https://ops:pw@b.example:15671/mgmt", base: "https://b.example:15671/mgmt", user: "ops", pass: "pw"},
		{url: "http://ops:pw@b:15672", userSet: true, base: "http://b:15672", user: "guest", pass: "guest"},
		{url: "localhost:15672", wantErr: "want http://host:port"},
		{url: "ftp://h/", wantErr: "want http://host:port"},
	}
	for _, tt := range tests {
		c, err := newClient(options{url: tt.url, user: "guest", password: "guest", userSet: tt.userSet})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("newClient(%q): %v, want %q", tt.url, err, tt.wantErr)
			}
			continue
		}
		if err != nil || c.base != tt.base || c.user != tt.user || c.pass != tt.pass {
			t.Errorf("newClient(%q) = %+v, %v", tt.url, c, err)
		}
	}
}

func TestPathEscapesSegments(t *testing.T) {
	if got, want := path("queues", "/", "a b/c"), "/api/queues/%2F/a%20b%2Fc"; got != want {
		t.Fatalf("path = %q, want %q", got, want)
	}
}

func TestAPIErrorText(t *testing.T) {
	tests := []struct {
		e    apiError
		want string
	}{
		{apiError{status: 404, text: "404 Not Found", kind: "Object Not Found", reason: "Not Found"}, "404 Not Found: Object Not Found"},
		{apiError{status: 400, text: "400 Bad Request", kind: "bad_request", reason: "invalid arg 'x-max-length'"}, "400 Bad Request: invalid arg 'x-max-length' (bad_request)"},
		{apiError{status: 401, text: "401 Unauthorized", kind: "not_authorized", reason: "Login failed"}, "401 Unauthorized: Login failed (not_authorized); check --user and --password"},
		{apiError{status: 401, text: "401 Unauthorized", kind: "not_authorised", reason: "Access refused."}, "401 Unauthorized: Access refused. (not_authorised)"},
		{apiError{status: 500, text: "500 Internal Server Error", reason: "boom"}, "500 Internal Server Error: boom"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestDecodeListAndFormat(t *testing.T) {
	for _, body := range []string{
		`[{"name":"q","messages":3,"durable":true,"arguments":{"x-max-length":10},"tags":["a","b"],"connected_at":1765000000000}]`,
		`{"items":[{"name":"q","messages":3,"durable":true,"arguments":{"x-max-length":10},"tags":["a","b"],"connected_at":1765000000000}],"page":1}`,
	} {
		rows, err := decodeList([]byte(body))
		if err != nil || len(rows) != 1 {
			t.Fatalf("decodeList(%s) = %v, %v", body, rows, err)
		}
		r := rows[0]
		got := []string{formatValue(r["name"]), formatValue(r["messages"]), formatValue(r["durable"]), formatValue(r["arguments"]),
			formatValue(r["tags"]), formatTime(r["connected_at"]), formatValue(r["missing"])}
		want := []string{"q", "3", "true", "x-max-length=10", "a,b", "2025-12-06 05:46:40", ""}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("cells %q, want %q", got, want)
		}
	}
	for in, want := range map[string]string{`"2026-12-06T02:48:24.312458571Z"`: "2026-12-06 02:48:24", `"2026-12-06T03:48:24+01:00"`: "2026-12-06 02:48:24", `null`: "", `"never"`: "never"} {
		var v any
		dec := json.NewDecoder(strings.NewReader(in))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		if got := formatTime(v); got != want {
			t.Errorf("formatTime(%s) = %q, want %q", in, got, want)
		}
	}
	if _, err := decodeList([]byte(`{"error":"x"}`)); err == nil {
		t.Error("decodeList of an object without items: no error")
	}
	var subs any
	json.Unmarshal([]byte(`[{"filter":"a/#","qos":1},{"filter":"b","qos":0}]`), &subs)
	if got := formatSubscriptions(subs); got != "a/#(1) b(0)" {
		t.Errorf("formatSubscriptions = %q", got)
	}
	if got := lookup(map[string]any{"queue": map[string]any{"name": "q"}}, "queue.name"); got != "q" {
		t.Errorf("lookup = %v", got)
	}
}
