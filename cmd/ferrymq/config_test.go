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
				AMQPListen: "127.0.0.1:0", MQTTListen: ":11883", MQTTWSListen: ":8083", DataDir: "/tmp/x", LogLevel: "DEBUG",
				Heartbeat: 5, FrameMax: 8192, ChannelMax: 16, MaxMessageSize: 1024, MemoryBudget: 256 << 20,
				LoginFailureDelay: time.Second,
				Users:             []UserConfig{{Name: "alice", Password: "secret"}, {Name: "bob", Password: "pa:ss"}},
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
				AMQPListen: "127.0.0.1:5673", MQTTListen: ":1883", MQTTWSListen: ":8083", DataDir: "./data", LogLevel: "info",
				Heartbeat: 30, FrameMax: 131072, ChannelMax: 2047, MaxMessageSize: 16 << 20, MemoryBudget: 256 << 20,
				LoginFailureDelay: time.Second,
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
				AMQPListen: ":6000", MQTTListen: ":1883", MQTTWSListen: ":8083", DataDir: "/var/lib/ferrymq", LogLevel: "info",
				Heartbeat: 30, FrameMax: 131072, ChannelMax: 2047, MaxMessageSize: 16 << 20, MemoryBudget: 256 << 20,
				LoginFailureDelay: time.Second,
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
		{name: "max keepalive flag", args: []string{"--max-keepalive", "120"}, want: func() Config { c := defaultConfig(); c.MaxKeepalive = 120; return c }()},
		{name: "max keepalive file", file: "max_keepalive: 300\n", want: func() Config { c := defaultConfig(); c.MaxKeepalive = 300; return c }()},
		{name: "max keepalive too large", args: []string{"--max-keepalive", "65536"}, wantErr: "max_keepalive 65536"},
		{name: "frame max below spec minimum", args: []string{"--frame-max", "4095"}, wantErr: "frame_max 4095"},
		{name: "channel max too large", args: []string{"--channel-max", "65536"}, wantErr: "--channel-max 65536"},
		{name: "channel max zero", args: []string{"--channel-max", "0"}, wantErr: "channel_max 0"},
		{name: "message size too large", args: []string{"--max-message-size", "536870913"}, wantErr: "max_message_size"},
		{name: "unknown flag", args: []string{"--amqp-port", "5672"}, wantErr: "amqp-port"},
		{name: "stray argument", args: []string{"serve"}, wantErr: `unexpected argument "serve"`},
		{name: "missing config file", args: []string{"--config", "/nonexistent/ferrymq.yaml"}, wantErr: "/nonexistent/ferrymq.yaml"},
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
