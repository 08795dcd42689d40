package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahomqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// sessionExpiry keeps the bridge's session at an MQTT 5 upstream for a
// week of outage: the upstream queues inbound messages meanwhile.
const sessionExpiry = 7 * 24 * 3600

// netDial opens the TCP (or TLS) connection to an MQTT upstream.
func netDial(ctx context.Context, l *link) (net.Conn, error) {
	host := l.url.Host
	if l.url.Port() == "" {
		host = net.JoinHostPort(l.url.Hostname(), map[bool]string{true: "8883", false: "1883"}[l.secure])
	}
	if !l.secure {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", host)
	}
	tc, err := l.tlsConfig()
	if err != nil {
		return nil, err
	}
	d := tls.Dialer{Config: tc}
	return d.DialContext(ctx, "tcp", host)
}

// mqtt5Upstream is an MQTT 5 upstream through paho.golang. paho's
// Publish waits for the PUBACK, so publishes go one at a time from one
// goroutine: order is kept at the cost of a round trip per message.
type mqtt5Upstream struct {
	c     *paho.Client
	node  string
	gone  chan struct{}
	once  sync.Once
	cause error // why the connection was lost; set once, before gone closes
	// deliver takes inbound messages; a resumed session may send some
	// before SUBSCRIBE, so it is known from the start. nil: no inbound.
	deliver func(string, *core.Message, func())
	queue   chan publishReq
	stop    chan struct{}
}

type publishReq struct {
	topic string
	m     *core.Message
	qos   byte
	done  func(error)
}

func dialMQTT5(ctx context.Context, l *link, node string, deliver func(string, *core.Message, func()), log *slog.Logger) (upstream, error) {
	conn, err := netDial(ctx, l)
	if err != nil {
		return nil, err
	}
	u := &mqtt5Upstream{node: node, deliver: deliver, gone: make(chan struct{}), queue: make(chan publishReq, l.Window), stop: make(chan struct{})}
	u.c = paho.NewClient(paho.ClientConfig{
		Conn:                       conn,
		EnableManualAcknowledgment: true,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			pb := pr.Packet
			if u.deliver == nil {
				u.c.Ack(pb) // nothing inbound is configured any more
				return true, nil
			}
			u.deliver(pb.Topic, fromMQTT5(pb), func() { u.c.Ack(pb) })
			return true, nil
		}},
		OnClientError: func(err error) { u.lose(fmt.Errorf("client error: %w", err)) },
		OnServerDisconnect: func(d *paho.Disconnect) {
			u.lose(fmt.Errorf("upstream sent DISCONNECT %#x %s", d.ReasonCode, reasonString(d.Properties)))
		},
	})
	u.c.SetErrorLogger(pahoLog{log.With("component", "paho")})
	expiry := uint32(sessionExpiry)
	cp := &paho.Connect{
		ClientID: l.ClientID, KeepAlive: 30, CleanStart: false,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry},
	}
	if user := l.url.User; user != nil {
		cp.Username, cp.UsernameFlag = user.Username(), true
		if p, ok := user.Password(); ok {
			cp.Password, cp.PasswordFlag = []byte(p), true
		}
	}
	ca, err := u.c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if ca.ReasonCode != 0 {
		conn.Close()
		return nil, fmt.Errorf("bridge: upstream refused the connection: reason %#x", ca.ReasonCode)
	}
	go u.publishLoop()
	return u, nil
}

func (u *mqtt5Upstream) lose(err error) {
	u.once.Do(func() {
		u.cause = err
		close(u.gone)
	})
}

func (u *mqtt5Upstream) lostCause() error {
	<-u.gone
	return u.cause
}

func reasonString(p *paho.DisconnectProperties) string {
	if p == nil {
		return ""
	}
	return p.ReasonString
}

func (u *mqtt5Upstream) publishLoop() {
	for {
		select {
		case <-u.stop:
			return
		case r := <-u.queue:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := u.c.Publish(ctx, toMQTT5(r.topic, r.m, r.qos, u.node))
			cancel()
			if err != nil {
				u.lose(fmt.Errorf("publish: %w", err))
				r.done(errLost)
				continue
			}
			r.done(nil)
		}
	}
}

func (u *mqtt5Upstream) publish(topic string, m *core.Message, qos byte, done func(error)) {
	select {
	case <-u.gone:
		done(errLost)
	case u.queue <- publishReq{topic, m, qos, done}:
	}
}

func (u *mqtt5Upstream) subscribe(rules []Topic) error {
	s := &paho.Subscribe{}
	for _, t := range rules {
		// No-local: what this link publishes upstream must not come back.
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: t.RemotePrefix + t.Pattern, QoS: t.qos(), NoLocal: true})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := u.c.Subscribe(ctx, s)
	if err != nil {
		return err
	}
	for i, rc := range sa.Reasons {
		if rc >= 0x80 {
			return fmt.Errorf("bridge: upstream refused subscription %q: reason %#x", s.Subscriptions[i].Topic, rc)
		}
	}
	return nil
}

func (u *mqtt5Upstream) lost() <-chan struct{} { return u.gone }

func (u *mqtt5Upstream) close() {
	close(u.stop)
	u.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	u.lose(errClosed)
	// Whatever is still queued was never sent.
	for {
		select {
		case r := <-u.queue:
			r.done(errLost)
		default:
			return
		}
	}
}

// pahoLog passes paho.golang's error log to slog.
type pahoLog struct{ l *slog.Logger }

func (p pahoLog) Println(v ...any)               { p.l.Warn(strings.TrimSpace(fmt.Sprintln(v...))) }
func (p pahoLog) Printf(format string, v ...any) { p.l.Warn(fmt.Sprintf(format, v...)) }

// toMQTT5 and fromMQTT5 convert between core messages and MQTT 5
// publishes, with the properties the MQTT listener maps (content type,
// correlation, user properties) and the via marker as a user property.
func toMQTT5(topic string, m *core.Message, qos byte, node string) *paho.Publish {
	p := &paho.Publish{Topic: topic, QoS: qos, Payload: m.Body, Properties: &paho.PublishProperties{}}
	pp := p.Properties
	pp.ContentType = m.Properties.ContentType
	if m.Properties.CorrelationID != "" {
		pp.CorrelationData = []byte(m.Properties.CorrelationID)
	}
	for k, v := range withVia(m.Properties.Headers, node) {
		if s, ok := v.(string); ok {
			pp.User.Add(k, s)
		}
	}
	return p
}

func fromMQTT5(pb *paho.Publish) *core.Message {
	m := &core.Message{Body: pb.Payload}
	m.Properties.DeliveryMode = 1
	h := core.Table{}
	if pb.QoS > 0 {
		m.Properties.DeliveryMode = 2
		h[topic.QoSHeader] = int8(pb.QoS)
	}
	if pp := pb.Properties; pp != nil {
		m.Properties.ContentType = pp.ContentType
		m.Properties.CorrelationID = string(pp.CorrelationData)
		for _, up := range pp.User {
			h[up.Key] = up.Value
		}
		if pp.MessageExpiry != nil {
			m.Properties.Expiration = strconv.FormatUint(uint64(*pp.MessageExpiry)*1000, 10)
		}
	}
	m.Properties.Headers = h
	return m
}

// mqtt3Upstream is an MQTT 3.1.1 upstream through paho.mqtt.golang, whose
// publish tokens let publishes pipeline; they are confirmed in order. 3.1.1
// has no properties, so the via marker cannot travel: a link to a 3.1.1
// upstream must not bridge the same topics both ways.
type mqtt3Upstream struct {
	c       pahomqtt.Client
	l       *link
	deliver func(string, *core.Message, func())
	gone    chan struct{}
	once    sync.Once
	cause   error
	tokens  chan tokenReq
	stop    chan struct{}
}

type tokenReq struct {
	t    pahomqtt.Token
	done func(error)
}

func dialMQTT3(ctx context.Context, l *link, deliver func(string, *core.Message, func())) (upstream, error) {
	u := &mqtt3Upstream{l: l, deliver: deliver, gone: make(chan struct{}), tokens: make(chan tokenReq, l.Window), stop: make(chan struct{})}
	scheme := map[bool]string{true: "ssl", false: "tcp"}[l.secure]
	host := l.url.Host
	if l.url.Port() == "" {
		host = net.JoinHostPort(l.url.Hostname(), map[bool]string{true: "8883", false: "1883"}[l.secure])
	}
	o := pahomqtt.NewClientOptions().AddBroker(scheme + "://" + host).SetClientID(l.ClientID).
		SetCleanSession(false).SetAutoReconnect(false).SetOrderMatters(true).SetAutoAckDisabled(true).
		SetKeepAlive(30 * time.Second).SetConnectTimeout(10 * time.Second).
		SetConnectionLostHandler(func(_ pahomqtt.Client, err error) { u.lose(err) }).
		// A resumed session's messages may come before SUBSCRIBE.
		SetDefaultPublishHandler(u.receive)
	if user := l.url.User; user != nil {
		o.SetUsername(user.Username())
		if p, ok := user.Password(); ok {
			o.SetPassword(p)
		}
	}
	if l.secure {
		tc, err := l.tlsConfig()
		if err != nil {
			return nil, err
		}
		o.SetTLSConfig(tc)
	}
	u.c = pahomqtt.NewClient(o)
	tok := u.c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		u.c.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	go u.confirmLoop()
	return u, nil
}

func (u *mqtt3Upstream) lose(err error) {
	u.once.Do(func() {
		u.cause = err
		close(u.gone)
	})
}

func (u *mqtt3Upstream) lostCause() error {
	<-u.gone
	return u.cause
}

// confirmLoop waits for each publish token in order.
func (u *mqtt3Upstream) confirmLoop() {
	for {
		select {
		case <-u.stop:
			return
		case r := <-u.tokens:
			select {
			case <-r.t.Done():
			case <-u.gone:
			}
			if err := r.t.Error(); err != nil || !isDone(r.t) {
				u.lose(fmt.Errorf("publish: %v", err))
				r.done(errLost)
				continue
			}
			r.done(nil)
		}
	}
}

func isDone(t pahomqtt.Token) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}

func (u *mqtt3Upstream) publish(topic string, m *core.Message, qos byte, done func(error)) {
	select {
	case <-u.gone:
		done(errLost)
		return
	default:
	}
	t := u.c.Publish(topic, qos, false, m.Body)
	select {
	case u.tokens <- tokenReq{t, done}:
	case <-u.gone:
		done(errLost)
	}
}

func (u *mqtt3Upstream) receive(_ pahomqtt.Client, msg pahomqtt.Message) {
	if u.deliver == nil {
		msg.Ack()
		return
	}
	m := &core.Message{Body: msg.Payload()}
	m.Properties.DeliveryMode = 1
	if q := msg.Qos(); q > 0 {
		m.Properties.DeliveryMode = 2
		m.Properties.Headers = core.Table{topic.QoSHeader: int8(q)}
	}
	u.deliver(msg.Topic(), m, msg.Ack)
}

func (u *mqtt3Upstream) subscribe(rules []Topic) error {
	filters := map[string]byte{}
	for _, t := range rules {
		filters[t.RemotePrefix+t.Pattern] = t.qos()
	}
	tok := u.c.SubscribeMultiple(filters, u.receive)
	if !tok.WaitTimeout(10 * time.Second) {
		return errors.New("bridge: upstream did not answer SUBSCRIBE")
	}
	return tok.Error()
}

func (u *mqtt3Upstream) lost() <-chan struct{} { return u.gone }

func (u *mqtt3Upstream) close() {
	close(u.stop)
	u.c.Disconnect(250)
	u.lose(errClosed)
	for {
		select {
		case r := <-u.tokens:
			r.done(errLost)
		default:
			return
		}
	}
}
