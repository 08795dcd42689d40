package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahomqtt "github.com/eclipse/paho.mqtt.golang"
)

// mqttClient is one MQTT connection, over paho.mqtt.golang (3.1.1) or
// paho.golang (5).
type mqttClient interface {
	// subscribe subscribes to filter; handle gets each message's payload,
	// on one goroutine at a time, and must not keep it.
	subscribe(filter string, qos byte, handle func(payload []byte)) error
	// publishLoop publishes p's messages to topic (r.publishLoop), QoS 1
	// with at most window unacknowledged; it returns once the last
	// PUBACK has arrived.
	publishLoop(r *run, p *publisher, limit int64, topic string, qos byte, window int) error
	// publishOne publishes body at QoS 0; body may be reused once the
	// message has been received back.
	publishOne(topic string, body []byte) error
	close()
}

// mqttTarget is the parsed --mqtt-url.
type mqttTarget struct {
	addr     string // host:port
	user     string
	password string
	hasUser  bool
	tls      *tls.Config // ssl:// and mqtts:// URLs; set by dialMQTT from --tls-*
	secure   bool        // ssl:// or mqtts://
}

func parseMQTTURL(s string) (mqttTarget, error) {
	u, err := url.Parse(s)
	if err != nil {
		return mqttTarget{}, fmt.Errorf("--mqtt-url: %w", err)
	}
	t := mqttTarget{addr: u.Host}
	port := "1883"
	switch u.Scheme {
	case "tcp", "mqtt":
	case "ssl", "mqtts":
		t.secure, port = true, "8883"
	default:
		return mqttTarget{}, fmt.Errorf("MQTT URL %q: the scheme must be tcp://, mqtt://, ssl:// or mqtts://", s)
	}
	if u.Port() == "" {
		t.addr = net.JoinHostPort(u.Hostname(), port)
	}
	if u.User != nil {
		t.hasUser = true
		t.user = u.User.Username()
		t.password, _ = u.User.Password()
	}
	return t, nil
}

// dialMQTT connects one client. onLost is called if the connection drops
// before close.
func dialMQTT(cfg *config, clientID string, batch bool, onLost func(error)) (mqttClient, error) {
	t, err := parseMQTTURL(cfg.mqttURL)
	if err != nil {
		return nil, err
	}
	batch = batch && !cfg.plainConns
	if t.secure {
		t.tls = cfg.tlsConfig
	}
	if cfg.mqttVersion == 5 {
		return dialMQTT5(t, clientID, batch, onLost)
	}
	return dialMQTT3(t, clientID, batch, onLost)
}

// --- MQTT 3.1.1: paho.mqtt.golang ---

type mqtt3 struct {
	c pahomqtt.Client
}

func dialMQTT3(t mqttTarget, clientID string, batch bool, onLost func(error)) (mqttClient, error) {
	opts := pahomqtt.NewClientOptions().
		AddBroker("tcp://" + t.addr).
		SetClientID(clientID).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true). // handlers run on the client's router goroutine, one at a time
		SetConnectTimeout(10 * time.Second).
		SetWriteTimeout(30 * time.Second).
		SetConnectionLostHandler(func(_ pahomqtt.Client, err error) { onLost(err) }).
		SetCustomOpenConnectionFn(func(*url.URL, pahomqtt.ClientOptions) (net.Conn, error) {
			return dialTCP(t.addr, t.tls, batch)
		})
	if t.hasUser {
		opts.SetUsername(t.user).SetPassword(t.password)
	}
	c := pahomqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("mqtt connect %s: timeout", t.addr)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("mqtt connect %s: %w", t.addr, err)
	}
	return &mqtt3{c: c}, nil
}

func (m *mqtt3) subscribe(filter string, qos byte, handle func([]byte)) error {
	tok := m.c.Subscribe(filter, qos, func(_ pahomqtt.Client, msg pahomqtt.Message) { handle(msg.Payload()) })
	if !tok.WaitTimeout(15 * time.Second) {
		return fmt.Errorf("mqtt subscribe %s: timeout", filter)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("mqtt subscribe %s: %w", filter, err)
	}
	if st, ok := tok.(*pahomqtt.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code >= 0x80 {
				return fmt.Errorf("mqtt subscribe %s: refused (0x%02x)", f, code)
			}
		}
	}
	return nil
}

// publishLoop: paho.mqtt.golang keeps the payload until it is written (QoS
// 0) or acknowledged (QoS 1), so every message gets its own body. PUBACKs
// are awaited in publish order by one goroutine; the channel of pending
// tokens is the in-flight window.
func (m *mqtt3) publishLoop(r *run, p *publisher, limit int64, topic string, qos byte, window int) error {
	if qos == 0 {
		return r.publishLoop(p, limit, false, func(body []byte, _ uint32) error {
			tok := m.c.Publish(topic, 0, false, body)
			select {
			case <-tok.Done():
				return tok.Error()
			default:
				return nil
			}
		})
	}
	type pend struct {
		tok pahomqtt.Token
		seq uint32
	}
	pending := make(chan pend, window)
	waitErr := make(chan error, 1)
	go func() {
		var first error
		for pd := range pending {
			if first != nil {
				continue
			}
			switch {
			case !pd.tok.WaitTimeout(30 * time.Second):
				first = fmt.Errorf("no PUBACK for message %d within 30 s", pd.seq)
			case pd.tok.Error() != nil:
				first = fmt.Errorf("publish %d: %w", pd.seq, pd.tok.Error())
			default:
				p.ack(pd.seq)
				continue
			}
			r.fail(fmt.Errorf("publisher %d: %w", p.id, first))
		}
		waitErr <- first
	}()
	err := r.publishLoop(p, limit, false, func(body []byte, seq uint32) error {
		pending <- pend{m.c.Publish(topic, 1, false, body), seq}
		return nil
	})
	close(pending)
	return errors.Join(err, <-waitErr)
}

func (m *mqtt3) publishOne(topic string, body []byte) error {
	tok := m.c.Publish(topic, 0, false, body)
	select {
	case <-tok.Done():
		return tok.Error()
	default:
		return nil
	}
}

func (m *mqtt3) close() { m.c.Disconnect(250) }

// --- MQTT 5: paho.golang ---

type mqtt5 struct {
	c *paho.Client

	mu     sync.Mutex
	handle func([]byte) // guarded by mu; one subscription per client
}

func dialMQTT5(t mqttTarget, clientID string, batch bool, onLost func(error)) (mqttClient, error) {
	conn, err := dialTCP(t.addr, t.tls, batch)
	if err != nil {
		return nil, fmt.Errorf("mqtt connect %s: %w", t.addr, err)
	}
	m := &mqtt5{}
	m.c = paho.NewClient(paho.ClientConfig{
		ClientID: clientID,
		Conn:     conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			m.mu.Lock()
			h := m.handle
			m.mu.Unlock()
			if h != nil {
				h(pr.Packet.Payload)
			}
			return true, nil
		}},
		OnClientError:      onLost,
		OnServerDisconnect: func(d *paho.Disconnect) { onLost(fmt.Errorf("server sent DISCONNECT 0x%02x", d.ReasonCode)) },
	})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if t.hasUser {
		cp.Username, cp.UsernameFlag = t.user, true
		cp.Password, cp.PasswordFlag = []byte(t.password), t.password != ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ca, err := m.c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		if ca != nil {
			return nil, fmt.Errorf("mqtt connect %s: 0x%02x %w", t.addr, ca.ReasonCode, err)
		}
		return nil, fmt.Errorf("mqtt connect %s: %w", t.addr, err)
	}
	return m, nil
}

func (m *mqtt5) subscribe(filter string, qos byte, handle func([]byte)) error {
	m.mu.Lock()
	m.handle = handle
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sa, err := m.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if err != nil {
		return fmt.Errorf("mqtt subscribe %s: %w", filter, err)
	}
	for _, code := range sa.Reasons {
		if code >= 0x80 {
			return fmt.Errorf("mqtt subscribe %s: refused (0x%02x)", filter, code)
		}
	}
	return nil
}

// publishLoop: paho.golang writes a QoS 0 publish before Publish returns, so
// one body and one Publish are reused. Its QoS 1 Publish blocks until the
// PUBACK, so window goroutines publish side by side; each message keeps its
// own body, which the session holds until acknowledged.
func (m *mqtt5) publishLoop(r *run, p *publisher, limit int64, topic string, qos byte, window int) error {
	ctx := context.Background()
	if qos == 0 {
		pub := &paho.Publish{Topic: topic}
		return r.publishLoop(p, limit, true, func(body []byte, _ uint32) error {
			pub.Payload = body
			_, err := m.c.Publish(ctx, pub)
			return err
		})
	}
	type job struct {
		body []byte
		seq  uint32
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range window {
		wg.Go(func() {
			for j := range jobs {
				if _, err := m.c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: j.body}); err != nil {
					r.fail(fmt.Errorf("publisher %d: publish %d: %w", p.id, j.seq, err))
					continue
				}
				p.ack(j.seq)
			}
		})
	}
	err := r.publishLoop(p, limit, false, func(body []byte, seq uint32) error {
		jobs <- job{body, seq}
		return nil
	})
	close(jobs)
	wg.Wait()
	return err
}

func (m *mqtt5) publishOne(topic string, body []byte) error {
	_, err := m.c.Publish(context.Background(), &paho.Publish{Topic: topic, Payload: body})
	return err
}

func (m *mqtt5) close() {
	_ = m.c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case <-m.c.Done():
	case <-ctx.Done():
	}
}

// mqttClients dials n clients with ids prefix-0..n-1; an error closes the
// ones already made.
func mqttClients(r *run, prefix string, n int, batch bool) ([]mqttClient, error) {
	var cs []mqttClient
	for i := range n {
		c, err := dialMQTT(r.cfg, fmt.Sprintf("%s-%d", prefix, i), batch, func(err error) {
			if r.closing.Load() {
				return
			}
			r.fail(fmt.Errorf("mqtt client %s-%d: connection lost: %w", prefix, i, err))
		})
		if err != nil {
			closeMQTT(cs)
			return nil, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func closeMQTT(cs []mqttClient) {
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(c.close)
	}
	wg.Wait()
}
