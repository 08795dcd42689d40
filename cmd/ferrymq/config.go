package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/cmd/ferrymq/authhttp"
)

// Config is the broker's settings after merging the defaults, the --config
// file and the command-line flags, in that order of increasing precedence.
// The yaml tags are the keys of the config file.
type Config struct {
	AMQPListen   string `yaml:"amqp_listen"`
	MQTTListen   string `yaml:"mqtt_listen"`
	MQTTWSListen string `yaml:"mqtt_ws_listen"` // MQTT over WebSocket, at /mqtt
	DebugListen  string `yaml:"debug_listen"`   // Go's pprof at /debug/pprof/; empty: off
	// HTTPListen serves the management API (and /metrics, the console);
	// empty: off. HTTPSListen serves it over TLS; empty (the default): off.
	HTTPListen  string `yaml:"http_listen"`
	HTTPSListen string `yaml:"https_listen"`
	DataDir     string `yaml:"data_dir"`
	// Repair opens a damaged data directory, dropping what cannot be read
	// and reporting it (flag only: a one-off decision, never a setting).
	Repair         bool   `yaml:"-"`
	LogLevel       string `yaml:"log_level"`
	LogFormat      string `yaml:"log_format"` // text (slog's key=value) or json
	Heartbeat      int    `yaml:"heartbeat"`  // seconds
	FrameMax       uint32 `yaml:"frame_max"`
	ChannelMax     uint16 `yaml:"channel_max"`
	MaxMessageSize int    `yaml:"max_message_size"` // bytes
	MemoryBudget   int64  `yaml:"memory_budget"`    // bytes of stored bodies kept in memory; 0 = never page out
	DiskFreeLimit  int64  `yaml:"disk_free_limit"`  // bytes; below it persistent publishes block; 0 = the store's default
	// MemoryLimit is the memory high watermark: a size ("512MiB", "2GB",
	// bytes), a fraction of the machine's or cgroup's memory ("0.4"), "0"
	// for none; empty: 0.4 (RabbitMQ's vm_memory_high_watermark).
	MemoryLimit string `yaml:"memory_limit"`
	// MaxQueuedMessages and MaxQueuedBytes cap each MQTT session's
	// queued messages beyond those in flight, Mosquitto's settings of the
	// same names (0: no limit); MaxInflightMessages caps its QoS 1 and 2
	// deliveries awaiting acknowledgement.
	MaxQueuedMessages   int          `yaml:"max_queued_messages"`
	MaxQueuedBytes      int64        `yaml:"max_queued_bytes"`
	MaxInflightMessages int          `yaml:"max_inflight_messages"`
	Users               []UserConfig `yaml:"users"`
	// VHosts are created at startup ("/" always exists).
	VHosts []VHostConfig `yaml:"vhosts"`
	// MaxConnections is the node's connection limit over all listeners; 0: none.
	MaxConnections int `yaml:"max_connections"`
	// MaxKeepalive is the longest MQTT Keep Alive in seconds a client may
	// ask for, Mosquitto's max_keepalive; 0: no limit.
	MaxKeepalive int `yaml:"max_keepalive"`
	// SysInterval is how often, in seconds, the MQTT $SYS topics are
	// published, Mosquitto's sys_interval; 0: never.
	SysInterval int `yaml:"sys_interval"`
	// LoginFailureDelay holds back the answer to a failed login.
	LoginFailureDelay time.Duration `yaml:"login_failure_delay"`
	// AuthBackends are asked in order, as RabbitMQ's auth_backends:
	// "internal" (the users above) and "http" (AuthHTTP) [internal].
	AuthBackends []string        `yaml:"auth_backends"`
	AuthHTTP     authhttp.Config `yaml:"auth_http"`
	// NodeName names this broker to the brokers it bridges to; empty
	// means the one generated at first start and kept in the data dir.
	NodeName string        `yaml:"node_name"`
	Bridges  []bridge.Link `yaml:"bridges"`

	// The TLS listeners, off unless given an address, and what they share.
	AMQPSListen   string    `yaml:"amqps_listen"`
	MQTTSListen   string    `yaml:"mqtts_listen"`
	MQTTWSSListen string    `yaml:"mqtt_wss_listen"` // at /mqtt
	TLS           TLSConfig `yaml:"tls"`
	// WSAllowedOrigins are the browser origins whose pages may open an
	// MQTT WebSocket (ws and wss); clients sending no Origin are let in.
	WSAllowedOrigins []string `yaml:"ws_allowed_origins"`
}

// The limits below follow RabbitMQ: frame_max may not go below the spec's
// frame-min-size, channel_max and heartbeat travel as shorts in
// connection.tune, and max_message_size is capped at RabbitMQ's 512 MiB.
const (
	minFrameMax       = 4096
	maxMaxMessageSize = 512 << 20
)

// defaultConfig returns the embedded defaults, the values `make run` uses.
func defaultConfig() Config {
	return Config{
		AMQPListen:     ":5672",
		MQTTListen:     ":1883",
		MQTTWSListen:   ":8083",
		HTTPListen:     ":15672",
		DataDir:        "./data",
		LogLevel:       "info",
		LogFormat:      "text",
		Heartbeat:      60,
		FrameMax:       131072,
		ChannelMax:     2047,
		MaxMessageSize: 16 << 20,
		MemoryBudget:   256 << 20,

		MaxQueuedMessages:   1000,
		MaxInflightMessages: 1000,
		LoginFailureDelay:   time.Second,
		SysInterval:         10,
	}
}

// HeartbeatDuration returns Heartbeat as amqp.Config wants it: 0 (off)
// becomes negative, since amqp.Config reads zero as "the default".
func (c *Config) HeartbeatDuration() time.Duration {
	if c.Heartbeat == 0 {
		return -1
	}
	return time.Duration(c.Heartbeat) * time.Second
}

// CoreMemoryBudget returns MemoryBudget as core.Options wants it: 0 (never
// page out) becomes negative, since core reads zero as "the default".
func (c *Config) CoreMemoryBudget() int64 {
	if c.MemoryBudget == 0 {
		return -1
	}
	return c.MemoryBudget
}

// mqttMaxQueued returns MaxQueuedMessages as mqtt.Config wants it: 0 (no
// limit) becomes negative, since mqtt.Config reads zero as "the default".
func (c *Config) mqttMaxQueued() int {
	if c.MaxQueuedMessages == 0 {
		return -1
	}
	return c.MaxQueuedMessages
}

// SlogLevel returns the slog level named by LogLevel. It assumes the config
// was validated.
func (c *Config) SlogLevel() slog.Level {
	lvl, _ := parseLogLevel(c.LogLevel)
	return lvl
}

// parseLogLevel accepts only the four names the --log-level help lists;
// slog.Level.UnmarshalText would also take forms such as "INFO+2", which
// would then be undocumented configuration.
func parseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
}

// validate reports every setting that is out of range, joined into one
// error (errors.Join: one line each), so that an operator fixes a config
// in one round rather than one error per start. Nothing here opens the
// store or binds a port: the caller runs it before either.
func (c *Config) validate() error {
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if c.AMQPListen == "" && c.AMQPSListen == "" && c.MQTTListen == "" && c.MQTTWSListen == "" &&
		c.MQTTSListen == "" && c.MQTTWSSListen == "" {
		check(errors.New("every client listener is off: set amqp_listen, mqtt_listen or another *_listen"))
	}
	for _, l := range c.listenAddrs() {
		check(checkListenAddr(l.key, l.addr))
	}
	if c.DataDir == "" {
		check(errors.New("data_dir is empty"))
	}
	if _, err := parseLogLevel(c.LogLevel); err != nil {
		check(err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		check(fmt.Errorf("log_format %q: want text or json", c.LogFormat))
	}
	if c.Heartbeat < 0 || c.Heartbeat > 65535 {
		check(fmt.Errorf("heartbeat %d: want 0 (off) .. 65535 seconds", c.Heartbeat))
	}
	if c.FrameMax < minFrameMax {
		check(fmt.Errorf("frame_max %d: want at least %d", c.FrameMax, minFrameMax))
	}
	if c.ChannelMax == 0 {
		// 0 means "no limit" on the wire; amqp.Config would read it as
		// "use the default", so refuse it rather than surprise anyone.
		check(errors.New("channel_max 0: want 1..65535"))
	}
	if c.MaxMessageSize <= 0 || c.MaxMessageSize > maxMaxMessageSize {
		check(fmt.Errorf("max_message_size %d: want 1..%d bytes", c.MaxMessageSize, maxMaxMessageSize))
	}
	if c.DiskFreeLimit < 0 {
		check(fmt.Errorf("disk_free_limit %d: want bytes >= 0 (0 = default)", c.DiskFreeLimit))
	}
	if c.MemoryBudget < 0 {
		check(fmt.Errorf("memory_budget %d: want bytes >= 0 (0 = never page out)", c.MemoryBudget))
	}
	if _, err := parseMemoryLimit(c.MemoryLimit, 1<<30); err != nil {
		check(err)
	}
	if c.MaxQueuedMessages < 0 {
		check(fmt.Errorf("max_queued_messages %d: want >= 0 (0 = no limit)", c.MaxQueuedMessages))
	}
	if c.MaxQueuedBytes < 0 {
		check(fmt.Errorf("max_queued_bytes %d: want bytes >= 0 (0 = no limit)", c.MaxQueuedBytes))
	}
	if c.MaxInflightMessages < 1 || c.MaxInflightMessages > 65535 {
		check(fmt.Errorf("max_inflight_messages %d: want 1..65535", c.MaxInflightMessages))
	}
	check(c.validateTLS())
	if c.MaxConnections < 0 {
		check(fmt.Errorf("max_connections %d: want >= 0 (0 = no limit)", c.MaxConnections))
	}
	if c.SysInterval < 0 {
		check(fmt.Errorf("sys_interval %d: want 0 (off) or more seconds", c.SysInterval))
	}
	if c.MaxKeepalive < 0 || c.MaxKeepalive > 65535 {
		check(fmt.Errorf("max_keepalive %d: want 0 (no limit) .. 65535 seconds", c.MaxKeepalive))
	}
	if strings.Contains(c.NodeName, ",") {
		// Bridged brokers list node names comma-separated in a header.
		check(fmt.Errorf("node_name %q: must not contain a comma", c.NodeName))
	}
	check(bridge.Validate(c.Bridges))
	if err := validateUsers(c.Users, c.VHosts); err != nil {
		check(err)
	} else if _, err := buildUsers(c); err != nil { // bad permission patterns
		check(err)
	}
	check(c.validateAuthBackends())
	return errors.Join(errs...)
}

// listenAddr is one listener's address and the config key that sets it.
type listenAddr struct{ key, addr string }

// listenAddrs lists every listener's address setting; an empty address is
// a listener that is off.
func (c *Config) listenAddrs() []listenAddr {
	return []listenAddr{
		{"amqp_listen", c.AMQPListen},
		{"amqps_listen", c.AMQPSListen},
		{"mqtt_listen", c.MQTTListen},
		{"mqtt_ws_listen", c.MQTTWSListen},
		{"mqtts_listen", c.MQTTSListen},
		{"mqtt_wss_listen", c.MQTTWSSListen},
		{"debug_listen", c.DebugListen},
		{"http_listen", c.HTTPListen},
		{"https_listen", c.HTTPSListen},
	}
}

// checkListenAddr refuses an address net.Listen("tcp", addr) could never
// bind, whatever the machine: no port, a port out of range or unknown by
// name. Whether the host resolves, or the port is free, is only known at
// bind time.
func checkListenAddr(key, addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want host:port or :port (%v)", key, addr, stripAddrErr(err))
	}
	if n, err := strconv.Atoi(port); err == nil {
		if n < 0 || n > 65535 {
			return fmt.Errorf("%s %q: port %d out of range 0..65535", key, addr, n)
		}
		return nil
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%s %q: unknown port %q", key, addr, port)
	}
	return nil
}

// stripAddrErr drops the address net.SplitHostPort repeats in its error,
// which checkListenAddr already quotes.
func stripAddrErr(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return ae.Err
	}
	return err.Error()
}

// topicFlag collects repeated --bridge-topic flags.
type topicFlag []string

func (f *topicFlag) String() string     { return strings.Join(*f, ",") }
func (f *topicFlag) Set(s string) error { *f = append(*f, s); return nil }

// loadConfig parses args (without the program name), reads the --config file
// if one is named, and lets every flag given explicitly in args override the
// file. It returns flag.ErrHelp, after writing the usage text to output, for
// -h/--help.
func loadConfig(args []string, output io.Writer) (Config, error) {
	def := defaultConfig()
	fs := flag.NewFlagSet("ferrymq", flag.ContinueOnError)
	// The flag package prints a parse error followed by the whole usage
	// text; instead the error is returned, for the caller to print once,
	// and the usage is printed only for -h/--help.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}

	// Flags parse into their own struct; only those Visit reports as set are
	// copied over the file's values, so an unset flag's default never
	// overrides a value from the file.
	var f Config
	var users userFlag
	var configPath string
	fs.StringVar(&configPath, "config", "", "YAML `file` with the same settings as the flags, plus a users: list")
	fs.StringVar(&f.AMQPListen, "amqp-listen", def.AMQPListen, "AMQP 0-9-1 listen `address` (\"\" = off)")
	fs.StringVar(&f.MQTTListen, "mqtt-listen", def.MQTTListen, "MQTT 3.1.1/5 listen `address` (\"\" = off)")
	fs.StringVar(&f.MQTTWSListen, "mqtt-ws-listen", def.MQTTWSListen, "MQTT over WebSocket listen `address` (path /mqtt; \"\" = off)")
	fs.StringVar(&f.AMQPSListen, "amqps-listen", "", "AMQP 0-9-1 over TLS listen `address`, conventionally :5671 (default off; needs --tls-cert, --tls-key)")
	fs.StringVar(&f.MQTTSListen, "mqtts-listen", "", "MQTT over TLS listen `address`, conventionally :8883 (default off)")
	fs.StringVar(&f.MQTTWSSListen, "mqtt-wss-listen", "", "MQTT over WebSocket over TLS listen `address` (path /mqtt), conventionally :8084 (default off)")
	fs.StringVar(&f.TLS.Cert, "tls-cert", "", "PEM certificate chain `file` of the TLS listeners (reloaded on SIGHUP)")
	fs.StringVar(&f.TLS.Key, "tls-key", "", "PEM private key `file` of the TLS listeners (reloaded on SIGHUP)")
	fs.StringVar(&f.TLS.CA, "tls-ca", "", "PEM `file` of the CAs client certificates must chain to")
	fs.StringVar(&f.TLS.Verify, "tls-verify", "none", "client certificates: `mode` none, peer (verified if given) or peer_required")
	fs.StringVar(&f.HTTPListen, "http-listen", def.HTTPListen, "management HTTP API (RabbitMQ's, with /metrics and the web console) listen `address`; \"\" turns it off")
	fs.StringVar(&f.HTTPSListen, "https-listen", "", "management HTTP API over TLS listen `address`, conventionally :15671 (default off; needs --tls-cert, --tls-key)")
	fs.StringVar(&f.DebugListen, "debug-listen", "", "serve Go's pprof profiles at http://`address`/debug/pprof/ (default off; keep it on loopback)")
	fs.StringVar(&f.DataDir, "data-dir", def.DataDir, "data `directory`, created if missing")
	fs.BoolVar(&f.Repair, "repair", false, "open a damaged data directory: drop the messages and retained messages that cannot be read, report them per queue at WARN (default: refuse to start, naming the damaged file)")
	fs.StringVar(&f.LogLevel, "log-level", def.LogLevel, "log `level`: debug, info, warn or error")
	fs.StringVar(&f.LogFormat, "log-format", def.LogFormat, "log `format`: text (key=value) or json (one object a line)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Var(&users, "user", "add a user as `name:password`, name:@file or name:env:VAR (repeatable; every permission on /; not loopback-only; guest/guest stays loopback-only unless replaced)")
	fs.IntVar(&f.MaxConnections, "max-connections", 0, "most client connections over all listeners (0 = no limit)")
	fs.IntVar(&f.SysInterval, "sys-interval", 10, "publish the MQTT $SYS topics every `seconds` (0 = never)")
	fs.IntVar(&f.MaxKeepalive, "max-keepalive", 0, "longest MQTT Keep Alive in `seconds` a client may ask for; MQTT 5 clients asking for more (or 0) get it as Server Keep Alive, 3.x clients are refused (0 = no limit)")
	fs.DurationVar(&f.LoginFailureDelay, "login-failure-delay", def.LoginFailureDelay, "how long a failed login waits for its refusal (0 = none)")
	fs.IntVar(&f.Heartbeat, "heartbeat", def.Heartbeat, "heartbeat interval in `seconds` proposed in connection.tune (0 = off)")
	frameMax := fs.Uint("frame-max", uint(def.FrameMax), "largest frame in `bytes`")
	channelMax := fs.Uint("channel-max", uint(def.ChannelMax), "most channels per connection")
	fs.IntVar(&f.MaxMessageSize, "max-message-size", def.MaxMessageSize, "largest message body in `bytes`")
	fs.StringVar(&f.NodeName, "node-name", "", "this broker's `name` towards bridged brokers (default: generated once, kept in the data dir)")
	var bl bridge.Link
	var bridgeTopics topicFlag
	fs.StringVar(&bl.URL, "bridge-url", "", "bridge to one upstream `URL` (amqp://, mqtt:// for MQTT 5, mqtt3:// for 3.1.1; s suffix for TLS); more links in the config file")
	fs.StringVar(&bl.Name, "bridge-name", "upstream", "`name` of the --bridge-url link (its queue is bridge.<name>)")
	fs.StringVar(&bl.Direction, "bridge-direction", "out", "`direction` of the --bridge-url link: out, in or both")
	fs.Var(&bridgeTopics, "bridge-topic", "MQTT topic `filter` the --bridge-url link forwards (repeatable; default #)")
	fs.Int64Var(&bl.MaxMessages, "bridge-max-messages", 0, "store-and-forward budget of the --bridge-url link in `messages` (default 1000000)")
	fs.Int64Var(&bl.MaxBytes, "bridge-max-bytes", 0, "store-and-forward budget of the --bridge-url link in `bytes` (default 1 GiB)")
	fs.StringVar(&bl.Overflow, "bridge-overflow", "block", "what a full --bridge-url buffer does: `block` (refuse publishes) or drop-oldest")
	fs.Int64Var(&f.DiskFreeLimit, "disk-free-limit", def.DiskFreeLimit, "free `bytes` the data directory's disk must keep; below it publishers are blocked (0 = 192 MiB, also the least: a full disk must not end the process)")
	fs.Int64Var(&f.MemoryBudget, "memory-budget", def.MemoryBudget, "`bytes` of persistent message bodies kept in memory before queues page them out to disk (0 = never)")
	fs.StringVar(&f.MemoryLimit, "memory-limit", "", "memory high `limit`: a size (512MiB, 2GB, bytes) or a fraction of memory (0.4); above it publishers are blocked until memory falls below 90% of it (default 0.4 of the machine's or cgroup's memory; 0 = none)")
	fs.IntVar(&f.MaxQueuedMessages, "max-queued-messages", def.MaxQueuedMessages, "most `messages` queued per MQTT session beyond those in flight: QoS 0 beyond it is dropped, QoS 1/2 waits on disk (persistent session) or is refused (0 = no limit)")
	fs.Int64Var(&f.MaxQueuedBytes, "max-queued-bytes", 0, "most `bytes` queued per MQTT session beyond those in flight, as --max-queued-messages (0 = no limit)")
	fs.IntVar(&f.MaxInflightMessages, "max-inflight-messages", def.MaxInflightMessages, "most QoS 1 and 2 `deliveries` per MQTT client awaiting acknowledgement")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(output, "Usage: ferrymq [flags]\n\nferrymq is an AMQP 0-9-1 and MQTT 3.1.1/5 broker. Flags given here override the --config file.\n\nFlags:\n")
			fs.SetOutput(output)
			fs.PrintDefaults()
			return Config{}, err
		}
		return Config{}, fmt.Errorf("%w (see ferrymq --help)", err)
	}
	if *showVersion {
		return Config{}, errVersion
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	// flag has no uint32/uint16 values; range-check here so a huge value is
	// refused instead of silently truncated.
	if *frameMax > 1<<32-1 {
		return Config{}, fmt.Errorf("--frame-max %d: too large", *frameMax)
	}
	if *channelMax > 1<<16-1 {
		return Config{}, fmt.Errorf("--channel-max %d: want 1..65535", *channelMax)
	}
	f.FrameMax, f.ChannelMax = uint32(*frameMax), uint16(*channelMax)

	// From here on every problem is collected, and all are reported
	// together once the flags are applied.
	var errs []error
	cfg := def
	if configPath != "" {
		if err := readConfigFile(configPath, &cfg); err != nil {
			var ye yamlErrors
			if !errors.As(err, &ye) {
				return Config{}, err // unreadable, or not YAML at all
			}
			// The rest of the file was decoded: check it too.
			errs = append(errs, ye...)
		}
		// A name twice in the file is a mistake; a --user with a name from
		// the file replaces it on purpose (below).
		errs = append(errs, duplicateUsers(cfg.Users, "in the file")...)
	}
	errs = append(errs, duplicateUsers(users, "in --user flags")...)
	bridgeURL := false
	var bridgeFlags []string
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "bridge-url" {
			bridgeURL = true
		} else if strings.HasPrefix(fl.Name, "bridge-") {
			bridgeFlags = append(bridgeFlags, "--"+fl.Name)
		}
	})
	if !bridgeURL && len(bridgeFlags) > 0 {
		errs = append(errs, fmt.Errorf("%s set without --bridge-url (links in the config file take these settings as keys of bridges:)", strings.Join(bridgeFlags, ", ")))
	}
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "amqp-listen":
			cfg.AMQPListen = f.AMQPListen
		case "mqtt-listen":
			cfg.MQTTListen = f.MQTTListen
		case "mqtt-ws-listen":
			cfg.MQTTWSListen = f.MQTTWSListen
		case "amqps-listen":
			cfg.AMQPSListen = f.AMQPSListen
		case "mqtts-listen":
			cfg.MQTTSListen = f.MQTTSListen
		case "mqtt-wss-listen":
			cfg.MQTTWSSListen = f.MQTTWSSListen
		case "tls-cert":
			cfg.TLS.Cert = f.TLS.Cert
		case "tls-key":
			cfg.TLS.Key = f.TLS.Key
		case "tls-ca":
			cfg.TLS.CA = f.TLS.CA
		case "tls-verify":
			cfg.TLS.Verify = f.TLS.Verify
		case "debug-listen":
			cfg.DebugListen = f.DebugListen
		case "http-listen":
			cfg.HTTPListen = f.HTTPListen
		case "https-listen":
			cfg.HTTPSListen = f.HTTPSListen
		case "data-dir":
			cfg.DataDir = f.DataDir
		case "repair":
			cfg.Repair = f.Repair
		case "log-level":
			cfg.LogLevel = f.LogLevel
		case "log-format":
			cfg.LogFormat = f.LogFormat
		case "heartbeat":
			cfg.Heartbeat = f.Heartbeat
		case "frame-max":
			cfg.FrameMax = f.FrameMax
		case "channel-max":
			cfg.ChannelMax = f.ChannelMax
		case "max-message-size":
			cfg.MaxMessageSize = f.MaxMessageSize
		case "memory-budget":
			cfg.MemoryBudget = f.MemoryBudget
		case "disk-free-limit":
			cfg.DiskFreeLimit = f.DiskFreeLimit
		case "memory-limit":
			cfg.MemoryLimit = f.MemoryLimit
		case "max-queued-messages":
			cfg.MaxQueuedMessages = f.MaxQueuedMessages
		case "max-queued-bytes":
			cfg.MaxQueuedBytes = f.MaxQueuedBytes
		case "max-inflight-messages":
			cfg.MaxInflightMessages = f.MaxInflightMessages
		case "node-name":
			cfg.NodeName = f.NodeName
		case "max-connections":
			cfg.MaxConnections = f.MaxConnections
		case "max-keepalive":
			cfg.MaxKeepalive = f.MaxKeepalive
		case "sys-interval":
			cfg.SysInterval = f.SysInterval
		case "login-failure-delay":
			cfg.LoginFailureDelay = f.LoginFailureDelay
		case "bridge-url":
			for _, t := range bridgeTopics {
				bl.Topics = append(bl.Topics, bridge.Topic{Pattern: t})
			}
			cfg.Bridges = append(cfg.Bridges, bl)
		case "user":
			// --user adds to the file's users; the caller applies them in
			// order, so a --user with a name from the file wins.
			cfg.Users = append(cfg.Users, users...)
		}
	})

	errs = append(errs, cfg.validate())
	if err := errors.Join(errs...); err != nil {
		return Config{}, &configError{file: configPath, err: err}
	}
	return cfg, nil
}

// errVersion is what loadConfig returns for --version.
var errVersion = errors.New("version requested")

// configError is every problem found in the flags and the config file.
type configError struct {
	file string // the --config file, if any
	err  error  // errors.Join of the problems
}

// Error puts the problems on one line when there is one, else one an
// indented line each, under a count: the operator sees them all at once.
func (e *configError) Error() string {
	where := "config"
	if e.file != "" {
		where = "config (file " + e.file + " and flags)"
	}
	var list []string
	if j, ok := e.err.(interface{ Unwrap() []error }); ok {
		for _, err := range j.Unwrap() {
			list = append(list, strings.Split(err.Error(), "\n")...)
		}
	} else {
		list = strings.Split(e.err.Error(), "\n")
	}
	if len(list) == 1 {
		return where + ": " + list[0]
	}
	return fmt.Sprintf("%s: %d errors:\n  %s", where, len(list), strings.Join(list, "\n  "))
}

func (e *configError) Unwrap() error { return e.err }

// duplicateUsers reports each name that appears more than once in users.
func duplicateUsers(users []UserConfig, where string) []error {
	var errs []error
	seen := map[string]int{}
	for _, u := range users {
		seen[u.Name]++
		if seen[u.Name] == 2 && u.Name != "" {
			errs = append(errs, fmt.Errorf("user %q defined more than once %s", u.Name, where))
		}
	}
	return errs
}

// readConfigFile decodes the YAML file at path over cfg, leaving the keys the
// file does not mention at their current values. Unknown keys are errors, so
// a misspelt setting is not silently ignored. Wrong types and unknown keys
// come back as yamlErrors, one per problem, each naming the key; the rest of
// the file is still decoded into cfg.
func readConfigFile(path string, cfg *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := map[int][]string{}
	keyPaths(&root, "", keys)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err = dec.Decode(cfg)
	if errors.Is(err, io.EOF) {
		// An empty file: every setting keeps its value.
		return nil
	}
	var typeErr *yaml.TypeError
	if errors.As(err, &typeErr) {
		out := make(yamlErrors, len(typeErr.Errors))
		for i, e := range typeErr.Errors {
			out[i] = fmt.Errorf("config file %s: %s", path, describeYAMLError(e, keys))
		}
		return out
	}
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// yamlErrors are the per-key problems of a config file that was otherwise
// decoded.
type yamlErrors []error

func (e yamlErrors) Error() string { return errors.Join(e...).Error() }

// keyPaths records, by line, the path of every key in the document below n
// ("users[1].max_connections"), for naming the key of a yaml.v3 error,
// which gives only a line.
func keyPaths(n *yaml.Node, prefix string, out map[int][]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			keyPaths(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if prefix != "" {
				p = prefix + "." + k.Value
			}
			out[k.Line] = append(out[k.Line], p)
			if v.Line != k.Line {
				out[v.Line] = append(out[v.Line], p)
			}
			keyPaths(v, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", prefix, i)
			if c.Kind == yaml.ScalarNode {
				out[c.Line] = append(out[c.Line], p)
			}
			keyPaths(c, p, out)
		}
	}
}

// yamlLine matches the start of yaml.v3's per-line errors; unknownField its
// KnownFields message, which names the Go type ("field x not found in type
// main.Config") rather than the file's terms.
var (
	yamlLine     = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownField = regexp.MustCompile(`^field (.+) not found in type \S+$`)
)

// describeYAMLError rewrites one of yaml.v3's per-line errors in the
// file's terms: the line and the key it is about, and an unknown field
// called an unknown key.
func describeYAMLError(e string, keys map[int][]string) string {
	m := yamlLine.FindStringSubmatch(e)
	if m == nil {
		return e
	}
	line, msg := m[1], m[2]
	if u := unknownField.FindStringSubmatch(msg); u != nil {
		return fmt.Sprintf("line %s: unknown key %q", line, u[1])
	}
	n, _ := strconv.Atoi(line)
	switch ks := keys[n]; len(ks) {
	case 0:
		return e
	case 1:
		return fmt.Sprintf("line %s: key %s: %s", line, ks[0], msg)
	default:
		// A flow mapping ({a: 1, b: x}): yaml.v3 gives no column.
		return fmt.Sprintf("line %s: one of keys %s: %s", line, strings.Join(ks, ", "), msg)
	}
}
