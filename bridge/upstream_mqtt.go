package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahomqtt "github.com/eclipse/paho.mqtt.golang"
	packets3 "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/ferrymq/ferrymq/bridge/batchconn"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// sessionExpiry keeps the bridge's session at an MQTT 5 upstream for a
// week of outage: the upstream queues inbound messages meanwhile.
const sessionExpiry = 7 * 24 * 3600

// netDial opens the TCP (or TLS) connection to an MQTT upstream, with
// its writes coalesced and its reads buffered (batchconn): the MQTT
// clients write each packet straight to the socket and read headers byte
// by byte, a syscall per message when a backlog drains.
func netDial(ctx context.Context, l *link) (net.Conn, error) {
	host := l.url.Host
	if l.url.Port() == "" {
		host = net.JoinHostPort(l.url.Hostname(), map[bool]string{true: "8883", false: "1883"}[l.secure])
	}
	var c net.Conn
	var err error
	if !l.secure {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", host)
	} else {
		var tc *tls.Config
		if tc, err = l.tlsConfig(); err != nil {
			return nil, err
		}
		d := tls.Dialer{Config: tc}
		c, err = d.DialContext(ctx, "tcp", host)
	}
	if err != nil {
		return nil, err
	}
	return batchconn.New(c), nil
}

// mqtt5Upstream is an MQTT 5 upstream through paho.golang. Publishes are
// pipelined: forward writes them in order (linkSession), up to the
// upstream's Receive Maximum in flight, and confirmLoop reports each
// acknowledgement.
type mqtt5Upstream struct {
	c      *paho.Client
	ls     *linkSession
	node   string
	maxQoS byte
	gone   chan struct{}
	once   sync.Once
	cause  error // why the connection was lost; set once, before gone closes
	// deliver takes inbound messages; a resumed session may send some
	// before SUBSCRIBE, so it is known from the start. nil: no inbound.
	deliver func(string, *core.Message, func())
	stop    chan struct{}
	log     *slog.Logger
	refused uint64 // messages refused for good on this connection; confirmLoop's
}

func dialMQTT5(ctx context.Context, l *link, node string, deliver func(string, *core.Message, func()), log *slog.Logger) (upstream, error) {
	conn, err := netDial(ctx, l)
	if err != nil {
		return nil, err
	}
	sniff := &sniffConn{Conn: conn}
	conn = sniff
	u := &mqtt5Upstream{node: node, deliver: deliver, gone: make(chan struct{}), stop: make(chan struct{}),
		ls: newLinkSession(conn), log: log}
	u.c = paho.NewClient(paho.ClientConfig{
		Conn:    conn,
		Session: u.ls,
		// SUBSCRIBE waits this long for its SUBACK.
		PacketTimeout:              30 * time.Second,
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
	if err == nil && ca.ReasonCode != 0 {
		err = errors.New("refused")
	}
	if err != nil {
		conn.Close()
		u.ls.State.Close()
		return nil, connectError(err, ca, sniff.head())
	}
	var receiveMax uint16
	var maxPacket uint32
	u.maxQoS = 2
	if p := ca.Properties; p != nil {
		if p.ReceiveMaximum != nil {
			receiveMax = *p.ReceiveMaximum
		}
		if p.MaximumPacketSize != nil {
			maxPacket = *p.MaximumPacketSize
		}
		if p.MaximumQoS != nil {
			u.maxQoS = *p.MaximumQoS
		}
	}
	u.ls.start(receiveMax, maxPacket)
	go u.confirmLoop()
	return u, nil
}

// sniffConn keeps the first bytes read from an MQTT 5 upstream: an MQTT
// 3.1.1 broker answers an MQTT 5 CONNECT with a 3.1.1 CONNACK (return code
// 0x01, unacceptable protocol version), which paho.golang cannot parse and
// reports only as a read error.
type sniffConn struct {
	net.Conn
	full atomic.Bool // buf is complete: reads go straight through
	mu   sync.Mutex
	buf  []byte // up to 4 bytes: a 3.1.1 CONNACK's length
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.full.Load() {
		return n, err
	}
	c.mu.Lock()
	if k := min(n, 4-len(c.buf)); k > 0 {
		c.buf = append(c.buf, p[:k]...)
	}
	c.full.Store(len(c.buf) == 4)
	c.mu.Unlock()
	return n, err
}

// Lock and Unlock pass paho.golang's packet lock (batchconn) through:
// without them paho would write a packet's parts unlocked, and two
// goroutines' packets could interleave.
func (c *sniffConn) Lock() {
	if l, ok := c.Conn.(sync.Locker); ok {
		l.Lock()
	}
}

// Unlock ends what Lock began.
func (c *sniffConn) Unlock() {
	if l, ok := c.Conn.(sync.Locker); ok {
		l.Unlock()
	}
}

func (c *sniffConn) head() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.buf...)
}

// mqtt5Refusals are the CONNACK reason codes of MQTT 5 (§3.2.2.2).
var mqtt5Refusals = map[byte]string{
	0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
	0x83: "implementation specific error", 0x84: "unsupported protocol version",
	0x85: "client identifier not valid", 0x86: "bad user name or password", 0x87: "not authorized",
	0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned", 0x8C: "bad authentication method",
	0x90: "topic name invalid", 0x95: "packet too large", 0x97: "quota exceeded",
	0x99: "payload format invalid", 0x9A: "retain not supported", 0x9B: "QoS not supported",
	0x9C: "use another server", 0x9D: "server moved", 0x9F: "connection rate exceeded",
}

// mqtt3Refusals are the CONNACK return codes of MQTT 3.1.1 (§3.2.2.3).
var mqtt3Refusals = map[byte]string{
	0x01: "unacceptable protocol version", 0x02: "identifier rejected", 0x03: "server unavailable",
	0x04: "bad user name or password", 0x05: "not authorized",
}

// useMQTT3 is the advice for an upstream that does not speak MQTT 5.
const useMQTT3 = "the upstream speaks MQTT 3.1.1 only: use an mqtt3:// (or mqtt3s://) URL for this link"

// connectError says why an MQTT 5 upstream refused the bridge's CONNECT,
// from paho's error, the CONNACK if paho parsed one, and the first bytes
// the upstream sent (head): a 3.1.1 CONNACK, which paho cannot parse, is
// recognised there, and a refusal of the protocol version comes with the
// advice to use mqtt3://.
func connectError(err error, ca *paho.Connack, head []byte) error {
	if ca != nil && ca.ReasonCode != 0 {
		what := mqtt5Refusals[ca.ReasonCode]
		if what == "" {
			what = "unknown reason"
		}
		if ca.Properties != nil && ca.Properties.ReasonString != "" {
			what += ": " + ca.Properties.ReasonString
		}
		if ca.ReasonCode == 0x84 {
			return fmt.Errorf("bridge: upstream refused the connection: CONNACK %#x %s; %s", ca.ReasonCode, what, useMQTT3)
		}
		return fmt.Errorf("bridge: upstream refused the connection: CONNACK %#x %s", ca.ReasonCode, what)
	}
	if len(head) == 4 && head[0] == 0x20 && head[1] == 0x02 && head[3] != 0 {
		// A two-byte CONNACK is MQTT 3.1.1's; MQTT 5's has properties.
		rc := head[3]
		what := mqtt3Refusals[rc]
		if what == "" {
			what = "unknown return code"
		}
		if rc == 0x01 {
			return fmt.Errorf("bridge: upstream refused MQTT 5 with an MQTT 3.1.1 CONNACK %#x (%s); %s", rc, what, useMQTT3)
		}
		return fmt.Errorf("bridge: upstream refused the connection with an MQTT 3.1.1 CONNACK %#x (%s); it speaks MQTT 3.1.1 only, use an mqtt3:// URL", rc, what)
	}
	if len(head) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)) {
		return fmt.Errorf("bridge: upstream closed the connection without answering CONNECT (%w); a broker that speaks MQTT 3.1.1 only may do that to MQTT 5: if so, use an mqtt3:// URL", err)
	}
	return fmt.Errorf("bridge: MQTT 5 connect: %w", err)
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

// confirmLoop reports each answered publish, and frees its slot; what
// is confirmed is settled before the loop waits (flusher).
func (u *mqtt5Upstream) confirmLoop() {
	var f flusher
	defer f.flush()
	for {
		var a outAck
		select {
		case a = <-u.ls.acked:
		default:
			f.flush()
			select {
			case <-u.stop:
				return
			case a = <-u.ls.acked:
			}
		}
		<-u.ls.slots
		switch {
		case a.err == nil:
			f.done(a.t, nil)
		case errors.Is(a.err, errRefused):
			// One WARN per connection, then one each time the count
			// doubles: an upstream that denies a topic refuses every
			// message on it.
			u.refused++
			if n := u.refused; n&(n-1) == 0 {
				u.log.Warn("bridge: upstream refused messages for good; acked here, not sent again", "refused", n, "err", a.err)
			}
			f.done(a.t, a.err)
		default:
			if a.err != errLost {
				u.lose(a.err)
			}
			f.done(a.t, errLost)
		}
	}
}

func (u *mqtt5Upstream) publish(topic string, m *core.Message, qos byte, t ticket) {
	select {
	case <-u.gone:
		t.done(errLost)
		return
	default:
	}
	if qos > u.maxQoS {
		if u.maxQoS == 0 {
			u.lose(errors.New("bridge: upstream allows QoS 0 only (CONNACK Maximum QoS): the link cannot confirm what it forwards"))
			t.done(errLost)
			return
		}
		qos = u.maxQoS // QoS 1 is still confirmed
	}
	if err := u.ls.send(topic, m, qos, u.node, t, u.gone); err != nil {
		u.lose(fmt.Errorf("publish: %w", err))
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
	u.ls.State.Close()
	// Whatever is still in flight was never confirmed.
	u.ls.close()
}

// pahoLog passes paho.golang's error log to slog.
type pahoLog struct{ l *slog.Logger }

func (p pahoLog) Println(v ...any)               { p.l.Warn(strings.TrimSpace(fmt.Sprintln(v...))) }
func (p pahoLog) Printf(format string, v ...any) { p.l.Warn(fmt.Sprintf(format, v...)) }

// fromMQTT5 converts an MQTT 5 publish into a core message, with the
// properties the MQTT listener maps (content type, correlation, user
// properties); appendPublish is the other way.
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
	probe   *closeProbe // the link's, across its connections
	log     *slog.Logger
	// lastPub is when the latest publish was handed to paho (UnixNano);
	// published counts them. confirmLoop counts the confirmed.
	lastPub   atomic.Int64
	published atomic.Int64
	confirmed atomic.Int64
	probed    atomic.Bool // the probe was told of the loss
}

type tokenReq struct {
	tok   pahomqtt.Token
	t     ticket
	key   uint64    // messageKey
	at    time.Time // when it was handed to paho
	alone bool      // a suspect, sent alone (closeProbe)
}

func dialMQTT3(ctx context.Context, l *link, deliver func(string, *core.Message, func()), probe *closeProbe, log *slog.Logger) (upstream, error) {
	u := &mqtt3Upstream{l: l, deliver: deliver, gone: make(chan struct{}), tokens: make(chan tokenReq, l.Window), stop: make(chan struct{}),
		probe: probe, log: log}
	scheme := map[bool]string{true: "ssl", false: "tcp"}[l.secure]
	host := l.url.Host
	if l.url.Port() == "" {
		host = net.JoinHostPort(l.url.Hostname(), map[bool]string{true: "8883", false: "1883"}[l.secure])
	}
	o := pahomqtt.NewClientOptions().AddBroker(scheme + "://" + host).SetClientID(l.ClientID).
		SetCustomOpenConnectionFn(func(*url.URL, pahomqtt.ClientOptions) (net.Conn, error) {
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return netDial(dctx, l)
		}).
		SetCleanSession(false).SetAutoReconnect(false).SetOrderMatters(true).SetAutoAckDisabled(true).
		SetStore(noStore{}).
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
	u.c = pahomqtt.NewClient(o)
	tok := u.c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		u.c.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("bridge: MQTT 3.1.1 connect: %w", err)
	}
	go u.confirmLoop()
	return u, nil
}

// noStore is paho.mqtt.golang's session store for a link: none. The
// client is new on each connection, so its default memory store would
// never have anything to resend; the link resends from its queue. It
// saved each publish in a map under a string key, and deleted it again.
type noStore struct{}

func (noStore) Open()                              {}
func (noStore) Put(string, packets3.ControlPacket) {}
func (noStore) Get(string) packets3.ControlPacket  { return nil }
func (noStore) All() []string                      { return nil }
func (noStore) Del(string)                         {}
func (noStore) Close()                             {}
func (noStore) Reset()                             {}

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

// confirmLoop waits for each publish token in order, and settles what
// is confirmed before it waits. When the connection is lost it tells the
// probe what was in flight (closeProbe).
func (u *mqtt3Upstream) confirmLoop() {
	var f flusher
	defer f.flush()
	for {
		var r tokenReq
		select {
		case r = <-u.tokens:
		default:
			f.flush()
			select {
			case <-u.stop:
				return
			case r = <-u.tokens:
			}
		}
		if !isDone(r.tok) {
			f.flush()
			select {
			case <-r.tok.Done():
			case <-u.gone:
			}
		}
		if err := r.tok.Error(); err != nil || !isDone(r.tok) {
			u.lose(fmt.Errorf("publish: %v", err))
			f.done(r.t, u.failed(r))
			continue
		}
		if r.alone {
			u.probe.confirmed(r.key)
		}
		u.confirmed.Add(1)
		f.done(r.t, nil)
	}
}

// failed is the answer for r, a publish the connection was lost with; u.gone
// is closed. The first one so answered, by confirmLoop or close, tells the
// probe, unless the link closed the connection itself before it was lost.
func (u *mqtt3Upstream) failed(r tokenReq) error {
	if errors.Is(u.cause, errClosed) || !u.probed.CompareAndSwap(false, true) {
		return errLost
	}
	if refusal := u.probeLost(r, int(u.published.Load()-u.confirmed.Load())); refusal != nil {
		return refusal
	}
	return errLost
}

// probeLost tells the probe that the connection was lost with r the
// oldest of n publishes unconfirmed, and returns the refusal of r if it
// is one.
func (u *mqtt3Upstream) probeLost(r tokenReq, n int) error {
	now := time.Now()
	if r.alone && now.Sub(r.at) < closeWindow {
		strikes, refused := u.probe.strike(r.key)
		if strikes < closeStrikes {
			u.log.Debug("bridge: the upstream closed the connection right after a publish sent alone", "strikes", strikes)
			return nil
		}
		err := fmt.Errorf("%w: the MQTT 3.1.1 upstream closed the connection right after its publish, alone in flight, %d times in a row", errRefused, strikes)
		if refused&(refused-1) == 0 {
			u.log.Warn("bridge: upstream refused messages for good; acked here, not sent again", "refused", refused, "err", err)
		}
		return err
	}
	if last := time.Unix(0, u.lastPub.Load()); now.Sub(last) < closeWindow {
		// Maybe closed over one of them: the next connections send them
		// one at a time.
		u.probe.lost(n)
	}
	return nil
}

func isDone(t pahomqtt.Token) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}

func (u *mqtt3Upstream) publish(topic string, m *core.Message, qos byte, t ticket) {
	select {
	case <-u.gone:
		t.done(errLost)
		return
	default:
	}
	if !u.c.IsConnectionOpen() {
		// Lost, and paho has not said so yet: its Publish would wait
		// (up to 30 s) for a writer that has stopped.
		t.done(errLost)
		return
	}
	alone := u.probe.suspecting()
	r := tokenReq{t: t, alone: alone, key: messageKey(topic, m), at: time.Now()}
	u.lastPub.Store(r.at.UnixNano())
	u.published.Add(1)
	r.tok = u.c.Publish(topic, qos, false, m.Body)
	select {
	case u.tokens <- r:
	case <-u.gone:
		t.done(errLost)
		return
	}
	if alone {
		// A suspect: the next publish waits for its answer.
		select {
		case <-r.tok.Done():
		case <-u.gone:
		}
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
	// First: a publish failing from here on fails by this close (unless
	// the connection was lost already).
	u.lose(errClosed)
	close(u.stop)
	u.c.Disconnect(250)
	for {
		select {
		case r := <-u.tokens:
			r.t.done(u.failed(r))
		default:
			return
		}
	}
}
