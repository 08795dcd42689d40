package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name    string
		file    string // config file contents; "" means no file is written
		args    []string
		want    Config
		wantErr string // substring of the error; "" means success
	}{
		{
			name: "defaults",
			want: defaultConfig(),
		},
		{
			name: "flags only",
			args: []string{"--amqp-listen", "127.0.0.1:0", "--mqtt-listen=:11883", "--data-dir", "/tmp/x",
				"--log-level", "DEBUG", "--heartbeat", "5", "--frame-max", "8192", "--channel-max", "16",
				"--max-message-size", "1024", "--user", "alice:secret", "--user", "bob:pa:ss"},
			want: Config{
				AMQPListen: "127.0.0.1:0", MQTTListen: ":11883", MQTTWSListen: ":8083", HTTPListen: ":15672", DataDir: "/tmp/x", LogLevel: "DEBUG", LogFormat: "text",
				Heartbeat: 5, FrameMax: 8192, ChannelMax: 16, MaxMessageSize: 1024, MemoryBudget: 256 << 20,
				LoginFailureDelay: time.Second, MaxQueuedMessages: 1000, MaxInflightMessages: 1000, SysInterval: 10,
				Users: []UserConfig{{Name: "alice", Password: "secret"}, {Name: "bob", Password: "pa:ss"}},
			},
		},
		{
			name: "file only",
			file: `
amqp_listen: 127.0.0.1:5673
heartbeat: 30
users:
  - name: admin
    password: s3cret
    loopback_only: true
    tags: [administrator, monitoring]
`,
			want: Config{
				AMQPListen: "127.0.0.1:5673", MQTTListen: ":1883", MQTTWSListen: ":8083", HTTPListen: ":15672", DataDir: "./data", LogLevel: "info", LogFormat: "text",
				Heartbeat: 30, FrameMax: 131072, ChannelMax: 2047, MaxMessageSize: 16 << 20, MemoryBudget: 256 << 20,
				LoginFailureDelay: time.Second, MaxQueuedMessages: 1000, MaxInflightMessages: 1000, SysInterval: 10,
				Users: []UserConfig{{Name: "admin", Password: "s3cret", LoopbackOnly: true,
					Tags: []string{"administrator", "monitoring"}}},
			},
		},
		{
			name: "explicit flags override the file, unset flags do not",
			file: `
amqp_listen: 127.0.0.1:5673
data_dir: /var/lib/ferrymq
heartbeat: 30
users:
  - name: alice
    password: from-file
`,
			args: []string{"--amqp-listen", ":6000", "--user", "alice:from-flag"},
			want: Config{
				AMQPListen: ":6000", MQTTListen: ":1883", MQTTWSListen: ":8083", HTTPListen: ":15672", DataDir: "/var/lib/ferrymq", LogLevel: "info", LogFormat: "text",
				Heartbeat: 30, FrameMax: 131072, ChannelMax: 2047, MaxMessageSize: 16 << 20, MemoryBudget: 256 << 20,
				LoginFailureDelay: time.Second, MaxQueuedMessages: 1000, MaxInflightMessages: 1000, SysInterval: 10,
				// Both are kept; users are applied in order, so the flag wins.
				Users: []UserConfig{{Name: "alice", Password: "from-file"}, {Name: "alice", Password: "from-flag"}},
			},
		},
		{
			name: "flag equal to its default still overrides the file",
			file: "heartbeat: 30\n",
			args: []string{"--heartbeat", "60"},
			want: defaultConfig(),
		},
		{
			name: "empty file keeps defaults",
			file: "# nothing set\n",
			want: defaultConfig(),
		},
		{
			name:    "unknown key rejected, naming file and key",
			file:    "amqp_listen: :5672\namqp_lisen: :5673\n",
			wantErr: `line 2: unknown key "amqp_lisen"`,
		},
		{
			name:    "unknown user key rejected",
			file:    "users:\n  - name: a\n    password: b\n    loopback: true\n",
			wantErr: `line 4: unknown key "loopback"`,
		},
		{
			name:    "wrong type in file",
			file:    "channel_max: 70000\n",
			wantErr: "cannot unmarshal",
		},
		{
			name:    "file user without password",
			file:    "users:\n  - name: a\n",
			wantErr: `user "a": password is empty`,
		},
		{name: "user without colon", args: []string{"--user", "alice"}, wantErr: "want name:password"},
		{name: "user with empty name", args: []string{"--user", ":secret"}, wantErr: "name is empty"},
		{name: "user with empty password", args: []string{"--user", "alice:"}, wantErr: "password is empty"},
		{name: "bad log level", args: []string{"--log-level", "verbose"}, wantErr: "want debug, info, warn or error"},
		{name: "heartbeat zero means off", args: []string{"--heartbeat", "0"}, want: func() Config { c := defaultConfig(); c.Heartbeat = 0; return c }()},
		{name: "memory budget zero never pages", args: []string{"--memory-budget", "0"}, want: func() Config { c := defaultConfig(); c.MemoryBudget = 0; return c }()},
		{name: "memory budget negative", args: []string{"--memory-budget", "-5"}, wantErr: "memory_budget -5"},
		{name: "heartbeat negative", args: []string{"--heartbeat", "-1"}, wantErr: "heartbeat -1"},
		{name: "memory limit flag", args: []string{"--memory-limit", "512MiB"}, want: func() Config { c := defaultConfig(); c.MemoryLimit = "512MiB"; return c }()},
		{name: "memory limit fraction in file", file: "memory_limit: 0.5\n", want: func() Config { c := defaultConfig(); c.MemoryLimit = "0.5"; return c }()},
		{name: "memory limit bad", args: []string{"--memory-limit", "lots"}, wantErr: `memory_limit "lots"`},
		{name: "memory limit fraction above 1", file: "memory_limit: 1.5\n", wantErr: `memory_limit "1.5": a fraction`},
		{name: "mqtt session limits", args: []string{"--max-queued-messages", "0", "--max-queued-bytes", "1048576", "--max-inflight-messages", "20"},
			want: func() Config {
				c := defaultConfig()
				c.MaxQueuedMessages, c.MaxQueuedBytes, c.MaxInflightMessages = 0, 1<<20, 20
				return c
			}()},
		{name: "mqtt session limits in file", file: "max_queued_messages: 50\nmax_queued_bytes: 100\nmax_inflight_messages: 10\n",
			want: func() Config {
				c := defaultConfig()
				c.MaxQueuedMessages, c.MaxQueuedBytes, c.MaxInflightMessages = 50, 100, 10
				return c
			}()},
		{name: "max inflight zero", args: []string{"--max-inflight-messages", "0"}, wantErr: "max_inflight_messages 0"},
		{name: "max queued negative", args: []string{"--max-queued-messages", "-1"}, wantErr: "max_queued_messages -1"},
		{name: "max keepalive flag", args: []string{"--max-keepalive", "120"}, want: func() Config { c := defaultConfig(); c.MaxKeepalive = 120; return c }()},
		{name: "sys interval flag", args: []string{"--sys-interval", "0"}, want: func() Config { c := defaultConfig(); c.SysInterval = 0; return c }()},
		{name: "sys interval file", file: "sys_interval: 2\n", want: func() Config { c := defaultConfig(); c.SysInterval = 2; return c }()},
		{name: "sys interval negative", args: []string{"--sys-interval", "-1"}, wantErr: "sys_interval -1"},
		{name: "max keepalive file", file: "max_keepalive: 300\n", want: func() Config { c := defaultConfig(); c.MaxKeepalive = 300; return c }()},
		{name: "max keepalive too large", args: []string{"--max-keepalive", "65536"}, wantErr: "max_keepalive 65536"},
		{name: "frame max below spec minimum", args: []string{"--frame-max", "4095"}, wantErr: "frame_max 4095"},
		{name: "channel max too large", args: []string{"--channel-max", "65536"}, wantErr: "--channel-max 65536"},
		{name: "channel max zero", args: []string{"--channel-max", "0"}, wantErr: "channel_max 0"},
		{name: "message size too large", args: []string{"--max-message-size", "536870913"}, wantErr: "max_message_size"},
		{name: "unknown flag", args: []string{"--amqp-port", "5672"}, wantErr: "amqp-port"},
		{name: "stray argument", args: []string{"serve"}, wantErr: `unexpected argument "serve"`},
		{name: "missing config file", args: []string{"--config", "/nonexistent/ferrymq.yaml"}, wantErr: "/nonexistent/ferrymq.yaml"},
		{name: "log format json", args: []string{"--log-format", "json"}, want: func() Config { c := defaultConfig(); c.LogFormat = "json"; return c }()},
		{name: "log format file", file: "log_format: json\n", want: func() Config { c := defaultConfig(); c.LogFormat = "json"; return c }()},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: `log_format "xml": want text or json`},
		{name: "listen address without port", args: []string{"--mqtt-listen", "127.0.0.1"}, wantErr: `mqtt_listen "127.0.0.1": want host:port or :port (missing port in address)`},
		{name: "listen port out of range", args: []string{"--amqp-listen", ":70000"}, wantErr: `amqp_listen ":70000": port 70000 out of range`},
		{name: "listen port unknown name", file: "debug_listen: localhost:nosuchservice\n", wantErr: `debug_listen "localhost:nosuchservice": unknown port "nosuchservice"`},
		{name: "http listen address without port", args: []string{"--http-listen", "0.0.0.0"}, wantErr: `http_listen "0.0.0.0": want host:port`},
		{name: "listen port by service name", args: []string{"--amqp-listen", "127.0.0.1:amqp"}, want: func() Config { c := defaultConfig(); c.AMQPListen = "127.0.0.1:amqp"; return c }()},
		{name: "bridge flag without bridge url", args: []string{"--bridge-name", "cloud", "--bridge-topic", "a/#"}, wantErr: "--bridge-name, --bridge-topic set without --bridge-url"},
		{name: "bad bridge url flag", args: []string{"--bridge-url", "http://x:1"}, wantErr: `bridge upstream: url scheme "http"`},
		{name: "bridge ca file missing", file: "bridges:\n  - name: up\n    url: amqps://h:5671\n    tls: {ca_file: /nonexistent/ca.pem}\n", wantErr: "bridge up: ca_file: open /nonexistent/ca.pem"},
		{name: "bridge defined twice", file: "bridges:\n  - {name: up, url: 'mqtt://h:1883'}\n  - {name: up, url: 'mqtt://h:1884'}\n", wantErr: "bridge up: defined twice"},
		{name: "node name with comma", args: []string{"--node-name", "a,b"}, wantErr: `node_name "a,b": must not contain a comma`},
		{name: "wrong type names the key", file: "amqp_listen: :5672\nheartbeat: often\n", wantErr: "line 2: key heartbeat: cannot unmarshal !!str `often` into int"},
		{name: "wrong type in a list names the path", file: "users:\n  - name: a\n    password: b\n    max_connections: lots\n", wantErr: "line 4: key users[0].max_connections: cannot unmarshal"},
		{name: "user twice in the file", file: "users:\n  - {name: a, password: b}\n  - {name: a, password: c}\n", wantErr: `user "a" defined more than once in the file`},
		{name: "user twice in flags", args: []string{"--user", "a:b", "--user", "a:c"}, wantErr: `user "a" defined more than once in --user flags`},
		{name: "tls cert file missing", args: []string{"--amqps-listen", ":0", "--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"}, wantErr: "/nonexistent/c.pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			var path string
			if tt.file != "" {
				path = filepath.Join(t.TempDir(), "ferrymq.yaml")
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append([]string{"--config", path}, args...)
			}
			got, err := loadConfig(args, io.Discard)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("loadConfig(%q) = %+v, want error containing %q", args, got, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("loadConfig(%q) error = %q, want it to contain %q", args, err, tt.wantErr)
				}
				if path != "" && !strings.Contains(err.Error(), path) {
					t.Fatalf("loadConfig(%q) error = %q, want it to name the file %s", args, err, path)
				}
				return
			}
			if err != nil {
				t.Fatalf("loadConfig(%q): %v", args, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("loadConfig(%q)\n got %+v\nwant %+v", args, got, tt.want)
			}
		})
	}
}

func TestLoadConfigHelp(t *testing.T) {
	var out strings.Builder
	_, err := loadConfig([]string{"--help"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("loadConfig(--help) error = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"-amqp-listen", "-mqtt-ws-listen", "-user name:password"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
}

// TestLoadConfigReportsEveryError: problems in the file and the flags are
// reported together, one a line under a count, not the first one only.
func TestLoadConfigReportsEveryError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferrymq.yaml")
	file := `
heartbeat: often
amqp_lisen: ":5672"
users:
  - {name: a, password: b}
  - {name: a, password: c}
bridges:
  - {name: up, url: "ftp://h:21"}
`
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig([]string{"--config", path, "--mqtt-listen", "nohost", "--bridge-overflow", "drop-oldest", "--log-format", "xml"}, io.Discard)
	var ce *configError
	if !errors.As(err, &ce) {
		t.Fatalf("loadConfig: %v, want a *configError", err)
	}
	msg := err.Error()
	want := []string{
		"config (file " + path + " and flags): 7 errors:\n",
		"\n  config file " + path + ": line 2: key heartbeat: cannot unmarshal",
		"\n  config file " + path + `: line 3: unknown key "amqp_lisen"`,
		"\n  user \"a\" defined more than once in the file",
		"\n  --bridge-overflow set without --bridge-url",
		"\n  mqtt_listen \"nohost\": want host:port",
		"\n  log_format \"xml\"",
		"\n  bridge up: url scheme \"ftp\"",
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error lacks %q:\n%s", w, msg)
		}
	}
}

func TestLoadConfigVersion(t *testing.T) {
	if _, err := loadConfig([]string{"--version"}, io.Discard); !errors.Is(err, errVersion) {
		t.Fatalf("loadConfig(--version) = %v, want errVersion", err)
	}
}

// TestParseMemoryLimit: sizes with IEC and SI units, bytes, fractions of
// the machine's memory, 0 for none, the default 0.4, and what is refused.
func TestParseMemoryLimit(t *testing.T) {
	const total = 10 << 30
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"", 4 << 30, ""},
		{"0.4", 4 << 30, ""},
		{"1.0", 10 << 30, ""},
		{"0", 0, ""},
		{"512MiB", 512 << 20, ""},
		{"512M", 512 << 20, ""},
		{"2GB", 2e9, ""},
		{"1.5GiB", 3 << 29, ""},
		{"100kB", 100e3, ""},
		{"1073741824", 1 << 30, ""},
		{" 64 MiB ", 64 << 20, ""},
		{"1.5", 0, "a fraction of memory is at most 1"},
		{"-1", 0, "want a size"},
		{"lots", 0, "want a size"},
		{"12XB", 0, "want a size"},
	} {
		got, err := parseMemoryLimit(tc.in, total)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseMemoryLimit(%q) = %d, %v; want an error with %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseMemoryLimit(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	if tm := totalMemory(); tm <= 0 {
		t.Errorf("totalMemory() = %d: neither /proc/meminfo nor the cgroup was read", tm)
	}
}
