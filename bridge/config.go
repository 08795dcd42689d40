package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// Link configures one bridge to an upstream broker, as in the config
// file's bridges: list.
type Link struct {
	Name string `yaml:"name"`
	// URL names the upstream and its protocol: amqp:// or amqps:// (AMQP
	// 0-9-1), mqtt:// or mqtts:// (MQTT 5), mqtt3:// or mqtt3s:// (MQTT
	// 3.1.1). Credentials go in the URL's user info.
	URL string `yaml:"url"`
	// Direction is the default of the topics' directions: out (local to
	// upstream), in (upstream to local) or both [out].
	Direction string `yaml:"direction"`
	// Topics are Mosquitto-style rules: which topics cross, which way,
	// at which QoS, with which prefixes. [one rule: "#"]
	Topics []Topic `yaml:"topics"`
	// Exchange is the AMQP upstream's exchange: outbound messages are
	// published to it, inbound ones bound from it [amq.topic].
	Exchange string `yaml:"exchange"`
	// Queue, for an AMQP upstream, is consumed for the inbound direction
	// instead of a queue the bridge declares and binds.
	Queue string `yaml:"queue"`
	// ClientID is the MQTT client id at the upstream [ferrymq-<node>-<name>].
	ClientID string `yaml:"client_id"`
	// MaxMessages and MaxBytes bound the local store-and-forward buffer
	// [1,000,000 messages; 1 GiB].
	MaxMessages int64 `yaml:"max_messages"`
	MaxBytes    int64 `yaml:"max_bytes"`
	// Overflow is what a full buffer does: "block" refuses new messages
	// (AMQP publishers get a nack, MQTT 5 publishers PUBACK 0x97) or
	// "drop-oldest" drops the oldest, counted and logged [block].
	Overflow string `yaml:"overflow"`
	// Window is how many messages may await the upstream's confirm [2048]
	// (and at most 64 MiB of their bodies).
	Window int `yaml:"window"`
	TLS    TLS `yaml:"tls"`
}

// Topic is one forwarding rule, as Mosquitto's
// "topic pattern [dir [qos [local-prefix [remote-prefix]]]]": the local
// topic is LocalPrefix+Pattern, the upstream one RemotePrefix+Pattern.
type Topic struct {
	Pattern   string `yaml:"pattern"`
	Direction string `yaml:"direction"`
	// QoS is the inbound subscription's QoS and the outbound publishes'
	// highest, which is 1 whatever is set here (see maxOutQoS) [1].
	QoS          *byte  `yaml:"qos"`
	LocalPrefix  string `yaml:"local_prefix"`
	RemotePrefix string `yaml:"remote_prefix"`
}

// TLS configures the connection to an amqps:// or mqtts:// upstream.
type TLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Defaults.
const (
	DefaultMaxMessages = 1_000_000
	DefaultMaxBytes    = 1 << 30
	DefaultWindow      = 2048
)

type protocol int

const (
	protoAMQP protocol = iota
	protoMQTT5
	protoMQTT3
)

// link is a validated Link.
type link struct {
	Link
	proto  protocol
	url    *url.URL
	secure bool
	out    []Topic // rules that forward local -> upstream
	in     []Topic // rules that forward upstream -> local
}

func (t Topic) qos() byte {
	if t.QoS == nil {
		return 1
	}
	return *t.QoS
}

func validDirection(d string) bool { return d == "out" || d == "in" || d == "both" }

// validate checks a link and fills in its defaults.
func (l Link) validate(node string) (*link, error) {
	if l.Name == "" {
		return nil, errors.New("bridge: a link has no name")
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("bridge %s: %s", l.Name, fmt.Sprintf(format, args...))
	}
	u, err := url.Parse(l.URL)
	if err != nil || u.Host == "" {
		return nil, fail("url %q: want amqp://, amqps://, mqtt://, mqtts://, mqtt3:// or mqtt3s://host:port", l.URL)
	}
	v := &link{Link: l, url: u}
	switch u.Scheme {
	case "amqp", "amqps":
		v.proto = protoAMQP
	case "mqtt", "mqtts":
		v.proto = protoMQTT5
	case "mqtt3", "mqtt3s":
		v.proto = protoMQTT3
	default:
		return nil, fail("url scheme %q: want amqp, amqps, mqtt, mqtts, mqtt3 or mqtt3s", u.Scheme)
	}
	v.secure = strings.HasSuffix(u.Scheme, "s")
	if v.Direction == "" {
		v.Direction = "out"
	}
	if !validDirection(v.Direction) {
		return nil, fail("direction %q: want out, in or both", v.Direction)
	}
	if len(v.Topics) == 0 {
		v.Topics = []Topic{{Pattern: "#"}}
	}
	for i, t := range v.Topics {
		if t.Pattern == "" {
			return nil, fail("topics[%d]: pattern is empty", i)
		}
		if t.Direction == "" {
			t.Direction = v.Direction
		}
		if !validDirection(t.Direction) {
			return nil, fail("topics[%d] direction %q: want out, in or both", i, t.Direction)
		}
		if t.qos() > 2 {
			return nil, fail("topics[%d] qos %d: want 0, 1 or 2", i, t.qos())
		}
		if t.Direction != "in" {
			v.out = append(v.out, t)
		}
		if t.Direction != "out" {
			v.in = append(v.in, t)
		}
	}
	if v.Exchange == "" {
		v.Exchange = "amq.topic"
	}
	if v.ClientID == "" {
		v.ClientID = "ferrymq-" + node + "-" + v.Name
	}
	if v.MaxMessages == 0 {
		v.MaxMessages = DefaultMaxMessages
	}
	if v.MaxBytes == 0 {
		v.MaxBytes = DefaultMaxBytes
	}
	switch v.Overflow {
	case "":
		v.Overflow = "block"
	case "block", "drop-oldest":
	default:
		return nil, fail("overflow %q: want block or drop-oldest", v.Overflow)
	}
	if v.Window <= 0 {
		v.Window = DefaultWindow
	}
	return v, nil
}

// Validate checks links as Start does, and loads the TLS files of the
// secure ones, so that a config mistake is found before the broker opens
// its store rather than by a link that never connects. It returns every
// problem, joined (errors.Join), not only the first.
func Validate(links []Link) error {
	var errs []error
	names := map[string]bool{}
	for _, l := range links {
		v, err := l.validate("")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if names[v.Name] {
			errs = append(errs, fmt.Errorf("bridge %s: defined twice", v.Name))
		}
		names[v.Name] = true
		if v.secure {
			if _, err := v.tlsConfig(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// tlsConfig builds the client TLS configuration of a secure upstream.
func (l *link) tlsConfig() (*tls.Config, error) {
	c := &tls.Config{ServerName: l.TLS.ServerName, InsecureSkipVerify: l.TLS.InsecureSkipVerify}
	if c.ServerName == "" {
		c.ServerName = l.url.Hostname()
	}
	if l.TLS.CAFile != "" {
		pem, err := os.ReadFile(l.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("bridge %s: ca_file: %w", l.Name, err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("bridge %s: ca_file %s holds no PEM certificate", l.Name, l.TLS.CAFile)
		}
	}
	if l.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(l.TLS.CertFile, l.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("bridge %s: client certificate: %w", l.Name, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// backoff returns the wait before reconnect attempt n (from 0):
// exponential from 100 ms to 30 s, with full jitter so that many edge
// nodes do not reconnect in step.
func backoff(n int, rnd func(int64) int64) time.Duration {
	ceiling := 100 * time.Millisecond << min(n, 9)
	ceiling = min(ceiling, 30*time.Second)
	return time.Duration(rnd(int64(ceiling))) + 10*time.Millisecond
}
